//! `format = { kind = "avro", ... }` end to end: real Postgres changes through the daemon
//! into a Kafka-protocol broker (tansu), their schemas registered with a Confluent-compatible
//! schema registry (rivven-schema); every record read back by fetching its schema by the id
//! its framing carries and decoding the body with apache-avro.

mod support;

use apache_avro::types::Value as Avro;
use support::kafka::{brokers, Record};
use support::pg::PgFixture;
use support::terminate;

fn registry() -> String {
    std::env::var("CDC_BRIDGE_SCHEMA_REGISTRY_URL")
        .expect("CDC_BRIDGE_SCHEMA_REGISTRY_URL is not set: run the tests with scripts/test.sh")
}

fn consume(topic: &str, count: usize) -> Vec<Record> {
    support::kafka::wait_for_records(topic, count, false)
}

/// The registry's schema of `id`, as the registry serves it.
fn schema_of(id: u32) -> apache_avro::Schema {
    let url = format!("{}/schemas/ids/{id}", registry());
    let output = std::process::Command::new("curl")
        .args(["-fsS", &url])
        .output()
        .expect("curl");
    assert!(
        output.status.success(),
        "GET {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    apache_avro::Schema::parse_str(answer["schema"].as_str().unwrap()).expect("an Avro schema")
}

/// Confluent's framing read: magic byte 0, the id, then the body decoded by the registry's
/// schema of that id. Returns the id and the value.
fn decode(framed: &[u8]) -> (u32, Avro) {
    assert_eq!(framed[0], 0, "magic byte");
    let id = u32::from_be_bytes(framed[1..5].try_into().unwrap());
    let schema = schema_of(id);
    let mut body = &framed[5..];
    let value = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
        .build()
        .unwrap()
        .read_value(&mut body)
        .expect("the body fits its schema");
    assert!(body.is_empty(), "bytes left after the body");
    (id, value)
}

fn field<'a>(record: &'a Avro, name: &str) -> &'a Avro {
    let Avro::Record(fields) = record else {
        panic!("not a record: {record:?}");
    };
    let value = &fields.iter().find(|(n, _)| n == name).unwrap().1;
    match value {
        Avro::Union(_, inner) => inner,
        other => other,
    }
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
