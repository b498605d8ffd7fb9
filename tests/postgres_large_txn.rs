//! A 500,000-row transaction streams through with bounded memory.

mod support;

use std::time::Duration;

use support::pg::PgFixture;

/// Peak resident memory (VmHWM) of a process, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib / 1024.0
}

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
