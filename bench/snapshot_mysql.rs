//! MariaDB snapshot benchmark: `bench/run.sh snapshot_mysql` (or `cargo bench --bench
//! snapshot_mysql` with the `mariadb` service of `scripts/services.sh` running and its
//! environment loaded).
//!
//! A 5,000,000-row table (`BENCH_SNAPSHOT_ROWS` to change it) is read two ways on the same
//! server, in the same run:
//! - `mariadb --quick -e "SELECT * FROM ..." > /dev/null`: the server handing the rows to its
//!   own client, one connection (the physical limit of a copy over one connection);
//! - the release bridge with `snapshot = "initial_only"` into the `null` sink, with the default
//!   chunks, at each `snapshot_parallelism` given by `BENCH_SNAPSHOT_PARALLELISM` (default
//!   `1,4`). With no writes, the workers' snapshots meet at one position and the table is
//!   split into one key range per worker.
//!
//! Prints rows/s of each, the bridge's ratio to the client and its peak RSS.

use std::process::{Command, Stdio};
use std::time::Instant;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};

#[path = "support.rs"]
mod support;

const TABLE: &str = "bench_snap";

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let url =
        std::env::var("CDC_BRIDGE_MYSQL_URL").expect("CDC_BRIDGE_MYSQL_URL: run bench/run.sh");
    let (rows, parallelism) = support::snapshot_settings();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(&url, rows, &parallelism));
}

async fn run(url: &str, rows: u64, parallelism: &[u32]) {
    let mut conn = Conn::new(Opts::from_url(url).unwrap()).await.unwrap();
    let start = Instant::now();
    conn.query_drop(format!(
        "DROP TABLE IF EXISTS {TABLE}; \
         CREATE TABLE {TABLE} (id BIGINT PRIMARY KEY, v INT, s VARCHAR(64), ts DATETIME(6)); \
         INSERT INTO {TABLE} SELECT seq, seq % 1000, CONCAT('row-', seq), NOW(6) FROM seq_1_to_{rows}; \
         ANALYZE TABLE {TABLE}"
    ))
    .await
    .unwrap();
    println!(
        "wrote {rows} rows in {:.1} s",
        start.elapsed().as_secs_f64()
    );

    // Warm the buffer pool the same way for every reader: the client first, once unmeasured.
    client_select(url);
    let client_secs = client_select(url);
    let client_rate = rows as f64 / client_secs;
    println!("mariadb --quick     {client_rate:>10.0} rows/s  ({client_secs:.2} s, to /dev/null)");
    for &workers in parallelism {
        let (secs, peak_mib) = bridge(url, workers);
        let rate = rows as f64 / secs;
        println!(
            "cdc-bridge p={workers}      {rate:>10.0} rows/s  ({secs:.2} s, into the null sink; peak RSS {peak_mib:.1} MiB)"
        );
        println!(
            "REPORT|MariaDB snapshot, {}M rows, parallelism {workers} (rows/s)|{rate:.0}|mariadb -e SELECT {client_rate:.0}|{:.2}x",
            rows / 1_000_000,
            rate / client_rate
        );
        println!(
            "REPORT|MariaDB snapshot, parallelism {workers}: bridge peak RSS|{peak_mib:.1} MiB||"
        );
    }
    conn.query_drop(format!("DROP TABLE {TABLE}"))
        .await
        .unwrap();
}

/// Seconds the server's own client takes to read the whole table into /dev/null, row by row
/// (`--quick`: not held in the client's memory).
fn client_select(url: &str) -> f64 {
    let opts = Opts::from_url(url).unwrap();
    let bin = ["mariadb", "mysql"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok())
        .expect("mariadb (Debian package mariadb-client)");
    let began = Instant::now();
    let status = Command::new(bin)
        .arg("--quick")
        .arg(format!("--host={}", opts.ip_or_hostname()))
        .arg(format!("--port={}", opts.tcp_port()))
        .arg(format!("--user={}", opts.user().unwrap_or_default()))
        .arg(format!("--password={}", opts.pass().unwrap_or_default()))
        .arg(opts.db_name().unwrap_or_default())
        .arg("-e")
        .arg(format!("SELECT * FROM {TABLE}"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{bin} failed: {status}");
    began.elapsed().as_secs_f64()
}

/// Runs the bridge's copy (`initial_only`) to its end; returns the seconds and peak RSS.
fn bridge(url: &str, workers: u32) -> (f64, f64) {
    let database = Opts::from_url(url)
        .unwrap()
        .db_name()
        .unwrap_or_default()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_dir = \"state\"\n[[pipeline]]\nname = \"bench_snap\"\n[pipeline.source]\nkind = \"mysql\"\n\
             url = \"{url}\"\nserver_id = 5391\ntables = [\"{database}.{TABLE}\"]\n\
             snapshot = \"initial_only\"\nsnapshot_parallelism = {workers}\n\
             [pipeline.sink]\nkind = \"null\"\n"
        ),
    )
    .unwrap();
    support::run_to_end(&config, dir.path())
}
