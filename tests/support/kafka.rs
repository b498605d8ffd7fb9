//! Reading topics back with a real Kafka consumer.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};

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
    pub value: Option<serde_json::Value>,
    pub headers: Vec<(String, String)>,
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
        let message = message.expect("consume");
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
        records.push(Record {
            partition: message.partition(),
            offset: message.offset(),
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            value: message
                .payload()
                .map(|p| serde_json::from_slice(p).expect("JSON value")),
            headers,
        });
    }
    records
}
