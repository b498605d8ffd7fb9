//! Binlog row values to envelope values, by the column's shape.
//!
//! Integers follow the column's signedness (BIGINT UNSIGNED max stays exact); DECIMAL is exact
//! text; character columns are text unless their charset is binary (then bytes); ENUM and SET
//! become their labels; DATE / DATETIME / TIMESTAMP map to date, timestamp and UTC timestamp;
//! TIME beyond a day or negative keeps its text form; BIT becomes an unsigned integer; MySQL's
//! binary JSON and MariaDB's JSON text become JSON; GEOMETRY stays bytes (SRID + WKB).

use chrono::{NaiveDate, NaiveTime, TimeZone, Utc};
use mysql_common::binlog::value::BinlogValue;
use mysql_common::constants::ColumnType;
use mysql_common::value::Value as My;

use super::shape::ColumnShape;
use crate::envelope::{Decimal, Json, Value};

pub fn value(column: &ColumnShape, raw: Option<&BinlogValue<'_>>) -> Result<Value, String> {
    use ColumnType::*;
    let Some(raw) = raw else {
        return Ok(Value::Null);
    };
    let my = match raw {
        BinlogValue::Value(v) => v.clone(),
        BinlogValue::Jsonb(_) => {
            let as_value = My::try_from(raw.clone()).map_err(|e| e.to_string())?;
            let My::Bytes(text) = as_value else {
                return Err("binary JSON did not convert to text".into());
            };
            let text = String::from_utf8(text).map_err(|e| e.to_string())?;
            return Json::parse(&text)
                .map(Value::Json)
                .map_err(|e| e.to_string());
        }
        BinlogValue::JsonDiff(_) => {
            return Err(
                "partial JSON update: set binlog_row_value_options = '' on the server".into(),
            )
        }
    };
    Ok(match (column.kind, my) {
        (_, My::NULL) => Value::Null,
        (MYSQL_TYPE_ENUM, My::Int(i)) => label(&column.labels, i as usize),
        (MYSQL_TYPE_SET, My::Int(bits)) => set_labels(&column.labels, bits as u64),
        // ENUM index and SET bitmap may also come as little-endian bytes.
        (MYSQL_TYPE_ENUM, My::Bytes(b)) => label(&column.labels, little_endian(&b) as usize),
        (MYSQL_TYPE_SET, My::Bytes(b)) => set_labels(&column.labels, little_endian(&b)),
        (MYSQL_TYPE_YEAR, My::Bytes(b)) => {
            let text = String::from_utf8_lossy(&b);
            Value::Int(text.parse().map_err(|_| format!("bad year {text:?}"))?)
        }
        // TIMESTAMP comes as the text of seconds since the epoch, with the fraction.
        (MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2, My::Bytes(b)) => {
            let text = String::from_utf8_lossy(&b);
            let (secs, fraction) = text.split_once('.').unwrap_or((&text, ""));
            let secs: i64 = secs
                .parse()
                .map_err(|_| format!("bad timestamp {text:?}"))?;
            let micros: u32 = format!("{fraction:0<6}")[..6]
                .parse()
                .map_err(|_| format!("bad timestamp {text:?}"))?;
            Value::TimestampTz(
                Utc.timestamp_opt(secs, micros * 1000)
                    .single()
                    .ok_or_else(|| format!("timestamp out of range: {text}"))?,
            )
        }
        (kind, My::Int(i)) if column.unsigned => Value::UInt(match kind {
            MYSQL_TYPE_TINY => i as u8 as u64,
            MYSQL_TYPE_SHORT => i as u16 as u64,
            MYSQL_TYPE_INT24 => (i as u64) & 0xFF_FFFF,
            MYSQL_TYPE_LONG => i as u32 as u64,
            _ => i as u64,
        }),
        (_, My::Int(i)) => Value::Int(i),
        (_, My::UInt(u)) => Value::UInt(u),
        (_, My::Float(f)) => Value::Float(f64::from(f)),
        (_, My::Double(f)) => Value::Float(f),
        (MYSQL_TYPE_NEWDECIMAL | MYSQL_TYPE_DECIMAL, My::Bytes(b)) => {
            let text = String::from_utf8_lossy(&b);
            Value::Decimal(Decimal::parse(&text).map_err(|e| format!("decimal {e:?}"))?)
        }
        (MYSQL_TYPE_BIT, My::Bytes(b)) => Value::UInt(
            b.iter()
                .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte)),
        ),
        (MYSQL_TYPE_JSON, My::Bytes(b)) => {
            let text = String::from_utf8(b).map_err(|e| e.to_string())?;
            Value::Json(Json::parse(&text).map_err(|e| e.to_string())?)
        }
        (MYSQL_TYPE_GEOMETRY, My::Bytes(b)) => Value::Bytes(b),
        (_, My::Bytes(b)) if column.binary => Value::Bytes(b),
        (_, My::Bytes(b)) => match String::from_utf8(b) {
            Ok(text) => Value::Text(text),
            Err(e) => Value::Bytes(e.into_bytes()),
        },
        (kind, My::Date(y, m, d, h, mi, s, us)) => {
            let text = format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}");
            let Some(date) = NaiveDate::from_ymd_opt(y.into(), m.into(), d.into()) else {
                // Zero dates ('0000-00-00') have no calendar value.
                return Ok(Value::Other {
                    type_name: "datetime".into(),
                    text,
                });
            };
            let time = NaiveTime::from_hms_micro_opt(h.into(), mi.into(), s.into(), us)
                .ok_or_else(|| format!("bad time in {text}"))?;
            match kind {
                MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => Value::Date(date),
                MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => {
                    Value::TimestampTz(Utc.from_utc_datetime(&date.and_time(time)))
                }
                _ => Value::Timestamp(date.and_time(time)),
            }
        }
        (_, My::Time(negative, days, h, m, s, us)) => {
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
    })
}

fn little_endian(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte))
}

/// The labels of the bits set, comma-separated, in declaration order.
fn set_labels(labels: &[String], bits: u64) -> Value {
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

fn label(labels: &[String], index: usize) -> Value {
    match index {
        // 0 is the empty string MySQL stores for an invalid ENUM value.
        0 => Value::Text(String::new()),
        n => labels
            .get(n - 1)
            .map_or_else(|| Value::UInt(n as u64), |l| Value::Text(l.clone())),
    }
}
