//! Bounded memory on large inputs: a 500,000-row transaction streams through, and a snapshot
//! of wide rows stays within the pipeline's byte budget.

mod support;

use std::time::Duration;

use support::pg::PgFixture;
use support::{peak_rss_mib, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500k_row_transaction_streams_with_bounded_memory() {
    const ROWS: usize = 500_000;
    let fx = PgFixture::new("large_txn").await;
    fx.sql("CREATE TABLE large_txn.t (id int PRIMARY KEY, pad text)")
        .await;
    let child = fx.spawn(&fx.config(&["t"], "snapshot = \"never\""));
    fx.wait_caught_up(Duration::from_secs(60)).await;
    fx.sql(&format!(
        "INSERT INTO large_txn.t SELECT g, repeat('x', 100) FROM generate_series(1, {ROWS}) g"
    ))
    .await;
    let events = fx.wait_for_events(ROWS, Duration::from_secs(600));
    let peak = peak_rss_mib(child.id());
    fx.stop(child);
    fx.cleanup().await;
    eprintln!("bridge peak RSS while streaming a {ROWS}-row transaction: {peak:.1} MiB");
    assert_eq!(events.len(), ROWS);
    assert_eq!(events.last().unwrap()["key"]["id"], ROWS);
    assert!(peak < 150.0, "peak RSS {peak:.1} MiB");
}

/// 1,000 rows of 200 KB (200 MB) under a 2 MB buffer budget: the snapshot reads only what the
/// budget lets through, so the bridge's peak RSS stays far below the table's size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_wide_rows_stays_within_the_byte_budget() {
    const ROWS: usize = 1_000;
    const ROW_BYTES: usize = 200_000;
    let fx = PgFixture::new("wide_snapshot").await;
    fx.sql("CREATE TABLE wide_snapshot.t (id int PRIMARY KEY, pad text)")
        .await;
    // md5 chains are incompressible enough to be sent whole, and cheap to store.
    fx.sql(&format!(
        "INSERT INTO wide_snapshot.t SELECT g, repeat(md5(g::text), {}) FROM generate_series(1, {ROWS}) g",
        ROW_BYTES / 32
    ))
    .await;
    let config = fx.config(&["t"], "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("kind = \"file\"\npath = \"out/{}.jsonl\"", fx.name),
        "kind = \"null\"",
    ) + "[pipeline.buffer]\nmax_bytes = 2097152\n";
    std::fs::write(&config, text).unwrap();
    let child = fx.spawn(&config);
    wait_until(Duration::from_secs(300), "the end of the snapshot", || {
        std::fs::read_to_string(fx.ws.path("bridge.log"))
            .unwrap_or_default()
            .contains("snapshot of table done")
    });
    let peak = peak_rss_mib(child.id());
    let log = std::fs::read_to_string(fx.ws.path("bridge.log")).unwrap();
    fx.stop(child);
    fx.cleanup().await;
    eprintln!(
        "bridge peak RSS during a snapshot of {ROWS} rows of {} KB: {peak:.1} MiB",
        ROW_BYTES / 1000
    );
    assert!(
        log.contains(&format!("rows={ROWS}")),
        "every row copied: {log}"
    );
    assert!(peak < 80.0, "peak RSS {peak:.1} MiB");
}
