//! A failover between two MariaDB 10.11 servers with GTID replication (services
//! `mariadb_primary` and `mariadb_replica`): the bridge reads the primary, the replica (whose
//! binlog files are numbered lower than the primary's) is promoted, and the bridge, pointed at
//! it, resumes by GTID. Every change must arrive exactly once, and the checkpoint must keep
//! moving forward although the new server's file positions rank below the old one's.

mod support;

use std::process::Child;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use serde_json::Value;
use support::mysql::{pipeline_at, sql, start_streaming};
use support::{read_records, terminate, Workspace};

fn env_url(var: &str) -> String {
    std::env::var(var)
        .unwrap_or_else(|_| panic!("{var} is not set: run the tests with scripts/test.sh"))
}

async fn connect_to(url: &str) -> Conn {
    Conn::new(mysql_async::Opts::from_url(url).unwrap())
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

async fn gtid_binlog_pos(conn: &mut Conn) -> String {
    conn.query_first("SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap()
}

/// Waits until the replica applied everything the primary has written.
async fn caught_up(primary: &mut Conn, replica: &mut Conn) {
    let pos = gtid_binlog_pos(primary).await;
    let waited: Option<i64> = replica
        .exec_first("SELECT MASTER_GTID_WAIT(?, 30)", (pos.as_str(),))
        .await
        .unwrap();
    assert_eq!(waited, Some(0), "the replica did not reach {pos} in 30 s");
}

/// The number of a binlog file name (`binlog.000006` -> 6).
fn file_number(event: &Value) -> u64 {
    let position = event["source"]["position"].as_str().unwrap();
    let file = position.split(':').next().unwrap();
    file.rsplit('.').next().unwrap().parse().unwrap()
}

/// Waits until `out.jsonl` holds `count` events; fails early (with the log) when the bridge
/// exits.
fn wait_for_events(ws: &Workspace, child: &mut Child, count: usize) {
    let start = Instant::now();
    while read_records(&ws.path("out.jsonl")).len() < count {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the bridge exited ({status}) before {count} events:\n{}",
                ws.log_tail()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {count} events:\n{}",
            ws.log_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop(ws: &Workspace, mut child: Child) {
    std::thread::sleep(Duration::from_millis(300));
    terminate(&child);
    let status = child.wait().unwrap();
    assert!(status.success(), "bridge: {status}\n{}", ws.log_tail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_to_a_replica_with_lower_binlog_numbers_every_change_arrives_once() {
    let primary_url = env_url("CDC_BRIDGE_MYSQL_PRIMARY_URL");
    let replica_url = env_url("CDC_BRIDGE_MYSQL_REPLICA_URL");
    let primary_port = primary_url
        .rsplit('@')
        .next()
        .and_then(|host| host.split(['/', ':']).nth(1))
        .unwrap()
        .to_owned();
    let mut primary = connect_to(&primary_url).await;
    let mut replica = connect_to(&replica_url).await;

    // A fresh pair (an earlier run promoted the replica): both binlogs emptied, the replica
    // copies the primary from its first transaction.
    sql(
        &mut replica,
        "STOP SLAVE; RESET SLAVE ALL; RESET MASTER; SET GLOBAL gtid_slave_pos = ''",
    )
    .await;
    sql(
        &mut primary,
        "RESET MASTER; DROP TABLE IF EXISTS failover; \
         CREATE TABLE failover (id INT PRIMARY KEY, n INT)",
    )
    .await;
    // The primary's binlog files are numbered above any the replica will have.
    for _ in 0..5 {
        sql(&mut primary, "FLUSH BINARY LOGS").await;
    }
    sql(
        &mut replica,
        &format!(
            "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {primary_port}, \
             MASTER_USER = 'cdc', MASTER_PASSWORD = 'cdc', MASTER_USE_GTID = slave_pos; \
             START SLAVE"
        ),
    )
    .await;
    caught_up(&mut primary, &mut replica).await;

    // The bridge reads the primary: single inserts and a transaction of several.
    let ws = Workspace::new();
    let config = pipeline_at(&primary_url, &ws, "mysql-failover", "failover", "");
    let mut child = start_streaming(&ws, &config);
    for n in 1..=10 {
        sql(
            &mut primary,
            &format!("INSERT INTO failover VALUES ({n}, {n})"),
        )
        .await;
    }
    let batch: String = (11..=20)
        .map(|n| format!("INSERT INTO failover VALUES ({n}, {n});"))
        .collect();
    sql(&mut primary, &format!("START TRANSACTION; {batch} COMMIT")).await;
    wait_for_events(&ws, &mut child, 20);
    stop(&ws, child);

    // While the bridge is down the primary takes more changes, which reach the replica; then
    // the primary is gone and the replica is promoted and written to.
    for n in 21..=30 {
        sql(
            &mut primary,
            &format!("INSERT INTO failover VALUES ({n}, {n})"),
        )
        .await;
    }
    caught_up(&mut primary, &mut replica).await;
    sql(&mut replica, "STOP SLAVE; RESET SLAVE ALL").await;
    for id in 1..=5 {
        sql(
            &mut replica,
            &format!("UPDATE failover SET n = -n WHERE id = {id}"),
        )
        .await;
    }

    // The bridge, pointed at the new primary, resumes by GTID, then streams on.
    let config = pipeline_at(&replica_url, &ws, "mysql-failover", "failover", "");
    let mut child = start_streaming(&ws, &config);
    wait_for_events(&ws, &mut child, 35);
    for id in 6..=10 {
        sql(
            &mut replica,
            &format!("UPDATE failover SET n = -n WHERE id = {id}"),
        )
        .await;
    }
    wait_for_events(&ws, &mut child, 40);
    stop(&ws, child);

    // And once more from the checkpoint taken on the new primary.
    sql(&mut replica, "DELETE FROM failover WHERE id = 1").await;
    let mut child = start_streaming(&ws, &config);
    wait_for_events(&ws, &mut child, 41);
    stop(&ws, child);

    let events = read_records(&ws.path("out.jsonl"));
    let log = std::fs::read_to_string(ws.path("bridge.log")).unwrap();
    assert!(!log.contains("backward"), "{log}");
    assert_eq!(
        events.len(),
        41,
        "every change once: nothing skipped, nothing repeated"
    );
    let inserted: Vec<i64> = events[..30]
        .iter()
        .map(|e| e["after"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(inserted, (1..=30).collect::<Vec<_>>());
    for (i, event) in events[30..40].iter().enumerate() {
        assert_eq!(event["op"], "update", "{event}");
        assert_eq!(event["after"]["n"], -(i as i64 + 1), "{event}");
    }
    assert_eq!(events[40]["op"], "delete");
    assert_eq!(events[40]["key"]["id"], 1);
    // The scenario is the one that matters: after the failover, the changes come from binlog
    // files numbered below the one the first run stopped in.
    let before = events[..20].iter().map(file_number).max().unwrap();
    let after = events[20..].iter().map(file_number).max().unwrap();
    assert!(
        after < before,
        "replica files ({after}) are numbered below the primary's ({before})"
    );
}
