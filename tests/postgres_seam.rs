//! The snapshot/stream seam: rows written while the snapshot runs end up, when the events are
//! applied in order, exactly equal to the table.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::pg::{connect, pg_url, PgFixture};
use support::Rng;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_during_the_snapshot_converge_to_the_table() {
    let fx = PgFixture::new("seam").await;
    fx.sql("CREATE TABLE seam.t (id int PRIMARY KEY, v bigint, s text); INSERT INTO seam.t SELECT g, 0, 'initial' FROM generate_series(1, 30000) g").await;

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let client = connect(&pg_url()).await;
            let mut rng = Rng::seeded();
            let mut n: i64 = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = rng.below(40_000) as i32 + 1;
                let sql = match n % 3 {
                    0 => "UPDATE seam.t SET v = $2, s = 'updated' WHERE id = $1",
                    1 => "INSERT INTO seam.t VALUES ($1, $2, 'inserted') ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v, s = 'upserted'",
                    _ => "DELETE FROM seam.t WHERE id = $1 AND $2::bigint >= 0",
                };
                client.execute(sql, &[&id, &n]).await.unwrap();
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let child = fx.spawn(&fx.config(&["t"], "snapshot_chunk_rows = 500"));
    // Let the writer run through the whole snapshot and some streaming after it.
    fx.wait_for_events(30_000, Duration::from_secs(120));
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.unwrap();
    fx.wait_caught_up(Duration::from_secs(60)).await;
    fx.stop(child);

    let mut state: BTreeMap<i64, Value> = BTreeMap::new();
    let events = fx.events();
    for event in &events {
        let id = event["key"]["id"].as_i64().unwrap();
        match event["op"].as_str().unwrap() {
            "snapshot" | "insert" | "update" => {
                state.insert(id, event["after"].clone());
            }
            "delete" => {
                state.remove(&id);
            }
            other => panic!("unexpected op {other}"),
        }
    }
    let rows = fx
        .client
        .query("SELECT id, v, s FROM seam.t ORDER BY id", &[])
        .await
        .unwrap();
    fx.cleanup().await;
    let table: BTreeMap<i64, Value> = rows
        .iter()
        .map(|r| {
            let id: i32 = r.get(0);
            (
                i64::from(id),
                serde_json::json!({"id": id, "v": r.get::<_, i64>(1), "s": r.get::<_, String>(2)}),
            )
        })
        .collect();
    let snapshot_rows = events.iter().filter(|e| e["op"] == "snapshot").count();
    eprintln!(
        "{writes} concurrent writes, {snapshot_rows} snapshot rows, {} events",
        events.len()
    );
    assert!(writes > 100, "the writer must overlap the snapshot");
    assert_eq!(state.len(), table.len());
    assert!(
        state == table,
        "applying the events does not give the table"
    );
}
