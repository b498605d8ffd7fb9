//! `format = { kind = "avro", registry = "glue" }` end to end: real Postgres changes through
//! the daemon into Kinesis (kinesalite) and Kafka (tansu), their schemas registered with the
//! AWS Glue Schema Registry API (moto); every record decoded by AWS's own Python deserializer
//! (aws-glue-schema-registry), which fetches the schema version the framing names.

mod support;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use support::kinesis::{client, create_stream, read_all, stream_name, wait_active, TcpProxy};
use support::pg::PgFixture;
use support::{terminate, wait_until};

fn glue_endpoint() -> String {
    std::env::var("CDC_BRIDGE_GLUE_ENDPOINT")
        .expect("CDC_BRIDGE_GLUE_ENDPOINT is not set: run the tests with scripts/test.sh")
}

fn python() -> String {
    std::env::var("CDC_BRIDGE_GLUE_PYTHON").expect("CDC_BRIDGE_GLUE_PYTHON is not set")
}

/// Runs `script` with boto3's Glue client as `glue`; returns what it prints, parsed as JSON.
fn glue(script: &str) -> Value {
    let program = format!(
        "import boto3, json, os\n\
         glue = boto3.client('glue', endpoint_url=os.environ['CDC_BRIDGE_GLUE_ENDPOINT'], region_name='us-east-1')\n\
         {script}"
    );
    let out = Command::new(python())
        .args(["-c", &program])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// The registry the glue service created for the tests.
fn test_registry() -> String {
    std::env::var("CDC_BRIDGE_GLUE_REGISTRY").expect("CDC_BRIDGE_GLUE_REGISTRY is not set")
}

/// A registry name no run created (moto keeps its registries while it runs, and process ids
/// come round again).
fn unique_registry(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("reg-{name}-{nanos}")
}

/// The number of versions of `schema` (its latest version's number; versions are numbered
/// from 1 and never deleted here).
fn schema_versions(registry: &str, schema: &str) -> u64 {
    let latest = glue(&format!(
        "print(json.dumps(glue.get_schema(SchemaId={{'RegistryName': '{registry}', 'SchemaName': '{schema}'}})['LatestSchemaVersion']))"
    ));
    latest.as_u64().expect("a version number")
}

/// Decodes Glue-framed records with aws-glue-schema-registry: `{data, schema, version}` each.
fn decode(records: &[Option<&[u8]>]) -> Vec<Value> {
    let input: Vec<Value> = records
        .iter()
        .map(|r| match r {
            Some(bytes) => json!(base64::engine::general_purpose::STANDARD.encode(bytes)),
            None => Value::Null,
        })
        .collect();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/glue_decode.py");
    let mut child = Command::new(python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(Value::Array(input).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "decoding: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

/// Replaces the fixture's file sink with `sink`.
fn with_sink(fx: &PgFixture, name: &str, sink: &str) -> std::path::PathBuf {
    let config = fx.config(&["orders"], "");
    let text = std::fs::read_to_string(&config).unwrap();
    let file_sink = format!("[pipeline.sink]\nkind = \"file\"\npath = \"out/{name}.jsonl\"\n");
    std::fs::write(&config, text.replace(&file_sink, sink)).unwrap();
    config
}

/// A new stream, and the fixture's pipeline writing to it in Avro with the Glue registry
/// `registry` at `glue_url`; `options` adds format options (`, compression = "zlib"`).
async fn kinesis_pipeline(
    fx: &PgFixture,
    name: &str,
    registry: &str,
    glue_url: &str,
    options: &str,
) -> (String, std::path::PathBuf) {
    let stream = stream_name("glue");
    let kinesis = client().await;
    create_stream(&kinesis, &stream, 1).await;
    wait_active(&kinesis, &stream).await;
    let sink = format!(
        "[pipeline.sink]\nkind = \"kinesis\"\nstream = \"{stream}\"\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\n\
         format = {{ kind = \"avro\", registry = \"glue\", registry_name = \"{registry}\", endpoint_url = \"{glue_url}\", region = \"us-east-1\"{options} }}\n",
        support::kinesis::endpoint(),
    );
    let config = with_sink(fx, name, &sink);
    (stream, config)
}

async fn kinesis_data(stream: &str) -> Vec<Vec<u8>> {
    read_all(&client().await, stream)
        .await
        .into_iter()
        .map(|r| r.data)
        .collect()
}

fn wait_for_kinesis(stream: &str, count: usize, fx: &PgFixture) -> Vec<Vec<u8>> {
    let runtime = tokio::runtime::Handle::current();
    let mut got = Vec::new();
    wait_until(Duration::from_secs(60), &format!("{count} records"), || {
        got = tokio::task::block_in_place(|| runtime.block_on(kinesis_data(stream)));
        if got.len() > count {
            panic!("{} records, expected {count}", got.len());
        }
        got.len() == count
    });
    assert_eq!(got.len(), count, "log:\n{}", fx.ws.log_tail());
    got
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_changes_reach_kinesis_in_glue_avro_with_a_version_per_table_change() {
    let name = format!("glue_kin_{}", std::process::id());
    let registry = test_registry();
    let fx = PgFixture::new(&name).await;
    fx.client
        .batch_execute(&format!(
            "CREATE TABLE {name}.orders (id bigint PRIMARY KEY, amount numeric(10,2), note text,
               placed timestamp(3), paid timestamptz(6), d date, tags text[], doc jsonb, u uuid,
               t time, flag boolean, bits bit(10), n numeric, blob bytea, r real);
             INSERT INTO {name}.orders VALUES (1, 19.99, 'first', '2025-11-22 03:10:00.12',
               '2025-11-22 03:10:00.12+00', '2025-11-22', '{{a,b}}', '{{\"k\": 1}}',
               'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '04:05:06.789', true, B'1100000011',
               1.5, '\\xdead01', 2.5);"
        ))
        .await
        .unwrap();
    let (stream, config) = kinesis_pipeline(
        &fx,
        &name,
        &registry,
        &glue_endpoint(),
        ", compression = \"zlib\"",
    )
    .await;
    let mut bridge = fx.spawn(&config);
    wait_for_kinesis(&stream, 1, &fx);
    fx.client
        .batch_execute(&format!(
            "INSERT INTO {name}.orders (id, amount, note) VALUES (2, -1.28, 'second');
             ALTER TABLE {name}.orders ADD COLUMN extra integer;
             INSERT INTO {name}.orders (id, amount, extra) VALUES (3, 0.5, 7);
             DELETE FROM {name}.orders WHERE id = 1;"
        ))
        .await
        .unwrap();
    let records = wait_for_kinesis(&stream, 4, &fx);
    terminate(&bridge);
    bridge.wait().unwrap();

    for record in &records {
        assert_eq!(&record[..2], &[3, 5], "Glue header version 3, zlib");
    }
    let decoded = decode(&records.iter().map(|r| Some(&r[..])).collect::<Vec<_>>());
    let ops: Vec<&Value> = decoded.iter().map(|d| &d["data"]["op"]).collect();
    assert_eq!(ops, ["r", "c", "c", "d"]);
    assert_eq!(
        decoded[0]["data"]["after"],
        json!({
            "id": 1, "amount": "19.99", "note": "first", "placed": 1_763_781_000_120_i64,
            "paid": "2025-11-22T03:10:00.120000Z", "d": 20_414, "tags": ["a", "b"],
            "doc": "{\"k\": 1}", "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "t": 14_706_789_000_i64, "flag": true, "bits": "AwM=",
            "n": {"scale": 1, "value": "Dw=="}, "blob": "3q0B", "r": 2.5
        }),
        "the snapshot row, decoded by AWS's deserializer"
    );
    assert_eq!(
        decoded[0]["data"]["source"]["table"], "orders",
        "{:#}",
        decoded[0]
    );
    assert_eq!(decoded[1]["data"]["after"]["amount"], "-1.28");
    assert_eq!(decoded[2]["data"]["after"]["extra"], 7);
    assert_eq!(decoded[3]["data"]["before"]["id"], 1);
    assert_eq!(
        decoded[0]["schema"],
        format!("{name}.{name}.orders.Envelope")
    );
    assert_eq!(decoded[0]["version"], decoded[1]["version"]);
    assert_ne!(
        decoded[1]["version"], decoded[2]["version"],
        "ADD COLUMN registers a new version"
    );
    assert_eq!(decoded[2]["version"], decoded[3]["version"]);
    assert_eq!(schema_versions(&registry, &format!("{stream}-value")), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_changes_reach_kafka_in_glue_avro_keys_and_values() {
    let name = format!("glue_kafka_{}", std::process::id());
    let registry = test_registry();
    let fx = PgFixture::new(&name).await;
    fx.client
        .batch_execute(&format!(
            "CREATE TABLE {name}.orders (id bigint PRIMARY KEY, note text);
             INSERT INTO {name}.orders VALUES (1, 'first');"
        ))
        .await
        .unwrap();
    let sink = format!(
        "[pipeline.sink]\nkind = \"kafka\"\nbrokers = \"{}\"\ncreate_topics = true\ntopic_partitions = 1\n\
         format = {{ kind = \"avro\", registry = \"glue\", registry_name = \"{registry}\", endpoint_url = \"{}\", region = \"us-east-1\" }}\n",
        support::kafka::brokers(),
        glue_endpoint()
    );
    let config = with_sink(&fx, &name, &sink);
    let mut bridge = fx.spawn(&config);
    let topic = format!("{name}.{name}.orders");
    support::kafka::wait_for_records(&topic, 1, false);
    fx.sql(&format!("DELETE FROM {name}.orders WHERE id = 1"))
        .await;
    let records = support::kafka::wait_for_records(&topic, 3, false);
    terminate(&bridge);
    bridge.wait().unwrap();

    assert_eq!(records[0].raw_value.as_deref().unwrap()[..2], [3, 0]);
    let values = decode(
        &records
            .iter()
            .map(|r| r.raw_value.as_deref())
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        values[0]["data"]["after"],
        json!({"id": 1, "note": "first"})
    );
    assert_eq!(values[1]["data"]["op"], "d");
    assert_eq!(values[2], Value::Null, "the tombstone");
    let keys = decode(
        &records
            .iter()
            .map(|r| r.raw_key.as_deref())
            .collect::<Vec<_>>(),
    );
    assert_eq!(keys[0]["data"], json!({"id": 1}));
    assert_eq!(keys[0]["schema"], format!("{name}.{name}.orders.Key"));
    assert_eq!(keys[2], keys[1], "the tombstone has the delete's key");
    assert_eq!(schema_versions(&registry, &format!("{topic}-key")), 1);
    assert_eq!(schema_versions(&registry, &format!("{topic}-value")), 1);
}

/// The registry unreachable while a table changes: nothing is written or acknowledged until
/// it answers again, then every change arrives, in order.
#[tokio::test(flavor = "multi_thread")]
async fn a_glue_outage_holds_the_changes_back_and_loses_none() {
    let name = format!("glue_out_{}", std::process::id());
    let registry = test_registry();
    let proxy = TcpProxy::start(glue_endpoint().trim_start_matches("http://")).await;
    let fx = PgFixture::new(&name).await;
    fx.client
        .batch_execute(&format!(
            "CREATE TABLE {name}.orders (id bigint PRIMARY KEY, note text);
             INSERT INTO {name}.orders VALUES (1, 'first');"
        ))
        .await
        .unwrap();
    let (stream, config) = kinesis_pipeline(&fx, &name, &registry, &proxy.url(), "").await;
    let mut bridge = fx.spawn(&config);
    wait_for_kinesis(&stream, 1, &fx);
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
    wait_until(Duration::from_secs(60), "the outage in the log", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("will retry")
    });
    assert_eq!(kinesis_data(&stream).await.len(), 1, "nothing while cut");
    proxy.restore();
    let records = wait_for_kinesis(&stream, 3, &fx);
    terminate(&bridge);
    bridge.wait().unwrap();
    let decoded = decode(&records.iter().map(|r| Some(&r[..])).collect::<Vec<_>>());
    let rows: Vec<(&Value, &Value)> = decoded
        .iter()
        .map(|d| (&d["data"]["op"], &d["data"]["after"]["id"]))
        .collect();
    assert_eq!(
        rows,
        [
            (&json!("r"), &json!(1)),
            (&json!("c"), &json!(2)),
            (&json!("u"), &json!(1))
        ]
    );
}

/// `check` reads the registry: a missing one fails with the command that creates it.
#[tokio::test(flavor = "multi_thread")]
async fn check_says_whether_the_glue_registry_exists() {
    let name = format!("glue_chk_{}", std::process::id());
    let fx = PgFixture::new(&name).await;
    fx.sql(&format!(
        "CREATE TABLE {name}.orders (id bigint PRIMARY KEY)"
    ))
    .await;
    let check = |registry: &str| {
        let sink = format!(
            "[pipeline.sink]\nkind = \"kafka\"\nbrokers = \"{}\"\n\
             format = {{ kind = \"avro\", registry = \"glue\", registry_name = \"{registry}\", endpoint_url = \"{}\", region = \"us-east-1\" }}\n",
            support::kafka::brokers(),
            glue_endpoint()
        );
        let config = with_sink(&fx, &name, &sink);
        let out = fx.ws.run(&["check", "--config", config.to_str().unwrap()]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let registry = unique_registry(&name);
    let missing = check(&registry);
    assert!(
        missing.contains("FAIL")
            && missing.contains(&format!(
                "aws glue create-registry --registry-name {registry}"
            )),
        "{missing}"
    );
    let registry = test_registry();
    let present = check(&registry);
    assert!(
        !present.contains("FAIL")
            && present.contains(&format!(
                "AWS Glue Schema Registry {registry} exists and the credentials can read it"
            )),
        "{present}"
    );
}
