//! Shared driver of the type-family tests: one column per case, a row of values read by the
//! snapshot and the same row again through streaming, each compared with the expected JSON.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::Value;

use super::pg::PgFixture;

/// A column type, an SQL literal for it, and the JSON cdc-bridge must produce.
pub struct Case {
    pub column_type: &'static str,
    pub literal: &'static str,
    pub expected: Value,
}

pub fn case(column_type: &'static str, literal: &'static str, expected: Value) -> Case {
    Case {
        column_type,
        literal,
        expected,
    }
}

/// Creates a table with one column per case, inserts the values (and an all-NULL row) before
/// the bridge starts and again while it streams, and checks every value of every event.
pub async fn round_trip(name: &str, setup: &str, cases: &[Case]) {
    let fx = PgFixture::new(name).await;
    fx.sql(&format!("SET search_path = {name}; {setup}")).await;
    let columns: Vec<String> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| format!("c{i} {}", c.column_type))
        .collect();
    fx.sql(&format!(
        "CREATE TABLE {name}.t (id int PRIMARY KEY, {})",
        columns.join(", ")
    ))
    .await;
    let insert = |id: i32| {
        let values: Vec<&str> = cases.iter().map(|c| c.literal).collect();
        let nulls = vec!["NULL"; cases.len()];
        format!(
            "SET search_path = {name}; INSERT INTO {name}.t VALUES ({id}, {}), ({}, {})",
            values.join(", "),
            id + 1,
            nulls.join(", ")
        )
    };
    fx.sql(&insert(1)).await;
    let config = fx.config(&["t"], "");
    let child = fx.spawn(&config);
    fx.wait_for_events(2, Duration::from_secs(30));
    fx.sql(&insert(101)).await;
    let events = fx.wait_for_events(4, Duration::from_secs(30));
    fx.stop(child);
    fx.cleanup().await;

    assert_eq!(events.len(), 4, "{events:#?}");
    for event in &events {
        let id = event["key"]["id"].as_i64().unwrap();
        let expected_op = if id < 100 { "snapshot" } else { "insert" };
        assert_eq!(event["op"], expected_op);
        let after = &event["after"];
        for (i, case) in cases.iter().enumerate() {
            let column = format!("c{i}");
            let expected = if id % 2 == 1 {
                case.expected.clone()
            } else {
                Value::Null
            };
            assert_eq!(
                after[&column], expected,
                "{} ({}) in {expected_op} row {id}",
                case.column_type, case.literal
            );
        }
    }
}
