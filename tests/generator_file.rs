//! End to end through the binary: generator -> file, resume, reset, graceful shutdown, and
//! pipelines that fail without taking the others down.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::{output_seqs, stderr, terminate, wait_until, Workspace};

fn pipeline(name: &str, source_extra: &str, sink_path: &str) -> String {
    format!(
        "[[pipeline]]\nname = \"{name}\"\n[pipeline.source]\nkind = \"generator\"\n{source_extra}\n\
         [pipeline.sink]\nkind = \"file\"\npath = \"{sink_path}\"\n[pipeline.batch]\nmax_events = 97\nlinger_ms = 5\n"
    )
}

#[test]
fn runs_to_completion_in_order_then_resumes_and_resets() {
    let ws = Workspace::new();
    let config = ws.config(&pipeline("shop", "count = 500\nkeys = 7", "out/shop.jsonl"));
    let config = config.to_str().unwrap();
    let out = ws.path("out/shop.jsonl");

    let first = ws.run(&["run", "--config", config]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(output_seqs(&out), (1..=500).collect::<Vec<_>>());
    assert_eq!(ws.stored_seq("shop"), 500);

    // Per key, the operations cycle insert -> update -> delete and `before` is the previous row.
    let text = std::fs::read_to_string(&out).unwrap();
    let mut last_seq_of_key: HashMap<i64, i64> = HashMap::new();
    for line in text.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = event["key"]["id"].as_i64().unwrap();
        let seq: i64 = event["source"]["position"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let expected_op = ["insert", "update", "delete"][((seq - 1) / 7 % 3) as usize];
        assert_eq!(event["op"], expected_op, "{line}");
        if let Some(previous) = last_seq_of_key.insert(id, seq) {
            if expected_op != "insert" {
                assert_eq!(event["before"]["seq"].as_i64(), Some(previous), "{line}");
            }
        }
    }

    // A second run resumes after 500: nothing more to do, nothing written again.
    let again = ws.run(&["run", "--config", config]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(output_seqs(&out).len(), 500);

    let listed = ws.run(&["checkpoints", "--config", config]);
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["shop", "-", "500"]),
        "{listing}"
    );

    let reset = ws.run(&[
        "checkpoints",
        "reset",
        "--config",
        config,
        "--pipeline",
        "shop",
    ]);
    assert!(reset.status.success(), "{}", stderr(&reset));
    assert_eq!(ws.stored_seq("shop"), 0);
    let third = ws.run(&["run", "--config", config]);
    assert!(third.status.success(), "{}", stderr(&third));
    let expected: Vec<u64> = (1..=500).chain(1..=500).collect();
    assert_eq!(output_seqs(&out), expected);
}

#[test]
fn sigterm_delivers_in_flight_batches_stores_the_checkpoint_and_exits_zero() {
    let ws = Workspace::new();
    let config = ws.config(&pipeline("live", "rate_per_sec = 3000", "out/live.jsonl"));
    let out = ws.path("out/live.jsonl");
    let mut child = ws.spawn(&["run", "--config", config.to_str().unwrap()]);
    wait_until(Duration::from_secs(20), "output", || {
        output_seqs(&out).len() > 300
    });
    terminate(&child);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));

    let seqs = output_seqs(&out);
    let last = *seqs.last().unwrap();
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>());
    // Everything written was acknowledged and checkpointed: a restart writes no duplicate.
    assert_eq!(ws.stored_seq("live"), last);
    let bounded = ws.config(&pipeline(
        "live",
        &format!("count = {}", last + 50),
        "out/live.jsonl",
    ));
    let rerun = ws.run(&["run", "--config", bounded.to_str().unwrap()]);
    assert!(rerun.status.success(), "{}", stderr(&rerun));
    assert_eq!(output_seqs(&out), (1..=last + 50).collect::<Vec<_>>());
}

#[test]
fn a_fatal_pipeline_stops_alone_and_the_exit_status_reports_it() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path("not-a-file")).unwrap();
    let body = format!(
        "{}\n{}",
        pipeline("broken", "count = 10", "not-a-file"),
        pipeline(
            "healthy",
            "count = 300\nrate_per_sec = 1000",
            "out/healthy.jsonl"
        ),
    );
    let config = ws.config(&body);
    let output = ws.run(&["run", "--config", config.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output)
            .contains("error: pipeline broken: sink failed: cannot open output file not-a-file"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        output_seqs(&ws.path("out/healthy.jsonl")),
        (1..=300).collect::<Vec<_>>()
    );
    assert_eq!(ws.stored_seq("healthy"), 300);
    assert_eq!(ws.stored_seq("broken"), 0);
}

#[test]
fn only_the_named_pipeline_runs() {
    let ws = Workspace::new();
    let body = format!(
        "{}\n{}",
        pipeline("a", "count = 20", "out/a.jsonl"),
        pipeline("b", "count = 20", "out/b.jsonl")
    );
    let config = ws.config(&body);
    let output = ws.run(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--pipeline",
        "b",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!ws.path("out/a.jsonl").exists());
    assert_eq!(output_seqs(&ws.path("out/b.jsonl")).len(), 20);
}
