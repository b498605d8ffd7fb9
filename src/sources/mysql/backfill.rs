//! Copying tables while streaming (MariaDB): the rest of a first copy that an interrupted run
//! left unfinished, chunk by chunk, interleaved with the binlog stream, without a lock and
//! without writing anything.
//!
//! Each chunk is read on a connection of its own in a transaction WITH CONSISTENT SNAPSHOT,
//! which MariaDB reports with its exact binlog position (`binlog_snapshot_file/position`, no
//! lock): the chunk's rows are the table as of that position. They are held until the stream
//! has committed exactly the transactions before it (its GTID state is the state at
//! that position, [`GtidState::reached`]), then emitted there, as `snapshot` events at that position,
//! followed by the table's progress mark. Changes before the position were delivered before
//! the copy, changes after it follow the copy: per key, versions stay in order, and nothing
//! needs to be removed from the chunk.
//!
//! Requests to copy a table again (`cdc-bridge snapshot`) are rows inserted into the signal
//! table (`signal_table`), read in order with the changes: one made while the daemon is down is
//! served when it resumes, one already served is not served again.
//!
//! One chunk is held at a time: `snapshot_chunk_rows` rows, fewer when they pass half the
//! pipeline's buffer.

use std::collections::VecDeque;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::catalog::columns_of;
use super::chunk::{self, Chunk, Target};
use super::config::MysqlConfig;
use super::error::MysqlError;
use super::gtid::{GtidState, Reached};
use super::position::BinlogPosition;
use super::snapshot::{self, CopiedAhead, TableCopy};
use super::sql;
use crate::envelope::ChangeEvent;
use crate::source::progress::{RowLimit, TableProgress};
use crate::source::{Halt, SourceContext, Stopped};

/// A chunk read and not yet emitted: its rows wait until the stream reaches `at`.
struct Window {
    table: TableCopy,
    at: GtidState,
    rows: Vec<ChangeEvent>,
    chunk: Chunk,
}

/// The tables to copy while streaming, and the chunk in flight.
#[derive(Default)]
pub struct Backfill {
    queue: VecDeque<TableCopy>,
    window: Option<Window>,
    /// The connection chunks are read on, opened at the first.
    conn: Option<Conn>,
    row_limit: RowLimit,
    /// The highest generation of a copy stored or started.
    generation: u64,
    /// Copies while streaming need MariaDB's consistent snapshot positions.
    mariadb: bool,
    /// Tables the first copy read later than the stream's start, for the stream to take.
    ahead: Option<CopiedAhead>,
}

impl Backfill {
    /// Copies `unfinished` (from their stored progress); `generation` is the highest stored;
    /// `ahead`: the first copy's tables read later than the stream's start.
    pub fn new(
        unfinished: Vec<TableCopy>,
        generation: u64,
        mariadb: bool,
        ahead: CopiedAhead,
    ) -> Self {
        Backfill {
            queue: unfinished.into(),
            generation,
            mariadb,
            ahead: Some(ahead),
            ..Backfill::default()
        }
    }

    /// The first copy's tables read later than the stream's start (once).
    pub fn take_copied_ahead(&mut self) -> CopiedAhead {
        self.ahead.take().unwrap_or_default()
    }

    /// The connection chunks are read on.
    async fn connection(&mut self, config: &MysqlConfig) -> Result<&mut Conn, MysqlError> {
        if self.conn.is_none() {
            self.conn = Some(snapshot::session(config).await?);
        }
        Ok(self.conn.as_mut().expect("just opened"))
    }

    /// A request to copy `table` (`database.table`), read from the signal table: queued as a
    /// new copy (replacing one of it in progress) once its start is marked.
    pub async fn request(
        &mut self,
        config: &MysqlConfig,
        ctx: &SourceContext,
        table: &str,
    ) -> Result<(), Halt<MysqlError>> {
        let refuse = |reason: &str| {
            tracing::warn!(pipeline = %ctx.pipeline, table, "{reason}: the snapshot request is ignored");
            Ok(())
        };
        if !self.mariadb {
            return refuse("copies while streaming need MariaDB");
        }
        let Some((database, name)) = table.split_once('.') else {
            return refuse("not a database.table name");
        };
        let (columns, key) = columns_of(self.connection(config).await?, database, name).await?;
        if columns.is_empty() {
            return refuse("no such table");
        }
        if key.is_empty() {
            return refuse("the table has no primary key");
        }
        self.generation += 1;
        let mut copy = TableCopy {
            database: database.to_owned(),
            table: name.to_owned(),
            range: None,
            progress: TableProgress::started(self.generation),
        };
        // A first copy read at a later position than the stream's start keeps the stream
        // skipping the table's changes up to there after a restart, though replaced.
        let stored = TableProgress::stored(&ctx.stored.borrow()).unwrap_or_default();
        copy.progress.read_at = stored
            .get(&(table.to_owned(), None))
            .and_then(|replaced| replaced.read_at.clone());
        // The new copy is one unit: the ranges of one before it are no longer to be resumed.
        let queued = self.queue.iter().filter(|q| q.label() == table);
        let ranges = TableProgress::range_partitions(
            &ctx.stored.borrow(),
            table,
            queued.filter_map(|q| q.range),
        );
        for partition in ranges {
            ctx.emit.forget(partition).await?;
        }
        ctx.emit.checkpoint(copy.mark(&copy.progress)).await?;
        tracing::info!(pipeline = %ctx.pipeline, table, generation = self.generation, "snapshot requested: the table is copied while streaming");
        if self
            .window
            .as_ref()
            .is_some_and(|w| w.table.label() == table)
        {
            // Its chunk in flight belongs to the replaced copy.
            self.window = None;
        }
        self.queue.retain(|queued| queued.label() != table);
        self.queue.push_back(copy);
        let estimates: Vec<(String, Option<u64>)> =
            self.queue.iter().map(|t| (t.label(), None)).collect();
        ctx.probe.snapshot_started(&estimates);
        Ok(())
    }

    /// Whether the stream should read the next chunk now.
    pub fn wants_chunk(&self) -> bool {
        self.window.is_none() && !self.queue.is_empty()
    }

    /// Reads the next chunk of the first queued table in a consistent snapshot of its own.
    pub async fn read_chunk(
        &mut self,
        config: &MysqlConfig,
        ctx: &SourceContext,
    ) -> Result<(), Halt<MysqlError>> {
        let Some(table) = self.queue.front().cloned() else {
            return Ok(());
        };
        if table.progress.chunks == 0 {
            tracing::info!(pipeline = %ctx.pipeline, table = %table.label(), generation = table.progress.generation, "copying table while streaming");
        }
        let chunk_rows = config.snapshot_chunk_rows.get();
        let limit = self.row_limit.rows(chunk_rows);
        let conn = self.connection(config).await?;
        let position = snapshot::start_consistent_snapshot(conn).await?;
        let state: Option<Option<String>> = conn
            .exec_first(
                "SELECT BINLOG_GTID_POS(?, ?)",
                (position.file.as_str(), position.pos),
            )
            .await
            .map_err(sql("reading the GTID state of a chunk's snapshot"))?;
        let at = GtidState::parse(&state.flatten().unwrap_or_default()).map_err(|reason| {
            MysqlError::BadCheckpoint(format!("{}: {reason}", position.token()))
        })?;
        let mut rows = Vec::new();
        let read = chunk::read_chunk(
            conn,
            ctx,
            &table,
            &table.progress,
            &BinlogPosition {
                gtids: None,
                ..position
            },
            limit,
            Target::Collect {
                rows: &mut rows,
                max_bytes: ctx.emit.budget_bytes() as usize / 2,
            },
        )
        .await;
        let ended = conn.query_drop("COMMIT").await;
        let chunk = read?;
        ended.map_err(sql("ending a chunk's snapshot"))?;
        let cut = !chunk.last && chunk.rows < u64::from(limit);
        self.row_limit
            .after((limit, chunk_rows), chunk.rows, cut, chunk.last);
        self.window = Some(Window {
            table,
            at,
            rows,
            chunk,
        });
        Ok(())
    }

    /// Whether the chunk in flight can go out: the stream, at a transaction's end with state
    /// `streamed`, has delivered exactly the transactions its snapshot saw. A stream already
    /// past them (MariaDB writes a transaction to the binlog a moment before a new snapshot
    /// sees it) drops the chunk, to be read again.
    pub fn due(&mut self, streamed: Option<&GtidState>) -> bool {
        let Some(window) = &self.window else {
            return false;
        };
        match streamed.map_or(Reached::Behind, |s| s.reached(&window.at)) {
            Reached::Behind => false,
            Reached::At => true,
            Reached::Past => {
                tracing::debug!(table = %window.table.label(), "the stream passed the chunk's snapshot: reading the chunk again");
                self.window = None;
                false
            }
        }
    }

    /// Emits the chunk in flight, then its table's progress.
    pub async fn emit(&mut self, ctx: &SourceContext) -> Result<(), Stopped> {
        let Some(window) = self.window.take() else {
            return Ok(());
        };
        let label = window.table.label();
        let count = window.rows.len() as u64;
        if !window.rows.is_empty() {
            ctx.emit.events(window.rows).await?;
        }
        ctx.probe.snapshot_rows(&label, count);
        let progress = if window.chunk.last {
            window.chunk.next.finished()
        } else {
            window.chunk.next.clone()
        };
        ctx.emit.checkpoint(window.table.mark(&progress)).await?;
        if window.chunk.last {
            self.queue.pop_front();
            // A split table is copied once its last range is.
            if !self.queue.iter().any(|queued| queued.label() == label) {
                ctx.probe.snapshot_table_done(&label);
                tracing::info!(pipeline = %ctx.pipeline, table = %label, "table copied while streaming");
            }
        } else if let Some(queued) = self.queue.front_mut() {
            queued.progress = progress;
        }
        Ok(())
    }
}
