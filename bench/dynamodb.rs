//! DynamoDB Streams source benchmark: `bench/run.sh` (or `cargo bench --bench dynamodb` with
//! the `dynamodb` service of `scripts/services.sh` running and its environment loaded).
//!
//! 20,000 items are written to a fresh table with a NEW_AND_OLD_IMAGES stream on DynamoDB
//! Local (BatchWriteItem, 25 items per call, 8 calls at a time). The same stream is then read
//! twice from TRIM_HORIZON, each timed from its start until it has read every record:
//! - a plain boto3 reader (`bench/dynamodb_boto3.py`, in a venv under `$CDC_BRIDGE_CACHE`,
//!   installed once), GetRecords in a loop, every image deserialized;
//! - the release build of cdc-bridge into the `stdout` sink (default settings), its lines
//!   counted here.
//!
//! Prints records/s of both, their ratio and the bridge's peak RSS.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Instant;

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, StreamViewType, WriteRequest};

#[path = "../tests/support/dynamodb.rs"]
mod ddb;
#[path = "support.rs"]
mod support;

const ITEMS: usize = 20_000;
const BOTO3: &str = "boto3==1.35.99";

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let endpoint = std::env::var("CDC_BRIDGE_DYNAMODB_ENDPOINT")
        .expect("CDC_BRIDGE_DYNAMODB_ENDPOINT: run bench/run.sh");
    let python = support::python_venv("boto3", BOTO3, "boto3");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let table = format!("bench-{}", std::process::id());
    let stream_arn = runtime.block_on(write_items(&table));

    let boto3_secs = boto3_reader(&python, &stream_arn);
    let (bridge_secs, peak_mib) = bridge(&endpoint, &table);
    let rate = |secs: f64| ITEMS as f64 / secs;
    let (bridge_rate, boto3_rate) = (rate(bridge_secs), rate(boto3_secs));
    println!(
        "boto3 reader       {boto3_rate:>10.0} records/s  ({boto3_secs:.2} s, images deserialized)"
    );
    println!("cdc-bridge         {bridge_rate:>10.0} records/s  ({bridge_secs:.2} s, into the stdout sink)");
    println!(
        "ratio              {:>10.2} x boto3",
        bridge_rate / boto3_rate
    );
    println!("bridge peak RSS    {peak_mib:>10.1} MiB");
    println!(
        "REPORT|DynamoDB Streams source, {ITEMS} records (records/s)|{bridge_rate:.0}|boto3 reader {boto3_rate:.0}|{:.2}x",
        bridge_rate / boto3_rate
    );
    println!("REPORT|DynamoDB Streams source: bridge peak RSS|{peak_mib:.1} MiB||");
    runtime.block_on(async {
        ddb::client()
            .await
            .delete_table()
            .table_name(&table)
            .send()
            .await
            .unwrap();
    });
}

/// Creates `table` with a stream, writes the items, returns the stream's ARN.
async fn write_items(table: &str) -> String {
    let db = ddb::client().await;
    ddb::create_table(&db, table, false, StreamViewType::NewAndOldImages).await;
    let described = db.describe_table().table_name(table).send().await.unwrap();
    let stream_arn = described
        .table()
        .and_then(|t| t.latest_stream_arn())
        .expect("a stream")
        .to_owned();
    let start = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    let mut batches = (0..ITEMS)
        .collect::<Vec<_>>()
        .chunks(25)
        .map(<[_]>::to_vec)
        .collect::<Vec<_>>()
        .into_iter();
    loop {
        while calls.len() < 8 {
            let Some(batch) = batches.next() else { break };
            let (db, table) = (db.clone(), table.to_owned());
            calls.spawn(async move {
                let mut requests: Vec<WriteRequest> = batch
                    .iter()
                    .map(|i| {
                        let item = [
                            ("pk".to_owned(), AttributeValue::S(format!("item-{i}"))),
                            ("n".to_owned(), AttributeValue::N(i.to_string())),
                            ("s".to_owned(), AttributeValue::S(format!("row-{i}"))),
                            ("flag".to_owned(), AttributeValue::Bool(i % 2 == 0)),
                        ];
                        WriteRequest::builder()
                            .put_request(
                                PutRequest::builder()
                                    .set_item(Some(item.into()))
                                    .build()
                                    .unwrap(),
                            )
                            .build()
                    })
                    .collect();
                while !requests.is_empty() {
                    let out = db
                        .batch_write_item()
                        .request_items(&table, requests)
                        .send()
                        .await
                        .expect("BatchWriteItem");
                    requests = out
                        .unprocessed_items()
                        .and_then(|u| u.get(&table).cloned())
                        .unwrap_or_default();
                }
            });
        }
        match calls.join_next().await {
            Some(done) => done.expect("a BatchWriteItem task"),
            None => break,
        }
    }
    println!(
        "wrote {ITEMS} items in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    stream_arn
}

fn boto3_reader(python: &std::path::Path, stream_arn: &str) -> f64 {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/dynamodb_boto3.py");
    let start = Instant::now();
    let out = Command::new(python)
        .args([script, stream_arn, &ITEMS.to_string()])
        .output()
        .unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(read, ITEMS, "the boto3 reader read {read} records");
    secs
}

/// Runs the bridge until its stdout holds a line per item; returns the time and peak RSS.
fn bridge(endpoint: &str, table: &str) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_dir = \"state\"\n[[pipeline]]\nname = \"bench\"\n[pipeline.source]\nkind = \"dynamodb\"\n\
             table = \"{table}\"\nendpoint_url = \"{endpoint}\"\nregion = \"us-east-1\"\n[pipeline.sink]\nkind = \"stdout\"\n"
        ),
    )
    .unwrap();
    let start = Instant::now();
    let mut child = support::spawn_bridge(&config, dir.path(), Stdio::piped());
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut read = 0;
    while read < ITEMS {
        lines.next().expect("the bridge exited early").unwrap();
        read += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let peak = support::peak_rss_mib(child.id());
    drop(lines);
    support::terminate(&mut child);
    (secs, peak)
}
