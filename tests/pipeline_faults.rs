//! The pipeline runtime under a misbehaving sink: deliveries that complete out of order, a
//! batch that fails, and a sink that stops answering. The source is the real generator (or a
//! counting source for the bounds); the sinks here are fault-injecting test destinations.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cdc_bridge::checkpoint::{CheckpointStore, Position};
use cdc_bridge::config::{BatchConfig, BufferConfig};
use cdc_bridge::envelope::{Row, SourcePosition, Value};
use cdc_bridge::error::{BoxError, ConnectorError, Disposition};
use cdc_bridge::pipeline::{self, PipelineError, PipelineSettings};
use cdc_bridge::shutdown::ShutdownTrigger;
use cdc_bridge::sink::{Batch, Delivery, Sink};
use cdc_bridge::source::{Mark, Source, SourceContext};
use cdc_bridge::sources::generator::{GeneratorConfig, GeneratorSource};

#[derive(Debug, thiserror::Error)]
#[error("injected delivery failure of batch {0}")]
struct Injected(u64);

impl ConnectorError for Injected {
    fn disposition(&self) -> Disposition {
        Disposition::Transient
    }
}

/// Records the `seq` of delivered events. Deliveries finish after a delay that shrinks with
/// the batch id (so later batches complete first); the batch numbered `fail_batch` fails.
struct ShufflingSink {
    delivered: Arc<Mutex<Vec<u64>>>,
    fail_batch: Option<u64>,
}

fn seq_of(row: &Row) -> u64 {
    match row.get("seq") {
        Some(Value::Int(seq)) => *seq as u64,
        other => panic!("no seq: {other:?}"),
    }
}

#[async_trait]
impl Sink for ShufflingSink {
    async fn submit(&mut self, batch: Arc<Batch>) -> Result<Delivery, BoxError> {
        let delivered = self.delivered.clone();
        let fail = self.fail_batch == Some(batch.id);
        let delay = Duration::from_millis(40 - (batch.id % 4) * 10);
        Ok(Box::pin(async move {
            tokio::time::sleep(delay).await;
            if fail {
                return Err(Injected(batch.id).into());
            }
            let mut out = delivered.lock().unwrap();
            for event in &batch.events {
                let SourcePosition::Generator { seq } = event.source.position else {
                    panic!("not a generator position: {:?}", event.source.position);
                };
                out.push(seq);
                if let Some(after) = &event.after {
                    assert_eq!(seq_of(after), seq);
                }
            }
            Ok(())
        }))
    }
}

fn settings(
    max_events: usize,
    in_flight: usize,
    buffer_events: usize,
    buffer_bytes: u32,
) -> PipelineSettings {
    let batch = BatchConfig {
        max_events: max_events.try_into().unwrap(),
        max_in_flight: in_flight.try_into().unwrap(),
        linger_ms: 5,
        ..BatchConfig::default()
    };
    let buffer = BufferConfig {
        max_events: buffer_events.try_into().unwrap(),
        max_bytes: buffer_bytes.try_into().unwrap(),
    };
    PipelineSettings {
        name: "faults".into(),
        batch,
        buffer,
    }
}

fn generator(extra: &str) -> Box<dyn Source> {
    let config: GeneratorConfig = toml::from_str(extra).unwrap();
    Box::new(GeneratorSource::new(config))
}

fn stored(store: &CheckpointStore) -> u64 {
    store
        .load("faults")
        .unwrap()
        .get("")
        .map_or(0, |p| p.token.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_acks_and_a_failed_batch_never_lose_or_skip_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(CheckpointStore::open(dir.path()).unwrap());
    let trigger = ShutdownTrigger::new();
    let settings = settings(10, 4, 1000, 1 << 24);
    let delivered = Arc::new(Mutex::new(Vec::new()));

    // Run 1: batch 5 (events 51..=60) fails while later batches may already have succeeded.
    let sink = ShufflingSink {
        delivered: delivered.clone(),
        fail_batch: Some(5),
    };
    let err = pipeline::run(
        &settings,
        generator("count = 200"),
        Box::new(sink),
        store.clone(),
        trigger.subscribe(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, PipelineError::Sink(_)), "{err}");
    assert_eq!(err.disposition(), Disposition::Transient);
    let after_failure = stored(&store);
    assert!(
        after_failure <= 50,
        "the checkpoint passed the failed batch: {after_failure}"
    );
    let first_run = delivered.lock().unwrap().clone();
    for seq in 1..=after_failure {
        assert!(
            first_run.contains(&seq),
            "{seq} is checkpointed but was never delivered"
        );
    }

    // Run 2 resumes after the stored checkpoint and completes.
    delivered.lock().unwrap().clear();
    let sink = ShufflingSink {
        delivered: delivered.clone(),
        fail_batch: None,
    };
    let summary = pipeline::run(
        &settings,
        generator("count = 200"),
        Box::new(sink),
        store.clone(),
        trigger.subscribe(),
    )
    .await
    .unwrap();
    assert_eq!(stored(&store), 200);
    assert_eq!(summary.events_delivered, 200 - after_failure);
    let mut second_run = delivered.lock().unwrap().clone();
    second_run.sort_unstable();
    assert_eq!(second_run, (after_failure + 1..=200).collect::<Vec<_>>());
}

/// A sink whose deliveries never complete.
struct StuckSink {
    submitted: Arc<AtomicU64>,
}

#[async_trait]
impl Sink for StuckSink {
    async fn submit(&mut self, batch: Arc<Batch>) -> Result<Delivery, BoxError> {
        self.submitted
            .fetch_add(batch.events.len() as u64, Ordering::SeqCst);
        Ok(Box::pin(std::future::pending()))
    }
}

/// Wraps the generator and counts what it managed to emit.
struct CountingSource {
    emitted: Arc<AtomicU64>,
    payload_bytes: usize,
}

#[async_trait]
impl Source for CountingSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), BoxError> {
        let config: GeneratorConfig =
            toml::from_str(&format!("payload_bytes = {}", self.payload_bytes)).unwrap();
        let generator = GeneratorSource::new(config);
        let (db, table) = ("db".into(), "t".into());
        for seq in 1.. {
            let event = generator.event(&ctx.pipeline, &db, &table, seq);
            let mark = Mark {
                partition: String::new(),
                position: Position::from_counter(seq.to_string(), seq),
            };
            if ctx.emit.event_then_checkpoint(event, mark).await.is_err() {
                break;
            }
            self.emitted.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

async fn emitted_against_a_stuck_sink(
    settings: PipelineSettings,
    payload_bytes: usize,
) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(CheckpointStore::open(dir.path()).unwrap());
    let (emitted, submitted) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let source = CountingSource {
        emitted: emitted.clone(),
        payload_bytes,
    };
    let sink = StuckSink {
        submitted: submitted.clone(),
    };
    let trigger = ShutdownTrigger::new();
    let run = tokio::spawn(async move {
        pipeline::run(
            &settings,
            Box::new(source),
            Box::new(sink),
            store,
            trigger.subscribe(),
        )
        .await
    });
    // Wait until the source is blocked: its count stops moving.
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = emitted.load(Ordering::SeqCst);
        if now == last {
            break;
        }
        last = now;
    }
    run.abort();
    (
        emitted.load(Ordering::SeqCst),
        submitted.load(Ordering::SeqCst),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_sink_stops_the_source_at_the_event_bound() {
    // 3 batches of 10 in flight + one open batch + 100 queued: the source must stop near 140.
    let (emitted, submitted) =
        emitted_against_a_stuck_sink(settings(10, 3, 100, 1 << 30), 16).await;
    assert_eq!(
        submitted, 30,
        "exactly max_in_flight batches are handed to the sink"
    );
    assert!((130..=145).contains(&emitted), "emitted {emitted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_sink_stops_the_source_at_the_byte_bound() {
    // Events of ~10 KiB against a 100 KiB budget: the source stops after about 10 events,
    // far below the event bound.
    let (emitted, _) =
        emitted_against_a_stuck_sink(settings(1000, 3, 10_000, 100 * 1024), 10 * 1024).await;
    assert!((5..=11).contains(&emitted), "emitted {emitted}");
}
