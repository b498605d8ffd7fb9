//! Changes a source hands over together (`Emitter::events`, the rows of one binlog event):
//! the pipeline still cuts batches at `batch.max_events`, keeps their order, and gets back the
//! whole budget they held. The source is a test source built on the generator's events; the
//! sink records what it was given.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cdc_bridge::checkpoint::{CheckpointStore, Position};
use cdc_bridge::config::{BatchConfig, BufferConfig};
use cdc_bridge::error::BoxError;
use cdc_bridge::pipeline::{self, PipelineSettings};
use cdc_bridge::shutdown::ShutdownTrigger;
use cdc_bridge::sink::{Batch, Delivery, Sink};
use cdc_bridge::source::{Mark, Source, SourceContext};
use cdc_bridge::sources::generator::{GeneratorConfig, GeneratorSource};

const GROUP: u64 = 25;
const GROUPS: u64 = 4;

fn generator() -> GeneratorSource {
    let config: GeneratorConfig = toml::from_str("").unwrap();
    GeneratorSource::new(config)
}

/// Emits `GROUPS` groups of `GROUP` events, each group at once and followed by its mark.
struct GroupingSource;

#[async_trait]
impl Source for GroupingSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), BoxError> {
        let generator = generator();
        let (db, table) = ("db".into(), "t".into());
        for group in 0..GROUPS {
            let seqs = group * GROUP + 1..=(group + 1) * GROUP;
            let events = seqs
                .clone()
                .map(|seq| generator.event(&ctx.pipeline, &db, &table, seq))
                .collect();
            let last = *seqs.end();
            let mark = Mark {
                partition: String::new(),
                position: Position::from_counter(last.to_string(), last),
            };
            if ctx.emit.events(events).await.is_err() || ctx.emit.checkpoint(mark).await.is_err() {
                break;
            }
        }
        Ok(())
    }
}

/// Records the positions of each batch it is given; every delivery succeeds.
struct RecordingSink(Arc<Mutex<Vec<Vec<u64>>>>);

#[async_trait]
impl Sink for RecordingSink {
    async fn submit(&mut self, batch: Arc<Batch>) -> Result<Delivery, BoxError> {
        let positions = batch
            .events
            .iter()
            .map(|event| event.source.position.to_string().parse().unwrap())
            .collect();
        self.0.lock().unwrap().push(positions);
        Ok(Box::pin(async { Ok(()) }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_events_are_cut_at_the_batch_size_in_order_and_return_their_budget() {
    let one_event = generator()
        .event(&"p".into(), &"db".into(), &"t".into(), 1)
        .approx_size();
    let settings = PipelineSettings {
        name: "groups".into(),
        batch: BatchConfig {
            max_events: 10.try_into().unwrap(),
            linger_ms: 1000,
            ..BatchConfig::default()
        },
        // Room for about one and a half groups: each group after the first waits for budget
        // that delivered batches give back.
        buffer: BufferConfig {
            max_bytes: u32::try_from(one_event * 40).unwrap().try_into().unwrap(),
            ..BufferConfig::default()
        },
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(CheckpointStore::open(dir.path()).unwrap());
    let batches = Arc::new(Mutex::new(Vec::new()));
    let trigger = ShutdownTrigger::new();
    let summary = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        pipeline::run(
            &settings,
            Box::new(GroupingSource),
            Box::new(RecordingSink(batches.clone())),
            store.clone(),
            trigger.subscribe(),
        ),
    )
    .await
    .expect("the budget of delivered groups comes back")
    .unwrap();

    let batches = batches.lock().unwrap().clone();
    assert!(
        batches.iter().all(|batch| batch.len() <= 10),
        "a batch holds at most max_events: {batches:?}"
    );
    let delivered: Vec<u64> = batches.concat();
    assert_eq!(delivered, (1..=GROUP * GROUPS).collect::<Vec<_>>());
    assert_eq!(summary.events_delivered, GROUP * GROUPS);
    let stored = store.load("groups").unwrap();
    assert_eq!(stored.get("").unwrap().token, (GROUP * GROUPS).to_string());
}
