//! Kinesis sink benchmark: `bench/run.sh` (or `cargo bench --bench kinesis` with the emulator
//! of `scripts/services.sh` running and its environment loaded). Runs generator -> kinesis
//! (kinesalite on loopback, 4 shards) in this process for 100,000 events, then prints events/s
//! from start to the last accepted record, the average records per PutRecords call, and the
//! process's peak RSS. Once with one record per event, once with KPL aggregation.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdc_bridge::checkpoint::CheckpointStore;
use cdc_bridge::config::{BatchConfig, BufferConfig};
use cdc_bridge::pipeline::{self, PipelineSettings};
use cdc_bridge::shutdown::ShutdownTrigger;
use cdc_bridge::sinks::kinesis::{self, KinesisSink, KinesisSinkConfig};
use cdc_bridge::sources::generator::{GeneratorConfig, GeneratorSource};

const EVENTS: u64 = 100_000;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let endpoint = std::env::var("CDC_BRIDGE_KINESIS_ENDPOINT")
        .expect("CDC_BRIDGE_KINESIS_ENDPOINT: run bench/run.sh");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for aggregation in [false, true] {
        rt.block_on(run(&endpoint, aggregation));
    }
    println!(
        "bench process peak RSS {:>8.1} MiB",
        peak_rss_kib() / 1024.0
    );
}

async fn run(endpoint: &str, aggregation: bool) {
    let stream = format!("bench-{}-{aggregation}", std::process::id());
    let config: KinesisSinkConfig = toml::from_str(&format!(
        "stream = \"{stream}\"\nendpoint_url = \"{endpoint}\"\nregion = \"us-east-1\"\naggregation = {aggregation}\n"
    ))
    .unwrap();
    let stream_ref = config.validate("sink").unwrap();
    let sdk = kinesis::sdk_config(&config, &stream_ref).await.unwrap();
    let client = kinesis::client(&sdk, |b| b);
    client
        .create_stream()
        .stream_name(&stream)
        .shard_count(4)
        .send()
        .await
        .expect("create stream");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let sink = KinesisSink::connect(&config, &stream_ref).await.unwrap();
    let stats = sink.stats();
    let generator: GeneratorConfig =
        toml::from_str(&format!("count = {EVENTS}\nkeys = 10000")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(CheckpointStore::open(dir.path()).unwrap());
    let settings = PipelineSettings {
        name: "bench".into(),
        batch: BatchConfig::default(),
        buffer: BufferConfig::default(),
    };
    let trigger = ShutdownTrigger::new();
    let start = Instant::now();
    let summary = pipeline::run(
        &settings,
        Box::new(GeneratorSource::new(generator)),
        Box::new(sink),
        store,
        trigger.subscribe(),
    )
    .await
    .expect("pipeline");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(summary.events_delivered, EVENTS);
    let calls = stats.calls.load(Ordering::Relaxed) as f64;
    let records = stats.records_sent.load(Ordering::Relaxed) as f64;
    let label = if aggregation {
        "aggregated"
    } else {
        "one record per event"
    };
    println!(
        "generator -> kinesis ({label:<20}) {:>8.0} events/s  ({EVENTS} events in {secs:.2} s; {:.1} records and {:.1} events per PutRecords call)",
        EVENTS as f64 / secs,
        records / calls,
        EVENTS as f64 / calls,
    );
}

fn peak_rss_kib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}
