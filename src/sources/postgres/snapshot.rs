//! The initial snapshot: every table copied inside the snapshot exported by the slot's
//! creation, so that streaming from the slot's consistent point continues exactly where the
//! copy ends (nothing lost or doubled at the seam).
//!
//! Each table is read in chunks ([`chunk`]: by key, or by pages without a key), and its rows
//! become `snapshot` events positioned at the consistent point. A chunk's rows are streamed,
//! not collected: each row is decoded from the connection only once the previous one was
//! handed to the emitter, which waits while the pipeline's byte budget (`buffer.max_bytes`) is
//! spent. While it waits, the connection stops reading and TCP holds the server back, so the
//! rows read and not yet acknowledged stay within the budget whatever their width.
//!
//! After each chunk a mark stores the table's progress ([`TableProgress`], its own checkpoint
//! partition) once the chunk's rows are acknowledged. The stream's position (the consistent
//! point) is stored before the copy begins, so a run interrupted during the copy streams on
//! from there and copies the unfinished tables while streaming, from their first unfinished
//! chunk ([`super::backfill`]). Progress (rows per table against the server's estimate) goes to
//! the pipeline's probe, which logs it every few seconds and serves it on `/status` and
//! `/metrics`.

use futures_util::StreamExt;
use tokio_postgres::{Client, SimpleQueryMessage};

use super::catalog;
use super::chunk::{self, ChunkReader};
use super::config::{PostgresConfig, TableName};
use super::error::PostgresError;
use super::lsn::Lsn;
use super::relation::ChangeContext;
use super::stream::Failure;
use super::types::TypeRegistry;
use crate::envelope::PostgresPosition;
use crate::source::progress::TableProgress;
use crate::source::{Mark, SourceContext};

/// A table to copy and how far an earlier run got.
#[derive(Debug, Clone)]
pub struct TableCopy {
    pub name: TableName,
    pub oid: u32,
    pub progress: TableProgress,
}

impl TableCopy {
    /// The mark that stores `progress` for this table.
    pub fn mark(&self, progress: &TableProgress) -> Mark {
        Mark {
            partition: TableProgress::partition(&self.name.to_string()),
            position: progress.position(),
        }
    }
}

/// Copies `tables` as of the exported snapshot `snapshot_name`; emits one event per row.
#[allow(clippy::too_many_arguments)] // each is a distinct input of the copy; a struct would only rename them
pub async fn copy_tables(
    client: &Client,
    config: &PostgresConfig,
    types: &mut TypeRegistry,
    tables: &[TableCopy],
    snapshot_name: &str,
    consistent_point: Lsn,
    database: &std::sync::Arc<str>,
    ctx: &SourceContext,
) -> Result<(), Failure> {
    let sql_err = |what: &'static str| move |e| PostgresError::sql(what, e);
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(sql_err("starting the snapshot transaction"))?;
    client
        .batch_execute(&format!(
            "SET TRANSACTION SNAPSHOT {}",
            super::config::quote_literal(snapshot_name)
        ))
        .await
        .map_err(sql_err("importing the exported snapshot"))?;
    let context = ChangeContext {
        pipeline: ctx.pipeline.clone(),
        database: database.clone(),
        position: PostgresPosition {
            lsn: consistent_point.0,
            txid: None,
        },
        commit_ts_ms: None,
    };
    let estimates = estimates(client, tables).await?;
    ctx.probe.snapshot_started(&estimates);
    for table in tables {
        let label = table.name.to_string();
        let estimate = estimates
            .iter()
            .find(|(l, _)| *l == label)
            .and_then(|(_, e)| *e);
        tracing::info!(pipeline = %ctx.pipeline, table = %label, estimated_rows = ?estimate, "snapshot of table started");
        let copied = copy_table(client, config, types, table, &context, ctx).await?;
        ctx.probe.snapshot_table_done(&label);
        tracing::info!(pipeline = %ctx.pipeline, table = %label, rows = copied, "snapshot of table done");
    }
    client
        .batch_execute("COMMIT")
        .await
        .map_err(sql_err("ending the snapshot transaction"))?;
    Ok(())
}

/// Each table's row estimate, `None` when the server has none.
pub async fn estimates(
    client: &Client,
    tables: &[TableCopy],
) -> Result<Vec<(String, Option<u64>)>, PostgresError> {
    let mut estimates = Vec::with_capacity(tables.len());
    for table in tables {
        // reltuples is 0 (or -1) for a table never vacuumed or analyzed: unknown, not empty.
        let estimate = catalog::estimated_rows(client, table.oid).await?;
        estimates.push((
            table.name.to_string(),
            u64::try_from(estimate).ok().filter(|n| *n > 0),
        ));
    }
    Ok(estimates)
}

/// Copies one table from its stored progress on, a mark after every chunk; returns the rows.
async fn copy_table(
    client: &Client,
    config: &PostgresConfig,
    types: &mut TypeRegistry,
    table: &TableCopy,
    context: &ChangeContext,
    ctx: &SourceContext,
) -> Result<u64, Failure> {
    let sql_err = |what: &'static str| move |e| PostgresError::sql(what, e);
    let relation = catalog::relation(client, types, table.oid).await?;
    let reader = ChunkReader::new(
        &relation,
        &table.name.quoted(),
        config.snapshot_chunk_rows.get(),
    );
    let pages = if reader.keyed() {
        0
    } else {
        chunk::table_pages(client, table.oid).await?
    };
    let label = table.name.to_string();
    let mut progress = table.progress.clone();
    let mut copied = 0u64;
    while let Some(query) = reader.query(&relation, progress.after.as_deref(), pages) {
        let messages = client
            .simple_query_raw(&query)
            .await
            .map_err(sql_err("reading a snapshot chunk"))?;
        let mut messages = std::pin::pin!(messages);
        let after = progress.after.as_deref();
        let mut rows_in_chunk = 0u64;
        let mut end = None;
        while let Some(message) = messages.next().await {
            let message = message.map_err(sql_err("reading a snapshot chunk"))?;
            if let SimpleQueryMessage::Row(row) = message {
                let values: Vec<Option<&str>> = (0..row.len()).map(|i| row.get(i)).collect();
                if reader.keyed() {
                    end = Some(reader.end_of_chunk(after, &values));
                }
                ctx.emit
                    .event(relation.snapshot_event(context, &values))
                    .await?;
                rows_in_chunk += 1;
            }
        }
        copied += rows_in_chunk;
        ctx.probe.snapshot_rows(&label, rows_in_chunk);
        let last = reader.was_last(after, rows_in_chunk, pages);
        if !reader.keyed() {
            end = Some(reader.end_of_chunk(after, &[]));
        }
        if let Some(end) = end {
            progress = progress.after_chunk(end);
        }
        if last {
            break;
        }
        ctx.emit.checkpoint(table.mark(&progress)).await?;
    }
    ctx.emit
        .checkpoint(table.mark(&progress.finished()))
        .await?;
    Ok(copied)
}
