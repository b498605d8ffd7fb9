use chrono::NaiveDate;
use serde_json::{json, Value as Json};

use super::*;
use crate::envelope::{Decimal, Json as JsonDoc, MysqlPosition, SourceKind};
use crate::format::fixtures::{postgres_event, row};

/// The shared Postgres event, without a table schema: DMS writes values by their kinds.
fn event(op: Op, before: Option<Row>, after: Option<Row>) -> ChangeEvent {
    let mut event = postgres_event(op, before, after);
    event.source.table_schema = None;
    event
}

fn full_row(note: &str) -> Row {
    row(&[
        ("id", Value::Int(42)),
        ("amount", Value::Decimal(Decimal::parse("19.990").unwrap())),
        ("note", Value::Text(note.into())),
        ("blob", Value::Bytes(vec![0xde, 0xad, 0x01])),
        ("doc", Value::Json(JsonDoc::parse(r#"{"k": 1}"#).unwrap())),
        (
            "day",
            Value::Date(NaiveDate::from_ymd_opt(2025, 11, 22).unwrap()),
        ),
        ("gone", Value::Null),
    ])
}

fn value(format: &DmsFormat, event: &ChangeEvent) -> Json {
    let mut out = Vec::new();
    format.encode_value(event, &mut out).unwrap();
    serde_json::from_slice(&out).unwrap()
}

fn key(format: &DmsFormat, event: &ChangeEvent, shared: bool) -> String {
    let mut out = Vec::new();
    if shared {
        format.encode_table_key(event, &mut out).unwrap();
    } else {
        format.encode_key(event, &mut out).unwrap();
    }
    String::from_utf8(out).unwrap()
}

fn defaults() -> DmsFormat {
    DmsFormat::new(DmsOptions::default())
}

#[test]
fn an_insert_is_dms_data_and_metadata() {
    let insert = event(Op::Insert, None, Some(full_row("gift")));
    assert_eq!(
        value(&defaults(), &insert),
        json!({
            "data": {"id": 42, "amount": 19.990, "note": "gift", "blob": "0xDEAD01",
                     "doc": "{\"k\": 1}", "day": "2025-11-22", "gone": null},
            "metadata": {
                "timestamp": "2025-11-22T03:10:00.123000Z",
                "record-type": "data",
                "operation": "insert",
                "partition-key-type": "primary-key",
                "schema-name": "public",
                "table-name": "orders",
                "transaction-id": 748
            }
        })
    );
    let mut text = Vec::new();
    defaults().encode_value(&insert, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains(r#""amount":19.990"#),
        "decimals keep their digits: {text}"
    );
    assert!(text.starts_with(r#"{"data":"#) && text.contains(r#","metadata":{"timestamp":"#));
}

#[test]
fn snapshot_rows_are_loads_and_deletes_carry_the_row_before() {
    let format = defaults();
    let load = value(&format, &event(Op::Snapshot, None, Some(full_row("a"))));
    assert_eq!(load["metadata"]["operation"], "load");
    assert!(load["metadata"].get("transaction-id").is_none(), "{load}");
    let delete = value(
        &format,
        &event(Op::Delete, Some(row(&[("id", Value::Int(42))])), None),
    );
    assert_eq!(delete["metadata"]["operation"], "delete");
    assert_eq!(delete["data"], json!({"id": 42}));
}

#[test]
fn a_truncate_is_a_control_record() {
    let truncate = value(&defaults(), &event(Op::Truncate, None, None));
    assert_eq!(truncate["control"], json!({}));
    assert!(truncate.get("data").is_none());
    assert_eq!(
        (
            &truncate["metadata"]["record-type"],
            &truncate["metadata"]["operation"]
        ),
        (&json!("control"), &json!("truncate-table"))
    );
    assert_eq!(
        key(&defaults(), &event(Op::Truncate, None, None), false),
        "shop.public.orders"
    );
}

#[test]
fn the_before_image_holds_the_key_or_every_column_under_its_field() {
    let update = event(Op::Update, Some(full_row("old")), Some(full_row("new")));
    assert!(value(&defaults(), &update).get("before-image").is_none());
    let pk_only = DmsFormat::new(DmsOptions {
        before_image: BeforeImage::PkOnly,
        ..DmsOptions::default()
    });
    assert_eq!(value(&pk_only, &update)["before-image"], json!({"id": 42}));
    let all = DmsFormat::new(DmsOptions {
        before_image: BeforeImage::All,
        before_image_field: "BI".to_owned(),
        ..DmsOptions::default()
    });
    let record = value(&all, &update);
    assert_eq!(record["BI"]["note"], "old");
    assert_eq!(record["data"]["note"], "new");
    let insert = event(Op::Insert, None, Some(full_row("x")));
    assert!(
        value(&all, &insert).get("BI").is_none(),
        "only updates have one"
    );
}

#[test]
fn partition_keys_follow_dms_settings() {
    let insert = event(Op::Insert, None, Some(full_row("x")));
    assert_eq!(key(&defaults(), &insert, false), "42");
    assert_eq!(key(&defaults(), &insert, true), "public.orders.42");
    let with_table = DmsFormat::new(DmsOptions {
        partition_include_schema_table: true,
        include_partition_value: true,
        ..DmsOptions::default()
    });
    assert_eq!(key(&with_table, &insert, false), "public.orders.42");
    assert_eq!(
        value(&with_table, &insert)["metadata"]["partition-key-value"],
        "public.orders.42"
    );
    let schema_table = DmsFormat::new(DmsOptions {
        partition_key_type: PartitionKeyType::SchemaTable,
        ..DmsOptions::default()
    });
    assert_eq!(key(&schema_table, &insert, true), "public.orders");
    assert_eq!(
        value(&schema_table, &insert)["metadata"]["partition-key-type"],
        "schema-table"
    );
}

#[test]
fn mysql_rows_name_the_database_and_transaction_details_add_the_position() {
    let mut insert = event(Op::Insert, None, Some(full_row("x")));
    insert.source.connector = SourceKind::Mysql;
    insert.source.schema = None;
    insert.source.position = SourcePosition::Mysql(MysqlPosition {
        file: "binlog.000003".into(),
        pos: 1_234,
        row: 0,
        server_id: 11,
        gtid: None,
    });
    let details = DmsFormat::new(DmsOptions {
        include_transaction_details: true,
        no_hex_prefix: true,
        ..DmsOptions::default()
    });
    let record = value(&details, &insert);
    let metadata = &record["metadata"];
    assert_eq!(metadata["schema-name"], "app");
    assert_eq!(metadata["stream-position"], "binlog.000003:1234");
    assert_eq!(metadata["commit-timestamp"], "2025-11-22T03:10:00.123000Z");
    assert_eq!(record["data"]["blob"], "DEAD01");
}
