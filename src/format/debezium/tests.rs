use std::sync::Arc;

use serde_json::{json, Value as Json};

use super::*;
use crate::envelope::{ColumnType, Decimal, Op, Row, Value};
use crate::format::fixtures::{
    column, dynamodb_event, full_row, mysql_event, orders_schema, postgres_event, row,
};

fn encode(format: &DebeziumFormat, event: &ChangeEvent) -> (Json, Json) {
    let mut key = Vec::new();
    format.encode_key(event, &mut key).unwrap();
    let mut value = Vec::new();
    format.encode_value(event, &mut value).unwrap();
    (
        serde_json::from_slice(&key).unwrap(),
        serde_json::from_slice(&value).unwrap(),
    )
}

fn plain() -> DebeziumFormat {
    DebeziumFormat::new(DebeziumOptions::default())
}

#[test]
fn an_insert_is_debeziums_envelope_with_postgres_source_fields() {
    let event = postgres_event(Op::Insert, None, Some(full_row()));
    let (key, value) = encode(&plain(), &event);
    assert_eq!(key, json!({"id": 42}));
    assert_eq!(
        value,
        json!({
            "before": null,
            "after": {
                "id": 42,
                // 1999 as two's complement bytes 0x07 0xcf.
                "amount": "B88=",
                "note": "gift",
                "placed_at": 1_763_781_000_120_i64,
                "paid_at": "2025-11-22T03:10:00.120000Z",
                "day": 20_414
            },
            "source": {
                "version": concat!("cdc-bridge-", env!("CARGO_PKG_VERSION")),
                "connector": "postgresql",
                "name": "shop",
                "ts_ms": 1_763_781_000_123_i64,
                "snapshot": "false",
                "db": "app",
                "sequence": "[null,\"24023128\"]",
                "ts_us": 1_763_781_000_123_000_i64,
                "ts_ns": 1_763_781_000_123_000_000_i64,
                "schema": "public",
                "table": "orders",
                "txId": 748,
                "lsn": 24_023_128,
                "xmin": null
            },
            "transaction": null,
            "op": "c",
            "ts_ms": 1_763_781_000_200_i64,
            "ts_us": 1_763_781_000_200_000_i64,
            "ts_ns": 1_763_781_000_200_000_000_i64
        })
    );
}

#[test]
fn each_operation_has_debeziums_code() {
    let format = plain();
    let code = |event: &ChangeEvent| encode(&format, event).1["op"].clone();
    let before = Some(row(&[("id", Value::Int(42))]));
    assert_eq!(
        code(&postgres_event(
            Op::Update,
            before.clone(),
            Some(full_row())
        )),
        "u"
    );
    assert_eq!(code(&postgres_event(Op::Delete, before, None)), "d");
    let read = postgres_event(Op::Snapshot, None, Some(full_row()));
    assert_eq!(code(&read), "r");
    assert_eq!(encode(&format, &read).1["source"]["snapshot"], "true");
    let truncate = postgres_event(Op::Truncate, None, None);
    let (key, value) = encode(&format, &truncate);
    assert_eq!(
        (key, &value["op"], &value["after"]),
        (Json::Null, &json!("t"), &Json::Null)
    );
}

#[test]
fn a_delete_with_only_the_key_in_before_writes_the_other_columns_as_null() {
    let event = postgres_event(Op::Delete, Some(row(&[("id", Value::Int(42))])), None);
    let (_, value) = encode(&plain(), &event);
    assert_eq!(
        value["before"],
        json!({"id": 42, "amount": null, "note": null, "placed_at": null, "paid_at": null, "day": null})
    );
}

#[test]
fn with_schemas_key_and_value_carry_connect_schemas_with_debeziums_logical_types() {
    let format = DebeziumFormat::new(DebeziumOptions {
        schemas: true,
        ..DebeziumOptions::default()
    });
    let event = postgres_event(Op::Insert, None, Some(full_row()));
    let (key, value) = encode(&format, &event);
    assert_eq!(
        key,
        json!({
            "schema": {"type": "struct", "fields": [{"type": "int64", "optional": false, "field": "id"}],
                       "optional": false, "name": "shop.public.orders.Key"},
            "payload": {"id": 42}
        })
    );
    assert_eq!(value["payload"]["after"]["amount"], "B88=");
    let schema = &value["schema"];
    assert_eq!(schema["name"], "shop.public.orders.Envelope");
    let fields = schema["fields"].as_array().unwrap();
    let names: Vec<&str> = fields
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "before",
            "after",
            "source",
            "transaction",
            "op",
            "ts_ms",
            "ts_us",
            "ts_ns"
        ]
    );
    assert_eq!(fields[0]["name"], "shop.public.orders.Value");
    assert_eq!(fields[0]["optional"], true);
    assert_eq!(
        fields[1]["fields"],
        json!([
            {"type": "int64", "optional": false, "field": "id"},
            {"type": "bytes", "optional": true, "name": "org.apache.kafka.connect.data.Decimal",
             "version": 1, "parameters": {"scale": "2", "connect.decimal.precision": "10"},
             "field": "amount"},
            {"type": "string", "optional": true, "field": "note"},
            {"type": "int64", "optional": true, "name": "io.debezium.time.Timestamp", "version": 1,
             "field": "placed_at"},
            {"type": "string", "optional": true, "name": "io.debezium.time.ZonedTimestamp",
             "version": 1, "field": "paid_at"},
            {"type": "int32", "optional": true, "name": "io.debezium.time.Date", "version": 1,
             "field": "day"}
        ])
    );
    assert_eq!(fields[2]["name"], "io.debezium.connector.postgresql.Source");
    let source: Vec<&str> = fields[2]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    let payload_source: Vec<&str> = value["payload"]["source"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = source.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted, payload_source,
        "the source schema names every field written"
    );
}

#[test]
fn tables_sharing_a_topic_name_the_physical_table_in_the_key() {
    let event = postgres_event(Op::Insert, None, Some(full_row()));
    let mut key = Vec::new();
    plain().encode_table_key(&event, &mut key).unwrap();
    assert_eq!(
        serde_json::from_slice::<Json>(&key).unwrap(),
        json!({"id": 42, "__dbz__physicalTableIdentifier": "shop.public.orders"})
    );
}

#[test]
fn a_keyless_row_and_a_truncate_have_no_key() {
    let mut event = postgres_event(Op::Insert, None, Some(full_row()));
    event.key = Row::new();
    let format = plain();
    assert!(format.null_key(&event));
    assert!(format.null_key(&postgres_event(Op::Truncate, None, None)));
    assert!(!format.null_key(&postgres_event(Op::Insert, None, Some(full_row()))));
}

#[test]
fn unchanged_toasted_columns_get_the_placeholder_or_are_left_out() {
    let mut after = full_row();
    after = after
        .iter()
        .filter(|(n, _)| &***n != "note")
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let mut event = postgres_event(Op::Update, None, Some(after));
    event.unchanged = vec!["note".into()];
    let (_, value) = encode(&plain(), &event);
    assert_eq!(value["after"]["note"], "__debezium_unavailable_value");
    let omit = DebeziumFormat::new(DebeziumOptions {
        unavailable_values: UnavailableValues::Omit,
        ..DebeziumOptions::default()
    });
    let (_, value) = encode(&omit, &event);
    assert!(value["after"].get("note").is_none(), "{value}");
    assert_eq!(value["after"]["id"], 42);
}

#[test]
fn decimal_handling_modes_write_decimals_as_debezium_does() {
    let event = postgres_event(Op::Insert, None, Some(full_row()));
    let with = |decimal_handling| {
        let format = DebeziumFormat::new(DebeziumOptions {
            decimal_handling,
            schemas: true,
            ..DebeziumOptions::default()
        });
        let (_, value) = encode(&format, &event);
        let schema = value["schema"]["fields"][1]["fields"][1].clone();
        (value["payload"]["after"]["amount"].clone(), schema)
    };
    let (double, schema) = with(DecimalHandling::Double);
    assert_eq!(double, json!(19.99));
    assert_eq!(
        schema,
        json!({"type": "double", "optional": true, "field": "amount"})
    );
    let (string, schema) = with(DecimalHandling::String);
    assert_eq!(string, json!("19.99"));
    assert_eq!(
        schema,
        json!({"type": "string", "optional": true, "field": "amount"})
    );
}

#[test]
fn a_nan_decimal_in_precise_mode_is_a_data_error_naming_table_and_column() {
    let mut after = full_row();
    after = after
        .iter()
        .map(|(n, v)| {
            let v = if &**n == "amount" {
                Value::Decimal(Decimal::parse("NaN").unwrap())
            } else {
                v.clone()
            };
            (n.clone(), v)
        })
        .collect();
    let event = postgres_event(Op::Insert, None, Some(after));
    let mut out = Vec::new();
    let err = plain().encode_value(&event, &mut out).unwrap_err();
    assert_eq!(err.table, "public.orders");
    assert_eq!(err.format, "debezium");
    assert!(
        err.reason.contains("NaN") && err.reason.contains("decimal_handling"),
        "{err}"
    );
    let string = DebeziumFormat::new(DebeziumOptions {
        decimal_handling: DecimalHandling::String,
        ..DebeziumOptions::default()
    });
    assert_eq!(encode(&string, &event).1["after"]["amount"], "NAN");
}

#[test]
fn a_value_that_does_not_fit_its_column_is_refused_with_the_column_type() {
    let after = row(&[("id", Value::Text("not a number".into()))]);
    let event = postgres_event(Op::Insert, None, Some(after));
    let mut out = Vec::new();
    let err = plain().encode_value(&event, &mut out).unwrap_err();
    assert!(
        err.reason
            .contains("a text value does not fit the column's int64 type"),
        "{err}"
    );
    assert!(
        !err.to_string().contains("not a number"),
        "row data in the message: {err}"
    );
}

#[test]
fn mysql_events_write_the_mysql_connectors_source_fields_and_column_types() {
    let event = mysql_event();
    let format = DebeziumFormat::new(DebeziumOptions {
        schemas: true,
        ..DebeziumOptions::default()
    });
    let (_, value) = encode(&format, &event);
    let payload = &value["payload"];
    assert_eq!(
        payload["after"],
        json!({"id": 4_000_000_000_u64, "small": -3, "at": -90_000_500_000_i64, "size": "m",
               "flags": "AgE=", "y": 2025})
    );
    let source = &payload["source"];
    assert_eq!(source["connector"], "mysql");
    assert_eq!(
        (
            &source["db"],
            &source["table"],
            &source["file"],
            &source["pos"],
            &source["row"]
        ),
        (
            &json!("app"),
            &json!("orders"),
            &json!("binlog.000003"),
            &json!(1_234),
            &json!(1)
        )
    );
    assert_eq!(
        (&source["server_id"], &source["gtid"]),
        (&json!(11), &json!("0-11-7"))
    );
    let columns = &value["schema"]["fields"][1]["fields"];
    let kinds: Vec<(&str, Option<&str>)> = columns
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["type"].as_str().unwrap(), c["name"].as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("int64", None),
            ("int16", None),
            ("int64", Some("io.debezium.time.MicroTime")),
            ("string", Some("io.debezium.data.Enum")),
            ("bytes", Some("io.debezium.data.Bits")),
            ("int32", Some("io.debezium.time.Year")),
        ]
    );
    assert_eq!(columns[3]["parameters"], json!({"allowed": "s,m"}));
    assert_eq!(value["schema"]["name"], "shop.app.orders.Envelope");
}

#[test]
fn dynamodb_items_are_mapped_by_their_values() {
    let event = dynamodb_event();
    let format = DebeziumFormat::new(DebeziumOptions {
        schemas: true,
        ..DebeziumOptions::default()
    });
    let (key, value) = encode(&format, &event);
    assert_eq!(key["payload"], json!({"pk": "user#1"}));
    assert_eq!(
        value["payload"]["after"],
        json!({"pk": "user#1", "n": {"scale": 1, "value": "Dw=="}, "tags": ["a"], "mixed": "[\"a\",1]"})
    );
    assert_eq!(value["payload"]["source"]["shard"], "shardId-1");
    assert_eq!(
        value["schema"]["fields"][1]["fields"][1]["name"],
        "io.debezium.data.VariableScaleDecimal"
    );
}

#[test]
fn a_table_whose_schema_changes_gets_the_new_schema() {
    let format = DebeziumFormat::new(DebeziumOptions {
        schemas: true,
        ..DebeziumOptions::default()
    });
    let event = postgres_event(Op::Insert, None, Some(full_row()));
    let (_, before_ddl) = encode(&format, &event);
    let mut altered = (*orders_schema()).clone();
    altered.columns.push(column(
        "extra",
        "integer",
        ColumnType::Int {
            bits: 32,
            unsigned: false,
        },
        true,
        false,
    ));
    let mut after_ddl = event.clone();
    after_ddl.source.table_schema = Some(Arc::new(altered));
    let (_, value) = encode(&format, &after_ddl);
    let count = |v: &Json| v["schema"]["fields"][1]["fields"].as_array().unwrap().len();
    assert_eq!((count(&before_ddl), count(&value)), (6, 7));
    assert_eq!(value["payload"]["after"]["extra"], Json::Null);
}

#[test]
fn the_two_events_of_a_key_change_name_the_other_key_in_debeziums_headers() {
    use crate::envelope::KeyChange;
    let update = postgres_event(Op::Update, Some(full_row()), Some(full_row()));
    let mut delete = update.clone();
    delete.op = Op::Delete;
    delete.key_change = Some(KeyChange::NewKey(row(&[("id", Value::Int(43))])));
    let mut insert = update.clone();
    insert.op = Op::Insert;
    insert.key = row(&[("id", Value::Int(43))]);
    insert.key_change = Some(KeyChange::OldKey(row(&[("id", Value::Int(42))])));
    let format = plain();
    assert_eq!(
        format.headers(&delete).unwrap(),
        [("__debezium.newkey", r#"{"id":43}"#.to_owned())]
    );
    assert_eq!(
        format.headers(&insert).unwrap(),
        [("__debezium.oldkey", r#"{"id":42}"#.to_owned())]
    );
    assert!(format.headers(&update).unwrap().is_empty());
}
