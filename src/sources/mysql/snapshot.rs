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
//! An interrupted snapshot starts over: its end is the first checkpoint stored.

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
use super::{connect, key_of, source_info, sql, value, Origin};
use crate::envelope::{now_ms, ChangeEvent, Op, Row, SourceInfo, TableSchema};
use crate::source::{SourceContext, Stopped};

/// Copies the captured tables; returns the binlog position to stream from.
/// Rows copied between two reports of progress to the probe.
const PROGRESS_EVERY_ROWS: u64 = 1024;

pub async fn copy(
    config: &MysqlConfig,
    filter: &TableFilter,
    ctx: &SourceContext,
) -> Result<Result<BinlogPosition, Stopped>, MysqlError> {
    let mut conn = connect(config).await?;
    conn.query_drop("SET SESSION time_zone = '+00:00'")
        .await
        .map_err(sql("setting the session time zone"))?;
    let version: String = conn
        .query_first("SELECT VERSION()")
        .await
        .map_err(sql("SELECT VERSION()"))?
        .unwrap_or_default();
    let position = if version.contains("MariaDB") {
        conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .await
            .map_err(sql("setting the isolation level"))?;
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
        BinlogPosition::new(
            get("binlog_snapshot_file").unwrap_or_default(),
            get("binlog_snapshot_position")
                .and_then(|p| p.parse().ok())
                .unwrap_or(4),
        )
    } else {
        mysql_position_under_lock(&mut conn).await?
    };
    tracing::info!(position = %position.token(), "snapshot started");
    ctx.probe.snapshotting();
    let tables = captured_tables(&mut conn, filter).await?;
    let mut estimates = Vec::with_capacity(tables.len());
    for (database, table) in &tables {
        let rows: Option<u64> = conn
            .exec_first(
                "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (database, table),
            )
            .await
            .map_err(sql("estimating a table's rows"))?
            .flatten();
        estimates.push((format!("{database}.{table}"), rows.filter(|n| *n > 0)));
    }
    ctx.probe.snapshot_started(&estimates);
    for ((database, table), (label, _)) in tables.iter().zip(&estimates) {
        let copied = copy_table(&mut conn, ctx, database, table, &position, label).await?;
        if let Err(stopped) = copied {
            return Ok(Err(stopped));
        }
        ctx.probe.snapshot_table_done(label);
    }
    conn.query_drop("COMMIT")
        .await
        .map_err(sql("ending the snapshot"))?;
    tracing::info!(position = %position.token(), "snapshot done; streaming from its position");
    Ok(Ok(position))
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

fn quote(identifier: &str) -> String {
    format!("`{}`", identifier.replace('`', "``"))
}

async fn copy_table(
    conn: &mut Conn,
    ctx: &SourceContext,
    database: &str,
    table: &str,
    position: &BinlogPosition,
    label: &str,
) -> Result<Result<(), Stopped>, MysqlError> {
    let (catalog, catalog_key) = columns_of(conn, database, table).await?;
    let key_columns: Vec<&str> = catalog_key
        .iter()
        .map(|&i| catalog[i].name.as_str())
        .collect();
    let select = format!("SELECT * FROM {}.{}", quote(database), quote(table));
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
    let (database, table_name): (Arc<str>, Arc<str>) = (database.into(), table.into());
    let mut copied = 0u64;
    while let Some(row) = result.next().await.map_err(sql("reading a row"))? {
        let after = snapshot_row(&columns, &row).map_err(|reason| MysqlError::Decode {
            table: format!("{database}.{table_name}"),
            position: position.file_pos(),
            reason,
        })?;
        let key = key_of(&after, &key_index);
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
        if let Err(stopped) = ctx.emit.event(event).await {
            return Ok(Err(stopped));
        }
        copied += 1;
        if copied.is_multiple_of(PROGRESS_EVERY_ROWS) {
            ctx.probe.snapshot_rows(label, PROGRESS_EVERY_ROWS);
        }
    }
    ctx.probe.snapshot_rows(label, copied % PROGRESS_EVERY_ROWS);
    tracing::info!(table = %format!("{database}.{table_name}"), rows = copied, "table copied");
    Ok(Ok(()))
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
