//! When batches leave the pipeline: as soon as the source goes quiet (a quiet pipeline does
//! not pay the linger on every change), and full while the sink is busy or the source is
//! reading a backlog (a loaded pipeline does not fall apart into one-event batches). The sources and sinks here are test
//! doubles of the pipeline's own interfaces, which is what is under test.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cdc_bridge::checkpoint::{CheckpointStore, Position};
use cdc_bridge::config::{BatchConfig, BufferConfig};
use cdc_bridge::error::BoxError;
use cdc_bridge::pipeline::{self, PipelineSettings};
use cdc_bridge::shutdown::ShutdownTrigger;
use cdc_bridge::sink::{Batch, Delivery, Sink};
use cdc_bridge::source::{Mark, Source, SourceContext};
use cdc_bridge::sources::generator::{GeneratorConfig, GeneratorSource};
use tokio::time::Instant;

/// How a [`PacedSource`] spends the time between two events.
#[derive(Clone, Copy)]
enum Pace {
    /// As fast as it can.
    Flat,
    /// Asleep: nothing arrives in the meantime (a quiet database).
    Sleep(Duration),
    /// Busy on the CPU, as a source decoding a backlog is between two events.
    Work(Duration),
}

/// Emits `count` events at `pace`, each followed by its checkpoint; notes when each was
/// emitted.
struct PacedSource {
    count: u64,
    pace: Pace,
    emitted_at: Arc<Mutex<Vec<Instant>>>,
}

#[async_trait]
impl Source for PacedSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), BoxError> {
        let generator = GeneratorSource::new(toml::from_str::<GeneratorConfig>("").unwrap());
        let (db, table) = ("db".into(), "t".into());
        for seq in 1..=self.count {
            match self.pace {
                Pace::Flat => {}
                Pace::Sleep(pause) => tokio::time::sleep(pause).await,
                Pace::Work(busy) => {
                    let until = std::time::Instant::now() + busy;
                    while std::time::Instant::now() < until {
                        std::hint::spin_loop();
                    }
                }
            }
            let event = generator.event(&ctx.pipeline, &db, &table, seq);
            let mark = Mark {
                partition: String::new(),
                position: Position::from_counter(seq.to_string(), seq),
            };
            self.emitted_at.lock().unwrap().push(Instant::now());
            if ctx.emit.event_then_checkpoint(event, mark).await.is_err() {
                break;
            }
        }
        Ok(())
    }
}

/// Notes when each event was handed over and each batch's size; every delivery takes `delay`.
struct TimingSink {
    submitted_at: Arc<Mutex<Vec<Instant>>>,
    batch_sizes: Arc<Mutex<Vec<usize>>>,
    delay: Duration,
}

#[async_trait]
impl Sink for TimingSink {
    async fn submit(&mut self, batch: Arc<Batch>) -> Result<Delivery, BoxError> {
        let now = Instant::now();
        self.submitted_at
            .lock()
            .unwrap()
            .extend(batch.events.iter().map(|_| now));
        self.batch_sizes.lock().unwrap().push(batch.events.len());
        let delay = self.delay;
        Ok(Box::pin(async move {
            tokio::time::sleep(delay).await;
            Ok(())
        }))
    }
}

fn take<T>(shared: &Arc<Mutex<Vec<T>>>) -> Vec<T> {
    std::mem::take(&mut *shared.lock().unwrap())
}

struct Observed {
    emitted_at: Vec<Instant>,
    submitted_at: Vec<Instant>,
    batch_sizes: Vec<usize>,
}

async fn run(pace: Pace, count: u64, sink_delay: Duration, batch: BatchConfig) -> Observed {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(CheckpointStore::open(dir.path()).unwrap());
    let emitted_at = Arc::new(Mutex::new(Vec::new()));
    let submitted_at = Arc::new(Mutex::new(Vec::new()));
    let batch_sizes = Arc::new(Mutex::new(Vec::new()));
    let source = PacedSource {
        count,
        pace,
        emitted_at: emitted_at.clone(),
    };
    let sink = TimingSink {
        submitted_at: submitted_at.clone(),
        batch_sizes: batch_sizes.clone(),
        delay: sink_delay,
    };
    let settings = PipelineSettings {
        name: "latency".into(),
        batch,
        buffer: BufferConfig::default(),
    };
    let trigger = ShutdownTrigger::new();
    let summary = pipeline::run(
        &settings,
        Box::new(source),
        Box::new(sink),
        store,
        trigger.subscribe(),
    )
    .await
    .unwrap();
    assert_eq!(summary.events_delivered, count);
    Observed {
        emitted_at: take(&emitted_at),
        submitted_at: take(&submitted_at),
        batch_sizes: take(&batch_sizes),
    }
}

/// One change every 50 ms with a 10 s linger: each reaches the sink at once, not after the
/// linger (a pipeline that waited for the linger would take over 10 s for the first one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_pipeline_hands_each_change_over_at_once() {
    let batch = BatchConfig {
        linger_ms: 10_000,
        ..BatchConfig::default()
    };
    let seen = run(
        Pace::Sleep(Duration::from_millis(50)),
        20,
        Duration::from_millis(1),
        batch,
    )
    .await;
    let worst = seen
        .emitted_at
        .iter()
        .zip(&seen.submitted_at)
        .map(|(emitted, submitted)| submitted.duration_since(*emitted))
        .max()
        .unwrap();
    assert!(
        worst < Duration::from_millis(500),
        "a change waited {worst:?} before it reached the sink"
    );
}

/// 20,000 changes as fast as the source makes them into a sink that takes 20 ms per
/// delivery: the batches stay large (most of the 1,000-event maximum) instead of shrinking
/// to what happened to be queued at each instant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_pipeline_still_sends_large_batches() {
    let batch = BatchConfig {
        max_in_flight: 2.try_into().unwrap(),
        ..BatchConfig::default()
    };
    let seen = run(Pace::Flat, 20_000, Duration::from_millis(20), batch).await;
    let batches = seen.batch_sizes.len();
    assert!(
        batches <= 40,
        "20,000 events went out in {batches} batches: {:?}",
        seen.batch_sizes
    );
}

/// 20,000 changes from a source that spends 20 us on each (decoding a backlog, slower than
/// the sink): the channel is empty most of the time between two events, yet the batches stay
/// large. (Sending a batch whenever the channel was empty made one batch per change, which
/// halved the Postgres source's throughput into the null sink.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_reading_a_backlog_fills_its_batches() {
    let seen = run(
        Pace::Work(Duration::from_micros(20)),
        20_000,
        Duration::ZERO,
        BatchConfig::default(),
    )
    .await;
    let batches = seen.batch_sizes.len();
    assert!(
        batches <= 200,
        "20,000 events went out in {batches} batches (smallest {:?})",
        seen.batch_sizes.iter().min()
    );
}
