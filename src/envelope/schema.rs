//! Table schemas: a table's columns as its source describes them, for formats that write a
//! schema beside the values (Kafka Connect schemas, Avro) or choose an encoding by the
//! column's declared type rather than by the value (a `timestamp(3)` in milliseconds, a
//! `numeric(10,2)` as a scaled integer).
//!
//! Sources build one [`TableSchema`] per table shape and share it, behind an `Arc`, with
//! every event of that table until its shape changes (DDL), when the next events carry the
//! new one. A format never reads a connector's own type names: [`ColumnType`] is the portable
//! description, and `source_type` the source's spelling, for documentation and headers.

use std::sync::Arc;

use super::ColumnName;

/// The columns of a table, in the source's column order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    pub columns: Vec<ColumnSchema>,
}

impl TableSchema {
    pub fn column(&self, name: &str) -> Option<&ColumnSchema> {
        self.columns.iter().find(|c| &*c.name == name)
    }

    /// The columns of the event key, in column order.
    pub fn key_columns(&self) -> impl Iterator<Item = &ColumnSchema> {
        self.columns.iter().filter(|c| c.key)
    }

    pub fn approx_size(&self) -> usize {
        self.columns
            .iter()
            .map(|c| std::mem::size_of::<ColumnSchema>() + c.name.len() + c.source_type.len())
            .sum()
    }
}

/// One column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSchema {
    pub name: ColumnName,
    /// The source's name of the type, with its modifiers where the source gives them
    /// (`numeric(10,2)`, `timestamp(3) without time zone`, `int unsigned`).
    pub source_type: Arc<str>,
    pub kind: ColumnType,
    /// Whether the column may hold NULL (false for `NOT NULL` columns).
    pub nullable: bool,
    /// Part of the event key.
    pub key: bool,
}

/// What a column holds, independent of the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    Bool,
    /// An integer of `bits` (8, 16, 24 for MySQL's MEDIUMINT, 32 or 64).
    Int {
        bits: u8,
        unsigned: bool,
    },
    /// A binary float of 32 or 64 bits.
    Float {
        bits: u8,
    },
    /// An exact decimal; without a declared precision and scale (Postgres `numeric`) each
    /// value has its own scale.
    Decimal {
        precision: Option<u32>,
        scale: Option<u32>,
    },
    /// Text of at most `length` characters where declared.
    Text {
        length: Option<u32>,
    },
    Bytes {
        length: Option<u32>,
    },
    /// A bit string of `length` bits (`None`: any length).
    Bits {
        length: Option<u32>,
    },
    Date,
    /// A time of day with `precision` fractional-second digits; `zoned` when it carries an
    /// offset (Postgres `timetz`).
    Time {
        precision: u8,
        zoned: bool,
    },
    /// A wall-clock timestamp without a zone, with `precision` fractional-second digits.
    Timestamp {
        precision: u8,
    },
    /// An instant (Postgres `timestamptz`, MySQL `TIMESTAMP`), with `precision` fractional
    /// digits.
    TimestampTz {
        precision: u8,
    },
    Interval,
    /// MySQL `YEAR`.
    Year,
    Uuid,
    Json,
    /// One of the labels.
    Enum {
        labels: Arc<[String]>,
    },
    /// Any subset of the labels (MySQL `SET`).
    Set {
        labels: Arc<[String]>,
    },
    Array(Box<ColumnType>),
    /// A type none of the above describes (`source_type` names it); values are its text.
    Other,
}
