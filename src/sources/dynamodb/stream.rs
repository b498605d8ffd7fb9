//! The read loop: lists shards, reads the readable ones (see [`Lineage`]) round-robin, turns
//! records into events with a checkpoint mark each (partition = shard id, position = sequence
//! number), and marks a shard finished once read to its end, which frees its children.
//!
//! The `END` marks of finished shards are forgotten once a listing no longer holds the shard
//! (gone from the stream, past its 24-hour retention), so the checkpoint does not grow with
//! every shard the stream ever had; at least one checkpoint is always kept, so that a restart
//! is never taken for a first start.
//!
//! Spread over several instances (a shared store), a copy reads only the shards granted to
//! it ([`PartitionLeases`]): at every listing it reads the shared checkpoints (a shard another
//! instance finished frees its children here too) and offers the shards readable now.
//!
//! Iterators that expire are renewed after the last sequence number read (no record skipped
//! or repeated). Throttling and service errors back off per shard and give up after a while
//! (transient: the pipeline restarts from its checkpoints). Records lost to the 24-hour
//! retention and a disabled stream stop the source with what was lost and how to go on.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::config::{DynamoDbConfig, OnTrimmed, StartAt};
use super::error::DynamoDbError;
use super::lineage::Lineage;
use super::server::{ApiError, Page, RecordKind, Start, StreamRecord, StreamStatus, StreamsApi};
use super::value::row;
use crate::backoff;
use crate::checkpoint::{Checkpoints, Fence, Position};
use crate::coordination::{Offer, PartitionLeases};
use crate::envelope::{
    now_ms, ChangeEvent, DynamodbPosition, Op, SourceInfo, SourceKind, SourcePosition,
};
use crate::source::{Halt, Mark, SourceContext, Stopped};

/// The checkpoint token of a shard read to its end.
pub const FINISHED: &str = "END";
/// The first wait after a throttled or failed call; doubled on each further failure.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
const REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// Spread over instances, shards finished elsewhere free their children here: list sooner.
const SPREAD_REFRESH_INTERVAL: Duration = Duration::from_secs(2);
const RECORDS_PER_CALL: i32 = 1000;
/// Consecutive failures of one shard before the source gives up (and is restarted).
const MAX_FAILURES: u32 = 12;
/// How long the ids of finished shards gone from the stream are remembered.
const GONE_MEMORY: Duration = Duration::from_secs(24 * 3600);

/// The position of a record, ordered by sequence number (numeric strings of varying length).
pub fn seq_position(seq: &str) -> Position {
    let mut rank = vec![0u8];
    rank.extend(format!("{seq:0>48}").into_bytes());
    Position {
        token: seq.to_owned(),
        rank,
    }
}

/// The position of a shard read to its end: after every sequence number.
pub fn finished_position() -> Position {
    Position {
        token: FINISHED.to_owned(),
        rank: vec![1],
    }
}

struct Cursor {
    iterator: Option<String>,
    /// Where reading started, to renew an iterator before any record was read.
    start: Start,
    last_seq: Option<String>,
    next_poll: Instant,
    failures: u32,
}

/// A copy of a pipeline spread over several instances.
struct Spread {
    leases: Arc<PartitionLeases>,
    granted: watch::Receiver<BTreeMap<String, Fence>>,
    /// Shards whose `END` mark is stored, as last read.
    done: BTreeSet<String>,
    /// Shards granted before the checkpoints were last read: only these may be opened, so
    /// that a shard opens after a position stored no earlier than its lease was taken.
    openable: BTreeSet<String>,
}

pub struct Reader {
    api: Arc<dyn StreamsApi>,
    arn: String,
    config: DynamoDbConfig,
    lineage: Lineage,
    cursors: BTreeMap<String, Cursor>,
    resume: Checkpoints,
    /// Shards with a stored (or emitted) checkpoint.
    marked: BTreeSet<String>,
    /// On a first start with `start = latest`: the shards that existed then.
    latest_shards: Option<HashSet<String>>,
    pipeline: Arc<str>,
    database: Arc<str>,
    table: Arc<str>,
    status: StreamStatus,
    next_refresh: Instant,
    spread: Option<Spread>,
}

impl Reader {
    pub fn new(
        api: Arc<dyn StreamsApi>,
        arn: String,
        config: DynamoDbConfig,
        database: &str,
        ctx: &SourceContext,
    ) -> Self {
        let mut lineage = Lineage::default();
        for (shard, position) in &ctx.resume {
            if position.token == FINISHED {
                lineage.finish(shard);
            }
        }
        let latest_shards =
            (ctx.resume.is_empty() && config.start == StartAt::Latest).then(HashSet::new);
        Reader {
            api,
            arn,
            config,
            lineage,
            cursors: BTreeMap::new(),
            resume: ctx.resume.clone(),
            marked: ctx.resume.keys().cloned().collect(),
            latest_shards,
            pipeline: ctx.pipeline.clone(),
            database: database.into(),
            table: "".into(),
            status: StreamStatus::Enabled,
            next_refresh: Instant::now(),
            spread: ctx.partitions.clone().map(|leases| Spread {
                granted: leases.granted(),
                leases,
                done: BTreeSet::new(),
                openable: BTreeSet::new(),
            }),
        }
    }

    pub async fn run(mut self, ctx: &mut SourceContext) -> Result<(), Halt<DynamoDbError>> {
        ctx.probe.streaming();
        loop {
            if ctx.shutdown.is_requested() {
                return Ok(());
            }
            if Instant::now() >= self.next_refresh {
                self.refresh().await?;
                self.forget_gone(ctx).await?;
            }
            self.drop_revoked();
            for shard in self.lineage.readable() {
                if !self.cursors.contains_key(&shard) && self.may_open(&shard) {
                    self.open(&shard, ctx).await?;
                }
            }
            if self.status == StreamStatus::Disabled && self.lineage.all_finished() {
                return Err(DynamoDbError::Disabled {
                    table: self.table.to_string(),
                }
                .into());
            }
            let now = Instant::now();
            let due: Vec<String> = self
                .cursors
                .iter()
                .filter(|(_, c)| c.next_poll <= now)
                .map(|(id, _)| id.clone())
                .collect();
            for shard in due {
                self.poll(&shard, ctx).await?;
            }
            let wake = self
                .cursors
                .values()
                .map(|c| c.next_poll)
                .min()
                .map_or(self.next_refresh, |t| t.min(self.next_refresh));
            let granted = self.spread.as_mut().map(|spread| &mut spread.granted);
            let granted = async move {
                let changed = match granted {
                    Some(granted) => granted.changed().await.is_ok(),
                    None => false,
                };
                if !changed {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                // Newly granted shards open after their stored position, read fresh.
                _ = granted => self.next_refresh = Instant::now(),
                _ = ctx.shutdown.requested() => return Ok(()),
            }
        }
    }

    /// Whether this copy may start reading `shard` (always, unless spread over instances).
    fn may_open(&self, shard: &str) -> bool {
        self.may_read(shard)
            && self
                .spread
                .as_ref()
                .is_none_or(|spread| spread.openable.contains(shard))
    }

    /// Whether this copy may read `shard` (always, unless spread over instances).
    fn may_read(&self, shard: &str) -> bool {
        self.spread
            .as_ref()
            .is_none_or(|spread| spread.granted.borrow().contains_key(shard))
    }

    /// Stops reading shards whose lease this instance lost (the coordinator restarts the
    /// copy, so what was read from them and not stored is read again by the new holder).
    fn drop_revoked(&mut self) {
        if self.spread.is_none() {
            return;
        }
        let revoked: Vec<String> = self
            .cursors
            .keys()
            .filter(|shard| !self.may_read(shard))
            .cloned()
            .collect();
        for shard in revoked {
            tracing::info!(%shard, "no longer reading the shard: its lease went to another instance");
            self.cursors.remove(&shard);
        }
    }

    /// Spread: reads the shared checkpoints (every instance's progress). The shards granted
    /// until now may be opened after this reading.
    async fn read_stored(&mut self) -> Result<Option<Checkpoints>, DynamoDbError> {
        let Some(spread) = &mut self.spread else {
            return Ok(None);
        };
        spread.openable = spread.granted.borrow_and_update().keys().cloned().collect();
        let stored = spread.leases.stored().await.map_err(|err| {
            let detail = crate::error::report(&err);
            match err.disposition() {
                crate::error::Disposition::Transient => DynamoDbError::Unavailable(detail),
                _ => DynamoDbError::Fatal(detail),
            }
        })?;
        Ok(Some(stored))
    }

    /// Spread: shards finished anywhere are finished here, and shards not open here resume
    /// from their latest stored position.
    fn apply_stored(&mut self, stored: Checkpoints) {
        let Some(spread) = &mut self.spread else {
            return;
        };
        spread.done.clear();
        for (shard, position) in stored {
            self.marked.insert(shard.clone());
            if position.token == FINISHED {
                self.lineage.finish(&shard);
                self.cursors.remove(&shard);
                self.resume.remove(&shard);
                spread.done.insert(shard);
            } else if !self.cursors.contains_key(&shard) {
                self.resume.insert(shard, position);
            }
        }
    }

    /// Spread: tells the coordinator which shards could be read now and which are done.
    fn offer(&self) {
        if let Some(spread) = &self.spread {
            spread.leases.offer(Offer {
                readable: self.lineage.readable().into_iter().collect(),
                done: spread.done.clone(),
            });
        }
    }

    /// Lists the shards again; checks that stored checkpoints still have their shard.
    async fn refresh(&mut self) -> Result<(), DynamoDbError> {
        // Checkpoints before the listing: every shard stored then is listed now unless it
        // aged out, so a shard another instance just started is never taken for lost.
        let stored = self.read_stored().await?;
        let info = retry("DescribeStream", || self.api.describe(&self.arn)).await?;
        self.table = info.table.as_str().into();
        if info.status == StreamStatus::Disabled && self.status != StreamStatus::Disabled {
            tracing::warn!(table = %info.table, "the stream is disabled: reading what it holds, then stopping");
        }
        self.status = info.status;
        if let Some(initial) = &mut self.latest_shards {
            if initial.is_empty() {
                initial.extend(info.shards.iter().map(|s| s.id.clone()));
            }
        }
        self.lineage.update(&info.shards, Instant::now());
        if let Some(stored) = stored {
            self.apply_stored(stored);
        }
        // A checkpointed shard that is no longer listed (and not finished) aged out of the
        // stream with records we had not read.
        let lost: Vec<(String, String)> = self
            .resume
            .iter()
            .filter(|(shard, pos)| pos.token != FINISHED && !self.lineage.is_listed(shard))
            .map(|(shard, pos)| (shard.clone(), pos.token.clone()))
            .collect();
        for (shard, after) in lost {
            self.on_trimmed(&shard, &after)?;
            self.lineage.finish(&shard);
            self.resume.remove(&shard);
        }
        self.offer();
        let interval = match self.spread {
            Some(_) => SPREAD_REFRESH_INTERVAL,
            None => REFRESH_INTERVAL,
        };
        self.next_refresh = Instant::now() + interval;
        Ok(())
    }

    /// Forgets the checkpoints of finished shards gone from the stream; the lineage still
    /// knows them as finished, so they are not read again.
    async fn forget_gone(&mut self, ctx: &SourceContext) -> Result<(), Stopped> {
        let mut gone: Vec<String> = self
            .lineage
            .gone()
            .into_iter()
            .filter(|shard| self.marked.contains(shard))
            .collect();
        if gone.len() == self.marked.len() {
            // Keep one: without any checkpoint, the next start would be a first start.
            gone.pop();
        }
        if !gone.is_empty() {
            tracing::info!(shards = gone.len(), first = %gone[0], "forgetting the checkpoints of finished shards gone from the stream");
        }
        for shard in gone {
            self.marked.remove(&shard);
            self.resume.remove(&shard);
            ctx.emit.forget(shard).await?;
        }
        self.lineage.drop_gone(Instant::now(), GONE_MEMORY);
        Ok(())
    }

    /// The records after the shard's last position are gone: it is read from its trim horizon
    /// next. Records were lost only if something was read or stored before (a last sequence
    /// number): then `on_trimmed` decides. With none (a shard read from its horizon that has
    /// given nothing yet), nothing can have been skipped, and the shard is just read again
    /// (DynamoDB Local answers a fresh iterator this way now and then).
    fn read_again_from_the_horizon(&mut self, shard: &str) -> Result<(), DynamoDbError> {
        match self.cursors[shard].last_seq.clone() {
            Some(after) => self.on_trimmed(shard, &after)?,
            None => {
                tracing::warn!(shard, "the shard answered that its records were trimmed before anything was read from it; reading it from its horizon again");
            }
        }
        let cursor = self.cursors.get_mut(shard).expect("cursor");
        cursor.start = Start::TrimHorizon;
        cursor.last_seq = None;
        Ok(())
    }

    fn on_trimmed(&self, shard: &str, after: &str) -> Result<(), DynamoDbError> {
        let err = DynamoDbError::Trimmed {
            shard: shard.to_owned(),
            after: after.to_owned(),
        };
        match self.config.on_trimmed {
            OnTrimmed::Fail => Err(err),
            OnTrimmed::RestartFromOldest => {
                tracing::error!(shard, after, "RECORDS LOST: {err}; going on from the oldest record still in the stream (on_trimmed = \"restart_from_oldest\")");
                Ok(())
            }
        }
    }

    /// Starts reading a shard: after its checkpoint, or from its start.
    async fn open(&mut self, shard: &str, ctx: &SourceContext) -> Result<(), Halt<DynamoDbError>> {
        let start = match self.resume.get(shard) {
            Some(position) => Start::After(position.token.clone()),
            None => match &self.latest_shards {
                Some(initial) if initial.contains(shard) && self.lineage.is_closed(shard) => {
                    // start = latest: a closed shard holds only the past.
                    return Ok(self.finish(shard, ctx).await?);
                }
                Some(initial) if initial.contains(shard) => Start::Latest,
                _ => Start::TrimHorizon,
            },
        };
        let iterator = match self.iterator(shard, &start).await {
            Ok(iterator) => iterator,
            Err(IteratorGone::Trimmed) => {
                let Start::After(after) = &start else {
                    return Err(DynamoDbError::Fatal(format!(
                        "shard {shard} trimmed at its horizon"
                    ))
                    .into());
                };
                self.on_trimmed(shard, after)?;
                self.iterator(shard, &Start::TrimHorizon)
                    .await
                    .map_err(|_| {
                        DynamoDbError::Fatal(format!("shard {shard} cannot be read from its start"))
                    })?
            }
            Err(IteratorGone::Error(err)) => return Err(err.into()),
        };
        let Some(iterator) = iterator else {
            return Ok(self.finish(shard, ctx).await?);
        };
        self.cursors.insert(
            shard.to_owned(),
            Cursor {
                iterator: Some(iterator),
                last_seq: match &start {
                    Start::After(seq) => Some(seq.clone()),
                    _ => None,
                },
                start,
                next_poll: Instant::now(),
                failures: 0,
            },
        );
        Ok(())
    }

    async fn iterator(&self, shard: &str, start: &Start) -> Result<Option<String>, IteratorGone> {
        match retry("GetShardIterator", || {
            self.api.iterator(&self.arn, shard, start)
        })
        .await
        {
            Ok(iterator) => Ok(iterator),
            Err(DynamoDbError::Trimmed { .. }) => Err(IteratorGone::Trimmed),
            // The shard itself aged out: lost records if we were reading it, else nothing to read.
            Err(DynamoDbError::NotFound { .. }) if matches!(start, Start::After(_)) => {
                Err(IteratorGone::Trimmed)
            }
            Err(DynamoDbError::NotFound { .. }) => Ok(None),
            Err(err) => Err(IteratorGone::Error(err)),
        }
    }

    /// One GetRecords on `shard`, and its records emitted.
    async fn poll(&mut self, shard: &str, ctx: &SourceContext) -> Result<(), Halt<DynamoDbError>> {
        let cursor = self
            .cursors
            .get_mut(shard)
            .expect("polled shards have a cursor");
        let iterator = match cursor.iterator.take() {
            Some(iterator) => iterator,
            None => {
                // Renew after the last record read: nothing skipped, nothing repeated.
                let start = cursor
                    .last_seq
                    .clone()
                    .map_or(cursor.start.clone(), Start::After);
                match self.iterator(shard, &start).await {
                    Ok(Some(iterator)) => iterator,
                    Ok(None) => return Ok(self.finish(shard, ctx).await?),
                    Err(IteratorGone::Trimmed) => {
                        self.read_again_from_the_horizon(shard)?;
                        return Ok(());
                    }
                    Err(IteratorGone::Error(err)) => return Err(err.into()),
                }
            }
        };
        match self.api.records(&iterator, RECORDS_PER_CALL).await {
            Ok(page) => self.emit(shard, page, ctx).await,
            Err(ApiError::ExpiredIterator) => {
                tracing::debug!(
                    shard,
                    "shard iterator expired; renewing it after the last record read"
                );
                Ok(())
            }
            Err(ApiError::Trimmed(_)) => {
                self.read_again_from_the_horizon(shard)?;
                Ok(())
            }
            Err(err @ (ApiError::Throttled(_) | ApiError::Transient(_))) => {
                let cursor = self.cursors.get_mut(shard).expect("cursor");
                cursor.iterator = Some(iterator);
                cursor.failures += 1;
                if cursor.failures > MAX_FAILURES {
                    return Err(DynamoDbError::Unavailable(err.to_string()).into());
                }
                let delay = backoff::exponential(
                    cursor.failures - 1,
                    BACKOFF_BASE,
                    Duration::from_secs(10),
                );
                cursor.next_poll = Instant::now() + backoff::with_jitter(delay);
                tracing::warn!(shard, error = %err, "GetRecords failed; backing off");
                Ok(())
            }
            Err(err) => Err(api_error(err).into()),
        }
    }

    async fn emit(
        &mut self,
        shard: &str,
        page: Page,
        ctx: &SourceContext,
    ) -> Result<(), Halt<DynamoDbError>> {
        let got_records = !page.records.is_empty();
        if got_records && !self.marked.contains(shard) {
            self.marked.insert(shard.to_owned());
        }
        match page.records.last().and_then(|r| r.created_ms) {
            Some(created_ms) => {
                let age_ms = (crate::envelope::now_ms() - created_ms).max(0) as u64;
                ctx.probe
                    .partition_record_age(shard, Duration::from_millis(age_ms));
            }
            None => ctx.probe.heartbeat(),
        }
        for record in &page.records {
            let event = self.event(shard, record);
            let mark = Mark {
                partition: shard.to_owned(),
                position: seq_position(&record.sequence_number),
            };
            ctx.emit.event_then_checkpoint(event, mark).await?;
            self.cursors.get_mut(shard).expect("cursor").last_seq =
                Some(record.sequence_number.clone());
        }
        let Some(next) = page.next else {
            return Ok(self.finish(shard, ctx).await?);
        };
        let cursor = self.cursors.get_mut(shard).expect("cursor");
        cursor.iterator = Some(next);
        cursor.failures = 0;
        // A page with records may have more behind it: the next call goes out at once
        // (DynamoDB Streams limits readers per shard to two, not calls per second; a throttled
        // call backs off). An empty page means the shard is caught up.
        cursor.next_poll = if got_records {
            Instant::now()
        } else {
            Instant::now() + Duration::from_millis(self.config.poll_interval_ms)
        };
        Ok(())
    }

    /// A shard read to its end: remembered in the checkpoints, and its children may start.
    async fn finish(&mut self, shard: &str, ctx: &SourceContext) -> Result<(), Stopped> {
        tracing::debug!(shard, "shard read to its end");
        ctx.probe.partition_ended(shard);
        self.cursors.remove(shard);
        self.lineage.finish(shard);
        self.resume.remove(shard);
        self.marked.insert(shard.to_owned());
        self.offer();
        // Children of a closed shard may not be listed yet.
        self.next_refresh = Instant::now();
        ctx.emit
            .checkpoint(Mark {
                partition: shard.to_owned(),
                position: finished_position(),
            })
            .await
    }

    fn event(&self, shard: &str, record: &StreamRecord) -> ChangeEvent {
        let op = match record.kind {
            RecordKind::Insert => Op::Insert,
            RecordKind::Modify => Op::Update,
            RecordKind::Remove => Op::Delete,
        };
        ChangeEvent {
            op,
            source: SourceInfo {
                connector: SourceKind::Dynamodb,
                pipeline: self.pipeline.clone(),
                database: self.database.clone(),
                schema: None,
                table: self.table.clone(),
                table_schema: None,
                position: SourcePosition::Dynamodb(DynamodbPosition {
                    shard: shard.into(),
                    sequence: record.sequence_number.as_str().into(),
                }),
                commit_ts_ms: record.created_ms,
                snapshot: false,
                ttl_expired: record.ttl && record.kind == RecordKind::Remove,
            },
            key: row(&record.keys),
            before: record.old_image.as_ref().map(row),
            after: record.new_image.as_ref().map(row),
            unchanged: Vec::new(),
            key_change: None,
            ts_ms: now_ms(),
        }
    }
}

enum IteratorGone {
    Trimmed,
    Error(DynamoDbError),
}

fn api_error(err: ApiError) -> DynamoDbError {
    match err {
        ApiError::NotFound(detail) => DynamoDbError::NotFound {
            what: "stream or shard".into(),
            detail,
        },
        ApiError::Denied(detail) => DynamoDbError::Denied(detail),
        ApiError::Trimmed(detail) => DynamoDbError::Trimmed {
            shard: String::new(),
            after: detail,
        },
        ApiError::Throttled(detail) | ApiError::Transient(detail) => {
            DynamoDbError::Unavailable(detail)
        }
        ApiError::ExpiredIterator => DynamoDbError::Unavailable("shard iterator expired".into()),
        ApiError::Fatal(detail) => DynamoDbError::Fatal(detail),
    }
}

/// Calls `call`, retrying throttling and service errors with backoff.
async fn retry<T, F, Fut>(what: &str, mut call: F) -> Result<T, DynamoDbError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(err @ (ApiError::Throttled(_) | ApiError::Transient(_)))
                if attempt < MAX_FAILURES =>
            {
                tracing::warn!(call = what, error = %err, "retrying after a backoff");
                let delay = backoff::exponential(attempt, BACKOFF_BASE, Duration::from_secs(10));
                tokio::time::sleep(backoff::with_jitter(delay)).await;
                attempt += 1;
            }
            Err(err) => return Err(api_error(err)),
        }
    }
}
