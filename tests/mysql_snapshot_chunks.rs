//! Chunked, resumable MariaDB snapshots against a real server: SIGKILL during the first copy,
//! several times, under a live workload of inserts, updates, deletes and key changes. Each run
//! resumes at the first unfinished chunk (the copy's generation never restarts, its stored
//! chunks never go back), per key the versions reach the consumer in order (a copied row never
//! follows a newer change or its key's delete, within a run), and the events, applied in order,
//! equal the table.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use serde_json::Value;
use support::copies::{check_key_order, kill_during_copy, stored_copy, CopyProgress};
use support::mysql::{connect, pipeline, pipeline_of, sql, url};
use support::{Rng, Workspace};

const WAIT: Duration = Duration::from_secs(120);
const ROWS: i64 = 200_000;
const CHUNK: u64 = 2_000;

/// Writes to `table` until stopped: each write sets `g` to a new, increasing number, as an
/// update, an upsert, a delete, or a key change (the row moves to a new, higher id).
fn workload(table: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<i64> {
    workload_over(table, ROWS, stop)
}

/// [`workload`] on ids `1..=ids` (few ids: each is written many times in a short while).
fn workload_over(table: String, ids: i64, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<i64> {
    tokio::spawn(async move {
        let mut conn = connect().await;
        let mut rng = Rng::seeded();
        let mut moved = ROWS * 10;
        let mut writes = 0i64;
        while !stop.load(Ordering::Relaxed) {
            writes += 1;
            let g = writes;
            let id = rng.below(ids as u64) as i64 + 1;
            let statement = match rng.below(10) {
                0..=4 => format!("UPDATE {table} SET g = {g} WHERE id = {id}"),
                5 | 6 => format!(
                    "INSERT INTO {table} VALUES ({id}, {g}, 'new') ON DUPLICATE KEY UPDATE g = {g}"
                ),
                7 | 8 => format!("DELETE FROM {table} WHERE id = {id}"),
                _ => {
                    moved += 1;
                    format!("UPDATE {table} SET id = {moved}, g = {g} WHERE id = {id}")
                }
            };
            conn.query_drop(statement).await.unwrap();
        }
        writes
    })
}

/// The events applied in order: `id -> g`.
fn replay(events: &[Value]) -> BTreeMap<i64, i64> {
    let mut replayed = BTreeMap::new();
    for event in events {
        let id = event["key"]["id"].as_i64().unwrap();
        match event["op"].as_str().unwrap() {
            "delete" => {
                replayed.remove(&id);
            }
            _ => {
                replayed.insert(id, event["after"]["g"].as_i64().unwrap());
            }
        }
    }
    replayed
}

/// Creates `table` with `ROWS` rows: `id`, `g` = 0, a pad.
async fn create_table(db: &mut mysql_async::Conn, table: &str) {
    create_table_of(db, table, ROWS).await;
}

/// Creates `table` with `rows` rows: `id`, `g` = 0, a pad.
async fn create_table_of(db: &mut mysql_async::Conn, table: &str, rows: i64) {
    sql(
        db,
        &format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id BIGINT PRIMARY KEY, g BIGINT NOT NULL, pad VARCHAR(64)); \
             INSERT INTO {table} SELECT seq, 0, REPEAT('x', 40) FROM seq_1_to_{rows}; ANALYZE TABLE {table}"
        ),
    )
    .await;
}

/// The table's rows: `id -> g`.
async fn table_state(db: &mut mysql_async::Conn, table: &str) -> BTreeMap<i64, i64> {
    db.query::<(i64, i64), _>(format!("SELECT id, g FROM {table}"))
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Waits until the output holds the table's latest version (`g`): the bridge caught up.
fn wait_caught_up(ws: &Workspace, expected: &BTreeMap<i64, i64>) {
    let max_g = expected.values().copied().max().unwrap_or(0);
    support::wait_until(WAIT, "the last write", || {
        events(ws)
            .iter()
            .any(|e| e["after"]["g"].as_i64() == Some(max_g))
    });
}

fn log(ws: &Workspace) -> String {
    std::fs::read_to_string(ws.path("bridge.log")).unwrap_or_default()
}

fn events(ws: &Workspace) -> Vec<Value> {
    support::read_records(&ws.path("out.jsonl"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_the_copy_resumes_at_the_first_unfinished_chunk_and_converges() {
    let name = format!("chunks_{}", std::process::id());
    let table = format!("app.{name}");
    let mut db = connect().await;
    create_table(&mut db, &table).await;
    let ws = Workspace::new();
    let config = pipeline(
        &ws,
        "chunks",
        &name,
        &format!("snapshot = \"initial\"\nsnapshot_chunk_rows = {CHUNK}\n[pipeline.buffer]\nmax_bytes = 1048576"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writer = workload(table.clone(), stop.clone());

    let (progress, runs) = kill_during_copy(
        &ws,
        Path::new(&config),
        ("chunks", &table),
        &ws.path("out.jsonl"),
        20_000,
        6,
    )
    .await;
    let child = ws.spawn(&["run", "--config", &config]);
    support::wait_until(WAIT, "the copy to finish", || {
        log(&ws).contains("table copied while streaming") || progress.last().is_some_and(|p| p.done)
    });
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    // Caught up: the last write is in the output.
    let expected = table_state(&mut db, &table).await;
    wait_caught_up(&ws, &expected);
    tokio::time::sleep(Duration::from_millis(500)).await;
    support::terminate(&child);
    let mut child = child;
    assert!(child.wait().unwrap().success(), "{}", ws.log_tail());
    let stored = stored_copy(&ws, "chunks", &table).unwrap();
    sql(&mut db, &format!("DROP TABLE {table}")).await;

    assert!(stored.done, "the copy is complete: {stored:?}");
    let events = events(&ws);
    let copied = events.iter().filter(|e| e["op"] == "snapshot").count();
    eprintln!(
        "{ROWS} rows, {writes} concurrent writes, {} kills, progress after each (chunks of {CHUNK}): {:?}; {copied} snapshot rows emitted in all ({:.2}x the table)",
        progress.len(),
        progress.iter().map(CopyProgress::summary).collect::<Vec<_>>(),
        copied as f64 / ROWS as f64
    );
    assert!(writes > 1000, "the workload must overlap the copy");
    assert!(log(&ws).contains("copying the rest while streaming"));
    assert!(
        (copied as i64) < ROWS + ROWS / 2,
        "{copied} rows copied for a table of {ROWS}"
    );

    // Within each run (a restart replays what its predecessor had not stored).
    for run in runs
        .windows(2)
        .map(|w| &events[w[0]..w[1]])
        .chain([&events[*runs.last().unwrap()..]])
    {
        check_key_order(run);
    }
    let replayed = replay(&events);
    assert_eq!(replayed.len(), expected.len());
    assert!(
        replayed == expected,
        "applying the events does not give the table"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requested_copy_while_streaming_keeps_per_key_order_and_converges() {
    let name = format!("requested_{}", std::process::id());
    let (table, signal) = (format!("app.{name}"), format!("app.{name}_signal"));
    let mut db = connect().await;
    create_table(&mut db, &table).await;
    sql(
        &mut db,
        &format!(
            "DROP TABLE IF EXISTS {signal}; \
             CREATE TABLE {signal} (id BIGINT AUTO_INCREMENT PRIMARY KEY, pipeline VARCHAR(255) NOT NULL, tables TEXT NOT NULL)"
        ),
    )
    .await;
    let ws = Workspace::new();
    let config = pipeline(
        &ws,
        "requested",
        &name,
        &format!("snapshot_chunk_rows = {CHUNK}\nsignal_table = \"{signal}\""),
    );
    let child = support::mysql::start_streaming(&ws, &config);
    let request = |table: &str| {
        ws.run(&[
            "snapshot",
            "--config",
            &config,
            "--pipeline",
            "requested",
            "--table",
            table,
        ])
    };
    let refused = request("app.not_captured");
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        support::stderr(&refused).contains("is not among the pipeline's tables"),
        "{}",
        support::stderr(&refused)
    );

    let stop = Arc::new(AtomicBool::new(false));
    let writer = workload(table.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let requested = request(&table);
    assert!(
        requested.status.success(),
        "{}",
        support::stderr(&requested)
    );
    support::wait_until(WAIT, "the requested copy", || {
        log(&ws).contains("table copied while streaming")
    });
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    let expected = table_state(&mut db, &table).await;
    wait_caught_up(&ws, &expected);
    tokio::time::sleep(Duration::from_millis(500)).await;
    support::terminate(&child);
    let mut child = child;
    assert!(child.wait().unwrap().success(), "{}", ws.log_tail());
    sql(&mut db, &format!("DROP TABLE {table}; DROP TABLE {signal}")).await;

    let events = events(&ws);
    let copied = events.iter().filter(|e| e["op"] == "snapshot").count();
    eprintln!(
        "{ROWS} rows, {writes} concurrent writes, {copied} copied while streaming, {} events",
        events.len()
    );
    assert!(writes > 1000, "the workload must overlap the copy");
    assert!(copied > 0);
    check_key_order(&events);
    let replayed = replay(&events);
    assert_eq!(replayed.len(), expected.len());
    assert!(
        replayed == expected,
        "applying the events does not give the table"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_decimals_floats_and_enums_page_through_every_row_once() {
    let name = format!("odd_keys_{}", std::process::id());
    let table = format!("app.{name}");
    let mut db = connect().await;
    // Decimals that differ beyond a double's precision, floats that are not exact in binary,
    // an ENUM whose order (by index) is not its labels' order, a SET whose order (by its
    // members' bits) is not its text's.
    sql(
        &mut db,
        &format!(
            "DROP TABLE IF EXISTS {table}; \
             CREATE TABLE {table} (d DECIMAL(30,10), e ENUM('b','a','c'), f FLOAT, s SET('b','a','c'), id INT, PRIMARY KEY (d, e, f, s, id)); \
             INSERT INTO {table} SELECT 12345678901234567890.0000000001 + (seq % 3) / 10000000000, \
               ELT(1 + seq % 3, 'b', 'a', 'c'), 0.1 * (seq % 2), ELT(1 + seq % 5, 'a', 'b', 'a,b', 'c', 'b,c'), seq FROM seq_1_to_300"
        ),
    )
    .await;
    let ws = Workspace::new();
    let config = pipeline(
        &ws,
        "odd",
        &name,
        "snapshot = \"initial\"\nsnapshot_chunk_rows = 7",
    );
    let child = support::mysql::start_streaming(&ws, &config);
    support::terminate(&child);
    let mut child = child;
    assert!(child.wait().unwrap().success(), "{}", ws.log_tail());
    sql(&mut db, &format!("DROP TABLE {table}")).await;
    let mut ids: Vec<i64> = events(&ws)
        .iter()
        .map(|e| e["after"]["id"].as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=300).collect::<Vec<_>>(), "every row once");
}

/// The events of table `app.{table}`.
fn events_of<'a>(events: &'a [Value], table: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["source"]["table"] == table)
        .collect()
}

/// Three tables copied by three workers under three writers, SIGKILLed during the copy. The
/// workers' snapshots start 50 ms apart (a debug-build setting for tests), so the writers'
/// commits come between them: each table is copied whole at its worker's own position, and
/// the stream skips its changes up to there. The copy resumes after each kill and, per
/// table, the events equal the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_copy_at_several_positions_under_writes_resumes_and_converges() {
    parallel_copy_at_several_positions(3, ROWS).await;
}

/// The same copy, uninterrupted: in the one run, per key, the copy comes first and then only
/// newer changes, though the stream starts before the later workers' snapshots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_copy_at_several_positions_keeps_per_key_order() {
    parallel_copy_at_several_positions(0, ROWS / 4).await;
}

/// Copies three tables (`rows`, a quarter, an eighth) with three workers whose snapshots
/// start apart, under a writer per table on its first 100 ids (each written again and again,
/// so a change replayed after the copy would be older than the copy), killing the bridge `kills` times during the copy;
/// checks per-key order within each run, the tables' convergence and the stored progress.
async fn parallel_copy_at_several_positions(kills: usize, rows: i64) {
    // The bridges this test starts inherit it (each test runs in a process of its own).
    std::env::set_var("CDC_BRIDGE_TEST_SNAPSHOT_STAGGER_MS", "50");
    let name = format!("parallel_{}", std::process::id());
    let tables: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|t| format!("{name}_{t}"))
        .collect();
    let mut db = connect().await;
    for (table, rows) in tables.iter().zip([rows, rows / 4, rows / 8]) {
        create_table_of(&mut db, &format!("app.{table}"), rows).await;
    }
    let ws = Workspace::new();
    let names: Vec<&str> = tables.iter().map(String::as_str).collect();
    let config = pipeline_of(
        &url(),
        &ws,
        "parallel",
        &names,
        &format!("snapshot = \"initial\"\nsnapshot_chunk_rows = {CHUNK}\nsnapshot_parallelism = 3\n[pipeline.buffer]\nmax_bytes = 1048576"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = tables
        .iter()
        .map(|t| workload_over(format!("app.{t}"), 100, stop.clone()))
        .collect();

    let first = format!("app.{}", tables[0]);
    let (progress, runs) = match kills {
        0 => (Vec::new(), vec![0]),
        _ => {
            let output = ws.path("out.jsonl");
            let run = ("parallel", first.as_str());
            kill_during_copy(&ws, Path::new(&config), run, &output, 20_000, kills).await
        }
    };
    // The final run ends the first copy (no kill) or copies the rest of each unfinished table.
    let labels: Vec<String> = tables.iter().map(|t| format!("app.{t}")).collect();
    let unfinished: Vec<&String> = labels
        .iter()
        .filter(|t| kills > 0 && !stored_copy(&ws, "parallel", t).is_some_and(|p| p.done))
        .collect();
    let earlier_runs = log(&ws).len();
    let child = ws.spawn(&["run", "--config", &config]);
    support::wait_until(WAIT, "the copy to finish", || {
        let log = log(&ws);
        let this_run = &log[earlier_runs..];
        match kills {
            0 => this_run.contains("snapshot done"),
            _ => unfinished.iter().all(|t| {
                this_run
                    .lines()
                    .any(|l| l.contains("table copied while streaming") && l.contains(t.as_str()))
            }),
        }
    });
    stop.store(true, Ordering::Relaxed);
    let mut writes = 0;
    for writer in writers {
        writes += writer.await.unwrap();
    }
    let mut expected = Vec::new();
    for table in &tables {
        let state = table_state(&mut db, &format!("app.{table}")).await;
        let max_g = state.values().copied().max().unwrap_or(0);
        support::wait_until(WAIT, "the last write of each table", || {
            events_of(&events(&ws), table)
                .iter()
                .any(|e| e["after"]["g"].as_i64() == Some(max_g))
        });
        expected.push(state);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    support::terminate(&child);
    let mut child = child;
    assert!(child.wait().unwrap().success(), "{}", ws.log_tail());
    let stored: Vec<CopyProgress> = tables
        .iter()
        .map(|t| stored_copy(&ws, "parallel", &format!("app.{t}")).unwrap())
        .collect();
    for table in &tables {
        sql(&mut db, &format!("DROP TABLE app.{table}")).await;
    }

    let events = events(&ws);
    let copied = events.iter().filter(|e| e["op"] == "snapshot").count();
    let started = log(&ws);
    let read_later = stored.iter().filter(|p| p.read_at.is_some()).count();
    eprintln!(
        "{writes} concurrent writes, progress of the largest table after each kill: {:?}; {copied} snapshot rows in all; tables read after the stream's start: {read_later}",
        progress.iter().map(CopyProgress::summary).collect::<Vec<_>>(),
    );
    assert!(writes > 1000, "the workload must overlap the copy");
    assert!(
        started.contains("aligned=false"),
        "the snapshots are at different positions"
    );
    assert!(
        read_later >= 1,
        "a table copied at a later position stores it: {stored:?}"
    );
    assert!(
        stored.iter().all(|p| p.ranges == 1),
        "whole tables: {stored:?}"
    );
    assert!(
        stored.iter().all(|p| p.done),
        "every copy is complete: {stored:?}"
    );
    for (table, expected) in tables.iter().zip(&expected) {
        let of_table: Vec<Value> = events_of(&events, table).into_iter().cloned().collect();
        for run in runs
            .windows(2)
            .map(|w| (w[0], w[1]))
            .chain([(*runs.last().unwrap(), events.len())])
        {
            check_key_order(events_of(&events[run.0..run.1], table));
        }
        let replayed = replay(&of_table);
        assert!(
            replayed == *expected,
            "{table}: applying the events does not give the table ({} rows replayed, {} in the table)",
            replayed.len(),
            expected.len()
        );
    }
}

/// With no writes, the workers' snapshots meet at one position, and a table of more than two
/// chunks is split into one range of its key per worker: every row is copied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_copy_at_one_position_splits_a_table_into_ranges() {
    let name = format!("ranges_{}", std::process::id());
    let table = format!("app.{name}");
    let mut db = connect().await;
    create_table_of(&mut db, &table, 30_000).await;
    let ws = Workspace::new();
    let config = pipeline(
        &ws,
        "ranges",
        &name,
        "snapshot = \"initial_only\"\nsnapshot_chunk_rows = 2000\nsnapshot_parallelism = 3",
    );
    let output = ws.run(&["run", "--config", &config]);
    assert!(output.status.success(), "{}", support::stderr(&output));
    let stored = stored_copy(&ws, "ranges", &table).unwrap();
    sql(&mut db, &format!("DROP TABLE {table}")).await;
    let logged = support::stderr(&output);
    assert!(logged.contains("aligned=true"), "{logged}");
    assert!(stored.done && stored.ranges == 3, "{stored:?}");
    let mut ids: Vec<i64> = events(&ws)
        .iter()
        .map(|e| e["after"]["id"].as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=30_000).collect::<Vec<_>>(), "every row once");
}
