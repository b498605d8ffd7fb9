//! Checkpoint stores: `cargo bench --bench stores` (bench/run.sh starts PostgreSQL and DynamoDB
//! Local). Prints figures; asserts nothing about speed.
//!
//! For the local store (redb, fsync per commit) and the shared stores (Postgres, DynamoDB
//! Local), each with a lease and every commit fenced:
//! - sequential commits per second and their latency (p50, p99): the latency a batch's
//!   checkpoint adds (the pipeline commits off the delivery path and coalesces commits while
//!   one is under way, so it bounds how often progress is stored, not throughput);
//! - beside it, the server's own floor measured in the same run: a plain single-row upsert
//!   (Postgres, tokio-postgres) or PutItem (DynamoDB, the AWS SDK) on the same server;
//! - the pipeline generator -> null with that store, in events/s, beside the local store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cdc_bridge::checkpoint::{Checkpoints, Fence, FencedStore, Position, Store};
use cdc_bridge::config::{BatchConfig, BufferConfig, Secret};
use cdc_bridge::coordination::SharedStore;
use cdc_bridge::pipeline::{self, PipelineSettings};
use cdc_bridge::shutdown::ShutdownTrigger;
use cdc_bridge::sinks::null::NullSink;
use cdc_bridge::sources::generator::{GeneratorConfig, GeneratorSource};
use cdc_bridge::stores::{DynamoDbStore, DynamoDbStoreConfig, PostgresStore, PostgresStoreConfig};

const COMMITS: u64 = 1000;
const PIPELINE_EVENTS: u64 = 300_000;
const LEASE: Duration = Duration::from_secs(10);

fn at(n: u64) -> Checkpoints {
    Checkpoints::from([(String::new(), Position::from_counter(n.to_string(), n))])
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1000.0
}

/// Commits per second and latency percentiles (ms) of `COMMITS` sequential commits.
async fn commit_rate(store: &dyn Store, fence: Option<&Fence>, pipeline: &str) -> (f64, f64, f64) {
    let mut took = Vec::with_capacity(COMMITS as usize);
    let start = Instant::now();
    for n in 1..=COMMITS {
        let one = Instant::now();
        store.apply(pipeline, &at(n), &[], fence).await.unwrap();
        took.push(one.elapsed());
    }
    let rate = COMMITS as f64 / start.elapsed().as_secs_f64();
    took.sort();
    (rate, percentile(&took, 0.5), percentile(&took, 0.99))
}

/// A fence held on `store` for `pipeline`.
async fn hold(store: &dyn SharedStore, pipeline: &str) -> Fence {
    let key = format!("pipeline/{pipeline}");
    store.create(&key).await.unwrap();
    let row = store
        .leases()
        .await
        .unwrap()
        .into_iter()
        .find(|l| l.key == key)
        .unwrap();
    store
        .take(&row, "bench")
        .await
        .unwrap()
        .expect("a free lease")
}

async fn pipeline_rate(store: Arc<dyn Store>, name: &str) -> f64 {
    let config: GeneratorConfig =
        toml::from_str(&format!("count = {PIPELINE_EVENTS}\nkeys = 10000")).unwrap();
    let settings = PipelineSettings {
        name: name.into(),
        batch: BatchConfig::default(),
        buffer: BufferConfig::default(),
    };
    let trigger = ShutdownTrigger::new();
    let start = Instant::now();
    let summary = pipeline::run(
        &settings,
        Box::new(GeneratorSource::new(config)),
        Box::new(NullSink),
        store,
        trigger.subscribe(),
    )
    .await
    .unwrap();
    assert_eq!(summary.events_delivered, PIPELINE_EVENTS);
    PIPELINE_EVENTS as f64 / start.elapsed().as_secs_f64()
}

fn report(label: &str, (rate, p50, p99): (f64, f64, f64), reference: &str) {
    println!("{label}: {rate:.0} commits/s, p50 {p50:.2} ms, p99 {p99:.2} ms ({reference})");
    println!("REPORT|{label} checkpoint commits/s (p50, p99 ms)|{rate:.0} ({p50:.2}, {p99:.2})|{reference}|");
}

async fn postgres_floor(url: &str) -> f64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute("DROP TABLE IF EXISTS bench_floor; CREATE TABLE bench_floor (k text PRIMARY KEY, v bigint)")
        .await
        .unwrap();
    let start = Instant::now();
    for n in 0..COMMITS as i64 {
        client
            .execute("INSERT INTO bench_floor VALUES ('k', $1) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v", &[&n])
            .await
            .unwrap();
    }
    COMMITS as f64 / start.elapsed().as_secs_f64()
}

async fn dynamodb_floor(endpoint: &str, table: &str) -> f64 {
    use aws_sdk_dynamodb::types::AttributeValue;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let start = Instant::now();
    for n in 0..COMMITS {
        client
            .put_item()
            .table_name(table)
            .item("pk", AttributeValue::S("floor".into()))
            .item("sk", AttributeValue::S("floor".into()))
            .item("v", AttributeValue::N(n.to_string()))
            .send()
            .await
            .unwrap();
    }
    COMMITS as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn Store> =
        Arc::new(cdc_bridge::checkpoint::CheckpointStore::open(dir.path()).unwrap());
    let local_commits = commit_rate(&*local, None, "bench").await;
    report("local (redb, fsync)", local_commits, "-");
    let local_pipeline = pipeline_rate(local.clone(), "bench-pipeline").await;

    let pg_url = std::env::var("CDC_BRIDGE_PG_URL").expect("run bench/run.sh stores");
    let config = PostgresStoreConfig {
        url: Secret::new(pg_url.clone()),
        schema: format!("bench_store_{}", std::process::id()),
        allow_cleartext_password: false,
    };
    let postgres: Arc<dyn SharedStore> =
        Arc::new(PostgresStore::open(config, LEASE).await.unwrap());
    let endpoint = std::env::var("CDC_BRIDGE_DYNAMODB_ENDPOINT").expect("run bench/run.sh stores");
    let table = format!("bench-store-{}", std::process::id());
    let config = DynamoDbStoreConfig {
        table: table.clone(),
        region: Some("us-east-1".into()),
        endpoint_url: Some(endpoint.clone()),
    };
    let dynamodb: Arc<dyn SharedStore> =
        Arc::new(DynamoDbStore::open(config, LEASE).await.unwrap());

    let mut pipelines = Vec::new();
    for (label, store, floor) in [
        ("postgres", postgres, postgres_floor(&pg_url).await),
        (
            "dynamodb (DynamoDB Local)",
            dynamodb,
            dynamodb_floor(&endpoint, &table).await,
        ),
    ] {
        let fence = hold(&*store, "bench").await;
        let commits = commit_rate(&*store, Some(&fence), "bench").await;
        report(
            &format!("{label}, fenced"),
            commits,
            &format!("plain single-row write {floor:.0}/s"),
        );
        let fence = hold(&*store, "bench-pipeline").await;
        let fenced: Arc<dyn Store> = Arc::new(FencedStore::new(store.clone(), fence));
        pipelines.push((label, pipeline_rate(fenced, "bench-pipeline").await));
    }
    for (label, rate) in pipelines {
        println!("pipeline generator -> null on the {label} store: {rate:.0} events/s (local store {local_pipeline:.0})");
        println!(
            "REPORT|pipeline generator -> null, {label} store (events/s)|{rate:.0}|local store {local_pipeline:.0}|{:.2}x",
            rate / local_pipeline
        );
    }
}
