//! Reading topics back with a real Kafka consumer.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};

pub fn brokers() -> String {
    std::env::var("CDC_BRIDGE_KAFKA_BROKERS")
        .expect("CDC_BRIDGE_KAFKA_BROKERS is not set: run the tests with scripts/test.sh")
}

pub fn auth_brokers() -> String {
    std::env::var("CDC_BRIDGE_KAFKA_AUTH_BROKERS")
        .expect("CDC_BRIDGE_KAFKA_AUTH_BROKERS is not set: run the tests with scripts/test.sh")
}

#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    /// The value as JSON (`None` for a tombstone, and for records not read as JSON).
    pub value: Option<serde_json::Value>,
    pub headers: Vec<(String, String)>,
    pub raw_key: Option<Vec<u8>>,
    pub raw_value: Option<Vec<u8>>,
}

impl Record {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads `topic` from the beginning until `expected` records arrived (or `timeout`).
pub fn consume(brokers: &str, topic: &str, expected: usize, timeout: Duration) -> Vec<Record> {
    let group = format!("test-{topic}-{}", std::process::id());
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut records = Vec::new();
    let start = Instant::now();
    while records.len() < expected && start.elapsed() < timeout {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        records.push(to_record(&message.expect("consume"), true));
    }
    records
}

/// Reads every record of every partition of `topic` that exists now (up to each partition's
/// high watermark); empty when the topic does not exist.
pub fn consume_all(brokers: &str, topic: &str, timeout: Duration) -> Vec<Record> {
    read_all(brokers, topic, timeout, true)
}

/// Every record of `topic` once it holds at least `count` (waiting up to a minute; the topic
/// may not exist yet), values as JSON when `json`, else as bytes only.
pub fn wait_for_records(topic: &str, count: usize, json: bool) -> Vec<Record> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let records = read_all(&brokers(), topic, Duration::from_secs(10), json);
        if records.len() >= count {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {count} records in {topic} (have {})",
            records.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn read_all(brokers: &str, topic: &str, timeout: Duration, json: bool) -> Vec<Record> {
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("test-all-{topic}-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let Some(meta) = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
    else {
        return Vec::new();
    };
    let mut assignment = TopicPartitionList::new();
    let mut ends = std::collections::HashMap::new();
    for partition in meta.partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition.id(), Duration::from_secs(10))
            .expect("watermarks");
        if high > low {
            ends.insert(partition.id(), high);
            assignment
                .add_partition_offset(topic, partition.id(), Offset::Offset(low))
                .unwrap();
        }
    }
    if ends.is_empty() {
        return Vec::new();
    }
    consumer.assign(&assignment).expect("assign");
    let mut records = Vec::new();
    let start = Instant::now();
    while !ends.is_empty() {
        assert!(
            start.elapsed() < timeout,
            "topic {topic}: partitions {:?} not read to their end",
            ends.keys()
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.expect("consume");
        if ends
            .get(&message.partition())
            .is_some_and(|end| message.offset() + 1 >= *end)
        {
            ends.remove(&message.partition());
        }
        records.push(to_record(&message, json));
    }
    records
}

fn to_record(message: &BorrowedMessage<'_>, json: bool) -> Record {
    let headers = message
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Record {
        partition: message.partition(),
        offset: message.offset(),
        key: message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned()),
        value: message
            .payload()
            .filter(|_| json)
            .map(|p| serde_json::from_slice(p).expect("JSON value")),
        headers,
        raw_key: message.key().map(<[u8]>::to_vec),
        raw_value: message.payload().map(<[u8]>::to_vec),
    }
}

/// The partition librdkafka's own Java-compatible partitioner (`murmur2_random`, what Kafka's
/// Java client does) picks for each key in a topic of `partitions`: each key is produced to a
/// fresh topic of that many partitions and read back.
pub fn partitions_chosen_by_kafka_clients(
    brokers: &str,
    topic: &str,
    keys: &[String],
    partitions: i32,
) -> std::collections::HashMap<String, i32> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let created = runtime
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        ))
        .expect("create topic");
    for result in created {
        result.expect("topic created");
    }
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("partitioner", "murmur2_random")
        .create()
        .expect("producer");
    for key in keys {
        producer
            .send(BaseRecord::<str, str>::to(topic).key(key).payload("{}"))
            .expect("enqueued");
    }
    producer.flush(Duration::from_secs(30)).expect("flushed");
    consume_all(brokers, topic, Duration::from_secs(30))
        .into_iter()
        .map(|record| (record.key.expect("keyed"), record.partition))
        .collect()
}
