//! The `Source` trait: how change events enter a pipeline, and its delivery contract.
//!
//! A source reads from its system, starting after the positions it is given in
//! [`SourceContext::resume`], and hands every change to the [`Emitter`] in source order. After
//! the last event of a unit it may be resumed after (a committed transaction, a generator row,
//! a DynamoDB record), it emits a checkpoint mark for that position. The pipeline stores a mark
//! only when every event before it has been acknowledged by the sink, then publishes the
//! stored positions on [`SourceContext::stored`]: that is the only signal a source may confirm
//! upstream (e.g. Postgres's flush LSN).
//!
//! The emitter applies backpressure: its methods wait while the pipeline's buffer is full, so
//! a source never buffers without bound. They fail with [`Stopped`] once the pipeline stopped
//! reading; the source should then return. Changes a source must hold back before emitting
//! them (a prepared transaction's rows until its commit) take from the same budget
//! ([`Emitter::hold`]).
//!
//! The emitter also splits an update that changed the row's key into the delete of the old key
//! and the insert under the new key ([`ChangeEvent::split_key_change`]): sources emit updates
//! as they read them.
//!
//! How a run starts (stream on, copy first, or nothing left to do) is decided for every source
//! by [`SnapshotMode::start`].

pub mod progress;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::Instant;

use crate::checkpoint::{Checkpoints, Position};
use crate::envelope::ChangeEvent;
use crate::error::BoxError;
use crate::shutdown::Shutdown;
use crate::telemetry::PipelineProbe;

/// Reads changes from one system into a pipeline.
///
/// Contract:
/// - events are emitted in source order; events of one key never overtake each other;
/// - a checkpoint mark for position P is emitted only after every event at or before P, and
///   positions of one partition are emitted in increasing rank;
/// - resuming after a stored position P yields every change after P (at-least-once: changes
///   after P may have been delivered before and are delivered again);
/// - `run` returns `Ok` when the source is exhausted or shutdown was requested, and an error
///   (with its disposition) otherwise.
#[async_trait]
pub trait Source: Send + 'static {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), BoxError>;
}

/// What a source gets from the pipeline.
pub struct SourceContext {
    pub pipeline: Arc<str>,
    /// Positions stored for this pipeline, by partition; resume after them.
    pub resume: Checkpoints,
    pub emit: Emitter,
    /// The positions durably stored so far; changes whenever the pipeline stores more.
    pub stored: watch::Receiver<Checkpoints>,
    pub shutdown: Shutdown,
    /// Where the source reports its phase (snapshotting, streaming), snapshot progress,
    /// heartbeats and what its server retains for it.
    pub probe: Arc<PipelineProbe>,
    /// This run holds the pipeline's lease on a shared store, so a session that the previous
    /// holder left open on the source (a paused or cut-off instance's Postgres slot, still
    /// active) is stale and may be ended.
    pub leased: bool,
    /// For a pipeline spread by partition over several instances: the partitions this copy
    /// may read (`None`: every partition).
    pub partitions: Option<Arc<crate::coordination::PartitionLeases>>,
}

/// Whether a database source copies its tables before streaming (`snapshot` in its settings).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// Copy every table consistently with the stream's start, then stream (first run only).
    #[default]
    Initial,
    /// Only stream changes from the start position on.
    Never,
    /// Copy every table, then stop.
    InitialOnly,
}

/// How a database source begins a run: decided here, for every source, from its snapshot mode
/// and whether a checkpoint is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Stream on after the stored checkpoint.
    Resume,
    /// Nothing left to do: `initial_only` stored its checkpoint when the copy was complete.
    Done,
    /// First run: copy the tables, then stream unless `then_stream` is false.
    Snapshot { then_stream: bool },
    /// First run without a copy: stream from the configured or current position.
    Stream,
}

impl SnapshotMode {
    /// Where a run starts. A stored checkpoint means the first run's copy (if any) completed,
    /// or (Postgres) that its unfinished rest is copied while streaming.
    pub fn start(self, checkpoint_stored: bool) -> Start {
        match (self, checkpoint_stored) {
            (SnapshotMode::InitialOnly, true) => Start::Done,
            (_, true) => Start::Resume,
            (SnapshotMode::Never, false) => Start::Stream,
            (SnapshotMode::Initial, false) => Start::Snapshot { then_stream: true },
            (SnapshotMode::InitialOnly, false) => Start::Snapshot { then_stream: false },
        }
    }
}

/// A checkpoint mark: after this, `partition` may resume after `position`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub partition: String,
    pub position: Position,
}

/// One message from a source to the pipeline.
pub(crate) struct Item {
    pub events: Events,
    pub mark: Option<Mark>,
    /// A partition whose stored position is no longer needed (see [`Emitter::forget`]).
    pub forget: Option<String>,
    /// Memory budget held by this item until its batch is acknowledged.
    pub permit: Option<OwnedSemaphorePermit>,
    /// Places in the queue it took (see [`Queue`]).
    places: u32,
}

impl Item {
    fn new(events: Events, mark: Option<Mark>, permit: Option<OwnedSemaphorePermit>) -> Self {
        Item {
            events,
            mark,
            forget: None,
            permit,
            places: 0,
        }
    }
}

/// The events of one [`Item`], in source order.
// `One` keeps the common case inline, as `Option<ChangeEvent>` did: boxing it would cost an
// allocation per event.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Events {
    None,
    One(ChangeEvent),
    /// Changes read together, handed over at once ([`Emitter::events`]).
    Many(Vec<ChangeEvent>),
}

impl Events {
    fn len(&self) -> usize {
        match self {
            Events::None => 0,
            Events::One(_) => 1,
            Events::Many(events) => events.len(),
        }
    }
}

/// The two ends between a source and its pipeline: the [`Emitter`] the source hands items to,
/// and the [`Queue`] the pipeline takes them from. At most `max_queued` events wait in between
/// (an item without events counts as one); `budget_bytes` bounds events until acknowledged.
/// The probe is told how long the emitter waits, and watches the budget.
pub(crate) fn channel(
    max_queued: usize,
    budget_bytes: u32,
    probe: Arc<PipelineProbe>,
) -> (Emitter, Queue) {
    let (tx, rx) = mpsc::unbounded_channel();
    let max_queued = max_queued.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let places = Arc::new(Semaphore::new(max_queued));
    let budget = Arc::new(Semaphore::new(budget_bytes as usize));
    probe.watch_budget(budget.clone(), budget_bytes as usize);
    let emitter = Emitter {
        tx,
        places: places.clone(),
        max_queued: u32::try_from(max_queued).expect("clamped"),
        budget,
        budget_bytes,
        held: Arc::default(),
        probe,
    };
    (emitter, Queue { rx, places })
}

/// The pipeline's end: items in the order they were emitted. Taking items gives their places
/// back to the emitter; dropping the queue stops the emitter ([`Stopped`]).
pub(crate) struct Queue {
    rx: mpsc::UnboundedReceiver<Item>,
    places: Arc<Semaphore>,
}

impl Queue {
    /// Waits for an item, then takes up to `limit` items; 0 once the emitter is gone.
    pub async fn recv_many(&mut self, items: &mut Vec<Item>, limit: usize) -> usize {
        let first = items.len();
        let received = self.rx.recv_many(items, limit).await;
        let places: usize = items[first..].iter().map(|item| item.places as usize).sum();
        self.places.add_permits(places);
        received
    }

    #[cfg(test)]
    pub async fn recv(&mut self) -> Option<Item> {
        let mut items = Vec::with_capacity(1);
        self.recv_many(&mut items, 1).await;
        items.pop()
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.places.close();
    }
}

/// The pipeline is no longer reading; the source should return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the pipeline stopped reading from the source")]
pub struct Stopped;

/// Why a source's step ended before its work was done: the pipeline stopped reading (a
/// shutdown, not an error), or the source failed with its connector's error. Every database
/// source returns it from the steps that both talk to their server and emit; `?` turns a
/// [`Stopped`] into it, and each connector's error type (an `impl From` beside the type).
#[derive(Debug)]
pub enum Halt<E> {
    Stopped,
    Failed(E),
}

impl<E> From<Stopped> for Halt<E> {
    fn from(_: Stopped) -> Self {
        Halt::Stopped
    }
}

impl<E> Halt<E> {
    /// The end of a source's run: a stop ends it cleanly, a failure with its error.
    pub fn into_result(self) -> Result<(), E> {
        match self {
            Halt::Stopped => Ok(()),
            Halt::Failed(err) => Err(err),
        }
    }
}

/// Hands events and checkpoint marks to the pipeline, waiting while its buffer is full.
#[derive(Clone)]
pub struct Emitter {
    tx: mpsc::UnboundedSender<Item>,
    /// Places in the queue: one per event waiting there (see [`channel`]).
    places: Arc<Semaphore>,
    max_queued: u32,
    budget: Arc<Semaphore>,
    budget_bytes: u32,
    /// Bytes of the budget taken by [`Held`] changes.
    held: Arc<AtomicUsize>,
    probe: Arc<PipelineProbe>,
}

/// A change the source holds back until it may emit it (the rows of a prepared transaction
/// until its commit), its size counted against the pipeline's memory budget until it is
/// emitted ([`Emitter::release`]) or dropped.
pub struct Held {
    event: ChangeEvent,
    budget: HeldBudget,
}

impl Held {
    /// The change held.
    pub fn event(&self) -> &ChangeEvent {
        &self.event
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Held").field(&self.event).finish()
    }
}

/// The budget a [`Held`] change takes, and the count of held bytes it is part of.
struct HeldBudget {
    permit: Option<OwnedSemaphorePermit>,
    held: Arc<AtomicUsize>,
}

impl HeldBudget {
    /// The permit, no longer counted as held.
    fn into_permit(mut self) -> Option<OwnedSemaphorePermit> {
        let permit = self.permit.take();
        if let Some(permit) = &permit {
            self.held.fetch_sub(permit.num_permits(), Ordering::Relaxed);
        }
        permit
    }
}

impl Drop for HeldBudget {
    fn drop(&mut self) {
        if let Some(permit) = &self.permit {
            self.held.fetch_sub(permit.num_permits(), Ordering::Relaxed);
        }
    }
}

/// Why a change could not be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HoldError {
    #[error(transparent)]
    Stopped(#[from] Stopped),
    /// What is held already and this change exceed the whole budget: waiting could never end,
    /// as held changes are released only by input read later.
    #[error("held changes would exceed the pipeline's buffer.max_bytes ({budget} bytes)")]
    OverBudget { budget: u32 },
}

impl Emitter {
    /// Hands one item to the pipeline once the queue has a place for each of its events.
    async fn hand_over(&self, mut item: Item) -> Result<(), Stopped> {
        let places = u32::try_from(item.events.len().max(1))
            .unwrap_or(u32::MAX)
            .min(self.max_queued);
        match self.places.try_acquire_many(places) {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::Closed) => return Err(Stopped),
            Err(TryAcquireError::NoPermits) => {
                let waiting = Instant::now();
                let permit = self.places.acquire_many(places).await;
                self.probe.backpressure_waited(waiting.elapsed());
                permit.map_err(|_| Stopped)?.forget();
            }
        }
        item.places = places;
        self.tx.send(item).map_err(|_| Stopped)
    }

    /// Takes `bytes` of the budget, waiting (and telling the probe how long) while it is spent.
    async fn take_budget(&self, bytes: u32) -> Result<OwnedSemaphorePermit, Stopped> {
        match self.budget.clone().try_acquire_many_owned(bytes) {
            Ok(permit) => Ok(permit),
            Err(TryAcquireError::Closed) => Err(Stopped),
            Err(TryAcquireError::NoPermits) => {
                let waiting = Instant::now();
                let permit = self.budget.clone().acquire_many_owned(bytes).await;
                self.probe.backpressure_waited(waiting.elapsed());
                permit.map_err(|_| Stopped)
            }
        }
    }

    /// Holds `event` back, taking its size from the budget (waiting for room like
    /// [`Emitter::event`]).
    pub async fn hold(&self, event: ChangeEvent) -> Result<Held, HoldError> {
        let bytes = self.size(&event);
        let held = self.held.load(Ordering::Relaxed);
        if held + bytes as usize > self.budget_bytes as usize {
            return Err(HoldError::OverBudget {
                budget: self.budget_bytes,
            });
        }
        let permit = self.take_budget(bytes).await?;
        self.held.fetch_add(bytes as usize, Ordering::Relaxed);
        Ok(Held {
            event,
            budget: HeldBudget {
                permit: Some(permit),
                held: self.held.clone(),
            },
        })
    }

    /// Emits a held change (its budget moves with it to the pipeline). A key change is split
    /// as [`Emitter::event`] splits it; the budget goes with the second half, which the
    /// pipeline takes after the first.
    pub async fn release(&self, held: Held) -> Result<(), Stopped> {
        let Held { event, budget } = held;
        let permit = budget.into_permit();
        let (first, second) = event.split_key_change();
        match second {
            None => self.push(Some(first), None, permit).await,
            // The budget goes with the last part: it is released once both are delivered.
            Some(second) => {
                self.push(Some(first), None, None).await?;
                self.push(Some(second), None, permit).await
            }
        }
    }

    /// Hands one item to the pipeline.
    async fn push(
        &self,
        event: Option<ChangeEvent>,
        mark: Option<Mark>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<(), Stopped> {
        let events = event.map_or(Events::None, Events::One);
        self.hand_over(Item::new(events, mark, permit)).await
    }

    /// The budget an event takes: its approximate size, at least 1 byte and at most the whole
    /// budget.
    /// The bytes of events the pipeline holds at most until they are acknowledged
    /// (`buffer.max_bytes`).
    pub fn budget_bytes(&self) -> u32 {
        self.budget_bytes
    }

    fn size(&self, event: &ChangeEvent) -> u32 {
        u32::try_from(event.approx_size())
            .unwrap_or(u32::MAX)
            .clamp(1, self.budget_bytes)
    }

    /// Emits one change event.
    pub async fn event(&self, event: ChangeEvent) -> Result<(), Stopped> {
        self.send(Some(event), None).await
    }

    /// Emits changes read together (the rows of one binlog event), in order, as one message:
    /// one wait for budget and one hand-over instead of one per change. Key changes are split
    /// as [`Emitter::event`] splits them.
    pub async fn events(&self, events: Vec<ChangeEvent>) -> Result<(), Stopped> {
        let mut split = Vec::with_capacity(events.len());
        for event in events {
            let (first, second) = event.split_key_change();
            split.push(first);
            split.extend(second);
        }
        let bytes = split.iter().map(|event| self.size(event) as usize).sum();
        self.hand_over_together(split, bytes).await
    }

    /// Emits a copy's rows ([`CopyBatch`](progress::CopyBatch)) as one message: unlike
    /// [`Emitter::events`] they need no split (a copied row is never a key change) and their
    /// size is already summed.
    pub async fn copied(&self, rows: progress::CopiedRows) -> Result<(), Stopped> {
        self.hand_over_together(rows.events, rows.bytes).await
    }

    /// Hands `events`, whose sizes add up to `bytes`, to the pipeline as one message holding
    /// that much of the budget (at most all of it); nothing when there are none.
    async fn hand_over_together(
        &self,
        events: Vec<ChangeEvent>,
        bytes: usize,
    ) -> Result<(), Stopped> {
        if events.is_empty() {
            return Ok(());
        }
        let bytes = u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .clamp(1, self.budget_bytes);
        let permit = self.take_budget(bytes).await?;
        self.hand_over(Item::new(Events::Many(events), None, Some(permit)))
            .await
    }

    /// Emits one change event followed by a checkpoint mark (one message instead of two).
    pub async fn event_then_checkpoint(
        &self,
        event: ChangeEvent,
        mark: Mark,
    ) -> Result<(), Stopped> {
        self.send(Some(event), Some(mark)).await
    }

    /// Emits a checkpoint mark: every event emitted so far is at or before `mark`.
    pub async fn checkpoint(&self, mark: Mark) -> Result<(), Stopped> {
        self.send(None, Some(mark)).await
    }

    /// Drops the stored position of `partition` (e.g. a shard gone from its stream), once
    /// everything emitted before is acknowledged: the next start sees no checkpoint for it.
    pub async fn forget(&self, partition: String) -> Result<(), Stopped> {
        let mut item = Item::new(Events::None, None, None);
        item.forget = Some(partition);
        self.hand_over(item).await
    }

    async fn send(&self, event: Option<ChangeEvent>, mark: Option<Mark>) -> Result<(), Stopped> {
        match event.map(ChangeEvent::split_key_change) {
            Some((delete, Some(insert))) => {
                // The mark, if any, follows both: it covers the whole update.
                self.send_one(Some(delete), None).await?;
                self.send_one(Some(insert), mark).await
            }
            Some((event, None)) => self.send_one(Some(event), mark).await,
            None => self.send_one(None, mark).await,
        }
    }

    async fn send_one(
        &self,
        event: Option<ChangeEvent>,
        mark: Option<Mark>,
    ) -> Result<(), Stopped> {
        let permit = match &event {
            Some(event) => {
                let bytes = self.size(event);
                Some(self.take_budget(bytes).await?)
            }
            None => None,
        };
        self.push(event, mark, permit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_starts_the_same_way() {
        use SnapshotMode::*;
        assert_eq!(InitialOnly.start(true), Start::Done);
        assert_eq!(Initial.start(true), Start::Resume);
        assert_eq!(Never.start(true), Start::Resume);
        assert_eq!(Never.start(false), Start::Stream);
        assert_eq!(Initial.start(false), Start::Snapshot { then_stream: true });
        assert_eq!(
            InitialOnly.start(false),
            Start::Snapshot { then_stream: false }
        );
    }

    /// Held changes take their size from the budget until released or dropped; holding more
    /// than the whole budget is refused at once rather than waiting forever.
    #[tokio::test]
    async fn held_changes_count_against_the_budget() {
        let event = crate::sources::generator::GeneratorSource::sample_event(1, 1);
        let size = event.approx_size() as u32;
        let probe = PipelineProbe::detached("held");
        let (emitter, mut rx) = channel(8, 2 * size + size / 2, probe);
        let first = emitter.hold(event.clone()).await.unwrap();
        let second = emitter.hold(event.clone()).await.unwrap();
        assert_eq!(
            emitter.hold(event.clone()).await.err(),
            Some(HoldError::OverBudget {
                budget: 2 * size + size / 2
            })
        );
        drop(second);
        let third = emitter.hold(event.clone()).await.unwrap();
        emitter.release(first).await.unwrap();
        let item = rx.recv().await.unwrap();
        assert_eq!(
            item.permit.as_ref().map(|p| p.num_permits()),
            Some(size as usize)
        );
        assert!(matches!(&item.events, Events::One(held) if held == &event));
        // Released: its budget is the pipeline's now (back once the item is done), no longer
        // counted as held.
        drop(item);
        let fourth = emitter.hold(event.clone()).await.unwrap();
        drop((third, fourth));
        assert!(emitter.hold(event).await.is_ok());
    }
}
