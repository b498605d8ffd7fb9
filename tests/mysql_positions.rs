//! Where the MySQL/MariaDB source starts and resumes, against a real MariaDB 10.11: restarts
//! by GTID state and by file+offset across a binlog rotation, and a configured start in each
//! notation (file:pos, MariaDB GTID).

mod support;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use serde_json::Value;
use support::mysql::{connect, pipeline, sql, start_streaming};
use support::{read_records, terminate, wait_until, Workspace};

/// Runs a pipeline over 20 inserts, stops it, makes 10 inserts, rotates the binlog, makes 10
/// updates, restarts it: every change must arrive exactly once, in order. Returns the events
/// and the second run's log.
async fn restart_across_rotation(resume_by: &str) -> (Vec<Value>, String) {
    let table = format!("resume_{resume_by}_{}", std::process::id());
    let mut conn = connect().await;
    sql(
        &mut conn,
        &format!("CREATE TABLE {table} (id INT PRIMARY KEY, n INT)"),
    )
    .await;
    let ws = Workspace::new();
    let config = pipeline(
        &ws,
        "mysql-resume",
        &table,
        &format!("resume_by = \"{resume_by}\""),
    );
    let mut child = start_streaming(&ws, &config);
    for n in 1..=20 {
        sql(&mut conn, &format!("INSERT INTO {table} VALUES ({n}, {n})")).await;
    }
    wait_until(Duration::from_secs(30), "20 events", || {
        read_records(&ws.path("out.jsonl")).len() >= 20
    });
    terminate(&child);
    child.wait().unwrap();
    let first_log = std::fs::read_to_string(ws.path("bridge.log")).unwrap();

    // While stopped: changes, a rotation to a new binlog file, more changes.
    for n in 21..=30 {
        sql(&mut conn, &format!("INSERT INTO {table} VALUES ({n}, {n})")).await;
    }
    sql(&mut conn, "FLUSH BINARY LOGS").await;
    for n in 31..=40 {
        sql(
            &mut conn,
            &format!("UPDATE {table} SET n = -n WHERE id = {}", n - 30),
        )
        .await;
    }
    child = ws.spawn(&["run", "--config", &config]);
    wait_until(Duration::from_secs(30), "40 events", || {
        read_records(&ws.path("out.jsonl")).len() >= 40
    });
    std::thread::sleep(Duration::from_millis(500));
    terminate(&child);
    child.wait().unwrap();

    let events = read_records(&ws.path("out.jsonl"));
    assert_eq!(
        events.len(),
        40,
        "every change once: nothing skipped, nothing repeated"
    );
    let ids: Vec<i64> = events[..30]
        .iter()
        .map(|e| e["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (1..=30).collect::<Vec<_>>());
    let files: std::collections::BTreeSet<&str> = events
        .iter()
        .map(|e| {
            e["source"]["position"]
                .as_str()
                .unwrap()
                .split(':')
                .next()
                .unwrap()
        })
        .collect();
    assert!(files.len() >= 2, "the changes span the rotation: {files:?}");
    for (i, event) in events[30..].iter().enumerate() {
        assert_eq!(event["op"], "update");
        assert_eq!(event["after"]["n"], -(i as i64 + 1));
    }
    let log = std::fs::read_to_string(ws.path("bridge.log")).unwrap();
    (events, log[first_log.len()..].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_by_gtid_across_a_binlog_rotation() {
    let (events, second_run) = restart_across_rotation("gtid").await;
    assert!(
        second_run.contains("streaming the binlog after GTID state"),
        "{second_run}"
    );
    // Each change carries its transaction's MariaDB GTID, one per autocommit statement.
    let gtids: Vec<&str> = events
        .iter()
        .map(|e| e["source"]["txid"].as_str().unwrap())
        .collect();
    let sequences: Vec<u64> = gtids
        .iter()
        .map(|g| g.rsplit('-').next().unwrap().parse().unwrap())
        .collect();
    assert!(
        sequences.windows(2).all(|w| w[1] > w[0]),
        "GTIDs rise: {gtids:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_by_file_and_offset_across_a_binlog_rotation() {
    let (_, second_run) = restart_across_rotation("file").await;
    assert!(
        !second_run.contains("GTID state") && second_run.contains("streaming the binlog"),
        "{second_run}"
    );
}

/// Inserts rows 1..=3, notes where the binlog is, inserts 4..=6; a pipeline configured to
/// start at the noted point must see exactly 4..=6, then 7 made while it runs.
async fn configured_start(name: &str, start_at: impl Fn(&str, &str, &str) -> String) {
    let table = format!("start_{name}_{}", std::process::id());
    let mut conn = connect().await;
    sql(
        &mut conn,
        &format!("CREATE TABLE {table} (id INT PRIMARY KEY)"),
    )
    .await;
    for id in 1..=3 {
        sql(&mut conn, &format!("INSERT INTO {table} VALUES ({id})")).await;
    }
    let gtid: String = conn
        .query_first("SELECT @@last_gtid")
        .await
        .unwrap()
        .unwrap();
    let (file, pos): (String, u64) = {
        let row: mysql_async::Row = conn
            .query_first("SHOW MASTER STATUS")
            .await
            .unwrap()
            .unwrap();
        (row.get(0).unwrap(), row.get(1).unwrap())
    };
    for id in 4..=6 {
        sql(&mut conn, &format!("INSERT INTO {table} VALUES ({id})")).await;
    }
    let ws = Workspace::new();
    let config = pipeline(
        &ws,
        "mysql-start",
        &table,
        &start_at(&gtid, &file, &pos.to_string()),
    );
    let mut child = start_streaming(&ws, &config);
    sql(&mut conn, &format!("INSERT INTO {table} VALUES (7)")).await;
    wait_until(Duration::from_secs(30), "4 events", || {
        read_records(&ws.path("out.jsonl")).len() >= 4
    });
    std::thread::sleep(Duration::from_millis(300));
    terminate(&child);
    child.wait().unwrap();
    let events = read_records(&ws.path("out.jsonl"));
    let ids: Vec<i64> = events
        .iter()
        .map(|e| e["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [4, 5, 6, 7], "{}", ws.log_tail());
    // The file name comes from the server (after a GTID start, from its made-up ROTATE).
    for event in &events {
        let position = event["source"]["position"].as_str().unwrap();
        let (name, offset) = position.rsplit_once(':').unwrap();
        let sequence = name.strip_prefix("binlog.").unwrap_or_default();
        assert!(
            sequence.len() == 6
                && sequence.bytes().all(|b| b.is_ascii_digit())
                && name >= file.as_str(),
            "{position:?}"
        );
        assert!(offset.parse::<u64>().unwrap() > 4, "{position}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_mariadb_gtid_starts_right_after_that_transaction() {
    configured_start("gtid", |gtid, _, _| format!("start_position = \"{gtid}\"")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_file_and_offset_starts_right_there() {
    configured_start("file", |_, file, pos| {
        format!("start_position = \"{file}:{pos}\"\nresume_by = \"file\"")
    })
    .await;
}

#[test]
fn a_mysql_gtid_set_on_mariadb_is_refused_with_the_reason() {
    let ws = Workspace::new();
    let config = pipeline(
        &ws,
        "mysql-wrong-flavor",
        "anything",
        "start_position = \"3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5\"",
    );
    let output = ws.run(&["run", "--config", &config]);
    let stderr = support::stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("other server flavor's notation, but the server is MariaDB"),
        "{stderr}"
    );
}
