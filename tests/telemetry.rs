//! The daemon's HTTP endpoints against a real PostgreSQL pipeline and a real Prometheus:
//! counters match what was delivered, lag and retained WAL rise while the sink is stalled and
//! lag falls back after, snapshot progress reaches the table's rows, `promtool` accepts the
//! exposition, Prometheus scrapes it and answers a lag query; `/readyz` names a pipeline that
//! stopped for good while `/healthz` stays up; `cdc-bridge status` and JSON logs.

mod support;

use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::pg::PgFixture;
use support::{free_port, http_get, terminate, wait_until, Workspace};

/// The value of the sample `name{labels}` (labels exactly as exposed, sorted by name).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn status_of(port: u16) -> serde_json::Value {
    let (code, body) = http_get(port, "/status").expect("the daemon answers /status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()[0].clone()
}

/// Adds `http_listen` (and `extra` lines) to the `[daemon]` section of `config`.
fn listen_on(config: &std::path::Path, port: u16, extra: &str) {
    let text = std::fs::read_to_string(config).unwrap().replacen(
        "[daemon]\n",
        &format!("[daemon]\nhttp_listen = \"127.0.0.1:{port}\"\n{extra}"),
        1,
    );
    std::fs::write(config, text).unwrap();
}

/// A Prometheus server scraping `target_port` every second, on a port of its own.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target_port: u16) -> Self {
        let binary = std::env::var("CDC_BRIDGE_PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: cdc-bridge\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus (the Debian package `prometheus`; scripts/services.sh installs it)");
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    /// The first value an instant query returns, if any.
    fn query(&self, promql: &str) -> Option<f64> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (code, body) = http_get(self.port, &format!("/api/v1/query?query={encoded}"))?;
        if code != 200 {
            return None;
        }
        let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
        answer["data"]["result"][0]["value"][1]
            .as_str()?
            .parse()
            .ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        terminate(&self.child);
        let _ = self.child.wait();
    }
}

/// Runs `promtool check metrics` on `text`: its exit status and what it said.
fn promtool_check(text: &str) -> (bool, String) {
    let binary = std::env::var("CDC_BRIDGE_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let mut child = Command::new(binary)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (the Debian package `prometheus`)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_postgres_pipeline_through_a_stalled_sink() {
    let pg = PgFixture::new("telemetry_pg").await;
    let n = &pg.name;
    pg.sql(&format!(
        "CREATE TABLE {n}.items (id int PRIMARY KEY, note text);
         INSERT INTO {n}.items SELECT g, 'row ' || g FROM generate_series(1, 3000) g;
         ANALYZE {n}.items;"
    ))
    .await;
    let config = pg.config(&["items"], "");
    // The stdout sink (a reader that pauses is a stalled sink) and a small queue, so that the
    // stall reaches the source quickly.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("kind = \"file\"\npath = \"out/{n}.jsonl\""),
        "kind = \"stdout\"",
    ) + "[pipeline.buffer]\nmax_events = 500\n";
    std::fs::write(&config, text).unwrap();
    let port = free_port();
    listen_on(&config, port, "");
    let prometheus = Prometheus::start(port);
    let (child, out) = pg
        .ws
        .spawn_read_stdout(&["run", "--config", config.to_str().unwrap()]);
    let table = format!("{n}.items");

    // The snapshot: progress reaches the table's rows; every row is counted as delivered.
    wait_until(Duration::from_secs(60), "the snapshot is delivered", || {
        out.len() >= 3000
    });
    wait_until(Duration::from_secs(20), "the pipeline streams", || {
        status_of(port)["state"] == "streaming"
    });
    let status = status_of(port);
    let snapshot = &status["snapshot"];
    assert_eq!(snapshot["tables_remaining"], 0, "{status}");
    assert_eq!(snapshot["tables"][0]["table"], table.as_str());
    assert_eq!(snapshot["tables"][0]["rows_copied"], 3000);
    assert_eq!(snapshot["tables"][0]["rows_estimated"], 3000);
    assert_eq!(snapshot["tables"][0]["finished"], true);
    let (code, metrics) = http_get(port, "/metrics").unwrap();
    assert_eq!(code, 200);
    let labels = format!("pipeline=\"{n}\"");
    let copied = format!("cdc_bridge_snapshot_rows_copied_total{{{labels},table=\"{table}\"}}");
    assert_eq!(sample(&metrics, &copied), Some(3000.0), "{metrics}");
    let delivered = |metrics: &str, op: &str| {
        sample(
            metrics,
            &format!("cdc_bridge_events_delivered_total{{op=\"{op}\",{labels}}}"),
        )
        .unwrap_or_else(|| panic!("no delivered {op} series in\n{metrics}"))
    };
    assert_eq!(delivered(&metrics, "snapshot"), 3000.0);

    // Live changes: counted as read and delivered, by operation; lag back near zero.
    for i in 0..10 {
        let first = 3001 + i * 50;
        pg.sql(&format!(
            "INSERT INTO {n}.items SELECT g, 'live ' || g FROM generate_series({first}, {}) g",
            first + 49
        ))
        .await;
    }
    pg.sql(&format!(
        "UPDATE {n}.items SET note = 'changed' WHERE id <= 100"
    ))
    .await;
    pg.sql(&format!("DELETE FROM {n}.items WHERE id <= 20"))
        .await;
    wait_until(Duration::from_secs(30), "the live changes", || {
        out.len() >= 3000 + 500 + 100 + 20
    });
    pg.wait_caught_up(Duration::from_secs(30)).await;
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    assert_eq!(delivered(&metrics, "insert"), 500.0);
    assert_eq!(delivered(&metrics, "update"), 100.0);
    assert_eq!(delivered(&metrics, "delete"), 20.0);
    let read_inserts = format!("cdc_bridge_events_read_total{{op=\"insert\",{labels}}}");
    assert_eq!(sample(&metrics, &read_inserts), Some(500.0));
    let lag = format!("cdc_bridge_lag_seconds{{{labels}}}");
    assert!(sample(&metrics, &lag).unwrap() < 1.0, "{metrics}");
    let retained = format!("cdc_bridge_source_retained_bytes{{{labels}}}");
    // The slot is measured every 2 s.
    let mut retained_before = None;
    wait_until(Duration::from_secs(10), "the slot is measured", || {
        retained_before = sample(&http_get(port, "/metrics").unwrap().1, &retained);
        retained_before.is_some()
    });
    let retained_before = retained_before.unwrap();
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    let reserved = format!("cdc_bridge_source_wal_status{{{labels},status=\"reserved\"}}");
    assert_eq!(sample(&metrics, &reserved), Some(1.0), "{metrics}");

    // The sink stalls (nobody reads its output): the lag grows with the age of the oldest
    // change not delivered, and the server keeps the WAL the slot may not release.
    out.pause();
    let stalled = Instant::now();
    let mut next_id = 4000;
    while stalled.elapsed() < Duration::from_secs(8) {
        pg.sql(&format!(
            "INSERT INTO {n}.items SELECT g, repeat('x', 500) FROM generate_series({next_id}, {}) g",
            next_id + 99
        ))
        .await;
        next_id += 100;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    let stalled_lag = sample(&metrics, &lag).unwrap();
    assert!(stalled_lag >= 5.0, "lag during an 8 s stall: {stalled_lag}");
    let retained_during = sample(&metrics, &retained).unwrap();
    assert!(
        retained_during > retained_before + 1_000_000.0,
        "retained WAL {retained_before} -> {retained_during}"
    );
    let lag_bytes = format!("cdc_bridge_source_lag_bytes{{{labels}}}");
    assert!(
        sample(&metrics, &lag_bytes).unwrap() > 1_000_000.0,
        "{metrics}"
    );
    let (code, body) = http_get(port, "/readyz").unwrap();
    assert_eq!(
        (code, body.as_str()),
        (200, "ready\n"),
        "a stalled sink is slow, not down"
    );

    // The sink resumes: everything arrives and the lag falls back near zero.
    out.resume();
    let expected = 3620 + (next_id - 4000) as usize;
    wait_until(Duration::from_secs(60), "the stalled changes", || {
        out.len() >= expected
    });
    pg.wait_caught_up(Duration::from_secs(30)).await;
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    assert!(sample(&metrics, &lag).unwrap() < 1.0, "{metrics}");
    assert_eq!(
        delivered(&metrics, "insert"),
        500.0 + (next_id - 4000) as f64
    );
    // The source waited for room while the sink stalled (counted once each wait ended).
    let waits = format!("cdc_bridge_backpressure_wait_seconds_count{{{labels}}}");
    assert!(sample(&metrics, &waits).unwrap() >= 1.0, "{metrics}");
    let waited = format!("cdc_bridge_backpressure_wait_seconds_sum{{{labels}}}");
    assert!(sample(&metrics, &waited).unwrap() >= 3.0, "{metrics}");

    // promtool accepts the exposition as it is.
    let (accepted, said) = promtool_check(&metrics);
    assert!(accepted, "promtool check metrics:\n{said}");

    // Prometheus scraped it all along: it saw the stall's lag.
    let worst = format!("max_over_time(cdc_bridge_lag_seconds{{{labels}}}[10m])");
    let mut seen = None;
    wait_until(
        Duration::from_secs(20),
        "Prometheus answers the lag query",
        || {
            seen = prometheus.query(&worst);
            seen.is_some()
        },
    );
    let seen = seen.unwrap();
    assert!(seen >= 5.0, "Prometheus saw a worst lag of {seen} s");

    // `cdc-bridge status` shows the running pipeline.
    let shown = pg.ws.run(&["status", "--config", config.to_str().unwrap()]);
    let printed = String::from_utf8_lossy(&shown.stdout).to_string();
    assert!(shown.status.success(), "{printed}");
    let line = printed
        .lines()
        .find(|l| l.starts_with(n.as_str()))
        .unwrap_or_else(|| panic!("no line for the pipeline:\n{printed}"));
    assert!(line.contains("streaming"), "{printed}");
    pg.stop(child);
    // Without a daemon it falls back to the stored position.
    let shown = pg.ws.run(&["status", "--config", config.to_str().unwrap()]);
    let printed = String::from_utf8_lossy(&shown.stdout).to_string();
    assert!(printed.contains("no daemon answers"), "{printed}");
    assert!(
        printed.lines().any(|l| l.starts_with(n.as_str())),
        "{printed}"
    );
    pg.cleanup().await;
}

#[test]
fn readyz_names_a_pipeline_that_stopped_for_good_and_healthz_stays_up() {
    let ws = Workspace::new();
    let config = ws.config(
        "[[pipeline]]\nname = \"steady\"\n[pipeline.source]\nkind = \"generator\"\nrate_per_sec = 100\n\
         [pipeline.sink]\nkind = \"null\"\n\n\
         [[pipeline]]\nname = \"broken\"\n[pipeline.source]\nkind = \"postgres\"\nurl = \"${CDC_BRIDGE_PG_URL}\"\n\
         slot = \"telemetry_broken\"\npublication = \"telemetry_broken\"\ntables = [\"public.no_such_table\"]\n\
         [pipeline.sink]\nkind = \"null\"\n",
    );
    let port = free_port();
    listen_on(&config, port, "log_format = \"json\"\n");
    let child = ws.spawn(&["run", "--config", config.to_str().unwrap()]);
    let mut last = None;
    wait_until(
        Duration::from_secs(30),
        "/readyz names the broken pipeline",
        || {
            last = http_get(port, "/readyz");
            matches!(&last, Some((503, body)) if body.contains("pipeline broken: stopped: "))
        },
    );
    let (_, body) = last.unwrap();
    assert!(!body.contains("steady"), "{body}");
    assert!(
        body.contains("no_such_table"),
        "the reason names the missing table: {body}"
    );
    assert_eq!(http_get(port, "/healthz"), Some((200, "ok\n".into())));
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    let stopped = "cdc_bridge_pipeline_state{pipeline=\"broken\",state=\"stopped\"}";
    assert_eq!(sample(&metrics, stopped), Some(1.0), "{metrics}");
    let restarts = "cdc_bridge_pipeline_failures_total{disposition=\"fatal\",pipeline=\"broken\"}";
    assert_eq!(sample(&metrics, restarts), Some(1.0), "{metrics}");
    let streaming = "cdc_bridge_pipeline_state{pipeline=\"steady\",state=\"streaming\"}";
    assert_eq!(sample(&metrics, streaming), Some(1.0), "{metrics}");
    assert_eq!(http_get(port, "/nowhere").map(|r| r.0), Some(404));
    terminate(&child);
    let mut child = child;
    child.wait().unwrap();
    // `log_format = "json"`: every line of the log is one JSON object with a level and a
    // message.
    let log = std::fs::read_to_string(ws.path("bridge.log")).unwrap();
    let mut lines = 0;
    for line in log.lines() {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
        assert!(object["level"].is_string(), "{line}");
        assert!(object["message"].is_string(), "{line}");
        lines += 1;
    }
    assert!(lines >= 3, "{log}");
    assert!(log.contains("pipeline stopped for good"), "{log}");
}

/// Every `cdc_bridge_*` name in `text` (a histogram's series by their family's name).
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("cdc_bridge_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.insert(family.to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_alert_rules_and_the_dashboard_use_metrics_the_daemon_exposes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |path: &str| std::fs::read_to_string(root.join(path)).unwrap();
    let families = read("src/telemetry/families.rs");
    let alerts = read("deploy/prometheus/alerts.yml");
    let dashboard = read("deploy/grafana/dashboards/cdc-bridge.json");
    for (file, text) in [("alerts.yml", &alerts), ("cdc-bridge.json", &dashboard)] {
        let names = metric_names(text);
        assert!(names.len() >= 5, "{file}: {names:?}");
        for name in names {
            assert!(
                families.contains(&format!("\"{name}\"")),
                "{file} uses {name}, which the daemon does not expose"
            );
        }
    }
    // Grafana reads the dashboard as JSON; every panel queries the provisioned data source.
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert_eq!(panel["datasource"]["uid"], "prometheus", "{panel}");
        assert!(!panel["targets"].as_array().unwrap().is_empty(), "{panel}");
    }
    // promtool accepts the rules, and their unit tests (each alert fires as intended) pass.
    let promtool = std::env::var("CDC_BRIDGE_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let dir = root.join("deploy/prometheus");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ] {
        let output = Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("run promtool (the Debian package `prometheus`)");
        assert!(
            output.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The PID of the `cdc-bridge run` process whose command line names `config`.
fn daemon_pid(config: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let runs = args.first()?.ends_with(b"cdc-bridge") && args.contains(&config.as_bytes());
            runs.then_some(pid)
        })
}

/// On a terminal (a pseudo-terminal from util-linux's `script`), the snapshot draws a bar per
/// table that ends at the table's rows, with the log lines around it intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_on_a_terminal_draws_a_bar_per_table() {
    let pg = PgFixture::new("telemetry_bars").await;
    let n = &pg.name;
    pg.sql(&format!(
        "CREATE TABLE {n}.big (id int PRIMARY KEY, note text);
         INSERT INTO {n}.big SELECT g, 'row ' || g FROM generate_series(1, 20000) g;
         CREATE TABLE {n}.small (id int PRIMARY KEY);
         INSERT INTO {n}.small SELECT generate_series(1, 10);
         ANALYZE {n}.big; ANALYZE {n}.small;"
    ))
    .await;
    let config = pg.config(&["big", "small"], "");
    let command = format!("{} run --config {}", support::BIN, config.to_str().unwrap());
    let out = pg.ws.path("terminal.out");
    let mut child = Command::new("script")
        .args(["-qfec", &command, out.to_str().unwrap()])
        .current_dir(pg.ws.dir.path())
        .env("CDC_BRIDGE_LOG", "info")
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("util-linux script");
    let screen = || std::fs::read_to_string(&out).unwrap_or_default();
    wait_until(Duration::from_secs(60), "both bars complete", || {
        let screen = screen();
        screen.contains("20,000/20,000 rows") && screen.contains("10/10 rows")
    });
    let screen = screen();
    assert!(screen.contains(&format!("{n} {n}.big [")), "{screen}");
    assert!(screen.contains("snapshot of table done"), "{screen}");
    // `script` runs the daemon under a shell of its own: find it by its (unique) config path,
    // stop it, and `script` ends with it.
    let daemon = daemon_pid(config.to_str().unwrap()).expect("the daemon runs");
    let _ = Command::new("kill").arg(daemon.to_string()).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "the daemon stopped cleanly: {status:?}");
    pg.wait_for_events(20_010, Duration::from_secs(10));
    pg.cleanup().await;
}

#[test]
fn status_says_how_to_see_a_daemon_that_serves_no_endpoints() {
    let ws = Workspace::new();
    let config = ws.config(
        "[[pipeline]]\nname = \"quiet\"\n[pipeline.source]\nkind = \"generator\"\nrate_per_sec = 50\n\
         [pipeline.sink]\nkind = \"null\"\n",
    );
    let config = config.to_str().unwrap();
    let mut child = ws.spawn(&["run", "--config", config]);
    // Once a pipeline starts, the daemon holds its store (asking earlier would race its open).
    wait_until(Duration::from_secs(20), "the pipeline starts", || {
        std::fs::read_to_string(ws.path("bridge.log"))
            .unwrap_or_default()
            .contains("starting pipeline")
    });
    let shown = ws.run(&["status", "--config", config]);
    let err = support::stderr(&shown);
    assert!(
        err.contains("[daemon] http_listen is not set, and a running daemon holds the checkpoint store: set [daemon] http_listen"),
        "{err}"
    );
    terminate(&child);
    assert!(child.wait().unwrap().success());
    let shown = ws.run(&["status", "--config", config]);
    let printed = String::from_utf8_lossy(&shown.stdout).to_string();
    assert!(shown.status.success(), "{}", support::stderr(&shown));
    assert!(printed.contains("stored positions:"), "{printed}");
    assert!(
        printed.lines().any(|l| l.starts_with("quiet ")),
        "{printed}"
    );
}
