//! The change-event envelope: the one type every source produces and every format consumes.
//!
//! A [`ChangeEvent`] says what happened (`op`), where (`source`), to which row (`key`), and
//! the row before and after the change. Columns whose value the source did not send (unchanged
//! TOASTed values in Postgres) are named in `unchanged` and are absent from `after`: a consumer
//! can tell "unknown" from any real value, and no placeholder is ever invented.

mod value;

use std::sync::Arc;

pub use value::{format_uuid, Decimal, InvalidDecimal, Json, Value};

/// A column name, shared between the events of a table.
pub type ColumnName = Arc<str>;

/// What happened to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Insert,
    Update,
    Delete,
    /// A row read by an initial snapshot.
    Snapshot,
    /// The whole table was emptied; `key`, `before` and `after` are empty.
    Truncate,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Snapshot => "snapshot",
            Op::Truncate => "truncate",
        }
    }
}

/// The kind of system an event was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    Generator,
    Postgres,
    Mysql,
    Dynamodb,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Generator => "generator",
            SourceKind::Postgres => "postgres",
            SourceKind::Mysql => "mysql",
            SourceKind::Dynamodb => "dynamodb",
        }
    }
}

/// Where and when a change happened.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceInfo {
    pub connector: SourceKind,
    pub pipeline: Arc<str>,
    pub database: Arc<str>,
    /// The schema, for sources that have one (Postgres).
    pub schema: Option<Arc<str>>,
    pub table: Arc<str>,
    /// The source position of this change in the source's own notation (LSN, `file:pos`, ...).
    pub position: String,
    pub txid: Option<String>,
    pub commit_ts_ms: Option<i64>,
    pub snapshot: bool,
    /// A delete made by the source's time-to-live expiry (DynamoDB TTL), not by a client.
    pub ttl_expired: bool,
}

/// An ordered list of columns and their values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row(Vec<(ColumnName, Value)>);

impl Row {
    pub fn new() -> Self {
        Row(Vec::new())
    }

    pub fn with_capacity(columns: usize) -> Self {
        Row(Vec::with_capacity(columns))
    }

    pub fn push(&mut self, column: ColumnName, value: Value) {
        self.0.push((column, value));
    }

    pub fn get(&self, column: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(name, _)| &**name == column)
            .map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ColumnName, &Value)> {
        self.0.iter().map(|(name, value)| (name, value))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn approx_size(&self) -> usize {
        self.0
            .iter()
            .map(|(name, value)| name.len() + value.approx_size())
            .sum()
    }
}

impl FromIterator<(ColumnName, Value)> for Row {
    fn from_iter<I: IntoIterator<Item = (ColumnName, Value)>>(iter: I) -> Self {
        Row(iter.into_iter().collect())
    }
}

/// One row change, as every source produces it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    pub op: Op,
    pub source: SourceInfo,
    /// The primary-key columns and their values; empty for tables without a key.
    pub key: Row,
    pub before: Option<Row>,
    pub after: Option<Row>,
    /// Columns whose new value is unknown (not sent by the source); absent from `after`.
    pub unchanged: Vec<ColumnName>,
    /// When cdc-bridge read the change, in ms since the Unix epoch.
    pub ts_ms: i64,
}

impl ChangeEvent {
    /// A rough size in bytes, for memory budgets and batch limits.
    pub fn approx_size(&self) -> usize {
        let rows = self.key.approx_size()
            + self.before.as_ref().map_or(0, Row::approx_size)
            + self.after.as_ref().map_or(0, Row::approx_size);
        let source = self.source.database.len()
            + self.source.table.len()
            + self.source.position.len()
            + self.source.schema.as_ref().map_or(0, |s| s.len());
        std::mem::size_of::<ChangeEvent>() + rows + source
    }

    /// `schema.table` when the source has schemas, else `database.table`.
    pub fn qualified_table(&self) -> String {
        let namespace = self
            .source
            .schema
            .as_deref()
            .unwrap_or(&self.source.database);
        format!("{namespace}.{}", self.source.table)
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}
