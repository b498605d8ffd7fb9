//! The change-event envelope: the one type every source produces and every format consumes.
//!
//! A [`ChangeEvent`] says what happened (`op`), where (`source`), to which row (`key`), and
//! the row before and after the change. Columns whose value the source did not send (unchanged
//! TOASTed values in Postgres) are named in `unchanged` and are absent from `after`: a consumer
//! can tell "unknown" from any real value, and no placeholder is ever invented.
//!
//! An update that changes the row's key is not delivered as an update: a consumer keyed by
//! the key would keep the row under its old key forever. [`ChangeEvent::split_key_change`]
//! turns it into the delete of the old key and the insert under the new key, both at the
//! update's position, each naming the other key ([`KeyChange`]). The source emitter applies it
//! to every event, so every source and every sink gets this one behaviour.

mod position;
mod schema;
mod value;

use std::sync::Arc;

pub use position::{DynamodbPosition, MysqlPosition, PostgresPosition, SourcePosition, Txid};
pub use schema::{ColumnSchema, ColumnType, TableSchema};
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
    /// The table's columns, where the source knows them (not for DynamoDB, whose items have
    /// no fixed columns).
    pub table_schema: Option<Arc<TableSchema>>,
    /// Where in the source this change was read, with its transaction id.
    pub position: SourcePosition,
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

    /// The column at `index` and its value.
    pub fn entry(&self, index: usize) -> Option<(&ColumnName, &Value)> {
        self.0.get(index).map(|(name, value)| (name, value))
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

/// On the two events an update that changed the row's key becomes: the other key.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyChange {
    /// On the delete of the old key: the key the row now has.
    NewKey(Row),
    /// On the insert under the new key: the key the row had.
    OldKey(Row),
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
    /// Set only on the events a key-changing update was split into; sources leave it `None`.
    pub key_change: Option<KeyChange>,
    /// When cdc-bridge read the change, in ms since the Unix epoch.
    pub ts_ms: i64,
}

impl ChangeEvent {
    /// A rough size in bytes, for memory budgets and batch limits.
    pub fn approx_size(&self) -> usize {
        let rows = self.key.approx_size()
            + match &self.key_change {
                Some(KeyChange::NewKey(key) | KeyChange::OldKey(key)) => key.approx_size(),
                None => 0,
            }
            + self.before.as_ref().map_or(0, Row::approx_size)
            + self.after.as_ref().map_or(0, Row::approx_size);
        let source = self.source.database.len()
            + self.source.table.len()
            + self.source.position.approx_heap_size()
            + self.source.schema.as_ref().map_or(0, |s| s.len());
        std::mem::size_of::<ChangeEvent>() + rows + source
    }

    /// The row's key before this update, when the update changed it: `before` holds every key
    /// column and at least one differs from `key` in its value or its representation (a key
    /// a consumer sees differently is another key). `None` for every other event, and when
    /// the source did not send the old key (see the README for which sources do).
    pub fn old_key(&self) -> Option<Row> {
        if self.op != Op::Update || self.key.is_empty() {
            return None;
        }
        let before = self.before.as_ref()?;
        let mut old = Row::with_capacity(self.key.len());
        let mut changed = false;
        for (column, new) in self.key.iter() {
            let value = before.get(column)?;
            changed |= !value.same_as(new);
            old.push(column.clone(), value.clone());
        }
        changed.then_some(old)
    }

    /// An update that changed the row's key becomes two events, in this order: the delete of
    /// the old key (`before` as the source sent it, `new_key` naming where the row went) and
    /// the insert under the new key (`after`, `old_key` naming where it came from). Both keep
    /// the update's source position and time, so replays repeat them exactly and checkpoints
    /// still follow the pair. Columns the source did not send (`unchanged`) are filled from
    /// `before` when it holds them. Any other event is returned as it is, alone.
    pub fn split_key_change(self) -> (ChangeEvent, Option<ChangeEvent>) {
        let Some(old_key) = self.old_key() else {
            return (self, None);
        };
        let ChangeEvent {
            source,
            key,
            before,
            after,
            unchanged,
            ts_ms,
            ..
        } = self;
        let mut after = after.unwrap_or_default();
        let mut still_unknown = Vec::new();
        for column in unchanged {
            match before.as_ref().and_then(|b| b.get(&column)) {
                Some(value) => after.push(column, value.clone()),
                None => still_unknown.push(column),
            }
        }
        let delete = ChangeEvent {
            op: Op::Delete,
            source: source.clone(),
            key: old_key.clone(),
            before,
            after: None,
            unchanged: Vec::new(),
            key_change: Some(KeyChange::NewKey(key.clone())),
            ts_ms,
        };
        let insert = ChangeEvent {
            op: Op::Insert,
            source,
            key,
            before: None,
            after: Some(after),
            unchanged: still_unknown,
            key_change: Some(KeyChange::OldKey(old_key)),
            ts_ms,
        };
        (delete, Some(insert))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(columns: &[(&str, Value)]) -> Row {
        columns
            .iter()
            .map(|(name, value)| (ColumnName::from(*name), value.clone()))
            .collect()
    }

    fn update(key: Row, before: Option<Row>, after: Row) -> ChangeEvent {
        ChangeEvent {
            op: Op::Update,
            source: SourceInfo {
                connector: SourceKind::Postgres,
                pipeline: "p".into(),
                database: "app".into(),
                schema: Some("public".into()),
                table: "t".into(),
                table_schema: None,
                position: SourcePosition::Postgres(PostgresPosition {
                    lsn: 0x10,
                    txid: Some(7),
                }),
                commit_ts_ms: Some(1),
                snapshot: false,
                ttl_expired: false,
            },
            key,
            before,
            after: Some(after),
            unchanged: Vec::new(),
            key_change: None,
            ts_ms: 2,
        }
    }

    #[test]
    fn a_key_change_becomes_the_delete_of_the_old_key_then_the_insert_under_the_new() {
        let mut event = update(
            row(&[("id", Value::Int(2))]),
            Some(row(&[
                ("id", Value::Int(1)),
                ("body", Value::Text("long".into())),
            ])),
            row(&[("id", Value::Int(2)), ("n", Value::Int(5))]),
        );
        event.unchanged = vec!["body".into(), "other".into()];
        let (delete, insert) = event.clone().split_key_change();
        let insert = insert.expect("two events");

        assert_eq!(delete.op, Op::Delete);
        assert_eq!(delete.key, row(&[("id", Value::Int(1))]));
        assert_eq!(delete.before, event.before);
        assert_eq!(delete.after, None);
        assert_eq!(
            delete.key_change,
            Some(KeyChange::NewKey(row(&[("id", Value::Int(2))])))
        );

        assert_eq!(insert.op, Op::Insert);
        assert_eq!(insert.key, event.key);
        assert_eq!(insert.before, None);
        assert_eq!(
            insert.after,
            Some(row(&[
                ("id", Value::Int(2)),
                ("n", Value::Int(5)),
                ("body", Value::Text("long".into()))
            ])),
            "an unsent column the old row holds is known"
        );
        assert_eq!(insert.unchanged, vec![ColumnName::from("other")]);
        assert_eq!(
            insert.key_change,
            Some(KeyChange::OldKey(row(&[("id", Value::Int(1))])))
        );
        for part in [&delete, &insert] {
            assert_eq!(part.source, event.source, "the update's position");
            assert_eq!(part.ts_ms, event.ts_ms);
        }
    }

    #[test]
    fn an_update_keeping_its_key_or_without_the_old_key_stays_one_update() {
        let key = row(&[("id", Value::Int(1)), ("k", Value::Text("x".into()))]);
        let after = row(&[("id", Value::Int(1)), ("k", Value::Text("x".into()))]);
        let cases = [
            ("same key in a full old row", Some(after.clone())),
            ("no old row (REPLICA IDENTITY DEFAULT)", None),
            (
                "the old row lacks a key column",
                Some(row(&[("id", Value::Int(9))])),
            ),
        ];
        for (case, before) in cases {
            let event = update(key.clone(), before, after.clone());
            let (first, second) = event.clone().split_key_change();
            assert_eq!((first, second), (event, None), "{case}");
        }
        let mut keyless = update(Row::new(), Some(row(&[("v", Value::Int(1))])), Row::new());
        keyless.after = Some(row(&[("v", Value::Int(2))]));
        assert_eq!(
            keyless.old_key(),
            None,
            "a keyless row has no key to change"
        );
        let mut delete = update(key.clone(), Some(row(&[("id", Value::Int(2))])), after);
        delete.op = Op::Delete;
        assert_eq!(delete.old_key(), None, "only updates are split");
    }

    #[test]
    fn keys_compare_as_consumers_see_them() {
        let float_key = |before: f64, after: f64| {
            update(
                row(&[("f", Value::Float(after))]),
                Some(row(&[("f", Value::Float(before))])),
                row(&[("f", Value::Float(after))]),
            )
            .old_key()
            .is_some()
        };
        assert!(!float_key(f64::NAN, f64::NAN), "NaN is the same key");
        assert!(float_key(0.0, -0.0), "-0.0 is written differently");
        assert!(!float_key(1.5, 1.5));
    }
}
