//! Tables as the source sees them (columns, decoders, primary key) and the building of
//! envelope events from their tuples.
//!
//! The event key is the table's primary key (from the catalog); without one, the replica
//! identity index columns; with neither, it is empty (sinks then fall back to the table name).
//! Columns sent as "unchanged TOAST" are named in `unchanged` and left out of `after`.
//!
//! Each relation carries its table schema for the envelope: column types from the type OIDs
//! and modifiers ([`column_type`]), the declared type names and NOT NULL from the catalog.
//! A Relation message (sent again after DDL) makes a new relation, so events after DDL carry
//! the new schema.

use std::sync::Arc;

use super::column_types::column_type;
use super::decode::{Datum, OldRow, Tuple};
use super::value::{decode, Decoder};
use crate::envelope::{
    now_ms, ChangeEvent, ColumnName, ColumnSchema, Op, PostgresPosition, Row, SourceInfo,
    SourceKind, SourcePosition, TableSchema, Value,
};

#[derive(Debug, Clone)]
pub struct Column {
    pub name: ColumnName,
    pub type_oid: u32,
    /// The type modifier (`atttypmod`): a length, a precision and scale, or -1.
    pub typmod: i32,
    pub decoder: Decoder,
    /// Part of the replica identity (what an old-key tuple carries).
    pub identity: bool,
}

/// A column as the catalog declares it, beyond what a Relation message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredColumn {
    pub name: String,
    /// `format_type(atttypid, atttypmod)`: `numeric(10,2)`, `character varying(20)`.
    pub declared_type: String,
    pub not_null: bool,
    pub primary_key: bool,
}

#[derive(Debug, Clone)]
pub struct Relation {
    pub oid: u32,
    pub schema: Arc<str>,
    pub table: Arc<str>,
    pub columns: Vec<Column>,
    /// Indexes into `columns` of the event key.
    pub key: Vec<usize>,
    pub table_schema: Arc<TableSchema>,
}

/// Where and when a change happened, shared by the events of one transaction.
#[derive(Debug, Clone)]
pub struct ChangeContext {
    pub pipeline: Arc<str>,
    pub database: Arc<str>,
    /// The transaction's commit LSN (the consistent point for snapshot rows): positions
    /// increase in commit order, so "latest position per key" is the latest state.
    pub position: PostgresPosition,
    pub commit_ts_ms: Option<i64>,
}

impl Relation {
    /// The relation of table `schema.table` (`oid`) with `columns` as replication sends them,
    /// completed by what the catalog `declared` of them. The key is the primary key, else the
    /// replica identity columns unless every column is one (REPLICA IDENTITY FULL: no key).
    pub fn new(
        oid: u32,
        (schema, table): (Arc<str>, Arc<str>),
        columns: Vec<Column>,
        declared: &[DeclaredColumn],
    ) -> Self {
        let declared_as = |column: &Column| declared.iter().find(|d| *d.name == *column.name);
        let by_pk: Vec<usize> = (0..columns.len())
            .filter(|&i| declared_as(&columns[i]).is_some_and(|d| d.primary_key))
            .collect();
        let key = if !by_pk.is_empty() || columns.iter().all(|c| c.identity) {
            by_pk
        } else {
            (0..columns.len())
                .filter(|&i| columns[i].identity)
                .collect()
        };
        let table_schema = TableSchema {
            columns: columns
                .iter()
                .enumerate()
                .map(|(i, column)| {
                    let declared = declared_as(column);
                    ColumnSchema {
                        name: column.name.clone(),
                        source_type: declared.map_or_else(
                            || format!("oid {}", column.type_oid).into(),
                            |d| d.declared_type.as_str().into(),
                        ),
                        kind: column_type(column.type_oid, column.typmod, &column.decoder),
                        nullable: !declared.is_some_and(|d| d.not_null),
                        key: key.contains(&i),
                    }
                })
                .collect(),
        };
        Relation {
            oid,
            schema,
            table,
            columns,
            key,
            table_schema: Arc::new(table_schema),
        }
    }

    /// This relation with only the columns named in `names` (a publication's column list),
    /// in table order; its key keeps the key columns among them.
    pub fn of_columns(&self, names: &[String]) -> Relation {
        let kept: Vec<usize> = (0..self.columns.len())
            .filter(|&i| names.iter().any(|n| *n == *self.columns[i].name))
            .collect();
        let key = self
            .key
            .iter()
            .filter_map(|k| kept.iter().position(|i| i == k))
            .collect();
        let table_schema = TableSchema {
            columns: kept
                .iter()
                .map(|&i| self.table_schema.columns[i].clone())
                .collect(),
        };
        Relation {
            oid: self.oid,
            schema: self.schema.clone(),
            table: self.table.clone(),
            columns: kept.iter().map(|&i| self.columns[i].clone()).collect(),
            key,
            table_schema: Arc::new(table_schema),
        }
    }

    fn row(&self, tuple: &Tuple, only_identity: bool, unchanged: &mut Vec<ColumnName>) -> Row {
        let mut row = Row::with_capacity(self.columns.len());
        for (column, datum) in self.columns.iter().zip(tuple) {
            if only_identity && !column.identity {
                continue;
            }
            match datum {
                Datum::Null => row.push(column.name.clone(), Value::Null),
                Datum::Unchanged => unchanged.push(column.name.clone()),
                Datum::Text(bytes) => row.push(
                    column.name.clone(),
                    decode(&column.decoder, &String::from_utf8_lossy(bytes)),
                ),
                Datum::Binary(bytes) => row.push(column.name.clone(), Value::Bytes(bytes.to_vec())),
            }
        }
        row
    }

    fn source(&self, ctx: &ChangeContext, snapshot: bool) -> SourceInfo {
        SourceInfo {
            connector: SourceKind::Postgres,
            pipeline: ctx.pipeline.clone(),
            database: ctx.database.clone(),
            schema: Some(self.schema.clone()),
            table: self.table.clone(),
            table_schema: Some(self.table_schema.clone()),
            position: SourcePosition::Postgres(ctx.position),
            commit_ts_ms: ctx.commit_ts_ms,
            snapshot,
            ttl_expired: false,
        }
    }

    /// A row read by a copy at `ts_ms`; `value(i)` is the text of its column `i` (`None` for
    /// NULL).
    pub fn snapshot_event<'v>(
        &self,
        ctx: &ChangeContext,
        ts_ms: i64,
        value: impl Fn(usize) -> Option<&'v str>,
    ) -> ChangeEvent {
        let after: Row = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                (
                    c.name.clone(),
                    value(i).map_or(Value::Null, |text| decode(&c.decoder, text)),
                )
            })
            .collect();
        // Every column is in `after`, in the relation's order: the key is found by position.
        let key = self
            .key
            .iter()
            .filter_map(|&i| after.entry(i).map(|(name, v)| (name.clone(), v.clone())))
            .collect();
        ChangeEvent {
            op: Op::Snapshot,
            source: self.source(ctx, true),
            key,
            before: None,
            after: Some(after),
            unchanged: Vec::new(),
            key_change: None,
            ts_ms,
        }
    }

    pub fn insert_event(&self, ctx: &ChangeContext, new: &Tuple) -> ChangeEvent {
        let mut unchanged = Vec::new();
        let after = self.row(new, false, &mut unchanged);
        self.event(ctx, Op::Insert, None, Some(after), unchanged)
    }

    pub fn update_event(
        &self,
        ctx: &ChangeContext,
        old: Option<&OldRow>,
        new: &Tuple,
    ) -> ChangeEvent {
        let mut unchanged = Vec::new();
        let after = self.row(new, false, &mut unchanged);
        let before = old.map(|old| self.old_row(old));
        self.event(ctx, Op::Update, before, Some(after), unchanged)
    }

    pub fn delete_event(&self, ctx: &ChangeContext, old: &OldRow) -> ChangeEvent {
        let before = self.old_row(old);
        self.event(ctx, Op::Delete, Some(before), None, Vec::new())
    }

    pub fn truncate_event(&self, ctx: &ChangeContext) -> ChangeEvent {
        ChangeEvent {
            op: Op::Truncate,
            source: self.source(ctx, false),
            key: Row::new(),
            before: None,
            after: None,
            unchanged: Vec::new(),
            key_change: None,
            ts_ms: now_ms(),
        }
    }

    fn old_row(&self, old: &OldRow) -> Row {
        // Unchanged markers cannot appear in old rows; the list is discarded.
        let mut ignored = Vec::new();
        match old {
            OldRow::Key(tuple) => self.row(tuple, true, &mut ignored),
            OldRow::Full(tuple) => self.row(tuple, false, &mut ignored),
        }
    }

    fn event(
        &self,
        ctx: &ChangeContext,
        op: Op,
        before: Option<Row>,
        after: Option<Row>,
        unchanged: Vec<ColumnName>,
    ) -> ChangeEvent {
        // Each key column from the new row; from the old one where the new row lacks it (a
        // delete, or an unchanged TOASTed key column, which keeps its old value).
        let key = self
            .key
            .iter()
            .filter_map(|&i| {
                let name = &self.columns[i].name;
                let value = after.as_ref().and_then(|a| a.get(name));
                let value = value.or_else(|| before.as_ref().and_then(|b| b.get(name)));
                value.map(|v| (name.clone(), v.clone()))
            })
            .collect();
        ChangeEvent {
            op,
            source: self.source(ctx, false),
            key,
            before,
            after,
            unchanged,
            key_change: None,
            ts_ms: now_ms(),
        }
    }
}
