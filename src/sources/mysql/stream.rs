//! Streaming the binlog: register as a replica at a position, turn row events into change
//! events, and mark a checkpoint at each transaction's end.
//!
//! Flow per event: compressed types are refused -> the CRC32 is verified -> ROTATE moves to the
//! next file; a GTID event (MariaDB's own type, or MySQL's) names the transaction that follows;
//! TABLE_MAP gives the table's shape ([`super::shape`]) and, when its rows are first read, a
//! row decoder ([`super::rows`], kept by the catalog until the table's next TABLE_MAP); row
//! events become insert / update / delete events; the event that ends the group ([`super::transaction`] decides which: XID,
//! COMMIT, a statement of its own, XA PREPARE / COMMIT / ROLLBACK) adds its GTID to the state
//! and emits a checkpoint mark with `file:pos` and the GTID state, unless a prepared XA
//! transaction is held (its rows wait for XA COMMIT; the mark waits until it is resolved).
//! An event that cannot be read is a data error naming its position.
//!
//! The stream starts by GTID state when the position has one and `resume_by = "gtid"`
//! (MariaDB: `@slave_connect_state`; MySQL: a GTID dump request), else by file and offset.
//!
//! Backpressure: the emitter waits while the pipeline's buffer is full, and the stream is not
//! read meanwhile; the server waits too, as the connection's `net_write_timeout` is raised
//! (see `connect`).

use std::sync::Arc;

use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};
use mysql_common::binlog::events::{Event, EventData, RowsEventData, TableMapEvent};

use super::backfill::Backfill;
use super::catalog::Catalog;
use super::config::{MysqlConfig, TableFilter};
use super::decode::{Images, TableRows};
use super::error::MysqlError;
use super::gtid::{Gtid, GtidState};
use super::position::{unwrap_offset, BinlogPosition, RankBy};
use super::snapshot::CopiedAhead;
use super::table::TableShape;
use super::transaction::{QueryOutcome, Transactions};
use super::{key_of, raw_events, source_info, sql, value, Flavor, Origin, PARTITION};
use crate::envelope::{now_ms, ChangeEvent, Op, Row, SourcePosition};
use crate::source::{Halt, Held, HoldError, Mark, SourceContext, Stopped};

/// Compressed event types: MariaDB log_bin_compress (166-171), MySQL transaction payloads (40).
const MARIADB_COMPRESSED: std::ops::RangeInclusive<u8> = 166..=171;
const MYSQL_TRANSACTION_PAYLOAD: u8 = 40;

/// Where the stream is: the file and the end of the last event in it, the GTID state of
/// committed transactions, the GTID of the transaction in progress, and its kind (with the
/// prepared XA transactions held).
struct Cursor {
    file: String,
    pos: u64,
    gtids: Option<GtidState>,
    pending: Option<Gtid>,
    rank_by: RankBy,
    transactions: Transactions,
    /// Tables whose copy this pipeline was asked for (rows of the signal table), to queue.
    requested: Vec<String>,
    /// Tables the first copy read later than the start: their changes up to there are skipped.
    ahead: CopiedAhead,
}

impl Cursor {
    /// Where an event whose header says it ends at `log_pos` is: 32 bits wrap in a file over
    /// 4 GiB, so the offset is taken from the previous event's. Events made up by the server
    /// (`log_pos` 0) are at 0 and do not move the cursor.
    fn locate(&mut self, log_pos: u32) -> BinlogPosition {
        if log_pos == 0 {
            return self.at(0);
        }
        self.pos = unwrap_offset(self.pos, log_pos);
        self.at(self.pos)
    }

    /// Where an event ending at `pos` is: the file and offset events and errors name (the
    /// GTID state is not copied for every event, only for checkpoints).
    fn at(&self, pos: u64) -> BinlogPosition {
        BinlogPosition::new(self.file.clone(), pos)
    }

    /// `pos` with the GTID state of the transactions committed so far.
    fn with_state(&self, pos: u64) -> BinlogPosition {
        BinlogPosition {
            gtids: self.gtids.clone(),
            ..self.at(pos)
        }
    }

    /// The group in progress ended at `pos`: its GTID joins the state. The checkpoint mark
    /// there, unless a prepared XA transaction is held (a restart must read it again).
    fn commit(&mut self, pos: u64) -> Option<Mark> {
        if let (Some(gtids), Some(gtid)) = (self.gtids.as_mut(), self.pending.take()) {
            gtids.commit(&gtid);
        }
        self.ahead.passed(self.gtids.as_ref());
        (!self.transactions.holds_prepared()).then(|| Mark {
            partition: PARTITION.into(),
            position: self.with_state(pos).checkpoint(self.rank_by),
        })
    }

    /// Whether a change of `database.table` in the transaction being read is in the first
    /// copy already.
    fn copied_ahead(&mut self, database: &str, table: &str) -> bool {
        self.ahead.holds(database, table, self.gtids.as_ref())
    }

    /// Emits the held rows of an XA transaction committed now, but those in the first copy
    /// already.
    async fn release(&mut self, ctx: &SourceContext, rows: Vec<Held>) -> Result<(), Stopped> {
        for row in rows {
            let source = &row.event().source;
            if !self.copied_ahead(&source.database, &source.table) {
                ctx.emit.release(row).await?;
            }
        }
        Ok(())
    }

    /// [`Cursor::commit`], and the mark emitted.
    async fn end(&mut self, ctx: &SourceContext, pos: u64) -> Result<(), Stopped> {
        match self.commit(pos) {
            Some(mark) => ctx.emit.checkpoint(mark).await,
            None => Ok(()),
        }
    }
}

/// An event that cannot be read, at `here`.
fn bad_event(here: &BinlogPosition, reason: String) -> MysqlError {
    MysqlError::BadEvent {
        position: here.file_pos(),
        reason,
    }
}

/// Streams from `start` until shutdown (`Ok`) or an error.
pub async fn run(
    conn: Conn,
    flavor: Flavor,
    config: &MysqlConfig,
    filter: &TableFilter,
    mut ctx: SourceContext,
    start: BinlogPosition,
    mut backfill: Backfill,
) -> Result<(), Halt<MysqlError>> {
    let mut stream = open(conn, flavor, config, &start).await?;
    ctx.probe.streaming();
    let mut cursor = Cursor {
        file: start.file.clone(),
        pos: start.pos,
        gtids: start.gtids.clone(),
        pending: None,
        rank_by: start.rank_by(config.resume_by, ctx.resume.get(PARTITION)),
        transactions: Transactions::default(),
        requested: Vec::new(),
        ahead: backfill.take_copied_ahead(),
    };
    cursor.ahead.passed(cursor.gtids.as_ref());
    let mut catalog = Catalog::new(config);
    loop {
        if backfill.wants_chunk() {
            backfill.read_chunk(config, &ctx).await?;
        }
        if backfill.due(cursor.gtids.as_ref()) {
            backfill.emit(&ctx).await?;
            continue;
        }
        let event = tokio::select! {
            event = next_event(&mut stream) => event,
            _ = ctx.shutdown.requested() => return Ok(()),
        };
        let event = match event {
            Ok(Some(Ok(event))) => event,
            Ok(Some(Err(e))) => return Err(purged_or(e, &cursor.with_state(0)).into()),
            Ok(None) => return Err(MysqlError::StreamEnded.into()),
            Err(ReaderPanicked) => {
                let after = cursor.at(cursor.pos);
                return Err(bad_event(&after, "the event after this one is malformed (shorter than its header or checksum says)".into()).into());
            }
        };
        if event.header().event_type_raw() == HEARTBEAT_EVENT {
            ctx.probe.heartbeat();
        }
        let here = cursor.locate(event.header().log_pos());
        handle(
            &event,
            &stream,
            &mut cursor,
            &mut catalog,
            filter,
            &ctx,
            &here,
        )
        .await?;
        for table in std::mem::take(&mut cursor.requested) {
            backfill.request(config, &ctx, &table).await?;
        }
    }
}

/// The server's heartbeat on an idle binlog (`@master_heartbeat_period`).
const HEARTBEAT_EVENT: u8 = 27;

/// MySQL's PREVIOUS_GTIDS event (the GTIDs before a binlog file): not needed, as the GTID state
/// comes from the start position and each transaction's GTID event.
const MYSQL_PREVIOUS_GTIDS: u8 = 35;

/// The decoded body of `event`, or `None` for an event the stream does not decode. A
/// PREVIOUS_GTIDS body is never decoded: mysql_common reserves memory for as many entries as
/// the event's count says before reading them, so a damaged count aborts the process. A
/// transaction payload is refused before this (compressed binlogs are not supported), and its
/// decoder panics on a damaged length.
pub(super) fn event_data<'a>(event: &'a Event) -> std::io::Result<Option<EventData<'a>>> {
    let raw_type = event.header().event_type_raw();
    if raw_type == MYSQL_PREVIOUS_GTIDS || raw_type == MYSQL_TRANSACTION_PAYLOAD {
        return Ok(None);
    }
    event.read_data()
}

/// mysql_common's event reader, inside mysql_async's stream, panicked on the next event.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ReaderPanicked;

/// The stream's next item. mysql_common's event reader panics on an event shorter than its
/// header says, or with a body shorter than its checksum (0.37): such an event from the server
/// becomes an error naming the position before it, not a crash of the daemon. The stream is
/// dropped right after, so its state after the panic does not matter.
pub(super) async fn next_event<S: futures_util::Stream + Unpin>(
    stream: &mut S,
) -> Result<Option<S::Item>, ReaderPanicked> {
    use futures_util::FutureExt;
    std::panic::AssertUnwindSafe(stream.next())
        .catch_unwind()
        .await
        .map_err(|_| ReaderPanicked)
}

/// Registers as a replica and asks for the binlog from `start`.
async fn open(
    mut conn: Conn,
    flavor: Flavor,
    config: &MysqlConfig,
    start: &BinlogPosition,
) -> Result<BinlogStream, MysqlError> {
    // MariaDB: send its own GTID events as they are (not rewritten as queries).
    conn.query_drop("SET @mariadb_slave_capability = 4")
        .await
        .map_err(sql("setting the replica capability"))?;
    // A heartbeat every second when idle keeps the connection checked.
    conn.query_drop("SET @master_heartbeat_period = 1000000000")
        .await
        .map_err(sql("setting the heartbeat"))?;
    let gtids = start.gtids.as_ref().filter(|g| !g.is_empty());
    let request = BinlogStreamRequest::new(config.server_id);
    let request = match (start.streams_by_gtid(config.resume_by), gtids, flavor) {
        (true, Some(GtidState::Mariadb(state)), Flavor::Mariadb) => {
            tracing::info!(gtids = %state, "streaming the binlog after GTID state");
            conn.exec_drop(
                "SET @slave_connect_state = ?, @slave_gtid_strict_mode = 1",
                (state.to_string(),),
            )
            .await
            .map_err(sql("setting the GTID start state"))?;
            request.with_filename(b"").with_pos(4u64)
        }
        (true, Some(GtidState::Mysql(set)), Flavor::Mysql) => {
            tracing::info!(gtids = %set, "streaming the binlog after GTID set");
            let sids = set.to_sids().map_err(MysqlError::BadCheckpoint)?;
            request
                .with_gtid()
                .with_gtid_set(sids)
                .with_filename(b"")
                .with_pos(4u64)
        }
        (true, _, _) => {
            return Err(MysqlError::GtidFlavor {
                position: start.token(),
                server: flavor,
            })
        }
        (false, _, _) => {
            tracing::info!(position = %start.file_pos(), "streaming the binlog");
            request
                .with_filename(start.file.as_bytes())
                .with_pos(start.pos)
        }
    };
    conn.get_binlog_stream(request)
        .await
        .map_err(|e| purged_or(e, start))
}

/// One binlog event.
async fn handle(
    event: &Event,
    stream: &BinlogStream,
    cursor: &mut Cursor,
    catalog: &mut Catalog,
    filter: &TableFilter,
    ctx: &SourceContext,
    here: &BinlogPosition,
) -> Result<(), Halt<MysqlError>> {
    let raw_type = event.header().event_type_raw();
    if MARIADB_COMPRESSED.contains(&raw_type) {
        return Err(MysqlError::Compressed {
            setting: "log_bin_compress",
        }
        .into());
    }
    if raw_type == MYSQL_TRANSACTION_PAYLOAD {
        return Err(MysqlError::Compressed {
            setting: "binlog_transaction_compression",
        }
        .into());
    }
    if !checksum_ok(event) {
        return Err(MysqlError::Checksum {
            position: here.file_pos(),
        }
        .into());
    }
    let bad = |reason: String| bad_event(here, reason);
    if raw_type == raw_events::MARIADB_GTID {
        let gtid = raw_events::mariadb_gtid(event).map_err(bad)?;
        cursor.pending = Some(gtid.gtid);
        cursor
            .transactions
            .begin_mariadb(gtid.flags, gtid.xid)
            .map_err(bad)?;
        return Ok(());
    }
    let data = event_data(event).map_err(|e| bad(e.to_string()))?;
    match data {
        Some(EventData::RotateEvent(rotate)) => {
            cursor.file = if event.header().log_pos() == 0 {
                // Made up by the server when the dump starts (see raw_events).
                raw_events::fake_rotate_name(event)
            } else {
                rotate.name().into_owned()
            };
            cursor.pos = rotate.position();
            Ok(())
        }
        Some(EventData::GtidEvent(gtid)) => {
            cursor.pending = Some(Gtid::from_mysql(&gtid).map_err(bad)?);
            cursor.transactions.begin_mysql();
            Ok(())
        }
        Some(EventData::RowsEvent(rows)) => {
            let Some(tme) = stream.get_tme(rows.table_id()) else {
                return Err(bad(format!("rows for unknown table id {}", rows.table_id())).into());
            };
            let signal = filter.signals(&tme.database_name(), &tme.table_name());
            if !signal && !filter.matches(&tme.database_name(), &tme.table_name()) {
                return Ok(());
            }
            // XA rows are held until their commit, and checked then.
            if !signal
                && !cursor.transactions.in_xa()
                && cursor.copied_ahead(&tme.database_name(), &tme.table_name())
            {
                return Ok(());
            }
            let table = catalog
                .rows(tme)
                .await?
                .map_err(|reason| MysqlError::Decode {
                    table: format!("{}.{}", tme.database_name(), tme.table_name()),
                    position: here.file_pos(),
                    reason,
                })?;
            let gtid = cursor.pending.as_ref().map(|g| Arc::from(g.to_string()));
            let origin = Origin::of(&event.header());
            let changes = row_events(ctx, &table, &rows, tme, (here, origin, gtid))?;
            if signal {
                cursor
                    .requested
                    .extend(requests_in(&changes, &ctx.pipeline));
                if !filter.matches(&tme.database_name(), &tme.table_name()) {
                    return Ok(());
                }
            }
            if !cursor.transactions.in_xa() {
                // The rows of one event go to the pipeline as one message.
                return Ok(ctx.emit.events(changes).await?);
            }
            for change in changes {
                match ctx.emit.hold(change).await {
                    Ok(held) => cursor.transactions.hold(held),
                    Err(HoldError::Stopped(_)) => return Err(Halt::Stopped),
                    Err(HoldError::OverBudget { budget }) => {
                        return Err(MysqlError::XaTooLarge {
                            xid: cursor.transactions.open_xid(),
                            position: here.file_pos(),
                            budget,
                        }
                        .into())
                    }
                }
            }
            Ok(())
        }
        Some(EventData::TableMapEvent(tme)) => {
            catalog.table_mapped(tme.table_id());
            Ok(())
        }
        Some(EventData::XidEvent(_)) => {
            cursor.transactions.commit().map_err(bad)?;
            return Ok(cursor.end(ctx, here.pos).await?);
        }
        Some(EventData::XaPrepareLogEvent(data)) => {
            let (xid, one_phase) = raw_events::xa_prepare(&data).map_err(bad)?;
            let rows = cursor.transactions.prepare(xid, one_phase).map_err(bad)?;
            cursor.release(ctx, rows).await?;
            return Ok(cursor.end(ctx, here.pos).await?);
        }
        Some(EventData::QueryEvent(query)) => {
            let text = query.query();
            match cursor.transactions.query(&text).map_err(bad)? {
                QueryOutcome::Inside => return Ok(()),
                QueryOutcome::End | QueryOutcome::XaRollback => {}
                QueryOutcome::XaCommit(_, Some(rows)) => {
                    cursor.release(ctx, rows).await?;
                }
                QueryOutcome::XaCommit(xid, None) => {
                    tracing::warn!(position = %here.file_pos(), xid = %xid, "XA COMMIT of a transaction prepared before the stream's start: its rows were not read and are not delivered");
                }
                QueryOutcome::Statement => {
                    // DDL (or another statement of its own): with FULL metadata every
                    // TABLE_MAP carries the new shape; the catalog must read it again.
                    catalog.forget();
                    let truncated = truncated_table(&text, &query.schema())
                        .filter(|(db, table)| filter.matches(db, table))
                        .filter(|(db, table)| !cursor.copied_ahead(db, table));
                    if let Some((db, table)) = truncated {
                        let gtid = cursor.pending.as_ref().map(|g| Arc::from(g.to_string()));
                        let origin = Origin::of(&event.header());
                        ctx.emit
                            .event(truncate_event(ctx, (&db, &table), here, origin, gtid))
                            .await?;
                    }
                }
            }
            return Ok(cursor.end(ctx, here.pos).await?);
        }
        _ => Ok(()),
    }
}

/// The events of one rows event, in order.
fn row_events(
    ctx: &SourceContext,
    table: &TableRows,
    rows: &RowsEventData<'_>,
    tme: &TableMapEvent<'_>,
    (here, origin, gtid): (&BinlogPosition, Origin, Option<Arc<str>>),
) -> Result<Vec<ChangeEvent>, MysqlError> {
    let op = match rows {
        RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => Op::Insert,
        RowsEventData::UpdateRowsEvent(_)
        | RowsEventData::UpdateRowsEventV1(_)
        | RowsEventData::PartialUpdateRowsEvent(_) => Op::Update,
        RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => Op::Delete,
    };
    let shape = &table.shape;
    let decode_error = |reason: String| MysqlError::Decode {
        table: format!("{}.{}", shape.database, shape.table),
        position: here.file_pos(),
        reason,
    };
    let images = match rows {
        RowsEventData::PartialUpdateRowsEvent(_) => library_rows(shape, rows, tme),
        _ => table.decode(rows),
    }
    .map_err(decode_error)?;
    // The same for every row of the event.
    let source = source_info(
        ctx,
        (
            shape.database.as_str().into(),
            shape.table.as_str().into(),
            Some(shape.schema.clone()),
        ),
        here,
        origin,
        gtid,
    );
    let mut events = Vec::with_capacity(images.len());
    for (row, (before, after)) in images.into_iter().enumerate() {
        let Some(image) = after.as_ref().or(before.as_ref()) else {
            return Err(decode_error(
                "a row with neither a before nor an after image".into(),
            ));
        };
        let key = key_of(image, &shape.key);
        let mut source = source.clone();
        if let SourcePosition::Mysql(position) = &mut source.position {
            position.row = u32::try_from(row).unwrap_or(u32::MAX);
        }
        events.push(ChangeEvent {
            op,
            source,
            key,
            before,
            after,
            unchanged: Vec::new(),
            key_change: None,
            ts_ms: now_ms(),
        });
    }
    Ok(events)
}

/// The rows of a PARTIAL_UPDATE_ROWS event (MySQL's JSON diffs), read by mysql_common: a JSON
/// column written as a diff is the error [`value::value`] gives it.
pub(super) fn library_rows(
    shape: &TableShape,
    rows: &RowsEventData<'_>,
    tme: &TableMapEvent<'_>,
) -> Result<Vec<Images>, String> {
    let to_row = |row: &mysql_common::binlog::row::BinlogRow| -> Result<Row, String> {
        shape
            .columns
            .iter()
            .enumerate()
            .map(|(i, column)| {
                let value = value::value(column, row.as_ref(i))
                    .map_err(|e| format!("column {}: {e}", column.name))?;
                Ok((column.name.clone(), value))
            })
            .collect()
    };
    rows.rows(tme)
        .map(|pair| {
            let (before, after) = pair.map_err(|e| e.to_string())?;
            Ok((
                before.as_ref().map(to_row).transpose()?,
                after.as_ref().map(to_row).transpose()?,
            ))
        })
        .collect()
}

/// Whether the event's CRC32 (when the binlog has checksums) matches its bytes. The library
/// strips the checksum without checking it. Artificial events (position 0, heartbeats) are
/// made by the server on the fly and not checked.
pub(super) fn checksum_ok(event: &Event) -> bool {
    use mysql_common::binlog::consts::BinlogChecksumAlg;
    let header = event.header();
    if header.log_pos() == 0 || header.event_type_raw() == HEARTBEAT_EVENT {
        return true;
    }
    match (event.checksum(), event.footer().get_checksum_alg()) {
        (Some(sum), Ok(Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32))) => {
            event.calc_checksum(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32)
                == u32::from_le_bytes(sum)
        }
        _ => true,
    }
}

/// The table a `TRUNCATE [TABLE] [db.]name` statement empties, with its database.
pub(super) fn truncated_table(statement: &str, default_db: &str) -> Option<(String, String)> {
    let mut words = statement.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("TRUNCATE") {
        return None;
    }
    let mut name = words.next()?;
    if name.eq_ignore_ascii_case("TABLE") {
        name = words.next()?;
    }
    let unquote = |part: &str| part.trim_matches('`').replace("``", "`");
    let name = name.trim_end_matches(';');
    Some(
        match name.split_once("`.`").or_else(|| name.split_once('.')) {
            Some((db, table)) => (unquote(db), unquote(table)),
            None => (default_db.to_owned(), unquote(name)),
        },
    )
}

fn truncate_event(
    ctx: &SourceContext,
    (database, table): (&str, &str),
    here: &BinlogPosition,
    origin: Origin,
    gtid: Option<Arc<str>>,
) -> ChangeEvent {
    let source = source_info(
        ctx,
        (database.into(), table.into(), None),
        here,
        origin,
        gtid,
    );
    ChangeEvent {
        op: Op::Truncate,
        source,
        key: Row::new(),
        before: None,
        after: None,
        unchanged: Vec::new(),
        key_change: None,
        ts_ms: now_ms(),
    }
}

/// Error 1236 means the binlog asked for is gone from the server.
fn purged_or(err: mysql_async::Error, position: &BinlogPosition) -> MysqlError {
    match &err {
        mysql_async::Error::Server(server) if server.code == 1236 => MysqlError::Purged {
            position: position.token(),
            message: server.message.clone(),
        },
        _ => MysqlError::Sql {
            context: "reading the binlog".into(),
            source: err,
        },
    }
}

/// The tables requested of `pipeline` by inserted rows of the signal table (`tables`: a
/// comma-separated list of `database.table`).
fn requests_in(changes: &[ChangeEvent], pipeline: &str) -> Vec<String> {
    let text = |row: &Row, column: &str| match row.iter().find(|(name, _)| name.as_ref() == column)
    {
        Some((_, crate::envelope::Value::Text(text))) => Some(text.clone()),
        _ => None,
    };
    changes
        .iter()
        .filter(|change| change.op == Op::Insert)
        .filter_map(|change| change.after.as_ref())
        .filter(|row| text(row, "pipeline").as_deref() == Some(pipeline))
        .filter_map(|row| text(row, "tables"))
        .flat_map(|tables| {
            tables
                .split(',')
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{next_event, truncated_table, ReaderPanicked};

    /// An event whose header claims more bytes than the packet holds makes the library's event
    /// reader panic; read as the replication stream reads it, that is an error instead.
    #[tokio::test]
    async fn an_event_shorter_than_its_header_is_an_error_not_a_crash() {
        use futures_util::StreamExt;
        use mysql_common::binlog::{consts::BinlogVersion, EventStreamReader};
        let mut event = vec![0u8; 19 + 4];
        event[4] = 4; // ROTATE_EVENT
        event[9..13].copy_from_slice(&64u32.to_le_bytes()); // event_size: 64 bytes
        event[13..17].copy_from_slice(&4u32.to_le_bytes()); // log_pos
        let packets = vec![event];
        let premise = std::panic::catch_unwind(|| {
            let mut reader = EventStreamReader::new(BinlogVersion::Version4);
            let _ = reader.read(&packets[0][..]);
        });
        assert!(premise.is_err(), "mysql_common no longer panics here");

        let mut reader = EventStreamReader::new(BinlogVersion::Version4);
        let mut stream = futures_util::stream::iter(packets)
            .map(move |p: Vec<u8>| reader.read(&p[..]).map(|event| event.expect("an event")));
        assert_eq!(next_event(&mut stream).await.err(), Some(ReaderPanicked));
    }

    #[test]
    fn truncate_statements_name_their_table() {
        let t = |s| truncated_table(s, "app");
        assert_eq!(
            t("TRUNCATE TABLE orders"),
            Some(("app".into(), "orders".into()))
        );
        assert_eq!(
            t("truncate `shop`.`or``ders`"),
            Some(("shop".into(), "or`ders".into()))
        );
        assert_eq!(
            t("TRUNCATE shop.orders"),
            Some(("shop".into(), "orders".into()))
        );
        assert_eq!(t("ALTER TABLE orders ADD c INT"), None);
    }
}
