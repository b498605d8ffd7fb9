//! The Postgres crash loop: a live insert/update/delete workload while the bridge is killed
//! with SIGKILL at random moments. Every committed change reaches the sink, in commit order
//! per key, and a restart repeats only changes after the checkpoint stored before the crash.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use support::pg::{connect, pg_url, PgFixture};
use support::Rng;

const KILLS: usize = 22;

/// One expected event: the transaction number `g` (also the row's `g` column), op, key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Change {
    g: i64,
    op: &'static str,
    id: i64,
}

fn change_of(event: &Value) -> (Change, u64) {
    let op = match event["op"].as_str().unwrap() {
        "insert" => "insert",
        "update" => "update",
        "delete" => "delete",
        other => panic!("unexpected op {other}"),
    };
    let row = if op == "delete" {
        &event["before"]
    } else {
        &event["after"]
    };
    let position: u64 = {
        let (hi, lo) = event["source"]["position"]
            .as_str()
            .unwrap()
            .split_once('/')
            .unwrap();
        (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
    };
    (
        Change {
            g: row["g"].as_i64().unwrap(),
            op,
            id: event["key"]["id"].as_i64().unwrap(),
        },
        position,
    )
}

/// Runs transactions until stopped: each sets one key's `g` to its transaction number, as an
/// insert, an update, or an update followed by a delete. Records the expected events.
async fn workload(stop: Arc<AtomicBool>, expected: Arc<Mutex<Vec<Change>>>) {
    let mut client = connect(&pg_url()).await;
    let mut rng = Rng::seeded();
    let mut existing = HashSet::new();
    let mut g: i64 = 0;
    while !stop.load(Ordering::Relaxed) {
        g += 1;
        let id = rng.below(40) as i32 + 1;
        let tx = client.transaction().await.unwrap();
        let mut changes = Vec::new();
        if existing.contains(&id) && rng.below(4) == 0 {
            tx.execute("UPDATE crash_pg.kv SET g = $2 WHERE id = $1", &[&id, &g])
                .await
                .unwrap();
            tx.execute("DELETE FROM crash_pg.kv WHERE id = $1", &[&id])
                .await
                .unwrap();
            changes.push(Change {
                g,
                op: "update",
                id: id.into(),
            });
            changes.push(Change {
                g,
                op: "delete",
                id: id.into(),
            });
        } else {
            tx.execute("INSERT INTO crash_pg.kv VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET g = EXCLUDED.g", &[&id, &g]).await.unwrap();
            changes.push(Change {
                g,
                op: if existing.contains(&id) {
                    "update"
                } else {
                    "insert"
                },
                id: id.into(),
            });
        }
        tx.commit().await.unwrap();
        if changes.last().is_some_and(|c| c.op == "delete") {
            existing.remove(&id);
        } else {
            existing.insert(id);
        }
        expected.lock().unwrap().extend(changes);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_live_workload_loses_nothing_and_keeps_per_key_order() {
    let fx = PgFixture::new("crash_pg").await;
    fx.sql("CREATE TABLE crash_pg.kv (id int PRIMARY KEY, g bigint); ALTER TABLE crash_pg.kv REPLICA IDENTITY FULL").await;
    let config = fx.config(&["kv"], "");

    // A first, graceful run takes the (empty) snapshot and stores the consistent point.
    let child = fx.spawn(&config);
    fx.wait_caught_up(Duration::from_secs(30)).await;
    fx.stop(child);

    let stop = Arc::new(AtomicBool::new(false));
    let expected = Arc::new(Mutex::new(Vec::new()));
    let writer = tokio::spawn(workload(stop.clone(), expected.clone()));
    let mut rng = Rng::seeded();
    // (complete lines in the output, stored checkpoint) after each kill.
    let mut kills: Vec<(usize, u64)> = Vec::new();
    for _ in 0..KILLS {
        let mut child = fx.spawn(&config);
        tokio::time::sleep(Duration::from_millis(400 + rng.below(2000))).await;
        assert!(
            child.try_wait().unwrap().is_none(),
            "bridge exited early:\n{}",
            fx.ws.log_tail()
        );
        child.kill().unwrap();
        child.wait().unwrap();
        let stored = fx.stored_lsn().expect("a checkpoint is stored");
        let complete_lines = std::fs::read(fx.out())
            .unwrap_or_default()
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        if let Some((_, previous)) = kills.last() {
            assert!(stored >= *previous, "stored checkpoint moved backward");
        }
        kills.push((complete_lines, stored));
    }
    let child = fx.spawn(&config);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    fx.wait_caught_up(Duration::from_secs(60)).await;
    fx.stop(child);
    fx.cleanup().await;

    let expected = expected.lock().unwrap().clone();
    let events: Vec<(Change, u64)> = fx.events().iter().map(change_of).collect();
    assert!(
        expected.len() > 500,
        "workload too small: {}",
        expected.len()
    );
    let progressing = kills.windows(2).filter(|w| w[1].1 > w[0].1).count();
    assert!(
        progressing >= 3,
        "kills must land while changes flow ({progressing} of {KILLS} runs stored progress)"
    );

    let bounds: Vec<usize> = kills.iter().map(|(lines, _)| *lines).collect();
    let checkpoints: Vec<Option<u64>> = kills.iter().map(|(_, stored)| Some(*stored)).collect();
    support::check_crash_runs(&expected, &events, &bounds, &checkpoints);
    let duplicates = events.len() - expected.len();
    eprintln!("{} committed changes, {} events written, {duplicates} duplicates across {KILLS} kills ({progressing} runs stored progress)", expected.len(), events.len());
}
