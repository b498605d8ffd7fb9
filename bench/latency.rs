//! Latency benchmark: `bench/run.sh` (or `cargo bench --bench latency` with the services of
//! `scripts/services.sh` running and their environment loaded).
//!
//! The release binary runs postgres -> kafka and postgres -> kinesis with default settings
//! (only addresses set). A writer commits transactions at a steady rate; a consumer in this
//! process reads the sink continuously (Kafka: every partition from the start; Kinesis: every
//! shard from TRIM_HORIZON, GetRecords in a loop). A row's latency is the time from its
//! COMMIT returning to the writer to its record being read, both taken on this process's
//! clock. Rows of the first two seconds (warm-up) are left out; the next ten are measured.
//! Two workloads per sink: light (200 single-row transactions/s) and steady (about half the
//! sink's ceiling on this machine: 2,000 rows/s to Kafka, 5,000 to Kinesis, in multi-row
//! transactions; `CDC_BRIDGE_BENCH_KAFKA_RATE` / `CDC_BRIDGE_BENCH_KINESIS_RATE` change it).
//! tansu on the same 2 cores takes far fewer records per second from transactions of 20-50
//! rows than from the generator's 1,000-event batches: at 5,000 rows/s it fell behind. So the
//! steady Kafka run has a reference, measured after every bridge run: a plain librdkafka producer
//! (idempotent, acks=all, librdkafka's defaults otherwise) sends records like the bridge's for
//! the same rows (its JSON envelope, key and headers) at the same pace straight to a topic that
//! the same consumer reads, which shows what the broker itself delivers for that workload.
//! The steady Kinesis run has one too: a plain client puts the bridge's records for the same
//! rows at the same pace (one PutRecords per transaction, each sent when its rows are written,
//! not waiting for the one before), read by the same reader: what the emulator itself delivers.
//! Prints p50, p99 and max per run, plus `REPORT` lines for `bench/run.sh`'s table. A row the
//! Kafka consumer never gets back is left out of the figures (and counted) only when the
//! topic's watermarks show it was delivered: tansu's fetch sometimes skips part of a
//! multi-record batch.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

#[path = "support.rs"]
mod support;

const WARMUP: Duration = Duration::from_secs(2);
const MEASURE: Duration = Duration::from_secs(10);
const KAFKA_PARTITIONS: i32 = 3;
const KINESIS_SHARDS: i32 = 4;

/// When each row was committed, and when its record was read.
#[derive(Default)]
struct Clock {
    committed: HashMap<i64, Instant>,
    read: HashMap<i64, Instant>,
}

type SharedClock = Arc<Mutex<Clock>>;

#[derive(Clone, Copy)]
struct Workload {
    transactions_per_sec: u32,
    rows_per_transaction: i64,
}

impl Workload {
    fn label(&self) -> String {
        format!(
            "{} txn/s x {} row{}",
            self.transactions_per_sec,
            self.rows_per_transaction,
            if self.rows_per_transaction == 1 {
                ""
            } else {
                "s"
            }
        )
    }
}

#[derive(Clone, Copy, PartialEq)]
enum SinkKind {
    Kafka,
    Kinesis,
}

fn rate_from_env(var: &str, default: u32) -> u32 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let var =
        |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name}: run bench/run.sh"));
    let pg_url = var("CDC_BRIDGE_PG_URL");
    let brokers = var("CDC_BRIDGE_KAFKA_BROKERS");
    let kinesis = var("CDC_BRIDGE_KINESIS_ENDPOINT");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let light = Workload {
        transactions_per_sec: 200,
        rows_per_transaction: 1,
    };
    let steady = |rate: u32| Workload {
        transactions_per_sec: 100,
        rows_per_transaction: i64::from(rate / 100).max(1),
    };
    let kafka_rate = rate_from_env("CDC_BRIDGE_BENCH_KAFKA_RATE", 2_000);
    let kinesis_rate = rate_from_env("CDC_BRIDGE_BENCH_KINESIS_RATE", 5_000);
    let runs = [
        (SinkKind::Kafka, light),
        (SinkKind::Kafka, steady(kafka_rate)),
        (SinkKind::Kinesis, light),
        (SinkKind::Kinesis, steady(kinesis_rate)),
    ];
    for (n, (sink, workload)) in runs.into_iter().enumerate() {
        let name = format!("lat{}_{n}", std::process::id());
        runtime.block_on(run(&pg_url, &brokers, &kinesis, sink, workload, &name));
    }
    // The broker's own figures for the steady Kafka workload, last: a broker that fell behind
    // stays slow for a while and would slow the run after it.
    let name = format!("lat{}_plain", std::process::id());
    let plain = runtime.block_on(plain_kafka_run(&brokers, steady(kafka_rate), &name));
    println!(
        "REPORT|latency -> kafka without the bridge, {} (p50 / p99 / max)||plain librdkafka producer, the bridge's records: {}||",
        steady(kafka_rate).label(),
        plain.short(),
    );
    let name = format!("lat{}_plain_kinesis", std::process::id());
    let plain = runtime.block_on(plain_kinesis_run(&kinesis, steady(kinesis_rate), &name));
    println!(
        "REPORT|latency -> kinesis without the bridge, {} (p50 / p99 / max)||plain PutRecords client, the bridge's records: {}||",
        steady(kinesis_rate).label(),
        plain.short(),
    );
}

async fn run(
    pg_url: &str,
    brokers: &str,
    kinesis_endpoint: &str,
    sink: SinkKind,
    workload: Workload,
    name: &str,
) {
    let client = pg_connect(pg_url).await;
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}; \
             CREATE TABLE {name}.t (id bigint PRIMARY KEY, at timestamptz); \
             CREATE PUBLICATION {name} FOR TABLE {name}.t;"
        ))
        .await
        .unwrap();
    let clock = SharedClock::default();
    let stop_reading = Arc::new(AtomicBool::new(false));
    let (sink_toml, reader) = match sink {
        SinkKind::Kafka => {
            create_kafka_topic(brokers, name).await;
            let reader = spawn_kafka_reader(brokers, name, clock.clone(), stop_reading.clone());
            (
                format!(
                    "kind = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"{name}\"\n{}",
                    support::kafka_sink_extra()
                ),
                reader,
            )
        }
        SinkKind::Kinesis => {
            let kinesis = kinesis_client(kinesis_endpoint).await;
            create_kinesis_stream(&kinesis, name).await;
            let reader = spawn_kinesis_reader(kinesis, name, clock.clone(), stop_reading.clone());
            (
                format!(
                    "kind = \"kinesis\"\nstream = \"{name}\"\nendpoint_url = \"{kinesis_endpoint}\"\nregion = \"us-east-1\"\n"
                ),
                reader,
            )
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_dir = \"state\"\n[[pipeline]]\nname = \"bench\"\n[pipeline.source]\nkind = \"postgres\"\n\
             url = \"{pg_url}\"\nslot = \"{name}\"\npublication = \"{name}\"\ntables = [\"{name}.t\"]\nsnapshot = \"never\"\n\
             [pipeline.sink]\n{sink_toml}"
        ),
    )
    .unwrap();
    let mut bridge = support::KillOnDrop(support::spawn_bridge(&config, dir.path(), Stdio::null()));
    wait_for_slot(&client, name).await;

    let writer = Writer::postgres(&client, name).await;
    let (measured, offered) = write_steadily(&writer, workload, &clock).await;
    let unread_note = wait_for_reads(&clock, sink, brokers, name).await;
    stop_reading.store(true, Ordering::Relaxed);
    let peak_rss = support::peak_rss_mib(bridge.0.id());
    support::terminate(&mut bridge.0);
    reader.join().unwrap();

    let figures = Figures::of(&measured, &clock);
    let target = match sink {
        SinkKind::Kafka => "kafka",
        SinkKind::Kinesis => "kinesis",
    };
    println!(
        "postgres -> {target:<7} {:<22} {figures}  ({} rows measured, {offered:.0} rows/s offered, bridge peak RSS {peak_rss:.1} MiB{unread_note})",
        workload.label(),
        figures.rows,
    );
    println!(
        "REPORT|latency postgres -> {target}, {} (p50 / p99 / max)|{}|p99 goal 100 ms|",
        workload.label(),
        figures.short(),
    );
    let _ = client
        .execute("SELECT pg_drop_replication_slot($1)", &[&name])
        .await;
    client
        .batch_execute(&format!(
            "DROP PUBLICATION {name}; DROP SCHEMA {name} CASCADE;"
        ))
        .await
        .unwrap();
}

/// Latency percentiles of one run.
#[derive(Clone, Copy)]
struct Figures {
    p50: Duration,
    p99: Duration,
    max: Duration,
    rows: usize,
}

impl Figures {
    /// The latencies of the `measured` rows that were read.
    fn of(measured: &[i64], clock: &SharedClock) -> Figures {
        let mut latencies: Vec<Duration> = {
            let clock = clock.lock().unwrap();
            measured
                .iter()
                .filter_map(|id| {
                    Some(
                        clock
                            .read
                            .get(id)?
                            .saturating_duration_since(clock.committed[id]),
                    )
                })
                .collect()
        };
        latencies.sort();
        let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
        Figures {
            p50: pick(0.5),
            p99: pick(0.99),
            max: *latencies.last().unwrap(),
            rows: latencies.len(),
        }
    }

    /// `p50 / p99 / max ms`.
    fn short(&self) -> String {
        format!(
            "{:.1} / {:.1} / {:.1} ms",
            ms(self.p50),
            ms(self.p99),
            ms(self.max)
        )
    }
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:>6.1} ms  p99 {:>6.1} ms  max {:>6.1} ms",
            ms(self.p50),
            ms(self.p99),
            ms(self.max)
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Waits (up to a minute) until every committed row was read. Returns a note on rows the
/// broker stored but whose fetch never returned them, which are left out of the figures.
async fn wait_for_reads(clock: &SharedClock, sink: SinkKind, brokers: &str, name: &str) -> String {
    let committed = clock.lock().unwrap().committed.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let read = {
            let clock = clock.lock().unwrap();
            clock
                .committed
                .keys()
                .filter(|id| clock.read.contains_key(id))
                .count()
        };
        if read == committed {
            return String::new();
        }
        if Instant::now() >= deadline {
            // tansu's fetch sometimes never returns part of a multi-record batch to a
            // librdkafka consumer: count what the topic holds before calling a row lost.
            let stored = match sink {
                SinkKind::Kafka => match kafka_records(brokers, name) {
                    Some(stored) => stored,
                    None => {
                        return format!(
                            "; {} of {committed} rows not read after a minute, and the broker did not answer for its watermarks: left out",
                            committed - read
                        )
                    }
                },
                SinkKind::Kinesis => read,
            };
            assert!(
                stored >= committed,
                "{committed} rows committed, {stored} delivered, {read} read after a minute"
            );
            return format!(
                "; {} of {committed} delivered rows never came back from the broker's fetch and are left out",
                committed - read
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// Waits until the bridge streams from its slot.
async fn wait_for_slot(client: &tokio_postgres::Client, slot: &str) {
    for _ in 0..600 {
        let active = client
            .query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND active",
                &[&slot],
            )
            .await
            .unwrap();
        if active.is_some() {
            // The walsender is attached; give START_REPLICATION a moment to be answered.
            tokio::time::sleep(Duration::from_millis(500)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the bridge did not start streaming from slot {slot}");
}

/// What a run writes its rows to.
enum Writer<'a> {
    /// The bridge's source table, one transaction per group of rows.
    Postgres(&'a tokio_postgres::Client, tokio_postgres::Statement),
    /// A topic, straight from a plain librdkafka producer (the broker's own reference).
    Kafka(&'a ThreadedProducer<DefaultProducerContext>, &'a str),
    /// A stream, straight from a plain PutRecords client (the emulator's own reference); the
    /// calls still running.
    Kinesis(
        &'a aws_sdk_kinesis::Client,
        &'a str,
        Mutex<tokio::task::JoinSet<()>>,
    ),
}

impl Writer<'_> {
    async fn postgres<'a>(client: &'a tokio_postgres::Client, name: &str) -> Writer<'a> {
        let insert = client
            .prepare(&format!(
                "INSERT INTO {name}.t SELECT g, now() FROM generate_series($1::bigint, $2::bigint) g"
            ))
            .await
            .unwrap();
        Writer::Postgres(client, insert)
    }

    /// Writes rows `first..=last`; returns once they are committed (Postgres), handed to
    /// the producer (Kafka) or their PutRecords call is sent off (Kinesis).
    async fn write(&self, first: i64, last: i64) {
        match self {
            Writer::Kinesis(client, stream, calls) => {
                use aws_sdk_kinesis::primitives::Blob;
                use aws_sdk_kinesis::types::PutRecordsRequestEntry;
                let entries: Vec<PutRecordsRequestEntry> = (first..=last)
                    .map(|id| {
                        let event = bridge_event(stream, id);
                        let (_, value, _) = bridge_record(&event);
                        PutRecordsRequestEntry::builder()
                            .partition_key(cdc_bridge::sinks::kinesis::partition_key(&event))
                            .data(Blob::new(value))
                            .build()
                            .unwrap()
                    })
                    .collect();
                let (client, stream) = ((*client).clone(), (*stream).to_owned());
                calls.lock().unwrap().spawn(async move {
                    support::put_every_record(&client, &stream, entries).await
                });
            }
            Writer::Postgres(client, insert) => {
                client.execute(insert, &[&first, &last]).await.unwrap();
            }
            Writer::Kafka(producer, topic) => {
                for id in first..=last {
                    // The bridge's record for the same row: its JSON envelope and headers.
                    let (key, value, position) = bridge_record(&bridge_event(topic, id));
                    let table = format!("{topic}.t");
                    let headers = OwnedHeaders::new_with_capacity(3)
                        .insert(Header {
                            key: "op",
                            value: Some("insert"),
                        })
                        .insert(Header {
                            key: "table",
                            value: Some(table.as_str()),
                        })
                        .insert(Header {
                            key: "position",
                            value: Some(position.as_str()),
                        });
                    let record = BaseRecord::to(topic)
                        .key(&key)
                        .payload(&value)
                        .headers(headers);
                    producer.send(record).map_err(|(error, _)| error).unwrap();
                }
            }
        }
    }
}

/// The event the bridge's Postgres source would emit for the insert of row `id` of table
/// `schema.t`.
fn bridge_event(schema: &str, id: i64) -> cdc_bridge::envelope::ChangeEvent {
    use cdc_bridge::envelope::{
        ChangeEvent, Op, PostgresPosition, Row, SourceInfo, SourceKind, SourcePosition, Value,
    };
    let position = SourcePosition::Postgres(PostgresPosition {
        lsn: (0x1A2B3C00 + id * 0x68) as u64,
        txid: Some((1000 + id / 20) as u32),
    });
    let at = chrono::DateTime::from_timestamp_millis(1764940800000 + id).expect("in range");
    ChangeEvent {
        op: Op::Insert,
        source: SourceInfo {
            connector: SourceKind::Postgres,
            pipeline: "bench".into(),
            database: "app".into(),
            schema: Some(schema.into()),
            table: "t".into(),
            table_schema: None,
            position: position.clone(),
            commit_ts_ms: Some(1764940800000 + id),
            snapshot: false,
            ttl_expired: false,
        },
        key: Row::from_iter([("id".into(), Value::Int(id))]),
        before: None,
        after: Some(Row::from_iter([
            ("id".into(), Value::Int(id)),
            ("at".into(), Value::TimestampTz(at)),
        ])),
        unchanged: Vec::new(),
        key_change: None,
        ts_ms: 1764940800000 + id,
    }
}

/// The key, value and position of the bridge's JSON record of `event`, made by the bridge's
/// own format.
fn bridge_record(event: &cdc_bridge::envelope::ChangeEvent) -> (Vec<u8>, Vec<u8>, String) {
    use cdc_bridge::format::{format_for, FormatSpec};
    let format = format_for(&FormatSpec::Json);
    let (mut key, mut value) = (Vec::new(), Vec::new());
    format
        .encode_key(event, &mut key)
        .expect("the json format encodes every event");
    format
        .encode_value(event, &mut value)
        .expect("the json format encodes every event");
    (key, value, event.source.position.to_string())
}

/// Writes `workload` for the warm-up and the measured period, noting each row's commit
/// time. Returns the ids committed in the measured period and the rows/s offered in it.
async fn write_steadily(
    writer: &Writer<'_>,
    workload: Workload,
    clock: &SharedClock,
) -> (Vec<i64>, f64) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / workload.transactions_per_sec);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = Instant::now();
    let mut next_id = 1i64;
    let mut measured = Vec::new();
    while start.elapsed() < WARMUP + MEASURE {
        ticks.tick().await;
        let last = next_id + workload.rows_per_transaction - 1;
        writer.write(next_id, last).await;
        let committed = Instant::now();
        let in_measure = start.elapsed() > WARMUP;
        let mut clock = clock.lock().unwrap();
        for id in next_id..=last {
            clock.committed.insert(id, committed);
            if in_measure {
                measured.push(id);
            }
        }
        next_id = last + 1;
    }
    let offered = measured.len() as f64 / MEASURE.as_secs_f64();
    (measured, offered)
}

/// The broker's own figures for `workload`: a plain librdkafka producer (idempotent, acks=all,
/// librdkafka's defaults otherwise, as the bridge) sends the rows straight to a topic read by
/// the same consumer.
async fn plain_kafka_run(brokers: &str, workload: Workload, name: &str) -> Figures {
    create_kafka_topic(brokers, name).await;
    let clock = SharedClock::default();
    let stop_reading = Arc::new(AtomicBool::new(false));
    let reader = spawn_kafka_reader(brokers, name, clock.clone(), stop_reading.clone());
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .unwrap();
    let (measured, offered) =
        write_steadily(&Writer::Kafka(&producer, name), workload, &clock).await;
    let unread_note = wait_for_reads(&clock, SinkKind::Kafka, brokers, name).await;
    stop_reading.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let figures = Figures::of(&measured, &clock);
    println!(
        "plain producer -> kafka {:<22} {figures}  ({} rows measured, {offered:.0} rows/s offered{unread_note})",
        workload.label(),
        figures.rows,
    );
    figures
}

/// The emulator's own figures for `workload`: a plain client puts the rows' records straight
/// into a stream read by the same reader, each transaction's rows in one PutRecords call sent
/// as they are written (calls overlap when the emulator is slower than the pace).
async fn plain_kinesis_run(endpoint: &str, workload: Workload, name: &str) -> Figures {
    let client = kinesis_client(endpoint).await;
    create_kinesis_stream(&client, name).await;
    let clock = SharedClock::default();
    let stop_reading = Arc::new(AtomicBool::new(false));
    let reader = spawn_kinesis_reader(client.clone(), name, clock.clone(), stop_reading.clone());
    let writer = Writer::Kinesis(&client, name, Mutex::default());
    let (measured, offered) = write_steadily(&writer, workload, &clock).await;
    if let Writer::Kinesis(_, _, calls) = writer {
        let mut calls = calls.into_inner().unwrap();
        while let Some(call) = calls.join_next().await {
            call.expect("a PutRecords task");
        }
    }
    let unread_note = wait_for_reads(&clock, SinkKind::Kinesis, "", name).await;
    stop_reading.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let figures = Figures::of(&measured, &clock);
    println!(
        "plain client -> kinesis {:<22} {figures}  ({} rows measured, {offered:.0} rows/s offered{unread_note})",
        workload.label(),
        figures.rows,
    );
    figures
}

/// The row id in a record of the bridge's JSON format.
fn id_of(payload: &[u8]) -> Option<i64> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    value["key"]["id"].as_i64()
}

fn note_read(clock: &SharedClock, payload: &[u8]) {
    let now = Instant::now();
    if let Some(id) = id_of(payload) {
        clock.lock().unwrap().read.entry(id).or_insert(now);
    }
}

async fn create_kafka_topic(brokers: &str, topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let results = admin
        .create_topics(
            &[NewTopic::new(
                topic,
                KAFKA_PARTITIONS,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    for result in results {
        result.expect("topic created");
    }
}

/// How many records `topic` holds (the sum of its partitions' high watermarks); `None` when
/// the broker does not answer (a broker far behind can take longer than the timeout).
fn kafka_records(brokers: &str, topic: &str) -> Option<usize> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    (0..KAFKA_PARTITIONS)
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(30))
                .ok()?;
            usize::try_from(high - low).ok()
        })
        .sum()
}

/// Reads every partition of `topic` from its start until `stop`.
fn spawn_kafka_reader(
    brokers: &str,
    topic: &str,
    clock: SharedClock,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", topic)
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap();
    let mut partitions = TopicPartitionList::new();
    for p in 0..KAFKA_PARTITIONS {
        partitions
            .add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&partitions).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(10)) {
                if let Some(payload) = message.payload() {
                    note_read(&clock, payload);
                }
            }
        }
    })
}

async fn kinesis_client(endpoint: &str) -> aws_sdk_kinesis::Client {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .load()
        .await;
    aws_sdk_kinesis::Client::new(&sdk)
}

async fn create_kinesis_stream(client: &aws_sdk_kinesis::Client, stream: &str) {
    client
        .create_stream()
        .stream_name(stream)
        .shard_count(KINESIS_SHARDS)
        .send()
        .await
        .expect("create stream");
    for _ in 0..100 {
        let summary = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .unwrap();
        let status = summary
            .stream_description_summary()
            .map(|s| s.stream_status().clone());
        if status == Some(aws_sdk_kinesis::types::StreamStatus::Active) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("stream {stream} did not become ACTIVE");
}

/// Reads every shard of `stream` from TRIM_HORIZON until `stop`, GetRecords in a loop.
fn spawn_kinesis_reader(
    client: aws_sdk_kinesis::Client,
    stream: &str,
    clock: SharedClock,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let stream = stream.to_owned();
    let handle = tokio::runtime::Handle::current();
    std::thread::spawn(move || {
        handle.block_on(async move {
            let shards = client
                .list_shards()
                .stream_name(&stream)
                .send()
                .await
                .unwrap();
            let mut readers = tokio::task::JoinSet::new();
            for shard in shards.shards() {
                let (client, stream, clock, stop) =
                    (client.clone(), stream.clone(), clock.clone(), stop.clone());
                let shard_id = shard.shard_id().to_owned();
                readers.spawn(async move {
                    let mut iterator = client
                        .get_shard_iterator()
                        .stream_name(&stream)
                        .shard_id(shard_id)
                        .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
                        .send()
                        .await
                        .unwrap()
                        .shard_iterator
                        .unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        let page = client
                            .get_records()
                            .shard_iterator(&iterator)
                            .send()
                            .await
                            .unwrap();
                        for record in page.records() {
                            note_read(&clock, record.data().as_ref());
                        }
                        if page.records().is_empty() {
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        iterator = page.next_shard_iterator.unwrap();
                    }
                });
            }
            while readers.join_next().await.is_some() {}
        });
    })
}
