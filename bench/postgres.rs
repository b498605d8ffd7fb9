//! Postgres source benchmark: `bench/run.sh` (or `cargo bench --bench postgres` with the
//! services of `scripts/services.sh` running and their environment loaded).
//!
//! Two slots are created on the same WAL; 1,000,000 rows are written in 1,000-row
//! transactions; one slot is drained by `pg_recvlogical` (pgoutput with streaming on, as the
//! bridge asks for it, to /dev/null), the other
//! by the release build of cdc-bridge into the `null` sink, both up to the same end LSN. The
//! bridge is done when its slot has confirmed the end LSN (it confirms only stored
//! checkpoints, ~0.1 s after storing them). Prints rows/s of both, their ratio, and the
//! bridge's peak RSS.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support.rs"]
mod support;

const ROWS: i64 = 1_000_000;
const ROWS_PER_TXN: i64 = 1_000;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let url = std::env::var("CDC_BRIDGE_PG_URL").expect("CDC_BRIDGE_PG_URL: run bench/run.sh");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(&url));
}

async fn run(url: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    for slot in ["bench_recv", "bench_bridge"] {
        let _ = client
            .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
            .await;
    }
    client
        .batch_execute(
            "DROP SCHEMA IF EXISTS bench CASCADE; CREATE SCHEMA bench; \
             CREATE TABLE bench.t (id bigint PRIMARY KEY, v int, s text, ts timestamptz); \
             DROP PUBLICATION IF EXISTS bench; CREATE PUBLICATION bench FOR TABLE bench.t;",
        )
        .await
        .unwrap();
    for slot in ["bench_recv", "bench_bridge"] {
        client
            .execute(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&slot],
            )
            .await
            .unwrap();
    }

    let start = Instant::now();
    for txn in 0..ROWS / ROWS_PER_TXN {
        let first = txn * ROWS_PER_TXN + 1;
        client
            .execute(
                "INSERT INTO bench.t SELECT g, (g % 1000)::int, 'row-' || g, now() FROM generate_series($1::bigint, $2::bigint) g",
                &[&first, &(first + ROWS_PER_TXN - 1)],
            )
            .await
            .unwrap();
    }
    let end_lsn: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    println!(
        "wrote {ROWS} rows in {} transactions in {:.1} s; end LSN {end_lsn}",
        ROWS / ROWS_PER_TXN,
        start.elapsed().as_secs_f64()
    );

    // Either may go first (BENCH_BRIDGE_FIRST=1): the second reads WAL the first warmed up.
    let (recv_secs, (bridge_secs, peak_mib)) =
        if std::env::var("BENCH_BRIDGE_FIRST").is_ok_and(|v| v == "1") {
            let bridge = bridge(url, &client, &end_lsn).await;
            (pg_recvlogical(url, &end_lsn), bridge)
        } else {
            let recv = pg_recvlogical(url, &end_lsn);
            (recv, bridge(url, &client, &end_lsn).await)
        };
    let (recv_rate, bridge_rate) = (ROWS as f64 / recv_secs, ROWS as f64 / bridge_secs);
    println!("pg_recvlogical     {recv_rate:>10.0} rows/s  ({recv_secs:.2} s)");
    println!(
        "cdc-bridge         {bridge_rate:>10.0} rows/s  ({bridge_secs:.2} s, into the null sink)"
    );
    println!(
        "ratio              {:>10.2} x pg_recvlogical",
        bridge_rate / recv_rate
    );
    println!("bridge peak RSS    {peak_mib:>10.1} MiB");
    println!(
        "REPORT|PostgreSQL source, 1M rows (rows/s)|{bridge_rate:.0}|pg_recvlogical {recv_rate:.0}|{:.2}x",
        bridge_rate / recv_rate
    );
    println!("REPORT|PostgreSQL source: bridge peak RSS|{peak_mib:.1} MiB||");

    for slot in ["bench_recv", "bench_bridge"] {
        let _ = client
            .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
            .await;
    }
    client
        .batch_execute("DROP PUBLICATION bench; DROP SCHEMA bench CASCADE")
        .await
        .unwrap();
}

fn pg_recvlogical(url: &str, end_lsn: &str) -> f64 {
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path().join("bin/pg_recvlogical")))
        .find(|p| p.exists())
        .expect("pg_recvlogical");
    let start = Instant::now();
    let status = Command::new(bin)
        .args([
            "-d",
            url,
            "--slot",
            "bench_recv",
            "--start",
            "--no-loop",
            "-F",
            "0",
            "-f",
            "/dev/null",
        ])
        .args([
            "-o",
            "proto_version=2",
            "-o",
            "publication_names=bench",
            "-o",
            "streaming=on",
            "--endpos",
            end_lsn,
        ])
        .status()
        .unwrap();
    assert!(status.success(), "pg_recvlogical failed");
    start.elapsed().as_secs_f64()
}

async fn bridge(url: &str, client: &tokio_postgres::Client, end_lsn: &str) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_dir = \"state\"\n[[pipeline]]\nname = \"bench\"\n[pipeline.source]\nkind = \"postgres\"\n\
             url = \"{url}\"\nslot = \"bench_bridge\"\npublication = \"bench\"\ntables = [\"bench.t\"]\nsnapshot = \"never\"\n\
             heartbeat_interval_ms = 0\n[pipeline.sink]\nkind = \"null\"\n"
        ),
    )
    .unwrap();
    let start = Instant::now();
    let mut child = support::spawn_bridge(&config, dir.path(), Stdio::null());
    loop {
        let done = client
            .query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'bench_bridge' AND confirmed_flush_lsn >= $1::text::pg_lsn",
                &[&end_lsn],
            )
            .await
            .unwrap()
            .is_some();
        if done {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "bridge did not reach {end_lsn}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let peak_mib = support::peak_rss_mib(child.id());
    support::terminate(&mut child);
    (secs, peak_mib)
}
