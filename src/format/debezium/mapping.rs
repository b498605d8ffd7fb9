//! Which Connect type carries a column, chosen as Debezium's connectors choose it for the
//! same source type with their default settings (`time.precision.mode = adaptive` on
//! Postgres, `adaptive_time_microseconds` on MySQL), and the column's schema.
//!
//! The mapping comes from the column's declared type in the event's table schema, never from
//! one value: a `numeric(10,2)` is a `Decimal` of scale 2 in every event, null or not. Events
//! without a table schema (DynamoDB items have no fixed columns) are mapped by their values'
//! kinds instead ([`Mapping::for_value`]).

use super::schema::Schema;
use super::DecimalHandling;
use crate::envelope::{ColumnType, SourceKind, Value};

/// How one column's values are written.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapping {
    Boolean,
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    /// `org.apache.kafka.connect.data.Decimal`: unscaled bytes at the column's scale.
    Decimal {
        precision: Option<u32>,
        scale: u32,
    },
    /// `io.debezium.data.VariableScaleDecimal`: each value with its own scale.
    VariableScaleDecimal,
    /// A decimal as a JSON number (`decimal_handling = "double"`).
    DecimalDouble,
    /// A decimal as its text (`decimal_handling = "string"`).
    DecimalString,
    /// A string, with the logical name and parameters Debezium gives it (JSON, UUID, enums).
    String {
        name: Option<&'static str>,
        parameters: Vec<(&'static str, String)>,
    },
    Bytes,
    /// `bit(1)` / `BIT(1)`: a boolean.
    Bit,
    /// `io.debezium.data.Bits`: the bits as bytes, least significant byte first.
    Bits {
        length: u32,
    },
    /// `io.debezium.time.Date`: days since 1970-01-01.
    Date,
    /// `io.debezium.time.Time`: milliseconds past midnight (int32).
    TimeMillis,
    /// `io.debezium.time.MicroTime`: microseconds past midnight.
    TimeMicros,
    /// `io.debezium.time.Timestamp`: milliseconds since the epoch of a wall-clock time.
    TimestampMillis,
    /// `io.debezium.time.MicroTimestamp`.
    TimestampMicros,
    /// `io.debezium.time.ZonedTimestamp`: ISO-8601 text in UTC with the column's fraction
    /// digits (`None`: as few as the value needs).
    ZonedTimestamp {
        digits: Option<u8>,
    },
    /// `io.debezium.time.ZonedTime`: a time of day in UTC, as text.
    ZonedTime,
    /// `io.debezium.time.MicroDuration`: an interval in microseconds.
    MicroDuration,
    /// `io.debezium.time.Year`.
    Year,
    /// `io.debezium.data.Json`: any value as the text of its JSON form (a DynamoDB list
    /// whose elements differ in type, which a Connect array cannot hold).
    JsonText,
    Array(Box<Mapping>),
}

impl Mapping {
    /// The mapping of a column of `kind` read from `source`.
    pub fn for_column(kind: &ColumnType, source: SourceKind, decimals: DecimalHandling) -> Self {
        let mysql = source == SourceKind::Mysql;
        match kind {
            ColumnType::Bool => Mapping::Boolean,
            ColumnType::Int { bits, unsigned } => match (bits, unsigned) {
                (8, _) | (16, false) => Mapping::Int16,
                (16, true) | (24, _) | (32, false) => Mapping::Int32,
                _ => Mapping::Int64,
            },
            ColumnType::Float { bits: 32 } => Mapping::Float32,
            ColumnType::Float { .. } => Mapping::Float64,
            ColumnType::Decimal { precision, scale } => match decimals {
                DecimalHandling::Double => Mapping::DecimalDouble,
                DecimalHandling::String => Mapping::DecimalString,
                DecimalHandling::Precise => match scale {
                    Some(scale) => Mapping::Decimal {
                        precision: *precision,
                        scale: *scale,
                    },
                    None => Mapping::VariableScaleDecimal,
                },
            },
            ColumnType::Text { .. } | ColumnType::Other => Mapping::plain_string(),
            ColumnType::Bytes { .. } => Mapping::Bytes,
            ColumnType::Bits { length: Some(1) } => Mapping::Bit,
            ColumnType::Bits { length } => Mapping::Bits {
                length: length.unwrap_or(0),
            },
            ColumnType::Date => Mapping::Date,
            ColumnType::Time { zoned: true, .. } => Mapping::ZonedTime,
            ColumnType::Time { precision, .. } => {
                if mysql || *precision > 3 {
                    Mapping::TimeMicros
                } else {
                    Mapping::TimeMillis
                }
            }
            ColumnType::Timestamp { precision } if *precision <= 3 => Mapping::TimestampMillis,
            ColumnType::Timestamp { .. } => Mapping::TimestampMicros,
            ColumnType::TimestampTz { precision } => Mapping::ZonedTimestamp {
                digits: Some(*precision),
            },
            ColumnType::Interval => Mapping::MicroDuration,
            ColumnType::Year => Mapping::Year,
            ColumnType::Uuid => Mapping::named_string("io.debezium.data.Uuid"),
            ColumnType::Json => Mapping::named_string("io.debezium.data.Json"),
            ColumnType::Enum { labels } => Mapping::String {
                name: Some("io.debezium.data.Enum"),
                parameters: vec![("allowed", labels.join(","))],
            },
            ColumnType::Set { labels } => Mapping::String {
                name: Some("io.debezium.data.EnumSet"),
                parameters: vec![("allowed", labels.join(","))],
            },
            ColumnType::Array(element) => {
                Mapping::Array(Box::new(Mapping::for_column(element, source, decimals)))
            }
        }
    }

    /// The mapping of a value of a column no schema describes.
    pub fn for_value(value: &Value, decimals: DecimalHandling) -> Self {
        match value {
            Value::Null | Value::Text(_) | Value::Other { .. } => Mapping::plain_string(),
            Value::Bool(_) => Mapping::Boolean,
            Value::Int(_) | Value::UInt(_) => Mapping::Int64,
            Value::Float(_) => Mapping::Float64,
            Value::Decimal(_) => match decimals {
                DecimalHandling::Precise => Mapping::VariableScaleDecimal,
                DecimalHandling::Double => Mapping::DecimalDouble,
                DecimalHandling::String => Mapping::DecimalString,
            },
            Value::Bytes(_) => Mapping::Bytes,
            Value::Date(_) => Mapping::Date,
            Value::Time(_) => Mapping::TimeMicros,
            Value::Timestamp(_) => Mapping::TimestampMicros,
            Value::TimestampTz(_) => Mapping::ZonedTimestamp { digits: None },
            Value::Uuid(_) => Mapping::named_string("io.debezium.data.Uuid"),
            Value::Json(_) => Mapping::named_string("io.debezium.data.Json"),
            Value::Array(items) => {
                let mut kinds = items
                    .iter()
                    .filter(|v| !matches!(v, Value::Null))
                    .map(|v| Mapping::for_value(v, decimals));
                let first = kinds.next().unwrap_or_else(Mapping::plain_string);
                if kinds.all(|kind| kind == first) {
                    Mapping::Array(Box::new(first))
                } else {
                    Mapping::JsonText
                }
            }
        }
    }

    fn plain_string() -> Self {
        Mapping::String {
            name: None,
            parameters: Vec::new(),
        }
    }

    fn named_string(name: &'static str) -> Self {
        Mapping::String {
            name: Some(name),
            parameters: Vec::new(),
        }
    }

    /// Whether Debezium's placeholder for an unavailable value fits this type.
    pub fn takes_placeholder(&self) -> bool {
        match self {
            Mapping::String { .. }
            | Mapping::Bytes
            | Mapping::DecimalString
            | Mapping::JsonText => true,
            Mapping::Array(element) => element.takes_placeholder(),
            _ => false,
        }
    }

    /// The Connect schema of a column of this mapping.
    pub fn schema(&self, optional: bool) -> Schema {
        let logical = |kind, name| Schema::logical(kind, name, optional);
        match self {
            Mapping::Boolean | Mapping::Bit => Schema::new("boolean", optional),
            Mapping::Int16 => Schema::new("int16", optional),
            Mapping::Int32 => Schema::new("int32", optional),
            Mapping::Int64 => Schema::new("int64", optional),
            Mapping::Float32 => Schema::new("float", optional),
            Mapping::Float64 | Mapping::DecimalDouble => Schema::new("double", optional),
            Mapping::DecimalString => Schema::new("string", optional),
            Mapping::Decimal { precision, scale } => {
                let schema = logical("bytes", "org.apache.kafka.connect.data.Decimal")
                    .parameter("scale", scale.to_string());
                match precision {
                    Some(p) => schema.parameter("connect.decimal.precision", p.to_string()),
                    None => schema,
                }
            }
            Mapping::VariableScaleDecimal => Schema {
                doc: Some("Variable scaled decimal"),
                fields: vec![
                    Schema::new("int32", false).named_field("scale"),
                    Schema::new("bytes", false).named_field("value"),
                ],
                ..logical("struct", "io.debezium.data.VariableScaleDecimal")
            },
            Mapping::String { name, parameters } => {
                let mut schema = match name {
                    Some(name) => logical("string", name),
                    None => Schema::new("string", optional),
                };
                schema.parameters.clone_from(parameters);
                schema
            }
            Mapping::Bytes => Schema::new("bytes", optional),
            Mapping::Bits { length } => {
                logical("bytes", "io.debezium.data.Bits").parameter("length", length.to_string())
            }
            Mapping::Date => logical("int32", "io.debezium.time.Date"),
            Mapping::TimeMillis => logical("int32", "io.debezium.time.Time"),
            Mapping::TimeMicros => logical("int64", "io.debezium.time.MicroTime"),
            Mapping::TimestampMillis => logical("int64", "io.debezium.time.Timestamp"),
            Mapping::TimestampMicros => logical("int64", "io.debezium.time.MicroTimestamp"),
            Mapping::ZonedTimestamp { .. } => logical("string", "io.debezium.time.ZonedTimestamp"),
            Mapping::ZonedTime => logical("string", "io.debezium.time.ZonedTime"),
            Mapping::MicroDuration => logical("int64", "io.debezium.time.MicroDuration"),
            Mapping::Year => logical("int32", "io.debezium.time.Year"),
            Mapping::JsonText => logical("string", "io.debezium.data.Json"),
            Mapping::Array(element) => Schema {
                items: Some(Box::new(element.schema(true))),
                ..Schema::new("array", optional)
            },
        }
    }
}
