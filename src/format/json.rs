//! The default JSON format: one object per event.
//!
//! ```json
//! {"op":"insert","source":{"connector":"postgres","pipeline":"shop","database":"app",
//!  "schema":"public","table":"orders","position":"0/16B3748","txid":"748",
//!  "commit_ts_ms":1763781000123,"snapshot":false},
//!  "key":{"id":42},"before":null,"after":{"id":42,"amount":"19.99"},"unchanged":[],
//!  "ts_ms":1763781000200}
//! ```
//! The two events of a key change also carry `"new_key"` (on the delete of the old key) or
//! `"old_key"` (on the insert under the new key). The record key is the primary key, `{"id":42}`;
//! where tables share a key space, `{"table":"public.orders","key":{"id":42}}`.
//! Integers are JSON numbers (exact, also beyond 2^53), decimals are strings, bytes are base64,
//! times are ISO-8601 (zoned values in UTC with `Z`), JSON documents are embedded as JSON,
//! floats that JSON cannot hold are the strings `"NaN"`, `"Infinity"`, `"-Infinity"`.

use base64::Engine as _;
use chrono::SecondsFormat;
use serde::ser::{SerializeMap, SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};

use super::{EncodeError, Format};
use crate::envelope::{format_uuid, ChangeEvent, KeyChange, Row, SourceInfo, Value};

/// cdc-bridge's JSON envelope.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonFormat;

impl JsonFormat {
    /// Appends the record value of `event`. Every value of the envelope has a JSON form, so
    /// this format never refuses an event.
    pub fn write_value(event: &ChangeEvent, out: &mut Vec<u8>) {
        write(out, &EventJson(event));
    }

    /// Appends the record key of `event`: its primary key.
    pub fn write_key(event: &ChangeEvent, out: &mut Vec<u8>) {
        write(out, &RowJson(&event.key));
    }

    /// Appends a record key naming the event's table beside its primary key.
    pub fn write_table_key(event: &ChangeEvent, out: &mut Vec<u8>) {
        write(out, &TableKeyJson(event));
    }
}

impl Format for JsonFormat {
    fn encode_value(&self, event: &ChangeEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        JsonFormat::write_value(event, out);
        Ok(())
    }

    fn encode_key(&self, event: &ChangeEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        JsonFormat::write_key(event, out);
        Ok(())
    }

    fn encode_table_key(&self, event: &ChangeEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        JsonFormat::write_table_key(event, out);
        Ok(())
    }
}

/// A float as a JSON number; NaN and the infinities, which JSON has no number for, as the
/// strings `"NaN"`, `"Infinity"` and `"-Infinity"` (what Jackson writes too).
pub(crate) fn float<S: Serializer>(s: S, f: f64) -> Result<S::Ok, S::Error> {
    if f.is_nan() {
        s.serialize_str("NaN")
    } else if f.is_infinite() {
        s.serialize_str(if f > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        s.serialize_f64(f)
    }
}

/// Dates, times and UUIDs as the JSON formats write them: ISO-8601 (zoned values in UTC with
/// `Z`) and hyphenated lower-case; any other value as null.
pub(crate) struct IsoText<'a>(pub &'a Value);

impl Serialize for IsoText<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Date(d) => s.collect_str(&d.format("%Y-%m-%d")),
            Value::Time(t) => s.collect_str(&t.format("%H:%M:%S%.f")),
            Value::Timestamp(ts) => s.collect_str(&ts.format("%Y-%m-%dT%H:%M:%S%.f")),
            Value::TimestampTz(ts) => {
                s.serialize_str(&ts.to_rfc3339_opts(SecondsFormat::AutoSi, true))
            }
            Value::Uuid(u) => s.serialize_str(&format_uuid(u)),
            _ => s.serialize_unit(),
        }
    }
}

/// One value as the JSON format writes it (for formats that carry a value as JSON text).
pub(crate) fn value_json_text(value: &Value) -> String {
    serde_json::to_string(&ValueJson(value)).expect("writing JSON to memory cannot fail")
}

fn write(out: &mut Vec<u8>, value: &impl Serialize) {
    serde_json::to_writer(out, value).expect("writing JSON to memory cannot fail");
}

struct TableKeyJson<'a>(&'a ChangeEvent);

impl Serialize for TableKeyJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut obj = s.serialize_struct("key", 2)?;
        obj.serialize_field("table", &self.0.qualified_table())?;
        obj.serialize_field("key", &RowJson(&self.0.key))?;
        obj.end()
    }
}

struct EventJson<'a>(&'a ChangeEvent);

impl Serialize for EventJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut obj = s.serialize_struct("event", 8)?;
        obj.serialize_field("op", e.op.as_str())?;
        obj.serialize_field("source", &SourceJson(&e.source))?;
        obj.serialize_field("key", &RowJson(&e.key))?;
        match &e.key_change {
            Some(KeyChange::NewKey(key)) => obj.serialize_field("new_key", &RowJson(key))?,
            Some(KeyChange::OldKey(key)) => obj.serialize_field("old_key", &RowJson(key))?,
            None => {}
        }
        obj.serialize_field("before", &e.before.as_ref().map(RowJson))?;
        obj.serialize_field("after", &e.after.as_ref().map(RowJson))?;
        let unchanged: Vec<&str> = e.unchanged.iter().map(|c| &**c).collect();
        obj.serialize_field("unchanged", &unchanged)?;
        obj.serialize_field("ts_ms", &e.ts_ms)?;
        obj.end()
    }
}

struct SourceJson<'a>(&'a SourceInfo);

impl Serialize for SourceJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let src = self.0;
        let mut obj = s.serialize_struct("source", 10)?;
        obj.serialize_field("connector", src.connector.as_str())?;
        obj.serialize_field("pipeline", &*src.pipeline)?;
        obj.serialize_field("database", &*src.database)?;
        obj.serialize_field("schema", &src.schema.as_deref())?;
        obj.serialize_field("table", &*src.table)?;
        obj.serialize_field("position", &Text(&src.position))?;
        obj.serialize_field("txid", &src.position.txid().map(Text))?;
        obj.serialize_field("commit_ts_ms", &src.commit_ts_ms)?;
        obj.serialize_field("snapshot", &src.snapshot)?;
        if src.ttl_expired {
            obj.serialize_field("ttl_expired", &true)?;
        }
        obj.end()
    }
}

/// A value written as the JSON string of its text form, without building that text first.
struct Text<T>(T);

impl<T: std::fmt::Display> Serialize for Text<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

struct RowJson<'a>(&'a Row);

impl Serialize for RowJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0.iter() {
            map.serialize_entry(&**name, &ValueJson(value))?;
        }
        map.end()
    }
}

struct ValueJson<'a>(&'a Value);

impl Serialize for ValueJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::UInt(u) => s.serialize_u64(*u),
            Value::Decimal(d) => s.serialize_str(d.as_str()),
            Value::Float(f) => float(s, *f),
            Value::Text(t) => s.serialize_str(t),
            Value::Bytes(b) => {
                s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
            }
            Value::Date(_)
            | Value::Time(_)
            | Value::Timestamp(_)
            | Value::TimestampTz(_)
            | Value::Uuid(_) => IsoText(self.0).serialize(s),
            Value::Json(doc) => doc.as_raw().serialize(s),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&ValueJson(item))?;
                }
                seq.end()
            }
            Value::Other { text, .. } => s.serialize_str(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{NaiveDate, TimeZone, Utc};

    use super::*;
    use crate::envelope::{Decimal, Json, Op, PostgresPosition, SourceKind, SourcePosition};

    fn col(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    fn encode(value: Value) -> String {
        let row: Row = [(col("v"), value)].into_iter().collect();
        serde_json::to_string(&RowJson(&row)).unwrap()
    }

    #[test]
    fn the_documented_example_round_trips_exactly() {
        let key: Row = [(col("id"), Value::Int(42))].into_iter().collect();
        let after: Row = [
            (col("id"), Value::Int(42)),
            (
                col("amount"),
                Value::Decimal(Decimal::parse("19.99").unwrap()),
            ),
            (col("tags"), Value::Array(vec![Value::Text("a".into())])),
        ]
        .into_iter()
        .collect();
        let event = ChangeEvent {
            op: Op::Insert,
            source: SourceInfo {
                connector: SourceKind::Postgres,
                pipeline: "shop".into(),
                database: "app".into(),
                schema: Some("public".into()),
                table: "orders".into(),
                table_schema: None,
                position: SourcePosition::Postgres(PostgresPosition {
                    lsn: 0x16B3748,
                    txid: Some(748),
                }),
                commit_ts_ms: Some(1763781000123),
                snapshot: false,
                ttl_expired: false,
            },
            key,
            before: None,
            after: Some(after),
            unchanged: vec![],
            key_change: None,
            ts_ms: 1763781000200,
        };
        let mut out = Vec::new();
        JsonFormat::write_value(&event, &mut out);
        let expected = concat!(
            r#"{"op":"insert","source":{"connector":"postgres","pipeline":"shop","database":"app","#,
            r#""schema":"public","table":"orders","position":"0/16B3748","txid":"748","#,
            r#""commit_ts_ms":1763781000123,"snapshot":false},"#,
            r#""key":{"id":42},"before":null,"after":{"id":42,"amount":"19.99","tags":["a"]},"#,
            r#""unchanged":[],"ts_ms":1763781000200}"#
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        let mut key = Vec::new();
        JsonFormat::write_key(&event, &mut key);
        assert_eq!(key, br#"{"id":42}"#);
    }

    #[test]
    fn key_changes_name_the_other_key_and_table_keys_name_the_table() {
        use crate::envelope::KeyChange;
        let id = |n: i64| -> Row { [(col("id"), Value::Int(n))].into_iter().collect() };
        let mut event = crate::sources::generator::GeneratorSource::sample_event(5, 7);
        event.key = id(1);
        event.op = Op::Delete;
        event.key_change = Some(KeyChange::NewKey(id(2)));
        let encoded = |event: &ChangeEvent| {
            let mut out = Vec::new();
            JsonFormat::write_value(event, &mut out);
            serde_json::from_slice::<serde_json::Value>(&out).unwrap()
        };
        let delete = encoded(&event);
        assert_eq!(delete["new_key"], serde_json::json!({"id": 2}));
        assert!(delete.get("old_key").is_none());
        event.key_change = Some(KeyChange::OldKey(id(1)));
        assert_eq!(encoded(&event)["old_key"], serde_json::json!({"id": 1}));
        event.key_change = None;
        let plain = encoded(&event);
        assert!(plain.get("old_key").is_none() && plain.get("new_key").is_none());

        let mut key = Vec::new();
        JsonFormat::write_table_key(&event, &mut key);
        assert_eq!(key, br#"{"table":"db.items","key":{"id":1}}"#);
    }

    #[test]
    fn integers_stay_exact_beyond_double_precision() {
        assert_eq!(
            encode(Value::Int(i64::MIN)),
            r#"{"v":-9223372036854775808}"#
        );
        assert_eq!(
            encode(Value::UInt(u64::MAX)),
            r#"{"v":18446744073709551615}"#
        );
    }

    #[test]
    fn floats_keep_special_values_as_strings() {
        assert_eq!(encode(Value::Float(f64::NAN)), r#"{"v":"NaN"}"#);
        assert_eq!(encode(Value::Float(f64::INFINITY)), r#"{"v":"Infinity"}"#);
        assert_eq!(
            encode(Value::Float(f64::NEG_INFINITY)),
            r#"{"v":"-Infinity"}"#
        );
        assert_eq!(encode(Value::Float(1.5)), r#"{"v":1.5}"#);
    }

    #[test]
    fn bytes_are_base64_and_json_is_embedded() {
        assert_eq!(encode(Value::Bytes(vec![0, 255, 16])), r#"{"v":"AP8Q"}"#);
        let doc = Json::parse(r#"{"n":12345678901234567890123}"#).unwrap();
        assert_eq!(
            encode(Value::Json(doc)),
            r#"{"v":{"n":12345678901234567890123}}"#
        );
    }

    #[test]
    fn times_are_iso8601_and_zoned_values_end_in_z() {
        let date = NaiveDate::from_ymd_opt(2025, 11, 22).unwrap();
        let micros = date.and_hms_micro_opt(3, 4, 5, 120).unwrap();
        assert_eq!(encode(Value::Date(date)), r#"{"v":"2025-11-22"}"#);
        assert_eq!(
            encode(Value::Timestamp(micros)),
            r#"{"v":"2025-11-22T03:04:05.000120"}"#
        );
        assert_eq!(
            encode(Value::Time(micros.time())),
            r#"{"v":"03:04:05.000120"}"#
        );
        let instant = Utc.timestamp_millis_opt(1763781000123).unwrap();
        assert_eq!(
            encode(Value::TimestampTz(instant)),
            r#"{"v":"2025-11-22T03:10:00.123Z"}"#
        );
    }

    #[test]
    fn other_types_keep_their_text_and_uuid_is_hyphenated() {
        let other = Value::Other {
            type_name: "point".into(),
            text: "(1,2)".into(),
        };
        assert_eq!(encode(other), r#"{"v":"(1,2)"}"#);
        assert_eq!(
            encode(Value::Uuid([0xab; 16])),
            r#"{"v":"abababab-abab-abab-abab-abababababab"}"#
        );
        assert_eq!(encode(Value::Null), r#"{"v":null}"#);
    }
}
