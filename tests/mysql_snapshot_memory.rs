//! A MySQL/MariaDB snapshot of wide rows stays within the pipeline's byte budget: rows are
//! streamed from the server one at a time, so the bridge's peak RSS does not follow the
//! table's size.

mod support;

use std::time::Duration;

use support::mysql::{connect, pipeline, sql};
use support::{peak_rss_mib, terminate, wait_until, Workspace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_wide_rows_stays_within_the_byte_budget() {
    const ROWS: usize = 1_000;
    const ROW_BYTES: usize = 200_000;
    let table = format!("wide_snapshot_{}", std::process::id());
    let mut db = connect().await;
    sql(
        &mut db,
        &format!(
            "DROP TABLE IF EXISTS app.{table}; CREATE TABLE app.{table} (id INT PRIMARY KEY, pad MEDIUMTEXT); \
             INSERT INTO app.{table} SELECT seq, REPEAT(MD5(seq), {}) FROM seq_1_to_{ROWS}",
            ROW_BYTES / 32
        ),
    )
    .await;
    let ws = Workspace::new();
    let config = pipeline(&ws, "wide", &table, "snapshot = \"initial\"");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("kind = \"file\"\npath = \"out.jsonl\"", "kind = \"null\"")
        + "[pipeline.buffer]\nmax_bytes = 2097152\n";
    std::fs::write(&config, text).unwrap();
    let mut child = ws.spawn(&["run", "--config", &config]);
    wait_until(Duration::from_secs(300), "the end of the snapshot", || {
        std::fs::read_to_string(ws.path("bridge.log"))
            .unwrap_or_default()
            .contains("snapshot done")
    });
    let peak = peak_rss_mib(child.id());
    let log = std::fs::read_to_string(ws.path("bridge.log")).unwrap();
    terminate(&child);
    assert!(child.wait().unwrap().success(), "{}", ws.log_tail());
    sql(&mut db, &format!("DROP TABLE app.{table}")).await;
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
