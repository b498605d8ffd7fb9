//! Supervises one pipeline: runs it, restarts it with exponential backoff (and jitter) after a
//! transient failure, and stops it for good on a fatal or data error, which it returns. A run
//! that lasted long enough resets the backoff. Shutdown ends the supervision quietly. The
//! pipeline's probe follows along: starting, backing off (with the error), stopped (with the
//! error), finished.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::checkpoint::Store;
use crate::config::RestartConfig;
use crate::error::{report, Disposition};
use crate::pipeline::{self, PipelineError, PipelineSettings};
use crate::shutdown::Shutdown;
use crate::sink::Sink;
use crate::source::Source;
use crate::telemetry::PipelineProbe;

/// Fresh source and sink instances for one run.
pub type Connected = Result<(Box<dyn Source>, Box<dyn Sink>), PipelineError>;
/// Builds the connectors of one run (new connections every time).
pub type Connect = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Connected> + Send>> + Send + Sync>;

/// A run this long is healthy: the next failure starts backing off from the beginning again.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Runs a pipeline until it finishes, shutdown is requested, or it fails for good.
pub async fn supervise(
    settings: &PipelineSettings,
    restart: &RestartConfig,
    connect: Connect,
    store: Arc<dyn Store>,
    mut shutdown: Shutdown,
    probe: Arc<PipelineProbe>,
) -> Result<(), PipelineError> {
    let name = settings.name.clone();
    let initial = Duration::from_millis(restart.initial_backoff_ms);
    let max = Duration::from_millis(restart.max_backoff_ms);
    let mut backoff = initial;
    loop {
        let started = Instant::now();
        probe.starting();
        let error = match run_once(settings, &connect, &store, &shutdown, &probe).await {
            Ok(summary) => {
                tracing::info!(pipeline = %name, delivered = summary.events_delivered, "pipeline stopped");
                probe.finished();
                return Ok(());
            }
            Err(error) => error,
        };
        if error.is_fenced() {
            // The coordinator reports the lost lease; this copy just ends.
            return Err(error);
        }
        let disposition = error.disposition();
        let shutting_down = disposition == Disposition::Transient && shutdown.is_requested();
        if !shutting_down {
            let restarting = disposition == Disposition::Transient;
            probe.failed(report(&error), disposition.as_str(), restarting);
        }
        if disposition != Disposition::Transient {
            tracing::error!(pipeline = %name, error = %report(&error), "pipeline stopped for good; fix the cause and restart");
            return Err(error);
        }
        if shutdown.is_requested() {
            tracing::warn!(pipeline = %name, error = %report(&error), "pipeline failed while shutting down");
            probe.finished();
            return Ok(());
        }
        if started.elapsed() >= HEALTHY_RUN {
            backoff = initial;
        }
        let wait = crate::backoff::with_jitter(backoff);
        tracing::warn!(pipeline = %name, error = %report(&error), retry_in_ms = wait.as_millis() as u64, "transient failure; restarting from the stored checkpoint");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.requested() => return Ok(()),
        }
        backoff = (backoff * 2).min(max);
    }
}

async fn run_once(
    settings: &PipelineSettings,
    connect: &Connect,
    store: &Arc<dyn Store>,
    shutdown: &Shutdown,
    probe: &Arc<PipelineProbe>,
) -> Result<pipeline::RunSummary, PipelineError> {
    let (source, sink) = connect().await?;
    let (store, shutdown, probe) = (store.clone(), shutdown.clone(), probe.clone());
    pipeline::run_observed(settings, source, sink, store, shutdown, probe).await
}
