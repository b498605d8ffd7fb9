//! Kinesis sink benchmark: `bench/run.sh` (or `cargo bench --bench kinesis` with the emulator
//! of `scripts/services.sh` running and its environment loaded). Runs generator -> kinesis
//! (kinesalite on loopback, 4 shards) in this process for 100,000 events, then prints events/s
//! from start to the last accepted record, the average records per PutRecords call, and the
//! process's peak RSS. Once with one record per event, once with KPL aggregation. The
//! reference, measured first in the same run: a plain client of the emulator (the AWS SDK in
//! this process) putting the same records, with the same partition keys, in PutRecords calls
//! of 500, four calls at a time, to a stream of its own with the same 4 shards.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdc_bridge::checkpoint::CheckpointStore;
use cdc_bridge::config::{BatchConfig, BufferConfig};
use cdc_bridge::format::{format_for, FormatSpec};
use cdc_bridge::pipeline::{self, PipelineSettings};
use cdc_bridge::shutdown::ShutdownTrigger;
use cdc_bridge::sinks::kinesis::{self, KinesisSink, KinesisSinkConfig};
use cdc_bridge::sources::generator::{GeneratorConfig, GeneratorSource};

#[path = "support.rs"]
mod support;

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
    let ceiling = rt.block_on(plain_client(&endpoint));
    println!("plain PutRecords client {ceiling:>8.0} events/s  (500 records per call, 4 calls at a time)");
    for aggregation in [false, true] {
        let rate = rt.block_on(run(&endpoint, aggregation));
        let label = if aggregation {
            "KPL-aggregated"
        } else {
            "one record per event"
        };
        println!(
            "REPORT|generator -> kinesis, {label} (events/s)|{rate:.0}|plain PutRecords client {ceiling:.0}|{:.2}x",
            rate / ceiling
        );
    }
    println!(
        "bench process peak RSS {:>8.1} MiB",
        peak_rss_kib() / 1024.0
    );
}

/// A sink config for `stream` on the emulator, and an SDK client of it; the stream is created.
async fn stream_on(
    endpoint: &str,
    stream: &str,
    aggregation: bool,
) -> (KinesisSinkConfig, aws_sdk_kinesis::Client) {
    let config: KinesisSinkConfig = toml::from_str(&format!(
        "stream = \"{stream}\"\nendpoint_url = \"{endpoint}\"\nregion = \"us-east-1\"\naggregation = {aggregation}\n"
    ))
    .unwrap();
    let stream_ref = config.validate("sink").unwrap();
    let sdk = kinesis::sdk_config(&config, &stream_ref).await.unwrap();
    let client = kinesis::client(&sdk, |b| b);
    client
        .create_stream()
        .stream_name(stream)
        .shard_count(4)
        .send()
        .await
        .expect("create stream");
    tokio::time::sleep(Duration::from_millis(500)).await;
    (config, client)
}

/// Puts the generator's events as the sink would encode them, 500 per call, 4 calls at a
/// time, retrying rejected records; returns events/s.
async fn plain_client(endpoint: &str) -> f64 {
    use aws_sdk_kinesis::primitives::Blob;
    use aws_sdk_kinesis::types::PutRecordsRequestEntry;
    let stream = format!("bench-plain-{}", std::process::id());
    let (_, client) = stream_on(endpoint, &stream, false).await;
    let generator = GeneratorSource::new(toml::from_str("keys = 10000").unwrap());
    let format = format_for(&FormatSpec::Json);
    let (pipeline, database, table) = ("bench".into(), "bench".into(), "items".into());
    let entries: Vec<PutRecordsRequestEntry> = (1..=EVENTS)
        .map(|seq| {
            let event = generator.event(&pipeline, &database, &table, seq);
            let mut data = Vec::new();
            format
                .encode_value(&event, &mut data)
                .expect("the json format encodes every event");
            PutRecordsRequestEntry::builder()
                .partition_key(kinesis::partition_key(&event))
                .data(Blob::new(data))
                .build()
                .unwrap()
        })
        .collect();
    let start = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    let mut pending = entries.chunks(500).map(<[_]>::to_vec);
    loop {
        while calls.len() < 4 {
            let Some(chunk) = pending.next() else {
                break;
            };
            let (client, stream) = (client.clone(), stream.clone());
            calls.spawn(async move { support::put_every_record(&client, &stream, chunk).await });
        }
        match calls.join_next().await {
            Some(done) => done.expect("a PutRecords task"),
            None => break,
        }
    }
    EVENTS as f64 / start.elapsed().as_secs_f64()
}

async fn run(endpoint: &str, aggregation: bool) -> f64 {
    let stream = format!("bench-{}-{aggregation}", std::process::id());
    let (config, _) = stream_on(endpoint, &stream, aggregation).await;
    let stream_ref = config.validate("sink").unwrap();

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
    EVENTS as f64 / secs
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
