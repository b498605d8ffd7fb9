//! Helpers for tests that run the `cdc-bridge` binary on generated configurations.
#![allow(dead_code)]

use std::io::{BufRead, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cdc_bridge::checkpoint::CheckpointStore;

pub const BIN: &str = env!("CARGO_BIN_EXE_cdc-bridge");

/// A scratch directory holding a config, its state_dir and its output.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        Workspace {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `body` (pipelines) under a `[daemon]` section pointing at this workspace.
    pub fn config(&self, body: &str) -> PathBuf {
        let text = format!("[daemon]\nstate_dir = {:?}\n\n{body}", self.path("state"));
        let path = self.path("cdc.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("CDC_BRIDGE_LOG", "info");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run cdc-bridge")
    }

    /// Starts the daemon in the background; its log is appended to `bridge.log`.
    pub fn spawn(&self, args: &[&str]) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("bridge.log"))
            .expect("log file");
        self.command(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn cdc-bridge")
    }

    /// Starts the daemon with its standard output read by a [`StdoutReader`] (for the
    /// `stdout` sink); its log is appended to `bridge.log`.
    pub fn spawn_read_stdout(&self, args: &[&str]) -> (Child, StdoutReader) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("bridge.log"))
            .expect("log file");
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn cdc-bridge");
        let reader = StdoutReader::start(child.stdout.take().expect("piped stdout"));
        (child, reader)
    }

    /// The last lines of the daemon's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.path("bridge.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Runs the bridge `kills` times, each time SIGKILLing it after `min_ms` plus up to
    /// `spread_ms` (it must still be running then). After each kill: the records in
    /// `out.jsonl` so far and `stored()` (the checkpoint), for [`check_crash_runs`].
    pub async fn kill_repeatedly<T>(
        &self,
        config: &str,
        kills: usize,
        (min_ms, spread_ms): (u64, u64),
        mut stored: impl FnMut() -> T,
    ) -> Vec<(usize, T)> {
        let mut rng = Rng::seeded();
        let mut after_kills = Vec::with_capacity(kills);
        for _ in 0..kills {
            let mut child = self.spawn(&["run", "--config", config]);
            tokio::time::sleep(std::time::Duration::from_millis(
                min_ms + rng.below(spread_ms),
            ))
            .await;
            assert!(
                child.try_wait().unwrap().is_none(),
                "bridge exited early:\n{}",
                self.log_tail()
            );
            child.kill().unwrap();
            child.wait().unwrap();
            after_kills.push((read_records(&self.path("out.jsonl")).len(), stored()));
        }
        after_kills
    }

    /// Runs the bridge `kills` times, each time SIGKILLing it as soon as `out.jsonl` holds at
    /// least `records` more lines than before that run: the kill lands mid-backlog however
    /// fast the machine is. After each kill: the records so far and `stored()`.
    pub async fn kill_after_new_records<T>(
        &self,
        config: &str,
        kills: usize,
        records: usize,
        mut stored: impl FnMut() -> T,
    ) -> Vec<(usize, T)> {
        let out = self.path("out.jsonl");
        let lines =
            || std::fs::read(&out).map_or(0, |bytes| bytes.iter().filter(|&&b| b == b'\n').count());
        let mut after_kills = Vec::with_capacity(kills);
        for _ in 0..kills {
            let target = lines() + records;
            let mut child = self.spawn(&["run", "--config", config]);
            let deadline = Instant::now() + Duration::from_secs(60);
            while lines() < target {
                assert!(
                    child.try_wait().unwrap().is_none(),
                    "bridge exited early:\n{}",
                    self.log_tail()
                );
                assert!(
                    Instant::now() < deadline,
                    "no {records} new records within 60 s:\n{}",
                    self.log_tail()
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            child.kill().unwrap();
            child.wait().unwrap();
            after_kills.push((lines(), stored()));
        }
        after_kills
    }

    /// The generator position stored for `pipeline` (0 when none).
    pub fn stored_seq(&self, pipeline: &str) -> u64 {
        let store = CheckpointStore::open(&self.path("state")).expect("open store");
        store
            .load(pipeline)
            .expect("load")
            .get("")
            .map_or(0, |p| p.token.parse().expect("a seq"))
    }
}

/// Reads a child's standard output line by line on a thread that can stop reading. With the
/// `stdout` sink, a paused reader is a stalled sink: once the pipe is full, the sink's write
/// blocks and the pipeline's buffer fills up behind it, as with an unresponsive service.
pub struct StdoutReader {
    lines: Arc<Mutex<Vec<String>>>,
    paused: Arc<AtomicBool>,
}

impl StdoutReader {
    fn start(stdout: std::process::ChildStdout) -> Self {
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let paused = Arc::new(AtomicBool::new(false));
        let (lines2, paused2) = (lines.clone(), paused.clone());
        std::thread::spawn(move || {
            let mut stdout = std::io::BufReader::new(stdout);
            loop {
                while paused2.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let mut line = String::new();
                match stdout.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => lines2.lock().unwrap().push(line),
                }
            }
        });
        StdoutReader { lines, paused }
    }

    /// Stops reading: the pipe fills up and the writer blocks.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }

    /// How many lines were read so far.
    pub fn len(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// The complete lines read so far, as JSON.
    pub fn records(&self) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.ends_with('\n'))
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"))
            })
            .collect()
    }
}

/// The complete records of a JSON-lines output file, in file order. A last line without its
/// newline is a write in progress (or torn by a kill, cut off by the next start): not a record.
pub fn read_records(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
    complete
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}")))
        .collect()
}

/// The `seq` of every record of a JSON-lines output file, in file order.
pub fn output_seqs(path: &Path) -> Vec<u64> {
    read_records(path)
        .iter()
        .map(|event| {
            event["source"]["position"]
                .as_str()
                .expect("position")
                .parse()
                .expect("numeric position")
        })
        .collect()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Waits until `cond` holds, failing the test after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The peak resident memory (VmHWM) of a running process, in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .expect("VmHWM")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("a number of kB");
    kib / 1024.0
}

/// Sends SIGTERM to a child process.
pub fn terminate(child: &Child) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// A small deterministic pseudo-random sequence (xorshift), seeded per test run.
pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("rng seed {seed}");
        Rng(seed)
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

pub mod avro;
pub mod copies;
pub mod dynamodb;
pub mod formats;
pub mod kafka;
pub mod kinesis;
pub mod mysql;
pub mod pg;
pub mod streams;
pub mod types;

/// Checks the output of a crash loop against what was written upstream, in order.
///
/// `events` is the output (each change with its source position), `bounds` the number of
/// output records when each kill happened, `checkpoints` the position stored at each kill.
/// Each run between kills must be a contiguous slice of `expected` that starts no later than
/// where the earlier runs ended (nothing skipped) and lies entirely after the checkpoint stored
/// before it (only changes after the checkpoint repeat); all of `expected` must arrive.
/// Returns how many output records were repeats.
pub fn check_crash_runs<C, P>(
    expected: &[C],
    events: &[(C, P)],
    bounds: &[usize],
    checkpoints: &[Option<P>],
) -> usize
where
    C: PartialEq + Clone + std::fmt::Debug,
    P: PartialOrd + std::fmt::Debug,
{
    let mut ends = bounds.to_vec();
    ends.push(events.len());
    let (mut start, mut covered_until) = (0usize, 0usize);
    for (run, end) in ends.iter().enumerate() {
        let segment = &events[start..*end];
        start = *end;
        if segment.is_empty() {
            continue;
        }
        let from = expected
            .iter()
            .position(|c| *c == segment[0].0)
            .unwrap_or_else(|| panic!("run {run}: {:?} was never written", segment[0].0));
        let got: Vec<C> = segment.iter().map(|(c, _)| c.clone()).collect();
        assert_eq!(
            got,
            expected[from..(from + segment.len()).min(expected.len())],
            "run {run} is not the written changes in order"
        );
        assert!(
            from <= covered_until,
            "run {run} skipped written changes {covered_until}..{from}"
        );
        if let Some(Some(checkpoint)) = run.checked_sub(1).map(|k| &checkpoints[k]) {
            assert!(
                segment.iter().all(|(_, position)| position > checkpoint),
                "run {run} repeated changes at or before its checkpoint {checkpoint:?}"
            );
        }
        covered_until = covered_until.max(from + segment.len());
    }
    assert_eq!(
        covered_until,
        expected.len(),
        "not every written change arrived"
    );
    events.len() - expected.len()
}

/// A port nothing listens on now (for a daemon's `http_listen`).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` over HTTP/1.0: the status code and the body; `None` when nothing listens.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_within(port, path, Duration::from_secs(10))
}

/// [`http_get`], `None` also when no answer came within `limit` (a paused process accepts
/// connections but never answers).
pub fn http_get_within(port: u16, path: &str, limit: Duration) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(limit)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}
