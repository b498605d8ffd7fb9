//! `format = { kind = "avro", ... }` end to end: real Postgres changes through the daemon
//! into a Kafka-protocol broker (tansu), their schemas registered with a Confluent-compatible
//! schema registry (rivven-schema); every record read back by fetching its schema by the id
//! its framing carries and decoding the body with apache-avro.

mod support;

use apache_avro::types::Value as Avro;
use support::avro::{decode, field, registry};
use support::kafka::{brokers, Record};
use support::pg::PgFixture;
use support::terminate;

fn consume(topic: &str, count: usize) -> Vec<Record> {
    support::kafka::wait_for_records(topic, count, false)
}

/// [`consume`], failing with the daemon's log.
fn consume_or_log(topic: &str, count: usize, ws: &support::Workspace) -> Vec<Record> {
    std::panic::catch_unwind(|| consume(topic, count))
        .unwrap_or_else(|_| panic!("no {count} records; log:\n{}", ws.log_tail()))
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_changes_reach_kafka_in_avro_with_registered_schemas() {
    let name = format!("avro_pg_{}", std::process::id());
    let fx = PgFixture::new(&name).await;
    fx.client
        .batch_execute(&format!(
            "CREATE TABLE {name}.orders (id bigint PRIMARY KEY, amount numeric(10,2) NOT NULL, note text);
             INSERT INTO {name}.orders VALUES (1, 19.99, 'first');"
        ))
        .await
        .unwrap();
    let config = fx.config(&["orders"], "");
    let text = std::fs::read_to_string(&config).unwrap();
    let file_sink = format!("[pipeline.sink]\nkind = \"file\"\npath = \"out/{name}.jsonl\"\n");
    let sink = format!(
        "[pipeline.sink]\nkind = \"kafka\"\nbrokers = \"{}\"\ncreate_topics = true\ntopic_partitions = 1\n\
         format = {{ kind = \"avro\", registry_url = \"${{CDC_BRIDGE_SCHEMA_REGISTRY_URL}}\" }}\n",
        brokers()
    );
    std::fs::write(&config, text.replace(&file_sink, &sink)).unwrap();
    let mut bridge = fx.spawn(&config);
    let topic = format!("{name}.{name}.orders");
    consume(&topic, 1);
    fx.client
        .batch_execute(&format!(
            "INSERT INTO {name}.orders VALUES (2, -1.28, 'second');
             ALTER TABLE {name}.orders ADD COLUMN extra integer;
             INSERT INTO {name}.orders VALUES (3, 0.5, 'third', 7);
             DELETE FROM {name}.orders WHERE id = 1;"
        ))
        .await
        .unwrap();
    // The snapshot row, two inserts, the delete and its tombstone.
    let records = consume(&topic, 5);
    terminate(&bridge);
    bridge.wait().unwrap();

    let values: Vec<Option<(u32, Avro)>> = records
        .iter()
        .map(|r| r.raw_value.as_deref().map(decode))
        .collect();
    let op = |i: usize| match &values[i] {
        Some((_, v)) => match field(v, "op") {
            Avro::String(op) => op.clone(),
            other => panic!("op {other:?}"),
        },
        None => "tombstone".to_owned(),
    };
    let ops: Vec<String> = (0..records.len()).map(op).collect();
    assert_eq!(
        ops,
        ["r", "c", "c", "d", "tombstone"],
        "log:\n{}",
        fx.ws.log_tail()
    );
    let (first_id, read) = values[0].clone().unwrap();
    let after = field(&read, "after");
    assert_eq!(field(after, "id"), &Avro::Long(1));
    assert_eq!(
        field(after, "amount"),
        &Avro::Decimal(apache_avro::Decimal::from(vec![0x07, 0xcf]))
    );
    assert_eq!(field(after, "note"), &Avro::String("first".into()));
    let (second_id, insert) = values[1].clone().unwrap();
    assert_eq!(second_id, first_id, "the same table schema, the same id");
    assert_eq!(
        field(field(&insert, "after"), "amount"),
        &Avro::Decimal(apache_avro::Decimal::from(vec![0x80]))
    );
    // After ADD COLUMN: a new schema, registered as a new version with its own id.
    let (third_id, altered) = values[2].clone().unwrap();
    assert_ne!(
        third_id, first_id,
        "the altered table has a schema of its own"
    );
    assert_eq!(field(field(&altered, "after"), "extra"), &Avro::Int(7));
    // Keys: Confluent-framed key structs, registered under the key subject.
    let (_, key) = decode(records[3].raw_key.as_deref().unwrap());
    assert_eq!(field(&key, "id"), &Avro::Long(1));
    assert_eq!(
        records[4].raw_key, records[3].raw_key,
        "the tombstone has the delete's key"
    );
    let versions = std::process::Command::new("curl")
        .args([
            "-fsS",
            &format!("{}/subjects/{topic}-value/versions", registry()),
        ])
        .output()
        .unwrap();
    let versions: Vec<u32> = serde_json::from_slice(&versions.stdout).unwrap();
    assert_eq!(
        versions.len(),
        2,
        "two versions of {topic}-value: {versions:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_changes_reach_kafka_in_avro_with_registered_schemas() {
    let ws = support::Workspace::new();
    let table = format!("avro_my_{}", std::process::id());
    let mut conn = support::mysql::connect().await;
    support::mysql::sql(
        &mut conn,
        &format!(
            "DROP TABLE IF EXISTS app.{table};
             CREATE TABLE app.{table} (id int unsigned PRIMARY KEY, small tinyint,
               amount decimal(10,2), at datetime(3), ts timestamp(6) NULL, tm time,
               size enum('s','m'), tags set('a','b'), flags bit(16), y year, doc json,
               big bigint unsigned, f double, note varchar(20), raw varbinary(8))"
        ),
    )
    .await;
    let config = support::mysql::pipeline(&ws, &table, &table, "");
    let text = std::fs::read_to_string(&config).unwrap();
    let file_sink = "[pipeline.sink]\nkind = \"file\"\npath = \"out.jsonl\"\n";
    let sink = format!(
        "[pipeline.sink]\nkind = \"kafka\"\nbrokers = \"{}\"\ncreate_topics = true\ntopic_partitions = 1\n\
         topic = \"{{pipeline}}.{{database}}.{{table}}\"\n\
         format = {{ kind = \"avro\", registry_url = \"${{CDC_BRIDGE_SCHEMA_REGISTRY_URL}}\" }}\n",
        brokers()
    );
    std::fs::write(&config, text.replace(file_sink, &sink)).unwrap();
    let mut bridge = support::mysql::start_streaming(&ws, &config);
    support::mysql::sql(
        &mut conn,
        &format!(
            "SET time_zone = '+00:00';
             INSERT INTO app.{table} VALUES (4000000000, -3, 19.99, '2025-11-22 03:10:00.120',
               '2025-11-22 03:10:00.120000', '-25:00:00', 'm', 'a,b', b'0000000100000010', 2025,
               '{{\"k\": [1, 2]}}', 9223372036854775807, 0.25, 'héllo', x'00ff');
             ALTER TABLE app.{table} ADD COLUMN extra int;
             UPDATE app.{table} SET small = 4, extra = 9 WHERE id = 4000000000;
             DELETE FROM app.{table} WHERE id = 4000000000;"
        ),
    )
    .await;
    let topic = format!("{table}.app.{table}");
    let records = consume_or_log(&topic, 4, &ws);
    terminate(&bridge);
    bridge.wait().unwrap();

    let values: Vec<(u32, Avro)> = records[..3]
        .iter()
        .map(|r| decode(r.raw_value.as_deref().unwrap()))
        .collect();
    assert_eq!(records[3].raw_value, None, "a tombstone after the delete");
    let ops: Vec<&Avro> = values.iter().map(|(_, v)| field(v, "op")).collect();
    assert_eq!(
        ops,
        [
            &Avro::String("c".into()),
            &Avro::String("u".into()),
            &Avro::String("d".into())
        ],
        "log:\n{}",
        ws.log_tail()
    );
    let after = field(&values[0].1, "after");
    let expected = [
        ("id", Avro::Long(4_000_000_000)),
        ("small", Avro::Int(-3)),
        (
            "amount",
            Avro::Decimal(apache_avro::Decimal::from(vec![0x07, 0xcf])),
        ),
        ("at", Avro::Long(1_763_781_000_120)),
        ("ts", Avro::String("2025-11-22T03:10:00.120000Z".into())),
        ("tm", Avro::Long(-90_000_000_000)),
        ("size", Avro::String("m".into())),
        ("tags", Avro::String("a,b".into())),
        ("flags", Avro::Bytes(vec![0x02, 0x01])),
        ("y", Avro::Int(2025)),
        ("doc", Avro::String("{\"k\": [1, 2]}".into())),
        ("big", Avro::Long(i64::MAX)),
        ("f", Avro::Double(0.25)),
        ("note", Avro::String("héllo".into())),
        ("raw", Avro::Bytes(vec![0x00, 0xff])),
    ];
    for (name, value) in &expected {
        assert_eq!(field(after, name), value, "column {name}");
    }
    let source = field(&values[0].1, "source");
    assert_eq!(field(source, "connector"), &Avro::String("mysql".into()));
    assert_eq!(field(source, "table"), &Avro::String(table.clone()));
    // ADD COLUMN: the update carries a new schema id, and the new column.
    assert_ne!(values[1].0, values[0].0, "a new version after ALTER TABLE");
    assert_eq!(
        field(field(&values[1].1, "before"), "small"),
        &Avro::Int(-3)
    );
    assert_eq!(field(field(&values[1].1, "after"), "extra"), &Avro::Int(9));
    let (_, key) = decode(records[2].raw_key.as_deref().unwrap());
    assert_eq!(field(&key, "id"), &Avro::Long(4_000_000_000));
}

/// The registry's HTTPS front that requires `user`/`password` (tests/support/registry_gate.py).
struct Gate {
    child: std::process::Child,
    port: u16,
}

impl Gate {
    fn start(user: &str, password: &str) -> Gate {
        use std::io::BufRead as _;
        let ca = std::env::var("CDC_BRIDGE_TEST_CA").expect("CDC_BRIDGE_TEST_CA");
        let tls = std::path::Path::new(&ca).parent().unwrap();
        let mut child = std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/support/registry_gate.py"
            ))
            .arg(tls.join("server.pem"))
            .arg(tls.join("server.key"))
            .args([user, password, &registry()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the gate's port");
        Gate { child, port }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A registry behind TLS and basic authentication: `check` reports a wrong password or an
/// unknown CA with what to fix, and with both right, records are registered and framed.
#[tokio::test(flavor = "multi_thread")]
async fn a_registry_behind_tls_and_basic_auth_is_reached_with_its_ca_and_credentials() {
    let gate = Gate::start("cdc", "registry-secret");
    let name = format!("avro_auth_{}", std::process::id());
    let fx = PgFixture::new(&name).await;
    fx.client
        .batch_execute(&format!(
            "CREATE TABLE {name}.orders (id bigint PRIMARY KEY, note text);
             INSERT INTO {name}.orders VALUES (1, 'first');"
        ))
        .await
        .unwrap();
    let config = fx.config(&["orders"], "");
    let text = std::fs::read_to_string(&config).unwrap();
    let file_sink = format!("[pipeline.sink]\nkind = \"file\"\npath = \"out/{name}.jsonl\"\n");
    let ca = std::env::var("CDC_BRIDGE_TEST_CA").unwrap();
    let with_registry = |options: &str| {
        let sink = format!(
            "[pipeline.sink]\nkind = \"kafka\"\nbrokers = \"{}\"\ncreate_topics = true\ntopic_partitions = 1\n\
             format = {{ kind = \"avro\", registry_url = \"https://127.0.0.1:{}\", {options} }}\n",
            brokers(),
            gate.port
        );
        std::fs::write(&config, text.replace(&file_sink, &sink)).unwrap();
        let out = fx.ws.run(&["check", "--config", config.to_str().unwrap()]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let wrong = with_registry(&format!(
        "registry_username = \"cdc\", registry_password = \"wrong\", registry_ca = \"{ca}\""
    ));
    assert!(
        wrong.contains("FAIL") && wrong.contains("refused the credentials (401)"),
        "{wrong}"
    );
    let unknown_ca =
        with_registry("registry_username = \"cdc\", registry_password = \"registry-secret\"");
    assert!(
        unknown_ca.contains("FAIL") && unknown_ca.contains("TLS"),
        "{unknown_ca}"
    );
    let right = with_registry(&format!(
        "registry_username = \"cdc\", registry_password = \"registry-secret\", registry_ca = \"{ca}\""
    ));
    assert!(
        !right.contains("FAIL") && right.contains("answers and accepts the credentials"),
        "{right}"
    );
    let mut bridge = fx.spawn(&config);
    let topic = format!("{name}.{name}.orders");
    let records = consume(&topic, 1);
    terminate(&bridge);
    bridge.wait().unwrap();
    let (_, read) = decode(records[0].raw_value.as_deref().unwrap());
    assert_eq!(
        field(field(&read, "after"), "note"),
        &Avro::String("first".into())
    );
}

/// The Confluent registry unreachable while a table changes: nothing is written or
/// acknowledged until it answers again, then every change arrives, in order, once.
#[tokio::test(flavor = "multi_thread")]
async fn a_registry_outage_holds_the_changes_back_and_loses_none() {
    let proxy = support::kinesis::TcpProxy::start(registry().trim_start_matches("http://")).await;
    let name = format!("avro_out_{}", std::process::id());
    let fx = PgFixture::new(&name).await;
    fx.client
        .batch_execute(&format!(
            "CREATE TABLE {name}.orders (id bigint PRIMARY KEY, note text);
             INSERT INTO {name}.orders VALUES (1, 'first');"
        ))
        .await
        .unwrap();
    let config = fx.config(&["orders"], "");
    let text = std::fs::read_to_string(&config).unwrap();
    let file_sink = format!("[pipeline.sink]\nkind = \"file\"\npath = \"out/{name}.jsonl\"\n");
    let sink = format!(
        "[pipeline.sink]\nkind = \"kafka\"\nbrokers = \"{}\"\ncreate_topics = true\ntopic_partitions = 1\n\
         format = {{ kind = \"avro\", registry_url = \"{}\" }}\n",
        brokers(),
        proxy.url()
    );
    std::fs::write(&config, text.replace(&file_sink, &sink)).unwrap();
    let mut bridge = fx.spawn(&config);
    let topic = format!("{name}.{name}.orders");
    consume(&topic, 1);
    proxy.cut();
    // A new table schema needs the registry: these changes wait for it.
    fx.client
        .batch_execute(&format!(
            "ALTER TABLE {name}.orders ADD COLUMN extra integer;
             INSERT INTO {name}.orders VALUES (2, 'second', 2);
             UPDATE {name}.orders SET extra = 1 WHERE id = 1;"
        ))
        .await
        .unwrap();
    let log = fx.ws.path("bridge.log");
    support::wait_until(
        std::time::Duration::from_secs(60),
        "the outage in the log",
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("is unreachable")
        },
    );
    assert_eq!(consume(&topic, 1).len(), 1, "nothing while cut");
    proxy.restore();
    let records = consume(&topic, 3);
    terminate(&bridge);
    bridge.wait().unwrap();
    assert_eq!(records.len(), 3, "each change once");
    let rows: Vec<(Avro, Avro)> = records
        .iter()
        .map(|r| {
            let (_, value) = decode(r.raw_value.as_deref().unwrap());
            (
                field(&value, "op").clone(),
                field(field(&value, "after"), "id").clone(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (Avro::String("r".into()), Avro::Long(1)),
            (Avro::String("c".into()), Avro::Long(2)),
            (Avro::String("u".into()), Avro::Long(1)),
        ]
    );
}
