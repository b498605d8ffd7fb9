//! DynamoDB Local helpers: a client, tables with streams, and reading positions back.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    StreamSpecification, StreamViewType,
};
use aws_sdk_dynamodb::Client;

pub fn endpoint() -> String {
    std::env::var("CDC_BRIDGE_DYNAMODB_ENDPOINT")
        .expect("CDC_BRIDGE_DYNAMODB_ENDPOINT is not set: run the tests with scripts/test.sh")
}

pub async fn client() -> Client {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint())
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    Client::new(&sdk)
}

/// A unique table name per test run (the emulator outlives tests).
pub fn table_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

/// Creates a table keyed by `pk` (S), and `sk` (N) when `sort_key`, with a stream.
pub async fn create_table(client: &Client, name: &str, sort_key: bool, view: StreamViewType) {
    let mut request = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(view)
                .build()
                .unwrap(),
        );
    if sort_key {
        request = request
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("sk")
                    .attribute_type(ScalarAttributeType::N)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("sk")
                    .key_type(KeyType::Range)
                    .build()
                    .unwrap(),
            );
    }
    request.send().await.expect("create table");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let table = client
            .describe_table()
            .table_name(name)
            .send()
            .await
            .unwrap();
        if table
            .table()
            .and_then(|t| t.table_status())
            .map(|s| s.as_str())
            == Some("ACTIVE")
        {
            return;
        }
        assert!(Instant::now() < deadline, "table {name} not ACTIVE");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
