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
//! reading; the source should then return.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::checkpoint::{Checkpoints, Position};
use crate::envelope::ChangeEvent;
use crate::error::BoxError;
use crate::shutdown::Shutdown;

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

/// A checkpoint mark: after this, `partition` may resume after `position`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub partition: String,
    pub position: Position,
}

/// One message from a source to the pipeline.
pub(crate) struct Item {
    pub event: Option<ChangeEvent>,
    pub mark: Option<Mark>,
    /// A partition whose stored position is no longer needed (see [`Emitter::forget`]).
    pub forget: Option<String>,
    /// Memory budget held by this item until its batch is acknowledged.
    pub permit: Option<OwnedSemaphorePermit>,
}

/// The pipeline is no longer reading; the source should return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the pipeline stopped reading from the source")]
pub struct Stopped;

/// Hands events and checkpoint marks to the pipeline, waiting while its buffer is full.
#[derive(Clone)]
pub struct Emitter {
    tx: mpsc::Sender<Item>,
    budget: Arc<Semaphore>,
    budget_bytes: u32,
}

impl Emitter {
    pub(crate) fn new(tx: mpsc::Sender<Item>, budget_bytes: u32) -> Self {
        Emitter {
            tx,
            budget: Arc::new(Semaphore::new(budget_bytes as usize)),
            budget_bytes,
        }
    }

    /// Emits one change event.
    pub async fn event(&self, event: ChangeEvent) -> Result<(), Stopped> {
        self.send(Some(event), None).await
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
        self.tx
            .send(Item {
                event: None,
                mark: None,
                forget: Some(partition),
                permit: None,
            })
            .await
            .map_err(|_| Stopped)
    }

    async fn send(&self, event: Option<ChangeEvent>, mark: Option<Mark>) -> Result<(), Stopped> {
        let permit = match &event {
            Some(event) => {
                let bytes = u32::try_from(event.approx_size())
                    .unwrap_or(u32::MAX)
                    .clamp(1, self.budget_bytes);
                Some(
                    self.budget
                        .clone()
                        .acquire_many_owned(bytes)
                        .await
                        .map_err(|_| Stopped)?,
                )
            }
            None => None,
        };
        self.tx
            .send(Item {
                event,
                mark,
                forget: None,
                permit,
            })
            .await
            .map_err(|_| Stopped)
    }
}
