//! Faults under the Kafka sink, with librdkafka's mock cluster: injected produce errors and
//! brokers that go down and come back. No event is lost, none is acknowledged (checkpointed)
//! before the cluster confirmed it, and each key keeps its order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cdc_bridge::checkpoint::CheckpointStore;
use cdc_bridge::config::{BatchConfig, BufferConfig};
use cdc_bridge::pipeline::{self, PipelineSettings};
use cdc_bridge::shutdown::ShutdownTrigger;
use cdc_bridge::sinks::kafka::{KafkaSink, KafkaSinkConfig};
use cdc_bridge::sources::generator::{GeneratorConfig, GeneratorSource};
use cdc_bridge::telemetry::Telemetry;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};

const TOPIC: &str = "faults.items";

fn settings() -> PipelineSettings {
    let batch = BatchConfig {
        max_events: 50.try_into().unwrap(),
        linger_ms: 2,
        ..BatchConfig::default()
    };
    PipelineSettings {
        name: "faults".into(),
        batch,
        buffer: BufferConfig::default(),
    }
}

async fn sink(bootstrap: &str, extra: &str) -> KafkaSink {
    let config: KafkaSinkConfig = toml::from_str(&format!(
        "brokers = \"{bootstrap}\"\ntopic = \"faults.{{table}}\"\n{extra}"
    ))
    .unwrap();
    let template = config.validate("sink").unwrap();
    KafkaSink::connect(&config, template).await.unwrap()
}

fn generator(count: u64, rate: u32) -> GeneratorSource {
    let config: GeneratorConfig = toml::from_str(&format!(
        "count = {count}\nrate_per_sec = {rate}\nkeys = 13"
    ))
    .unwrap();
    GeneratorSource::new(config)
}

/// Every (seq, partition) in the topic, reading each partition from its start.
fn consume_all(bootstrap: &str, partitions: i32) -> Vec<(u64, i32, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "faults")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut out = Vec::new();
    let mut idle = 0;
    while idle < 10 {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                idle = 0;
                if let Some(payload) = message.payload() {
                    let event: serde_json::Value = serde_json::from_slice(payload).unwrap();
                    let seq = event["source"]["position"]
                        .as_str()
                        .unwrap()
                        .parse()
                        .unwrap();
                    out.push((
                        seq,
                        message.partition(),
                        String::from_utf8_lossy(message.key().unwrap()).into_owned(),
                    ));
                }
            }
            _ => idle += 1,
        }
    }
    out
}

/// Per key, sequence numbers only increase within each partition's log (repeats after a
/// restart are allowed only as a whole replay, which `max_seen` tolerates).
fn assert_complete_and_ordered(records: &[(u64, i32, String)], count: u64) {
    let mut partition_of: HashMap<&str, i32> = HashMap::new();
    for (_, partition, key) in records {
        assert_eq!(
            *partition_of.entry(key).or_insert(*partition),
            *partition,
            "key {key} changed partition"
        );
    }
    let mut seqs: Vec<u64> = records.iter().map(|r| r.0).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs, (1..=count).collect::<Vec<_>>(), "every event arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_produce_errors_are_retried_without_loss_or_reordering() {
    let cluster = MockCluster::new(3).unwrap();
    cluster.create_topic(TOPIC, 3, 3).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let errors = [
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
    ];
    cluster.request_errors(RDKafkaApiKey::Produce, &errors.repeat(4));
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(CheckpointStore::open(dir.path()).unwrap());
    let trigger = ShutdownTrigger::new();
    let summary = pipeline::run(
        &settings(),
        Box::new(generator(600, 100_000)),
        Box::new(sink(&bootstrap, "").await),
        store.clone(),
        trigger.subscribe(),
    )
    .await
    .unwrap();
    assert_eq!(summary.events_delivered, 600);
    let records = consume_all(&bootstrap, 3);
    let deletes = (1..=600u64).filter(|s| (s - 1) / 13 % 3 == 2).count();
    assert_eq!(records.len(), 600, "no duplicates from internal retries (idempotent producer); {deletes} tombstones not counted");
    // Within a partition, a key's sequence numbers strictly increase: retries kept the order.
    let mut last: HashMap<String, u64> = HashMap::new();
    for (seq, _, key) in &records {
        if let Some(previous) = last.insert(key.clone(), *seq) {
            assert!(*seq > previous, "key {key}: {seq} after {previous}");
        }
    }
    assert_complete_and_ordered(&records, 600);
}

/// A checkpoint store, a shutdown trigger, and pipeline runs against one broker's cluster.
struct Harness {
    _dir: tempfile::TempDir,
    store: Arc<CheckpointStore>,
    trigger: ShutdownTrigger,
    /// What an operator would scrape from the runs.
    telemetry: Telemetry,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(CheckpointStore::open(dir.path()).unwrap());
        Harness {
            _dir: dir,
            store,
            trigger: ShutdownTrigger::new(),
            telemetry: Telemetry::new(),
        }
    }

    /// Starts generator (`count` rows at 1,000/s) -> kafka in the background.
    async fn spawn_run(
        &self,
        bootstrap: &str,
        sink_extra: &str,
        count: u64,
    ) -> tokio::task::JoinHandle<Result<pipeline::RunSummary, pipeline::PipelineError>> {
        let (store, shutdown, sink) = (
            self.store.clone(),
            self.trigger.subscribe(),
            sink(bootstrap, sink_extra).await,
        );
        let probe = self.telemetry.probe("faults");
        tokio::spawn(async move {
            pipeline::run_observed(
                &settings(),
                Box::new(generator(count, 1000)),
                Box::new(sink),
                store,
                shutdown,
                probe,
            )
            .await
        })
    }
}

/// A one-broker mock cluster with the topic, and its bootstrap address.
fn one_broker_cluster() -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    String,
) {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, 3, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    (cluster, bootstrap)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_down_then_up_lose_nothing_and_nothing_is_acknowledged_early() {
    let (cluster, bootstrap) = one_broker_cluster();
    let harness = Harness::new();
    let (store, trigger) = (harness.store.clone(), &harness.trigger);

    // Run 1: the broker goes away for longer than the delivery timeout.
    let run = harness
        .spawn_run(&bootstrap, "delivery_timeout_ms = 1500", 2000)
        .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    cluster.broker_down(1).unwrap();
    let err = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the run fails within the delivery timeout")
        .unwrap()
        .unwrap_err();
    assert_eq!(
        err.disposition(),
        cdc_bridge::error::Disposition::Transient,
        "{err}"
    );
    let stored: u64 = store
        .load("faults")
        .unwrap()
        .get("")
        .map_or(0, |p| p.token.parse().unwrap());
    assert!(stored < 2000, "the outage must interrupt the run");
    // The records that timed out are counted for the operator.
    let metrics = harness.telemetry.render();
    let errors = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cdc_bridge_sink_delivery_errors_total{pipeline=\"faults\"} "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no delivery errors series in\n{metrics}"));
    assert!(errors > 0, "{metrics}");
    cluster.broker_up(1).unwrap();
    // Everything checkpointed was really in the cluster: nothing acknowledged before delivery.
    let delivered: Vec<u64> = consume_all(&bootstrap, 3).iter().map(|r| r.0).collect();
    for seq in 1..=stored {
        assert!(
            delivered.contains(&seq),
            "{seq} was checkpointed but is not in the topic"
        );
    }

    // Run 2, after the broker is back, resumes from the checkpoint and completes.
    let sink = sink(&bootstrap, "").await;
    pipeline::run(
        &settings(),
        Box::new(generator(2000, 100_000)),
        Box::new(sink),
        store.clone(),
        trigger.subscribe(),
    )
    .await
    .unwrap();
    assert_eq!(store.load("faults").unwrap()[""].token, "2000");
    assert_complete_and_ordered(&consume_all(&bootstrap, 3), 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_broker_outage_is_ridden_out_inside_one_run() {
    let (cluster, bootstrap) = one_broker_cluster();
    let harness = Harness::new();
    let run = harness.spawn_run(&bootstrap, "", 1500).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    cluster.broker_down(1).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.broker_up(1).unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(summary.events_delivered, 1500);
    let records = consume_all(&bootstrap, 3);
    assert_eq!(
        records.len(),
        1500,
        "librdkafka's retries are idempotent: no duplicate"
    );
    assert_complete_and_ordered(&records, 1500);
}
