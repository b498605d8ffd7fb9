//! Without `binlog_row_metadata = FULL` (MariaDB's default is NO_LOG) the MySQL/MariaDB source
//! reads column names, signedness and ENUM/SET labels from information_schema; an event that
//! no longer fits the table's current columns is refused, not misread. Runs on mariadb_bad,
//! whose global settings it changes (in the same nextest group as mysql_bad_input).

mod support;

use std::time::Duration;

use serde_json::json;
use support::mysql::sql;
use support::{read_records, stderr, terminate, Workspace};

fn url() -> String {
    std::env::var("CDC_BRIDGE_MYSQL_BAD_URL")
        .expect("CDC_BRIDGE_MYSQL_BAD_URL is not set: run the tests with scripts/test.sh")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shapes_come_from_information_schema_when_the_binlog_has_no_names() {
    let url = url();
    let mut admin = mysql_async::Conn::new(mysql_async::Opts::from_url(&url).unwrap())
        .await
        .unwrap();
    sql(
        &mut admin,
        "SET GLOBAL binlog_row_metadata = 'NO_LOG'; DROP TABLE IF EXISTS f; \
         CREATE TABLE f (id INT UNSIGNED PRIMARY KEY, big BIGINT UNSIGNED, e ENUM('a','b'), \
         s SET('x','y'), b VARBINARY(4), t VARCHAR(10) CHARACTER SET utf8mb4, j JSON, lt LONGTEXT)",
    )
    .await;
    let ws = Workspace::new();
    let config = support::mysql::pipeline_at(&url, &ws, "fallback", "f", "");
    let check = ws.run(&["check", "--config", &config]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        report.contains("binlog_row_metadata is \"NO_LOG\": column names, signedness and ENUM/SET labels are read from information_schema"),
        "{report}"
    );

    let mut child = support::mysql::start_streaming(&ws, &config);
    let wait_for = |count: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while read_records(&ws.path("out.jsonl")).len() < count {
            assert!(
                std::time::Instant::now() < deadline,
                "{count} events: {}",
                ws.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    sql(
        &mut admin,
        "INSERT INTO f VALUES (4294967295, 18446744073709551615, 'b', 'x,y', x'00ff', 'hé', '{\"k\": [1]}', '[2]')",
    )
    .await;
    // Read before the next change (a column change ahead of the stream is the case refused
    // below).
    wait_for(1);
    sql(
        &mut admin,
        "ALTER TABLE f ADD COLUMN extra INT; INSERT INTO f (id, extra) VALUES (2, 5)",
    )
    .await;
    wait_for(2);
    terminate(&child);
    child.wait().unwrap();
    let log = std::fs::read_to_string(ws.path("bridge.log")).unwrap();
    assert!(log.contains("binlog_row_metadata is \"NO_LOG\""), "{log}");
    let events = read_records(&ws.path("out.jsonl"));
    assert_eq!(
        events[0]["after"],
        json!({"id": 4294967295u64, "big": 18446744073709551615u64, "e": "b", "s": "x,y", "b": "AP8=", "t": "hé",
               "j": {"k": [1]}, "lt": "[2]"}),
        "MariaDB's JSON (a checked LONGTEXT) is a document, a plain LONGTEXT text"
    );
    assert_eq!(events[0]["key"], json!({"id": 4294967295u64}));
    assert_eq!(
        events[1]["after"]["extra"], 5,
        "the new column after the DDL"
    );

    // A change made before a column was dropped, read after the drop: refused with the fix.
    sql(
        &mut admin,
        "INSERT INTO f (id, extra) VALUES (3, 6); ALTER TABLE f DROP COLUMN extra",
    )
    .await;
    let output = ws.run(&["run", "--config", &config]);
    let run_err = stderr(&output);
    sql(&mut admin, "SET GLOBAL binlog_row_metadata = 'FULL'").await;
    assert_eq!(output.status.code(), Some(1), "{run_err}");
    assert!(
        run_err.contains("app.f")
            && run_err.contains("the table changed since this event")
            && run_err.contains("set binlog_row_metadata = FULL"),
        "{run_err}"
    );
    assert_eq!(
        read_records(&ws.path("out.jsonl")).len(),
        2,
        "nothing misread"
    );
}
