//! One chunk of a table's copy: the rows after the last key copied, in key order
//! (keyset pagination: `(k1, k2) > (a, b)` written out as `k1 > a OR (k1 = a AND k2 > b)`,
//! which the key's index serves), read in the connection's open snapshot and turned into
//! `snapshot` events with the same column types the stream's TABLE_MAP gives.
//!
//! The last key's values go back into the next chunk's query as literals that compare
//! exactly as the column does ([`KeyLiteral`]). A keyless table is one chunk. A row that cannot
//! be decoded is a data error naming the table and the snapshot's position.

use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::{Column, Conn, Value as MyValue};
use mysql_common::constants::{ColumnFlags, ColumnType};

use super::catalog::columns_of;
use super::column_types::{column_schema, Declared};
use super::error::MysqlError;
use super::position::BinlogPosition;
use super::snapshot::{quote, TableCopy};
use super::table::CatalogColumn;
use super::table::{ColumnShape, TextEncoding};
use super::{key_of, source_info, sql, value, Origin};
use crate::envelope::{ChangeEvent, Op, Row, SourceInfo, TableSchema};
use crate::source::progress::{CopyBatch, TableProgress};
use crate::source::{Halt, SourceContext};

/// Rows copied between two reports of progress to the probe.
const PROGRESS_EVERY_ROWS: u64 = 1024;

/// Where a chunk's rows go: to the pipeline as they are read (inside the first run's
/// snapshot), or into memory, up to a size, to be emitted later (a copy while streaming).
pub enum Target<'a> {
    Emit,
    Collect {
        rows: &'a mut Vec<ChangeEvent>,
        max_bytes: usize,
    },
}

/// A chunk read: its rows, the table's progress after it, whether it was the table's last.
pub struct Chunk {
    pub rows: u64,
    pub next: TableProgress,
    pub last: bool,
}

/// Reads the chunk of `copy` after `progress` (in key order; a keyless table whole) in the
/// connection's open snapshot, positioned at `position`.
pub async fn read_chunk(
    conn: &mut Conn,
    ctx: &SourceContext,
    copy: &TableCopy,
    progress: &TableProgress,
    position: &BinlogPosition,
    limit: u32,
    mut target: Target<'_>,
) -> Result<Chunk, Halt<MysqlError>> {
    let (database, table) = (copy.database.as_str(), copy.table.as_str());
    let label = copy.label();
    let (catalog, catalog_key) = columns_of(conn, database, table).await?;
    let key_columns: Vec<&str> = catalog_key
        .iter()
        .map(|&i| catalog[i].name.as_str())
        .collect();
    let select = chunk_query(database, table, &key_columns, progress, limit);
    let mut result = conn
        .exec_iter(select.as_str(), ())
        .await
        .map_err(sql("reading a table"))?;
    let columns: Vec<ColumnShape> = result
        .columns_ref()
        .iter()
        .map(|c| {
            let flags = c.flags();
            // The binary protocol sends ENUM and SET as their labels, like strings.
            let kind = if flags.intersects(ColumnFlags::ENUM_FLAG | ColumnFlags::SET_FLAG) {
                ColumnType::MYSQL_TYPE_STRING
            } else {
                c.column_type()
            };
            let name = c.name_str();
            ColumnShape {
                json: catalog.iter().any(|cc| cc.json && *cc.name == *name),
                name: name.as_ref().into(),
                kind,
                unsigned: flags.contains(ColumnFlags::UNSIGNED_FLAG),
                binary: c.character_set() == 63,
                labels: Vec::new(),
                decimals: 0,
                // The server converts text to the connection's utf8mb4 and pads BINARY(n).
                text: TextEncoding::Utf8,
                fixed_width: None,
            }
        })
        .collect();
    let key_index: Vec<usize> = key_columns
        .iter()
        .filter_map(|k| columns.iter().position(|c| &*c.name == *k))
        .collect();
    let table_schema = Arc::new(snapshot_schema(
        result.columns_ref(),
        &columns,
        &catalog,
        &key_index,
    ));
    let key_literals: Vec<KeyLiteral> = key_index
        .iter()
        .map(|&i| KeyLiteral::of_column(&result.columns_ref()[i], &catalog))
        .collect();
    // Every row of the chunk has the same source, its parts shared.
    let source = SourceInfo {
        snapshot: true,
        ..source_info(
            ctx,
            (database.into(), table.into(), Some(table_schema)),
            position,
            Origin::default(),
            None,
        )
    };
    let mut copied = 0u64;
    let mut batch = CopyBatch::new(ctx.emit.budget_bytes());
    let mut bytes = 0usize;
    let mut cut = false;
    // The last row's key values, written as literals once the chunk ends.
    let mut last_key_values: Vec<MyValue> = Vec::with_capacity(key_index.len());
    while let Some(row) = result.next().await.map_err(sql("reading a row"))? {
        let values = row.unwrap();
        last_key_values.clear();
        last_key_values.extend(key_index.iter().map(|&i| values[i].clone()));
        let after = snapshot_row(&columns, values).map_err(|reason| MysqlError::Decode {
            table: label.clone(),
            position: position.file_pos(),
            reason,
        })?;
        let key = key_of(&after, &key_index);
        let event = ChangeEvent {
            op: Op::Snapshot,
            source: source.clone(),
            key,
            before: None,
            after: Some(after),
            unchanged: Vec::new(),
            key_change: None,
            ts_ms: batch.ts_ms(),
        };
        copied += 1;
        match &mut target {
            Target::Emit => {
                if batch.add(event) {
                    ctx.emit.copied(batch.take()).await?;
                }
                if copied.is_multiple_of(PROGRESS_EVERY_ROWS) {
                    ctx.probe.snapshot_rows(&label, PROGRESS_EVERY_ROWS);
                }
            }
            Target::Collect { rows, max_bytes } => {
                bytes += event.approx_size();
                rows.push(event);
                if !key_index.is_empty() && bytes >= *max_bytes {
                    cut = true;
                    break;
                }
            }
        }
    }
    drop(result);
    ctx.emit.copied(batch.take()).await?;
    if matches!(target, Target::Emit) {
        ctx.probe
            .snapshot_rows(&label, copied % PROGRESS_EVERY_ROWS);
    }
    let last = key_index.is_empty() || (!cut && copied < u64::from(limit));
    let next = match last_key_values.is_empty() {
        true => progress.clone(),
        false => progress.after_chunk(
            last_key_values
                .iter()
                .zip(&key_literals)
                .map(|(value, literal)| literal.of(value))
                .collect(),
        ),
    };
    Ok(Chunk {
        rows: copied,
        next,
        last,
    })
}

/// How a key value is written back into the next chunk's query so that it compares exactly
/// as the column does.
enum KeyLiteral {
    /// As the server sent it (integers, strings, dates).
    Plain,
    /// DECIMAL: a string literal would compare as a double.
    Decimal,
    /// FLOAT: compared as the double the stored single-precision value is.
    Float,
    /// ENUM: ordered by index, which the label's position gives.
    Enum(Vec<String>),
    /// SET: ordered by its number, the sum of its members' bits (the label's position).
    Set(Vec<String>),
}

impl KeyLiteral {
    fn of_column(column: &Column, catalog: &[CatalogColumn]) -> Self {
        let labels = || {
            let name = column.name_str();
            catalog
                .iter()
                .find(|c| *c.name == *name)
                .map(|c| c.labels.clone())
                .unwrap_or_default()
        };
        if column.flags().contains(ColumnFlags::ENUM_FLAG) {
            return KeyLiteral::Enum(labels());
        }
        if column.flags().contains(ColumnFlags::SET_FLAG) {
            return KeyLiteral::Set(labels());
        }
        match column.column_type() {
            ColumnType::MYSQL_TYPE_NEWDECIMAL | ColumnType::MYSQL_TYPE_DECIMAL => {
                KeyLiteral::Decimal
            }
            ColumnType::MYSQL_TYPE_FLOAT => KeyLiteral::Float,
            _ => KeyLiteral::Plain,
        }
    }

    fn of(&self, value: &MyValue) -> String {
        use MyValue as V;
        match (self, value) {
            (KeyLiteral::Decimal, V::Bytes(_)) => {
                format!("CAST({} AS DECIMAL(65,30))", value.as_sql(false))
            }
            (KeyLiteral::Float, V::Float(f)) => f64::from(*f).to_string(),
            (KeyLiteral::Enum(labels), V::Bytes(label)) => labels
                .iter()
                .position(|l| l.as_bytes() == label.as_slice())
                .map_or_else(|| value.as_sql(false), |i| (i + 1).to_string()),
            (KeyLiteral::Set(labels), V::Bytes(members)) => {
                let bits = members
                    .split(|&b| b == b',')
                    .filter(|member| !member.is_empty())
                    .map(|member| labels.iter().position(|l| l.as_bytes() == member));
                let mut number = 0u64;
                for bit in bits {
                    match bit {
                        Some(bit) => number |= 1 << bit,
                        None => return value.as_sql(false),
                    }
                }
                number.to_string()
            }
            _ => value.as_sql(false),
        }
    }
}

/// The query of the chunk after `progress.after` (key literals) in key order, within the
/// range's bounds on the first key column; a keyless table's whole.
fn chunk_query(
    database: &str,
    table: &str,
    key: &[&str],
    progress: &TableProgress,
    limit: u32,
) -> String {
    let from = format!("SELECT * FROM {}.{}", quote(database), quote(table));
    if key.is_empty() {
        return from;
    }
    let order: Vec<String> = key.iter().map(|k| quote(k)).collect();
    let mut conditions = Vec::new();
    if let Some(lower) = &progress.lower {
        conditions.push(format!("{} >= {lower}", order[0]));
    }
    if let Some(upper) = &progress.upper {
        conditions.push(format!("{} < {upper}", order[0]));
    }
    // (k1, k2) > (a, b) as k1 > a OR (k1 = a AND k2 > b), which the key's index serves.
    if let Some(values) = &progress.after {
        let alternatives: Vec<String> = (0..order.len().min(values.len()))
            .map(|i| {
                let mut terms: Vec<String> = (0..i)
                    .map(|j| format!("{} = {}", order[j], values[j]))
                    .collect();
                terms.push(format!("{} > {}", order[i], values[i]));
                format!("({})", terms.join(" AND "))
            })
            .collect();
        conditions.push(format!("({})", alternatives.join(" OR ")));
    }
    let filter = match conditions.is_empty() {
        true => String::new(),
        false => format!(" WHERE {}", conditions.join(" AND ")),
    };
    format!("{from}{filter} ORDER BY {} LIMIT {limit}", order.join(", "))
}

/// The envelope schema of a snapshot's result set: the same types the stream's TABLE_MAP
/// gives, from the column definitions (ENUM / SET by their flags, with their labels from the
/// catalog; fractional digits, DECIMAL precision and BIT lengths from the definitions).
fn snapshot_schema(
    definitions: &[Column],
    decoded_as: &[ColumnShape],
    catalog: &[CatalogColumn],
    key: &[usize],
) -> TableSchema {
    let columns = definitions
        .iter()
        .zip(decoded_as)
        .enumerate()
        .map(|(i, (definition, shape))| {
            let flags = definition.flags();
            let mut shape = shape.clone();
            let labels = || {
                catalog
                    .iter()
                    .find(|c| *c.name == *shape.name)
                    .map(|c| c.labels.clone())
                    .unwrap_or_default()
            };
            if flags.contains(ColumnFlags::ENUM_FLAG) {
                shape.labels = labels();
                shape.kind = ColumnType::MYSQL_TYPE_ENUM;
            } else if flags.contains(ColumnFlags::SET_FLAG) {
                shape.labels = labels();
                shape.kind = ColumnType::MYSQL_TYPE_SET;
            }
            let length = definition.column_length();
            let digits = u32::from(definition.decimals());
            let declared = Declared {
                nullable: !flags.contains(ColumnFlags::NOT_NULL_FLAG),
                // A DECIMAL's display length counts a sign (when signed) and a point (when
                // it has a fraction) beside its digits.
                precision_scale: matches!(shape.kind, ColumnType::MYSQL_TYPE_NEWDECIMAL).then(
                    || {
                        let sign = u32::from(!shape.unsigned);
                        let point = u32::from(digits > 0);
                        (length.saturating_sub(sign + point), digits)
                    },
                ),
                bits: matches!(shape.kind, ColumnType::MYSQL_TYPE_BIT).then_some(length),
            };
            if matches!(
                shape.kind,
                ColumnType::MYSQL_TYPE_TIME
                    | ColumnType::MYSQL_TYPE_DATETIME
                    | ColumnType::MYSQL_TYPE_TIMESTAMP
            ) {
                shape.decimals = definition.decimals();
            }
            column_schema(&shape, declared, key.contains(&i))
        })
        .collect();
    TableSchema { columns }
}

fn snapshot_row(columns: &[ColumnShape], values: Vec<MyValue>) -> Result<Row, String> {
    columns
        .iter()
        .zip(values)
        .map(|(column, raw)| {
            let value =
                value::of_value(column, raw).map_err(|e| format!("column {}: {e}", column.name))?;
            Ok((column.name.clone(), value))
        })
        .collect()
}
