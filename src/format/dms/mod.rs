//! AWS DMS's JSON record, as DMS writes it to Kinesis Data Streams and Kafka targets, so that
//! consumers written for DMS (Lambda functions, Redshift SQL over streaming ingestion, Glue
//! jobs) read cdc-bridge's records unchanged.
//!
//! `{"data":{...},"metadata":{"timestamp":"2025-11-22T03:10:00.123000Z","record-type":"data",
//! "operation":"insert","partition-key-type":"primary-key","schema-name":"public",
//! "table-name":"orders","transaction-id":748}}`. `operation` is `load` for snapshot rows, then
//! `insert`, `update`, `delete`; `data` is the row after the change, for a delete the row
//! before it (what the source sent: Postgres' default replica identity sends only the key). A
//! truncate is a control record: `record-type` `control`, `operation` `truncate-table`, an
//! empty `control` object instead of `data`. With `before_image`, updates carry the row
//! before the change (all of it, or its key columns) under `before_image_field`.
//!
//! DMS's record has no fixed column types, so values map by their kind: numbers stay JSON
//! numbers (decimals with their exact digits), binary is hexadecimal with DMS's `0x` prefix,
//! JSON documents are strings, times are ISO-8601 text. Every value has such a form: this
//! format never refuses an event.

#[cfg(test)]
mod tests;

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use super::json::{float, IsoText};
use super::{EncodeError, Format};
use crate::envelope::{ChangeEvent, Op, Row, SourcePosition, Value};

/// What `partition-key-type` says and what the record key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionKeyType {
    /// The row's primary key (its values joined by `.`).
    #[default]
    PrimaryKey,
    /// `schema.table`: every row of a table in one partition.
    SchemaTable,
}

/// Which columns an update's before image holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BeforeImage {
    /// No before image (DMS's default).
    #[default]
    None,
    /// The key columns (DMS's `pk-only`).
    PkOnly,
    /// Every column the source sent.
    All,
}

/// The options of `format = { kind = "dms", ... }`, named after DMS's endpoint and task
/// settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmsOptions {
    pub partition_key_type: PartitionKeyType,
    /// Prefix a primary-key partition value with `schema.table.` (`PartitionIncludeSchemaTable`).
    pub partition_include_schema_table: bool,
    /// Write `partition-key-value` into the metadata (`IncludePartitionValue`).
    pub include_partition_value: bool,
    /// Add `commit-timestamp` and `stream-position` (`IncludeTransactionDetails`).
    pub include_transaction_details: bool,
    pub before_image: BeforeImage,
    /// The before image's field (`BeforeImageSettings.FieldName`).
    pub before_image_field: String,
    /// Binary values without the `0x` prefix (`NoHexPrefix`).
    pub no_hex_prefix: bool,
}

impl Default for DmsOptions {
    fn default() -> Self {
        DmsOptions {
            partition_key_type: PartitionKeyType::default(),
            partition_include_schema_table: false,
            include_partition_value: false,
            include_transaction_details: false,
            before_image: BeforeImage::default(),
            before_image_field: "before-image".to_owned(),
            no_hex_prefix: false,
        }
    }
}

/// AWS DMS's JSON record.
pub struct DmsFormat {
    options: DmsOptions,
}

impl DmsFormat {
    pub fn new(options: DmsOptions) -> Self {
        DmsFormat { options }
    }

    fn namespace(event: &ChangeEvent) -> &str {
        event
            .source
            .schema
            .as_deref()
            .unwrap_or(&event.source.database)
    }

    /// DMS's partition key value of `event`.
    fn partition_value(&self, event: &ChangeEvent) -> String {
        let namespace = Self::namespace(event);
        let table = &event.source.table;
        if event.op == Op::Truncate {
            return format!("{}.{namespace}.{table}", event.source.pipeline);
        }
        match self.options.partition_key_type {
            PartitionKeyType::SchemaTable => format!("{namespace}.{table}"),
            PartitionKeyType::PrimaryKey => {
                let mut value = String::new();
                if self.options.partition_include_schema_table {
                    let _ = write!(value, "{namespace}.{table}.");
                }
                for (i, (_, v)) in event.key.iter().enumerate() {
                    if i > 0 {
                        value.push('.');
                    }
                    value.push_str(&key_text(v));
                }
                value
            }
        }
    }
}

impl Format for DmsFormat {
    fn encode_value(&self, event: &ChangeEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        serde_json::to_writer(
            out,
            &Record {
                event,
                format: self,
            },
        )
        .map_err(|e| EncodeError::new("dms", event, e.to_string()))
    }

    fn encode_key(&self, event: &ChangeEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(self.partition_value(event).as_bytes());
        Ok(())
    }

    fn encode_table_key(&self, event: &ChangeEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.options.partition_key_type == PartitionKeyType::PrimaryKey
            && !self.options.partition_include_schema_table
            && event.op != Op::Truncate
        {
            // Rows of several tables share the topic: the key names the table too.
            let namespace = Self::namespace(event);
            let _ = write!(ByteWriter(out), "{namespace}.{}.", event.source.table);
        }
        self.encode_key(event, out)
    }
}

/// A key value as text in a partition value: strings as they are, others as their JSON.
fn key_text(value: &Value) -> String {
    match value {
        Value::Text(text) | Value::Other { text, .. } => text.clone(),
        other => serde_json::to_string(&DmsValue {
            value: other,
            no_hex_prefix: false,
        })
        .map(|json| json.trim_matches('"').to_owned())
        .unwrap_or_default(),
    }
}

struct ByteWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

struct Record<'a> {
    event: &'a ChangeEvent,
    format: &'a DmsFormat,
}

impl Serialize for Record<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.event;
        let options = &self.format.options;
        let hex = options.no_hex_prefix;
        let mut map = s.serialize_map(None)?;
        match e.op {
            Op::Truncate => map.serialize_entry("control", &EmptyObject)?,
            Op::Delete => {
                map.serialize_entry("data", &e.before.as_ref().map(|r| DmsRow(r, hex)))?
            }
            _ => map.serialize_entry("data", &e.after.as_ref().map(|r| DmsRow(r, hex)))?,
        }
        if e.op == Op::Update && options.before_image != BeforeImage::None {
            let before = e.before.clone().unwrap_or_default();
            let image: Row = match options.before_image {
                BeforeImage::PkOnly => before
                    .iter()
                    .filter(|(name, _)| e.key.get(name).is_some())
                    .map(|(n, v)| (n.clone(), v.clone()))
                    .collect(),
                _ => before,
            };
            map.serialize_entry(&options.before_image_field, &DmsRow(&image, hex))?;
        }
        map.serialize_entry("metadata", &Metadata(self))?;
        map.end()
    }
}

struct EmptyObject;

impl Serialize for EmptyObject {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_map(Some(0))?.end()
    }
}

struct Metadata<'a>(&'a Record<'a>);

impl Serialize for Metadata<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Record { event: e, format } = self.0;
        let options = &format.options;
        let commit_ms = e.source.commit_ts_ms.unwrap_or(e.ts_ms);
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("timestamp", &micro_timestamp(commit_ms))?;
        let (record_type, operation) = match e.op {
            Op::Snapshot => ("data", "load"),
            Op::Insert => ("data", "insert"),
            Op::Update => ("data", "update"),
            Op::Delete => ("data", "delete"),
            Op::Truncate => ("control", "truncate-table"),
        };
        map.serialize_entry("record-type", record_type)?;
        map.serialize_entry("operation", operation)?;
        let key_type = match (e.op, options.partition_key_type) {
            (Op::Truncate, _) => "task-id",
            (_, PartitionKeyType::PrimaryKey) => "primary-key",
            (_, PartitionKeyType::SchemaTable) => "schema-table",
        };
        map.serialize_entry("partition-key-type", key_type)?;
        if options.include_partition_value {
            map.serialize_entry("partition-key-value", &format.partition_value(e))?;
        }
        map.serialize_entry("schema-name", DmsFormat::namespace(e))?;
        map.serialize_entry("table-name", &*e.source.table)?;
        if e.op != Op::Snapshot {
            if let SourcePosition::Postgres(pg) = &e.source.position {
                if let Some(xid) = pg.txid {
                    map.serialize_entry("transaction-id", &xid)?;
                }
            }
            if options.include_transaction_details {
                if let Some(commit) = e.source.commit_ts_ms {
                    map.serialize_entry("commit-timestamp", &micro_timestamp(commit))?;
                }
                map.serialize_entry("stream-position", &e.source.position.to_string())?;
            }
        }
        map.end()
    }
}

/// Milliseconds since the epoch as DMS's timestamp text, six fraction digits and `Z`.
fn micro_timestamp(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Micros, true)
}

struct DmsRow<'a>(&'a Row, bool);

impl Serialize for DmsRow<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0.iter() {
            map.serialize_entry(
                &**name,
                &DmsValue {
                    value,
                    no_hex_prefix: self.1,
                },
            )?;
        }
        map.end()
    }
}

struct DmsValue<'a> {
    value: &'a Value,
    no_hex_prefix: bool,
}

impl Serialize for DmsValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.value {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::UInt(u) => s.serialize_u64(*u),
            Value::Decimal(d) => match d.as_str() {
                special @ ("NaN" | "Infinity" | "-Infinity") => s.serialize_str(special),
                // The exact digits as a JSON number; a spelling JSON has no number for
                // (`.5`, `+1`) stays a string.
                digits => match RawValue::from_string(digits.to_owned()) {
                    Ok(number) => number.serialize(s),
                    Err(_) => s.serialize_str(digits),
                },
            },
            Value::Float(f) => float(s, *f),
            Value::Text(text) | Value::Other { text, .. } => s.serialize_str(text),
            Value::Bytes(bytes) => {
                let mut hex = String::with_capacity(bytes.len() * 2 + 2);
                if !self.no_hex_prefix {
                    hex.push_str("0x");
                }
                for byte in bytes {
                    let _ = write!(hex, "{byte:02X}");
                }
                s.serialize_str(&hex)
            }
            Value::Date(_)
            | Value::Time(_)
            | Value::Timestamp(_)
            | Value::TimestampTz(_)
            | Value::Uuid(_) => IsoText(self.value).serialize(s),
            Value::Json(doc) => s.serialize_str(doc.as_str()),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&DmsValue {
                        value: item,
                        no_hex_prefix: self.no_hex_prefix,
                    })?;
                }
                seq.end()
            }
        }
    }
}
