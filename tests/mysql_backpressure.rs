//! A sink that stalls for longer than the server's `net_write_timeout` must not cost the
//! binlog dump connection: the server's blocked write must not time out, the pipeline never
//! restarts, and nothing is lost. Runs on the `mariadb_bad` server, whose global settings the
//! test may change (it restores them).

mod support;

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use support::mysql::sql;
use support::{wait_until, Workspace};

/// A user of its own, so that its dump thread can be told from other tests' ones.
const USER: &str = "cdc_backpressure";
const ROWS: i64 = 30_000;
const STALL: Duration = Duration::from_secs(90);

fn server_url() -> String {
    std::env::var("CDC_BRIDGE_MYSQL_BAD_URL")
        .expect("CDC_BRIDGE_MYSQL_BAD_URL is not set: run the tests with scripts/test.sh")
}

/// The ids of the bridge's binlog dump threads on the server.
async fn dump_thread(admin: &mut mysql_async::Conn) -> Vec<u64> {
    admin
        .query(format!(
            "SELECT ID FROM information_schema.PROCESSLIST \
             WHERE USER = '{USER}' AND COMMAND = 'Binlog Dump'"
        ))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sink_keeps_the_binlog_dump_connection() {
    let url = server_url();
    let mut admin = mysql_async::Conn::new(mysql_async::Opts::from_url(&url).unwrap())
        .await
        .expect("connect to MariaDB");
    let table = format!("backpressure_{}", std::process::id());
    sql(
        &mut admin,
        &format!(
            "DROP USER IF EXISTS '{USER}'@'127.0.0.1'; \
             CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY 'cdc'; \
             GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT ON *.* TO '{USER}'@'127.0.0.1'; \
             CREATE TABLE {table} (id INT PRIMARY KEY, pad VARCHAR(200) NOT NULL)"
        ),
    )
    .await;
    let old_timeout: u64 = admin
        .query_first("SELECT @@GLOBAL.net_write_timeout")
        .await
        .unwrap()
        .unwrap();
    sql(&mut admin, "SET GLOBAL net_write_timeout = 10").await;

    let ws = Workspace::new();
    let config = ws.config(&format!(
        "[[pipeline]]\nname = \"backpressure\"\n[pipeline.source]\nkind = \"mysql\"\n\
         url = \"{}\"\nserver_id = {}\ntables = [\"app.{table}\"]\nsnapshot = \"never\"\n\
         [pipeline.sink]\nkind = \"stdout\"\n[pipeline.batch]\nlinger_ms = 5\n",
        url.replace("cdc:cdc@", &format!("{USER}:cdc@")),
        6000 + std::process::id() % 1000
    ));
    let (mut child, out) = ws.spawn_read_stdout(&["run", "--config", config.to_str().unwrap()]);
    wait_until(Duration::from_secs(30), "the binlog stream", || {
        std::fs::read_to_string(ws.path("bridge.log"))
            .unwrap_or_default()
            .contains("streaming the binlog")
    });
    // The log line can come before the server lists the dump request it answers.
    let listed = Instant::now();
    let mut first = dump_thread(&mut admin).await;
    while first.is_empty() && listed.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        first = dump_thread(&mut admin).await;
    }

    // Stall the sink, write 30,000 rows during the first 60 s, watch the dump thread for 90 s.
    out.pause();
    let stalled = Instant::now();
    let mut written = 0;
    let mut other_thread = None;
    while stalled.elapsed() < STALL {
        if written < ROWS {
            let values: Vec<String> = (written + 1..=written + 100)
                .map(|id| format!("({id}, REPEAT('x', 200))"))
                .collect();
            sql(
                &mut admin,
                &format!("INSERT INTO {table} VALUES {}", values.join(", ")),
            )
            .await;
            written += 100;
        }
        let now = dump_thread(&mut admin).await;
        if now != first {
            other_thread = Some((stalled.elapsed(), now));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let state_in_stall: Option<String> = admin
        .query_first(format!(
            "SELECT STATE FROM information_schema.PROCESSLIST \
             WHERE USER = '{USER}' AND COMMAND = 'Binlog Dump'"
        ))
        .await
        .unwrap();
    out.resume();

    let drained = Instant::now();
    while other_thread.is_none()
        && out.len() < ROWS as usize
        && drained.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = dump_thread(&mut admin).await;
    support::terminate(&child);
    let status = child.wait().unwrap();
    sql(
        &mut admin,
        &format!(
            "SET GLOBAL net_write_timeout = {old_timeout}; DROP TABLE {table}; \
             DROP USER '{USER}'@'127.0.0.1'"
        ),
    )
    .await;

    let log = std::fs::read_to_string(ws.path("bridge.log")).unwrap();
    assert_eq!(first.len(), 1, "one dump thread of the bridge: {first:?}");
    assert_eq!(
        other_thread, None,
        "the dump thread {first:?} went away during the stall (elapsed, threads now); log:\n{log}"
    );
    eprintln!("dump thread state at the end of the stall: {state_in_stall:?}");
    assert_eq!(after, first, "dump thread after the stall; log:\n{log}");
    assert!(
        !log.contains("restarting"),
        "the pipeline restarted:\n{log}"
    );
    let ids: Vec<i64> = out
        .records()
        .iter()
        .map(|e| e["key"]["id"].as_i64().expect("an id"))
        .collect();
    assert_eq!(ids, (1..=ROWS).collect::<Vec<_>>(), "log:\n{log}");
    assert_eq!(status.code(), Some(0), "bridge exit status");
}
