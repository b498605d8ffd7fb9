//! The `Sink` trait: how batches leave a pipeline, and its acknowledgement contract.
//!
//! The pipeline hands the sink numbered batches in source order with [`Sink::submit`]. The
//! sink starts delivering and returns a [`Delivery`]: a future that resolves `Ok` only when
//! every event of the batch is durably accepted by the destination, or with an error. The
//! pipeline may hold several deliveries at once and acknowledges a batch only when its delivery
//! resolved `Ok`; a failed delivery is never acknowledged and stops the pipeline, which then
//! restarts from the last stored checkpoint (at-least-once: destinations see duplicates).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;

use crate::envelope::ChangeEvent;
use crate::error::BoxError;
use crate::telemetry::PipelineProbe;

/// A group of events handed to a sink together.
#[derive(Debug)]
pub struct Batch {
    /// Increases by one per batch within a run of the pipeline.
    pub id: u64,
    pub events: Vec<ChangeEvent>,
}

/// Resolves once a batch is durably accepted (`Ok`) or cannot be delivered (`Err`).
pub type Delivery = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

/// A delivery that has already completed.
pub fn delivered() -> Delivery {
    Box::pin(std::future::ready(Ok(())))
}

/// Writes events to one destination.
///
/// Contract:
/// - a `Delivery` resolves `Ok` only when every event of its batch is durably accepted;
/// - events of one key reach the destination in the order of the batches and of the events
///   within them, also when the sink retries part of a batch;
/// - `submit` may wait (backpressure) but must not buffer without bound;
/// - errors carry their disposition: transient errors make the pipeline restart from its
///   checkpoint, fatal and data errors stop it.
#[async_trait]
pub trait Sink: Send + 'static {
    async fn submit(&mut self, batch: Arc<Batch>) -> Result<Delivery, BoxError>;

    /// Called once before the first batch: a sink that retries records, sets oversized ones
    /// aside or sees delivery errors counts them into `probe`. Sinks without any of those
    /// (file, stdout, null) have nothing to count.
    fn observe(&mut self, probe: Arc<PipelineProbe>) {
        let _ = probe;
    }
}
