//! The task that sends records to Kinesis: it takes the records of each submitted batch, asks
//! the [`Scheduler`] which may go next, keeps up to `max_concurrent_calls` PutRecords calls in
//! flight, retries rejected records after a backoff, and resolves a batch's delivery once all
//! its records are accepted.
//!
//! Errors: throttling and service failures are retried (per record, with exponential backoff
//! and jitter) until `retry_timeout_ms`; then, or on an error that retrying cannot fix (stream
//! missing, access denied, a record the service refuses), every open delivery fails with the
//! error and the worker stops. Nothing is acknowledged that Kinesis did not accept.
//!
//! Reshards: aggregates are grouped by a shard map that lags a split or merge. KCL discards a
//! whole aggregate if one of its records hashes outside the range of the shard it was read
//! from, so an aggregate counts as accepted only when it landed on the shard predicted for it,
//! or on a shard whose range holds every record in it. Otherwise its records are sent again,
//! like rejected ones (same place in their key's order, same backoff), and the map is reloaded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_kinesis::Client;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::aggregate::aggregate;
use super::client::{call_failure, CallFailure};
use super::config::StreamRef;
use super::error::{classify, CodeClass, KinesisSinkError};
use super::scheduler::{CallLimits, Entry, Record, Scheduler};
use super::shards::{Pacer, ShardMap};
use crate::telemetry::PipelineProbe;

/// The records of one batch and where to report its outcome.
pub struct Submission {
    pub batch: u64,
    pub records: Vec<Record>,
    pub done: oneshot::Sender<Result<(), KinesisSinkError>>,
}

/// Counters for logs and benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    pub calls: AtomicU64,
    /// Kinesis records sent (an aggregate counts once), retries included.
    pub records_sent: AtomicU64,
    /// Events accepted.
    pub events_accepted: AtomicU64,
    /// Records that were rejected and sent again.
    pub retried: AtomicU64,
    /// Aggregates sent again because they landed on a shard whose range does not hold all
    /// their records (the stream was resharded since the shard map was loaded).
    pub misrouted: AtomicU64,
    /// The pipeline's probe, once the pipeline gave it ([`crate::sink::Sink::observe`]).
    pub probe: OnceLock<Arc<PipelineProbe>>,
}

impl Stats {
    /// `count` records sent again for `reason` (rejected, call_failed, misrouted).
    fn retrying(&self, reason: &str, count: u64) {
        if let Some(probe) = self.probe.get() {
            probe.sink_retries(reason, count);
        }
    }
}

pub struct WorkerSettings {
    pub stream: StreamRef,
    pub region: String,
    pub limits: CallLimits,
    pub linger: Duration,
    pub max_concurrent_calls: usize,
    pub aggregation: bool,
    pub pacing: bool,
    pub retry_timeout: Duration,
}

const RETRY_BASE: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How often the shard map is reloaded when aggregation or pacing use it.
const SHARD_MAP_MAX_AGE: Duration = Duration::from_secs(60);

/// How one Kinesis record of a call fared.
enum Outcome {
    Accepted { shard_id: String },
    Retry(String),
    Refused { code: String, message: String },
}

struct CallResult {
    entries: Vec<Entry>,
    /// The shard id each entry was meant for (ids: the map may be reloaded meanwhile).
    predicted_shards: Vec<Option<String>>,
    outcome: Result<Vec<Outcome>, CallFailure>,
}

pub struct Worker {
    client: Client,
    settings: WorkerSettings,
    scheduler: Scheduler,
    shards: ShardMap,
    shards_loaded: Instant,
    pacer: Pacer,
    waiters: HashMap<u64, oneshot::Sender<Result<(), KinesisSinkError>>>,
    in_flight: JoinSet<CallResult>,
    stats: Arc<Stats>,
    /// Why the worker stopped, for `submit` calls that come after.
    failure: Arc<Mutex<Option<KinesisSinkError>>>,
}

impl Worker {
    pub fn new(
        client: Client,
        settings: WorkerSettings,
        shards: ShardMap,
        stats: Arc<Stats>,
        failure: Arc<Mutex<Option<KinesisSinkError>>>,
    ) -> Self {
        let scheduler = Scheduler::new(RETRY_BASE, RETRY_MAX, settings.retry_timeout);
        Worker {
            client,
            settings,
            scheduler,
            shards,
            shards_loaded: Instant::now(),
            pacer: Pacer::default(),
            waiters: HashMap::new(),
            in_flight: JoinSet::new(),
            stats,
            failure,
        }
    }

    pub async fn run(mut self, mut submissions: mpsc::Receiver<Submission>) {
        let mut closed = false;
        let mut linger_until: Option<Instant> = None;
        loop {
            let mut wake = None;
            let now = Instant::now();
            while self.in_flight.len() < self.settings.max_concurrent_calls
                && self.scheduler.waiting() > 0
            {
                let lingering = linger_until.is_some_and(|until| until > now)
                    && self.scheduler.waiting() < self.settings.limits.records
                    && !closed;
                if lingering {
                    wake = linger_until;
                    break;
                }
                let (entries, backoff) = self.next_call(now.into_std());
                wake = min_instant(wake, backoff.map(Instant::from_std));
                if entries.is_empty() {
                    break;
                }
                linger_until = None;
                self.launch(entries, now);
            }
            if closed && self.scheduler.is_empty() && self.in_flight.is_empty() {
                self.log_summary();
                return;
            }
            tokio::select! {
                submission = submissions.recv(), if !closed => match submission {
                    Some(s) => {
                        // Every batch already queued joins the next calls: no wait needed.
                        self.accept(s);
                        while let Ok(s) = submissions.try_recv() {
                            self.accept(s);
                        }
                        linger_until.get_or_insert(Instant::now() + self.settings.linger);
                    }
                    None => closed = true,
                },
                Some(joined) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    let result = joined.expect("a PutRecords task does not panic");
                    if let Err(err) = self.complete(result).await {
                        self.fail_all(err);
                        return;
                    }
                }
                _ = sleep_until(wake), if wake.is_some() => {}
            }
        }
    }

    fn accept(&mut self, submission: Submission) {
        self.waiters.insert(submission.batch, submission.done);
        self.scheduler.push(submission.batch, submission.records);
    }

    fn next_call(&mut self, now: std::time::Instant) -> (Vec<Entry>, Option<std::time::Instant>) {
        let shards = &self.shards;
        let shard_of = |key: &str| shards.shard_of(key);
        let grouping: Option<&dyn Fn(&str) -> usize> =
            self.settings.aggregation.then_some(&shard_of);
        self.scheduler
            .next_call(now, self.settings.limits, grouping)
    }

    /// Builds the request for `entries` and starts it (after the pacing delay, if any).
    fn launch(&mut self, entries: Vec<Entry>, now: Instant) {
        let mut request = Vec::with_capacity(entries.len());
        let mut predicted_shards = Vec::with_capacity(entries.len());
        let mut usage: HashMap<usize, (u32, usize)> = HashMap::new();
        for entry in &entries {
            let first = self.scheduler.record(entry[0]);
            let key = first.partition_key.clone();
            let data = if entry.len() == 1 {
                first.data.clone()
            } else {
                aggregate(entry.iter().map(|seq| {
                    let r = self.scheduler.record(*seq);
                    (r.partition_key.as_str(), r.data.as_slice())
                }))
            };
            let shard = (!self.shards.is_empty()).then(|| self.shards.shard_of(&key));
            if let Some(shard) = shard {
                let use_ = usage.entry(shard).or_default();
                use_.0 += 1;
                use_.1 += data.len() + key.len();
            }
            predicted_shards.push(
                shard
                    .and_then(|s| self.shards.shard_id(s))
                    .map(str::to_owned),
            );
            request.push(
                PutRecordsRequestEntry::builder()
                    .partition_key(key)
                    .data(Blob::new(data))
                    .build()
                    .expect("partition key and data are set"),
            );
        }
        let start = if self.settings.pacing {
            Instant::from_std(self.pacer.reserve(&usage, now.into_std()))
        } else {
            now
        };
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        self.stats
            .records_sent
            .fetch_add(request.len() as u64, Ordering::Relaxed);
        let (client, stream, region) = (
            self.client.clone(),
            self.settings.stream.clone(),
            self.settings.region.clone(),
        );
        self.in_flight.spawn(async move {
            tokio::time::sleep_until(start).await;
            let outcome = put_records(&client, &stream, &region, request).await;
            CallResult {
                entries,
                predicted_shards,
                outcome,
            }
        });
    }

    /// Applies a call's outcome. An error means the sink must stop.
    async fn complete(&mut self, result: CallResult) -> Result<(), KinesisSinkError> {
        let now = std::time::Instant::now();
        let outcomes = match result.outcome {
            Err(CallFailure::Stop(err)) => return Err(err),
            Err(CallFailure::Retry(reason)) => {
                tracing::warn!(stream = %self.settings.stream.display_name(), records = result.entries.len(), reason = %reason, "PutRecords failed; retrying after a backoff");
                self.stats
                    .retrying("call_failed", result.entries.len() as u64);
                for seq in result.entries.iter().flatten() {
                    self.retry(*seq, &reason, now)?;
                }
                return Ok(());
            }
            Ok(outcomes) => outcomes,
        };
        let mut shard_map_stale = false;
        let mut retried = 0;
        let mut reloaded = false;
        for ((entry, outcome), predicted) in result
            .entries
            .iter()
            .zip(outcomes)
            .zip(result.predicted_shards)
        {
            match outcome {
                Outcome::Accepted { shard_id } => {
                    if predicted.as_deref() != Some(shard_id.as_str()) {
                        shard_map_stale = true;
                        if entry.len() > 1 && !self.holds_all(&shard_id, entry, &mut reloaded).await
                        {
                            self.stats.misrouted.fetch_add(1, Ordering::Relaxed);
                            self.stats.retrying("misrouted", 1);
                            let reason = format!("the aggregate landed on shard {shard_id}, whose hash-key range does not hold all its records (the stream was resharded); a KCL consumer discards it");
                            for seq in entry {
                                self.retry(*seq, &reason, now)?;
                            }
                            continue;
                        }
                    }
                    self.stats
                        .events_accepted
                        .fetch_add(entry.len() as u64, Ordering::Relaxed);
                    for seq in entry {
                        if let Some(batch) = self.scheduler.accepted(*seq) {
                            if let Some(done) = self.waiters.remove(&batch) {
                                let _ = done.send(Ok(()));
                            }
                        }
                    }
                }
                Outcome::Retry(reason) => {
                    retried += 1;
                    for seq in entry {
                        self.retry(*seq, &reason, now)?;
                    }
                }
                Outcome::Refused { code, message } => {
                    let record = self.scheduler.record(entry[0]);
                    let stream = self.settings.stream.display_name().to_owned();
                    return Err(match classify(&code) {
                        CodeClass::AccessDenied => KinesisSinkError::AccessDenied {
                            stream,
                            code,
                            message,
                        },
                        _ => KinesisSinkError::RecordRejected {
                            stream,
                            table: record.table.clone(),
                            position: record.position.clone(),
                            code,
                            message,
                        },
                    });
                }
            }
        }
        if retried > 0 {
            self.stats.retried.fetch_add(retried, Ordering::Relaxed);
            self.stats.retrying("rejected", retried);
            tracing::debug!(stream = %self.settings.stream.display_name(), retried, "records rejected by PutRecords; retrying them in order");
        }
        let stale_by_age = self.shards_loaded.elapsed() > SHARD_MAP_MAX_AGE;
        if (self.settings.aggregation || self.settings.pacing)
            && !reloaded
            && (shard_map_stale || stale_by_age)
        {
            self.reload_shards().await;
        }
        Ok(())
    }

    /// Whether shard `shard_id` holds the keys of every record of `entry`. A shard the map
    /// does not know is looked up in a reloaded map (once per call: `reloaded`); if it is still
    /// unknown, the answer is no, so the records are sent again rather than maybe lost.
    async fn holds_all(&mut self, shard_id: &str, entry: &Entry, reloaded: &mut bool) -> bool {
        loop {
            let keys = entry
                .iter()
                .map(|seq| self.scheduler.record(*seq).partition_key.as_str());
            match self.shards.holds_all(shard_id, keys) {
                Some(holds) => return holds,
                None if *reloaded => return false,
                None => {
                    *reloaded = true;
                    self.reload_shards().await;
                }
            }
        }
    }

    fn retry(
        &mut self,
        seq: u64,
        reason: &str,
        now: std::time::Instant,
    ) -> Result<(), KinesisSinkError> {
        self.scheduler
            .rejected(seq, now)
            .map_err(|exhausted| KinesisSinkError::RetriesExhausted {
                table: exhausted.record.table,
                position: exhausted.record.position,
                attempts: exhausted.attempts,
                seconds: exhausted.failing_for.as_secs(),
                last_error: reason.to_owned(),
            })
    }

    async fn reload_shards(&mut self) {
        self.shards_loaded = Instant::now();
        match ShardMap::load(&self.client, &self.settings.stream).await {
            Ok(map) if !map.is_empty() => {
                if map.len() != self.shards.len() {
                    tracing::info!(stream = %self.settings.stream.display_name(), shards = map.len(), "the stream's open shards changed; reloaded the shard map");
                }
                tracing::debug!(stream = %self.settings.stream.display_name(), shards = map.len(), "reloaded the shard map");
                self.shards = map;
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(stream = %self.settings.stream.display_name(), error = %aws_sdk_kinesis::error::DisplayErrorContext(&err), "cannot reload the shard map; keeping the old one")
            }
        }
    }

    fn log_summary(&self) {
        let calls = self.stats.calls.load(Ordering::Relaxed);
        let records = self.stats.records_sent.load(Ordering::Relaxed);
        tracing::info!(
            stream = %self.settings.stream.display_name(),
            calls,
            records,
            events = self.stats.events_accepted.load(Ordering::Relaxed),
            retried = self.stats.retried.load(Ordering::Relaxed),
            misrouted = self.stats.misrouted.load(Ordering::Relaxed),
            records_per_call = format_args!("{:.1}", records as f64 / calls.max(1) as f64),
            "Kinesis sink finished"
        );
    }

    fn fail_all(&mut self, err: KinesisSinkError) {
        tracing::error!(stream = %self.settings.stream.display_name(), error = %err, "Kinesis sink stopped");
        for (_, done) in self.waiters.drain() {
            let _ = done.send(Err(err.clone()));
        }
        *self.failure.lock().expect("not poisoned") = Some(err);
        self.in_flight.abort_all();
    }
}

async fn put_records(
    client: &Client,
    stream: &StreamRef,
    region: &str,
    entries: Vec<PutRecordsRequestEntry>,
) -> Result<Vec<Outcome>, CallFailure> {
    let count = entries.len();
    let request = client.put_records().set_records(Some(entries));
    let request = match stream {
        StreamRef::Name(name) => request.stream_name(name),
        StreamRef::Arn { arn, .. } => request.stream_arn(arn),
    };
    let output = request
        .send()
        .await
        .map_err(|err| call_failure(&err, stream.display_name(), region))?;
    if output.records().len() != count {
        return Err(CallFailure::Retry(format!(
            "PutRecords answered for {} of {count} records",
            output.records().len()
        )));
    }
    Ok(output
        .records()
        .iter()
        .map(|r| match (r.error_code(), r.shard_id()) {
            (None, Some(shard_id)) => Outcome::Accepted {
                shard_id: shard_id.to_owned(),
            },
            (None, None) => Outcome::Retry("a record without an error code nor a shard".into()),
            (Some(code), _) => {
                let message = r.error_message().unwrap_or_default().to_owned();
                match classify(code) {
                    CodeClass::Retry => Outcome::Retry(format!("{code}: {message}")),
                    _ => Outcome::Refused {
                        code: code.to_owned(),
                        message,
                    },
                }
            }
        })
        .collect())
}

fn min_instant(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
