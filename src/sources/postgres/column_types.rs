//! Column types for the envelope's table schema: a Postgres type OID and its modifier
//! (`atttypmod`, as a Relation message and `pg_attribute` give it) as a [`ColumnType`].
//!
//! Built-in types map by OID, arrays of built-in types by their element's OID; any other type
//! (a domain, an enum, an extension's type) maps by the decoder the type registry chose for
//! it, so a domain over `integer` is an integer of unknown width (64 bits) and an enum is
//! text. The modifier gives `varchar(n)` / `char(n)` their length, `numeric(p,s)` its
//! precision and scale, `bit(n)` its length, and time types their fractional digits (6, the
//! most Postgres keeps, when none is declared).

use super::value::Decoder;
use crate::envelope::ColumnType;

/// Fractional-second digits of a time type declared without them.
const DEFAULT_TIME_PRECISION: u8 = 6;

/// The column type of a column of type `oid` with modifier `typmod`, read by `decoder`.
pub fn column_type(oid: u32, typmod: i32, decoder: &Decoder) -> ColumnType {
    if let Some(element) = array_element(oid) {
        let element_decoder = match decoder {
            Decoder::Array { element, .. } => element,
            other => other,
        };
        return ColumnType::Array(Box::new(column_type(element, typmod, element_decoder)));
    }
    let modifier = u32::try_from(typmod).ok();
    let int = |bits| ColumnType::Int {
        bits,
        unsigned: false,
    };
    match oid {
        16 => ColumnType::Bool,
        21 => int(16),
        23 => int(32),
        20 | 26 => int(64),
        700 => ColumnType::Float { bits: 32 },
        701 => ColumnType::Float { bits: 64 },
        1700 => numeric(modifier),
        1042 | 1043 => ColumnType::Text {
            length: modifier.and_then(|m| m.checked_sub(4)),
        },
        1560 | 1562 => ColumnType::Bits { length: modifier },
        1266 => ColumnType::Time {
            precision: precision(modifier),
            zoned: true,
        },
        1186 => ColumnType::Interval,
        _ => by_decoder(decoder, modifier),
    }
}

fn by_decoder(decoder: &Decoder, modifier: Option<u32>) -> ColumnType {
    match decoder {
        Decoder::Bool => ColumnType::Bool,
        Decoder::Int => ColumnType::Int {
            bits: 64,
            unsigned: false,
        },
        Decoder::Numeric => numeric(modifier),
        Decoder::Float => ColumnType::Float { bits: 64 },
        Decoder::Text => ColumnType::Text { length: None },
        Decoder::Bytea => ColumnType::Bytes { length: None },
        Decoder::Json => ColumnType::Json,
        Decoder::Uuid => ColumnType::Uuid,
        Decoder::Date => ColumnType::Date,
        Decoder::Time => ColumnType::Time {
            precision: precision(modifier),
            zoned: false,
        },
        Decoder::Timestamp => ColumnType::Timestamp {
            precision: precision(modifier),
        },
        Decoder::TimestampTz => ColumnType::TimestampTz {
            precision: precision(modifier),
        },
        Decoder::Array { element, .. } => {
            ColumnType::Array(Box::new(by_decoder(element, modifier)))
        }
        Decoder::Named(_) => ColumnType::Other,
    }
}

/// `numeric(p,s)` keeps `((p << 16) | s) + 4` in its modifier; plain `numeric` has none.
fn numeric(modifier: Option<u32>) -> ColumnType {
    match modifier.and_then(|m| m.checked_sub(4)) {
        Some(m) => ColumnType::Decimal {
            precision: Some(m >> 16),
            scale: Some(m & 0x7ff),
        },
        None => ColumnType::Decimal {
            precision: None,
            scale: None,
        },
    }
}

fn precision(modifier: Option<u32>) -> u8 {
    // The interval's modifier also holds its fields; a time type's is just the digits.
    modifier
        .and_then(|m| u8::try_from(m & 0xffff).ok())
        .filter(|p| *p <= DEFAULT_TIME_PRECISION)
        .unwrap_or(DEFAULT_TIME_PRECISION)
}

/// The element OID of a built-in array type (`pg_type.typelem`).
fn array_element(oid: u32) -> Option<u32> {
    Some(match oid {
        1000 => 16,
        1005 => 21,
        1007 => 23,
        1016 => 20,
        1028 => 26,
        1021 => 700,
        1022 => 701,
        1231 => 1700,
        1009 => 25,
        1014 => 1042,
        1015 => 1043,
        1001 => 17,
        199 => 114,
        3807 => 3802,
        2951 => 2950,
        1182 => 1082,
        1183 => 1083,
        1270 => 1266,
        1115 => 1114,
        1185 => 1184,
        1187 => 1186,
        1561 => 1560,
        1563 => 1562,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(bits: u8) -> ColumnType {
        ColumnType::Int {
            bits,
            unsigned: false,
        }
    }

    #[test]
    fn built_in_types_map_by_oid_with_their_modifiers() {
        // Modifiers as pg_attribute.atttypmod holds them for each declaration.
        let cases = [
            ("smallint", 21, -1, Decoder::Int, int(16)),
            ("integer", 23, -1, Decoder::Int, int(32)),
            ("bigint", 20, -1, Decoder::Int, int(64)),
            (
                "real",
                700,
                -1,
                Decoder::Float,
                ColumnType::Float { bits: 32 },
            ),
            (
                "numeric(10,2)",
                1700,
                (10 << 16 | 2) + 4,
                Decoder::Numeric,
                ColumnType::Decimal {
                    precision: Some(10),
                    scale: Some(2),
                },
            ),
            (
                "numeric",
                1700,
                -1,
                Decoder::Numeric,
                ColumnType::Decimal {
                    precision: None,
                    scale: None,
                },
            ),
            (
                "varchar(20)",
                1043,
                24,
                Decoder::Text,
                ColumnType::Text { length: Some(20) },
            ),
            (
                "text",
                25,
                -1,
                Decoder::Text,
                ColumnType::Text { length: None },
            ),
            (
                "bit(3)",
                1560,
                3,
                Decoder::Named("bit".into()),
                ColumnType::Bits { length: Some(3) },
            ),
            (
                "timestamp(3)",
                1114,
                3,
                Decoder::Timestamp,
                ColumnType::Timestamp { precision: 3 },
            ),
            (
                "timestamp",
                1114,
                -1,
                Decoder::Timestamp,
                ColumnType::Timestamp { precision: 6 },
            ),
            (
                "timestamptz(0)",
                1184,
                0,
                Decoder::TimestampTz,
                ColumnType::TimestampTz { precision: 0 },
            ),
            (
                "timetz",
                1266,
                -1,
                Decoder::Named("timetz".into()),
                ColumnType::Time {
                    precision: 6,
                    zoned: true,
                },
            ),
            (
                "interval",
                1186,
                -1,
                Decoder::Named("interval".into()),
                ColumnType::Interval,
            ),
        ];
        for (declared, oid, typmod, decoder, expected) in cases {
            assert_eq!(column_type(oid, typmod, &decoder), expected, "{declared}");
        }
    }

    #[test]
    fn arrays_carry_their_element_type_and_other_types_follow_their_decoder() {
        let int4_array = Decoder::Array {
            element: Box::new(Decoder::Int),
            delimiter: b',',
        };
        assert_eq!(
            column_type(1007, -1, &int4_array),
            ColumnType::Array(Box::new(int(32)))
        );
        assert_eq!(
            column_type(1231, (12 << 16 | 4) + 4, &Decoder::Numeric),
            ColumnType::Array(Box::new(ColumnType::Decimal {
                precision: Some(12),
                scale: Some(4)
            })),
            "numeric(12,4)[] keeps the element's modifier"
        );
        let enum_array = Decoder::Array {
            element: Box::new(Decoder::Text),
            delimiter: b',',
        };
        assert_eq!(
            column_type(90_001, -1, &enum_array),
            ColumnType::Array(Box::new(ColumnType::Text { length: None })),
            "an array of an enum"
        );
        assert_eq!(column_type(90_002, -1, &Decoder::Int), int(64), "a domain");
        assert_eq!(
            column_type(90_003, -1, &Decoder::Named("point".into())),
            ColumnType::Other
        );
    }
}
