//! DynamoDB items through the Debezium (with schemas), DMS and Avro formats: every attribute
//! type (S, N, B, BOOL, NULL, SS, NS, BS, L, M) of a real DynamoDB Local stream, each record
//! checked against the mapping the README documents for DynamoDB, Avro records decoded by
//! apache-avro with the schema the registry holds.

mod support;

use std::time::Duration;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, StreamViewType};
use serde_json::{json, Value};
use support::avro::{decode, field};
use support::dynamodb::{client, create_table, endpoint, table_name};
use support::formats::conforms;
use support::{read_records, terminate, wait_until, Workspace};

fn pipeline(name: &str, table: &str, sink: &str) -> String {
    format!(
        "[[pipeline]]\nname = \"{name}\"\n[pipeline.source]\nkind = \"dynamodb\"\ntable = \"{table}\"\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\npoll_interval_ms = 200\n\
         [pipeline.sink]\n{sink}\n[pipeline.batch]\nlinger_ms = 5\n",
        endpoint()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attribute_type_in_the_debezium_dms_and_avro_formats() {
    let db = client().await;
    let table = table_name("formats");
    create_table(&db, &table, false, StreamViewType::NewAndOldImages).await;
    let topic = format!("ddb-avro-{table}");
    let ws = Workspace::new();
    let config = ws.config(&format!(
        "{}\n{}\n{}",
        pipeline(
            "ddb-dbz",
            &table,
            "kind = \"file\"\npath = \"debezium.jsonl\"\nformat = { kind = \"debezium\", schemas = true }"
        ),
        pipeline("ddb-dms", &table, "kind = \"file\"\npath = \"dms.jsonl\"\nformat = \"dms\""),
        pipeline(
            "ddb-avro",
            &table,
            &format!(
                "kind = \"kafka\"\nbrokers = \"{}\"\ncreate_topics = true\ntopic_partitions = 1\ntopic = \"{topic}\"\n\
                 format = {{ kind = \"avro\", registry_url = \"{}\" }}",
                support::kafka::brokers(),
                support::avro::registry()
            )
        ),
    ));
    let mut bridge = ws.spawn(&["run", "--config", config.to_str().unwrap()]);
    db.put_item()
        .table_name(&table)
        .item("pk", AttributeValue::S("o1".into()))
        .item("n", AttributeValue::N("2.5".into()))
        .item("b", AttributeValue::B(Blob::new(vec![1, 2])))
        .item("flag", AttributeValue::Bool(true))
        .item("nothing", AttributeValue::Null(true))
        .item("ss", AttributeValue::Ss(vec!["a".into()]))
        .item("ns", AttributeValue::Ns(vec!["7".into()]))
        .item("bs", AttributeValue::Bs(vec![Blob::new(vec![255])]))
        .item(
            "l",
            AttributeValue::L(vec![
                AttributeValue::S("x".into()),
                AttributeValue::N("1".into()),
            ]),
        )
        .item(
            "m",
            AttributeValue::M([("k".to_owned(), AttributeValue::S("v".into()))].into()),
        )
        .send()
        .await
        .unwrap();
    db.delete_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("o1".into()))
        .send()
        .await
        .unwrap();
    let debezium_path = ws.path("debezium.jsonl");
    let dms_path = ws.path("dms.jsonl");
    wait_until(Duration::from_secs(60), "two records per file", || {
        read_records(&debezium_path).len() >= 2 && read_records(&dms_path).len() >= 2
    });
    let avro = support::kafka::wait_for_records(&topic, 2, false);
    terminate(&bridge);
    bridge.wait().unwrap();

    // Debezium: every value fits its field's Connect schema, and the simple ones are exact.
    let debezium = read_records(&debezium_path);
    let insert = &debezium[0];
    assert_eq!(insert["payload"]["op"], "c", "{insert:#}");
    let after = &insert["payload"]["after"];
    let after_schema = insert["schema"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == "after")
        .unwrap();
    for field in after_schema["fields"].as_array().unwrap() {
        let name = field["field"].as_str().unwrap();
        conforms(&after[name], field).unwrap_or_else(|why| panic!("{name}: {why}\n{insert:#}"));
    }
    assert_eq!(after["pk"], "o1");
    assert_eq!(after["n"], json!({"scale": 1, "value": "GQ=="}));
    assert_eq!(after["b"], "AQI=");
    assert_eq!(after["flag"], true);
    assert_eq!(after["nothing"], Value::Null);
    assert_eq!(after["ss"], json!(["a"]));
    assert_eq!(after["bs"], json!(["/w=="]));
    let doc = |v: &Value| serde_json::from_str::<Value>(v.as_str().unwrap()).unwrap();
    assert_eq!(doc(&after["m"]), json!({"k": "v"}));
    assert_eq!(doc(&after["l"]).as_array().unwrap().len(), 2);
    assert_eq!(debezium[1]["payload"]["op"], "d");
    assert_eq!(debezium[1]["payload"]["before"]["pk"], "o1");
    assert_eq!(insert["payload"]["source"]["connector"], "dynamodb");

    // DMS: every attribute in `data`.
    let dms = read_records(&dms_path);
    assert_eq!(dms[0]["metadata"]["operation"], "insert", "{:#}", dms[0]);
    let data = dms[0]["data"].as_object().unwrap();
    for name in [
        "pk", "n", "b", "flag", "nothing", "ss", "ns", "bs", "l", "m",
    ] {
        assert!(data.contains_key(name), "dms data lacks {name}: {data:?}");
    }
    assert_eq!(data["pk"], "o1");
    assert_eq!(data["flag"], true);
    assert_eq!(dms[1]["metadata"]["operation"], "delete");

    // Avro: decoded by its registered schema.
    let (_, record) = decode(avro[0].raw_value.as_deref().unwrap());
    let after = field(&record, "after");
    use apache_avro::types::Value as Avro;
    assert_eq!(field(after, "pk"), &Avro::String("o1".into()));
    assert_eq!(field(after, "b"), &Avro::Bytes(vec![1, 2]));
    assert_eq!(field(after, "flag"), &Avro::Boolean(true));
    let (_, deleted) = decode(avro[1].raw_value.as_deref().unwrap());
    assert_eq!(field(&deleted, "op"), &Avro::String("d".into()));
}
