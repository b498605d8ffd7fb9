//! `format = "debezium"` end to end: real Postgres and MariaDB changes through the daemon into
//! a real Kafka-protocol broker (tansu), read back by a Kafka consumer and checked field by
//! field against what Debezium's connectors write for the same rows.

mod support;

use serde_json::{json, Value};
use support::kafka::{brokers, Record};
use support::pg::PgFixture;
use support::terminate;

fn kafka_sink(extra: &str) -> String {
    format!(
        "[pipeline.sink]\nkind = \"kafka\"\nbrokers = \"{}\"\ncreate_topics = true\ntopic_partitions = 1\n{extra}\n",
        brokers()
    )
}

fn consume(topic: &str, count: usize) -> Vec<Record> {
    support::kafka::wait_for_records(topic, count, true)
}

/// The op of a record's payload; `None` for a tombstone.
fn op(record: &Record, schemas: bool) -> Option<String> {
    let value = record.value.as_ref()?;
    let payload = if schemas { &value["payload"] } else { value };
    Some(payload["op"].as_str().unwrap().to_owned())
}

fn key_json(record: &Record) -> Option<Value> {
    record
        .key
        .as_deref()
        .map(|k| serde_json::from_str(k).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_changes_reach_kafka_as_debezium_envelopes_with_schemas() {
    let name = format!("dbz_pg_{}", std::process::id());
    let fx = PgFixture::new(&name).await;
    fx.client
        .batch_execute(&format!(
            "CREATE TABLE {name}.orders (id bigint PRIMARY KEY, amount numeric(10,2) NOT NULL,
               note text, placed timestamp(3), paid timestamptz, d date, tags text[], doc jsonb,
               u uuid, t time, iv interval, flag bit(1), bits bit(10), n numeric);
             CREATE TABLE {name}.log (msg text);
             INSERT INTO {name}.orders VALUES (1, 19.99, 'first', '2025-11-22 03:10:00.12',
               '2025-11-22 05:10:00.12+02', '2025-11-22', '{{a,b}}', '{{\"k\": 1}}',
               'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '04:05:06.789', '1 day 2 hours', B'1',
               B'1000000011', 1.50);"
        ))
        .await
        .unwrap();
    let config = fx.config(&["orders", "log"], "");
    let text = std::fs::read_to_string(&config).unwrap();
    let file_sink = format!("[pipeline.sink]\nkind = \"file\"\npath = \"out/{name}.jsonl\"\n");
    let sink = kafka_sink("format = { kind = \"debezium\", schemas = true }");
    std::fs::write(&config, text.replace(&file_sink, &sink)).unwrap();
    let mut bridge = fx.spawn(&config);

    let orders = format!("{name}.{name}.orders");
    let snapshot = consume(&orders, 1);
    assert_eq!(
        snapshot.len(),
        1,
        "the snapshot row; log:\n{}",
        fx.ws.log_tail()
    );
    fx.client
        .batch_execute(&format!(
            "INSERT INTO {name}.orders (id, amount) VALUES (2, -1.28);
             UPDATE {name}.orders SET note = 'second' WHERE id = 2;
             DELETE FROM {name}.orders WHERE id = 2;
             UPDATE {name}.orders SET id = 3 WHERE id = 1;
             TRUNCATE {name}.orders;
             INSERT INTO {name}.log VALUES ('no key');"
        ))
        .await
        .unwrap();
    let records = consume(&orders, 9);
    let log = consume(&format!("{name}.{name}.log"), 1);
    terminate(&bridge);
    bridge.wait().unwrap();

    let ops: Vec<Option<String>> = records.iter().map(|r| op(r, true)).collect();
    let expected = ["r", "c", "u", "d", "", "d", "", "c", "t"]
        .map(|op| (!op.is_empty()).then(|| op.to_owned()));
    assert_eq!(ops, expected, "log:\n{}", fx.ws.log_tail());

    // The snapshot row: every column in Debezium's representation.
    let read = records[0].value.as_ref().unwrap();
    let payload = &read["payload"];
    assert_eq!(
        payload["after"],
        json!({
            "id": 1, "amount": "B88=", "note": "first", "placed": 1_763_781_000_120_i64,
            "paid": "2025-11-22T03:10:00.120000Z", "d": 20_414, "tags": ["a", "b"],
            "doc": "{\"k\": 1}", "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "t": 14_706_789_000_i64, "iv": 93_600_000_000_i64, "flag": true, "bits": "AwI=",
            "n": {"scale": 1, "value": "Dw=="}
        })
    );
    let source = &payload["source"];
    assert_eq!(
        (
            &source["connector"],
            &source["name"],
            &source["db"],
            &source["schema"],
            &source["table"],
            &source["snapshot"]
        ),
        (
            &json!("postgresql"),
            &json!(name),
            &json!("app"),
            &json!(name),
            &json!("orders"),
            &json!("true")
        )
    );
    assert!(source["lsn"].as_u64().unwrap() > 0);
    let schema = &read["schema"];
    assert_eq!(schema["name"], format!("{name}.{name}.orders.Envelope"));
    let after_fields = schema["fields"][1]["fields"].as_array().unwrap();
    let logical: Vec<(&str, &str)> = after_fields
        .iter()
        .map(|f| {
            (
                f["field"].as_str().unwrap(),
                f["name"].as_str().unwrap_or(f["type"].as_str().unwrap()),
            )
        })
        .collect();
    assert_eq!(
        logical,
        [
            ("id", "int64"),
            ("amount", "org.apache.kafka.connect.data.Decimal"),
            ("note", "string"),
            ("placed", "io.debezium.time.Timestamp"),
            ("paid", "io.debezium.time.ZonedTimestamp"),
            ("d", "io.debezium.time.Date"),
            ("tags", "array"),
            ("doc", "io.debezium.data.Json"),
            ("u", "io.debezium.data.Uuid"),
            ("t", "io.debezium.time.MicroTime"),
            ("iv", "io.debezium.time.MicroDuration"),
            ("flag", "boolean"),
            ("bits", "io.debezium.data.Bits"),
            ("n", "io.debezium.data.VariableScaleDecimal"),
        ]
    );
    assert_eq!(after_fields[0]["optional"], false, "the key is required");
    assert_eq!(
        after_fields[1]["optional"], true,
        "amount is NOT NULL but a before image may lack it"
    );
    assert_eq!(
        after_fields[1]["parameters"],
        json!({"scale": "2", "connect.decimal.precision": "10"})
    );

    // Keys: the key struct with its schema; tombstones carry the deleted key.
    let key = |i: usize| key_json(&records[i]).expect("a key");
    assert_eq!(key(0)["payload"], json!({"id": 1}));
    assert_eq!(
        key(0)["schema"]["name"],
        format!("{name}.{name}.orders.Key")
    );
    assert_eq!(key(1)["payload"], json!({"id": 2}));
    assert_eq!(
        records[1].value.as_ref().unwrap()["payload"]["after"]["amount"],
        "gA=="
    );
    assert_eq!(
        records[1].value.as_ref().unwrap()["payload"]["source"]["snapshot"],
        "false"
    );
    assert_eq!(key(4), key(3), "the tombstone has the delete's key");
    // The key change: the old key deleted, then the row under its new key.
    assert_eq!(key(5)["payload"], json!({"id": 1}));
    assert_eq!(key(7)["payload"], json!({"id": 3}));
    assert_eq!(records[5].header("__debezium.newkey"), Some(r#"{"id":3}"#));
    assert_eq!(records[7].header("__debezium.oldkey"), Some(r#"{"id":1}"#));
    assert_eq!(records[1].header("__debezium.oldkey"), None);
    assert_eq!(
        records[7].value.as_ref().unwrap()["payload"]["after"]["note"],
        "first"
    );
    // A truncate and a keyless row: Kafka's null key.
    assert_eq!(records[8].key, None, "a truncate has no key");
    let truncate = &records[8].value.as_ref().unwrap()["payload"];
    assert_eq!(
        (&truncate["before"], &truncate["after"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].key, None, "a row without a primary key has no key");
    assert_eq!(
        log[0].value.as_ref().unwrap()["payload"]["after"],
        json!({"msg": "no key"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_changes_reach_kafka_as_debezium_envelopes() {
    let ws = support::Workspace::new();
    let table = format!("dbz_my_{}", std::process::id());
    let mut conn = support::mysql::connect().await;
    support::mysql::sql(
        &mut conn,
        &format!(
            "DROP TABLE IF EXISTS app.{table};
             CREATE TABLE app.{table} (id int unsigned PRIMARY KEY, small tinyint,
               amount decimal(10,2), at datetime(3), ts timestamp(6) NULL, tm time,
               size enum('s','m'), tags set('a','b'), flags bit(16), y year)"
        ),
    )
    .await;
    let config = support::mysql::pipeline(&ws, &table, &table, "");
    let text = std::fs::read_to_string(&config).unwrap();
    let file_sink = "[pipeline.sink]\nkind = \"file\"\npath = \"out.jsonl\"\n";
    assert!(text.contains(file_sink));
    let sink = kafka_sink("format = \"debezium\"\ntopic = \"{pipeline}.{database}.{table}\"");
    std::fs::write(&config, text.replace(file_sink, &sink)).unwrap();
    let mut bridge = support::mysql::start_streaming(&ws, &config);
    support::mysql::sql(
        &mut conn,
        &format!(
            "SET time_zone = '+00:00';
             INSERT INTO app.{table} VALUES (4000000000, -3, 19.99, '2025-11-22 03:10:00.120',
               '2025-11-22 03:10:00.120000', '-25:00:00', 'm', 'a,b', b'0000000100000010', 2025);
             UPDATE app.{table} SET small = 4 WHERE id = 4000000000;
             DELETE FROM app.{table} WHERE id = 4000000000;"
        ),
    )
    .await;
    let topic = format!("{table}.app.{table}");
    let records = consume(&topic, 4);
    terminate(&bridge);
    bridge.wait().unwrap();
    let ops: Vec<Option<String>> = records.iter().map(|r| op(r, false)).collect();
    assert_eq!(
        ops,
        [
            Some("c".to_owned()),
            Some("u".to_owned()),
            Some("d".to_owned()),
            None
        ],
        "log:\n{}",
        ws.log_tail()
    );
    for record in &records {
        assert_eq!(key_json(record), Some(json!({"id": 4_000_000_000_u64})));
    }
    let insert = records[0].value.as_ref().unwrap();
    assert_eq!(
        insert["after"],
        json!({
            "id": 4_000_000_000_u64, "small": -3, "amount": "B88=", "at": 1_763_781_000_120_i64,
            "ts": "2025-11-22T03:10:00.120000Z", "tm": -90_000_000_000_i64, "size": "m",
            "tags": "a,b", "flags": "AgE=", "y": 2025
        })
    );
    let update = records[1].value.as_ref().unwrap();
    assert_eq!(
        (&update["before"]["small"], &update["after"]["small"]),
        (&json!(-3), &json!(4))
    );
    let source = &insert["source"];
    assert_eq!(
        (
            &source["connector"],
            &source["db"],
            &source["table"],
            &source["snapshot"]
        ),
        (
            &json!("mysql"),
            &json!("app"),
            &json!(table),
            &json!("false")
        )
    );
    assert!(source["file"].as_str().unwrap().contains("bin"), "{source}");
    assert!(source["pos"].as_u64().unwrap() > 0 && source["server_id"].as_u64().unwrap() > 0);
    assert!(source["ts_ms"].as_i64().unwrap() > 0);
    assert!(
        insert.get("schema").is_none(),
        "no schema without schemas = true"
    );
}
