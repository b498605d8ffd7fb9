//! Several tables in one Kafka topic, from a real PostgreSQL into the tansu broker: the record
//! key names the table, so a delete in one table never tombstones another table's row with
//! the same primary key; a keyless table's delete gets no tombstone, which would remove every
//! row of its table from a compacted topic.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use support::kafka::{brokers, consume_all, Record};
use support::pg::PgFixture;

const WAIT: Duration = Duration::from_secs(60);

/// What log compaction keeps: the last record per key; a tombstone removes its key.
fn compacted(records: &[Record]) -> BTreeMap<String, Value> {
    let mut view = BTreeMap::new();
    for record in records {
        let key = record.key.clone().expect("every record has a key");
        match &record.value {
            Some(value) => view.insert(key, value.clone()),
            None => view.remove(&key),
        };
    }
    view
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_sharing_a_topic_never_tombstone_each_other() {
    let fx = PgFixture::new("kafka_shared").await;
    fx.sql(
        "CREATE TABLE kafka_shared.a (id int PRIMARY KEY, v text); \
         CREATE TABLE kafka_shared.b (id int PRIMARY KEY, v text); \
         CREATE TABLE kafka_shared.logs (v text); \
         ALTER TABLE kafka_shared.logs REPLICA IDENTITY FULL",
    )
    .await;
    let topic = format!("kafka-shared-{}", std::process::id());
    let config = fx.config(&["a", "b", "logs"], "snapshot = \"never\"");
    let text = std::fs::read_to_string(&config).unwrap();
    let file_sink = format!("kind = \"file\"\npath = \"out/{}.jsonl\"\n", fx.name);
    assert!(text.contains(&file_sink));
    let text = text.replace(
        &file_sink,
        &format!(
            "kind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{topic}\"\ncreate_topics = true\ntopic_partitions = 3\n",
            brokers()
        ),
    );
    std::fs::write(&config, text).unwrap();
    let child = fx.spawn(&config);
    fx.wait_caught_up(WAIT).await;
    fx.sql(
        "INSERT INTO kafka_shared.a VALUES (1, 'a1'), (2, 'a2'); \
         INSERT INTO kafka_shared.b VALUES (1, 'b1'), (2, 'b2'); \
         INSERT INTO kafka_shared.logs VALUES ('x'), ('y'), ('z'); \
         DELETE FROM kafka_shared.a WHERE id = 1; \
         DELETE FROM kafka_shared.b WHERE id = 2; \
         DELETE FROM kafka_shared.logs WHERE v = 'x'",
    )
    .await;
    fx.wait_caught_up(WAIT).await;
    fx.stop(child);
    fx.cleanup().await;

    let records = consume_all(&brokers(), &topic, WAIT);
    let view = compacted(&records);
    let rows: Vec<(&str, &Value)> = view
        .values()
        .filter(|v| v["op"] != "delete")
        .map(|v| (v["source"]["table"].as_str().unwrap(), &v["after"]))
        .collect();
    assert_eq!(
        rows.iter()
            .filter(|(t, _)| *t != "logs")
            .collect::<Vec<_>>(),
        [
            &("a", &json!({"id": 2, "v": "a2"})),
            &("b", &json!({"id": 1, "v": "b1"})),
        ],
        "each table's own rows survive compaction, whatever the other table deleted"
    );
    assert_eq!(records.len(), 10 + 2, "ten changes and two tombstones");
    let tombstones: Vec<&str> = records
        .iter()
        .filter(|r| r.value.is_none())
        .map(|r| r.key.as_deref().unwrap())
        .collect();
    assert_eq!(
        tombstones.len(),
        2,
        "no tombstone for a keyless row: {tombstones:?}"
    );
    for record in records.iter().filter(|r| r.value.is_some()) {
        let value = record.value.as_ref().unwrap();
        let table = format!(
            "kafka_shared.{}",
            value["source"]["table"].as_str().unwrap()
        );
        let key: Value = serde_json::from_str(record.key.as_deref().unwrap()).unwrap();
        assert_eq!(
            key,
            json!({"table": table, "key": value["key"]}),
            "a shared topic's key names the table"
        );
    }

    let logs: Vec<&Value> = view
        .values()
        .filter(|v| v["source"]["table"] == "logs")
        .collect();
    assert_eq!(
        logs.len(),
        1,
        "a keyless table's changes share one key, so compaction keeps its last one: {logs:?}"
    );
    assert_eq!(logs[0]["op"], "delete");
}
