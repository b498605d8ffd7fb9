//! The supervisor restarts a pipeline after transient failures (with backoff, from its
//! checkpoint) and stops it for good on a fatal one. The source is the real generator; the
//! sink fails on purpose.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cdc_bridge::checkpoint::CheckpointStore;
use cdc_bridge::config::{BatchConfig, BufferConfig, RestartConfig};
use cdc_bridge::daemon::supervisor::{supervise, Connect};
use cdc_bridge::error::{BoxError, ConnectorError, Disposition};
use cdc_bridge::pipeline::PipelineSettings;
use cdc_bridge::shutdown::ShutdownTrigger;
use cdc_bridge::sink::{delivered, Batch, Delivery, Sink};
use cdc_bridge::sources::generator::{GeneratorConfig, GeneratorSource};
use cdc_bridge::telemetry::{Readiness, Telemetry};

#[derive(Debug, thiserror::Error)]
#[error("injected {0:?} failure")]
struct Injected(Disposition);

impl ConnectorError for Injected {
    fn disposition(&self) -> Disposition {
        self.0
    }
}

/// Accepts batches into `log` until it has accepted `fail_after` of them, then fails with
/// `disposition` (when set).
struct FailingSink {
    log: Arc<Mutex<Vec<u64>>>,
    accepted: u32,
    fail_after: u32,
    disposition: Option<Disposition>,
}

#[async_trait]
impl Sink for FailingSink {
    async fn submit(&mut self, batch: Arc<Batch>) -> Result<Delivery, BoxError> {
        if let Some(disposition) = self
            .disposition
            .filter(|_| self.accepted >= self.fail_after)
        {
            return Err(Injected(disposition).into());
        }
        self.accepted += 1;
        self.log
            .lock()
            .unwrap()
            .extend(batch.events.iter().map(|e| match e.source.position {
                cdc_bridge::envelope::SourcePosition::Generator { seq } => seq,
                ref other => panic!("not a generator position: {other:?}"),
            }));
        Ok(delivered())
    }
}

fn settings() -> PipelineSettings {
    let batch = BatchConfig {
        max_events: 10.try_into().unwrap(),
        linger_ms: 1,
        ..BatchConfig::default()
    };
    PipelineSettings {
        name: "sup".into(),
        batch,
        buffer: BufferConfig::default(),
    }
}

/// Connects the generator (`count` rows) to a sink that fails with `disposition` on its
/// first `failing_runs` instances, after 5 batches each.
fn connect(
    count: u64,
    failing_runs: u32,
    disposition: Disposition,
    log: Arc<Mutex<Vec<u64>>>,
    runs: Arc<AtomicU32>,
) -> Connect {
    Box::new(move || {
        let run = runs.fetch_add(1, Ordering::SeqCst);
        let config: GeneratorConfig =
            toml::from_str(&format!("count = {count}\nkeys = 13")).unwrap();
        let sink = FailingSink {
            log: log.clone(),
            accepted: 0,
            fail_after: 5,
            disposition: (run < failing_runs).then_some(disposition),
        };
        Box::pin(async move {
            Ok((
                Box::new(GeneratorSource::new(config)) as _,
                Box::new(sink) as _,
            ))
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_restart_from_the_checkpoint_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(CheckpointStore::open(dir.path()).unwrap());
    let (log, runs) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(AtomicU32::new(0)),
    );
    let restart = RestartConfig {
        initial_backoff_ms: 100,
        max_backoff_ms: 1000,
    };
    let trigger = ShutdownTrigger::new();
    let started = Instant::now();
    let telemetry = Telemetry::new();
    let outcome = supervise(
        &settings(),
        &restart,
        connect(200, 2, Disposition::Transient, log.clone(), runs.clone()),
        store.clone(),
        trigger.subscribe(),
        telemetry.probe("sup"),
    )
    .await;
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        3,
        "two failed runs, then one that finished"
    );
    // Backoff: at least half of 100 ms, then half of 200 ms (jitter keeps 50..100 %).
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    let stored = store.load("sup").unwrap()[""].token.clone();
    assert_eq!(stored, "200");
    // Each run resumed right after what the previous one had stored: no gap, in order.
    let log = log.lock().unwrap().clone();
    assert_eq!(log.first(), Some(&1));
    for pair in log.windows(2) {
        assert!(
            pair[1] == pair[0] + 1 || pair[1] <= pair[0] + 1,
            "gap: {} then {}",
            pair[0],
            pair[1]
        );
    }
    let mut seen = log.clone();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, (1..=200).collect::<Vec<_>>());
    // The telemetry saw both restarts and every delivery, and the pipeline's end.
    let metrics = telemetry.render();
    assert!(
        metrics.contains(
            "cdc_bridge_pipeline_failures_total{disposition=\"transient\",pipeline=\"sup\"} 2\n"
        ),
        "{metrics}"
    );
    let status = &telemetry.status()[0];
    assert_eq!(status.state, "finished");
    assert_eq!(status.events_delivered, log.len() as u64);
    assert_eq!(status.stored[""], "200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_failure_stops_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(CheckpointStore::open(dir.path()).unwrap());
    let (log, runs) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(AtomicU32::new(0)),
    );
    let trigger = ShutdownTrigger::new();
    let telemetry = Telemetry::new();
    let outcome = supervise(
        &settings(),
        &RestartConfig::default(),
        connect(200, 1, Disposition::Fatal, log, runs.clone()),
        store.clone(),
        trigger.subscribe(),
        telemetry.probe("sup"),
    )
    .await;
    let err = outcome.unwrap_err();
    assert_eq!(err.disposition(), Disposition::Fatal);
    // Stopped for good, with the error, and not ready.
    let status = &telemetry.status()[0];
    assert_eq!(status.state, "stopped");
    let error = status.error.as_deref().unwrap_or_default();
    assert!(error.contains("injected Fatal failure"), "{error}");
    match telemetry.readiness() {
        Readiness::NotReady(reasons) => {
            assert_eq!(reasons.len(), 1);
            assert!(
                reasons[0].starts_with("pipeline sup: stopped: "),
                "{reasons:?}"
            );
        }
        Readiness::Ready => panic!("a stopped pipeline is not ready"),
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // What was delivered before the failure is checkpointed (5 batches of 10).
    assert_eq!(store.load("sup").unwrap()[""].token, "50");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_backoff_ends_supervision() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(CheckpointStore::open(dir.path()).unwrap());
    let (log, runs) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(AtomicU32::new(0)),
    );
    let restart = RestartConfig {
        initial_backoff_ms: 60_000,
        max_backoff_ms: 60_000,
    };
    let trigger = ShutdownTrigger::new();
    let shutdown = trigger.subscribe();
    let task = tokio::spawn(async move {
        supervise(
            &settings(),
            &restart,
            connect(200, 5, Disposition::Transient, log, runs),
            store,
            shutdown,
            Telemetry::new().probe("sup"),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    trigger.trigger();
    let outcome = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("supervision ends promptly")
        .unwrap();
    assert!(outcome.is_ok());
}
