//! The MySQL/MariaDB binlog source against a real MariaDB 10.11: row changes in order with their
//! keys and images (each type's values: tests/mysql_types_*.rs), transaction-end checkpoints,
//! resume across a binlog rotation, `check`, and the options that are refused while not
//! implemented.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::mysql::{connect, pipeline as config, sql, start_streaming as start};
use support::{read_records, stderr, terminate, wait_until, Workspace};

/// Row changes in commit order with their keys and images: an insert, a transaction holding an
/// update and an insert, a delete; a BIGINT UNSIGNED key at its max stays exact. (The values of
/// each type, through the snapshot and the binlog: tests/mysql_types_*.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_changes_arrive_in_order_with_their_keys_and_images() {
    const MAX: u64 = 18446744073709551615;
    let table = format!("changes_{}", std::process::id());
    let mut conn = connect().await;
    sql(
        &mut conn,
        &format!(
            "CREATE TABLE {table} (id BIGINT UNSIGNED PRIMARY KEY, i INT, \
             v VARCHAR(20) CHARACTER SET utf8mb4)"
        ),
    )
    .await;
    let ws = Workspace::new();
    let config = config(&ws, "mysql-changes", &table, "");
    let child = start(&ws, &config);
    sql(
        &mut conn,
        &format!("INSERT INTO {table} VALUES ({MAX}, -2147483648, 'héllo')"),
    )
    .await;
    sql(
        &mut conn,
        &format!(
            "START TRANSACTION; UPDATE {table} SET v = 'world', i = 7 WHERE id = {MAX}; \
             INSERT INTO {table} (id) VALUES (1); COMMIT; DELETE FROM {table} WHERE id = 1"
        ),
    )
    .await;
    wait_until(Duration::from_secs(30), "4 events", || {
        read_records(&ws.path("out.jsonl")).len() >= 4
    });
    terminate(&child);
    let mut child = child;
    assert!(child.wait().unwrap().success(), "{}", ws.log_tail());

    let events = read_records(&ws.path("out.jsonl"));
    let ops: Vec<&str> = events.iter().map(|e| e["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["insert", "update", "insert", "delete"]);
    let keys: Vec<&Value> = events.iter().map(|e| &e["key"]).collect();
    assert_eq!(
        keys,
        [
            &json!({"id": MAX}),
            &json!({"id": MAX}),
            &json!({"id": 1}),
            &json!({"id": 1})
        ],
        "BIGINT UNSIGNED max stays exact"
    );
    let (first, updated) = (
        json!({"id": MAX, "i": -2147483648i64, "v": "héllo"}),
        json!({"id": MAX, "i": 7, "v": "world"}),
    );
    let empty = json!({"id": 1, "i": null, "v": null});
    let images: Vec<(&Value, &Value)> =
        events.iter().map(|e| (&e["before"], &e["after"])).collect();
    assert_eq!(
        images,
        [
            (&Value::Null, &first),
            (&first, &updated),
            (&Value::Null, &empty),
            (&empty, &Value::Null)
        ]
    );
    for event in &events {
        assert_eq!(event["source"]["connector"], "mysql");
        assert_eq!(event["source"]["database"], "app");
        assert_eq!(event["source"]["table"], table.as_str());
        assert_eq!(event["source"]["snapshot"], false);
        let position = event["source"]["position"].as_str().unwrap();
        assert!(
            position.starts_with("binlog.") && position.contains(':'),
            "{position}"
        );
    }
}

#[test]
fn check_reports_the_binlog_settings_and_privileges() {
    let ws = Workspace::new();
    let config = config(&ws, "mysql-check", "anything", "");
    let output = ws.run(&["check", "--config", &config]);
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}{}", stderr(&output));
    assert!(
        report.contains("binlog: ROW format, FULL row image and metadata, not compressed"),
        "{report}"
    );
    assert!(
        report.contains("privilege REPLICATION SLAVE granted"),
        "{report}"
    );
    assert!(
        report.contains("privilege REPLICATION CLIENT or BINLOG MONITOR granted"),
        "{report}"
    );
}

/// The final table, rebuilt from the events: snapshot rows, then changes in order.
fn replay(events: &[Value]) -> std::collections::BTreeMap<i64, i64> {
    let mut rows = std::collections::BTreeMap::new();
    for event in events {
        let id = event["key"]["id"].as_i64().unwrap();
        match event["op"].as_str().unwrap() {
            "delete" => {
                rows.remove(&id);
            }
            _ => {
                rows.insert(id, event["after"]["n"].as_i64().unwrap());
            }
        }
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_and_the_stream_meet_without_gap_or_overlap() {
    use mysql_async::prelude::Queryable;
    let table = format!("seam_{}", std::process::id());
    let mut conn = connect().await;
    sql(
        &mut conn,
        &format!("CREATE TABLE {table} (id INT PRIMARY KEY, n INT)"),
    )
    .await;
    // 20,000 rows, so the snapshot is still running while the writer changes the table.
    for chunk in 0..20 {
        let values: Vec<String> = (1..=1000)
            .map(|i| format!("({}, 0)", chunk * 1000 + i))
            .collect();
        sql(
            &mut conn,
            &format!("INSERT INTO {table} VALUES {}", values.join(",")),
        )
        .await;
    }
    let ws = Workspace::new();
    let config = config(&ws, "mysql-seam", &table, "").replace("snapshot = \"never\"\n", "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("snapshot = \"never\"\n", "");
    std::fs::write(&config, text).unwrap();
    let child = ws.spawn(&["run", "--config", &config]);
    // Concurrent writes: updates, deletes and inserts spread over the table.
    let mut writes = 0;
    for round in 1..=300i64 {
        let id = (round * 7919) % 20_000 + 1;
        sql(&mut conn, &format!(
            "UPDATE {table} SET n = {round} WHERE id = {id}; DELETE FROM {table} WHERE id = {}; INSERT INTO {table} VALUES ({}, {round})",
            (round * 104_729) % 20_000 + 1,
            20_000 + round
        )).await;
        writes += 3;
    }
    sql(
        &mut conn,
        &format!("INSERT INTO {table} VALUES (999999, 1)"),
    )
    .await;
    wait_until(Duration::from_secs(90), "the last write", || {
        read_records(&ws.path("out.jsonl"))
            .iter()
            .rev()
            .take(5)
            .any(|e| e["key"]["id"] == 999999)
    });
    terminate(&child);
    let mut child = child;
    assert!(child.wait().unwrap().success(), "{}", ws.log_tail());

    let events = read_records(&ws.path("out.jsonl"));
    let snapshot_rows = events.iter().filter(|e| e["op"] == "snapshot").count();
    assert!(snapshot_rows >= 19_000, "{snapshot_rows} snapshot rows");
    let streamed = events.len() - snapshot_rows;
    assert!(
        streamed > 0 && streamed <= writes + 1,
        "{streamed} streamed events for {writes} writes"
    );
    let table_now: Vec<(i64, i64)> = conn
        .query(format!("SELECT id, n FROM {table} ORDER BY id"))
        .await
        .unwrap();
    let expected: std::collections::BTreeMap<i64, i64> = table_now.into_iter().collect();
    assert_eq!(
        replay(&events),
        expected,
        "events rebuild exactly the final table"
    );
}

#[test]
fn initial_only_copies_the_tables_and_stops() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let table = format!("once_{}", std::process::id());
    rt.block_on(async {
        let mut conn = connect().await;
        sql(&mut conn, &format!("CREATE TABLE {table} (id INT PRIMARY KEY, n INT); INSERT INTO {table} VALUES (1, 10), (2, 20)")).await;
    });
    let ws = Workspace::new();
    let config = config(&ws, "mysql-once", &table, "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("snapshot = \"never\"", "snapshot = \"initial_only\"");
    std::fs::write(&config, text).unwrap();
    let output = ws.run(&["run", "--config", &config]);
    assert!(output.status.success(), "{}", stderr(&output));
    let events = read_records(&ws.path("out.jsonl"));
    assert_eq!(events.len(), 2);
    assert!(events
        .iter()
        .all(|e| e["op"] == "snapshot" && e["source"]["snapshot"] == true));
    assert_eq!(events[1]["after"], json!({"id": 2, "n": 20}));
    assert_eq!(events[1]["key"], json!({"id": 2}));

    // The copy is complete (its checkpoint is stored): a second run stops at once, as the
    // Postgres source does, without streaming the change made since.
    rt.block_on(async {
        let mut conn = connect().await;
        sql(&mut conn, &format!("INSERT INTO {table} VALUES (3, 30)")).await;
    });
    let mut second = ws.spawn(&["run", "--config", &config]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            second.kill().unwrap();
            second.wait().unwrap();
            panic!("the second run streams on:\n{}", ws.log_tail());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{}", ws.log_tail());
    assert_eq!(read_records(&ws.path("out.jsonl")).len(), 2);
    assert!(
        ws.log_tail().contains("snapshot already complete"),
        "{}",
        ws.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_mid_stream_changes_the_shape_of_the_following_events() {
    let table = format!("ddl_{}", std::process::id());
    let mut conn = connect().await;
    sql(
        &mut conn,
        &format!("CREATE TABLE {table} (id INT PRIMARY KEY, a INT, b VARCHAR(10))"),
    )
    .await;
    let ws = Workspace::new();
    let config = config(&ws, "mysql-ddl", &table, "");
    let child = start(&ws, &config);
    sql(
        &mut conn,
        &format!("INSERT INTO {table} VALUES (1, 1, 'x')"),
    )
    .await;
    sql(
        &mut conn,
        &format!("ALTER TABLE {table} ADD COLUMN c INT DEFAULT 7, DROP COLUMN a"),
    )
    .await;
    sql(
        &mut conn,
        &format!("INSERT INTO {table} (id, b) VALUES (2, 'y')"),
    )
    .await;
    sql(
        &mut conn,
        &format!("ALTER TABLE {table} RENAME COLUMN b TO label"),
    )
    .await;
    sql(
        &mut conn,
        &format!("UPDATE {table} SET label = 'z' WHERE id = 2"),
    )
    .await;
    sql(&mut conn, &format!("TRUNCATE TABLE {table}")).await;
    sql(
        &mut conn,
        &format!("INSERT INTO {table} (id, label) VALUES (3, 'after')"),
    )
    .await;
    sql(
        &mut conn,
        &format!("DROP TABLE {table}; CREATE TABLE {table} (id INT PRIMARY KEY, other TEXT); INSERT INTO {table} VALUES (4, 'recreated')"),
    )
    .await;
    wait_until(Duration::from_secs(30), "6 events", || {
        read_records(&ws.path("out.jsonl")).len() >= 6
    });
    terminate(&child);
    let mut child = child;
    assert!(child.wait().unwrap().success(), "{}", ws.log_tail());
    let events = read_records(&ws.path("out.jsonl"));
    assert_eq!(events[0]["after"], json!({"id": 1, "a": 1, "b": "x"}));
    assert_eq!(
        events[1]["after"],
        json!({"id": 2, "b": "y", "c": 7}),
        "new shape after ALTER"
    );
    assert_eq!(
        events[2]["before"],
        json!({"id": 2, "label": "y", "c": 7}),
        "renamed column"
    );
    assert_eq!(events[2]["after"]["label"], "z");
    assert_eq!(events[3]["op"], "truncate");
    assert_eq!(events[3]["source"]["table"], table.as_str());
    assert_eq!(
        events[4]["after"],
        json!({"id": 3, "label": "after", "c": 7})
    );
    assert_eq!(
        events[5]["after"],
        json!({"id": 4, "other": "recreated"}),
        "a dropped and re-created table has its new shape"
    );
    assert_eq!(events.len(), 6);
}

const KILLS: usize = 20;

/// One committed change of the crash workload: key and value written (None: deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Change {
    id: i64,
    g: Option<i64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_live_workload_loses_nothing_and_keeps_commit_order() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let table = format!("crash_{}", std::process::id());
    let mut conn = connect().await;
    sql(
        &mut conn,
        &format!("CREATE TABLE {table} (id INT PRIMARY KEY, g BIGINT)"),
    )
    .await;
    let ws = Workspace::new();
    let config = config(&ws, "mysql-crash", &table, "");
    // A first run stores the starting position.
    let child = start(&ws, &config);
    terminate(&child);
    let mut child = child;
    child.wait().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let expected: Arc<Mutex<Vec<Change>>> = Arc::default();
    let writer = {
        let (stop, expected, table) = (stop.clone(), expected.clone(), table.clone());
        tokio::spawn(async move {
            let mut conn = connect().await;
            let mut rng = support::Rng::seeded();
            let mut existing = std::collections::HashSet::new();
            let mut g = 0i64;
            while !stop.load(Ordering::Relaxed) {
                g += 1;
                let id = rng.below(30) as i64 + 1;
                let mut changes = Vec::new();
                if existing.contains(&id) && rng.below(4) == 0 {
                    sql(&mut conn, &format!("START TRANSACTION; UPDATE {table} SET g = {g} WHERE id = {id}; DELETE FROM {table} WHERE id = {id}; COMMIT")).await;
                    changes.push(Change { id, g: Some(g) });
                    changes.push(Change { id, g: None });
                    existing.remove(&id);
                } else {
                    sql(&mut conn, &format!("INSERT INTO {table} VALUES ({id}, {g}) ON DUPLICATE KEY UPDATE g = {g}")).await;
                    changes.push(Change { id, g: Some(g) });
                    existing.insert(id);
                }
                expected.lock().unwrap().extend(changes);
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    let stored = || -> Option<(u64, u64)> {
        let store = cdc_bridge::checkpoint::CheckpointStore::open(&ws.path("state")).unwrap();
        let token = store
            .load("mysql-crash")
            .unwrap()
            .get("")
            .map(|p| p.token.clone())?;
        let file_pos = token.split(';').next().unwrap();
        let (file, pos) = file_pos.rsplit_once(':').unwrap();
        Some((
            file.rsplit('.').next().unwrap().parse().unwrap(),
            pos.parse().unwrap(),
        ))
    };
    let kills = ws
        .kill_repeatedly(&config, KILLS, (300, 1200), stored)
        .await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let expected = expected.lock().unwrap().clone();
    let last = expected.last().cloned().unwrap();
    let mut child = ws.spawn(&["run", "--config", &config]);
    let change_of = |e: &Value| Change {
        id: e["key"]["id"].as_i64().unwrap(),
        g: if e["op"] == "delete" {
            None
        } else {
            e["after"]["g"].as_i64()
        },
    };
    wait_until(Duration::from_secs(60), "the last change", || {
        read_records(&ws.path("out.jsonl"))
            .iter()
            .rev()
            .take(10)
            .any(|e| change_of(e) == last)
    });
    std::thread::sleep(Duration::from_millis(500));
    terminate(&child);
    child.wait().unwrap();

    let events: Vec<(Change, (u64, u64))> = read_records(&ws.path("out.jsonl"))
        .iter()
        .map(|e| {
            let (file, pos) = e["source"]["position"]
                .as_str()
                .unwrap()
                .rsplit_once(':')
                .unwrap();
            (
                change_of(e),
                (
                    file.rsplit('.').next().unwrap().parse().unwrap(),
                    pos.parse().unwrap(),
                ),
            )
        })
        .collect();
    assert!(
        expected.len() > 300,
        "workload too small: {}",
        expected.len()
    );
    let bounds: Vec<usize> = kills.iter().map(|(lines, _)| *lines).collect();
    let checkpoints: Vec<Option<(u64, u64)>> = kills.iter().map(|(_, stored)| *stored).collect();
    let duplicates = support::check_crash_runs(&expected, &events, &bounds, &checkpoints);
    eprintln!(
        "{} committed changes, {} events, {duplicates} duplicates, {KILLS} kills",
        expected.len(),
        events.len()
    );
}
