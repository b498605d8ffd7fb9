//! Snapshot benchmark: `bench/run.sh snapshot` (or `cargo bench --bench snapshot` with the
//! services of `scripts/services.sh` running and their environment loaded).
//!
//! A 5,000,000-row table (`BENCH_SNAPSHOT_ROWS` to change it) is copied three ways on the same
//! server, in the same run:
//! - `COPY (SELECT ...) TO STDOUT` drained by a plain client: the rate at which the server can
//!   hand the rows out at all (the physical limit of a copy over one connection);
//! - the release bridge with `snapshot = "initial_only"` into the `null` sink, with the
//!   default chunks, at each `snapshot_parallelism` given by `BENCH_SNAPSHOT_PARALLELISM`
//!   (default `1,4`).
//!
//! - the release bridge streaming (`snapshot = "never"`) and copying the table on request
//!   (`cdc-bridge snapshot`), chunk by chunk between the stream's watermarks.
//!
//! Every reader connects the same way, over plain TCP on loopback. The bridge's default
//! (`sslmode = prefer`) would use TLS, and the reference reads without it.
//!
//! Prints rows/s of each, the bridge's ratio to COPY and its peak RSS.

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

#[path = "support.rs"]
mod support;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let url = std::env::var("CDC_BRIDGE_PG_URL").expect("CDC_BRIDGE_PG_URL: run bench/run.sh");
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{separator}sslmode=disable");
    let (rows, parallelism) = support::snapshot_settings();
    let rows = rows as i64;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(&url, rows, &parallelism));
}

async fn run(url: &str, rows: i64, parallelism: &[u32]) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let start = Instant::now();
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS bench_snap CASCADE; CREATE SCHEMA bench_snap; \
             CREATE TABLE bench_snap.t (id bigint PRIMARY KEY, v int, s text, ts timestamptz); \
             INSERT INTO bench_snap.t SELECT g, (g % 1000)::int, 'row-' || g, now() FROM generate_series(1, {rows}) g; \
             DROP PUBLICATION IF EXISTS bench_snap; CREATE PUBLICATION bench_snap FOR TABLE bench_snap.t;"
        ))
        .await
        .unwrap();
    client
        .batch_execute("VACUUM ANALYZE bench_snap.t")
        .await
        .unwrap();
    println!(
        "wrote {rows} rows in {:.1} s",
        start.elapsed().as_secs_f64()
    );

    // Warm the cache the same way for every reader: COPY first, once unmeasured.
    copy_out(&client).await;
    let (copy_secs, copied) = copy_out(&client).await;
    assert_eq!(copied, rows as u64, "COPY gave every row");
    let copy_rate = rows as f64 / copy_secs;
    println!("COPY TO STDOUT      {copy_rate:>10.0} rows/s  ({copy_secs:.2} s)");
    for &workers in parallelism {
        let (secs, peak_mib) = bridge(url, workers);
        let rate = rows as f64 / secs;
        println!(
            "cdc-bridge p={workers}      {rate:>10.0} rows/s  ({secs:.2} s, into the null sink; peak RSS {peak_mib:.1} MiB)"
        );
        println!(
            "REPORT|PostgreSQL snapshot, {}M rows, parallelism {workers} (rows/s)|{rate:.0}|COPY TO STDOUT {copy_rate:.0}|{:.2}x",
            rows / 1_000_000,
            rate / copy_rate
        );
        println!("REPORT|PostgreSQL snapshot, parallelism {workers}: bridge peak RSS|{peak_mib:.1} MiB||");
    }
    let (secs, peak_mib) = while_streaming(url, &client).await;
    let rate = rows as f64 / secs;
    println!(
        "cdc-bridge, while streaming {rate:>7.0} rows/s  ({secs:.2} s, into the null sink; peak RSS {peak_mib:.1} MiB)"
    );
    println!(
        "REPORT|PostgreSQL snapshot while streaming, {}M rows (rows/s)|{rate:.0}|COPY TO STDOUT {copy_rate:.0}|{:.2}x",
        rows / 1_000_000,
        rate / copy_rate
    );
    println!("REPORT|PostgreSQL snapshot while streaming: bridge peak RSS|{peak_mib:.1} MiB||");
    client
        .batch_execute("DROP PUBLICATION bench_snap; DROP SCHEMA bench_snap CASCADE")
        .await
        .unwrap();
}

/// Drains `COPY (SELECT * ...) TO STDOUT`; returns the seconds and the rows (lines).
async fn copy_out(client: &tokio_postgres::Client) -> (f64, u64) {
    let start = Instant::now();
    let stream = client
        .copy_out("COPY (SELECT * FROM bench_snap.t) TO STDOUT")
        .await
        .unwrap();
    let mut stream = std::pin::pin!(stream);
    let mut lines = 0u64;
    while let Some(chunk) = stream.next().await {
        lines += chunk.unwrap().iter().filter(|&&b| b == b'\n').count() as u64;
    }
    (start.elapsed().as_secs_f64(), lines)
}

/// Runs the bridge's copy (`initial_only`) to its end; returns the seconds and peak RSS.
fn bridge(url: &str, workers: u32) -> (f64, f64) {
    let parallelism = if workers == 1 {
        String::new()
    } else {
        format!("snapshot_parallelism = {workers}\n")
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_dir = \"state\"\n[[pipeline]]\nname = \"bench_snap\"\n[pipeline.source]\nkind = \"postgres\"\n\
             url = \"{url}\"\nslot = \"bench_snap\"\npublication = \"bench_snap\"\ntables = [\"bench_snap.t\"]\n\
             snapshot = \"initial_only\"\n{parallelism}heartbeat_interval_ms = 0\n\
             [pipeline.sink]\nkind = \"null\"\n"
        ),
    )
    .unwrap();
    support::run_to_end(&config, dir.path())
}

/// Starts the bridge streaming (no first copy), requests the table's copy, and times it from
/// the request to the log line that says it is done; returns the seconds and peak RSS.
async fn while_streaming(url: &str, client: &tokio_postgres::Client) -> (f64, f64) {
    let _ = client
        .execute("SELECT pg_drop_replication_slot('bench_snap')", &[])
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_dir = \"state\"\n[[pipeline]]\nname = \"bench_snap\"\n[pipeline.source]\nkind = \"postgres\"\n\
             url = \"{url}\"\nslot = \"bench_snap\"\npublication = \"bench_snap\"\ntables = [\"bench_snap.t\"]\n\
             snapshot = \"never\"\n[pipeline.sink]\nkind = \"null\"\n"
        ),
    )
    .unwrap();
    let log_path = dir.path().join("bridge.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = std::process::Command::new(support::BRIDGE)
        .args(["run", "--config", config.to_str().unwrap()])
        .current_dir(dir.path())
        .env("CDC_BRIDGE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let logged = |what: &str| {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains(what)
    };
    let started = Instant::now();
    while !logged("streaming changes") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the bridge did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let start = Instant::now();
    let request = std::process::Command::new(support::BRIDGE)
        .args([
            "snapshot",
            "--config",
            config.to_str().unwrap(),
            "--pipeline",
            "bench_snap",
            "--table",
            "bench_snap.t",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        request.status.success(),
        "{}",
        String::from_utf8_lossy(&request.stderr)
    );
    while !logged("table copied while streaming") {
        assert!(
            start.elapsed() < Duration::from_secs(1200),
            "the copy did not finish"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = start.elapsed().as_secs_f64();
    let peak_mib = support::peak_rss_mib(child.id());
    support::terminate(&mut child);
    let _ = client
        .execute("SELECT pg_drop_replication_slot('bench_snap')", &[])
        .await;
    (secs, peak_mib)
}
