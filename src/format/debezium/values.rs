//! Column values written the way Debezium's converters write them for the column's
//! [`Mapping`]: decimals as unscaled base64 bytes, times as numbers since midnight or the
//! epoch, zoned values as UTC text. A value whose kind does not fit its column's mapping is
//! refused with the column named (never with the value, which is row data).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{NaiveDate, NaiveTime, SecondsFormat, Timelike};
use serde::ser::{Error as _, SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use super::decimal;
use super::mapping::Mapping;
use super::text_values as forms;
use crate::envelope::{format_uuid, Value};
use crate::format::json::{float, value_json_text};

/// One value in its column's mapping.
pub struct Encoded<'a> {
    pub mapping: &'a Mapping,
    pub value: &'a Value,
}

/// Debezium's placeholder for a value the source did not send (`unavailable_values`), in the
/// column's type.
pub struct Placeholder<'a>(pub &'a Mapping);

pub const PLACEHOLDER: &str = "__debezium_unavailable_value";

impl Serialize for Placeholder<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Mapping::Bytes => s.serialize_str(&BASE64.encode(PLACEHOLDER)),
            Mapping::Array(element) => {
                let mut seq = s.serialize_seq(Some(1))?;
                seq.serialize_element(&Placeholder(element))?;
                seq.end()
            }
            _ => s.serialize_str(PLACEHOLDER),
        }
    }
}

impl Serialize for Encoded<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let value = self.value;
        let misfit = || {
            let schema = self.mapping.schema(true);
            S::Error::custom(format_args!(
                "a {} value does not fit the column's {} type",
                kind_of(value),
                schema.name.as_deref().unwrap_or(schema.kind)
            ))
        };
        if let Value::Null = value {
            return s.serialize_unit();
        }
        match (self.mapping, value) {
            (Mapping::Boolean, Value::Bool(b)) => s.serialize_bool(*b),
            (Mapping::Int16 | Mapping::Int32 | Mapping::Int64 | Mapping::Year, Value::Int(i)) => {
                s.serialize_i64(*i)
            }
            (Mapping::Int16 | Mapping::Int32 | Mapping::Int64 | Mapping::Year, Value::UInt(u)) => {
                s.serialize_u64(*u)
            }
            (Mapping::Float32 | Mapping::Float64, Value::Float(f)) => float(s, *f),
            (Mapping::Decimal { scale, .. }, Value::Decimal(d)) => {
                if let Some(unscaled) = decimal::small_unscaled(d.as_str(), *scale) {
                    let (bytes, start) = decimal::minimal_bytes(unscaled);
                    let mut text = [0u8; 24];
                    let len = BASE64
                        .encode_slice(&bytes[start..], &mut text)
                        .expect("16 bytes fit 24 base64 characters");
                    return s.serialize_str(
                        std::str::from_utf8(&text[..len]).expect("base64 is ASCII"),
                    );
                }
                let bytes = decimal::parse(d.as_str())
                    .and_then(|u| u.bytes_at_scale(*scale))
                    .map_err(S::Error::custom)?;
                s.serialize_str(&BASE64.encode(bytes))
            }
            (Mapping::VariableScaleDecimal, Value::Decimal(d)) => {
                let (scale, bytes) = decimal::parse(d.as_str())
                    .map_err(S::Error::custom)?
                    .with_own_scale();
                let mut map = s.serialize_map(Some(2))?;
                map.serialize_entry("scale", &scale)?;
                map.serialize_entry("value", &BASE64.encode(bytes))?;
                map.end()
            }
            (Mapping::DecimalDouble, Value::Decimal(d)) => {
                float(s, d.as_str().parse().map_err(|_| misfit())?)
            }
            (Mapping::DecimalString, Value::Decimal(d)) => s.serialize_str(match d.as_str() {
                // Debezium's names for the special values in this mode.
                "NaN" => "NAN",
                "Infinity" => "POSITIVE_INFINITY",
                "-Infinity" => "NEGATIVE_INFINITY",
                digits => digits,
            }),
            (Mapping::String { .. }, _) => match value {
                Value::Text(text) | Value::Other { text, .. } => s.serialize_str(text),
                Value::Json(doc) => s.serialize_str(doc.as_str()),
                Value::Uuid(uuid) => s.serialize_str(&format_uuid(uuid)),
                Value::Decimal(d) => s.serialize_str(d.as_str()),
                Value::Int(i) => s.collect_str(i),
                Value::UInt(u) => s.collect_str(u),
                _ => Err(misfit()),
            },
            (Mapping::Bytes, Value::Bytes(bytes)) => s.serialize_str(&BASE64.encode(bytes)),
            (Mapping::Bytes, Value::Text(text)) => s.serialize_str(&BASE64.encode(text)),
            (Mapping::Bit, Value::Bool(b)) => s.serialize_bool(*b),
            (Mapping::Bit, Value::UInt(u)) => s.serialize_bool(*u != 0),
            (Mapping::Bit, Value::Other { text, .. }) => s.serialize_bool(text == "1"),
            (Mapping::Bits { length }, Value::UInt(u)) => {
                s.serialize_str(&BASE64.encode(forms::bits_of_number(*u, *length)))
            }
            (Mapping::Bits { .. }, Value::Other { text, .. }) => {
                let bytes = forms::bits_of_text(text).ok_or_else(misfit)?;
                s.serialize_str(&BASE64.encode(bytes))
            }
            (Mapping::Date, Value::Date(date)) => s.serialize_i64(days_since_epoch(*date)),
            (Mapping::TimeMillis, Value::Time(t)) => s.serialize_i64(micros_of_day(*t) / 1000),
            (Mapping::TimeMicros, Value::Time(t)) => s.serialize_i64(micros_of_day(*t)),
            (Mapping::TimeMicros, Value::Other { text, .. }) => {
                s.serialize_i64(forms::signed_time_micros(text).ok_or_else(misfit)?)
            }
            (Mapping::TimestampMillis, Value::Timestamp(ts)) => {
                s.serialize_i64(ts.and_utc().timestamp_millis())
            }
            (Mapping::TimestampMicros, Value::Timestamp(ts)) => {
                s.serialize_i64(ts.and_utc().timestamp_micros())
            }
            (Mapping::ZonedTimestamp { digits }, Value::TimestampTz(ts)) => match digits {
                Some(digits) => s.serialize_str(&forms::zoned_timestamp(ts, *digits)),
                None => s.serialize_str(&ts.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            },
            // Postgres's infinite timestamps, which Debezium passes on as they are.
            (Mapping::ZonedTimestamp { .. }, Value::Other { text, .. })
                if text == "infinity" || text == "-infinity" =>
            {
                s.serialize_str(text)
            }
            (Mapping::ZonedTime, Value::Other { text, .. }) => {
                s.serialize_str(&forms::zoned_time_in_utc(text).ok_or_else(misfit)?)
            }
            (Mapping::MicroDuration, Value::Other { text, .. }) => {
                s.serialize_i64(forms::interval_micros(text).ok_or_else(misfit)?)
            }
            (Mapping::JsonText, value) => s.serialize_str(&value_json_text(value)),
            (Mapping::Array(element), Value::Array(items)) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Encoded {
                        mapping: element,
                        value: item,
                    })?;
                }
                seq.end()
            }
            _ => Err(misfit()),
        }
    }
}

fn days_since_epoch(date: NaiveDate) -> i64 {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date");
    (date - epoch).num_days()
}

fn micros_of_day(t: NaiveTime) -> i64 {
    // A leap second's nanoseconds (>= 1e9) count in the second they belong to.
    i64::from(t.num_seconds_from_midnight()) * 1_000_000 + i64::from(t.nanosecond() / 1000)
}

/// The kind of a value, for messages that must not show the value.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Int(_) | Value::UInt(_) => "integer",
        Value::Decimal(_) => "decimal",
        Value::Float(_) => "float",
        Value::Text(_) => "text",
        Value::Bytes(_) => "bytes",
        Value::Date(_) => "date",
        Value::Time(_) => "time",
        Value::Timestamp(_) => "timestamp",
        Value::TimestampTz(_) => "timestamptz",
        Value::Uuid(_) => "uuid",
        Value::Json(_) => "json",
        Value::Array(_) => "array",
        Value::Other { .. } => "unparsed",
    }
}
