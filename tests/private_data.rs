//! What the bridge keeps on disk and writes to its log stays private: the state folder,
//! checkpoint store, file-sink output and dead-letter file are readable by their owner only,
//! and row values (keys included) never reach the info-level log, even on the paths that
//! report a row (an oversized record, stopped or set aside): the log names the table and the
//! position instead.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use support::kinesis::{create_stream, endpoint, stream_name};
use support::pg::PgFixture;
use support::{stderr, terminate, wait_until, Workspace};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn state_and_file_sink_output_are_private() {
    let ws = Workspace::new();
    let config = ws.config(
        "[[pipeline]]\nname = \"private\"\n[pipeline.source]\nkind = \"generator\"\ncount = 5\n\
         [pipeline.sink]\nkind = \"file\"\npath = \"out/nested/private.jsonl\"\n",
    );
    let output = ws.run(&["run", "--config", config.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(mode(&ws.path("state")), 0o700);
    assert_eq!(mode(&ws.path("state/checkpoints.redb")), 0o600);
    assert_eq!(mode(&ws.path("out")), 0o700);
    assert_eq!(mode(&ws.path("out/nested")), 0o700);
    assert_eq!(mode(&ws.path("out/nested/private.jsonl")), 0o600);
}

const KEY_MARKER: &str = "KEY-MARKER-7f3a";
const VALUE_MARKER: &str = "VALUE-MARKER-9c2e";

fn assert_private_log(log: &str) {
    assert!(
        !log.contains(KEY_MARKER) && !log.contains(VALUE_MARKER),
        "a row value reached the log:\n{log}"
    );
    assert!(
        log.contains("log_privacy.t") && log.contains("position"),
        "the log names the table and the position:\n{log}"
    );
}

/// An oversized row of Postgres (its key and a column carry markers) sent to Kinesis with a
/// 2,000-byte record limit: `fail` stops the pipeline, `dead_letter` sets the row aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_values_stay_out_of_the_info_log() {
    let fx = PgFixture::new("log_privacy").await;
    fx.sql("CREATE TABLE log_privacy.t (code text PRIMARY KEY, note text)")
        .await;
    fx.sql(&format!(
        "INSERT INTO log_privacy.t VALUES ('{KEY_MARKER}', '{VALUE_MARKER}' || repeat('x', 3000))"
    ))
    .await;
    let client = support::kinesis::client().await;
    let stream = stream_name("privacy");
    create_stream(&client, &stream, 1).await;
    let config = |extra: &str| {
        fx.ws.config(&format!(
            "[[pipeline]]\nname = \"log_privacy\"\n[pipeline.source]\nkind = \"postgres\"\nurl = \"${{CDC_BRIDGE_PG_URL}}\"\n\
             slot = \"log_privacy\"\npublication = \"log_privacy\"\ntables = [\"log_privacy.t\"]\n\
             [pipeline.sink]\nkind = \"kinesis\"\nstream = \"{stream}\"\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\nmax_record_bytes = 2000\n{extra}\n",
            endpoint()
        ))
    };

    let failing = config("");
    let output = fx.ws.run(&["run", "--config", failing.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("exceeds the limit"),
        "{}",
        stderr(&output)
    );
    assert_private_log(&stderr(&output));

    let dead_letter =
        config("oversize = \"dead_letter\"\ndead_letter_path = \"dead/oversize.jsonl\"");
    let child = fx
        .ws
        .spawn(&["run", "--config", dead_letter.to_str().unwrap()]);
    let dead = fx.ws.path("dead/oversize.jsonl");
    wait_until(Duration::from_secs(30), "the row set aside", || {
        std::fs::read_to_string(&dead).is_ok_and(|text| text.contains(KEY_MARKER))
    });
    terminate(&child);
    let mut child = child;
    child.wait().unwrap();
    let log = std::fs::read_to_string(fx.ws.path("bridge.log")).unwrap();
    assert!(log.contains("dead-letter"), "{log}");
    assert_private_log(&log);
    assert_eq!(mode(&dead), 0o600);
    assert_eq!(mode(dead.parent().unwrap()), 0o700);
    fx.cleanup().await;
}
