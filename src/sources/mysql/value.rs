//! Binlog row values to envelope values, by the column's shape.
//!
//! - Integers follow the column's signedness (BIGINT UNSIGNED max stays exact; MEDIUMINT's
//!   sign is extended); BOOL is TINYINT (0/1); BIT is an unsigned integer.
//! - DECIMAL is exact text; FLOAT is the decimal it was written as (1.1, not 1.1000000238).
//! - Text in utf8/utf8mb4/ascii, and latin1 (decoded as Windows-1252), is text; text in any
//!   other character set stays bytes. Binary columns are bytes; BINARY(n) is padded back to n.
//! - ENUM and SET become their labels.
//! - DATE / DATETIME / TIMESTAMP become date, timestamp and UTC timestamp; zero dates null.
//!   TIME beyond a day or negative keeps its text form (negative TIME(1)/TIME(2) with a
//!   fraction, which mysql_common decodes wrongly, is repaired). YEAR 0000 is 0.
//! - MySQL's binary JSON becomes JSON; MariaDB's JSON is a LONGTEXT in the binlog and stays a
//!   string, as with Debezium.
//! - GEOMETRY becomes `{"srid": n, "wkb": base64}` (the server stores the SRID, then standard
//!   WKB), as Debezium writes it.

use chrono::{NaiveDate, NaiveTime, TimeZone, Utc};
use mysql_common::binlog::value::BinlogValue;
use mysql_common::constants::ColumnType;
use mysql_common::value::Value as My;

use super::table::{ColumnShape, TextEncoding};
use crate::envelope::{Decimal, Json, Value};

pub fn value(column: &ColumnShape, raw: Option<&BinlogValue<'_>>) -> Result<Value, String> {
    match raw {
        None => Ok(Value::Null),
        Some(BinlogValue::Value(v)) => of_value(column, v.clone()),
        Some(BinlogValue::Jsonb(jsonb)) => binary_json(jsonb.clone()),
        Some(BinlogValue::JsonDiff(_)) => Err(PARTIAL_JSON.into()),
    }
}

/// A value of `column` as the server sent it in a row (a binlog row, or a copy's result row),
/// taken over: its bytes become the text without a copy.
pub fn of_value(column: &ColumnShape, my: My) -> Result<Value, String> {
    use ColumnType::*;
    Ok(match (column.kind, my) {
        (_, My::NULL) => Value::Null,
        (MYSQL_TYPE_ENUM, My::Int(i)) => label(&column.labels, i as usize),
        (MYSQL_TYPE_SET, My::Int(bits)) => set_labels(&column.labels, bits as u64),
        // ENUM index and SET bitmap may also come as little-endian bytes.
        (MYSQL_TYPE_ENUM, My::Bytes(b)) => label(&column.labels, little_endian(&b) as usize),
        (MYSQL_TYPE_SET, My::Bytes(b)) => set_labels(&column.labels, little_endian(&b)),
        (MYSQL_TYPE_YEAR, My::Bytes(b)) => {
            let text = String::from_utf8_lossy(&b);
            year(text.parse().map_err(|_| undecodable("year", &text))?)
        }
        // TIMESTAMP comes as the text of seconds since the epoch, with the fraction.
        (MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2, My::Bytes(b)) => {
            let text = String::from_utf8_lossy(&b);
            let (secs, fraction) = text.split_once('.').unwrap_or((&text, ""));
            let secs: i64 = secs.parse().map_err(|_| undecodable("timestamp", &text))?;
            // Up to 6 digits of fraction (microseconds).
            if fraction.len() > 6 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
                return Err(undecodable("timestamp", &text));
            }
            let micros: u32 = format!("{fraction:0<6}")
                .parse()
                .map_err(|_| undecodable("timestamp", &text))?;
            timestamp(secs, micros, || text.to_string())?
        }
        (_, My::Int(i)) => integer(column, i),
        (_, My::UInt(u)) => Value::UInt(u),
        (_, My::Float(f)) => float(f),
        (_, My::Double(f)) => Value::Float(f),
        (MYSQL_TYPE_NEWDECIMAL | MYSQL_TYPE_DECIMAL, My::Bytes(b)) => {
            decimal(&String::from_utf8_lossy(&b))?
        }
        (MYSQL_TYPE_BIT, My::Bytes(b)) => bit(&b),
        (MYSQL_TYPE_JSON, My::Bytes(b)) => {
            let text = String::from_utf8(b).map_err(|e| e.to_string())?;
            Value::Json(Json::parse(&text).map_err(|e| e.to_string())?)
        }
        (MYSQL_TYPE_GEOMETRY, My::Bytes(b)) => geometry(&b)?,
        (_, My::Bytes(b)) => bytes(column, b),
        (kind, My::Date(y, m, d, h, mi, s, us)) => date_time(kind, (y, m, d), (h, mi, s, us))?,
        (_, My::Time(negative, days, h, m, s, us)) => {
            let (negative, days, h, m, s, us) =
                if column.kind == MYSQL_TYPE_TIME2 && matches!(column.decimals, 1 | 2) {
                    repair_short_fraction_time(negative, days, h, m, s, us)
                } else {
                    (negative, days, h, m, s, us)
                };
            time(negative, days, h, m, s, us)
        }
    })
}

/// The error for a JSON column written as a diff (MySQL's partial JSON updates).
pub(super) const PARTIAL_JSON: &str =
    "partial JSON update: set binlog_row_value_options = '' on the server";

/// An integer by the column's signedness: an unsigned column's value is the stored bits as
/// unsigned (of the type's width); MEDIUMINT's 3 bytes get their sign extended.
pub(super) fn integer(column: &ColumnShape, i: i64) -> Value {
    use ColumnType::*;
    if column.unsigned {
        return Value::UInt(match column.kind {
            MYSQL_TYPE_TINY => i as u8 as u64,
            MYSQL_TYPE_SHORT => i as u16 as u64,
            MYSQL_TYPE_INT24 => (i as u64) & 0xFF_FFFF,
            MYSQL_TYPE_LONG => i as u32 as u64,
            _ => i as u64,
        });
    }
    match column.kind {
        MYSQL_TYPE_INT24 => Value::Int((i << 40) >> 40),
        _ => Value::Int(i),
    }
}

/// FLOAT as the decimal it was written as (1.1, not 1.100000023841858).
pub(super) fn float(f: f32) -> Value {
    Value::Float(f.to_string().parse().unwrap_or(f64::from(f)))
}

/// YEAR from the year mysql_common makes of it (1900 + the stored byte).
pub(super) fn year(year: i64) -> Value {
    // The binlog stores YEAR as years since 1900, with 0 for YEAR 0000 (1900 itself is
    // outside the type's range); mysql_common adds 1900 to both.
    Value::Int(if year == 1900 { 0 } else { year })
}

/// A TIMESTAMP from seconds since the epoch and microseconds; `text` (the value as text) is
/// only made for the debug log of an error.
pub(super) fn timestamp(
    secs: i64,
    micros: u32,
    text: impl Fn() -> String,
) -> Result<Value, String> {
    if secs == 0 && micros == 0 {
        // 0 is how the binlog stores the zero TIMESTAMP (its range starts at 1 s).
        return Ok(Value::Null);
    }
    Utc.timestamp_opt(secs, micros * 1000)
        .single()
        .map(Value::TimestampTz)
        .ok_or_else(|| undecodable("timestamp (out of range)", &text()))
}

/// DECIMAL from its exact text.
pub(super) fn decimal(text: &str) -> Result<Value, String> {
    Decimal::parse(text)
        .map(Value::Decimal)
        .map_err(|_| undecodable("decimal", text))
}

/// BIT from its big-endian bytes.
pub(super) fn bit(bytes: &[u8]) -> Value {
    Value::UInt(
        bytes
            .iter()
            .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte)),
    )
}

/// MySQL's binary JSON as JSON text.
pub(super) fn binary_json(jsonb: mysql_common::binlog::jsonb::Value<'_>) -> Result<Value, String> {
    let as_value = My::try_from(BinlogValue::Jsonb(jsonb)).map_err(|e| e.to_string())?;
    let My::Bytes(text) = as_value else {
        return Err("binary JSON did not convert to text".into());
    };
    let text = String::from_utf8(text).map_err(|e| e.to_string())?;
    Json::parse(&text)
        .map(Value::Json)
        .map_err(|e| e.to_string())
}

/// The bytes of a string or BLOB column: bytes for a binary column (BINARY(n) padded back to
/// n), text for latin1 (as Windows-1252) and UTF-8, else the bytes as they are.
pub(super) fn bytes(column: &ColumnShape, mut b: Vec<u8>) -> Value {
    if column.binary {
        if let Some(width) = column.fixed_width {
            if b.len() < width {
                b.resize(width, 0);
            }
        }
        return Value::Bytes(b);
    }
    if column.text == TextEncoding::Latin1 {
        return Value::Text(windows_1252(&b));
    }
    match String::from_utf8(b) {
        // MariaDB's JSON: a document, embedded like MySQL's and Postgres's (the check keeps
        // it valid; text that is not JSON after all stays text).
        Ok(text) if column.json => match Json::parse(&text) {
            Ok(doc) => Value::Json(doc),
            Err(_) => Value::Text(text),
        },
        Ok(text) => Value::Text(text),
        // A character set not decoded here: its bytes, as they are.
        Err(e) => Value::Bytes(e.into_bytes()),
    }
}

/// DATE / DATETIME / TIMESTAMP (by `kind`) from a date and a time of day (with microseconds).
pub(super) fn date_time(
    kind: ColumnType,
    (y, m, d): (u16, u8, u8),
    (h, mi, s, us): (u8, u8, u8, u32),
) -> Result<Value, String> {
    use ColumnType::*;
    // Only for the unusual cases below (formatting every value costs ~10 % of a row).
    let text = || format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}");
    if (y, m, d) == (0, 0, 0) {
        // Zero dates ('0000-00-00', allowed without NO_ZERO_DATE) have no calendar
        // value: null, as Debezium writes them.
        return Ok(Value::Null);
    }
    let Some(date) = NaiveDate::from_ymd_opt(y.into(), m.into(), d.into()) else {
        // Partly zero dates ('2025-00-10') have none either: kept as text.
        return Ok(Value::Other {
            type_name: "datetime".into(),
            text: text(),
        });
    };
    let time = NaiveTime::from_hms_micro_opt(h.into(), mi.into(), s.into(), us)
        .ok_or_else(|| undecodable("time of day", &text()))?;
    Ok(match kind {
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => Value::Date(date),
        MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => {
            Value::TimestampTz(Utc.from_utc_datetime(&date.and_time(time)))
        }
        _ => Value::Timestamp(date.and_time(time)),
    })
}

/// TIME: a time of day when it is one, else (negative, or a day or more) its text form.
pub(super) fn time(negative: bool, days: u32, h: u8, m: u8, s: u8, us: u32) -> Value {
    match (
        negative,
        days,
        NaiveTime::from_hms_micro_opt(h.into(), m.into(), s.into(), us),
    ) {
        (false, 0, Some(time)) => Value::Time(time),
        _ => Value::Other {
            type_name: "time".into(),
            text: format!(
                "{}{:02}:{m:02}:{s:02}.{us:06}",
                if negative { "-" } else { "" },
                u64::from(days) * 24 + u64::from(h)
            ),
        },
    }
}

/// The offset mysql_common (0.37, 0.38) adds to a negative TIME(1)/TIME(2) with a fraction:
/// it subtracts 0x100 from the fraction byte as an unsigned 32-bit number, and the wrapped
/// 2^32 is then scaled by 10,000 microseconds.
const SHORT_FRACTION_TIME_ERROR: i64 = (1 << 32) * 10_000;

/// Repairs a TIME(1)/TIME(2) value decoded by mysql_common. Values it decodes right are kept:
/// positive ones have a fraction under a second, negative ones none at all (the bug needs a
/// fraction). A wrong one is re-encoded to the packed number it was decoded from (exact: the
/// packed hours fit the 10 bits it keeps), the error is taken off, and the result decoded.
fn repair_short_fraction_time(
    negative: bool,
    days: u32,
    h: u8,
    m: u8,
    s: u8,
    us: u32,
) -> (bool, u32, u8, u8, u8, u32) {
    if us < 1_000_000 && !(negative && us != 0) {
        return (negative, days, h, m, s, us);
    }
    let hours = i64::from(days) * 24 + i64::from(h);
    let packed = (((hours << 12) | (i64::from(m) << 6) | i64::from(s)) << 24) + i64::from(us);
    let wrong = if negative { -packed } else { packed };
    match mysql_common::binlog::misc::time_from_packed(wrong - SHORT_FRACTION_TIME_ERROR) {
        My::Time(negative, days, h, m, s, us) => (negative, days, h, m, s, us),
        _ => unreachable!("time_from_packed returns a TIME"),
    }
}

/// The reason for a value that cannot be decoded. The value itself is row data: it goes to the
/// debug log only, never into the error (which names table, column and position).
pub(super) fn undecodable(what: &str, value: &str) -> String {
    tracing::debug!(value, "undecodable {what}");
    format!("undecodable {what} (the value is logged at debug level)")
}

/// `{"srid": n, "wkb": "<base64>"}` from the stored form: a little-endian SRID, then WKB.
pub(super) fn geometry(stored: &[u8]) -> Result<Value, String> {
    use base64::Engine as _;
    let (srid, wkb) = stored
        .split_first_chunk::<4>()
        .ok_or_else(|| format!("geometry of {} bytes has no SRID", stored.len()))?;
    let text = format!(
        r#"{{"srid":{},"wkb":"{}"}}"#,
        u32::from_le_bytes(*srid),
        base64::engine::general_purpose::STANDARD.encode(wkb)
    );
    Json::parse(&text)
        .map(Value::Json)
        .map_err(|e| e.to_string())
}

/// MySQL's latin1 (Windows-1252): bytes 0x80-0x9F are the typographic characters of that code
/// page (the five it leaves undefined map to the C1 controls, as MySQL does); the rest are
/// the same code points.
fn windows_1252(bytes: &[u8]) -> String {
    const HIGH: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž',
        '\u{8f}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}',
        'ž', 'Ÿ',
    ];
    bytes
        .iter()
        .map(|&b| match b {
            0x80..=0x9f => HIGH[usize::from(b - 0x80)],
            _ => char::from(b),
        })
        .collect()
}

pub(super) fn little_endian(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte))
}

/// The labels of the bits set, comma-separated, in declaration order.
pub(super) fn set_labels(labels: &[String], bits: u64) -> Value {
    Value::Text(
        labels
            .iter()
            .enumerate()
            .filter(|(n, _)| *n < 64 && bits & (1 << n) != 0)
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join(","),
    )
}

pub(super) fn label(labels: &[String], index: usize) -> Value {
    match index {
        // 0 is the empty string MySQL stores for an invalid ENUM value.
        0 => Value::Text(String::new()),
        n => labels
            .get(n - 1)
            .map_or_else(|| Value::UInt(n as u64), |l| Value::Text(l.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_common::binlog::misc::{my_time_packed_from_binary, time_from_packed};

    /// TIME(1)/TIME(2) as the server writes it (MySQL's my_time_packed_to_binary): the packed
    /// value's integer part (floored) plus 0x800000 in 3 big-endian bytes, then the remainder
    /// (C semantics: negative for a negative value) in hundredths as one signed byte.
    fn stored(negative: bool, h: i64, m: i64, s: i64, us: i64) -> Vec<u8> {
        let magnitude = (((h << 12) | (m << 6) | s) << 24) + us;
        let packed = if negative { -magnitude } else { magnitude };
        let mut bytes = ((packed >> 24) + 0x80_0000).to_be_bytes()[5..].to_vec();
        bytes.push(((packed % (1 << 24)) / 10_000) as i8 as u8);
        bytes
    }

    fn decoded(bytes: &[u8], fsp: u32) -> My {
        time_from_packed(my_time_packed_from_binary(bytes, fsp).unwrap())
    }

    fn repaired(value: My) -> My {
        let My::Time(n, d, h, m, s, us) = value else {
            panic!("not a time")
        };
        let (n, d, h, m, s, us) = repair_short_fraction_time(n, d, h, m, s, us);
        My::Time(n, d, h, m, s, us)
    }

    #[test]
    fn latin1_is_windows_1252() {
        assert_eq!(windows_1252(b"caf\xe9 \x80\x9f \xff"), "café €Ÿ ÿ");
    }

    #[test]
    fn geometry_becomes_srid_and_wkb() {
        // POINT(1 2) with SRID 4326: the SRID, then WKB (little-endian, type 1, x, y).
        let mut stored = 4326u32.to_le_bytes().to_vec();
        stored.push(1);
        stored.extend(1u32.to_le_bytes());
        stored.extend(1f64.to_le_bytes());
        stored.extend(2f64.to_le_bytes());
        let Value::Json(json) = geometry(&stored).unwrap() else {
            panic!("not JSON")
        };
        assert_eq!(
            json.as_str(),
            r#"{"srid":4326,"wkb":"AQEAAAAAAAAAAADwPwAAAAAAAABA"}"#
        );
        assert!(geometry(&[1, 2]).is_err());
    }

    #[test]
    fn text_of_a_mariadb_json_column_is_a_document_and_other_text_stays_text() {
        let mut column = ColumnShape {
            name: "doc".into(),
            kind: ColumnType::MYSQL_TYPE_BLOB,
            unsigned: false,
            binary: false,
            labels: Vec::new(),
            decimals: 0,
            text: TextEncoding::Utf8,
            fixed_width: None,
            json: true,
        };
        let doc = bytes(
            &column,
            br#"{"n": 123456789012345678901234567890}"#.to_vec(),
        );
        assert_eq!(
            doc,
            Value::Json(Json::parse(r#"{"n": 123456789012345678901234567890}"#).unwrap())
        );
        assert_eq!(
            bytes(&column, b"not json".to_vec()),
            Value::Text("not json".into())
        );
        column.json = false;
        assert_eq!(bytes(&column, b"[1]".to_vec()), Value::Text("[1]".into()));
    }

    /// TIMESTAMP text that is not ASCII (the server never sends it; a corrupt event might) is
    /// an error, not a panic on a cut inside a character.
    #[test]
    fn timestamps_with_bytes_that_are_not_text_are_errors() {
        let column = ColumnShape {
            name: "ts".into(),
            kind: ColumnType::MYSQL_TYPE_TIMESTAMP2,
            unsigned: false,
            binary: false,
            labels: Vec::new(),
            decimals: 6,
            text: TextEncoding::Utf8,
            fixed_width: None,
            json: false,
        };
        let timestamp = |bytes: &[u8]| {
            value(
                &column,
                Some(&BinlogValue::Value(My::Bytes(bytes.to_vec()))),
            )
        };
        for bad in [
            &b"1.a\xff\xff"[..],
            b"1.\xe2\x82\xac\xe2\x82\xac",
            b"x.1",
            b"1.1234567",
        ] {
            assert!(timestamp(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            timestamp(b"1700000000.5"),
            Ok(Value::TimestampTz(_))
        ));
    }

    #[test]
    fn negative_short_fraction_times_are_repaired() {
        for (negative, h, m, s, us) in [
            (true, 0, 0, 1, 500_000),
            (true, 12, 34, 56, 10_000),
            (true, 838, 59, 59, 990_000),
            (true, 700, 0, 0, 500_000),
            (true, 3, 0, 0, 0),
            (false, 838, 59, 59, 990_000),
            (false, 0, 0, 0, 10_000),
        ] {
            for fsp in [1, 2] {
                let bytes = stored(negative, h, m, s, us);
                let expected = My::Time(
                    negative,
                    (h / 24) as u32,
                    (h % 24) as u8,
                    m as u8,
                    s as u8,
                    us as u32,
                );
                assert_eq!(
                    repaired(decoded(&bytes, fsp)),
                    expected,
                    "{bytes:?} fsp {fsp}"
                );
            }
        }
    }
}
