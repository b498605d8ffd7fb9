//! Copying tables while streaming: the rest of a copy an interrupted run left unfinished, or a
//! table copied again on request (`cdc-bridge snapshot`), chunk by chunk, interleaved with the
//! stream, without a lock and without another slot.
//!
//! The method is the watermark method of Netflix's DBLog, made exact with transaction ids. The
//! stream loop reads one chunk at a time, in a read-only REPEATABLE READ transaction on its SQL
//! connection, and notes that transaction's snapshot (`pg_current_snapshot()`: which
//! transactions it sees). Then it writes a watermark into the WAL, a logical decoding message
//! naming the chunk, in a transaction of its own. It writes nothing to any table. While the stream reads on
//! to that watermark, every change it emits to the chunk's table, made by a transaction the
//! chunk's snapshot did not see, removes that row from the chunk: the stream's version is newer
//! and has been delivered. At the watermark, every transaction the snapshot saw has been
//! streamed (each committed before the watermark's own transaction), so the chunk's remaining rows are
//! emitted there, as `snapshot` events at the watermark's commit LSN, followed by the table's progress
//! mark. Per key, the consumer sees the older versions, then the copy, then newer versions.
//!
//! One chunk is held in memory at a time, as the lines the server copied out
//! ([`super::copy_text`]): `snapshot_chunk_rows` rows, fewer when their text
//! passes half the pipeline's buffer (`buffer.max_bytes`). A keyless table cannot
//! tell its rows from the stream's changes: its chunks (page ranges) are emitted whole at the
//! watermark, and a row changed while its chunk was read may appear once more as a snapshot
//! row.
//!
//! Requests arrive in the WAL too: `cdc-bridge snapshot` writes a transactional message naming
//! the slot and the tables ([`SIGNAL_PREFIX`]), so a request made while the daemon is down is
//! served when it resumes, and one already served is not served again.

use std::collections::{HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

use bytes::Bytes;
use futures_util::StreamExt;

use super::catalog;
use super::chunk;
use super::config::TableName;
use super::copy_text::CopyRow;
use super::error::PostgresError;
use super::lsn::Lsn;
use super::snapshot::{self, TableCopy};
use super::stream::Streamer;
use super::table::{ChangeContext, Relation};
use crate::envelope::{now_ms, ChangeEvent, PostgresPosition, SourcePosition};
use crate::format::JsonFormat;
use crate::source::progress::{RowLimit, TableProgress};
use crate::source::{Halt, SourceContext};

/// Prefix of the watermark messages that close a chunk's window.
pub const WATERMARK_PREFIX: &str = "cdc-bridge.watermark";
/// Prefix of the messages that request a table's copy.
pub const SIGNAL_PREFIX: &str = "cdc-bridge.snapshot";

/// Transactions remembered as delivered, to notice one the next chunk's snapshot does not see.
const REMEMBERED_TRANSACTIONS: usize = 1024;

/// A request to copy tables, as `cdc-bridge snapshot` writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    /// The slot of the pipeline that should copy them (every slot on the database sees it).
    pub slot: String,
    /// `schema.table` names.
    pub tables: Vec<String>,
}

/// Which transactions a snapshot sees (the text form of `pg_current_snapshot()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XidSnapshot {
    xmin: u64,
    xmax: u64,
    running: HashSet<u64>,
}

impl XidSnapshot {
    /// Parses `xmin:xmax:xip,xip,...`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.splitn(3, ':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let running = parts
            .next()?
            .split(',')
            .filter(|x| !x.is_empty())
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        Some(XidSnapshot {
            xmin,
            xmax,
            running,
        })
    }

    /// Whether the snapshot sees the changes of committed transaction `xid` (32 bits, as
    /// pgoutput sends it; its epoch is taken to be the latest one not after `xmax`'s).
    pub fn sees(&self, xid: u32) -> bool {
        // The full id nearest to xmax: ids are never more than 2^31 apart in use.
        let epoch = self.xmax & !0xFFFF_FFFF;
        let mut full = epoch | u64::from(xid);
        if full >= self.xmax + (1 << 31) && full >= 1 << 32 {
            full -= 1 << 32;
        } else if full + (1 << 31) < self.xmax {
            full += 1 << 32;
        }
        full < self.xmin || (full < self.xmax && !self.running.contains(&full))
    }
}

/// A chunk read and not yet emitted: its rows wait for the watermark.
pub struct Window {
    pub id: String,
    pub table: TableCopy,
    /// The table and, for a partitioned one, its partitions (the stream names those).
    pub relations: Vec<(String, String)>,
    pub snapshot: XidSnapshot,
    /// `None` once the stream delivered a newer version of the row.
    pub rows: Vec<Option<ChangeEvent>>,
    by_key: HashMap<Vec<u8>, usize>,
    /// The table's progress once this chunk is emitted.
    pub next: TableProgress,
    pub last: bool,
}

impl Window {
    pub fn new(
        id: String,
        (table, relations): (TableCopy, Vec<(String, String)>),
        snapshot: XidSnapshot,
        rows: Vec<ChangeEvent>,
        next: TableProgress,
        last: bool,
    ) -> Self {
        let by_key = rows
            .iter()
            .enumerate()
            .filter(|(_, row)| !row.key.is_empty())
            .map(|(i, row)| (key_bytes(row, &row.key), i))
            .collect();
        Window {
            id,
            table,
            relations,
            snapshot,
            rows: rows.into_iter().map(Some).collect(),
            by_key,
            next,
            last,
        }
    }

    /// The rows still to emit.
    pub fn into_rows(self) -> Vec<ChangeEvent> {
        self.rows.into_iter().flatten().collect()
    }
}

/// The tables to copy while streaming, and the chunk in flight.
#[derive(Default)]
pub struct Backfill {
    pub queue: VecDeque<TableCopy>,
    pub window: Option<Window>,
    /// The highest generation of a copy stored or started.
    generation: u64,
    delivered: VecDeque<u32>,
    chunks_read: u64,
    /// Makes this run's watermark names differ from an earlier run's in the same process.
    run_id: u128,
    /// After a chunk had to be read again: no chunk before this.
    pause_until: Option<std::time::Instant>,
    row_limit: RowLimit,
}

impl Backfill {
    /// Copies `unfinished` (from their stored progress); `generation` is the highest stored.
    pub fn new(unfinished: Vec<TableCopy>, generation: u64) -> Self {
        Backfill {
            queue: unfinished.into(),
            generation,
            ..Backfill::default()
        }
    }

    /// Whether the stream loop should read the next chunk now.
    pub fn wants_chunk(&self) -> bool {
        self.window.is_none()
            && !self.queue.is_empty()
            && self
                .pause_until
                .is_none_or(|until| std::time::Instant::now() >= until)
    }

    /// A name for the next chunk's watermark, unique on the database.
    pub fn next_window_id(&mut self, slot: &str) -> String {
        if self.run_id == 0 {
            self.run_id = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos());
        }
        self.chunks_read += 1;
        format!("{slot}/{}/{}", self.run_id, self.chunks_read)
    }

    /// The progress a new copy of a table starts from.
    pub fn new_copy(&mut self) -> TableProgress {
        self.generation += 1;
        TableProgress::started(self.generation)
    }

    /// Queues `table` for a copy, replacing a copy of it already queued.
    pub fn request(&mut self, table: TableCopy) {
        if self
            .window
            .as_ref()
            .is_some_and(|w| w.table.name == table.name)
        {
            // Its chunk in flight belongs to the replaced copy.
            self.window = None;
        }
        self.queue.retain(|queued| queued.name != table.name);
        self.queue.push_back(table);
    }

    /// A transaction was delivered by the stream.
    pub fn delivered(&mut self, xid: u32) {
        if self.delivered.len() == REMEMBERED_TRANSACTIONS {
            self.delivered.pop_front();
        }
        self.delivered.push_back(xid);
    }

    /// Whether a transaction delivered before a chunk was read is one its snapshot does not
    /// see: then the chunk may hold a version older than one already delivered, and is read
    /// again. (A commit is in the WAL, and may be streamed, a moment before other sessions
    /// see it.)
    pub fn misses_delivered(&self, snapshot: &XidSnapshot) -> bool {
        self.delivered.iter().any(|&xid| !snapshot.sees(xid))
    }

    /// Takes note of a change the stream is about to deliver: a newer version of a row of the
    /// chunk in flight replaces the chunk's.
    pub fn observe(&mut self, event: &ChangeEvent) {
        let Some(window) = self.window.as_mut() else {
            return;
        };
        let xid = match &event.source.position {
            SourcePosition::Postgres(p) => p.txid,
            _ => None,
        };
        let schema = event.source.schema.as_deref().unwrap_or_default();
        if xid.is_some_and(|xid| window.snapshot.sees(xid))
            || !window
                .relations
                .iter()
                .any(|(s, t)| s == schema && **t == *event.source.table)
        {
            return;
        }
        if event.op == crate::envelope::Op::Truncate {
            window.rows.iter_mut().for_each(|row| *row = None);
            return;
        }
        let old_key = event.old_key();
        for key in [Some(&event.key), old_key.as_ref()].into_iter().flatten() {
            if key.is_empty() {
                continue;
            }
            if let Some(&i) = window.by_key.get(&key_bytes(event, key)) {
                window.rows[i] = None;
            }
        }
    }
}

/// A chunk as read: the snapshot it was read in, its rows (text form), where it ends.
struct ChunkRead {
    snapshot: XidSnapshot,
    relation: Relation,
    relations: Vec<(String, String)>,
    /// One line of COPY's text format per row.
    rows: Vec<Bytes>,
    next: TableProgress,
    last: bool,
}

impl Streamer<'_> {
    /// Reads the next chunk of the first queued table, then writes its watermark; its rows
    /// wait for the stream to reach the watermark ([`Streamer::close_window`]).
    pub(super) async fn read_chunk(
        &mut self,
        ctx: &SourceContext,
    ) -> Result<(), Halt<PostgresError>> {
        let Some(table) = self.backfill.queue.front().cloned() else {
            return Ok(());
        };
        if table.progress.chunks == 0 {
            tracing::info!(pipeline = %ctx.pipeline, table = %table.name, generation = table.progress.generation, "copying table while streaming");
        }
        self.sql
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(|e| PostgresError::sql("starting a chunk's transaction", e))?;
        // A chunk held here takes at most half the pipeline's buffer.
        let max_bytes = ctx.emit.budget_bytes() as usize / 2;
        let read = self.read_in_transaction(&table, max_bytes).await;
        let end = if read.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let ended = self.sql.batch_execute(end).await;
        let read = read?;
        ended.map_err(|e| PostgresError::sql("ending a chunk's transaction", e))?;
        if self.backfill.misses_delivered(&read.snapshot) {
            // The stream goes on meanwhile (a commit waiting for a synchronous standby stays
            // invisible for as long as that takes).
            tracing::debug!(table = %table.name, "a delivered transaction was not yet visible to the chunk's snapshot: reading the chunk again");
            self.backfill.pause_until =
                Some(std::time::Instant::now() + std::time::Duration::from_millis(20));
            return Ok(());
        }
        if read.rows.is_empty() {
            return self
                .finish_chunk(ctx, table, read.next, read.last, Vec::new())
                .await;
        }
        let id = self.backfill.next_window_id(&self.config.slot);
        // Transactional, so that its commit flushes it to the walsender at once (a
        // non-transactional message waits for the WAL writer's next flush).
        self.sql
            .batch_execute("SET synchronous_commit = on")
            .await
            .map_err(|e| PostgresError::sql("writing a chunk's watermark", e))?;
        let row = self
            .sql
            .query_one(
                "SELECT pg_logical_emit_message(true, $1::text, $2::text)::text",
                &[&WATERMARK_PREFIX, &id],
            )
            .await
            .map_err(|e| PostgresError::sql("writing a chunk's watermark", e))?;
        let watermark: Lsn = row
            .get::<_, String>(0)
            .parse()
            .map_err(|_| PostgresError::Protocol("pg_logical_emit_message gave no LSN".into()))?;
        let context = ChangeContext {
            pipeline: ctx.pipeline.clone(),
            database: self.database.clone(),
            position: PostgresPosition {
                lsn: watermark.0,
                txid: None,
            },
            commit_ts_ms: None,
        };
        let ts_ms = now_ms();
        let mut row = CopyRow::default();
        let mut events = Vec::with_capacity(read.rows.len());
        for line in &read.rows {
            row.read(line)?;
            events.push(
                read.relation
                    .snapshot_event(&context, ts_ms, |i| row.get(i)),
            );
        }
        self.backfill.window = Some(Window::new(
            id,
            (table, read.relations),
            read.snapshot,
            events,
            read.next,
            read.last,
        ));
        Ok(())
    }

    /// Reads the chunk after `table`'s progress in the open transaction, keeping at most
    /// `max_bytes` of row text (at least one row).
    async fn read_in_transaction(
        &mut self,
        table: &TableCopy,
        max_bytes: usize,
    ) -> Result<ChunkRead, PostgresError> {
        let sql_err = |what: &'static str| move |e| PostgresError::sql(what, e);
        // The transaction's first statement takes its snapshot: the one the chunk is read in.
        let text: String = self
            .sql
            .query_one("SELECT pg_current_snapshot()::text", &[])
            .await
            .map_err(sql_err("reading a chunk's snapshot"))?
            .get(0);
        let snapshot = XidSnapshot::parse(&text)
            .ok_or_else(|| PostgresError::Protocol(format!("unexpected snapshot {text:?}")))?;
        let relations = self
            .sql
            .query(
                "SELECT n.nspname::text, c.relname::text FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.oid = $1::oid OR c.oid IN (SELECT relid FROM pg_partition_tree($1::oid))",
                &[&table.oid],
            )
            .await
            .map_err(sql_err("listing a table's partitions"))?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let chunk_rows = self.config.snapshot_chunk_rows.get();
        let limit = self.backfill.row_limit.rows(chunk_rows);
        let (relation, reader) = chunk::open(
            self.sql,
            &mut self.types,
            &self.config.publication,
            (table.oid, &table.name.quoted()),
            limit,
        )
        .await?;
        let pages = if reader.keyed() {
            0
        } else {
            chunk::table_pages(self.sql, table.oid).await?
        };
        let after = table.progress.after.as_deref();
        let mut rows: Vec<Bytes> = Vec::new();
        let mut bytes = 0usize;
        let mut cut = false;
        if let Some(query) = reader.query(&relation, &table.progress, pages) {
            let lines = chunk::copy_out(self.sql, &query)
                .await
                .map_err(sql_err("reading a chunk"))?;
            let mut lines = std::pin::pin!(lines);
            while let Some(line) = lines.next().await {
                let line = line.map_err(sql_err("reading a chunk"))?;
                bytes += line.len();
                rows.push(line);
                // Wide rows: the chunk ends early rather than outgrow its share of the
                // pipeline's buffer (the next chunk starts after the last row kept).
                if reader.keyed() && bytes >= max_bytes {
                    cut = true;
                    break;
                }
            }
        }
        let last = !cut && reader.was_last(after, rows.len() as u64, pages);
        self.backfill
            .row_limit
            .after((limit, chunk_rows), rows.len() as u64, cut, last);
        let last_row = match rows.last() {
            Some(line) => {
                let mut row = CopyRow::default();
                row.read(line)?;
                Some(row)
            }
            None => None,
        };
        let next = match reader.end_of_chunk(after, last_row.as_ref().map(|row| |i| row.get(i))) {
            Some(end) => table.progress.after_chunk(end),
            None => table.progress.clone(),
        };
        Ok(ChunkRead {
            snapshot,
            relation,
            relations,
            rows,
            next,
            last,
        })
    }

    /// The stream reached a watermark: if it is the chunk in flight's, its rows go out now.
    pub(super) async fn close_window(
        &mut self,
        ctx: &SourceContext,
        watermark: &[u8],
        commit: Lsn,
    ) -> Result<(), Halt<PostgresError>> {
        if self
            .backfill
            .window
            .as_ref()
            .is_none_or(|w| w.id.as_bytes() != watermark)
        {
            return Ok(());
        }
        let window = self.backfill.window.take().expect("checked");
        let (table, next, last) = (window.table.clone(), window.next.clone(), window.last);
        let mut rows = window.into_rows();
        for row in &mut rows {
            if let SourcePosition::Postgres(position) = &mut row.source.position {
                position.lsn = commit.0;
            }
        }
        self.finish_chunk(ctx, table, next, last, rows).await
    }

    /// Emits a chunk's rows, then the table's progress.
    async fn finish_chunk(
        &mut self,
        ctx: &SourceContext,
        table: TableCopy,
        next: TableProgress,
        last: bool,
        rows: Vec<ChangeEvent>,
    ) -> Result<(), Halt<PostgresError>> {
        let label = table.name.to_string();
        let count = rows.len() as u64;
        if !rows.is_empty() {
            self.emit(ctx, ctx.emit.events(rows)).await?;
        }
        ctx.probe.snapshot_rows(&label, count);
        let progress = if last { next.finished() } else { next };
        self.emit(ctx, ctx.emit.checkpoint(table.mark(&progress)))
            .await?;
        let queued = self
            .backfill
            .queue
            .front_mut()
            .filter(|q| q.same_unit(&table));
        match queued {
            Some(_) if last => {
                self.backfill.queue.pop_front();
                if !self.backfill.queue.iter().any(|q| q.name == table.name) {
                    ctx.probe.snapshot_table_done(&label);
                    tracing::info!(pipeline = %ctx.pipeline, table = %label, "table copied while streaming");
                }
            }
            Some(queued) => queued.progress = progress,
            None => {}
        }
        Ok(())
    }

    /// A request to copy tables (`cdc-bridge snapshot`), read from the WAL.
    pub(super) async fn on_signal(
        &mut self,
        ctx: &SourceContext,
        content: &[u8],
    ) -> Result<(), Halt<PostgresError>> {
        let signal: Signal = match serde_json::from_slice(content) {
            Ok(signal) => signal,
            Err(err) => {
                tracing::warn!(pipeline = %ctx.pipeline, error = %err, "ignoring a malformed snapshot request");
                return Ok(());
            }
        };
        if signal.slot != self.config.slot {
            return Ok(());
        }
        let names: Vec<TableName> = signal
            .tables
            .iter()
            .filter_map(|t| table_named(t))
            .collect();
        let (oids, missing) = catalog::table_oids(self.sql, &names).await?;
        for table in missing {
            tracing::warn!(pipeline = %ctx.pipeline, table = %table, "a snapshot was requested of a table that does not exist: ignored");
        }
        for name in names {
            let Some(&oid) = oids.get(&name) else {
                continue;
            };
            let copy = TableCopy {
                name,
                oid,
                range: None,
                progress: self.backfill.new_copy(),
            };
            // The new copy is one unit: the ranges of one before it are no longer to be resumed.
            let queued = self.backfill.queue.iter().filter(|q| q.name == copy.name);
            let ranges = TableProgress::range_partitions(
                &ctx.stored.borrow(),
                &copy.name.to_string(),
                queued.filter_map(|q| q.range),
            );
            for partition in ranges {
                self.emit(ctx, ctx.emit.forget(partition)).await?;
            }
            self.emit(ctx, ctx.emit.checkpoint(copy.mark(&copy.progress)))
                .await?;
            tracing::info!(pipeline = %ctx.pipeline, table = %copy.name, generation = copy.progress.generation, "snapshot requested: the table is copied while streaming");
            self.backfill.request(copy);
        }
        let estimates = snapshot::estimates(self.sql, &self.backfill.queue).await?;
        ctx.probe.snapshot_started(&estimates);
        Ok(())
    }
}

/// Requests a copy of `tables` from the pipeline reading `config`'s slot (`cdc-bridge
/// snapshot`): checks that each can be copied while streaming, then writes the request into
/// the WAL, where the pipeline reads it in order with the changes.
pub async fn request(
    config: &super::PostgresConfig,
    tables: &[String],
) -> Result<(), PostgresError> {
    let refuse = |reason: String| Err(PostgresError::SnapshotRequest(reason));
    let sql = catalog::connect(config).await?;
    if catalog::slot_state(&sql, &config.slot).await?.is_none() {
        return refuse(format!(
            "the pipeline's slot {} does not exist yet: its first run copies its tables",
            config.slot
        ));
    }
    let mut names = Vec::with_capacity(tables.len());
    for table in tables {
        let Some(name) = table_named(table) else {
            return refuse(format!(
                "{table:?} is not a table name of the form schema.table"
            ));
        };
        names.push(name);
    }
    let (oids, missing) = catalog::table_oids(&sql, &names).await?;
    if let Some(table) = missing.first() {
        return refuse(format!("table {table} does not exist"));
    }
    let coverage = super::publication::coverage(&sql, &config.publication, &names).await?;
    match coverage {
        None => {
            return refuse(format!(
                "publication {} does not exist: its tables' changes would not be streamed",
                config.publication
            ))
        }
        Some(coverage) => {
            if let Err(err) = coverage.require(&config.publication) {
                return refuse(err.to_string());
            }
        }
    }
    let mut types = super::value::TypeRegistry::default();
    for name in &names {
        if chunk::relation_to_copy(&sql, &mut types, &config.publication, oids[name])
            .await?
            .0
            .key
            .is_empty()
        {
            return refuse(format!(
                "table {name} has no primary key (nor a replica identity index): a copy made while streaming could not tell its rows from the stream's changes"
            ));
        }
    }
    let signal = Signal {
        slot: config.slot.clone(),
        tables: names.iter().map(ToString::to_string).collect(),
    };
    let content = serde_json::to_string(&signal).expect("a request serializes");
    sql.execute(
        "SELECT pg_logical_emit_message(true, $1::text, $2::text)",
        &[&SIGNAL_PREFIX, &content],
    )
    .await
    .map_err(|e| PostgresError::sql("writing the snapshot request", e))?;
    Ok(())
}

/// A row's identity: its key as JSON, as sinks key their messages.
fn key_bytes(event: &ChangeEvent, key: &crate::envelope::Row) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(32);
    if std::ptr::eq(key, &event.key) {
        JsonFormat::write_key(event, &mut bytes);
    } else {
        let keyed = ChangeEvent {
            key: key.clone(),
            before: None,
            after: None,
            unchanged: Vec::new(),
            key_change: None,
            ..event.clone()
        };
        JsonFormat::write_key(&keyed, &mut bytes);
    }
    bytes
}

/// A table name as a request gives it (`schema.table`).
pub fn table_named(name: &str) -> Option<TableName> {
    let (schema, table) = name.split_once('.')?;
    (!schema.is_empty() && !table.is_empty()).then(|| TableName {
        schema: schema.to_owned(),
        table: table.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_sees_transactions_before_it_and_not_those_running_or_after() {
        let snapshot = XidSnapshot::parse("100:110:102,105").unwrap();
        assert!(snapshot.sees(99));
        assert!(snapshot.sees(101));
        assert!(!snapshot.sees(102));
        assert!(snapshot.sees(104));
        assert!(!snapshot.sees(105));
        assert!(!snapshot.sees(110));
        assert!(!snapshot.sees(4000));
        let empty = XidSnapshot::parse("7:7:").unwrap();
        assert!(empty.sees(6));
        assert!(!empty.sees(7));
        assert!(XidSnapshot::parse("7:x:").is_none());
    }

    #[test]
    fn transaction_ids_are_read_in_the_snapshots_epoch() {
        // xmax in epoch 1, just past the wrap: a 32-bit id near the top is from epoch 0.
        let base = 1u64 << 32;
        let snapshot = XidSnapshot::parse(&format!("{}:{}:", base + 5, base + 10)).unwrap();
        assert!(snapshot.sees(u32::MAX - 3), "epoch 0, before xmin");
        assert!(snapshot.sees(6));
        assert!(!snapshot.sees(10));
        // xmax near the top of epoch 0: a small 32-bit id is a newer one, from epoch 1.
        let top = (1u64 << 32) - 10;
        let snapshot = XidSnapshot::parse(&format!("{}:{}:", top - 5, top)).unwrap();
        assert!(snapshot.sees(u32::MAX - 20));
        assert!(!snapshot.sees(3), "epoch 1, after xmax");
    }
}
