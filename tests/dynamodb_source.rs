//! The DynamoDB Streams source against DynamoDB Local: puts, updates and deletes on two tables
//! arrive with the right images and keys; `check` reports the stream; and a crash loop
//! (SIGKILL at random moments under a live workload) loses nothing and keeps per-item order,
//! each restart resuming after the stored shard checkpoint; END marks of shards gone from the
//! stream are pruned.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, StreamViewType};
use cdc_bridge::checkpoint::CheckpointStore;
use cdc_bridge::sources::dynamodb::{finished_position, FINISHED};
use serde_json::{json, Value};
use support::dynamodb::{client, create_table, endpoint, table_name};
use support::{read_records, stderr, terminate, wait_until, Rng, Workspace};

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.into())
}
fn n(v: &str) -> AttributeValue {
    AttributeValue::N(v.into())
}

fn pipeline(name: &str, table: &str, out: &str) -> String {
    format!(
        "[[pipeline]]\nname = \"{name}\"\n[pipeline.source]\nkind = \"dynamodb\"\ntable = \"{table}\"\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\npoll_interval_ms = 200\n\
         [pipeline.sink]\nkind = \"file\"\npath = \"{out}\"\n[pipeline.batch]\nlinger_ms = 5\n",
        endpoint()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_on_two_tables_arrive_with_their_images_and_keys() {
    let db = client().await;
    let (orders, events) = (table_name("orders"), table_name("events"));
    create_table(&db, &orders, false, StreamViewType::NewAndOldImages).await;
    create_table(&db, &events, true, StreamViewType::NewAndOldImages).await;
    let ws = Workspace::new();
    let config = ws.config(&format!(
        "{}\n{}",
        pipeline("ddb-orders", &orders, "orders.jsonl"),
        pipeline("ddb-events", &events, "events.jsonl")
    ));
    let config = config.to_str().unwrap();

    let check = ws.run(&["check", "--config", config]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{report}{}", stderr(&check));
    assert!(
        report.contains(&format!("of table {orders} is Enabled, 1 shard(s)")),
        "{report}"
    );
    assert!(report.contains("view type NEW_AND_OLD_IMAGES"), "{report}");

    let big = "12345678901234567890123456789012345678";
    db.put_item()
        .table_name(&orders)
        .item("pk", s("o1"))
        .item("total", n(big))
        .item("tags", AttributeValue::Ss(vec!["a".into()]))
        .send()
        .await
        .unwrap();
    db.update_item()
        .table_name(&orders)
        .key("pk", s("o1"))
        .update_expression("SET #t = :t")
        .expression_attribute_names("#t", "total")
        .expression_attribute_values(":t", n("2.5"))
        .return_values(ReturnValue::None)
        .send()
        .await
        .unwrap();
    db.delete_item()
        .table_name(&orders)
        .key("pk", s("o1"))
        .send()
        .await
        .unwrap();
    db.put_item()
        .table_name(&events)
        .item("pk", s("e"))
        .item("sk", n("1"))
        .item(
            "body",
            AttributeValue::M([("x".to_owned(), AttributeValue::Bool(true))].into()),
        )
        .send()
        .await
        .unwrap();
    db.delete_item()
        .table_name(&events)
        .key("pk", s("e"))
        .key("sk", n("1"))
        .send()
        .await
        .unwrap();

    let mut child = ws.spawn(&["run", "--config", config]);
    wait_until(Duration::from_secs(60), "5 events", || {
        read_records(&ws.path("orders.jsonl")).len() == 3
            && read_records(&ws.path("events.jsonl")).len() == 2
    });
    terminate(&child);
    assert!(child.wait().unwrap().success(), "{}", ws.log_tail());

    let o = read_records(&ws.path("orders.jsonl"));
    let ops: Vec<&str> = o.iter().map(|e| e["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["insert", "update", "delete"]);
    for event in &o {
        assert_eq!(event["key"], json!({"pk": "o1"}));
        assert_eq!(event["source"]["connector"], "dynamodb");
        assert_eq!(event["source"]["table"], orders.as_str());
        let position = event["source"]["position"].as_str().unwrap();
        assert!(
            position.starts_with("shardId-") && position.contains(':'),
            "{position}"
        );
    }
    assert_eq!(o[0]["before"], Value::Null);
    assert_eq!(
        o[0]["after"],
        json!({"pk": "o1", "tags": ["a"], "total": big}),
        "38 digits kept"
    );
    assert_eq!(o[1]["before"]["total"], big);
    assert_eq!(o[1]["after"]["total"], "2.5");
    assert_eq!(o[2]["before"]["total"], "2.5");
    assert_eq!(o[2]["after"], Value::Null);

    let e = read_records(&ws.path("events.jsonl"));
    assert_eq!(e[0]["key"], json!({"pk": "e", "sk": "1"}));
    assert_eq!(e[0]["after"]["body"], json!({"x": true}));
    assert_eq!(e[1]["op"], "delete");

    // A restart resumes after the stored checkpoint: nothing again, then only the new change.
    db.put_item()
        .table_name(&orders)
        .item("pk", s("o2"))
        .send()
        .await
        .unwrap();
    child = ws.spawn(&["run", "--config", config]);
    wait_until(Duration::from_secs(60), "the new event", || {
        read_records(&ws.path("orders.jsonl")).len() >= 4
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    terminate(&child);
    child.wait().unwrap();
    let o = read_records(&ws.path("orders.jsonl"));
    assert_eq!(o.len(), 4, "only the change after the checkpoint");
    assert_eq!(o[3]["key"], json!({"pk": "o2"}));
}

/// END marks of shards the stream no longer lists (aged out past the 24-hour retention; the
/// emulator never rolls shards, so they are stored up front) are deleted from the checkpoint
/// store, the last one only once the live shard has a checkpoint of its own; nothing is read
/// twice across a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_marks_of_shards_gone_from_the_stream_are_pruned() {
    let db = client().await;
    let table = table_name("prune");
    create_table(&db, &table, false, StreamViewType::NewAndOldImages).await;
    let ws = Workspace::new();
    let config = ws.config(&pipeline("ddb-prune", &table, "out.jsonl"));
    let config = config.to_str().unwrap().to_owned();
    let gone: Vec<String> = (1..=40)
        .map(|i| format!("shardId-00000001600000000000-{i:08x}"))
        .collect();
    let stored = || {
        CheckpointStore::open(&ws.path("state"))
            .unwrap()
            .load("ddb-prune")
            .unwrap()
    };
    CheckpointStore::open(&ws.path("state"))
        .unwrap()
        .commit(
            "ddb-prune",
            &gone
                .iter()
                .map(|s| (s.clone(), finished_position()))
                .collect(),
        )
        .unwrap();
    for pk in ["a", "b", "c"] {
        db.put_item()
            .table_name(&table)
            .item("pk", s(pk))
            .send()
            .await
            .unwrap();
    }

    let child = ws.spawn(&["run", "--config", &config]);
    wait_until(
        Duration::from_secs(60),
        "3 events and every END mark pruned",
        || {
            let log = std::fs::read_to_string(ws.path("bridge.log")).unwrap_or_default();
            read_records(&ws.path("out.jsonl")).len() == 3
            && log.contains("shards=39") // the first listing keeps one...
            && log.contains("shards=1") // ...until the live shard has its checkpoint
        },
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    terminate(&child);
    let mut child = child;
    assert!(child.wait().unwrap().success(), "{}", ws.log_tail());
    let after = stored();
    assert_eq!(after.len(), 1, "only the live shard: {:?}", after.keys());
    let (shard, position) = after.iter().next().unwrap();
    assert!(
        !gone.contains(shard) && position.token != FINISHED,
        "{shard}: {position:?}"
    );

    // A restart reads only the new change: nothing from the pruned shards, nothing twice.
    db.put_item()
        .table_name(&table)
        .item("pk", s("d"))
        .send()
        .await
        .unwrap();
    let mut child = ws.spawn(&["run", "--config", &config]);
    wait_until(Duration::from_secs(60), "the new event", || {
        read_records(&ws.path("out.jsonl")).len() >= 4
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    terminate(&child);
    assert!(child.wait().unwrap().success(), "{}", ws.log_tail());
    let keys: Vec<Value> = read_records(&ws.path("out.jsonl"))
        .iter()
        .map(|e| e["key"]["pk"].clone())
        .collect();
    assert_eq!(keys, ["a", "b", "c", "d"]);
    assert_eq!(stored().len(), 1);
}

const KILLS: usize = 22;

/// One write of the workload: the item, the version `g` written (or, for a delete, removed).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Write {
    pk: String,
    g: u64,
    deleted: bool,
}

fn write_of(event: &Value) -> (Write, String) {
    let deleted = event["op"] == "delete";
    let image = if deleted {
        &event["before"]
    } else {
        &event["after"]
    };
    let g = image["g"].as_str().unwrap().parse().unwrap();
    let position = event["source"]["position"].as_str().unwrap();
    let seq = position.split_once(':').unwrap().1.to_owned();
    (
        Write {
            pk: event["key"]["pk"].as_str().unwrap().to_owned(),
            g,
            deleted,
        },
        seq,
    )
}

/// Sequence numbers of one shard, compared as numbers.
fn seq_key(seq: &str) -> (usize, String) {
    (seq.len(), seq.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_live_workload_loses_nothing_and_keeps_per_item_order() {
    let db = client().await;
    let table = table_name("crash");
    create_table(&db, &table, false, StreamViewType::NewAndOldImages).await;
    let ws = Workspace::new();
    let config = ws.config(&pipeline("ddb-crash", &table, "out.jsonl"));
    let config = config.to_str().unwrap().to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let expected: Arc<Mutex<Vec<Write>>> = Arc::default();
    let writer = {
        let (db, table, stop, expected) =
            (db.clone(), table.clone(), stop.clone(), expected.clone());
        tokio::spawn(async move {
            let mut rng = Rng::seeded();
            let mut g = 0u64;
            // The version each existing item holds.
            let mut existing = std::collections::HashMap::new();
            while !stop.load(Ordering::Relaxed) {
                g += 1;
                let pk = format!("item-{}", rng.below(25));
                match existing.get(&pk).copied() {
                    Some(current) if rng.below(5) == 0 => {
                        db.delete_item()
                            .table_name(&table)
                            .key("pk", s(&pk))
                            .send()
                            .await
                            .unwrap();
                        existing.remove(&pk);
                        expected.lock().unwrap().push(Write {
                            pk,
                            g: current,
                            deleted: true,
                        });
                    }
                    _ => {
                        db.put_item()
                            .table_name(&table)
                            .item("pk", s(&pk))
                            .item("g", n(&g.to_string()))
                            .send()
                            .await
                            .unwrap();
                        existing.insert(pk.clone(), g);
                        expected.lock().unwrap().push(Write {
                            pk,
                            g,
                            deleted: false,
                        });
                    }
                }
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
        })
    };

    let stored_seq = || -> Option<String> {
        let store = CheckpointStore::open(&ws.path("state")).unwrap();
        store
            .load("ddb-crash")
            .unwrap()
            .into_values()
            .next()
            .map(|p| p.token)
    };
    let kills = ws
        .kill_repeatedly(&config, KILLS, (500, 1500), stored_seq)
        .await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let expected = expected.lock().unwrap().clone();
    let mut child = ws.spawn(&["run", "--config", &config]);
    let last = expected.last().cloned().unwrap();
    wait_until(Duration::from_secs(90), "the last write", || {
        read_records(&ws.path("out.jsonl"))
            .iter()
            .rev()
            .take(50)
            .any(|e| write_of(e).0 == last)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    terminate(&child);
    child.wait().unwrap();

    let events: Vec<(Write, String)> = read_records(&ws.path("out.jsonl"))
        .iter()
        .map(write_of)
        .collect();
    assert!(
        expected.len() > 500,
        "workload too small: {}",
        expected.len()
    );
    let progressing = kills.windows(2).filter(|w| w[1].1 != w[0].1).count();
    assert!(
        progressing >= 3,
        "kills must land while changes flow ({progressing} of {KILLS})"
    );

    // The table has one shard: its stream order is the write order.
    let bounds: Vec<usize> = kills.iter().map(|(lines, _)| *lines).collect();
    let checkpoints: Vec<Option<(usize, String)>> = kills
        .iter()
        .map(|(_, stored)| stored.as_deref().map(seq_key))
        .collect();
    let events: Vec<(Write, (usize, String))> = events
        .into_iter()
        .map(|(write, seq)| (write, seq_key(&seq)))
        .collect();
    let duplicates = support::check_crash_runs(&expected, &events, &bounds, &checkpoints);
    eprintln!(
        "{} writes, {} events, {duplicates} duplicates, {KILLS} kills",
        expected.len(),
        events.len()
    );
}
