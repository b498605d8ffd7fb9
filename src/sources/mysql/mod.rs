//! The `mysql` source: row changes from the MySQL or MariaDB binlog (row-based replication).
//!
//! Flow: connect (TLS by the URL's `ssl-mode`, [`tls`]) -> check the server's binlog settings
//! (ROW format, FULL row image, no compression) and detect the flavor ([`server`]) -> find the
//! start: the stored checkpoint, else `start_position`, else a snapshot's position
//! ([`snapshot`], read in chunks by [`chunk`]; an unfinished one resumes in [`backfill`]) or
//! the current one, with the GTID state there ([`gtid`], [`position`]) -> stream ([`stream`]):
//! TABLE_MAP events give each table's shape ([`table`], or [`catalog`] when the binlog has no
//! column names), row events (v1 and v2) become insert / update / delete events ([`decode`];
//! [`value`] maps the values), a checkpoint mark (`file:pos` and GTID state) at each
//! transaction's end, never inside one.
//!
//! Backpressure: the source reads the server only as fast as the pipeline takes events, and
//! every connection raises its `net_write_timeout` so that the server waits for a stalled
//! sink instead of dropping the connection.
//!
//! Errors ([`MysqlError`]): lost connections are transient (restart from the checkpoint);
//! wrong server settings, a purged binlog, compressed events, a rejected certificate and
//! missing privileges are fatal with the fix; a row that cannot be decoded (or no longer fits
//! the catalog) is a data error naming the table and position.

mod backfill;
mod catalog;
mod chunk;
mod column_types;
mod config;
mod decode;
mod error;
#[doc(hidden)]
pub mod fuzz;
mod gtid;
mod position;
mod raw_events;
mod retention;
mod server;
mod snapshot;
mod stream;
mod table;
mod tls;
mod transaction;
mod value;

#[cfg(test)]
mod mysql8_format_tests;
#[cfg(test)]
mod test_events;

use std::sync::Arc;

use async_trait::async_trait;
use mysql_async::prelude::Queryable;

pub use config::{MysqlConfig, ResumeBy, SnapshotMode, TableFilter};
pub use error::MysqlError;
pub use position::BinlogPosition;
pub use server::Flavor;

use crate::check::Finding;
use crate::envelope::{MysqlPosition, Row, SourceInfo, SourceKind, SourcePosition, TableSchema};
use crate::error::BoxError;
use crate::source::progress::TableProgress;
use crate::source::{Halt, Mark, Source, SourceContext, Start};
use backfill::Backfill;
use server::{
    check_settings, connect, current_position, partial_metadata_note, require_logged, sql,
    with_gtids,
};
use snapshot::TableCopy;

/// The source's single partition (one binlog).
const PARTITION: &str = "";

pub struct MysqlSource {
    config: MysqlConfig,
    filter: TableFilter,
}

impl MysqlSource {
    pub fn new(config: MysqlConfig, filter: TableFilter) -> Self {
        MysqlSource { config, filter }
    }
}

#[async_trait]
impl Source for MysqlSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), BoxError> {
        Ok(self.replicate(ctx).await.or_else(Halt::into_result)?)
    }
}

impl MysqlSource {
    /// Finds the start (stored checkpoint, `start_position`, a snapshot or the current
    /// position), then streams from it.
    async fn replicate(&self, ctx: SourceContext) -> Result<(), Halt<MysqlError>> {
        let mut conn = connect(&self.config).await?;
        if let Some(metadata) = check_settings(&mut conn).await? {
            tracing::warn!("{}", partial_metadata_note(&metadata));
        }
        if let Some(warning) = require_logged(&mut conn, &self.config.databases()).await? {
            tracing::warn!(pipeline = %ctx.pipeline, "{warning}");
        }
        let flavor = Flavor::detect(&mut conn).await?;
        let stored = ctx.resume.get(PARTITION);
        let plan = self.config.snapshot.start(stored.is_some());
        // Set when this run made the first copy: the stored progress read at the start is
        // then out of date.
        let mut copied_as = None;
        let mut ahead = None;
        let start = match (plan, stored) {
            (Start::Done, _) => {
                tracing::info!(pipeline = %ctx.pipeline, "snapshot already complete (snapshot = \"initial_only\")");
                return Ok(());
            }
            (_, Some(stored)) => BinlogPosition::parse(&stored.token)
                .ok_or_else(|| MysqlError::BadCheckpoint(stored.token.clone()))?,
            (plan, None) => {
                let configured = self.config.start().map_err(MysqlError::BadCheckpoint)?;
                let (position, stored) = match (configured, plan) {
                    (Some(position), _) => (position, false),
                    (None, Start::Snapshot { then_stream }) => {
                        // Only a copy that streams on can resume while streaming.
                        let copied =
                            snapshot::copy(&self.config, &self.filter, &ctx, then_stream).await?;
                        copied_as = Some(copied.generation);
                        ahead = Some(copied.ahead);
                        (copied.position, copied.stored)
                    }
                    (None, _) => (current_position(&mut conn).await?, false),
                };
                let position = with_gtids(&mut conn, flavor, position).await?;
                // The snapshot's end (or the start position): a restart streams from here.
                if !position.file.is_empty() && !stored {
                    let mark = Mark {
                        partition: PARTITION.into(),
                        position: position
                            .checkpoint(position.rank_by(self.config.resume_by, None)),
                    };
                    ctx.emit.checkpoint(mark).await?;
                }
                if plan == (Start::Snapshot { then_stream: false }) {
                    return Ok(());
                }
                position
            }
        };
        let start = with_gtids(&mut conn, flavor, start).await?;
        let _measuring = retention::measure(&self.config, ctx.stored.clone(), ctx.probe.clone());
        if !start.streams_by_gtid(self.config.resume_by) && u32::try_from(start.pos).is_err() {
            return Err(MysqlError::OffsetAbove4Gib {
                position: start.token(),
            }
            .into());
        }
        let backfill = match (copied_as, ahead) {
            (Some(generation), Some(ahead)) => {
                Backfill::new(Vec::new(), generation, flavor == Flavor::Mariadb, ahead)
            }
            _ => unfinished_copies(flavor, &ctx)?,
        };
        stream::run(
            conn,
            flavor,
            &self.config,
            &self.filter,
            ctx,
            start,
            backfill,
        )
        .await
    }
}

/// The binlog event a change was read from: the server that wrote it and when (`None` for
/// snapshot rows, which no event carries).
#[derive(Debug, Clone, Copy, Default)]
struct Origin {
    server_id: u32,
    ts_ms: Option<i64>,
}

impl Origin {
    fn of(header: &mysql_common::binlog::events::BinlogEventHeader) -> Self {
        Origin {
            server_id: header.server_id(),
            ts_ms: Some(i64::from(header.timestamp()) * 1000),
        }
    }
}

/// The envelope's `source` for a change of `database.table` (with its schema where known) at
/// `position` (row 0 of its event), written by `origin`, in the transaction with GTID `gtid`
/// (none for snapshot rows).
fn source_info(
    ctx: &SourceContext,
    (database, table, table_schema): (Arc<str>, Arc<str>, Option<Arc<TableSchema>>),
    position: &BinlogPosition,
    origin: Origin,
    gtid: Option<Arc<str>>,
) -> SourceInfo {
    SourceInfo {
        connector: SourceKind::Mysql,
        pipeline: ctx.pipeline.clone(),
        database,
        schema: None,
        table,
        table_schema,
        position: SourcePosition::Mysql(MysqlPosition {
            file: position.file.as_str().into(),
            pos: position.pos,
            row: 0,
            server_id: origin.server_id,
            gtid,
        }),
        commit_ts_ms: origin.ts_ms,
        snapshot: false,
        ttl_expired: false,
    }
}

/// The primary-key columns of `row`, by their indexes.
fn key_of(row: &Row, key: &[usize]) -> Row {
    key.iter()
        .filter_map(|&i| row.iter().nth(i).map(|(n, v)| (n.clone(), v.clone())))
        .collect()
}

/// `cdc-bridge check` for this source: connection, binlog settings, privileges.
pub async fn check(config: &MysqlConfig) -> Vec<Finding> {
    let mut conn = match connect(config).await {
        Ok(conn) => conn,
        Err(err) => return vec![Finding::fail(crate::error::report(&err))],
    };
    let mut findings = Vec::new();
    let version: Option<String> = conn.query_first("SELECT VERSION()").await.ok().flatten();
    findings.push(Finding::ok(format!(
        "connected to {}",
        version.unwrap_or_default()
    )));
    findings.push(match check_settings(&mut conn).await {
        Ok(None) => Finding::ok("binlog: ROW format, FULL row image and metadata, not compressed"),
        Ok(Some(metadata)) => Finding::warn(format!(
            "binlog: ROW format, FULL row image, not compressed; {}",
            partial_metadata_note(&metadata)
        )),
        Err(err) => Finding::fail(err.to_string()),
    });
    findings.push(match require_logged(&mut conn, &config.databases()).await {
        Ok(None) => Finding::ok("binlog: not filtered by the server"),
        Ok(Some(warning)) => Finding::warn(warning),
        Err(err) => Finding::fail(err.to_string()),
    });
    let grants: Vec<String> = conn.query("SHOW GRANTS").await.unwrap_or_default();
    let all = grants.join(" ").to_ascii_uppercase();
    for (privilege, alternatives) in [
        (
            "REPLICATION SLAVE",
            &["REPLICATION SLAVE", "ALL PRIVILEGES ON *.*"][..],
        ),
        (
            "REPLICATION CLIENT or BINLOG MONITOR",
            &[
                "REPLICATION CLIENT",
                "BINLOG MONITOR",
                "ALL PRIVILEGES ON *.*",
            ][..],
        ),
        ("SELECT", &["SELECT", "ALL PRIVILEGES"][..]),
    ] {
        findings.push(if alternatives.iter().any(|a| all.contains(a)) {
            Finding::ok(format!("privilege {privilege} granted"))
        } else {
            Finding::fail(format!("privilege {privilege} missing: GRANT it to the user (see migrations/mysql/001_prepare_database.sql)"))
        });
    }
    findings
}

/// The tables (and ranges) an earlier run began to copy and did not finish, to copy while
/// streaming from their stored progress (MariaDB; a MySQL copy never stores its position before
/// its end), and the tables its copy read later than the stream's start.
fn unfinished_copies(flavor: Flavor, ctx: &SourceContext) -> Result<Backfill, MysqlError> {
    let progress = TableProgress::stored(&ctx.resume).map_err(MysqlError::BadCheckpoint)?;
    let generation = TableProgress::next_generation(&progress) - 1;
    let copies: Vec<TableCopy> = progress
        .into_iter()
        .filter_map(|((label, range), progress)| {
            let (database, table) = label.split_once('.')?;
            Some(TableCopy {
                database: database.to_owned(),
                table: table.to_owned(),
                range,
                progress,
            })
        })
        .collect();
    let ahead = snapshot::CopiedAhead::of(&copies)?;
    let unfinished: Vec<TableCopy> = copies.into_iter().filter(|c| !c.progress.done).collect();
    let mariadb = flavor == Flavor::Mariadb;
    if unfinished.is_empty() {
        return Ok(Backfill::new(Vec::new(), generation, mariadb, ahead));
    }
    if flavor != Flavor::Mariadb {
        return Err(MysqlError::BadCheckpoint(format!(
            "{} unfinished table copies are stored, which only MariaDB resumes",
            unfinished.len()
        )));
    }
    tracing::info!(pipeline = %ctx.pipeline, tables = unfinished.len(), "an earlier run's copy is unfinished: copying the rest while streaming");
    let mut estimates: Vec<(String, Option<u64>)> =
        unfinished.iter().map(|t| (t.label(), None)).collect();
    estimates.dedup();
    ctx.probe.snapshot_started(&estimates);
    Ok(Backfill::new(unfinished, generation, mariadb, ahead))
}

/// Requests a copy of `tables` from pipeline `pipeline` (`cdc-bridge snapshot`): checks that
/// each can be copied while streaming, then inserts the request into the signal table, where
/// the pipeline reads it in order with the changes.
pub async fn request_snapshot(
    config: &MysqlConfig,
    filter: &TableFilter,
    pipeline: &str,
    tables: &[String],
) -> Result<(), MysqlError> {
    let refuse = |reason: String| Err(MysqlError::SnapshotRequest(reason));
    let Some((database, signal)) = config.signal_table_name() else {
        return refuse("set signal_table in the pipeline's source (a table the request is written into; see the README) and restart the pipeline".into());
    };
    let mut conn = connect(config).await?;
    if Flavor::detect(&mut conn).await? != Flavor::Mariadb {
        return refuse("copies while streaming need MariaDB (MySQL's consistent snapshots report no binlog position)".into());
    }
    for table in tables {
        let Some((db, name)) = table.split_once('.') else {
            return refuse(format!(
                "{table:?} is not a table name of the form database.table"
            ));
        };
        if !filter.matches(db, name) {
            return refuse(format!("table {table} is not among the pipeline's tables"));
        }
        let (columns, key) = catalog::columns_of(&mut conn, db, name).await?;
        if columns.is_empty() {
            return refuse(format!("table {table} does not exist"));
        }
        if key.is_empty() {
            return refuse(format!(
                "table {table} has no primary key: a copy made while streaming needs one"
            ));
        }
    }
    conn.exec_drop(
        format!(
            "INSERT INTO {}.{} (pipeline, tables) VALUES (?, ?)",
            snapshot::quote(database),
            snapshot::quote(signal)
        ),
        (pipeline, tables.join(",")),
    )
    .await
    .map_err(sql("writing the snapshot request into the signal table"))?;
    Ok(())
}
