//! What Postgres changes become: TOAST, replica identities, TRUNCATE, DDL mid-stream, and
//! streamed (in-progress) transactions with savepoints and aborts.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::pg::PgFixture;

const WAIT: Duration = Duration::from_secs(20);

fn of_op<'a>(events: &'a [Value], op: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["op"] == op).collect()
}

/// A partitioned table is copied and streamed under its own name: its partitions' changes,
/// and a row moving between partitions (a delete and an insert), all say the table, so
/// replaying the events gives the table.
#[tokio::test]
async fn a_partitioned_table_is_copied_and_streamed_under_its_own_name() {
    let fx = PgFixture::new("sem_parted").await;
    fx.sql(
        "CREATE TABLE sem_parted.m (id int, region text, v int, PRIMARY KEY (id, region)) PARTITION BY LIST (region); \
         CREATE TABLE sem_parted.m_eu PARTITION OF sem_parted.m FOR VALUES IN ('eu'); \
         CREATE TABLE sem_parted.m_us PARTITION OF sem_parted.m FOR VALUES IN ('us'); \
         INSERT INTO sem_parted.m SELECT i, CASE WHEN i % 2 = 0 THEN 'eu' ELSE 'us' END, 0 FROM generate_series(1, 10) i",
    )
    .await;
    let child = fx.spawn(&fx.config(&["m"], "snapshot_chunk_rows = 4"));
    fx.wait_for_events(10, WAIT);
    fx.wait_caught_up(WAIT).await;
    fx.sql(
        "INSERT INTO sem_parted.m VALUES (11, 'eu', 1); UPDATE sem_parted.m SET v = 2 WHERE id = 1; \
         UPDATE sem_parted.m SET region = 'eu' WHERE id = 3; DELETE FROM sem_parted.m WHERE id = 2",
    )
    .await;
    let events = fx.wait_for_events(15, WAIT);
    fx.wait_caught_up(WAIT).await;
    fx.stop(child);
    let rows = fx
        .client
        .query("SELECT id, region, v FROM sem_parted.m", &[])
        .await
        .unwrap();
    fx.cleanup().await;

    let tables: std::collections::BTreeSet<&str> = events
        .iter()
        .map(|e| e["source"]["table"].as_str().unwrap())
        .collect();
    assert_eq!(
        tables,
        ["m"].into(),
        "every event names the partitioned table"
    );
    assert_eq!(of_op(&events, "snapshot").len(), 10);
    let mut replayed = std::collections::BTreeMap::new();
    for event in &events {
        let key = (
            event["key"]["id"].as_i64().unwrap(),
            event["key"]["region"].as_str().unwrap().to_owned(),
        );
        match event["op"].as_str().unwrap() {
            "delete" => {
                replayed.remove(&key);
            }
            _ => {
                replayed.insert(key, event["after"]["v"].as_i64().unwrap());
            }
        }
    }
    let table: std::collections::BTreeMap<_, _> = rows
        .iter()
        .map(|row| {
            let (id, region, v): (i32, String, i32) = (row.get(0), row.get(1), row.get(2));
            ((i64::from(id), region), i64::from(v))
        })
        .collect();
    assert_eq!(replayed, table, "replaying the events gives the table");
}

/// A publication that publishes some columns only, and only the rows its filter lets through
/// (PostgreSQL 15), is honoured by the copies too, the first run's and one requested while
/// streaming: no event carries a column or a row the publication keeps back.
#[tokio::test]
async fn copies_read_only_the_columns_and_rows_the_publication_publishes() {
    let fx = PgFixture::new("sem_pubfilter").await;
    fx.sql(
        "CREATE TABLE sem_pubfilter.t (id int, tenant text, secret text, v int, PRIMARY KEY (id, tenant)); \
         INSERT INTO sem_pubfilter.t SELECT i, CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END, 'pin-' || i, 0 FROM generate_series(1, 10) i; \
         CREATE PUBLICATION sem_pubfilter FOR TABLE sem_pubfilter.t (id, tenant, v) WHERE (tenant = 'a')",
    )
    .await;
    let config = fx.config(&["t"], "snapshot_chunk_rows = 2");
    let child = fx.spawn(&config);
    fx.wait_caught_up(WAIT).await;
    fx.sql(
        "INSERT INTO sem_pubfilter.t VALUES (11, 'a', 'pin-11', 1), (12, 'b', 'pin-12', 1); \
         UPDATE sem_pubfilter.t SET v = 2 WHERE id IN (2, 3)",
    )
    .await;
    let requested = fx.ws.run(&[
        "snapshot",
        "--config",
        config.to_str().unwrap(),
        "--pipeline",
        "sem_pubfilter",
        "--table",
        "sem_pubfilter.t",
    ]);
    assert!(
        requested.status.success(),
        "{}",
        support::stderr(&requested)
    );
    support::wait_until(WAIT, "the copy while streaming", || {
        std::fs::read_to_string(fx.ws.path("bridge.log"))
            .unwrap_or_default()
            .contains("table copied while streaming")
    });
    fx.wait_caught_up(WAIT).await;
    fx.stop(child);
    fx.cleanup().await;

    let events = fx.events();
    let snapshots = of_op(&events, "snapshot");
    // 5 tenant-a rows in the first copy, 6 in the second.
    assert_eq!(snapshots.len(), 11, "{snapshots:?}");
    for event in &events {
        assert_eq!(event["after"]["tenant"], "a", "{event}");
        assert!(event["after"].get("secret").is_none(), "{event}");
    }
    let updated: Vec<_> = of_op(&events, "update")
        .iter()
        .map(|e| e["key"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(updated, [2]);
}

#[tokio::test]
async fn unchanged_toast_is_listed_never_a_placeholder() {
    let fx = PgFixture::new("sem_toast").await;
    fx.sql(
        "CREATE TABLE sem_toast.doc (id int PRIMARY KEY, body text, n int); \
         ALTER TABLE sem_toast.doc ALTER COLUMN body SET STORAGE EXTERNAL",
    )
    .await;
    let child = fx.spawn(&fx.config(&["doc"], "snapshot = \"never\""));
    fx.wait_caught_up(WAIT).await;
    fx.sql("INSERT INTO sem_toast.doc VALUES (1, repeat('x', 100000), 1); UPDATE sem_toast.doc SET n = 2 WHERE id = 1").await;
    let events = fx.wait_for_events(2, WAIT);
    fx.stop(child);
    fx.cleanup().await;

    assert_eq!(
        events[0]["after"]["body"].as_str().map(str::len),
        Some(100000)
    );
    let update = &events[1];
    assert_eq!(update["op"], "update");
    assert_eq!(update["unchanged"], json!(["body"]));
    assert_eq!(
        update["after"],
        json!({"id": 1, "n": 2}),
        "body must be absent, not a placeholder"
    );
}

#[tokio::test]
async fn replica_identity_full_and_default_before_images_and_truncate() {
    let fx = PgFixture::new("sem_identity").await;
    fx.sql(
        "CREATE TABLE sem_identity.full_t (id int PRIMARY KEY, v text); ALTER TABLE sem_identity.full_t REPLICA IDENTITY FULL; \
         CREATE TABLE sem_identity.dflt (id int PRIMARY KEY, v text)",
    )
    .await;
    let child = fx.spawn(&fx.config(&["full_t", "dflt"], "snapshot = \"never\""));
    fx.wait_caught_up(WAIT).await;
    fx.sql(
        "INSERT INTO sem_identity.full_t VALUES (1, 'a'); UPDATE sem_identity.full_t SET v = 'b'; DELETE FROM sem_identity.full_t; \
         INSERT INTO sem_identity.dflt VALUES (1, 'a'); UPDATE sem_identity.dflt SET v = 'b'; UPDATE sem_identity.dflt SET id = 2; \
         DELETE FROM sem_identity.dflt; TRUNCATE sem_identity.dflt",
    )
    .await;
    let events = fx.wait_for_events(9, WAIT);
    fx.stop(child);
    fx.cleanup().await;

    let ops: Vec<&str> = events.iter().map(|e| e["op"].as_str().unwrap()).collect();
    assert_eq!(
        ops,
        [
            "insert", "update", "delete", "insert", "update", "delete", "insert", "delete",
            "truncate"
        ]
    );
    // FULL: complete old rows.
    assert_eq!(events[1]["before"], json!({"id": 1, "v": "a"}));
    assert_eq!(events[2]["before"], json!({"id": 1, "v": "b"}));
    assert_eq!(events[2]["key"], json!({"id": 1}));
    // DEFAULT: no before for a plain update, the old key for a key change (the delete of the
    // old key, then the insert under the new one) and a delete.
    assert_eq!(events[4]["before"], Value::Null);
    assert_eq!(events[5]["before"], json!({"id": 1}));
    assert_eq!(events[5]["key"], json!({"id": 1}));
    assert_eq!(events[5]["new_key"], json!({"id": 2}));
    assert_eq!(events[6]["key"], json!({"id": 2}));
    assert_eq!(events[6]["old_key"], json!({"id": 1}));
    assert_eq!(events[7]["before"], json!({"id": 2}));
    assert_eq!(events[8]["source"]["table"], "dflt");
    assert_eq!(events[8]["key"], json!({}));
    // Every change of one transaction shares its txid and commit time.
    assert_eq!(events[0]["source"]["txid"], events[8]["source"]["txid"]);
    assert!(events[0]["source"]["commit_ts_ms"].as_i64().unwrap() > 1_700_000_000_000);
}

#[tokio::test]
async fn columns_added_and_dropped_mid_stream_appear_without_restart() {
    let fx = PgFixture::new("sem_ddl").await;
    fx.sql("CREATE TABLE sem_ddl.t (id int PRIMARY KEY, a text)")
        .await;
    let child = fx.spawn(&fx.config(&["t"], "snapshot = \"never\""));
    fx.wait_caught_up(WAIT).await;
    fx.sql("INSERT INTO sem_ddl.t VALUES (1, 'x')").await;
    fx.sql("ALTER TABLE sem_ddl.t ADD COLUMN b int DEFAULT 7")
        .await;
    fx.sql("INSERT INTO sem_ddl.t VALUES (2, 'y', 8)").await;
    fx.sql("ALTER TABLE sem_ddl.t DROP COLUMN a").await;
    fx.sql("INSERT INTO sem_ddl.t VALUES (3, 9)").await;
    let events = fx.wait_for_events(3, WAIT);
    fx.stop(child);
    fx.cleanup().await;
    assert_eq!(events[0]["after"], json!({"id": 1, "a": "x"}));
    assert_eq!(events[1]["after"], json!({"id": 2, "a": "y", "b": 8}));
    assert_eq!(events[2]["after"], json!({"id": 3, "b": 9}));
}

#[tokio::test]
async fn streamed_transactions_honour_savepoint_rollbacks_and_aborts() {
    let fx = PgFixture::new("sem_stream").await;
    fx.sql("CREATE TABLE sem_stream.t (id int PRIMARY KEY, pad text)")
        .await;
    // A tiny spill threshold so the streamed transaction also goes through the disk spool.
    let child = fx.spawn(&fx.config(&["t"], "snapshot = \"never\"\nstream_memory_bytes = 65536"));
    fx.wait_caught_up(WAIT).await;
    // logical_decoding_work_mem is 64kB on the test server: these transactions are streamed.
    fx.sql(
        "BEGIN; INSERT INTO sem_stream.t SELECT g, repeat('p', 100) FROM generate_series(1, 5000) g; \
         SAVEPOINT s1; INSERT INTO sem_stream.t SELECT g, 'rolled back' FROM generate_series(5001, 8000) g; ROLLBACK TO s1; \
         INSERT INTO sem_stream.t SELECT g, 'kept' FROM generate_series(8001, 8010) g; COMMIT",
    )
    .await;
    fx.sql("BEGIN; INSERT INTO sem_stream.t SELECT g, 'aborted' FROM generate_series(20001, 26000) g; ROLLBACK").await;
    fx.sql("INSERT INTO sem_stream.t VALUES (99999, 'after')")
        .await;
    let events = fx.wait_for_events(5011, WAIT);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events_settled = fx.events();
    fx.stop(child);
    fx.cleanup().await;

    assert_eq!(
        events_settled.len(),
        5011,
        "rolled back and aborted rows must not appear"
    );
    let ids: Vec<i64> = events
        .iter()
        .map(|e| e["key"]["id"].as_i64().unwrap())
        .collect();
    let expected: Vec<i64> = (1..=5000).chain(8001..=8010).chain([99999]).collect();
    assert_eq!(ids, expected);
    let txids: std::collections::HashSet<_> = events[..5010]
        .iter()
        .map(|e| e["source"]["txid"].clone())
        .collect();
    assert_eq!(txids.len(), 1, "one transaction, one txid");
    assert!(of_op(&events, "insert").len() == 5011);
}

#[tokio::test]
async fn the_slot_moves_past_wal_of_unpublished_tables() {
    let fx = PgFixture::new("sem_idle").await;
    fx.sql("CREATE TABLE sem_idle.captured (id int PRIMARY KEY); CREATE TABLE sem_idle.other (id int PRIMARY KEY, pad text)").await;
    let child = fx.spawn(&fx.config(&["captured"], "snapshot = \"never\""));
    fx.wait_caught_up(WAIT).await;
    let before: String = fx.client.query_one("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'sem_idle'", &[]).await.unwrap().get(0);
    fx.sql(
        "INSERT INTO sem_idle.other SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g",
    )
    .await;
    // Nothing of it is published, yet the slot confirms past it: no WAL is held for us.
    fx.wait_caught_up(WAIT).await;
    let after: String = fx.client.query_one("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'sem_idle'", &[]).await.unwrap().get(0);
    fx.stop(child);
    fx.cleanup().await;
    assert!(fx.events().is_empty());
    assert_ne!(before, after);
}

#[tokio::test]
async fn an_interrupted_snapshot_resumes_after_its_stored_chunks() {
    let fx = PgFixture::new("sem_resnap").await;
    fx.sql("CREATE TABLE sem_resnap.t (id int PRIMARY KEY); INSERT INTO sem_resnap.t SELECT generate_series(1, 50000)").await;
    let config = fx.config(&["t"], "snapshot_chunk_rows = 200");
    let mut child = fx.spawn(&config);
    fx.wait_for_events(1000, WAIT);
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = fx.events().len();
    assert!(
        partial < 50000,
        "the kill must interrupt the snapshot ({partial} rows copied)"
    );
    assert!(
        fx.stored_lsn().is_some(),
        "the consistent point is stored before the copy"
    );
    let store = cdc_bridge::checkpoint::CheckpointStore::open(&fx.ws.path("state")).unwrap();
    let progress = store.load("sem_resnap").unwrap()["snapshot/sem_resnap.t"]
        .token
        .clone();
    drop(store);
    let progress = cdc_bridge::source::progress::TableProgress::parse(&progress).unwrap();
    let copied_up_to: i64 = progress
        .after
        .as_ref()
        .map_or(0, |key| key[0].parse().unwrap());
    assert_eq!(copied_up_to, progress.chunks as i64 * 200, "{progress:?}");

    let child = fx.spawn(&config);
    // The second run streams on and copies only what the first did not store.
    fx.wait_for_events(50_000, WAIT);
    fx.wait_caught_up(WAIT).await;
    fx.sql("INSERT INTO sem_resnap.t VALUES (50001)").await;
    fx.wait_caught_up(WAIT).await;
    fx.stop(child);
    fx.cleanup().await;
    let events = fx.events();
    assert_eq!(events.last().unwrap()["op"], "insert");
    let mut ids: Vec<i64> = events
        .iter()
        .map(|e| e["key"]["id"].as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids,
        (1..=50001).collect::<Vec<_>>(),
        "every row is delivered"
    );
    // The second run copies exactly the rows after the last stored chunk, once each.
    let second: Vec<i64> = events[partial..]
        .iter()
        .filter(|e| e["op"] == "snapshot")
        .map(|e| e["key"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(second, (copied_up_to + 1..=50000).collect::<Vec<_>>());
    assert!(fx
        .ws
        .log_tail()
        .contains("copying the rest while streaming"));
}

#[tokio::test]
async fn initial_only_copies_the_tables_then_stops_and_leaves_no_slot() {
    let fx = PgFixture::new("sem_once").await;
    fx.sql("CREATE TABLE sem_once.t (id int PRIMARY KEY); INSERT INTO sem_once.t SELECT generate_series(1, 100)").await;
    let config = fx.config(&["t"], "snapshot = \"initial_only\"");
    let first = fx.ws.run(&["run", "--config", config.to_str().unwrap()]);
    assert!(first.status.success(), "{}", support::stderr(&first));
    assert_eq!(fx.events().len(), 100);
    assert!(fx
        .events()
        .iter()
        .all(|e| e["op"] == "snapshot" && e["source"]["snapshot"] == true));
    let slots = fx
        .client
        .query(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'sem_once'",
            &[],
        )
        .await
        .unwrap();
    assert!(slots.is_empty(), "the temporary slot is gone");
    // The snapshot is complete: a second run copies nothing again.
    let second = fx.ws.run(&["run", "--config", config.to_str().unwrap()]);
    assert!(second.status.success());
    assert_eq!(fx.events().len(), 100);
}

#[tokio::test]
async fn check_warns_about_tables_without_a_key() {
    let fx = PgFixture::new("sem_nokey").await;
    fx.sql("CREATE TABLE sem_nokey.t (v int)").await;
    let config = fx.config(&["t"], "");
    let output = fx.ws.run(&["check", "--config", config.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("warn no primary key or replica identity on sem_nokey.t: updates and deletes carry no key"), "{stdout}");
    assert!(
        stdout.contains("ok   wal_level = logical; role cdc has REPLICATION"),
        "{stdout}"
    );
}
