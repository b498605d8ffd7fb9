//! Each wrong server condition stops the MySQL/MariaDB source with a message that says how to
//! fix it. One test, in sequence: it changes global settings of its own server (mariadb_bad).

mod support;

use std::time::Duration;

use support::mysql::sql;
use support::{read_records, stderr, wait_until, Workspace};

fn url() -> String {
    std::env::var("CDC_BRIDGE_MYSQL_BAD_URL")
        .expect("CDC_BRIDGE_MYSQL_BAD_URL is not set: run the tests with scripts/test.sh")
}

async fn connect(url: &str) -> mysql_async::Conn {
    mysql_async::Conn::new(mysql_async::Opts::from_url(url).unwrap())
        .await
        .unwrap()
}

fn config(ws: &Workspace, name: &str, url: &str) -> String {
    ws.config(&format!(
        "[[pipeline]]\nname = \"{name}\"\n[pipeline.source]\nkind = \"mysql\"\nurl = \"{url}\"\nserver_id = 6001\ntables = [\"app.t\"]\nsnapshot = \"never\"\n\
         [pipeline.sink]\nkind = \"file\"\npath = \"out.jsonl\"\n"
    ))
    .to_str()
    .unwrap()
    .to_owned()
}

/// A spawned bridge that is killed if the test fails before stopping it.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the spawned bridge streams; fails with its log otherwise.
fn wait_streaming(ws: &Workspace) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(ws.path("bridge.log"))
        .unwrap_or_default()
        .contains("streaming the binlog")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "not streaming:\n{}",
            ws.log_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the bridge, which must stop on its own within 30 s (a bridge that streams on instead
/// fails the test rather than hanging it).
fn run_to_exit(ws: &Workspace, config: &str) -> std::process::Output {
    let mut child = Running(
        ws.command(&["run", "--config", config])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut stopped = true;
    while child.0.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.0.kill().unwrap();
            stopped = false;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut stderr = Vec::new();
    std::io::Read::read_to_end(child.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(
        stopped,
        "the bridge did not stop within 30 s:\n{}",
        String::from_utf8_lossy(&stderr)
    );
    std::process::Output {
        status: child.0.wait().unwrap(),
        stdout: Vec::new(),
        stderr,
    }
}

/// `check` fails naming `expected`, and `run` stops (exit 1) with the same message.
fn refused(ws: &Workspace, config: &str, expected: &str) {
    let check = ws.run(&["check", "--config", config]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        !check.status.success() && report.contains(expected),
        "check: {report}"
    );
    let run = run_to_exit(ws, config);
    assert_eq!(run.status.code(), Some(1));
    assert!(stderr(&run).contains(expected), "run: {}", stderr(&run));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_wrong_server_condition_stops_with_its_fix() {
    let url = url();
    let mut admin = connect(&url).await;
    sql(
        &mut admin,
        "DROP TABLE IF EXISTS t; CREATE TABLE t (id INT PRIMARY KEY, v TEXT)",
    )
    .await;
    let ws = Workspace::new();
    let cfg = config(&ws, "bad", &url);

    for (setting, wrong, right, message) in [
        (
            "binlog_format",
            "STATEMENT",
            "ROW",
            "binlog_format is \"STATEMENT\" but the binlog source needs ROW",
        ),
        (
            "binlog_row_image",
            "MINIMAL",
            "FULL",
            "binlog_row_image is \"MINIMAL\" but the binlog source needs FULL",
        ),
        ("log_bin_compress", "ON", "OFF", "log_bin_compress = ON"),
    ] {
        sql(&mut admin, &format!("SET GLOBAL {setting} = '{wrong}'")).await;
        refused(&ws, &cfg, message);
        sql(&mut admin, &format!("SET GLOBAL {setting} = '{right}'")).await;
    }

    // A database the server's binlog filter leaves out (binlog_ignore_db = unlogged, set in
    // scripts/services.sh): its table would be copied and none of its changes streamed.
    sql(
        &mut admin,
        "CREATE DATABASE IF NOT EXISTS unlogged; CREATE TABLE IF NOT EXISTS unlogged.t (id INT PRIMARY KEY)",
    )
    .await;
    let ws_unlogged = Workspace::new();
    let unlogged = config(&ws_unlogged, "unlogged", &url);
    let text = std::fs::read_to_string(&unlogged).unwrap();
    std::fs::write(&unlogged, text.replace("\"app.t\"", "\"unlogged.t\"")).unwrap();
    refused(
        &ws_unlogged,
        &unlogged,
        "binlog_ignore_db = \"unlogged\") keep database(s) unlogged out of the binlog",
    );

    // The captured database `app` is logged; the filter still only warns, for TRUNCATE.
    let check = ws.run(&["check", "--config", &cfg]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        report.contains("warn the server filters its binlog (binlog_do_db = \"\", binlog_ignore_db = \"unlogged\")"),
        "{report}"
    );

    // Missing privileges are named by `check`.
    sql(&mut admin, "CREATE USER IF NOT EXISTS 'weak'@'127.0.0.1' IDENTIFIED BY 'weak'; GRANT SELECT ON app.* TO 'weak'@'127.0.0.1'").await;
    let ws_weak = Workspace::new();
    let weak = config(&ws_weak, "weak", &url.replace("cdc:cdc@", "weak:weak@"));
    let check = ws_weak.run(&["check", "--config", &weak]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(!check.status.success());
    assert!(
        report.contains("privilege REPLICATION SLAVE missing: GRANT it"),
        "{report}"
    );

    // Compressed events that appear while streaming stop the source; nothing is skipped.
    let mut child = Running(ws.spawn(&["run", "--config", &cfg]));
    wait_streaming(&ws);
    sql(&mut admin, "INSERT INTO t VALUES (1, 'plain')").await;
    wait_until(Duration::from_secs(30), "the plain change", || {
        read_records(&ws.path("out.jsonl")).len() == 1
    });
    // Compress every event, however small.
    sql(
        &mut admin,
        "SET GLOBAL log_bin_compress_min_len = 10; SET GLOBAL log_bin_compress = ON",
    )
    .await;
    sql(
        &mut admin,
        &format!("INSERT INTO t VALUES (2, '{}')", "x".repeat(5000)),
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the bridge read past a compressed event:\n{}",
            ws.log_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1));
    assert!(
        ws.log_tail()
            .contains("compressed events (log_bin_compress = ON)"),
        "{}",
        ws.log_tail()
    );
    sql(&mut admin, "SET GLOBAL log_bin_compress = OFF").await;
    assert_eq!(
        read_records(&ws.path("out.jsonl")).len(),
        1,
        "nothing after the compressed event"
    );

    // A checkpoint whose binlog was purged: the changes since are lost, and it says so.
    let ws2 = Workspace::new();
    let cfg2 = config(&ws2, "purged", &url);
    let mut child = Running(ws2.spawn(&["run", "--config", &cfg2]));
    wait_streaming(&ws2);
    support::terminate(&child.0);
    child.0.wait().unwrap();
    let store = cdc_bridge::checkpoint::CheckpointStore::open(&ws2.path("state")).unwrap();
    assert!(
        store.load("purged").unwrap().contains_key(""),
        "a position is stored before the purge"
    );
    drop(store);
    // A change after the checkpoint, then its binlog purged: resuming by GTID finds the gap.
    sql(&mut admin, "INSERT INTO t VALUES (1000, 'lost')").await;
    sql(&mut admin, "FLUSH BINARY LOGS").await;
    sql(&mut admin, "FLUSH BINARY LOGS").await;
    let current: mysql_async::Row = {
        use mysql_async::prelude::Queryable;
        admin
            .query_first("SHOW MASTER STATUS")
            .await
            .unwrap()
            .unwrap()
    };
    let file: String = current.get(0).unwrap();
    // The server keeps a file a replica's dump thread still reads (the stopped bridge's,
    // until the server notices it is gone): purge until only the current file is left.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        use mysql_async::prelude::Queryable;
        sql(&mut admin, &format!("PURGE BINARY LOGS TO '{file}'")).await;
        let logs: Vec<(String, u64)> = admin.query("SHOW BINARY LOGS").await.unwrap();
        if logs.first().map(|(name, _)| name) == Some(&file) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "binlogs not purged: {logs:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let run = run_to_exit(&ws2, &cfg2);
    assert_eq!(run.status.code(), Some(1));
    assert!(
        stderr(&run).contains("(purged: ")
            && stderr(&run).contains("the changes since the checkpoint are lost"),
        "{}",
        stderr(&run)
    );
}
