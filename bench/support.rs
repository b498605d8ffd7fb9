//! What the benchmarks that run the bridge's release binary share.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The peak resident memory of a running process (VmHWM), in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
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

/// The release build of the bridge.
pub const BRIDGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/cdc-bridge");

/// Starts the release bridge on `config` in `dir` (its state there), logging warnings only.
pub fn spawn_bridge(config: &Path, dir: &Path, stdout: Stdio) -> Child {
    Command::new(BRIDGE)
        .args(["run", "--config", config.to_str().unwrap()])
        .current_dir(dir)
        .env("CDC_BRIDGE_LOG", "warn")
        .stdout(stdout)
        .spawn()
        .expect("run bench/run.sh, which builds the release binary first")
}

/// Runs the release bridge on `config` in `dir` until it exits by itself (a copy with
/// `snapshot = "initial_only"`), which must be a success; returns the seconds and its peak
/// RSS in MiB.
pub fn run_to_end(config: &Path, dir: &Path) -> (f64, f64) {
    let start = std::time::Instant::now();
    let mut child = spawn_bridge(config, dir, Stdio::null());
    let mut peak_mib = 0.0f64;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "the bridge failed");
            break;
        }
        // VmHWM only grows: the last reading before the exit is the peak (within 20 ms).
        if let Ok(mib) = std::panic::catch_unwind(|| peak_rss_mib(child.id())) {
            peak_mib = peak_mib.max(mib);
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(1200),
            "the bridge did not finish"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (start.elapsed().as_secs_f64(), peak_mib)
}

/// Stops the bridge as an operator would (SIGTERM) and waits for it.
pub fn terminate(child: &mut Child) -> std::process::ExitStatus {
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    child.wait().unwrap()
}

/// The python of a venv named `name` under the cache directory with `requirement` installed
/// (made once; `module` is what must import).
pub fn python_venv(name: &str, requirement: &str, module: &str) -> PathBuf {
    let cache = std::env::var_os("CDC_BRIDGE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap()).join(".cache/cdc-bridge"));
    let venv = cache.join(name);
    let python = venv.join("bin/python");
    let installed = |python: &Path| {
        Command::new(python)
            .args(["-c", &format!("import {module}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !installed(&python) {
        println!("installing {requirement} into {} (once)", venv.display());
        let made = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .unwrap();
        assert!(made.success(), "python3 -m venv failed");
        let pip = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", requirement])
            .status()
            .unwrap();
        assert!(
            pip.success() && installed(&python),
            "pip install {requirement} failed"
        );
    }
    python
}

/// CPU time (user + system, every thread) this process has used so far, in seconds, from
/// /proc/self/stat (clock ticks of 1/100 s, Linux's USER_HZ).
pub fn own_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Extra settings for the Kafka sink of the benchmarks, as TOML lines
/// (`CDC_BRIDGE_BENCH_KAFKA_SINK='properties = { "linger.ms" = "20" }'`), to compare a
/// setting against the defaults; empty by default.
pub fn kafka_sink_extra() -> String {
    std::env::var("CDC_BRIDGE_BENCH_KAFKA_SINK")
        .map_or_else(|_| String::new(), |extra| extra + "\n")
}

/// A child process that is killed when this is dropped, also when the benchmark panics
/// midway, so a failed run leaves no bridge behind.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The snapshot benchmarks' settings: the table's rows (`BENCH_SNAPSHOT_ROWS`, default
/// 5,000,000) and the parallelisms to run (`BENCH_SNAPSHOT_PARALLELISM`, default `1,4`).
pub fn snapshot_settings() -> (u64, Vec<u32>) {
    let rows = std::env::var("BENCH_SNAPSHOT_ROWS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5_000_000);
    let parallelism = std::env::var("BENCH_SNAPSHOT_PARALLELISM")
        .unwrap_or_else(|_| "1,4".into())
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    (rows, parallelism)
}

/// Puts `entries` into `stream`, one PutRecords call at a time, again for the records a call
/// rejects (throttled) until every one is in.
pub async fn put_every_record(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    mut entries: Vec<aws_sdk_kinesis::types::PutRecordsRequestEntry>,
) {
    while !entries.is_empty() {
        let out = client
            .put_records()
            .stream_name(stream)
            .set_records(Some(entries.clone()))
            .send()
            .await
            .expect("PutRecords");
        entries = entries
            .into_iter()
            .zip(out.records())
            .filter(|(_, result)| result.error_code().is_some())
            .map(|(entry, _)| entry)
            .collect();
    }
}
