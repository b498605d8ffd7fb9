//! Streaming: reads the slot from a start LSN, turns pgoutput messages into events, and keeps
//! the slot's confirmed position in step with the stored checkpoint.
//!
//! Plain transactions are emitted as their changes arrive (Begin gives txid, commit time and
//! the commit LSN that positions every event of the transaction),
//! followed by a checkpoint mark at the Commit's end LSN. Streamed transactions are spooled
//! and replayed on Stream Commit, or dropped on Stream Abort. When no transaction is open,
//! a keepalive's WAL end (or a heartbeat message's LSN) becomes a checkpoint mark too, so the
//! slot moves past WAL of unpublished tables. Standby status updates carry, as flush LSN, only
//! the stored checkpoint the pipeline reports back.
//!
//! Backpressure: while the pipeline's buffer is full, the emitter waits and the stream is not
//! read. The walsender ends a session that sends nothing for `wal_sender_timeout` (its
//! keepalive requests sit unread meanwhile), so status updates go on while the emitter waits,
//! at least three times per `wal_sender_timeout`, still with the stored checkpoint as flush.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::backfill::{Backfill, SIGNAL_PREFIX, WATERMARK_PREFIX};
use super::catalog;
use super::config::{quote_literal, PostgresConfig};
use super::decode::{self, Frame, Message, RelationDef};
use super::error::PostgresError;
use super::lsn::Lsn;
use super::server::ReplicationConnection;
use super::spool::{Entry, Spool};
use super::table::{ChangeContext, Column, DeclaredColumn, Relation};
use super::value::TypeRegistry;
use crate::checkpoint::{Checkpoints, Position};
use crate::envelope::PostgresPosition;
use crate::source::{Halt, Mark, SourceContext, Stopped};

/// Prefix of the heartbeat messages this source emits.
pub const HEARTBEAT_PREFIX: &str = "cdc-bridge.heartbeat";
/// A status update follows a newly stored checkpoint after at most this long.
const STATUS_AFTER_STORE: Duration = Duration::from_millis(100);

/// Reads of the catalog (20 ms apart) before a column the catalog does not show yet is
/// described by its type OID alone (see `Streamer::declared_columns`).
const DECLARED_COLUMN_READS: u32 = 25;

/// The open plain (non-streamed) transaction.
struct OpenTransaction {
    context: ChangeContext,
    /// Already delivered before the resume point: its changes are skipped.
    skip: bool,
}

pub struct Streamer<'a> {
    pub conn: ReplicationConnection,
    pub sql: &'a tokio_postgres::Client,
    pub config: &'a PostgresConfig,
    pub types: TypeRegistry,
    pub database: Arc<str>,
    /// Tables copied while streaming ([`super::backfill`]).
    pub backfill: Backfill,
    /// Transactions that committed before this were delivered in an earlier run.
    pub resume: Lsn,
    relations: HashMap<u32, Arc<Relation>>,
    /// Relation versions sent inside stream blocks, per streamed transaction.
    stream_relations: HashMap<u32, HashMap<u32, Arc<Relation>>>,
    spools: HashMap<u32, Spool>,
    in_stream: Option<u32>,
    open: Option<OpenTransaction>,
    last_mark: Lsn,
    received: Lsn,
    flushed_sent: Lsn,
    /// When the next standby status update is due (also while the emitter waits).
    status_tick: Interval,
}

impl<'a> Streamer<'a> {
    pub fn new(
        conn: ReplicationConnection,
        sql: &'a tokio_postgres::Client,
        config: &'a PostgresConfig,
        types: TypeRegistry,
        database: Arc<str>,
        resume: Lsn,
    ) -> Self {
        Streamer {
            conn,
            sql,
            config,
            types,
            database,
            resume,
            backfill: Backfill::default(),
            relations: HashMap::new(),
            stream_relations: HashMap::new(),
            spools: HashMap::new(),
            in_stream: None,
            open: None,
            last_mark: resume,
            received: resume,
            flushed_sent: Lsn(0),
            status_tick: tokio::time::interval(status_period(config.status_interval_ms, 0)),
        }
    }

    /// Starts replication at `self.resume` and runs until shutdown or an error.
    pub async fn run(mut self, ctx: &mut SourceContext) -> Result<(), PostgresError> {
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {} (proto_version '2', publication_names {}, streaming 'on', messages 'true')",
            self.config.slot,
            self.resume,
            quote_literal(&format!("\"{}\"", self.config.publication.replace('"', "\"\""))),
        );
        let timeout = self.conn.simple_query(WAL_SENDER_TIMEOUT).await?;
        let timeout_ms = timeout
            .first()
            .and_then(|row| row.first().cloned().flatten())
            .and_then(|ms| ms.parse::<u64>().ok())
            .ok_or_else(|| {
                PostgresError::Protocol(format!("unexpected wal_sender_timeout: {timeout:?}"))
            })?;
        let every = status_period(self.config.status_interval_ms, timeout_ms);
        self.status_tick = tokio::time::interval(every);
        self.status_tick
            .set_missed_tick_behavior(MissedTickBehavior::Delay);
        self.conn.start_replication(&sql).await?;
        tracing::info!(pipeline = %ctx.pipeline, slot = %self.config.slot, from = %self.resume, "streaming changes");
        ctx.probe.streaming();
        tracing::debug!(
            wal_sender_timeout_ms = timeout_ms,
            status_every_ms = every.as_millis() as u64,
            "standby status updates"
        );

        let heartbeat_ms = if self.config.heartbeat_interval_ms == 0 {
            u64::MAX / 4
        } else {
            self.config.heartbeat_interval_ms
        };
        let mut heartbeat = tokio::time::interval_at(
            Instant::now() + Duration::from_millis(heartbeat_ms),
            Duration::from_millis(heartbeat_ms),
        );
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut stored = ctx.stored.clone();
        let mut shutdown = ctx.shutdown.clone();
        let mut store_pending = false;
        let mut store_debounce = Box::pin(tokio::time::sleep(Duration::from_secs(3600)));

        loop {
            tokio::select! {
                biased;
                _ = shutdown.requested() => break,
                // Between transactions only: a transaction whose rows went out is then in `delivered`.
                _ = std::future::ready(()), if self.open.is_none() && self.backfill.wants_chunk() => {
                    match self.read_chunk(ctx).await {
                        Ok(()) => {}
                        Err(Halt::Stopped) => break,
                        Err(Halt::Failed(err)) => return Err(err),
                    }
                }
                data = self.conn.recv_copy_data() => {
                    match self.on_frame(data?, ctx).await {
                        Ok(true) => self.send_status(&stored).await?,
                        Ok(false) => {}
                        Err(Halt::Stopped) => break,
                        Err(Halt::Failed(err)) => return Err(err),
                    }
                }
                changed = stored.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    if !store_pending {
                        store_pending = true;
                        store_debounce.as_mut().reset(Instant::now() + STATUS_AFTER_STORE);
                    }
                }
                _ = &mut store_debounce, if store_pending => {
                    store_pending = false;
                    self.send_status(&stored).await?;
                }
                _ = self.status_tick.tick() => self.send_status(&stored).await?,
                _ = heartbeat.tick() => {
                    self.sql
                        .execute("SELECT pg_logical_emit_message(false, $1, '')", &[&HEARTBEAT_PREFIX])
                        .await
                        .map_err(|e| PostgresError::sql("emitting a heartbeat", e))?;
                }
            }
        }
        self.send_status(&stored).await?;
        self.conn.close().await;
        Ok(())
    }

    /// Handles one frame; returns whether the server asked for a status update now.
    async fn on_frame(
        &mut self,
        data: Bytes,
        ctx: &SourceContext,
    ) -> Result<bool, Halt<PostgresError>> {
        match decode::parse_frame(data)? {
            Frame::Keepalive { wal_end, reply } => {
                ctx.probe.heartbeat();
                self.received = self.received.max(wal_end);
                if self.is_idle() {
                    self.mark(ctx, wal_end).await?;
                }
                Ok(reply)
            }
            Frame::XLogData { start, data } => {
                self.received = self.received.max(start);
                let message = decode::parse_message(data.clone(), self.in_stream.is_some())?;
                self.on_message(start, message, data, ctx).await?;
                Ok(false)
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.open.is_none() && self.in_stream.is_none() && self.spools.is_empty()
    }

    async fn on_message(
        &mut self,
        lsn: Lsn,
        message: Message,
        raw: Bytes,
        ctx: &SourceContext,
    ) -> Result<(), Halt<PostgresError>> {
        if let Some(xid) = message.stream_xid() {
            return self.on_streamed(xid, lsn, message, raw).await;
        }
        match message {
            Message::Begin {
                final_lsn,
                commit_ts_us,
                xid,
            } => {
                self.open = Some(OpenTransaction {
                    context: self.context(ctx, xid, final_lsn, commit_ts_us),
                    skip: final_lsn < self.resume,
                });
            }
            Message::Commit { end_lsn, .. } => {
                let open = self.open.take();
                if let Some(xid) = open.as_ref().and_then(|t| t.context.position.txid) {
                    self.backfill.delivered(xid);
                }
                if !open.is_some_and(|t| t.skip) {
                    self.mark(ctx, end_lsn).await?;
                }
            }
            Message::Relation { relation, .. } => {
                let relation = self.relation_from(relation).await?;
                self.relations.insert(relation.oid, Arc::new(relation));
            }
            Message::Origin | Message::Type { .. } => {}
            Message::Insert { .. }
            | Message::Update { .. }
            | Message::Delete { .. }
            | Message::Truncate { .. } => {
                let Some(open) = self.open.as_ref() else {
                    return Err(
                        PostgresError::Protocol("row change outside a transaction".into()).into(),
                    );
                };
                if !open.skip {
                    let context = open.context.clone();
                    for event in events(&message, &context, |oid| self.relations.get(&oid))? {
                        self.backfill.observe(&event);
                        self.emit(ctx, ctx.emit.event(event)).await?;
                    }
                }
            }
            Message::Logical {
                transactional,
                lsn: message_lsn,
                prefix,
                content,
                ..
            } => {
                if prefix == WATERMARK_PREFIX {
                    // Its copied rows take the watermark transaction's commit LSN, so that
                    // positions keep growing in commit order.
                    let commit = self
                        .open
                        .as_ref()
                        .map_or(message_lsn, |t| Lsn(t.context.position.lsn));
                    self.close_window(ctx, &content, commit).await?;
                    return Ok(());
                } else if prefix == SIGNAL_PREFIX && transactional {
                    if self.open.as_ref().is_some_and(|t| !t.skip) {
                        self.on_signal(ctx, &content).await?;
                    }
                    return Ok(());
                }
                if !transactional && self.is_idle() {
                    // Heartbeats (ours or anyone's) move the checkpoint while nothing else does.
                    self.mark(ctx, message_lsn).await?;
                } else if prefix != HEARTBEAT_PREFIX {
                    tracing::debug!(prefix = %prefix, "ignoring logical decoding message");
                }
            }
            Message::StreamStart { xid } => {
                self.in_stream = Some(xid);
                self.spools.entry(xid).or_insert_with(|| {
                    Spool::new(
                        self.config.stream_memory_bytes,
                        self.config.spill_dir.clone(),
                    )
                });
            }
            Message::StreamStop => self.in_stream = None,
            Message::StreamCommit {
                xid,
                commit_lsn,
                end_lsn,
                commit_ts_us,
            } => {
                self.stream_commit(ctx, xid, commit_lsn, end_lsn, commit_ts_us)
                    .await?;
            }
            Message::StreamAbort { xid, subxid } => {
                if xid == subxid {
                    self.spools.remove(&xid);
                    self.stream_relations.remove(&xid);
                } else if let Some(spool) = self.spools.get_mut(&xid) {
                    spool.abort_subtransaction(subxid)?;
                }
            }
        }
        Ok(())
    }

    /// A message inside a stream block: spooled until its transaction commits or aborts.
    async fn on_streamed(
        &mut self,
        xid: u32,
        lsn: Lsn,
        message: Message,
        raw: Bytes,
    ) -> Result<(), Halt<PostgresError>> {
        let top = self.in_stream.ok_or_else(|| {
            PostgresError::Protocol("streamed change outside a stream block".into())
        })?;
        let relation_oids: Vec<u32> = match &message {
            Message::Relation { relation, .. } => {
                let relation = Arc::new(self.relation_from(relation.clone()).await?);
                self.stream_relations
                    .entry(top)
                    .or_default()
                    .insert(relation.oid, relation);
                return Ok(());
            }
            Message::Insert { oid, .. }
            | Message::Update { oid, .. }
            | Message::Delete { oid, .. } => vec![*oid],
            Message::Truncate { oids, .. } => oids.clone(),
            _ => return Ok(()),
        };
        let overlay = self.stream_relations.get(&top);
        let mut relations = Vec::with_capacity(relation_oids.len());
        for oid in relation_oids {
            let relation = overlay
                .and_then(|o| o.get(&oid))
                .or_else(|| self.relations.get(&oid))
                .cloned()
                .ok_or_else(|| {
                    PostgresError::Protocol(format!("change for unknown relation {oid}"))
                })?;
            relations.push(relation);
        }
        let spool = self.spools.get_mut(&top).ok_or_else(|| {
            PostgresError::Protocol(format!("no spool for streamed transaction {top}"))
        })?;
        let relations = relations.iter().map(|r| spool.relation_index(r)).collect();
        spool.push(
            xid,
            Entry {
                lsn,
                relations,
                raw,
            },
        )?;
        Ok(())
    }

    async fn stream_commit(
        &mut self,
        ctx: &SourceContext,
        xid: u32,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_ts_us: i64,
    ) -> Result<(), Halt<PostgresError>> {
        // Once committed, the server treats relations sent inside the stream as known to us
        // for every later transaction: they join the shared cache.
        if let Some(overlay) = self.stream_relations.remove(&xid) {
            self.relations.extend(overlay);
        }
        let Some(spool) = self.spools.remove(&xid) else {
            return Ok(());
        };
        if commit_lsn < self.resume {
            return Ok(());
        }
        let context = self.context(ctx, xid, commit_lsn, commit_ts_us);
        let (relations, mut entries) = spool.into_entries()?;
        while let Some(entry) = entries.next_entry()? {
            let message = decode::parse_message(entry.raw, true)?;
            let relation_of = |oid| {
                entry
                    .relations
                    .iter()
                    .map(|&i| &relations[i as usize])
                    .find(|r| r.oid == oid)
            };
            for event in events(&message, &context, relation_of)? {
                self.backfill.observe(&event);
                self.emit(ctx, ctx.emit.event(event)).await?;
            }
        }
        self.backfill.delivered(xid);
        self.mark(ctx, end_lsn).await?;
        Ok(())
    }

    fn context(
        &self,
        ctx: &SourceContext,
        xid: u32,
        commit_lsn: Lsn,
        commit_ts_us: i64,
    ) -> ChangeContext {
        ChangeContext {
            pipeline: ctx.pipeline.clone(),
            database: self.database.clone(),
            position: PostgresPosition {
                lsn: commit_lsn.0,
                txid: Some(xid),
            },
            commit_ts_ms: Some(decode::unix_ms(commit_ts_us)),
        }
    }

    async fn relation_from(&mut self, def: RelationDef) -> Result<Relation, PostgresError> {
        let oids: Vec<u32> = def.columns.iter().map(|c| c.type_oid).collect();
        self.types.ensure(self.sql, &oids).await?;
        let columns: Vec<Column> = def
            .columns
            .into_iter()
            .map(|c| Column {
                decoder: self.types.get(c.type_oid),
                name: Arc::from(c.name),
                type_oid: c.type_oid,
                typmod: c.type_modifier,
                identity: c.identity,
            })
            .collect();
        let declared = declared_columns(self.sql, def.oid, &columns).await?;
        let name = (def.schema.into(), def.table.into());
        Ok(Relation::new(def.oid, name, columns, &declared))
    }

    /// Emits a checkpoint mark at `lsn`, unless one at or after it was emitted already
    /// (marks must only move forward).
    pub(super) async fn mark(
        &mut self,
        ctx: &SourceContext,
        lsn: Lsn,
    ) -> Result<(), Halt<PostgresError>> {
        if lsn <= self.last_mark {
            return Ok(());
        }
        self.last_mark = lsn;
        let mark = Mark {
            partition: String::new(),
            position: Position::from_counter(lsn.to_string(), lsn.0),
        };
        self.emit(ctx, ctx.emit.checkpoint(mark)).await
    }

    /// Completes `send` (an emitter call); while it waits for buffer room, sends the status
    /// updates that keep the session alive.
    pub(super) async fn emit(
        &mut self,
        ctx: &SourceContext,
        send: impl Future<Output = Result<(), Stopped>>,
    ) -> Result<(), Halt<PostgresError>> {
        let mut send = std::pin::pin!(send);
        loop {
            tokio::select! {
                biased;
                sent = &mut send => return Ok(sent?),
                _ = self.status_tick.tick() => self.send_status(&ctx.stored).await?,
            }
        }
    }

    /// Reports `received` as written and the stored checkpoint as flushed.
    async fn send_status(
        &mut self,
        stored: &watch::Receiver<Checkpoints>,
    ) -> Result<(), PostgresError> {
        let stored = stored.borrow().get("").map(|p| p.token.clone());
        let flush = stored
            .as_deref()
            .and_then(|token| token.parse::<Lsn>().ok())
            .unwrap_or(Lsn(0));
        let now_us = crate::envelope::now_ms() * 1000;
        self.conn
            .send_copy_data(&decode::status_update(
                self.received.max(flush),
                flush,
                now_us,
            ))
            .await?;
        if flush > self.flushed_sent {
            tracing::debug!(flush = %flush, "confirmed to PostgreSQL");
            self.flushed_sent = flush;
        }
        Ok(())
    }
}

/// The walsender's own `wal_sender_timeout` in milliseconds (0: none); it may differ from the
/// server's default (set per role, database or connection).
const WAL_SENDER_TIMEOUT: &str =
    "SELECT setting FROM pg_settings WHERE name = 'wal_sender_timeout'";

/// How often to send standby status updates: `status_interval_ms`, and at least three times
/// per `wal_sender_timeout` so that one late update does not end the session.
fn status_period(status_interval_ms: u64, wal_sender_timeout_ms: u64) -> Duration {
    let mut ms = status_interval_ms;
    if wal_sender_timeout_ms > 0 {
        ms = ms.min(wal_sender_timeout_ms / 3);
    }
    Duration::from_millis(ms.max(100))
}

/// The events of one row-change message; `relation_of` finds a table by OID.
pub(super) fn events<'r>(
    message: &Message,
    context: &ChangeContext,
    relation_of: impl Fn(u32) -> Option<&'r Arc<Relation>>,
) -> Result<Vec<crate::envelope::ChangeEvent>, PostgresError> {
    let relation = |oid: &u32| {
        relation_of(*oid)
            .ok_or_else(|| PostgresError::Protocol(format!("change for unknown relation {oid}")))
    };
    Ok(match message {
        Message::Insert { oid, new, .. } => vec![relation(oid)?.insert_event(context, new)],
        Message::Update { oid, old, new, .. } => {
            vec![relation(oid)?.update_event(context, old.as_ref(), new)]
        }
        Message::Delete { oid, old, .. } => vec![relation(oid)?.delete_event(context, old)],
        Message::Truncate { oids, .. } => oids
            .iter()
            .map(|oid| Ok(relation(oid)?.truncate_event(context)))
            .collect::<Result<_, PostgresError>>()?,
        _ => Vec::new(),
    })
}

/// The table's declared columns from the catalog, once it shows every column of the
/// Relation message. The walsender can send a DDL transaction's changes a moment before
/// that transaction is visible to other sessions (its commit record is in the WAL before
/// the server publishes it), so a catalog read right after may still miss a new column:
/// it is read again, briefly, before the columns it lacks fall back to their type OID.
async fn declared_columns(
    sql: &tokio_postgres::Client,
    oid: u32,
    columns: &[Column],
) -> Result<Vec<DeclaredColumn>, PostgresError> {
    let mut attempts = 0;
    loop {
        let declared = catalog::declared_columns(sql, oid).await?;
        let complete = columns
            .iter()
            .all(|c| declared.iter().any(|d| d.name == *c.name));
        attempts += 1;
        if complete || attempts == DECLARED_COLUMN_READS {
            return Ok(declared);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::status_period;
    use std::time::Duration;

    #[test]
    fn status_updates_come_three_times_per_sender_timeout() {
        let ms = Duration::from_millis;
        assert_eq!(status_period(10_000, 60_000), ms(10_000));
        assert_eq!(status_period(10_000, 10_000), ms(3_333));
        assert_eq!(status_period(10_000, 0), ms(10_000), "no timeout");
        assert_eq!(status_period(10_000, 30), ms(100), "at most ten a second");
        assert_eq!(status_period(0, 0), ms(100));
    }
}
