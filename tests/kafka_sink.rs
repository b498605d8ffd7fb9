//! The Kafka sink against a real Kafka-protocol broker (tansu): every event consumed back,
//! keyed by primary key, one partition per key (the one Kafka's own clients pick) in source
//! order, tombstones after deletes; missing topics, SCRAM and oversized records.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::kafka::{auth_brokers, brokers, consume, partitions_chosen_by_kafka_clients};
use support::{stderr, Workspace};

/// generator (`count` rows over 7 keys) -> kafka, with `sink_extra` settings.
fn config(ws: &Workspace, name: &str, count: u64, sink_extra: &str) -> std::path::PathBuf {
    ws.config(&format!(
        "[[pipeline]]\nname = \"{name}\"\n[pipeline.source]\nkind = \"generator\"\ncount = {count}\nkeys = 7\ntable = \"items\"\n\
         [pipeline.sink]\nkind = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{{pipeline}}.{{database}}.{{table}}\"\n{sink_extra}\n[pipeline.batch]\nlinger_ms = 5\n",
        brokers()
    ))
}

#[test]
fn every_event_arrives_keyed_ordered_per_key_with_tombstones() {
    let ws = Workspace::new();
    // The broker outlives test runs: a topic of this run's own.
    let name = format!("kafka-e2e-{}", std::process::id());
    let config = config(
        &ws,
        &name,
        300,
        "create_topics = true\ntopic_partitions = 3",
    );
    let output = ws.run(&["run", "--config", config.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));

    let deletes = (1..=300u64).filter(|seq| (seq - 1) / 7 % 3 == 2).count();
    let records = consume(
        &brokers(),
        &format!("{name}.generator.items"),
        300 + deletes,
        Duration::from_secs(60),
    );
    assert_eq!(
        records.len(),
        300 + deletes,
        "every event and every tombstone"
    );

    let mut partition_of_key: HashMap<String, i32> = HashMap::new();
    let mut by_partition: HashMap<i32, Vec<&support::kafka::Record>> = HashMap::new();
    for record in &records {
        let key = record.key.clone().expect("every record has a key");
        assert_eq!(
            *partition_of_key.entry(key).or_insert(record.partition),
            record.partition,
            "a key stays in one partition"
        );
        by_partition
            .entry(record.partition)
            .or_default()
            .push(record);
    }
    assert!(by_partition.len() > 1, "keys spread over partitions");
    // The bridge picks partitions itself: a consumer joining keys with another producer's
    // records must find each key where Kafka's own partitioner puts it.
    let keys: Vec<String> = partition_of_key.keys().cloned().collect();
    let reference =
        partitions_chosen_by_kafka_clients(&brokers(), &format!("{name}-reference"), &keys, 3);
    assert_eq!(reference, partition_of_key);
    let mut seen = 0;
    for partition in by_partition.values_mut() {
        partition.sort_by_key(|r| r.offset);
        let mut last_seq_of_key: HashMap<&str, u64> = HashMap::new();
        for (i, record) in partition.iter().enumerate() {
            let key = record.key.as_deref().unwrap();
            let Some(value) = &record.value else {
                // A tombstone directly follows the delete of its key.
                let previous = partition[i - 1];
                assert_eq!(previous.key.as_deref(), Some(key));
                assert_eq!(previous.header("op"), Some("delete"));
                continue;
            };
            seen += 1;
            let seq: u64 = value["source"]["position"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(
                key,
                serde_json::to_string(&value["key"]).unwrap(),
                "the message key is the primary key as JSON"
            );
            assert!(key.starts_with("{\"id\":"));
            assert_eq!(record.header("op"), value["op"].as_str());
            assert_eq!(record.header("table"), Some("generator.items"));
            assert_eq!(record.header("position"), Some(seq.to_string().as_str()));
            if let Some(previous) = last_seq_of_key.insert(key, seq) {
                assert!(seq > previous, "per-key order: {seq} after {previous}");
            }
            if value["op"] == "delete" {
                let next = partition.get(i + 1).expect("a tombstone follows");
                assert!(next.value.is_none() && next.key.as_deref() == Some(key));
            }
        }
    }
    assert_eq!(seen, 300);
}

#[test]
fn a_missing_topic_stops_with_the_fix() {
    let ws = Workspace::new();
    let name = format!("kafka-missing-{}", std::process::id());
    let output = ws.run(&[
        "run",
        "--config",
        config(&ws, &name, 5, "").to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let expected = format!(
        "topic \"{name}.generator.items\" does not exist: create it, or set create_topics = true"
    );
    assert!(stderr(&output).contains(&expected), "{}", stderr(&output));
}

fn scram(mechanism: &str, user: &str, password: &str) -> String {
    format!(
        "create_topics = true\nsecurity_protocol = \"sasl_plaintext\"\nsasl_mechanism = \"{mechanism}\"\nsasl_username = \"{user}\"\nsasl_password = \"{password}\"\n"
    )
}

#[test]
fn scram_with_the_right_password_delivers() {
    for (mechanism, user, name) in [
        ("SCRAM-SHA-256", "cdc", "scram256"),
        ("SCRAM-SHA-512", "cdc512", "scram512"),
    ] {
        let ws = Workspace::new();
        let text =
            std::fs::read_to_string(config(&ws, name, 20, &scram(mechanism, user, "cdc-secret")))
                .unwrap()
                .replace(&brokers(), &auth_brokers());
        std::fs::write(ws.path("cdc.toml"), text).unwrap();
        let output = ws.run(&["run", "--config", "cdc.toml"]);
        assert!(output.status.success(), "{mechanism}: {}", stderr(&output));
        assert!(
            !stderr(&output).contains("cdc-secret"),
            "the password must never be logged"
        );
    }
}

#[test]
fn scram_with_a_wrong_password_fails_clearly() {
    let ws = Workspace::new();
    let text = std::fs::read_to_string(config(
        &ws,
        "scram-wrong",
        5,
        &scram("SCRAM-SHA-256", "cdc", "not-it"),
    ))
    .unwrap()
    .replace(&brokers(), &auth_brokers());
    std::fs::write(ws.path("cdc.toml"), text).unwrap();
    let output = ws.run(&["run", "--config", "cdc.toml"]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("authentication with brokers")
            && err.contains("failed: check sasl_username, sasl_password"),
        "{err}"
    );
    assert!(!err.contains("not-it"));
}

#[test]
fn oversized_records_fail_or_go_to_the_dead_letter_file() {
    let ws = Workspace::new();
    let body = |name: &str, extra: &str| {
        format!(
            "[[pipeline]]\nname = \"{name}\"\n[pipeline.source]\nkind = \"generator\"\ncount = 10\npayload_bytes = 5000\n\
             [pipeline.sink]\nkind = \"kafka\"\nbrokers = \"{}\"\ncreate_topics = true\nmax_message_bytes = 2000\n{extra}\n",
            brokers()
        )
    };
    let failing = ws.config(&body("oversize-fail", ""));
    let output = ws.run(&["run", "--config", failing.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output)
            .contains("table generator.items at position 1 exceeds the limit of 2000 bytes")
            && !stderr(&output).contains("\"id\""),
        "{}",
        stderr(&output)
    );

    let dead_letter = ws.config(&body(
        "oversize-dl",
        "oversize = \"dead_letter\"\ndead_letter_path = \"dead/oversize.jsonl\"",
    ));
    let output = ws.run(&["run", "--config", dead_letter.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let lines = std::fs::read_to_string(ws.path("dead/oversize.jsonl")).unwrap();
    assert_eq!(
        lines.lines().count(),
        10,
        "every oversized event is kept aside"
    );
    assert_eq!(ws.stored_seq("oversize-dl"), 10, "and the pipeline went on");
}

fn tls_config(ws: &Workspace, name: &str, ca_var: &str) -> std::path::PathBuf {
    let brokers = std::env::var("CDC_BRIDGE_KAFKA_TLS_BROKERS")
        .expect("CDC_BRIDGE_KAFKA_TLS_BROKERS: run scripts/test.sh");
    let ca = std::env::var(ca_var).unwrap_or_else(|_| panic!("{ca_var}: run scripts/test.sh"));
    let text = std::fs::read_to_string(config(
        ws,
        name,
        20,
        &format!("create_topics = true\nsecurity_protocol = \"ssl\"\nssl_ca_file = \"{ca}\"\n"),
    ))
    .unwrap()
    .replace(&support::kafka::brokers(), &brokers);
    std::fs::write(ws.path("cdc.toml"), text).unwrap();
    ws.path("cdc.toml")
}

#[test]
fn tls_with_the_right_ca_delivers_and_a_foreign_ca_is_refused() {
    let ws = Workspace::new();
    let output = ws.run(&[
        "run",
        "--config",
        tls_config(
            &ws,
            &format!("tls-ok-{}", std::process::id()),
            "CDC_BRIDGE_TEST_CA",
        )
        .to_str()
        .unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(ws.stored_seq(&format!("tls-ok-{}", std::process::id())), 20);

    let ws = Workspace::new();
    let output = ws.run(&[
        "run",
        "--config",
        tls_config(&ws, "tls-refused", "CDC_BRIDGE_TEST_OTHER_CA")
            .to_str()
            .unwrap(),
    ]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("TLS with brokers") && err.contains("certificate verify failed"),
        "{err}"
    );
}

#[test]
fn check_reports_reachable_brokers_and_an_unreachable_one() {
    let ws = Workspace::new();
    let good = config(&ws, "check-ok", 5, "create_topics = true");
    let output = ws.run(&["check", "--config", good.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", stderr(&output));
    assert!(
        stdout.contains(&format!(
            "sink:   ok   brokers {} reachable; credentials accepted",
            brokers()
        )),
        "{stdout}"
    );

    let text = std::fs::read_to_string(&good)
        .unwrap()
        .replace(&brokers(), "127.0.0.1:1");
    std::fs::write(ws.path("cdc.toml"), text).unwrap();
    let output = ws.run(&["check", "--config", "cdc.toml"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("sink:   FAIL brokers 127.0.0.1:1 are not reachable"),
        "{stdout}"
    );
}
