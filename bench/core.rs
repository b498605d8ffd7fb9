//! Core benchmarks: `cargo bench --bench core`. Prints figures; asserts nothing about speed.
//!
//! - JSON encoding of generator events on one thread (events/s, MB/s);
//! - the pipeline end to end, generator -> null sink (core overhead) and generator -> file
//!   (with an fsync per batch), in events/s;
//! - generator -> null with the daemon's metrics counted, beside the same without (what
//!   `[daemon] http_listen` costs);
//! - peak resident memory of this process (VmHWM) after all of it.

use std::sync::Arc;
use std::time::Instant;

use cdc_bridge::checkpoint::CheckpointStore;
use cdc_bridge::config::{BatchConfig, BufferConfig};
use cdc_bridge::envelope::ChangeEvent;
use cdc_bridge::format::avro::AvroEncoder;
use cdc_bridge::format::{format_for, DebeziumOptions, EncodeError, FormatSpec};
use cdc_bridge::pipeline::{self, PipelineSettings};
use cdc_bridge::shutdown::ShutdownTrigger;
use cdc_bridge::sink::Sink;
use cdc_bridge::sinks::file::{FileSink, FileSinkConfig};
use cdc_bridge::sinks::null::NullSink;
use cdc_bridge::sources::generator::{GeneratorConfig, GeneratorSource};
use cdc_bridge::telemetry::{PipelineProbe, Telemetry};

const ENCODE_EVENTS: u64 = 500_000;
const PIPELINE_EVENTS: u64 = 1_000_000;

fn generator(count: u64) -> GeneratorSource {
    let config: GeneratorConfig =
        toml::from_str(&format!("count = {count}\nkeys = 10000")).unwrap();
    GeneratorSource::new(config)
}

/// Events per second that `encode` encodes on one thread (values only), and bytes per event.
fn encode_rate(
    events: &[ChangeEvent],
    encode: impl Fn(&ChangeEvent, &mut Vec<u8>) -> Result<(), EncodeError>,
) -> (f64, usize) {
    let mut buf = Vec::with_capacity(1 << 20);
    let mut bytes = 0usize;
    let start = Instant::now();
    for i in 0..ENCODE_EVENTS as usize {
        buf.clear();
        encode(&events[i % events.len()], &mut buf).expect("the generator's events encode");
        bytes += buf.len();
    }
    let secs = start.elapsed().as_secs_f64();
    (ENCODE_EVENTS as f64 / secs, bytes / ENCODE_EVENTS as usize)
}

/// The JSON format's encoding rate, then each other format's beside it, measured alternately.
fn bench_encoding() {
    let g = generator(ENCODE_EVENTS);
    let (p, d, t) = ("bench".into(), "db".into(), "items".into());
    let events: Vec<_> = (1..=10_000).map(|seq| g.event(&p, &d, &t, seq)).collect();
    let json = format_for(&FormatSpec::Json);
    let (json_rate, json_bytes) = encode_rate(&events, |e, out| json.encode_value(e, out));
    println!("REPORT|JSON encode, 1 thread (events/s)|{json_rate:.0}||");
    println!("json encode        {json_rate:>10.0} events/s  ({json_bytes} B/event, 1 thread)");
    let others: [(&str, &str); 3] = [
        ("debezium", r#"format = "debezium""#),
        (
            "debezium, schemas",
            r#"format = { kind = "debezium", schemas = true }"#,
        ),
        ("dms", r#"format = "dms""#),
    ];
    for (label, toml) in others {
        #[derive(serde::Deserialize)]
        struct Sink {
            format: FormatSpec,
        }
        let spec = toml::from_str::<Sink>(toml)
            .expect("a format setting")
            .format;
        let format = format_for(&spec);
        let (rate, bytes) = encode_rate(&events, |e, out| format.encode_value(e, out));
        let (reference, _) = encode_rate(&events, |e, out| json.encode_value(e, out));
        println!(
            "REPORT|{label} encode, 1 thread (events/s)|{rate:.0}|json {reference:.0}|{:.2}x",
            rate / reference
        );
        println!("{label:<18} {rate:>10.0} events/s  ({bytes} B/event; json {reference:.0} in the same run)");
    }
    // The avro format's body without the registry's framing.
    let avro = AvroEncoder::new(DebeziumOptions::default());
    let (rate, _) = encode_rate(&events, |e, out| avro.encode_value(e, out));
    let (reference, _) = encode_rate(&events, |e, out| json.encode_value(e, out));
    println!(
        "REPORT|avro body encode, 1 thread (events/s)|{rate:.0}|json {reference:.0}|{:.2}x",
        rate / reference
    );
}

async fn bench_pipeline(label: &str, sink: Box<dyn Sink>) {
    let rate = run_pipeline(sink, PipelineProbe::detached("bench")).await;
    println!("REPORT|pipeline generator {label} (events/s)|{rate:.0}||");
    println!("pipeline {label:<10}{rate:>10.0} events/s  ({PIPELINE_EVENTS} events)");
}

/// Events per second of generator -> `sink`, counting into `probe`.
async fn run_pipeline(sink: Box<dyn Sink>, probe: Arc<PipelineProbe>) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(CheckpointStore::open(dir.path()).unwrap());
    let settings = PipelineSettings {
        name: "bench".into(),
        batch: BatchConfig::default(),
        buffer: BufferConfig::default(),
    };
    let trigger = ShutdownTrigger::new();
    let start = Instant::now();
    let summary = pipeline::run_observed(
        &settings,
        Box::new(generator(PIPELINE_EVENTS)),
        sink,
        store,
        trigger.subscribe(),
        probe,
    )
    .await
    .unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(summary.events_delivered, PIPELINE_EVENTS);
    PIPELINE_EVENTS as f64 / secs
}

/// generator -> null with metrics counted and scraped, beside runs without, alternated.
async fn bench_metrics_overhead() {
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        off.push(run_pipeline(Box::new(NullSink), PipelineProbe::detached("bench")).await);
        let telemetry = Arc::new(Telemetry::new());
        let scraper = {
            let telemetry = telemetry.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    std::hint::black_box(telemetry.render());
                }
            })
        };
        let probe = telemetry.probe("bench");
        on.push(run_pipeline(Box::new(NullSink), probe).await);
        scraper.abort();
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (on, off) = (median(&mut on), median(&mut off));
    println!("pipeline -> null, metrics {on:>10.0} events/s; without {off:.0} (medians of 3, alternated)");
    println!(
        "REPORT|pipeline generator -> null with metrics (events/s, median of 3)|{on:.0}|without metrics {off:.0}|{:.3}x (overhead {:.1} %)",
        on / off,
        (1.0 - on / off) * 100.0
    );
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(f64::NAN);
    kib / 1024.0
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` probes with --list: nothing to list.
    }
    bench_encoding();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        bench_pipeline("-> null", Box::new(NullSink)).await;
        bench_metrics_overhead().await;
        let dir = tempfile::tempdir().unwrap();
        let config = FileSinkConfig {
            path: dir.path().join("bench.jsonl"),
            format: Default::default(),
        };
        bench_pipeline("-> file", Box::new(FileSink::open(&config).await.unwrap())).await;
    });
    println!(
        "peak RSS           {:>10.1} MiB (whole benchmark process)",
        peak_rss_mib()
    );
}
