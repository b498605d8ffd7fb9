//! The pipeline runtime: source -> bounded queue -> batches -> sink -> acknowledgements ->
//! commit tracker -> checkpoint store -> stored positions back to the source.
//!
//! The source runs in its own task and emits into a queue bounded in events
//! ([`source::channel`]); every event also holds a share of a byte budget until its batch is
//! acknowledged, so memory stays bounded whatever the source reads (backpressure: a full budget
//! makes the source wait). The driver takes what the queue holds at once, groups events into
//! batches by count, bytes and linger time (changes handed over together are cut at the batch
//! size, their budget divided), submits them to the sink in order, keeps at most
//! `max_in_flight` deliveries open, and feeds their outcomes to the [`CommitTracker`]. A batch's
//! budget is one merged permit, given back in one step.
//! A batch leaves once the source has been quiet for a millisecond and a delivery slot is free:
//! the linger (`linger_ms`) bounds the wait only while events keep arriving or every slot is
//! busy, so a quiet pipeline delivers each change at once and a busy one still sends full
//! batches.
//! Released checkpoints go to the [`checkpointer`], which commits them durably (coalescing
//! commits while an fsync runs) before it publishes them to the source as stored. A partition
//! the source forgot is released like a mark (after everything before it), then deleted.
//!
//! Errors: a failed delivery stops the run at once (its batch is never acknowledged) and is
//! returned as [`PipelineError::Sink`]; a failed source is returned after everything it emitted
//! was delivered and checkpointed. The caller (the daemon's supervisor) decides from the
//! error's disposition whether to restart.

mod checkpointer;
mod commit;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

use crate::checkpoint::{CheckpointError, Checkpoints, Store};
use crate::config::{BatchConfig, BufferConfig};
use crate::envelope::ChangeEvent;
use crate::error::{BoxError, Disposition};
use crate::shutdown::Shutdown;
use crate::sink::{Batch, Sink};
use crate::source::{self, Events, Item, Queue, Source, SourceContext};
use crate::telemetry::{OpCounts, PipelineProbe};
use checkpointer::Checkpointer;

pub use commit::{BatchId, CommitTracker, Marks};

/// After a failure, how long deliveries still in flight may take to finish (those that succeed
/// are checkpointed, so the restart repeats less).
const SALVAGE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the source must have sent nothing before a batch leaves ahead of its linger. A
/// source that is reading a backlog hands items over much faster than this, so its batches
/// fill; a quiet one pays about a millisecond (the timer's granularity) per change. Flushing
/// the moment the channel was empty instead cost a batch per change on a busy source whose
/// decoding is slower than the sink (half the Postgres source's throughput).
const QUIET_GAP: Duration = Duration::from_millis(1);

/// At most how many items the driver takes off the channel at a time.
const RECEIVE_AT_ONCE: usize = 256;

/// How often a running pipeline logs its progress.
const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The settings of one pipeline that the runtime uses.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub name: Arc<str>,
    pub batch: BatchConfig,
    pub buffer: BufferConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("source failed")]
    Source(#[source] BoxError),
    #[error("sink failed")]
    Sink(#[source] BoxError),
    #[error("{stage} task panicked: {message}")]
    Panic {
        stage: &'static str,
        message: String,
    },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

impl PipelineError {
    pub fn disposition(&self) -> Disposition {
        match self {
            PipelineError::Source(e) | PipelineError::Sink(e) => e.disposition(),
            PipelineError::Checkpoint(e) => e.disposition(),
            PipelineError::Panic { .. } => Disposition::Fatal,
        }
    }

    /// A commit was refused because another instance took the pipeline's lease over.
    pub fn is_fenced(&self) -> bool {
        matches!(
            self,
            PipelineError::Checkpoint(CheckpointError::Fenced { .. })
        )
    }

    fn panic(stage: &'static str, err: JoinError) -> Self {
        PipelineError::Panic {
            stage,
            message: err.to_string(),
        }
    }
}

/// What one run of a pipeline achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Events acknowledged by the sink during this run.
    pub events_delivered: u64,
    /// The positions stored when the run ended.
    pub stored: Checkpoints,
}

/// Runs the pipeline until the source is exhausted, shutdown is requested, or something fails.
pub async fn run(
    settings: &PipelineSettings,
    source: Box<dyn Source>,
    sink: Box<dyn Sink>,
    store: Arc<dyn Store>,
    shutdown: Shutdown,
) -> Result<RunSummary, PipelineError> {
    let probe = PipelineProbe::detached(&settings.name);
    run_observed(settings, source, sink, store, shutdown, probe).await
}

/// [`run`], counting into `probe` (the daemon's telemetry).
pub async fn run_observed(
    settings: &PipelineSettings,
    source: Box<dyn Source>,
    sink: Box<dyn Sink>,
    store: Arc<dyn Store>,
    shutdown: Shutdown,
    probe: Arc<PipelineProbe>,
) -> Result<RunSummary, PipelineError> {
    let mut sink = sink;
    sink.observe(probe.clone());
    // Nothing of an earlier run is pending any more.
    probe.set_oldest_pending_commit(0);
    let name = settings.name.clone();
    let resume = store.load(&name).await?;
    if resume.is_empty() {
        tracing::info!(pipeline = %name, "no stored checkpoint: starting from the beginning");
    } else {
        let positions: Vec<_> = resume
            .iter()
            .map(|(p, pos)| format!("{p}={}", pos.token))
            .collect();
        tracing::info!(pipeline = %name, positions = %positions.join(","), "resuming after the stored checkpoint");
    }

    let (emit, queue) = source::channel(
        settings.buffer.max_events.get(),
        settings.buffer.max_bytes.get(),
        probe.clone(),
    );
    probe.set_stored(&resume);
    let (stored_tx, stored_rx) = watch::channel(resume.clone());
    let ctx = SourceContext {
        pipeline: name.clone(),
        resume: resume.clone(),
        emit,
        stored: stored_rx,
        shutdown,
        probe: probe.clone(),
        leased: store.fence().is_some(),
        partitions: store.partition_leases(),
    };
    let source_task = tokio::spawn(source.run(ctx));

    let checkpointer = Checkpointer::start(name.clone(), store, stored_tx, probe.clone());
    let mut driver = Driver::new(settings, sink, checkpointer, resume, probe);
    let driven = driver.drive(queue).await;
    let Driver {
        checkpointer,
        released,
        events_delivered,
        ..
    } = driver;
    // Even after a failure, commit what was released before it: fewer duplicates on restart.
    let finished = checkpointer.finish().await;
    // A checkpoint failure outranks the driver's error (which may only report its symptom).
    if let Err(err) = finished.and(driven) {
        source_task.abort();
        // Ended before the supervisor records the failure: no late state from the source.
        let _ = source_task.await;
        return Err(err);
    }
    let summary = RunSummary {
        events_delivered,
        stored: released,
    };
    match source_task.await {
        Ok(Ok(())) => Ok(summary),
        Ok(Err(err)) => Err(PipelineError::Source(err)),
        Err(err) => Err(PipelineError::panic("source", err)),
    }
}

/// The batch being filled.
#[derive(Default)]
struct OpenBatch {
    events: Vec<ChangeEvent>,
    marks: Marks,
    /// The budget its events hold, merged into one permit (released in one step when the
    /// batch is acknowledged, not once per event).
    budget: Option<OwnedSemaphorePermit>,
    bytes: usize,
    /// Set by the batch's first item.
    timing: Option<BatchTiming>,
    ops: OpCounts,
    /// Commit time of its earliest change (Unix ms; 0 when no change carries one).
    earliest_commit_ms: i64,
}

impl OpenBatch {
    fn push(&mut self, event: ChangeEvent, probe: &PipelineProbe) {
        self.note(&event, probe);
        self.events.push(event);
    }

    fn note(&mut self, event: &ChangeEvent, probe: &PipelineProbe) {
        if !probe.counting() {
            return;
        }
        self.ops.add(event.op);
        if let Some(commit) = event.source.commit_ts_ms.filter(|ms| *ms > 0) {
            if self.earliest_commit_ms == 0 || commit < self.earliest_commit_ms {
                self.earliest_commit_ms = commit;
            }
        }
    }
}

/// What the telemetry needs of a batch handed to the sink.
struct Submitted {
    ops: OpCounts,
    at: Instant,
    earliest_commit_ms: i64,
}

#[derive(Clone, Copy)]
struct BatchTiming {
    /// The batch leaves by then, whatever keeps arriving.
    linger_end: Instant,
    /// When its latest item arrived.
    last_arrival: Instant,
}

type DeliveryOutcome = (BatchId, usize, Result<(), BoxError>);

/// Earliest commit time over the open batch and the batches in flight (0: none).
fn earliest(times: impl IntoIterator<Item = i64>) -> i64 {
    times.into_iter().filter(|ms| *ms > 0).min().unwrap_or(0)
}

struct Driver {
    name: Arc<str>,
    batch: BatchConfig,
    sink: Box<dyn Sink>,
    checkpointer: Checkpointer,
    /// Every position released so far (cumulative, by partition).
    released: Checkpoints,
    tracker: CommitTracker,
    in_flight: JoinSet<DeliveryOutcome>,
    open: OpenBatch,
    events_delivered: u64,
    last_progress_log: Instant,
    probe: Arc<PipelineProbe>,
    /// The batches in flight, for the telemetry.
    submitted: std::collections::HashMap<BatchId, Submitted>,
    /// Whether the run's first item came yet.
    started: bool,
    /// Whether items taken since the probe was last told carried events.
    took_events: bool,
    /// The earliest commit of a batch taken out of `open` and waiting for a delivery slot.
    leaving_commit_ms: i64,
}

impl Driver {
    fn new(
        settings: &PipelineSettings,
        sink: Box<dyn Sink>,
        checkpointer: Checkpointer,
        resume: Checkpoints,
        probe: Arc<PipelineProbe>,
    ) -> Self {
        Driver {
            name: settings.name.clone(),
            batch: settings.batch.clone(),
            sink,
            checkpointer,
            released: resume,
            tracker: CommitTracker::new(),
            in_flight: JoinSet::new(),
            open: OpenBatch::default(),
            events_delivered: 0,
            last_progress_log: Instant::now(),
            probe,
            submitted: std::collections::HashMap::new(),
            started: false,
            took_events: false,
            leaving_commit_ms: 0,
        }
    }

    /// Tells the probe the commit time of the oldest change not yet acknowledged.
    fn update_pending_commit(&self) {
        let in_flight = self.submitted.values().map(|s| s.earliest_commit_ms);
        let open = [self.open.earliest_commit_ms, self.leaving_commit_ms];
        self.probe
            .set_oldest_pending_commit(earliest(in_flight.chain(open)));
    }

    async fn drive(&mut self, rx: Queue) -> Result<(), PipelineError> {
        let result = self.drive_until_done(rx).await;
        if result.is_err() {
            self.salvage_in_flight().await;
        }
        result
    }

    /// Acknowledges the in-flight deliveries that still succeed, within [`SALVAGE_TIMEOUT`];
    /// the tracker keeps the checkpoint from passing any that did not.
    async fn salvage_in_flight(&mut self) {
        let deadline = Instant::now() + SALVAGE_TIMEOUT;
        while let Ok(Some(joined)) =
            tokio::time::timeout_at(deadline, self.in_flight.join_next()).await
        {
            if let Ok((id, count, Ok(()))) = joined {
                if self.on_acknowledged(id, count).await.is_err() {
                    break;
                }
            }
        }
        self.in_flight.abort_all();
    }

    async fn drive_until_done(&mut self, mut rx: Queue) -> Result<(), PipelineError> {
        let mut items = Vec::with_capacity(RECEIVE_AT_ONCE);
        // One timer for the whole run. It is moved only to an earlier time: a flush time that
        // moved later (another arrival within the quiet gap) is looked at again when it fires,
        // so a busy source costs a timer update per firing, not one per item.
        let timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        loop {
            match (self.flush_time(), armed) {
                (Some(at), Some(current)) if at >= current => {}
                (Some(at), _) => {
                    timer.as_mut().reset(at);
                    armed = Some(at);
                }
                (None, _) => armed = None,
            }
            // No more than the open batch has room for: items taken off the channel are not
            // held here while a full batch waits for a delivery slot.
            let room = self.room().min(RECEIVE_AT_ONCE);
            tokio::select! {
                biased;
                Some(joined) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    self.on_delivered(joined).await?;
                }
                () = &mut timer, if armed.is_some() => {
                    armed = None;
                    if self.flush_time().is_some_and(|at| at <= Instant::now()) {
                        self.flush().await?;
                    }
                }
                received = rx.recv_many(&mut items, room) => {
                    if received == 0 {
                        break;
                    }
                    for item in items.drain(..) {
                        self.add(item).await?;
                    }
                    // One clock read per handful of items, not one per event.
                    if std::mem::take(&mut self.took_events) {
                        self.probe.took_events();
                    }
                }
            }
        }
        // The source is done (or stopped): deliver and checkpoint everything it emitted.
        self.flush().await?;
        while let Some(joined) = self.in_flight.join_next().await {
            self.on_delivered(joined).await?;
        }
        Ok(())
    }

    /// When the open batch should leave, if nothing fills it first: once the source has been
    /// quiet for [`QUIET_GAP`] while a delivery slot is free, else at the end of its linger.
    fn flush_time(&self) -> Option<Instant> {
        let timing = self.open.timing?;
        if self.in_flight.len() < self.batch.max_in_flight.get() {
            Some(timing.linger_end.min(timing.last_arrival + QUIET_GAP))
        } else {
            Some(timing.linger_end)
        }
    }

    async fn add(&mut self, item: Item) -> Result<(), PipelineError> {
        self.note_arrival();
        if !self.started {
            self.started = true;
            self.probe.first_item();
        }
        let earliest_before = self.open.earliest_commit_ms;
        match item.events {
            Events::None => {}
            Events::One(event) => {
                self.took_events = true;
                // The emitter sized the event for its budget permit already (clamped to the
                // budget, which only an event larger than the whole budget reaches).
                self.open.bytes += item
                    .permit
                    .as_ref()
                    .map_or_else(|| event.approx_size(), OwnedSemaphorePermit::num_permits);
                self.open.push(event, &self.probe);
                self.take_budget(item.permit);
            }
            Events::Many(events) => {
                self.took_events = true;
                self.add_many(events, item.permit).await?;
            }
        }
        if self.open.earliest_commit_ms != earliest_before {
            self.update_pending_commit();
        }
        if let Some(mark) = item.mark {
            self.open.marks.insert(mark.partition, Some(mark.position));
        }
        if let Some(partition) = item.forget {
            self.open.marks.insert(partition, None);
        }
        if self.open.events.len() >= self.batch.max_events.get()
            || self.open.bytes >= self.batch.max_bytes.get()
        {
            self.flush().await?;
        }
        Ok(())
    }

    /// Adds changes emitted together, flushing each time the batch is full; their budget is
    /// divided between the batches in proportion to the changes each takes.
    async fn add_many(
        &mut self,
        mut events: Vec<ChangeEvent>,
        mut budget: Option<OwnedSemaphorePermit>,
    ) -> Result<(), PipelineError> {
        loop {
            let room = self.room();
            let rest = (events.len() > room).then(|| events.split_off(room));
            let share = match &rest {
                None => budget.take(),
                Some(rest) => budget.as_mut().and_then(|budget| {
                    budget.split(budget.num_permits() * room / (room + rest.len()))
                }),
            };
            self.open.bytes += share.as_ref().map_or(0, OwnedSemaphorePermit::num_permits);
            for event in &events {
                self.open.note(event, &self.probe);
            }
            if self.open.events.is_empty() {
                // The batch's first changes: their vector becomes the batch's, grown once to
                // hold as many more as are likely to come (arrivals come in similar sizes), so
                // the changes after them are moved in once, not copied again as it grows.
                events.reserve(room.min(events.len() * 4) - events.len());
                self.open.events = std::mem::take(&mut events);
            } else {
                self.open.events.append(&mut events);
            }
            self.take_budget(share);
            let Some(rest) = rest else {
                return Ok(());
            };
            self.flush().await?;
            self.note_arrival();
            events = rest;
        }
    }

    /// Events the open batch can still take (at least one: a full batch has left already).
    fn room(&self) -> usize {
        self.batch
            .max_events
            .get()
            .saturating_sub(self.open.events.len())
            .max(1)
    }

    /// Starts the open batch's linger with its first item; notes the latest arrival.
    fn note_arrival(&mut self) {
        let now = Instant::now();
        let linger = Duration::from_millis(self.batch.linger_ms);
        let timing = self.open.timing.get_or_insert(BatchTiming {
            linger_end: now + linger,
            last_arrival: now,
        });
        timing.last_arrival = now;
    }

    fn take_budget(&mut self, permit: Option<OwnedSemaphorePermit>) {
        match (&mut self.open.budget, permit) {
            (Some(budget), Some(permit)) => budget.merge(permit),
            (budget @ None, permit) => *budget = permit,
            (Some(_), None) => {}
        }
    }

    async fn flush(&mut self) -> Result<(), PipelineError> {
        let open = std::mem::take(&mut self.open);
        if open.events.is_empty() && open.marks.is_empty() {
            return Ok(());
        }
        let id = self.tracker.register(open.marks);
        if open.events.is_empty() {
            return self.on_acknowledged(id, 0).await;
        }
        self.probe.read_batch(&open.ops);
        // Still pending while it waits for a slot: acknowledgements meanwhile must not hide it.
        self.leaving_commit_ms = open.earliest_commit_ms;
        while self.in_flight.len() >= self.batch.max_in_flight.get() {
            let joined = self
                .in_flight
                .join_next()
                .await
                .expect("in-flight deliveries exist");
            self.on_delivered(joined).await?;
        }
        let count = open.events.len();
        let batch = Arc::new(Batch {
            id,
            events: open.events,
        });
        let delivery = self.sink.submit(batch).await.map_err(|e| {
            self.tracker.fail(id);
            PipelineError::Sink(e)
        })?;
        let budget = open.budget;
        self.submitted.insert(
            id,
            Submitted {
                ops: open.ops,
                at: Instant::now(),
                earliest_commit_ms: open.earliest_commit_ms,
            },
        );
        self.leaving_commit_ms = 0;
        self.update_pending_commit();
        self.in_flight.spawn(async move {
            let outcome = delivery.await;
            drop(budget);
            (id, count, outcome)
        });
        Ok(())
    }

    async fn on_delivered(
        &mut self,
        joined: Result<DeliveryOutcome, JoinError>,
    ) -> Result<(), PipelineError> {
        match joined.map_err(|e| PipelineError::panic("sink", e))? {
            (id, count, Ok(())) => self.on_acknowledged(id, count).await,
            (id, _, Err(err)) => {
                self.tracker.fail(id);
                Err(PipelineError::Sink(err))
            }
        }
    }

    async fn on_acknowledged(&mut self, id: BatchId, events: usize) -> Result<(), PipelineError> {
        self.events_delivered += events as u64;
        if let Some(sent) = self.submitted.remove(&id) {
            self.probe
                .delivered(&sent.ops, sent.at.elapsed(), sent.earliest_commit_ms);
            self.update_pending_commit();
        }
        let Some(released) = self.tracker.acknowledge(id) else {
            return Ok(());
        };
        for (partition, position) in released {
            match position {
                Some(position) => self.released.insert(partition, position),
                None => self.released.remove(&partition),
            };
        }
        if self.checkpointer.release(&self.released).is_err() {
            // The writer stopped on an error; `finish` returns that error instead of this one.
            return Err(PipelineError::Panic {
                stage: "checkpoint",
                message: "checkpoint writer stopped".into(),
            });
        }
        if self.last_progress_log.elapsed() >= PROGRESS_LOG_INTERVAL {
            self.last_progress_log = Instant::now();
            let positions: Vec<_> = self
                .released
                .iter()
                .map(|(p, pos)| format!("{p}={}", pos.token))
                .collect();
            tracing::info!(pipeline = %self.name, delivered = self.events_delivered, checkpoint = %positions.join(","), "progress");
        }
        Ok(())
    }
}
