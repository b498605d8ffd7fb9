//! Transaction boundaries of the MySQL/MariaDB source against a real MariaDB 10.11: rows of an
//! XA transaction arrive once its XA COMMIT is read (never after XA ROLLBACK), a checkpoint is
//! stored only at a transaction's end (not after a statement logged inside one), and a bridge
//! killed between XA PREPARE and XA COMMIT still delivers the rows after a restart.

mod support;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use serde_json::Value;
use support::mysql::{connect, pipeline, sql, start_streaming};
use support::{read_records, terminate, wait_until, Workspace};

/// The ids of the output's events, in order.
fn ids(ws: &Workspace) -> Vec<i64> {
    read_records(&ws.path("out.jsonl"))
        .iter()
        .map(|e| {
            e["key"]["id"]
                .as_i64()
                .unwrap_or_else(|| panic!("no id: {e}"))
        })
        .collect()
}

/// Waits until the output holds an event for `id`.
fn wait_for_id(ws: &Workspace, id: i64) {
    wait_until(Duration::from_secs(30), &format!("id {id}"), || {
        ids(ws).contains(&id)
    });
}

/// The stored checkpoint token of `pipeline`, if any.
fn stored_token(ws: &Workspace, pipeline: &str) -> Option<String> {
    let store = cdc_bridge::checkpoint::CheckpointStore::open(&ws.path("state")).unwrap();
    let token = store
        .load(pipeline)
        .unwrap()
        .get("")
        .map(|p| p.token.clone());
    token
}

/// XA COMMIT delivers a prepared transaction's rows once (a key change in it split like any
/// other); XA ROLLBACK never; XA COMMIT ... ONE PHASE is an ordinary commit. Rows of a prepared
/// transaction are not delivered before its XA COMMIT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xa_rows_arrive_at_commit_once_and_never_after_rollback() {
    let pid = std::process::id();
    let table = format!("xa_{pid}");
    let mut conn = connect().await;
    sql(
        &mut conn,
        &format!("CREATE TABLE {table} (id INT PRIMARY KEY, v INT)"),
    )
    .await;
    let ws = Workspace::new();
    let config = pipeline(&ws, "mysql-xa", &table, "");
    let mut child = start_streaming(&ws, &config);

    let mut prepared = connect().await;
    sql(
        &mut prepared,
        &format!(
            "XA START 'c1_{pid}'; INSERT INTO {table} VALUES (1, 1), (2, 2); \
             UPDATE {table} SET id = 20 WHERE id = 2; XA END 'c1_{pid}'; XA PREPARE 'c1_{pid}'"
        ),
    )
    .await;
    sql(
        &mut conn,
        &format!(
            "XA START 'r1_{pid}'; INSERT INTO {table} VALUES (3, 3); XA END 'r1_{pid}'; XA PREPARE 'r1_{pid}'; \
             XA ROLLBACK 'r1_{pid}'"
        ),
    )
    .await;
    sql(
        &mut conn,
        &format!(
            "XA START 'o1_{pid}'; INSERT INTO {table} VALUES (4, 4); XA END 'o1_{pid}'; \
             XA COMMIT 'o1_{pid}' ONE PHASE"
        ),
    )
    .await;
    sql(&mut conn, &format!("INSERT INTO {table} VALUES (100, 0)")).await;
    wait_for_id(&ws, 100);
    assert_eq!(ids(&ws), [4, 100], "before XA COMMIT 'c1_{pid}'");

    sql(&mut prepared, &format!("XA COMMIT 'c1_{pid}'")).await;
    sql(&mut conn, &format!("INSERT INTO {table} VALUES (101, 0)")).await;
    wait_for_id(&ws, 101);
    std::thread::sleep(Duration::from_millis(300));
    terminate(&child);
    assert!(child.wait().unwrap().success(), "{}", ws.log_tail());
    // The held key change is released as every key change is emitted: the old key's delete,
    // then the row under the new key.
    assert_eq!(ids(&ws), [4, 100, 1, 2, 2, 20, 101]);
    let ops: Vec<Value> = read_records(&ws.path("out.jsonl"))
        .iter()
        .map(|e| e["op"].clone())
        .collect();
    let expected = [
        "insert", "insert", "insert", "insert", "delete", "insert", "insert",
    ];
    assert_eq!(ops, expected.map(Value::from));
    sql(&mut conn, &format!("DROP TABLE {table}")).await;
}

/// SIGKILL after XA PREPARE was read (and a later transaction delivered), restart after XA
/// COMMIT: the prepared rows still arrive, because the stored checkpoint stays before the
/// prepared transaction until it is resolved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_xa_prepare_and_commit_still_delivers_the_rows() {
    let pid = std::process::id();
    let table = format!("xa_kill_{pid}");
    let mut conn = connect().await;
    sql(
        &mut conn,
        &format!("CREATE TABLE {table} (id INT PRIMARY KEY, v INT)"),
    )
    .await;
    let ws = Workspace::new();
    let config = pipeline(&ws, "mysql-xa-kill", &table, "");
    let mut child = start_streaming(&ws, &config);
    sql(&mut conn, &format!("INSERT INTO {table} VALUES (1000, 0)")).await;
    wait_for_id(&ws, 1000);

    let mut prepared = connect().await;
    let values: Vec<String> = (1..=50).map(|id| format!("({id}, {id})")).collect();
    sql(
        &mut prepared,
        &format!(
            "XA START 'k1_{pid}'; INSERT INTO {table} VALUES {}; XA END 'k1_{pid}'; XA PREPARE 'k1_{pid}'",
            values.join(", ")
        ),
    )
    .await;
    sql(&mut conn, &format!("INSERT INTO {table} VALUES (1001, 0)")).await;
    wait_for_id(&ws, 1001);
    // Give the pipeline time to store whatever it would store after 1001.
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    let before_kill = ids(&ws);
    assert_eq!(before_kill, [1000, 1001], "rows delivered before XA COMMIT");
    assert!(stored_token(&ws, "mysql-xa-kill").is_some());

    sql(&mut prepared, &format!("XA COMMIT 'k1_{pid}'")).await;
    sql(&mut conn, &format!("INSERT INTO {table} VALUES (1002, 0)")).await;
    child = ws.spawn(&["run", "--config", &config]);
    wait_for_id(&ws, 1002);
    std::thread::sleep(Duration::from_millis(300));
    terminate(&child);
    assert!(child.wait().unwrap().success(), "{}", ws.log_tail());

    let after: Vec<i64> = ids(&ws)[before_kill.len()..].to_vec();
    let xa: Vec<i64> = after.iter().copied().filter(|id| *id <= 50).collect();
    assert_eq!(
        xa,
        (1..=50).collect::<Vec<_>>(),
        "output after restart: {after:?}"
    );
    assert_eq!(after.last(), Some(&1002));
    sql(&mut conn, &format!("DROP TABLE {table}")).await;
}

/// Runs SQL as root over the server's admin socket (for session settings the test user may not
/// change).
fn admin_sql(statements: &str) {
    let socket = std::env::var("CDC_BRIDGE_MYSQL_ADMIN_SOCKET")
        .expect("CDC_BRIDGE_MYSQL_ADMIN_SOCKET is not set: run the tests with scripts/test.sh");
    let output = std::process::Command::new("mariadb")
        .args(["--socket", &socket, "-uroot", "app", "-e", statements])
        .output()
        .expect("run the mariadb client");
    assert!(
        output.status.success(),
        "{statements}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// With binlog_format = MIXED in a session, a transaction logs a statement (a Query event)
/// before its rows. Killed again and again while it works through a backlog of such
/// transactions (each kill once another one and a half transactions' rows came out), the bridge
/// stores only positions that end a transaction, and every row arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_inside_a_transaction_is_not_a_checkpoint() {
    // Enough backlog that four runs, each killed once 1,500 more rows are out, cannot finish
    // it: a run writes rows faster than the kill lands, and with 60 transactions the fourth
    // run sometimes found fewer than 1,500 rows left and waited for them in vain.
    const TRANSACTIONS: i64 = 200;
    const ROWS: i64 = 1000;
    let table = format!("mixed_{}", std::process::id());
    let side = format!("mixed_side_{}", std::process::id());
    let mut conn = connect().await;
    sql(
        &mut conn,
        &format!(
            "CREATE TABLE {table} (id INT PRIMARY KEY, u VARCHAR(40)); \
             CREATE TABLE {side} (id INT PRIMARY KEY)"
        ),
    )
    .await;
    let ws = Workspace::new();
    let name = "mysql-mixed";
    let config = pipeline(&ws, name, &table, "");
    // A first run stores the starting position.
    let child = start_streaming(&ws, &config);
    terminate(&child);
    let mut child = child;
    child.wait().unwrap();
    let first = stored_token(&ws, name).expect("a stored start");

    let mut script = String::from("SET SESSION binlog_format = 'MIXED';");
    for t in 0..TRANSACTIONS {
        // The first INSERT is safe for statement logging (a Query event), the second is not
        // (UUID()): its rows follow in the same transaction.
        script.push_str(&format!(
            "BEGIN; INSERT INTO {side} VALUES ({t}); \
             INSERT INTO {table} SELECT seq + {}, UUID() FROM seq_1_to_{ROWS}; COMMIT;",
            t * ROWS
        ));
    }
    admin_sql(&script);

    // Transaction ends: the end of every Xid event, in every binlog file.
    let files: Vec<(String, u64)> = conn.query("SHOW BINARY LOGS").await.unwrap();
    let mut ends = std::collections::HashSet::new();
    for (file, _) in &files {
        let events: Vec<mysql_async::Row> = conn
            .query(format!("SHOW BINLOG EVENTS IN '{file}'"))
            .await
            .unwrap();
        for event in events {
            let kind: String = event.get("Event_type").unwrap();
            let end: u64 = event.get("End_log_pos").unwrap();
            if kind == "Xid" {
                ends.insert(format!("{file}:{end}"));
            }
        }
    }
    let total = (TRANSACTIONS * ROWS) as usize;
    let kills = ws
        .kill_after_new_records(&config, 4, (3 * ROWS) as usize / 2, || {
            stored_token(&ws, name)
        })
        .await;
    let first_file_pos = first.split(';').next().unwrap().to_owned();
    for (delivered, token) in &kills {
        let token = token.clone().expect("a stored position");
        let file_pos = token.split(';').next().unwrap();
        assert!(
            file_pos == first_file_pos || ends.contains(file_pos),
            "after a kill with {delivered} of {total} rows out, the stored position {token} \
             is not the end of a transaction"
        );
    }
    assert!(
        kills[0].0 < total,
        "the first kill came after the whole backlog: the test proves nothing"
    );

    child = ws.spawn(&["run", "--config", &config]);
    let expected: std::collections::BTreeSet<i64> = (1..=TRANSACTIONS * ROWS).collect();
    wait_until(Duration::from_secs(120), "every row", || {
        let got: std::collections::BTreeSet<i64> = ids(&ws).into_iter().collect();
        got == expected
    });
    terminate(&child);
    child.wait().unwrap();
    sql(&mut conn, &format!("DROP TABLE {table}; DROP TABLE {side}")).await;
}
