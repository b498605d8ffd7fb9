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
    /// A value Debezium's types cannot carry (the README lists them): the Debezium format
    /// stops on it as a data error, so the format check leaves this column out.
    pub refused_by_debezium: bool,
}

pub fn case(column_type: &'static str, literal: &'static str, expected: Value) -> Case {
    Case {
        column_type,
        literal,
        expected,
        refused_by_debezium: false,
    }
}

impl Case {
    pub fn refused_by_debezium(self) -> Case {
        Case {
            refused_by_debezium: true,
            ..self
        }
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
    // The format pipelines read `f`: the same rows without the columns Debezium refuses.
    // Their slots and publications may be left from an earlier run that failed.
    for slot in super::formats::format_slots(name) {
        super::pg::drop_slot(&fx.client, &slot).await;
        fx.sql(&format!("DROP PUBLICATION IF EXISTS {slot}")).await;
    }
    let kept: Vec<usize> = (0..cases.len())
        .filter(|&i| !cases[i].refused_by_debezium)
        .collect();
    let skipped: Vec<String> = (0..cases.len())
        .filter(|i| !kept.contains(i))
        .map(|i| format!("c{i}"))
        .collect();
    fx.sql(&format!(
        "CREATE TABLE {name}.f (id int PRIMARY KEY, {})",
        kept.iter()
            .map(|&i| columns[i].as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .await;
    let insert_both = |id: i32| {
        let values: Vec<&str> = kept.iter().map(|&i| cases[i].literal).collect();
        let names: Vec<String> = kept.iter().map(|i| format!("c{i}")).collect();
        format!(
            "{}; INSERT INTO {name}.f (id, {names}) VALUES ({id}, {}), ({}, {})",
            insert(id),
            values.join(", "),
            id + 1,
            vec!["NULL"; kept.len()].join(", "),
            names = names.join(", ")
        )
    };
    fx.sql(&insert_both(1)).await;
    let config = fx.config(&["t"], "");
    let text = std::fs::read_to_string(&config).unwrap();
    let (formats, avro_topic) = super::formats::with_format_pipelines(
        &text,
        Some((&format!("\"{name}.t\""), &format!("\"{name}.f\""))),
    );
    std::fs::write(&config, formats).unwrap();
    let child = fx.spawn(&config);
    fx.wait_for_events(2, Duration::from_secs(30));
    fx.sql(&insert_both(101)).await;
    let events = fx.wait_for_events(4, Duration::from_secs(30));
    super::formats::check_format_outputs(
        fx.ws.dir.path(),
        &fx.out(),
        &events,
        &skipped,
        &avro_topic,
        None,
    );
    fx.stop(child);
    fx.cleanup().await;
    for slot in super::formats::format_slots(name) {
        super::pg::drop_slot(&fx.client, &slot).await;
    }

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
