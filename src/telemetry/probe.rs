//! One pipeline's probe: its metric handles and the facts its readers ask for.
//!
//! Writers: the supervisor (state, restarts), the driver (events read and delivered, batch
//! latencies, the oldest change not yet acknowledged), the checkpoint writer (commit latency,
//! stored positions), the source's emitter (backpressure waits) and the connectors (snapshot
//! progress, heartbeats, what the server retains, sink retries). Counters are atomics; the
//! facts behind a lock are written at most once per batch or per table.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::{Histogram, IntCounter};
use tokio::sync::Semaphore;

use super::status::{LeaseStatus, PipelineStatus, SnapshotStatus, TableStatus};
use super::{Families, TerminalProgress};
use crate::checkpoint::Checkpoints;
use crate::envelope::Op;

/// How often a running snapshot logs its progress.
const SNAPSHOT_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Where a pipeline is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineState {
    /// Connecting, or reading its first changes.
    Starting,
    Snapshotting,
    Streaming,
    /// A run failed transiently; the next starts after a backoff.
    BackingOff,
    /// Failed for good: the operator has to fix the cause.
    Stopped,
    /// Ended on its own (a source with an end, `initial_only`) or by shutdown.
    Finished,
    /// Run by another instance sharing the store (this one holds no lease on it).
    Standby,
}

impl PipelineState {
    pub const ALL: [PipelineState; 7] = [
        PipelineState::Starting,
        PipelineState::Snapshotting,
        PipelineState::Streaming,
        PipelineState::BackingOff,
        PipelineState::Stopped,
        PipelineState::Finished,
        PipelineState::Standby,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PipelineState::Starting => "starting",
            PipelineState::Snapshotting => "snapshotting",
            PipelineState::Streaming => "streaming",
            PipelineState::BackingOff => "backing_off",
            PipelineState::Stopped => "stopped",
            PipelineState::Finished => "finished",
            PipelineState::Standby => "standby",
        }
    }
}

/// A state, since when, and the error that led to it.
#[derive(Debug, Clone)]
struct StateRecord {
    state: PipelineState,
    since_ms: i64,
    error: Option<String>,
}

impl StateRecord {
    /// Entered now.
    fn new(state: PipelineState, error: Option<String>) -> Self {
        StateRecord {
            state,
            since_ms: unix_ms(),
            error,
        }
    }
}

/// Snapshot progress of one table.
#[derive(Debug, Clone)]
pub struct SnapshotTable {
    pub copied: u64,
    pub estimated: Option<u64>,
    pub started: Option<Instant>,
    pub finished: bool,
}

impl SnapshotTable {
    fn new(estimated: Option<u64>) -> Self {
        SnapshotTable {
            copied: 0,
            estimated,
            started: None,
            finished: false,
        }
    }
}

#[derive(Default)]
struct Snapshot {
    tables: BTreeMap<String, SnapshotTable>,
    last_log: Option<Instant>,
}

/// The pipeline's memory budget, read when the probe is refreshed.
struct Budget {
    semaphore: Arc<Semaphore>,
    total: usize,
}

pub struct PipelineProbe {
    pub(super) name: Arc<str>,
    families: Arc<Families>,
    /// Whether events and batches are counted (see [`super::Telemetry::without_metrics`]).
    counting: bool,
    terminal: Option<Arc<TerminalProgress>>,
    state: Mutex<StateRecord>,
    /// Unix milliseconds; 0 for never.
    last_event_ms: AtomicI64,
    last_heartbeat_ms: AtomicI64,
    /// Commit time of the oldest change read and not acknowledged; 0 for none.
    oldest_pending_commit_ms: AtomicI64,
    /// -1 until the source measured it.
    lag_bytes: AtomicI64,
    stored: Mutex<Checkpoints>,
    snapshot: Mutex<Snapshot>,
    budget: Mutex<Option<Budget>>,
    lease: Mutex<Option<LeaseStatus>>,
    read: [IntCounter; 5],
    delivered: [IntCounter; 5],
    batches: IntCounter,
    batch_seconds: Histogram,
    end_to_end_seconds: Histogram,
    checkpoint_seconds: Histogram,
    backpressure_seconds: Histogram,
}

impl std::fmt::Debug for PipelineProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineProbe")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn op_index(op: Op) -> usize {
    match op {
        Op::Insert => 0,
        Op::Update => 1,
        Op::Delete => 2,
        Op::Snapshot => 3,
        Op::Truncate => 4,
    }
}

const OPS: [Op; 5] = [
    Op::Insert,
    Op::Update,
    Op::Delete,
    Op::Snapshot,
    Op::Truncate,
];

impl PipelineProbe {
    pub(super) fn new(
        name: Arc<str>,
        families: Arc<Families>,
        counting: bool,
        terminal: Option<Arc<TerminalProgress>>,
    ) -> Self {
        let per_op = |family: &prometheus::IntCounterVec| {
            OPS.map(|op| family.with_label_values(&[&*name, op.as_str()]))
        };
        let one = [&*name];
        PipelineProbe {
            read: per_op(&families.events_read),
            delivered: per_op(&families.events_delivered),
            batches: families.batches_delivered.with_label_values(&one),
            batch_seconds: families.batch_delivery_seconds.with_label_values(&one),
            end_to_end_seconds: families.end_to_end_seconds.with_label_values(&one),
            checkpoint_seconds: families.checkpoint_commit_seconds.with_label_values(&one),
            backpressure_seconds: families.backpressure_wait_seconds.with_label_values(&one),
            state: Mutex::new(StateRecord::new(PipelineState::Starting, None)),
            last_event_ms: AtomicI64::new(0),
            last_heartbeat_ms: AtomicI64::new(0),
            oldest_pending_commit_ms: AtomicI64::new(0),
            lag_bytes: AtomicI64::new(-1),
            stored: Mutex::default(),
            snapshot: Mutex::default(),
            budget: Mutex::new(None),
            lease: Mutex::new(None),
            families,
            name,
            counting,
            terminal,
        }
    }

    /// A probe that counts nothing, for pipelines run without a daemon (tests, tools).
    pub fn detached(name: &str) -> Arc<Self> {
        super::Telemetry::without_metrics().probe(name)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    // ---- state ----

    pub fn state(&self) -> PipelineState {
        self.state.lock().expect("not poisoned").state
    }

    fn set_state(&self, state: PipelineState, error: Option<String>) {
        let mut record = self.state.lock().expect("not poisoned");
        if record.state != state || error.is_some() {
            *record = StateRecord::new(state, error);
        }
    }

    /// A new run is connecting.
    pub fn starting(&self) {
        self.set_state(PipelineState::Starting, None);
    }

    /// The source began copying its tables.
    pub fn snapshotting(&self) {
        self.set_state(PipelineState::Snapshotting, None);
    }

    /// The source streams changes (or, for a source that does not say, handed over its first).
    pub fn streaming(&self) {
        self.set_state(PipelineState::Streaming, None);
    }

    /// The driver took the run's first item: a source that does not report its phase is
    /// streaming from now on.
    pub(crate) fn first_item(&self) {
        let mut record = self.state.lock().expect("not poisoned");
        if record.state == PipelineState::Starting {
            *record = StateRecord::new(PipelineState::Streaming, None);
        }
    }

    /// A run failed with an error of `disposition`; `restarting` when it backs off and runs
    /// again, else the pipeline stopped for good.
    pub fn failed(&self, error: String, disposition: &'static str, restarting: bool) {
        self.families
            .run_failures
            .with_label_values(&[&*self.name, disposition])
            .inc();
        let state = if restarting {
            PipelineState::BackingOff
        } else {
            PipelineState::Stopped
        };
        self.set_state(state, Some(error));
    }

    /// The pipeline ended on its own or by shutdown.
    pub fn finished(&self) {
        self.set_state(PipelineState::Finished, None);
    }

    // ---- leases (shared stores) ----

    /// Another instance holds the pipeline's lease (`holder`, `None` when nobody does yet).
    pub fn standby(&self, holder: Option<&str>, epoch: u64) {
        self.set_lease(holder, epoch, false);
        self.set_state(PipelineState::Standby, None);
    }

    /// This instance took the lease as `instance` at `epoch` and starts the pipeline.
    pub fn lease_acquired(&self, instance: &str, epoch: u64) {
        self.families
            .lease_acquired
            .with_label_values(&[&*self.name])
            .inc();
        self.set_lease(Some(instance), epoch, true);
    }

    /// This instance lost the lease (taken over, or not renewed in time).
    pub fn lease_lost(&self) {
        self.families
            .lease_lost
            .with_label_values(&[&*self.name])
            .inc();
        if let Some(lease) = self.lease.lock().expect("not poisoned").as_mut() {
            lease.held_here = false;
        }
        self.families
            .lease_held
            .with_label_values(&[&*self.name])
            .set(0);
    }

    /// A pipeline spread by partition: this instance took one partition's lease.
    pub fn partition_lease_acquired(&self) {
        self.families
            .lease_acquired
            .with_label_values(&[&*self.name])
            .inc();
    }

    /// A pipeline spread by partition: this instance lost one partition's lease.
    pub fn partition_lease_lost(&self) {
        self.families
            .lease_lost
            .with_label_values(&[&*self.name])
            .inc();
    }

    /// A pipeline spread by partition: this instance (`instance`) holds these partitions.
    pub fn partitions_held(&self, instance: &str, partitions: Vec<String>) {
        let held = partitions.len();
        let status = LeaseStatus {
            holder: Some(instance.to_owned()),
            epoch: 0,
            held_here: held > 0,
            partitions: Some(partitions),
        };
        *self.lease.lock().expect("not poisoned") = Some(status);
        self.families
            .lease_held
            .with_label_values(&[&*self.name])
            .set(held as i64);
    }

    fn set_lease(&self, holder: Option<&str>, epoch: u64, held_here: bool) {
        let status = LeaseStatus {
            holder: holder.map(str::to_owned),
            epoch,
            held_here,
            partitions: None,
        };
        *self.lease.lock().expect("not poisoned") = Some(status);
        self.families
            .lease_held
            .with_label_values(&[&*self.name])
            .set(i64::from(held_here));
    }

    // ---- the driver ----

    /// Whether events and batches are counted.
    pub(crate) fn counting(&self) -> bool {
        self.counting
    }

    /// A batch of these events was taken from the source.
    pub(crate) fn read_batch(&self, ops: &OpCounts) {
        ops.add_to(&self.read);
    }

    /// Marks that the pipeline took events from its source just now.
    pub(crate) fn took_events(&self) {
        if self.counting {
            self.last_event_ms.store(unix_ms(), Ordering::Relaxed);
        }
    }

    /// A batch was acknowledged: its events by operation, how long the sink took, and the
    /// commit time of its earliest change.
    pub(crate) fn delivered(&self, ops: &OpCounts, took: Duration, earliest_commit_ms: i64) {
        if !self.counting {
            return;
        }
        ops.add_to(&self.delivered);
        self.batches.inc();
        self.batch_seconds.observe(took.as_secs_f64());
        if earliest_commit_ms > 0 {
            let age_ms = (unix_ms() - earliest_commit_ms).max(0);
            self.end_to_end_seconds.observe(age_ms as f64 / 1000.0);
        }
    }

    /// The commit time of the oldest change read and not acknowledged (0: none).
    pub(crate) fn set_oldest_pending_commit(&self, commit_ms: i64) {
        self.oldest_pending_commit_ms
            .store(commit_ms, Ordering::Relaxed);
    }

    pub(crate) fn watch_budget(&self, semaphore: Arc<Semaphore>, total: usize) {
        *self.budget.lock().expect("not poisoned") = Some(Budget { semaphore, total });
    }

    /// The source waited this long for room in the pipeline.
    pub(crate) fn backpressure_waited(&self, waited: Duration) {
        self.backpressure_seconds.observe(waited.as_secs_f64());
    }

    // ---- the checkpoint writer ----

    pub(crate) fn checkpoint_stored(&self, took: Duration, stored: &Checkpoints) {
        self.checkpoint_seconds.observe(took.as_secs_f64());
        self.set_stored(stored);
    }

    /// The positions stored (at the start of a run: those it resumes after).
    pub(crate) fn set_stored(&self, stored: &Checkpoints) {
        self.stored.lock().expect("not poisoned").clone_from(stored);
    }

    // ---- connectors ----

    /// The source heard from its server without a change (keepalive, heartbeat, empty read).
    pub fn heartbeat(&self) {
        self.last_heartbeat_ms.store(unix_ms(), Ordering::Relaxed);
    }

    /// What the server has written past the pipeline's stored position, and what it keeps
    /// for the pipeline (both in bytes), and its retention status where it has one.
    pub fn source_retention(&self, lag_bytes: i64, retained_bytes: i64, wal_status: Option<&str>) {
        self.source_lag(lag_bytes);
        self.families
            .source_retained_bytes
            .with_label_values(&[&*self.name])
            .set(retained_bytes);
        if let Some(current) = wal_status {
            for status in ["reserved", "extended", "unreserved", "lost"] {
                self.families
                    .source_wal_status
                    .with_label_values(&[&*self.name, status])
                    .set(i64::from(status == current));
            }
        }
    }

    /// What the server has written past the pipeline's stored position, in bytes (for a
    /// server that keeps nothing for the pipeline, such as a binlog).
    pub fn source_lag(&self, lag_bytes: i64) {
        self.lag_bytes.store(lag_bytes, Ordering::Relaxed);
        self.families
            .source_lag_bytes
            .with_label_values(&[&*self.name])
            .set(lag_bytes);
    }

    /// The age of the last record read from `partition` when it was read.
    pub fn partition_record_age(&self, partition: &str, age: Duration) {
        self.families
            .partition_age_seconds
            .with_label_values(&[&*self.name, partition])
            .set(age.as_secs_f64());
    }

    /// A partition that ended (a closed shard): its series goes away.
    pub fn partition_ended(&self, partition: &str) {
        let _ = self
            .families
            .partition_age_seconds
            .remove_label_values(&[&*self.name, partition]);
    }

    /// The sink sent `count` records again, for `reason`.
    pub fn sink_retries(&self, reason: &str, count: u64) {
        self.families
            .sink_retries
            .with_label_values(&[&*self.name, reason])
            .inc_by(count);
    }

    /// The counter of records whose delivery failed (resolved once: a sink counts into it on
    /// its delivery thread, record by record).
    pub fn delivery_errors(&self) -> IntCounter {
        self.families
            .sink_delivery_errors
            .with_label_values(&[&*self.name])
    }

    /// An event over the sink's size limit, handled by `policy`.
    pub fn oversize_event(&self, policy: &str) {
        self.families
            .oversize_events
            .with_label_values(&[&*self.name, policy])
            .inc();
    }

    // ---- snapshots ----

    /// A snapshot of `tables` (name and the server's row estimate) begins.
    pub fn snapshot_started(&self, tables: &[(String, Option<u64>)]) {
        if let Some(terminal) = &self.terminal {
            terminal.started(&self.name, tables);
        }
        let mut snapshot = self.snapshot.lock().expect("not poisoned");
        snapshot.tables.clear();
        for (table, estimated) in tables {
            self.families
                .snapshot_rows_estimated
                .with_label_values(&[&*self.name, table])
                .set(estimated.map_or(-1, |n| n as i64));
            snapshot
                .tables
                .insert(table.clone(), SnapshotTable::new(*estimated));
        }
        self.families
            .snapshot_tables_remaining
            .with_label_values(&[&*self.name])
            .set(tables.len() as i64);
        snapshot.last_log = Some(Instant::now());
    }

    /// `rows` more rows of `table` were copied; logs the progress every few seconds.
    pub fn snapshot_rows(&self, table: &str, rows: u64) {
        self.families
            .snapshot_rows_copied
            .with_label_values(&[&*self.name, table])
            .inc_by(rows);
        if let Some(terminal) = &self.terminal {
            terminal.copied(&self.name, table, rows);
        }
        let due = {
            let mut snapshot = self.snapshot.lock().expect("not poisoned");
            if !snapshot.tables.contains_key(table) {
                snapshot
                    .tables
                    .insert(table.to_owned(), SnapshotTable::new(None));
            }
            let progress = snapshot.tables.get_mut(table).expect("just ensured");
            progress.started.get_or_insert_with(Instant::now);
            progress.copied += rows;
            let progress = progress.clone();
            let due = snapshot
                .last_log
                .is_none_or(|last| last.elapsed() >= SNAPSHOT_LOG_INTERVAL);
            if due {
                snapshot.last_log = Some(Instant::now());
            }
            due.then_some(progress)
        };
        // Logged outside the lock: the log may write through the progress bars.
        if let Some(progress) = due {
            log_table_progress(&self.name, table, &progress);
        }
    }

    /// Every row of `table` was copied.
    pub fn snapshot_table_done(&self, table: &str) {
        if let Some(terminal) = &self.terminal {
            terminal.finished(&self.name, table);
        }
        let (progress, remaining) = {
            let mut snapshot = self.snapshot.lock().expect("not poisoned");
            let progress = snapshot.tables.get_mut(table).map(|progress| {
                progress.finished = true;
                progress.clone()
            });
            let remaining = snapshot.tables.values().filter(|t| !t.finished).count();
            (progress, remaining)
        };
        if let Some(progress) = progress {
            log_table_progress(&self.name, table, &progress);
        }
        self.families
            .snapshot_tables_remaining
            .with_label_values(&[&*self.name])
            .set(remaining as i64);
    }

    // ---- readers ----

    pub(super) fn refresh(&self) {
        let now = unix_ms();
        let one = [&*self.name];
        let current = self.state();
        for state in PipelineState::ALL {
            self.families
                .state
                .with_label_values(&[&*self.name, state.as_str()])
                .set(i64::from(state == current));
        }
        self.families
            .lag_seconds
            .with_label_values(&one)
            .set(self.lag_seconds(now));
        let since = |at: &AtomicI64| match at.load(Ordering::Relaxed) {
            0 => -1.0,
            at => (now - at).max(0) as f64 / 1000.0,
        };
        self.families
            .seconds_since_last_event
            .with_label_values(&one)
            .set(since(&self.last_event_ms));
        self.families
            .seconds_since_last_heartbeat
            .with_label_values(&one)
            .set(since(&self.last_heartbeat_ms));
        if let Some(budget) = &*self.budget.lock().expect("not poisoned") {
            let held = budget
                .total
                .saturating_sub(budget.semaphore.available_permits());
            self.families
                .buffer_bytes
                .with_label_values(&one)
                .set(held as i64);
        }
    }

    fn lag_seconds(&self, now_ms: i64) -> f64 {
        match self.oldest_pending_commit_ms.load(Ordering::Relaxed) {
            0 => 0.0,
            commit => (now_ms - commit).max(0) as f64 / 1000.0,
        }
    }

    pub(super) fn status(&self) -> PipelineStatus {
        let now = unix_ms();
        let record = self.state.lock().expect("not poisoned").clone();
        let stored = self
            .stored
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(partition, position)| (partition.clone(), position.token.clone()))
            .collect();
        let snapshot = self.snapshot.lock().expect("not poisoned");
        let snapshot = (!snapshot.tables.is_empty()).then(|| SnapshotStatus {
            tables_remaining: snapshot.tables.values().filter(|t| !t.finished).count(),
            tables: snapshot
                .tables
                .iter()
                .map(|(name, t)| TableStatus::of(name, t))
                .collect(),
        });
        let last_event_ms = self.last_event_ms.load(Ordering::Relaxed);
        let lag_bytes = self.lag_bytes.load(Ordering::Relaxed);
        PipelineStatus {
            pipeline: self.name.to_string(),
            state: record.state.as_str().to_owned(),
            since_unix_ms: record.since_ms,
            error: record.error,
            stored,
            lag_seconds: self.lag_seconds(now),
            lag_bytes: (lag_bytes >= 0).then_some(lag_bytes),
            seconds_since_last_event: (last_event_ms > 0)
                .then(|| (now - last_event_ms).max(0) as f64 / 1000.0),
            events_read: self.read.iter().map(IntCounter::get).sum(),
            events_delivered: self.delivered.iter().map(IntCounter::get).sum(),
            snapshot,
            lease: self.lease.lock().expect("not poisoned").clone(),
        }
    }
}

fn log_table_progress(pipeline: &str, table: &str, progress: &SnapshotTable) {
    let status = TableStatus::of(table, progress);
    tracing::info!(
        pipeline,
        table,
        rows = status.rows_copied,
        estimated = ?status.rows_estimated,
        rows_per_second = status.rows_per_second.round(),
        eta_seconds = ?status.eta_seconds.map(f64::round),
        done = status.finished,
        "snapshot progress"
    );
}

/// Events of a batch by operation.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OpCounts([u64; 5]);

impl OpCounts {
    pub fn add(&mut self, op: Op) {
        self.0[op_index(op)] += 1;
    }

    /// Adds each operation's count to its counter (ordered as [`OPS`]).
    fn add_to(&self, counters: &[IntCounter; 5]) {
        for (count, counter) in self.0.iter().zip(counters) {
            if *count > 0 {
                counter.inc_by(*count);
            }
        }
    }
}
