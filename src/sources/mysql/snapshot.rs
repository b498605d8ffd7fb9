//! The initial snapshot: every captured table's rows as of one binlog position, then
//! streaming continues from exactly that position.
//!
//! MariaDB: a transaction WITH CONSISTENT SNAPSHOT reports its binlog position
//! (`binlog_snapshot_file` / `binlog_snapshot_position`) without any lock. MySQL: the shortest
//! global read lock that yields the position (FLUSH TABLES WITH READ LOCK, start the snapshot
//! transaction, read the position, UNLOCK). Rows are streamed from the server one at a time
//! (nothing is held in memory) and become `snapshot` events at the snapshot's position. The
//! session time zone is UTC, so TIMESTAMP values read here match those in the binlog.
//!
//! Tables are read in chunks of `snapshot_chunk_rows` in primary-key order (keyset
//! pagination), and each table's progress is stored after every chunk ([`TableProgress`], its
//! own checkpoint partition). On MariaDB, when every table has a key, the snapshot's position is
//! stored before the copy begins: an interrupted copy then resumes while streaming, each
//! remaining chunk read in a consistent snapshot of its own and emitted where the stream
//! reaches that snapshot's position ([`super::backfill`]). On MySQL (whose consistent snapshots
//! do not report their position without a global lock), or with a keyless table, an
//! interrupted snapshot starts over: its end is the first checkpoint stored.

use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::{Column, Conn, Row as MyRow};
use mysql_common::constants::{ColumnFlags, ColumnType};

use super::catalog::columns_of;
use super::column_types::{column_schema, Declared};
use super::config::{MysqlConfig, TableFilter};
use super::error::MysqlError;
use super::position::BinlogPosition;
use super::shape::CatalogColumn;
use super::shape::{ColumnShape, TextEncoding};
use super::{connect, key_of, source_info, sql, value, Origin, PARTITION};
use crate::envelope::{now_ms, ChangeEvent, Op, Row, SourceInfo, TableSchema};
use crate::source::progress::TableProgress;
use crate::source::{Mark, SourceContext, Stopped};

/// Rows copied between two reports of progress to the probe.
const PROGRESS_EVERY_ROWS: u64 = 1024;

/// A captured table to copy, and how far an earlier run got.
#[derive(Debug, Clone)]
pub struct TableCopy {
    pub database: String,
    pub table: String,
    pub progress: TableProgress,
}

impl TableCopy {
    /// `database.table`.
    pub fn label(&self) -> String {
        format!("{}.{}", self.database, self.table)
    }

    /// The mark that stores `progress` for this table.
    pub fn mark(&self, progress: &TableProgress) -> Mark {
        Mark {
            partition: TableProgress::partition(&self.label(), None),
            position: progress.position(),
        }
    }
}

/// How a snapshot ended: the position to stream from, and whether it is stored already.
pub struct Copied {
    pub position: BinlogPosition,
    pub stored: bool,
    /// The copy's generation: a copy requested later takes a higher one.
    pub generation: u64,
}

/// Copies the captured tables; returns the binlog position to stream from.
/// `resumable`: the copy may store its position before it ends (it streams on after).
pub async fn copy(
    config: &MysqlConfig,
    filter: &TableFilter,
    ctx: &SourceContext,
    resumable: bool,
) -> Result<Result<Copied, Stopped>, MysqlError> {
    let mut conn = session(config).await?;
    let flavor = super::Flavor::detect(&mut conn).await?;
    let position = if flavor == super::Flavor::Mariadb {
        start_consistent_snapshot(&mut conn).await?
    } else {
        mysql_position_under_lock(&mut conn).await?
    };
    tracing::info!(position = %position.token(), "snapshot started");
    ctx.probe.snapshotting();
    let tables = captured_tables(&mut conn, filter).await?;
    let progress = TableProgress::stored(&ctx.resume).map_err(MysqlError::BadCheckpoint)?;
    let generation = TableProgress::next_generation(&progress);
    let copies: Vec<TableCopy> = tables
        .iter()
        .map(|(database, table)| TableCopy {
            database: database.clone(),
            table: table.clone(),
            progress: TableProgress::started(generation),
        })
        .collect();
    let mut keyed = true;
    let mut estimates = Vec::with_capacity(tables.len());
    for copy in &copies {
        let rows: Option<u64> = conn
            .exec_first(
                "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (&copy.database, &copy.table),
            )
            .await
            .map_err(sql("estimating a table's rows"))?
            .flatten();
        estimates.push((copy.label(), rows.filter(|n| *n > 0)));
        keyed &= !columns_of(&mut conn, &copy.database, &copy.table)
            .await?
            .1
            .is_empty();
    }
    let marks = async {
        for (table, range) in progress.keys() {
            if !copies.iter().any(|c| c.label() == *table) || range.is_some() {
                ctx.emit
                    .forget(TableProgress::partition(table, *range))
                    .await?;
            }
        }
        for copy in &copies {
            ctx.emit.checkpoint(copy.mark(&copy.progress)).await?;
        }
        Ok::<_, Stopped>(())
    };
    if let Err(stopped) = marks.await {
        return Ok(Err(stopped));
    }
    // MariaDB with keys everywhere: from here on an interrupted copy resumes while streaming.
    let position = super::with_gtids(&mut conn, flavor, position).await?;
    let stored = resumable && flavor == super::Flavor::Mariadb && keyed;
    if stored {
        let mark = Mark {
            partition: PARTITION.into(),
            position: position.checkpoint(position.rank_by(config.resume_by, None)),
        };
        if let Err(stopped) = ctx.emit.checkpoint(mark).await {
            return Ok(Err(stopped));
        }
    }
    ctx.probe.snapshot_started(&estimates);
    let limit = config.snapshot_chunk_rows.get();
    for copy in &copies {
        let label = copy.label();
        let mut progress = copy.progress.clone();
        loop {
            let chunk = read_chunk(
                &mut conn,
                ctx,
                copy,
                &progress,
                &position,
                limit,
                Target::Emit,
            )
            .await?;
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(stopped) => return Ok(Err(stopped)),
            };
            progress = chunk.next;
            let mark = copy.mark(&if chunk.last {
                progress.finished()
            } else {
                progress.clone()
            });
            if let Err(stopped) = ctx.emit.checkpoint(mark).await {
                return Ok(Err(stopped));
            }
            if chunk.last {
                break;
            }
        }
        ctx.probe.snapshot_table_done(&label);
        tracing::info!(table = %label, chunks = progress.chunks, "table copied");
    }
    conn.query_drop("COMMIT")
        .await
        .map_err(sql("ending the snapshot"))?;
    tracing::info!(position = %position.token(), "snapshot done; streaming from its position");
    Ok(Ok(Copied {
        position,
        stored,
        generation,
    }))
}

/// A connection for reading snapshots: UTC, REPEATABLE READ.
pub async fn session(config: &MysqlConfig) -> Result<Conn, MysqlError> {
    let mut conn = connect(config).await?;
    conn.query_drop("SET SESSION time_zone = '+00:00'")
        .await
        .map_err(sql("setting the session time zone"))?;
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .map_err(sql("setting the isolation level"))?;
    Ok(conn)
}

/// MariaDB: a transaction WITH CONSISTENT SNAPSHOT and the binlog position it sees, without a
/// lock.
pub async fn start_consistent_snapshot(conn: &mut Conn) -> Result<BinlogPosition, MysqlError> {
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await
        .map_err(sql("starting the snapshot"))?;
    let status: Vec<(String, String)> = conn
        .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
        .await
        .map_err(sql("reading the snapshot's binlog position"))?;
    let get = |name: &str| {
        status
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    Ok(BinlogPosition::new(
        get("binlog_snapshot_file").unwrap_or_default(),
        get("binlog_snapshot_position")
            .and_then(|p| p.parse().ok())
            .unwrap_or(4),
    ))
}

/// MySQL: the position under the shortest global read lock.
async fn mysql_position_under_lock(conn: &mut Conn) -> Result<BinlogPosition, MysqlError> {
    conn.query_drop("FLUSH TABLES WITH READ LOCK")
        .await
        .map_err(sql("FLUSH TABLES WITH READ LOCK (needs RELOAD)"))?;
    let result = async {
        conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ; START TRANSACTION WITH CONSISTENT SNAPSHOT")
            .await
            .map_err(sql("starting the snapshot"))?;
        super::current_position(conn).await
    }
    .await;
    conn.query_drop("UNLOCK TABLES")
        .await
        .map_err(sql("UNLOCK TABLES"))?;
    result
}

async fn captured_tables(
    conn: &mut Conn,
    filter: &TableFilter,
) -> Result<Vec<(String, String)>, MysqlError> {
    let tables: Vec<(String, String)> = conn
        .query(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_SCHEMA, TABLE_NAME",
        )
        .await
        .map_err(sql("listing tables"))?;
    Ok(tables
        .into_iter()
        .filter(|(db, t)| filter.matches(db, t))
        .collect())
}

pub(super) fn quote(identifier: &str) -> String {
    format!("`{}`", identifier.replace('`', "``"))
}

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
) -> Result<Result<Chunk, Stopped>, MysqlError> {
    let (database, table) = (copy.database.as_str(), copy.table.as_str());
    let label = copy.label();
    let (catalog, catalog_key) = columns_of(conn, database, table).await?;
    let key_columns: Vec<&str> = catalog_key
        .iter()
        .map(|&i| catalog[i].name.as_str())
        .collect();
    let select = chunk_query(
        database,
        table,
        &key_columns,
        progress.after.as_deref(),
        limit,
    );
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
    let (database, table_name): (Arc<str>, Arc<str>) = (database.into(), table.into());
    let mut copied = 0u64;
    let mut bytes = 0usize;
    let mut cut = false;
    let mut last_key = None;
    while let Some(row) = result.next().await.map_err(sql("reading a row"))? {
        let after = snapshot_row(&columns, &row).map_err(|reason| MysqlError::Decode {
            table: label.clone(),
            position: position.file_pos(),
            reason,
        })?;
        let key = key_of(&after, &key_index);
        if !key_index.is_empty() {
            last_key = Some(
                key_index
                    .iter()
                    .zip(&key_literals)
                    .map(|(&i, literal)| {
                        row.as_ref(i)
                            .map_or_else(|| "NULL".into(), |v| literal.of(v))
                    })
                    .collect::<Vec<String>>(),
            );
        }
        let event = ChangeEvent {
            op: Op::Snapshot,
            source: SourceInfo {
                snapshot: true,
                ..source_info(
                    ctx,
                    (
                        database.clone(),
                        table_name.clone(),
                        Some(table_schema.clone()),
                    ),
                    position,
                    Origin::default(),
                    None,
                )
            },
            key,
            before: None,
            after: Some(after),
            unchanged: Vec::new(),
            key_change: None,
            ts_ms: now_ms(),
        };
        copied += 1;
        match &mut target {
            Target::Emit => {
                if let Err(stopped) = ctx.emit.event(event).await {
                    return Ok(Err(stopped));
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
    if matches!(target, Target::Emit) {
        ctx.probe
            .snapshot_rows(&label, copied % PROGRESS_EVERY_ROWS);
    }
    let last = key_index.is_empty() || (!cut && copied < u64::from(limit));
    let next = match last_key {
        Some(key) => progress.after_chunk(key),
        None => progress.clone(),
    };
    Ok(Ok(Chunk {
        rows: copied,
        next,
        last,
    }))
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
}

impl KeyLiteral {
    fn of_column(column: &Column, catalog: &[CatalogColumn]) -> Self {
        if column.flags().contains(ColumnFlags::ENUM_FLAG) {
            let name = column.name_str();
            let labels = catalog
                .iter()
                .find(|c| *c.name == *name)
                .map(|c| c.labels.clone())
                .unwrap_or_default();
            return KeyLiteral::Enum(labels);
        }
        match column.column_type() {
            ColumnType::MYSQL_TYPE_NEWDECIMAL | ColumnType::MYSQL_TYPE_DECIMAL => {
                KeyLiteral::Decimal
            }
            ColumnType::MYSQL_TYPE_FLOAT => KeyLiteral::Float,
            _ => KeyLiteral::Plain,
        }
    }

    fn of(&self, value: &mysql_async::Value) -> String {
        use mysql_async::Value as V;
        match (self, value) {
            (KeyLiteral::Decimal, V::Bytes(_)) => {
                format!("CAST({} AS DECIMAL(65,30))", value.as_sql(false))
            }
            (KeyLiteral::Float, V::Float(f)) => f64::from(*f).to_string(),
            (KeyLiteral::Enum(labels), V::Bytes(label)) => labels
                .iter()
                .position(|l| l.as_bytes() == label.as_slice())
                .map_or_else(|| value.as_sql(false), |i| (i + 1).to_string()),
            _ => value.as_sql(false),
        }
    }
}

/// The query of the chunk after `after` (key literals) in key order; a keyless table's whole.
fn chunk_query(
    database: &str,
    table: &str,
    key: &[&str],
    after: Option<&[String]>,
    limit: u32,
) -> String {
    let from = format!("SELECT * FROM {}.{}", quote(database), quote(table));
    if key.is_empty() {
        return from;
    }
    let order: Vec<String> = key.iter().map(|k| quote(k)).collect();
    // (k1, k2) > (a, b) as k1 > a OR (k1 = a AND k2 > b), which the key's index serves.
    let filter = after.map_or(String::new(), |values| {
        let alternatives: Vec<String> = (0..order.len().min(values.len()))
            .map(|i| {
                let mut terms: Vec<String> = (0..i)
                    .map(|j| format!("{} = {}", order[j], values[j]))
                    .collect();
                terms.push(format!("{} > {}", order[i], values[i]));
                format!("({})", terms.join(" AND "))
            })
            .collect();
        format!(" WHERE {}", alternatives.join(" OR "))
    });
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

fn snapshot_row(columns: &[ColumnShape], row: &MyRow) -> Result<Row, String> {
    columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let raw = row
                .as_ref(i)
                .cloned()
                .map(mysql_common::binlog::value::BinlogValue::Value);
            let value = value::value(column, raw.as_ref())
                .map_err(|e| format!("column {}: {e}", column.name))?;
            Ok((column.name.clone(), value))
        })
        .collect()
}
