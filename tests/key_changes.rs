//! Updates that change a row's primary key, from real PostgreSQL and MariaDB into the file,
//! Kinesis and Kafka sinks: a consumer that keeps the latest record per key (a delete or a
//! tombstone removes the key, as log compaction does) must end with exactly the rows of the
//! table, never a ghost row under an old key; and the file shows the two events a key change
//! becomes (the delete of the old key, then the insert under the new one, at one position).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use support::kafka::{brokers, consume_all};
use support::kinesis::{create_stream, endpoint, read_all};
use support::pg::{connect, drop_slot, env_url, MAIN};
use support::{read_records, terminate, wait_until, Workspace};

const WAIT: Duration = Duration::from_secs(60);

/// A consumer's view of a keyed stream: per table, the last row per key; a delete (or a Kafka
/// tombstone, `None`) removes the key. Returns each table's rows as sorted JSON texts.
fn latest_per_key(
    changes: impl IntoIterator<Item = (String, String, Option<Value>)>,
) -> BTreeMap<String, Vec<String>> {
    let mut view: BTreeMap<(String, String), Value> = BTreeMap::new();
    for (table, key, value) in changes {
        match value {
            Some(event) if event["op"] != "delete" && event["op"] != "truncate" => {
                view.insert((table, key), event["after"].clone());
            }
            _ => {
                view.remove(&(table, key));
            }
        }
    }
    let mut tables: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ((table, _), row) in view {
        tables.entry(table).or_default().push(row.to_string());
    }
    tables.values_mut().for_each(|rows| rows.sort());
    tables
}

/// The view of a file of events: identity = table and key.
fn file_view(events: &[Value]) -> BTreeMap<String, Vec<String>> {
    latest_per_key(events.iter().map(|e| {
        (
            e["source"]["table"].as_str().unwrap().to_owned(),
            e["key"].to_string(),
            Some(e.clone()),
        )
    }))
}

/// The view of a Kinesis stream: identity = the partition key, in each shard's order.
async fn kinesis_view(stream: &str) -> BTreeMap<String, Vec<String>> {
    let client = support::kinesis::client().await;
    let records = read_all(&client, stream).await;
    latest_per_key(records.iter().map(|r| {
        let event: Value = serde_json::from_slice(&r.data).expect("a JSON record");
        let table = event["source"]["table"].as_str().unwrap().to_owned();
        (table, r.partition_key.clone(), Some(event))
    }))
}

/// The view of a Kafka topic compacted logically: identity = the message key.
fn kafka_view(topic: &str) -> BTreeMap<String, Vec<String>> {
    let records = consume_all(&brokers(), topic, WAIT);
    assert!(!records.is_empty(), "topic {topic} is empty");
    let mut table_of_key: BTreeMap<String, String> = BTreeMap::new();
    latest_per_key(records.into_iter().map(|r| {
        let key = r.key.clone().expect("every record has a key");
        let table = match &r.value {
            Some(v) => v["source"]["table"].as_str().unwrap().to_owned(),
            None => table_of_key[&key].clone(),
        };
        table_of_key.insert(key.clone(), table.clone());
        (table, key, r.value)
    }))
}

/// Sorted JSON texts of the rows of each table, as `SELECT row_to_json` gives them.
fn sorted(rows: Vec<Value>) -> Vec<String> {
    let mut rows: Vec<String> = rows.iter().map(Value::to_string).collect();
    rows.sort();
    rows
}

/// The events of `table` that a key change produced, checked for their shape: the delete of
/// the old key (with `new_key`) directly followed by the insert under the new key (with
/// `old_key`), at the same position. Returns (old key, new key) of each key change.
fn key_changes(events: &[Value], table: &str) -> Vec<(Value, Value)> {
    let events: Vec<&Value> = events
        .iter()
        .filter(|e| e["source"]["table"] == table)
        .collect();
    let mut changes = Vec::new();
    for (i, event) in events.iter().enumerate() {
        if event.get("new_key").is_none() {
            assert!(
                event.get("old_key").is_none() || events[i - 1].get("new_key").is_some(),
                "an insert with old_key follows its delete: {event}"
            );
            continue;
        }
        let insert = events.get(i + 1).expect("the insert follows the delete");
        assert_eq!(event["op"], "delete", "{event}");
        assert_eq!(event["after"], Value::Null, "{event}");
        assert_eq!(insert["op"], "insert", "{insert}");
        assert_eq!(insert["before"], Value::Null, "{insert}");
        assert_eq!(event["new_key"], insert["key"], "{event} {insert}");
        assert_eq!(insert["old_key"], event["key"], "{event} {insert}");
        assert_eq!(event["source"], insert["source"], "one position for both");
        assert_ne!(event["key"], insert["key"]);
        changes.push((event["key"].clone(), insert["key"].clone()));
    }
    changes
}

/// Waits until every slot named has confirmed everything written so far: each pipeline
/// delivered and checkpointed all of it.
async fn pg_caught_up(client: &tokio_postgres::Client, slots: &[String], ws: &Workspace) {
    let target: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let start = std::time::Instant::now();
    loop {
        let behind: i64 = client
            .query_one(
                "SELECT count(*) FROM unnest($1::text[]) s LEFT JOIN pg_replication_slots r \
                 ON r.slot_name = s WHERE r.confirmed_flush_lsn IS NULL \
                 OR r.confirmed_flush_lsn < $2::text::pg_lsn",
                &[&slots, &target],
            )
            .await
            .unwrap()
            .get(0);
        if behind == 0 {
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "the pipelines did not catch up to {target}; log:\n{}",
            ws.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sink settings of one pipeline of the tests: `file`, `kinesis` (stream) or `kafka` (topic
/// template).
fn sink(kind: &str, ws: &Workspace, target: &str) -> String {
    match kind {
        "file" => format!("kind = \"file\"\npath = {:?}\n", ws.path(target)),
        "kinesis" => format!(
            "kind = \"kinesis\"\nstream = \"{target}\"\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\n",
            endpoint()
        ),
        "kafka" => format!(
            "kind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{target}\"\ncreate_topics = true\ntopic_partitions = 3\n",
            brokers()
        ),
        other => panic!("no sink {other}"),
    }
}

/// PostgreSQL: `d` (REPLICA IDENTITY DEFAULT: the old key arrives as a key tuple) and `f`
/// (FULL, a two-column key: the whole old row arrives). Rows copied by the snapshot, then key
/// changes (five in one statement, a key moved away and back in one transaction, a moved row
/// deleted, one column of a composite key), plain updates (which stay updates), and inserts.
/// Each pipeline of `sinks` (kind, target) reads the same changes through a slot of its own.
async fn pg_key_changes(name: &str, sinks: &[(&str, String)], ws: &Workspace) -> Vec<String> {
    let client = connect(&env_url(MAIN)).await;
    let slots: Vec<String> = (0..sinks.len()).map(|i| format!("{name}_{i}")).collect();
    for slot in &slots {
        drop_slot(&client, slot).await;
    }
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}; DROP PUBLICATION IF EXISTS {name}; \
             CREATE TABLE {name}.d (id int PRIMARY KEY, v text); \
             CREATE TABLE {name}.f (id int, k text, v text, PRIMARY KEY (id, k)); \
             ALTER TABLE {name}.f REPLICA IDENTITY FULL; \
             CREATE PUBLICATION {name} FOR TABLE {name}.d, {name}.f; \
             INSERT INTO {name}.d SELECT i, 'v' || i FROM generate_series(1, 6) i; \
             INSERT INTO {name}.f VALUES (1, 'x', 'a'), (2, 'x', 'b'), (3, 'x', 'c')"
        ))
        .await
        .unwrap();
    let mut config = String::new();
    for (slot, (kind, target)) in slots.iter().zip(sinks) {
        config.push_str(&format!(
            "[[pipeline]]\nname = \"{slot}\"\n[pipeline.source]\nkind = \"postgres\"\nurl = \"${{{MAIN}}}\"\n\
             slot = \"{slot}\"\npublication = \"{name}\"\ntables = [\"{name}.d\", \"{name}.f\"]\n\
             heartbeat_interval_ms = 500\nstatus_interval_ms = 500\n[pipeline.sink]\n{}\
             [pipeline.batch]\nlinger_ms = 5\n\n",
            sink(kind, ws, target)
        ));
    }
    let config = ws.config(&config);
    let mut child = ws.spawn(&["run", "--config", config.to_str().unwrap()]);
    pg_caught_up(&client, &slots, ws).await;
    client
        .batch_execute(&format!(
            "UPDATE {name}.d SET id = id + 100 WHERE id <= 5; \
             UPDATE {name}.d SET v = 'changed' WHERE id = 6; \
             BEGIN; UPDATE {name}.d SET id = 7 WHERE id = 6; UPDATE {name}.d SET id = 6 WHERE id = 7; COMMIT; \
             UPDATE {name}.d SET id = 200, v = 'moved' WHERE id = 101; DELETE FROM {name}.d WHERE id = 200; \
             UPDATE {name}.f SET k = 'y' WHERE id = 1; UPDATE {name}.f SET v = 'bb' WHERE id = 2; \
             INSERT INTO {name}.d VALUES (7, 'new'); INSERT INTO {name}.f VALUES (4, 'x', 'd')"
        ))
        .await
        .unwrap();
    pg_caught_up(&client, &slots, ws).await;
    terminate(&child);
    assert!(child.wait().unwrap().success(), "{}", ws.log_tail());
    for slot in &slots {
        drop_slot(&client, slot).await;
    }
    slots
}

async fn pg_table(name: &str, table: &str) -> Vec<String> {
    let client = connect(&env_url(MAIN)).await;
    let rows = client
        .query(
            &format!("SELECT row_to_json(t)::text FROM {name}.{table} t"),
            &[],
        )
        .await
        .unwrap();
    sorted(
        rows.iter()
            .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap())
            .collect(),
    )
}

async fn assert_pg_view(name: &str, view: &BTreeMap<String, Vec<String>>, sink: &str) {
    for table in ["d", "f"] {
        assert_eq!(
            view.get(table).cloned().unwrap_or_default(),
            pg_table(name, table).await,
            "{sink}: the latest row per key of table {table} is the table"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_key_changes_leave_no_ghost_rows_in_file_and_kinesis() {
    let name = "keychg_pg";
    let ws = Workspace::new();
    let stream = support::kinesis::stream_name("keychg-pg");
    create_stream(&support::kinesis::client().await, &stream, 2).await;
    pg_key_changes(
        name,
        &[("file", "out.jsonl".into()), ("kinesis", stream.clone())],
        &ws,
    )
    .await;

    let events = read_records(&ws.path("out.jsonl"));
    assert_pg_view(name, &file_view(&events), "file").await;
    assert_pg_view(name, &kinesis_view(&stream).await, "kinesis").await;
    let changes = key_changes(&events, "d");
    let ids =
        |(old, new): &(Value, Value)| (old["id"].as_i64().unwrap(), new["id"].as_i64().unwrap());
    assert_eq!(
        changes.iter().map(ids).collect::<Vec<_>>(),
        [
            (1, 101),
            (2, 102),
            (3, 103),
            (4, 104),
            (5, 105),
            (6, 7),
            (7, 6),
            (101, 200)
        ]
    );
    // REPLICA IDENTITY DEFAULT: the delete's before is the old key, all the source sent.
    let first = events.iter().find(|e| e.get("new_key").is_some()).unwrap();
    assert_eq!(first["before"], json!({"id": 1}));
    assert_eq!(
        key_changes(&events, "f"),
        [(json!({"id": 1, "k": "x"}), json!({"id": 1, "k": "y"}))]
    );
    let f_delete = events
        .iter()
        .find(|e| e["source"]["table"] == "f" && e["op"] == "delete")
        .unwrap();
    assert_eq!(
        f_delete["before"],
        json!({"id": 1, "k": "x", "v": "a"}),
        "FULL: the old row"
    );
    // Plain updates stay updates, under their key.
    let updates: Vec<&Value> = events.iter().filter(|e| e["op"] == "update").collect();
    assert_eq!(updates.len(), 2, "{updates:#?}");
    assert_eq!(updates[0]["key"], json!({"id": 6}));
    assert_eq!(updates[1]["key"], json!({"id": 2, "k": "x"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_key_changes_leave_no_ghost_rows_in_a_compacted_topic() {
    let name = "keychg_pgk";
    let ws = Workspace::new();
    let topic = format!("{name}-{}", std::process::id());
    let slots = pg_key_changes(
        name,
        &[("kafka", format!("{topic}.{{schema}}.{{table}}"))],
        &ws,
    )
    .await;
    let mut view = BTreeMap::new();
    for table in ["d", "f"] {
        view.extend(kafka_view(&format!("{topic}.{name}.{table}")));
    }
    assert_pg_view(name, &view, "kafka").await;
    drop(slots);
}

/// MariaDB: the binlog's before image holds the old key. Rows copied by the snapshot, then
/// the same kinds of key changes as on PostgreSQL.
async fn mysql_key_changes(table: &str, sinks: &[(&str, String)], ws: &Workspace) {
    use support::mysql::{connect, sql, url};
    let mut conn = connect().await;
    sql(
        &mut conn,
        &format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id INT, k VARCHAR(10), v VARCHAR(20), PRIMARY KEY (id, k)); \
             INSERT INTO {table} VALUES (1, 'x', 'a'), (2, 'x', 'b'), (3, 'x', 'c'), (4, 'x', 'd'), (5, 'x', 'e'), (6, 'x', 'f')"
        ),
    )
    .await;
    let mut config = String::new();
    for (i, (kind, target)) in sinks.iter().enumerate() {
        config.push_str(&format!(
            "[[pipeline]]\nname = \"{table}_{i}\"\n[pipeline.source]\nkind = \"mysql\"\nurl = \"{}\"\n\
             server_id = {}\ntables = [\"app.{table}\"]\n[pipeline.sink]\n{}[pipeline.batch]\nlinger_ms = 5\n\n",
            url(),
            6000 + (std::process::id() % 1000) * 4 + i as u32,
            sink(kind, ws, target)
        ));
    }
    let config = ws.config(&config);
    let mut child = ws.spawn(&["run", "--config", config.to_str().unwrap()]);
    tokio::task::block_in_place(|| {
        wait_until(WAIT, "every pipeline streaming", || {
            let log = std::fs::read_to_string(ws.path("bridge.log")).unwrap_or_default();
            log.matches("streaming the binlog").count() >= sinks.len()
        })
    });
    sql(
        &mut conn,
        &format!(
            "UPDATE {table} SET id = id + 100 WHERE id <= 5; \
             UPDATE {table} SET v = 'changed' WHERE id = 6; \
             START TRANSACTION; UPDATE {table} SET id = 7 WHERE id = 6; UPDATE {table} SET id = 6 WHERE id = 7; COMMIT; \
             UPDATE {table} SET id = 200, v = 'moved' WHERE id = 101; DELETE FROM {table} WHERE id = 200; \
             UPDATE {table} SET k = 'y' WHERE id = 102; \
             INSERT INTO {table} VALUES (7, 'x', 'new'), (999, 'x', 'end')"
        ),
    )
    .await;
    // Once every pipeline delivered the last insert, a clean stop leaves everything delivered.
    let rt = tokio::runtime::Handle::current();
    let delivered_last = |kind: &str, target: &str| -> bool {
        match kind {
            "file" => read_records(&ws.path(target))
                .iter()
                .any(|e| e["key"]["id"] == 999),
            "kinesis" => rt.block_on(async {
                let client = support::kinesis::client().await;
                read_all(&client, target)
                    .await
                    .iter()
                    .any(|r| r.partition_key.contains("\"id\":999"))
            }),
            _ => consume_all(&brokers(), target, WAIT)
                .iter()
                .any(|r| r.key.as_deref().is_some_and(|k| k.contains("\"id\":999"))),
        }
    };
    tokio::task::block_in_place(|| {
        wait_until(WAIT, "the last insert in every sink", || {
            sinks
                .iter()
                .all(|(kind, target)| delivered_last(kind, &concrete(target, table)))
        })
    });
    terminate(&child);
    assert!(child.wait().unwrap().success(), "{}", ws.log_tail());
}

/// A MariaDB test's topic template with its placeholders filled in for `app.<table>`.
fn concrete(template: &str, table: &str) -> String {
    template
        .replace("{database}", "app")
        .replace("{table}", table)
}

async fn mysql_table(table: &str) -> Vec<String> {
    use mysql_async::prelude::Queryable;
    let mut conn = support::mysql::connect().await;
    let rows: Vec<(i64, String, String)> = conn
        .query(format!("SELECT id, k, v FROM {table}"))
        .await
        .unwrap();
    sorted(
        rows.into_iter()
            .map(|(id, k, v)| json!({"id": id, "k": k, "v": v}))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_key_changes_leave_no_ghost_rows_in_file_and_kinesis() {
    let table = format!("keychg_{}", std::process::id());
    let ws = Workspace::new();
    let stream = support::kinesis::stream_name("keychg-my");
    create_stream(&support::kinesis::client().await, &stream, 2).await;
    mysql_key_changes(
        &table,
        &[("file", "out.jsonl".into()), ("kinesis", stream.clone())],
        &ws,
    )
    .await;

    let events = read_records(&ws.path("out.jsonl"));
    let expected = mysql_table(&table).await;
    assert_eq!(
        file_view(&events).remove(&table).unwrap_or_default(),
        expected,
        "file"
    );
    assert_eq!(
        kinesis_view(&stream)
            .await
            .remove(&table)
            .unwrap_or_default(),
        expected,
        "kinesis"
    );
    let ids =
        |(old, new): &(Value, Value)| (old["id"].as_i64().unwrap(), new["id"].as_i64().unwrap());
    assert_eq!(
        key_changes(&events, &table)
            .iter()
            .map(ids)
            .collect::<Vec<_>>(),
        [
            (1, 101),
            (2, 102),
            (3, 103),
            (4, 104),
            (5, 105),
            (6, 7),
            (7, 6),
            (101, 200),
            (102, 102)
        ]
    );
    let first = events.iter().find(|e| e.get("new_key").is_some()).unwrap();
    assert_eq!(
        first["before"],
        json!({"id": 1, "k": "x", "v": "a"}),
        "the before image"
    );
    let updates: Vec<&Value> = events.iter().filter(|e| e["op"] == "update").collect();
    assert_eq!(updates.len(), 1, "{updates:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_key_changes_leave_no_ghost_rows_in_a_compacted_topic() {
    let table = format!("keychgk_{}", std::process::id());
    let ws = Workspace::new();
    let topic = format!("{table}.{{database}}.{{table}}");
    mysql_key_changes(&table, &[("kafka", topic.clone())], &ws).await;
    let view = kafka_view(&concrete(&topic, &table));
    assert_eq!(
        view.get(&table).cloned().unwrap_or_default(),
        mysql_table(&table).await,
        "kafka"
    );
}
