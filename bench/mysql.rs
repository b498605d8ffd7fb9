//! MySQL source benchmark (MariaDB): `bench/run.sh` (or `cargo bench --bench mysql` with the
//! `mariadb` service of `scripts/services.sh` running and its environment loaded).
//!
//! The bridge first runs once with `snapshot = "initial_only"` on an empty table: that stores
//! the current binlog position (the start) as its checkpoint. Then 1,000,000 rows are inserted
//! in 1,000-row transactions (one `INSERT ... SELECT` from a sequence each); the end is the
//! position after the last commit. That one binlog range is read four ways, one after the
//! other, each timed from its start to its end, connection set-up included:
//! - `mariadb-binlog --read-from-remote-server` to /dev/null (frames the events and prints
//!   them as base64 `BINLOG` statements: row values are not decoded), and again with `-v`
//!   (every row also printed as commented SQL);
//! - python-mysql-replication (`bench/mysql_pyreplication.py`, which decodes every row; in a
//!   venv under `$CDC_BRIDGE_CACHE`, installed once), checked to count every row change;
//! - the release build of cdc-bridge into the `null` sink, resuming from its checkpoint. It is
//!   done when its stored checkpoint is the end position: the bridge logs every checkpoint
//!   commit at debug level, and its stderr is watched for it; after SIGTERM the store is
//!   checked with `cdc-bridge checkpoints` too.
//!
//! Prints rows/s of each, the bridge's ratio to the others, and the bridge's peak RSS.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, Row};

#[path = "support.rs"]
mod support;

const ROWS: u64 = 1_000_000;
const ROWS_PER_TXN: u64 = 1_000;
const BRIDGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/cdc-bridge");
const PY_REPLICATION: &str = "mysql-replication==1.0.17";

/// A binlog position `file:pos`.
#[derive(Debug, Clone, PartialEq)]
struct Position {
    file: String,
    pos: u64,
}

impl Position {
    /// `file:pos`, also the start of a checkpoint token (`file:pos;more`).
    fn parse(token: &str) -> Option<Position> {
        let (file, pos) = token.split(';').next()?.rsplit_once(':')?;
        Some(Position {
            file: file.to_owned(),
            pos: pos.parse().ok()?,
        })
    }

    /// (file sequence number, offset): later positions are greater.
    fn rank(&self) -> (u64, u64) {
        (file_number(&self.file), self.pos)
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

fn file_number(file: &str) -> u64 {
    file.rsplit('.')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let url =
        std::env::var("CDC_BRIDGE_MYSQL_URL").expect("CDC_BRIDGE_MYSQL_URL: run bench/run.sh");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(&url));
}

async fn run(url: &str) {
    let python = support::python_venv("pymysqlrepl", PY_REPLICATION, "pymysqlreplication");
    let mut conn = Conn::new(Opts::from_url(url).unwrap()).await.unwrap();
    conn.query_drop("DROP TABLE IF EXISTS bench").await.unwrap();
    conn.query_drop(
        "CREATE TABLE bench (id BIGINT PRIMARY KEY, v INT, s VARCHAR(64), ts DATETIME(6))",
    )
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let bridge = Bridge::new(url, dir.path());
    bridge.store_start();
    let start = master_status(&mut conn).await;
    let stored = bridge.checkpoint(&bridge.config).expect("a stored start");
    assert_eq!(stored, start, "the bridge's start is not the binlog's");

    let began = Instant::now();
    for txn in 0..ROWS / ROWS_PER_TXN {
        let first = txn * ROWS_PER_TXN + 1;
        let last = first + ROWS_PER_TXN - 1;
        conn.query_drop(format!(
            "INSERT INTO bench SELECT seq, seq % 1000, CONCAT('row-', seq), NOW(6) FROM seq_{first}_to_{last}"
        ))
        .await
        .unwrap();
        assert_eq!(conn.affected_rows(), ROWS_PER_TXN);
    }
    let end = last_commit(&mut conn).await;
    println!(
        "wrote {ROWS} rows in {} transactions in {:.1} s; binlog {start} .. {end}",
        ROWS / ROWS_PER_TXN,
        began.elapsed().as_secs_f64()
    );

    let files: Vec<String> = conn
        .query::<(String, u64), _>("SHOW BINARY LOGS")
        .await
        .unwrap()
        .into_iter()
        .map(|(name, _)| name)
        .filter(|f| (file_number(&start.file)..=file_number(&end.file)).contains(&file_number(f)))
        .collect();
    let binlog_secs = mariadb_binlog(url, &files, &start, &end, false);
    let binlog_rows_secs = mariadb_binlog(url, &files, &start, &end, true);
    let python_secs = python_replication(&python, &start, &end);
    let (bridge_secs, peak_mib) = bridge.stream_to(&end);

    let rate = |secs: f64| ROWS as f64 / secs;
    let bridge_rate = rate(bridge_secs);
    println!(
        "mariadb-binlog     {:>10.0} rows/s  ({binlog_secs:.2} s, to /dev/null, rows not decoded)",
        rate(binlog_secs)
    );
    println!(
        "mariadb-binlog -v  {:>10.0} rows/s  ({binlog_rows_secs:.2} s, to /dev/null, rows decoded)",
        rate(binlog_rows_secs)
    );
    println!(
        "mysql-replication  {:>10.0} rows/s  ({python_secs:.2} s, python, every row decoded)",
        rate(python_secs)
    );
    println!(
        "cdc-bridge         {bridge_rate:>10.0} rows/s  ({bridge_secs:.2} s, into the null sink)"
    );
    println!(
        "ratio              {:>10.2} x mariadb-binlog",
        bridge_rate / rate(binlog_secs)
    );
    println!(
        "ratio              {:>10.2} x mariadb-binlog -v",
        bridge_rate / rate(binlog_rows_secs)
    );
    println!(
        "ratio              {:>10.2} x mysql-replication",
        bridge_rate / rate(python_secs)
    );
    println!("bridge peak RSS    {peak_mib:>10.1} MiB");
    for (reference, secs) in [
        ("mariadb-binlog --read-from-remote-server", binlog_secs),
        ("mariadb-binlog -v", binlog_rows_secs),
        ("python-mysql-replication", python_secs),
    ] {
        println!(
            "REPORT|MariaDB source, 1M rows (rows/s)|{bridge_rate:.0}|{reference} {:.0}|{:.2}x",
            rate(secs),
            bridge_rate / rate(secs)
        );
    }
    println!("REPORT|MariaDB source: bridge peak RSS|{peak_mib:.1} MiB||");

    conn.query_drop("DROP TABLE bench").await.unwrap();
    conn.disconnect().await.unwrap();
}

async fn master_status(conn: &mut Conn) -> Position {
    let row: Row = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .unwrap()
        .expect("the binlog is on");
    Position {
        file: row.get(0).unwrap(),
        pos: row.get(1).unwrap(),
    }
}

/// The end of the last commit (XID event). SHOW MASTER STATUS is not it when the server
/// rotated to a new file right after that commit.
async fn last_commit(conn: &mut Conn) -> Position {
    let current = master_status(conn).await;
    let mut files: Vec<(String, u64)> = conn.query("SHOW BINARY LOGS").await.unwrap();
    files.retain(|(f, _)| file_number(f) <= file_number(&current.file));
    for (file, _) in files.iter().rev() {
        let events: Vec<Row> = conn
            .query(format!("SHOW BINLOG EVENTS IN '{file}'"))
            .await
            .unwrap();
        let xid = events
            .iter()
            .rev()
            .find(|e| e.get::<String, _>("Event_type").as_deref() == Some("Xid"));
        if let Some(xid) = xid {
            return Position {
                file: file.clone(),
                pos: xid.get("End_log_pos").unwrap(),
            };
        }
    }
    panic!("no commit in the binlog");
}

/// Seconds `mariadb-binlog` takes over the range; with `decode_rows` (`-v`) it also prints
/// every row as commented SQL, as the other readers decode them.
fn mariadb_binlog(
    url: &str,
    files: &[String],
    start: &Position,
    end: &Position,
    decode_rows: bool,
) -> f64 {
    let opts = Opts::from_url(url).unwrap();
    let bin = ["mariadb-binlog", "mysqlbinlog"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok())
        .expect("mariadb-binlog (Debian package mariadb-client)");
    let began = Instant::now();
    // --stop-position applies to the last file named, --start-position to the first.
    let status = Command::new(bin)
        .arg("--read-from-remote-server")
        .arg(format!("--host={}", opts.ip_or_hostname()))
        .arg(format!("--port={}", opts.tcp_port()))
        .arg(format!("--user={}", opts.user().unwrap_or_default()))
        .arg(format!("--password={}", opts.pass().unwrap_or_default()))
        .arg(format!("--start-position={}", start.pos))
        .arg(format!("--stop-position={}", end.pos))
        .args(decode_rows.then_some("-v"))
        .args(files)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{bin} failed: {status}");
    began.elapsed().as_secs_f64()
}

fn python_replication(python: &Path, start: &Position, end: &Position) -> f64 {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/mysql_pyreplication.py");
    let began = Instant::now();
    let out = Command::new(python)
        .arg(script)
        .args([
            &start.file,
            &start.pos.to_string(),
            &end.file,
            &end.pos.to_string(),
        ])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let secs = began.elapsed().as_secs_f64();
    assert!(out.status.success(), "{script} failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rows: u64 = stdout.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(
        rows, ROWS,
        "python-mysql-replication counted {rows} row changes"
    );
    secs
}

/// The bridge's configuration, state and checkpoints in one directory.
struct Bridge {
    url: String,
    dir: PathBuf,
    config: PathBuf,
}

impl Bridge {
    fn new(url: &str, dir: &Path) -> Bridge {
        Bridge {
            url: url.to_owned(),
            dir: dir.to_owned(),
            config: dir.join("bench.toml"),
        }
    }

    fn write_config(&self, path: &Path, state_dir: &Path, snapshot: &str) {
        let url = &self.url;
        std::fs::write(
            path,
            format!(
                "[daemon]\nstate_dir = \"{}\"\n[[pipeline]]\nname = \"bench\"\n[pipeline.source]\nkind = \"mysql\"\n\
                 url = \"{url}\"\nserver_id = 5491\ntables = [\"app.bench\"]\nsnapshot = \"{snapshot}\"\n\
                 [pipeline.sink]\nkind = \"null\"\n",
                state_dir.display()
            ),
        )
        .unwrap();
    }

    /// Stores the current position as the checkpoint: a snapshot of the empty table.
    fn store_start(&self) {
        self.write_config(&self.config, &self.dir.join("state"), "initial_only");
        let status = self
            .command(&["run", "--config"], &self.config)
            .status()
            .expect("run bench/run.sh, which builds the release binary first");
        assert!(status.success(), "the initial_only run failed: {status}");
    }

    fn command(&self, args: &[&str], config: &Path) -> Command {
        let mut command = Command::new(BRIDGE);
        command
            .args(args)
            .arg(config)
            .current_dir(&self.dir)
            .env("CDC_BRIDGE_LOG", "warn")
            .stdout(Stdio::null());
        command
    }

    /// The pipeline's stored position, as `cdc-bridge checkpoints` prints it (None when the
    /// command fails or nothing is stored).
    fn checkpoint(&self, config: &Path) -> Option<Position> {
        let out = self
            .command(&["checkpoints", "--config"], config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().find(|l| l.starts_with("bench "))?;
        Position::parse(line.split_whitespace().last()?)
    }

    /// Streams from the stored checkpoint until `end` is stored; returns seconds and peak RSS
    /// in MiB. The bridge logs each checkpoint commit at debug level: its stderr is watched
    /// for the first one at or past `end` (no polling process competing for the cores).
    fn stream_to(&self, end: &Position) -> (f64, f64) {
        self.write_config(&self.config, &self.dir.join("state"), "never");
        let began = Instant::now();
        let mut child = self
            .command(&["run", "--config"], &self.config)
            .env(
                "CDC_BRIDGE_LOG",
                "warn,cdc_bridge::pipeline::checkpointer=debug",
            )
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut reached = false;
        for line in std::io::BufRead::lines(stderr) {
            let line = line.unwrap();
            let stored = line
                .split_once("positions=")
                .and_then(|(_, rest)| Position::parse(rest.split_whitespace().next()?));
            match stored {
                Some(stored) if stored.rank() >= end.rank() => {
                    reached = true;
                    break;
                }
                Some(_) => {}
                None => eprintln!("{line}"),
            }
        }
        assert!(
            reached,
            "the bridge stopped before {end}: {:?}",
            child.wait()
        );
        let secs = began.elapsed().as_secs_f64();
        let peak_mib = support::peak_rss_mib(child.id());
        let exit = support::terminate(&mut child);
        assert!(exit.success(), "the bridge exited with {exit}");
        assert_eq!(self.checkpoint(&self.config).as_ref(), Some(end));
        (secs, peak_mib)
    }
}
