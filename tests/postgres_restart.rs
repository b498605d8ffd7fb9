//! A server restart mid-stream: the bridge reconnects with backoff and loses nothing.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use support::pg::{connect, env_url, PgFixture, RESTARTABLE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_mid_stream_loses_nothing() {
    let fx = PgFixture::on(RESTARTABLE, "restart").await;
    fx.sql("CREATE TABLE restart.t (id int PRIMARY KEY)").await;
    let child = fx.spawn(&fx.config(&["t"], ""));
    fx.wait_caught_up(Duration::from_secs(60)).await;
    for batch in 0..50 {
        fx.sql(&format!(
            "INSERT INTO restart.t SELECT g FROM generate_series({}, {}) g",
            batch * 100 + 1,
            batch * 100 + 100
        ))
        .await;
    }
    // Restart while the bridge is still working through those 5,000 rows.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services.sh");
    let status = Command::new(script)
        .args(["restart", "postgres_restart"])
        .status()
        .unwrap();
    assert!(status.success());
    let client = connect(&env_url(RESTARTABLE)).await;
    client
        .batch_execute("INSERT INTO restart.t SELECT g FROM generate_series(5001, 10000) g")
        .await
        .unwrap();

    let start = std::time::Instant::now();
    let ids = loop {
        let ids: BTreeSet<i64> = fx
            .events()
            .iter()
            .map(|e| e["key"]["id"].as_i64().unwrap())
            .collect();
        if ids.len() >= 10_000 || start.elapsed() > Duration::from_secs(120) {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    fx.stop(child);
    let log = std::fs::read_to_string(fx.ws.path("bridge.log")).unwrap();
    drop(client);
    let fx_client = connect(&env_url(RESTARTABLE)).await;
    support::pg::drop_slot(&fx_client, "restart").await;
    assert_eq!(ids, (1..=10_000).collect(), "log:\n{log}");
    assert!(
        log.contains("transient failure; restarting"),
        "the bridge must have noticed the restart:\n{log}"
    );
}
