//! TLS to MySQL/MariaDB against a real MariaDB whose user cdc_tls must connect with TLS: the
//! source streams over a verified connection, a wrong CA is a fatal error that says what to
//! fix, and without TLS that user is refused (so the streaming above was over TLS).

mod support;

use std::time::{Duration, Instant};

use support::mysql::{connect, sql};
use support::{read_records, stderr, terminate, wait_until, Workspace};

fn tls_url(query: &str) -> String {
    let url = std::env::var("CDC_BRIDGE_MYSQL_TLS_URL")
        .expect("CDC_BRIDGE_MYSQL_TLS_URL is not set: run the tests with scripts/test.sh");
    format!("{url}{query}")
}

fn ca(var: &str) -> String {
    std::env::var(var)
        .unwrap_or_else(|_| panic!("{var} is not set: run the tests with scripts/test.sh"))
}

fn config(ws: &Workspace, table: &str, url: &str) -> String {
    support::mysql::pipeline_at(url, ws, "tls", table, "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_streams_over_verified_tls() {
    let table = format!("tls_{}", std::process::id());
    let mut conn = connect().await;
    sql(
        &mut conn,
        &format!("CREATE TABLE {table} (id INT PRIMARY KEY)"),
    )
    .await;
    let ws = Workspace::new();
    let verified = config(
        &ws,
        &table,
        &tls_url(&format!(
            "?ssl-mode=VERIFY_IDENTITY&ssl-ca={}",
            ca("CDC_BRIDGE_MYSQL_CA")
        )),
    );
    let mut child = support::mysql::start_streaming(&ws, &verified);
    sql(&mut conn, &format!("INSERT INTO {table} VALUES (42)")).await;
    wait_until(Duration::from_secs(30), "the insert", || {
        !read_records(&ws.path("out.jsonl")).is_empty()
    });
    terminate(&child);
    child.wait().unwrap();
    assert_eq!(read_records(&ws.path("out.jsonl"))[0]["after"]["id"], 42);

    // The same user without TLS is refused by the server.
    let plain = Workspace::new();
    let output = plain.run(&["check", "--config", &config(&plain, &table, &tls_url(""))]);
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        !output.status.success() && report.contains("Access denied"),
        "{report}"
    );
}

#[test]
fn a_certificate_from_another_ca_stops_the_source_with_the_fix() {
    let ws = Workspace::new();
    let url = tls_url(&format!(
        "?ssl-mode=VERIFY_CA&ssl-ca={}",
        ca("CDC_BRIDGE_MYSQL_OTHER_CA")
    ));
    let config = config(&ws, "anything", &url);
    let check = ws.run(&["check", "--config", &config]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        !check.status.success() && report.contains("TLS certificate is not accepted"),
        "{report}"
    );
    // Not retried as a network fault: the run stops on its own.
    let mut child = ws
        .command(&["run", "--config", &config])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the bridge retried a rejected certificate");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("ssl-ca"), "{}", stderr(&output));
}

/// libmysql's VERIFY_CA without a CA checks the chain against the system store and ignores
/// the host name: any publicly trusted certificate of any host would do. Refused as a
/// configuration error naming `ssl-ca` instead.
#[test]
fn verify_ca_without_ssl_ca_is_a_config_error() {
    let ws = Workspace::new();
    let config = config(&ws, "anything", &tls_url("?ssl-mode=VERIFY_CA"));
    let output = ws.run(&["check", "--config", &config]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.contains("pipeline[0].source.url") && err.contains("ssl-mode=VERIFY_CA needs ssl-ca"),
        "{err}"
    );
}
