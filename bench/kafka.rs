//! Kafka sink benchmark: `bench/run.sh` (or `cargo bench --bench kafka` with the broker of
//! `scripts/services.sh` running and its environment loaded). The release binary runs
//! generator -> kafka (tansu on loopback, idempotent producer, acks=all) for 200,000 events;
//! prints events/s from start to the last confirmed delivery and the daemon's peak RSS.

use std::process::{Command, Stdio};
use std::time::Instant;

const EVENTS: u64 = 200_000;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let brokers = std::env::var("CDC_BRIDGE_KAFKA_BROKERS")
        .expect("CDC_BRIDGE_KAFKA_BROKERS: run bench/run.sh");
    let dir = tempfile::tempdir().unwrap();
    let topic = format!("bench-{}", std::process::id());
    std::fs::write(
        dir.path().join("bench.toml"),
        format!(
            "[daemon]\nstate_dir = \"state\"\n[[pipeline]]\nname = \"bench\"\n[pipeline.source]\nkind = \"generator\"\ncount = {EVENTS}\nkeys = 10000\n\
             [pipeline.sink]\nkind = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"{topic}\"\ncreate_topics = true\ntopic_partitions = 3\ntombstones = false\n"
        ),
    )
    .unwrap();
    let binary = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/cdc-bridge");
    let start = Instant::now();
    let mut child = Command::new("/usr/bin/env")
        .args(["bash", "-c", &format!("\"{binary}\" run --config bench.toml & pid=$!; peak=0; while kill -0 $pid 2>/dev/null; do v=$(awk '/VmHWM/ {{print $2}}' /proc/$pid/status 2>/dev/null); [ -n \"$v\" ] && [ \"$v\" -gt \"$peak\" ] && peak=$v; sleep 0.05; done; wait $pid; echo $peak; times")])
        .current_dir(dir.path())
        .env("CDC_BRIDGE_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("run bench/run.sh, which builds the release binary first");
    let output = std::io::read_to_string(child.stdout.take().unwrap()).unwrap();
    assert!(child.wait().unwrap().success());
    let secs = start.elapsed().as_secs_f64();
    let mut lines = output.lines();
    let peak_kib: f64 = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(f64::NAN);
    // `times` prints the shell's own times, then its children's: "0m1.234s 0m0.567s".
    let cpu_secs: f64 = lines
        .nth(1)
        .map(|l| {
            l.split_whitespace()
                .map(|t| {
                    let (m, s) = t
                        .trim_end_matches('s')
                        .split_once('m')
                        .unwrap_or(("0", "0"));
                    m.parse::<f64>().unwrap_or(0.0) * 60.0 + s.parse::<f64>().unwrap_or(0.0)
                })
                .sum()
        })
        .unwrap_or(f64::NAN);
    println!("generator -> kafka  {:>10.0} events/s  ({EVENTS} events in {secs:.2} s, every delivery confirmed)", EVENTS as f64 / secs);
    println!(
        "daemon CPU time     {cpu_secs:>10.2} s     ({:.1} us per event)",
        cpu_secs * 1e6 / EVENTS as f64
    );
    println!("daemon peak RSS     {:>10.1} MiB", peak_kib / 1024.0);
}
