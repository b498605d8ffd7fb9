//! Column types for the envelope's table schema, from a column's binlog type: in the stream
//! with the TABLE_MAP's metadata (NULL bitmap, DECIMAL precision and scale, BIT length), in a
//! snapshot with the result set's column definitions.
//!
//! The binlog does not keep a column's declared spelling, so `source_type` is rebuilt from the
//! type and its metadata: `decimal(10,2)`, `datetime(3)`, `int unsigned`. BLOB and TEXT
//! columns of every size are `blob` / `text`, and `VARCHAR(n)` is `varchar` (the binlog gives
//! the length in bytes, not characters).

use mysql_common::constants::ColumnType as Binlog;

use super::table::ColumnShape;
use crate::envelope::{ColumnSchema, ColumnType};

/// What the table declares of a column beyond its binlog type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Declared {
    pub nullable: bool,
    /// DECIMAL(p, s).
    pub precision_scale: Option<(u32, u32)>,
    /// BIT(n).
    pub bits: Option<u32>,
}

/// The schema of `column`, declared as `declared`, part of the key when `key`.
pub fn column_schema(column: &ColumnShape, declared: Declared, key: bool) -> ColumnSchema {
    let (source_type, kind) = type_of(column, declared);
    ColumnSchema {
        name: column.name.clone(),
        source_type: source_type.into(),
        kind,
        nullable: declared.nullable,
        key,
    }
}

fn type_of(column: &ColumnShape, declared: Declared) -> (String, ColumnType) {
    if column.json {
        return ("json".into(), ColumnType::Json);
    }
    let int = |name: &str, bits| {
        let unsigned = column.unsigned;
        let name = if unsigned {
            format!("{name} unsigned")
        } else {
            name.to_owned()
        };
        (name, ColumnType::Int { bits, unsigned })
    };
    let text_or_bytes = |text: &str, bytes: &str| {
        if column.binary {
            (bytes.to_owned(), ColumnType::Bytes { length: None })
        } else {
            (text.to_owned(), ColumnType::Text { length: None })
        }
    };
    let fsp = column.decimals;
    let with_fsp = |name: &str| match fsp {
        0 => name.to_owned(),
        digits => format!("{name}({digits})"),
    };
    match column.kind {
        Binlog::MYSQL_TYPE_TINY => int("tinyint", 8),
        Binlog::MYSQL_TYPE_SHORT => int("smallint", 16),
        Binlog::MYSQL_TYPE_INT24 => int("mediumint", 24),
        Binlog::MYSQL_TYPE_LONG => int("int", 32),
        Binlog::MYSQL_TYPE_LONGLONG => int("bigint", 64),
        Binlog::MYSQL_TYPE_FLOAT => ("float".into(), ColumnType::Float { bits: 32 }),
        Binlog::MYSQL_TYPE_DOUBLE => ("double".into(), ColumnType::Float { bits: 64 }),
        Binlog::MYSQL_TYPE_NEWDECIMAL | Binlog::MYSQL_TYPE_DECIMAL => {
            match declared.precision_scale {
                Some((precision, scale)) => (
                    format!("decimal({precision},{scale})"),
                    ColumnType::Decimal {
                        precision: Some(precision),
                        scale: Some(scale),
                    },
                ),
                None => (
                    "decimal".into(),
                    ColumnType::Decimal {
                        precision: None,
                        scale: None,
                    },
                ),
            }
        }
        Binlog::MYSQL_TYPE_YEAR => ("year".into(), ColumnType::Year),
        Binlog::MYSQL_TYPE_DATE | Binlog::MYSQL_TYPE_NEWDATE => ("date".into(), ColumnType::Date),
        Binlog::MYSQL_TYPE_TIME | Binlog::MYSQL_TYPE_TIME2 => (
            with_fsp("time"),
            ColumnType::Time {
                precision: fsp,
                zoned: false,
            },
        ),
        Binlog::MYSQL_TYPE_DATETIME | Binlog::MYSQL_TYPE_DATETIME2 => (
            with_fsp("datetime"),
            ColumnType::Timestamp { precision: fsp },
        ),
        Binlog::MYSQL_TYPE_TIMESTAMP | Binlog::MYSQL_TYPE_TIMESTAMP2 => (
            with_fsp("timestamp"),
            ColumnType::TimestampTz { precision: fsp },
        ),
        Binlog::MYSQL_TYPE_BIT => (
            declared
                .bits
                .map_or_else(|| "bit".into(), |n| format!("bit({n})")),
            ColumnType::Bits {
                length: declared.bits,
            },
        ),
        Binlog::MYSQL_TYPE_ENUM => (
            "enum".into(),
            ColumnType::Enum {
                labels: column.labels.clone().into(),
            },
        ),
        Binlog::MYSQL_TYPE_SET => (
            "set".into(),
            ColumnType::Set {
                labels: column.labels.clone().into(),
            },
        ),
        Binlog::MYSQL_TYPE_JSON => ("json".into(), ColumnType::Json),
        Binlog::MYSQL_TYPE_VARCHAR | Binlog::MYSQL_TYPE_VAR_STRING => {
            text_or_bytes("varchar", "varbinary")
        }
        Binlog::MYSQL_TYPE_STRING => text_or_bytes("char", "binary"),
        Binlog::MYSQL_TYPE_TINY_BLOB
        | Binlog::MYSQL_TYPE_BLOB
        | Binlog::MYSQL_TYPE_MEDIUM_BLOB
        | Binlog::MYSQL_TYPE_LONG_BLOB => text_or_bytes("text", "blob"),
        Binlog::MYSQL_TYPE_GEOMETRY => ("geometry".into(), ColumnType::Other),
        other => (format!("{other:?}").to_lowercase(), ColumnType::Other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::mysql::table::TextEncoding;

    fn shape(kind: Binlog, unsigned: bool, binary: bool, decimals: u8) -> ColumnShape {
        ColumnShape {
            name: "c".into(),
            kind,
            unsigned,
            binary,
            labels: Vec::new(),
            decimals,
            text: TextEncoding::Utf8,
            fixed_width: None,
            json: false,
        }
    }

    #[test]
    fn binlog_types_become_portable_types_with_their_declared_spelling() {
        let nullable = Declared {
            nullable: true,
            ..Declared::default()
        };
        let cases = [
            (
                shape(Binlog::MYSQL_TYPE_LONG, true, false, 0),
                nullable,
                "int unsigned",
                ColumnType::Int {
                    bits: 32,
                    unsigned: true,
                },
            ),
            (
                shape(Binlog::MYSQL_TYPE_INT24, false, false, 0),
                nullable,
                "mediumint",
                ColumnType::Int {
                    bits: 24,
                    unsigned: false,
                },
            ),
            (
                shape(Binlog::MYSQL_TYPE_NEWDECIMAL, false, false, 0),
                Declared {
                    precision_scale: Some((10, 2)),
                    ..nullable
                },
                "decimal(10,2)",
                ColumnType::Decimal {
                    precision: Some(10),
                    scale: Some(2),
                },
            ),
            (
                shape(Binlog::MYSQL_TYPE_DATETIME2, false, false, 3),
                nullable,
                "datetime(3)",
                ColumnType::Timestamp { precision: 3 },
            ),
            (
                shape(Binlog::MYSQL_TYPE_TIMESTAMP2, false, false, 0),
                nullable,
                "timestamp",
                ColumnType::TimestampTz { precision: 0 },
            ),
            (
                shape(Binlog::MYSQL_TYPE_BIT, false, false, 0),
                Declared {
                    bits: Some(12),
                    ..nullable
                },
                "bit(12)",
                ColumnType::Bits { length: Some(12) },
            ),
            (
                shape(Binlog::MYSQL_TYPE_BLOB, false, true, 0),
                nullable,
                "blob",
                ColumnType::Bytes { length: None },
            ),
            (
                shape(Binlog::MYSQL_TYPE_VARCHAR, false, false, 0),
                Declared::default(),
                "varchar",
                ColumnType::Text { length: None },
            ),
        ];
        for (column, declared, source_type, kind) in cases {
            let schema = column_schema(&column, declared, false);
            assert_eq!(&*schema.source_type, source_type);
            assert_eq!(schema.kind, kind, "{source_type}");
            assert_eq!(schema.nullable, declared.nullable, "{source_type}");
        }
    }

    #[test]
    fn enum_and_set_keep_their_labels() {
        let mut column = shape(Binlog::MYSQL_TYPE_ENUM, false, false, 0);
        column.labels = vec!["small".into(), "large".into()];
        let schema = column_schema(&column, Declared::default(), true);
        assert_eq!(
            schema.kind,
            ColumnType::Enum {
                labels: vec!["small".to_owned(), "large".to_owned()].into()
            }
        );
        assert!(schema.key);
    }
}
