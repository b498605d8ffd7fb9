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

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use futures_util::StreamExt;
use tokio_postgres::Client;

use super::catalog;
use super::chunk;
use super::config::{PostgresConfig, TableName};
use super::copy_text::CopyRow;
use super::error::PostgresError;
use super::lsn::Lsn;
use super::table::ChangeContext;
use super::value::TypeRegistry;
use crate::envelope::PostgresPosition;
use crate::source::progress::{CopyBatch, TableProgress};
use crate::source::{Halt, Mark, SourceContext};

/// A table, or one range of it, to copy, and how far an earlier run got.
#[derive(Debug, Clone)]
pub struct TableCopy {
    pub name: TableName,
    pub oid: u32,
    /// The range's number when the table is copied in ranges.
    pub range: Option<u32>,
    pub progress: TableProgress,
}

impl TableCopy {
    /// The mark that stores `progress` for this table or range.
    pub fn mark(&self, progress: &TableProgress) -> Mark {
        Mark {
            partition: TableProgress::partition(&self.name.to_string(), self.range),
            position: progress.position(),
        }
    }

    /// Whether this is the same table, and range, as `other`.
    pub fn same_unit(&self, other: &TableCopy) -> bool {
        self.name == other.name && self.range == other.range
    }
}

/// The first run's copies (generation `generation`): each table whole, or, with several
/// workers (`snapshot_parallelism`), a table of more than two chunks in ranges of its first
/// key column, one per worker, cut where the server's statistics put equal shares.
pub async fn plan(
    client: &Client,
    config: &PostgresConfig,
    tables: &[(TableName, u32)],
    generation: u64,
) -> Result<Vec<TableCopy>, PostgresError> {
    let workers = config.snapshot_parallelism.get();
    let mut types = TypeRegistry::default();
    let mut copies = Vec::new();
    for (name, oid) in tables {
        let whole = TableCopy {
            name: name.clone(),
            oid: *oid,
            range: None,
            progress: TableProgress::started(generation),
        };
        let large = catalog::estimated_rows(client, *oid).await?
            > 2 * i64::from(config.snapshot_chunk_rows.get());
        if workers < 2 || !large {
            copies.push(whole);
            continue;
        }
        let relation = catalog::relation(client, &mut types, *oid).await?;
        let points = chunk::split_points(client, &relation, workers).await?;
        if points.is_empty() {
            copies.push(whole);
            continue;
        }
        let lowers = std::iter::once(None).chain(points.iter().cloned().map(Some));
        let uppers = points
            .iter()
            .cloned()
            .map(Some)
            .chain(std::iter::once(None));
        for (range, (lower, upper)) in lowers.zip(uppers).enumerate() {
            copies.push(TableCopy {
                range: Some(range as u32),
                progress: TableProgress::started(generation).within(lower, upper),
                ..whole.clone()
            });
        }
    }
    Ok(copies)
}

/// Copies `tables` as of the exported snapshot `snapshot_name`, with up to
/// `snapshot_parallelism` workers, each on its own connection inside that snapshot; emits one
/// event per row.
#[allow(clippy::too_many_arguments)] // each is a distinct input of the copy; a struct would only rename them
pub async fn copy_tables(
    client: &Client,
    config: &PostgresConfig,
    tables: &[TableCopy],
    snapshot_name: &str,
    consistent_point: Lsn,
    database: &std::sync::Arc<str>,
    ctx: &SourceContext,
) -> Result<(), Halt<PostgresError>> {
    let workers = (config.snapshot_parallelism.get() as usize).clamp(1, tables.len().max(1));
    let mut extra = Vec::with_capacity(workers - 1);
    for _ in 1..workers {
        extra.push(catalog::connect(config).await?);
    }
    let clients: Vec<&Client> = std::iter::once(client).chain(extra.iter()).collect();
    for client in &clients {
        import_snapshot(client, snapshot_name).await?;
    }
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
    let mut tally = HashMap::new();
    for table in tables {
        tally
            .entry(table.name.to_string())
            .or_insert((0usize, 0u64))
            .0 += 1;
    }
    let run = CopyRun {
        config,
        ctx,
        context,
        estimates,
        queue: Mutex::new(tables.iter().collect()),
        tally: Mutex::new(tally),
    };
    futures_util::future::try_join_all(clients.iter().map(|client| run.work(client))).await?;
    for client in clients {
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| PostgresError::sql("ending the snapshot transaction", e))?;
    }
    Ok(())
}

/// The shared state of one copy's workers.
struct CopyRun<'a> {
    config: &'a PostgresConfig,
    ctx: &'a SourceContext,
    context: ChangeContext,
    estimates: Vec<(String, Option<u64>)>,
    /// The tables and ranges no worker has taken yet.
    queue: Mutex<VecDeque<&'a TableCopy>>,
    /// Per table: ranges not finished, rows copied.
    tally: Mutex<HashMap<String, (usize, u64)>>,
}

impl CopyRun<'_> {
    /// One worker: takes the next table or range until none is left.
    async fn work(&self, client: &Client) -> Result<(), Halt<PostgresError>> {
        let ctx = self.ctx;
        let mut types = TypeRegistry::default();
        loop {
            let Some(table) = self.queue.lock().expect("not poisoned").pop_front() else {
                return Ok(());
            };
            let label = table.name.to_string();
            if table.range.is_none_or(|r| r == 0) {
                let estimate = self
                    .estimates
                    .iter()
                    .find(|(l, _)| *l == label)
                    .and_then(|(_, e)| *e);
                tracing::info!(pipeline = %ctx.pipeline, table = %label, estimated_rows = ?estimate, "snapshot of table started");
            }
            let copied =
                copy_table(client, self.config, &mut types, table, &self.context, ctx).await?;
            let finished = {
                let mut tally = self.tally.lock().expect("not poisoned");
                let entry = tally.get_mut(&label).expect("tallied");
                entry.0 -= 1;
                entry.1 += copied;
                (entry.0 == 0).then_some(entry.1)
            };
            if let Some(rows) = finished {
                ctx.probe.snapshot_table_done(&label);
                tracing::info!(pipeline = %ctx.pipeline, table = %label, rows, "snapshot of table done");
            }
        }
    }
}

/// Opens a read-only transaction on `client` that sees exactly the exported snapshot.
async fn import_snapshot(client: &Client, snapshot_name: &str) -> Result<(), PostgresError> {
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
            super::config::quote_literal(snapshot_name)
        ))
        .await
        .map_err(|e| PostgresError::sql("importing the exported snapshot", e))
}

/// Each table's row estimate, `None` when the server has none; once per table, whatever the
/// ranges it is copied in (a table's ranges are listed one after another).
pub async fn estimates<'a>(
    client: &Client,
    tables: impl IntoIterator<Item = &'a TableCopy>,
) -> Result<Vec<(String, Option<u64>)>, PostgresError> {
    let mut estimates: Vec<(String, Option<u64>)> = Vec::new();
    for table in tables {
        let label = table.name.to_string();
        if estimates.last().is_some_and(|(last, _)| *last == label) {
            continue;
        }
        // reltuples is 0 (or -1) for a table never vacuumed or analyzed: unknown, not empty.
        let estimate = catalog::estimated_rows(client, table.oid).await?;
        estimates.push((label, u64::try_from(estimate).ok().filter(|n| *n > 0)));
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
) -> Result<u64, Halt<PostgresError>> {
    let sql_err = |what: &'static str| move |e| PostgresError::sql(what, e);
    let (relation, reader) = chunk::open(
        client,
        types,
        &config.publication,
        (table.oid, &table.name.quoted()),
        config.snapshot_chunk_rows.get(),
    )
    .await?;
    let pages = if reader.keyed() {
        0
    } else {
        chunk::table_pages(client, table.oid).await?
    };
    let label = table.name.to_string();
    let mut progress = table.progress.clone();
    let mut copied = 0u64;
    while let Some(query) = reader.query(&relation, &progress, pages) {
        let lines = chunk::copy_out(client, &query)
            .await
            .map_err(sql_err("reading a snapshot chunk"))?;
        let mut lines = std::pin::pin!(lines);
        let after = progress.after.as_deref();
        let mut rows_in_chunk = 0u64;
        let mut batch = CopyBatch::new(ctx.emit.budget_bytes());
        let mut row = CopyRow::default();
        while let Some(line) = lines.next().await {
            row.read(&line.map_err(sql_err("reading a snapshot chunk"))?)?;
            let event = relation.snapshot_event(context, batch.ts_ms(), |i| row.get(i));
            if batch.add(event) {
                ctx.emit.copied(batch.take()).await?;
            }
            rows_in_chunk += 1;
        }
        ctx.emit.copied(batch.take()).await?;
        let end = reader.end_of_chunk(after, (rows_in_chunk > 0).then_some(|i| row.get(i)));
        copied += rows_in_chunk;
        ctx.probe.snapshot_rows(&label, rows_in_chunk);
        let last = reader.was_last(after, rows_in_chunk, pages);
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
