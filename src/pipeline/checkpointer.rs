//! The checkpoint writer: commits released positions to the store off the driver's path.
//!
//! The driver publishes the cumulative released positions on a watch channel and moves on;
//! the writer commits the latest value (coalescing releases that arrived during an fsync into
//! one commit) and only then publishes it as stored to the source. A commit writes only the
//! partitions that changed since the last one and deletes those no longer released (forgotten).
//! Closing the channel makes the writer commit whatever is left and return.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::PipelineError;
use crate::checkpoint::{Checkpoints, Store};
use crate::telemetry::PipelineProbe;

pub struct Checkpointer {
    released: watch::Sender<Checkpoints>,
    task: JoinHandle<Result<(), PipelineError>>,
}

impl Checkpointer {
    /// Starts the writer; `stored` already holds the positions loaded at start.
    pub fn start(
        name: Arc<str>,
        store: Arc<dyn Store>,
        stored: watch::Sender<Checkpoints>,
        probe: Arc<PipelineProbe>,
    ) -> Self {
        let (released, mut rx) = watch::channel(stored.borrow().clone());
        let task = tokio::spawn(async move {
            loop {
                let closed = rx.changed().await.is_err();
                let latest = rx.borrow_and_update().clone();
                let (changed, removed) = difference(&stored.borrow(), &latest);
                if !changed.is_empty() || !removed.is_empty() {
                    let committing = Instant::now();
                    store.apply(&name, &changed, &removed, None).await?;
                    if tracing::enabled!(tracing::Level::DEBUG) {
                        let positions: Vec<&str> =
                            latest.values().map(|p| p.token.as_str()).collect();
                        tracing::debug!(pipeline = %name, positions = %positions.join(","), "checkpoint stored");
                    }
                    probe.checkpoint_stored(committing.elapsed(), &latest);
                    stored.send_replace(latest);
                }
                if closed {
                    return Ok(());
                }
            }
        });
        Checkpointer { released, task }
    }

    /// Hands over the cumulative released positions. Fails if the writer has stopped (its
    /// error is returned by [`Checkpointer::finish`]).
    pub fn release(&self, positions: &Checkpoints) -> Result<(), ()> {
        if self.task.is_finished() {
            return Err(());
        }
        self.released.send_replace(positions.clone());
        Ok(())
    }

    /// Commits what is left and returns the writer's outcome.
    pub async fn finish(self) -> Result<(), PipelineError> {
        drop(self.released);
        self.task.await.map_err(|e| PipelineError::Panic {
            stage: "checkpoint",
            message: e.to_string(),
        })?
    }
}

/// What `latest` changes from `stored`: partitions with a new position, partitions dropped.
fn difference(stored: &Checkpoints, latest: &Checkpoints) -> (Checkpoints, Vec<String>) {
    let changed = latest
        .iter()
        .filter(|(partition, position)| stored.get(*partition) != Some(*position))
        .map(|(partition, position)| (partition.clone(), position.clone()))
        .collect();
    let removed = stored
        .keys()
        .filter(|partition| !latest.contains_key(*partition))
        .cloned()
        .collect();
    (changed, removed)
}
