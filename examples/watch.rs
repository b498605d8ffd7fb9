//! Prints change events as they arrive in a Kinesis stream or Kafka topics: the demo's window
//! onto what cdc-bridge publishes (`scripts/demo.sh` runs it).
//!
//!   cargo run --release --example watch -- kinesis ENDPOINT STREAM COUNT
//!   cargo run --release --example watch -- kafka BROKERS TOPIC[,TOPIC...] COUNT
//!
//! Reads from the beginning, prints one line per record (where it is, op, table, key,
//! position, the row after the change), and exits 0 once COUNT records were seen, or 1 after
//! 90 seconds without them. AWS credentials and region come from the usual environment.

use std::time::{Duration, Instant};

use aws_sdk_kinesis::types::ShardIteratorType;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

const TIMEOUT: Duration = Duration::from_secs(90);

fn usage() -> ! {
    eprintln!("usage: watch kinesis ENDPOINT STREAM COUNT | watch kafka BROKERS TOPICS COUNT");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kind, address, name, count] = args.as_slice() else {
        usage()
    };
    let count: usize = count.parse().unwrap_or_else(|_| usage());
    let seen = match kind.as_str() {
        "kinesis" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(watch_kinesis(address, name, count)),
        "kafka" => watch_kafka(address, name, count),
        _ => usage(),
    };
    if seen < count {
        eprintln!("watch: {seen} of {count} records after {TIMEOUT:?}");
        std::process::exit(1);
    }
}

/// One line per event: `op table key @position after`.
fn describe(data: &[u8]) -> String {
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(data) else {
        return format!("({} bytes, not JSON)", data.len());
    };
    let source = &event["source"];
    let table = match source["schema"].as_str() {
        Some(schema) => format!("{schema}.{}", source["table"].as_str().unwrap_or("?")),
        None => source["table"].as_str().unwrap_or("?").to_owned(),
    };
    format!(
        "{:<8} {table:<18} key={} @{} after={}",
        event["op"].as_str().unwrap_or("?"),
        event["key"],
        source["position"].as_str().unwrap_or("?"),
        event["after"]
    )
}

async fn watch_kinesis(endpoint: &str, stream: &str, count: usize) -> usize {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .load()
        .await;
    let client = aws_sdk_kinesis::Client::new(&sdk);
    let shards = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .expect("list shards (does the stream exist?)");
    let mut iterators = Vec::new();
    for shard in shards.shards() {
        let iterator = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("shard iterator");
        iterators.push((
            shard.shard_id().to_owned(),
            iterator.shard_iterator().map(str::to_owned),
        ));
    }
    let (start, mut seen) = (Instant::now(), 0);
    while seen < count && start.elapsed() < TIMEOUT {
        for (shard, iterator) in &mut iterators {
            let Some(current) = iterator.take() else {
                continue;
            };
            let page = client
                .get_records()
                .shard_iterator(current)
                .send()
                .await
                .expect("get records");
            for record in page.records() {
                seen += 1;
                println!("kinesis {shard} {}", describe(record.data().as_ref()));
            }
            *iterator = page.next_shard_iterator().map(str::to_owned);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    seen
}

fn watch_kafka(brokers: &str, topics: &str, count: usize) -> usize {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("cdc-bridge-watch-{}", std::process::id()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let topics: Vec<&str> = topics.split(',').collect();
    consumer.subscribe(&topics).expect("subscribe");
    let (start, mut seen) = (Instant::now(), 0);
    while seen < count && start.elapsed() < TIMEOUT {
        match consumer.poll(Duration::from_millis(250)) {
            Some(Ok(message)) => {
                seen += 1;
                let place = format!("{}[{}]", message.topic(), message.partition());
                match message.payload() {
                    Some(payload) => println!("kafka   {place} {}", describe(payload)),
                    None => println!(
                        "kafka   {place} tombstone key={}",
                        String::from_utf8_lossy(message.key().unwrap_or_default())
                    ),
                }
            }
            Some(Err(err)) => eprintln!("watch: {err}"),
            None => {}
        }
    }
    seen
}
