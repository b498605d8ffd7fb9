//! Kafka sink benchmark: `bench/run.sh` (or `cargo bench --bench kafka` with the broker of
//! `scripts/services.sh` running and its environment loaded).
//!
//! First the broker's ceiling: a plain librdkafka producer (idempotent, acks=all, librdkafka's
//! defaults otherwise) in this process sends the very records the bridge will send (the
//! generator's 200,000 events in the bridge's JSON format, with its key and headers) as fast
//! as the broker takes them, to a topic of its own; events/s from the first send to the last
//! delivery report. Then the release binary runs generator -> kafka with default settings for
//! the same events; events/s from start to exit (every delivery confirmed and checkpointed),
//! its CPU time and its peak RSS.
//!
//! CPU per event at saturation: a second, short run of 20,000 events measures what a run costs
//! whatever its length (start, connections, topic creation, stop); the difference between the
//! two runs' CPU times over the difference in events is what the events themselves cost. The
//! pair runs three times and the median is reported (single pairs varied by a tenth). The same
//! pairs with the null sink measure what the generator and the pipeline cost without Kafka: the
//! difference is the Kafka sink's own share, librdkafka's threads included.
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdc_bridge::format::{format_for, FormatSpec};
use cdc_bridge::sources::generator::{GeneratorConfig, GeneratorSource};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

#[path = "support.rs"]
mod support;

const EVENTS: u64 = 200_000;
const KEYS: u64 = 10_000;
/// The events of the short run, which measures what a run costs whatever its length.
const SHORT_EVENTS: u64 = 20_000;

/// How many times each full/short pair runs; the median pair's figure is reported.
const PAIRS: usize = 3;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let brokers = std::env::var("CDC_BRIDGE_KAFKA_BROKERS")
        .expect("CDC_BRIDGE_KAFKA_BROKERS: run bench/run.sh");
    let (ceiling, plain_us_per_event) = plain_producer(&brokers);
    let kafka_sink = format!(
        "kind = \"kafka\"\nbrokers = \"{brokers}\"\ncreate_topics = true\ntopic_partitions = 3\ntombstones = false\n{}",
        support::kafka_sink_extra()
    );
    let kafka = saturation(&kafka_sink, "kafka");
    let null = saturation("kind = \"null\"\n", "null");
    let full = &kafka.median_full;
    let rate = EVENTS as f64 / full.secs;
    println!("plain librdkafka producer {ceiling:>10.0} events/s  (the broker's ceiling for these records)");
    println!("generator -> kafka        {rate:>10.0} events/s  ({EVENTS} events in {:.2} s, every delivery confirmed; {:.2}x the ceiling)", full.secs, rate / ceiling);
    let whole_us = full.cpu_secs * 1e6 / EVENTS as f64;
    println!(
        "daemon CPU time           {:>10.2} s     ({whole_us:.1} us per event over the whole run)",
        full.cpu_secs
    );
    println!(
        "daemon CPU per event      {:>10.1} us    (median of {PAIRS} full/short pairs: {})",
        kafka.us_per_event,
        kafka.all.join(", ")
    );
    println!(
        "   with the null sink     {:>10.1} us    (the generator and the pipeline: {})",
        null.us_per_event,
        null.all.join(", ")
    );
    let sink_us = kafka.us_per_event - null.us_per_event;
    println!("   the kafka sink's share {sink_us:>10.1} us    (librdkafka's threads included)");
    println!("daemon peak RSS           {:>10.1} MiB", full.peak_mib);
    println!("REPORT|generator -> kafka (events/s)|{rate:.0}|plain librdkafka producer {ceiling:.0}|{:.2}x", rate / ceiling);
    println!("plain producer CPU time   {:>10.2} s     ({plain_us_per_event:.1} us per event, librdkafka alone)", plain_us_per_event * EVENTS as f64 / 1e6);
    println!("REPORT|kafka path: daemon CPU per event at saturation|{:.1} us|plain librdkafka producer {plain_us_per_event:.1} us (goal 5 us)|{:.2}x", kafka.us_per_event, kafka.us_per_event / plain_us_per_event);
    println!(
        "REPORT|kafka path: the kafka sink's share of it|{sink_us:.1} us|generator -> null {:.1} us|",
        null.us_per_event
    );
    println!(
        "REPORT|kafka path: daemon CPU per event, whole run with start and stop|{whole_us:.1} us||"
    );
    println!(
        "REPORT|kafka path: daemon peak RSS|{:.1} MiB||",
        full.peak_mib
    );
}

/// CPU per event at saturation of the generator into one sink.
struct Saturation {
    /// The median of the pairs.
    us_per_event: f64,
    /// Every pair's figure, in the order they ran.
    all: Vec<String>,
    /// The full run of the median pair.
    median_full: BridgeRun,
}

/// Runs [`PAIRS`] full/short pairs into the sink `sink_toml` (the body of `[pipeline.sink]`).
fn saturation(sink_toml: &str, label: &str) -> Saturation {
    let mut pairs: Vec<(f64, BridgeRun)> = (0..PAIRS)
        .map(|pair| {
            let full = bridge_run(sink_toml, &format!("{label}-{pair}"), EVENTS);
            let short = bridge_run(sink_toml, &format!("{label}-short-{pair}"), SHORT_EVENTS);
            let us = (full.cpu_secs - short.cpu_secs) * 1e6 / (EVENTS - SHORT_EVENTS) as f64;
            (us, full)
        })
        .collect();
    let all = pairs.iter().map(|(us, _)| format!("{us:.1}")).collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (us_per_event, median_full) = pairs.swap_remove(PAIRS / 2);
    Saturation {
        us_per_event,
        all,
        median_full,
    }
}

/// What one run of the release binary took.
struct BridgeRun {
    secs: f64,
    cpu_secs: f64,
    peak_mib: f64,
}

/// Runs the generator into the sink `sink_toml` with default settings for `events` events.
fn bridge_run(sink_toml: &str, label: &str, events: u64) -> BridgeRun {
    let dir = tempfile::tempdir().unwrap();
    // The default topic template, `{pipeline}.{schema}.{table}`: a pipeline name of its own
    // gives each run a topic of its own.
    let pipeline = format!("bench-{label}-{}", std::process::id());
    std::fs::write(
        dir.path().join("bench.toml"),
        format!(
            "[daemon]\nstate_dir = \"state\"\n[[pipeline]]\nname = \"{pipeline}\"\n[pipeline.source]\nkind = \"generator\"\ncount = {events}\nkeys = {KEYS}\n\
             [pipeline.sink]\n{sink_toml}"
        ),
    )
    .unwrap();
    // GNU time reports the daemon's own CPU time and peak RSS once it has exited.
    let start = Instant::now();
    let status = Command::new("/usr/bin/time")
        .args([
            "-o",
            "usage.txt",
            "-f",
            "%U %S %M",
            support::BRIDGE,
            "run",
            "--config",
            "bench.toml",
        ])
        .current_dir(dir.path())
        .env("CDC_BRIDGE_LOG", "warn")
        .stdout(Stdio::null())
        .status()
        .expect(
            "/usr/bin/time (Debian package time) runs the release binary: bench/run.sh builds it",
        );
    assert!(status.success(), "the bridge failed: {status}");
    let secs = start.elapsed().as_secs_f64();
    let usage = std::fs::read_to_string(dir.path().join("usage.txt")).unwrap();
    let figures: Vec<f64> = usage
        .split_whitespace()
        .map(|f| f.parse().expect("a number"))
        .collect();
    BridgeRun {
        secs,
        cpu_secs: figures[0] + figures[1],
        peak_mib: figures[2] / 1024.0,
    }
}

/// Sends the generator's events, as the bridge encodes them, with a plain idempotent
/// producer as fast as the broker confirms them; returns events/s and this process's CPU time
/// per event while sending (the records are encoded beforehand, so it is librdkafka's share).
fn plain_producer(brokers: &str) -> (f64, f64) {
    let topic = format!("bench-plain-{}", std::process::id());
    let generator: GeneratorConfig = toml::from_str(&format!("keys = {KEYS}")).unwrap();
    let generator = GeneratorSource::new(generator);
    let format = format_for(&FormatSpec::Json);
    let (pipeline, database, table): (Arc<str>, Arc<str>, Arc<str>) =
        ("bench".into(), "bench".into(), "items".into());
    let records: Vec<(Vec<u8>, Vec<u8>, String, String)> = (1..=EVENTS)
        .map(|seq| {
            let event = generator.event(&pipeline, &database, &table, seq);
            let (mut key, mut value) = (Vec::new(), Vec::new());
            format
                .encode_key(&event, &mut key)
                .expect("the json format encodes every event");
            format
                .encode_value(&event, &mut value)
                .expect("the json format encodes every event");
            (
                key,
                value,
                event.op.as_str().to_owned(),
                event.source.position.to_string(),
            )
        })
        .collect();
    create_topic(brokers, &topic);
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    let (start, cpu_at_start) = (Instant::now(), support::own_cpu_seconds());
    for (key, value, op, position) in &records {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "op",
                value: Some(op.as_str()),
            })
            .insert(Header {
                key: "table",
                value: Some("bench.items"),
            })
            .insert(Header {
                key: "position",
                value: Some(position.as_str()),
            });
        let mut record = BaseRecord::to(&topic)
            .key(key.as_slice())
            .payload(value.as_slice())
            .headers(headers);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, returned)) => {
                    record = returned;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    let secs = start.elapsed().as_secs_f64();
    let cpu_us_per_event = (support::own_cpu_seconds() - cpu_at_start) * 1e6 / EVENTS as f64;
    (EVENTS as f64 / secs, cpu_us_per_event)
}

fn create_topic(brokers: &str, topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let results = runtime
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, 3, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        ))
        .unwrap();
    for result in results {
        result.expect("topic created");
    }
}
