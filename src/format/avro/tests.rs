//! The encoder's schemas and bodies read back by apache-avro, an Avro implementation of its own.

use apache_avro::types::Value as Avro;
use serde_json::json;

use super::*;
use crate::envelope::{Op, Row, Value as Column};
use crate::format::fixtures::{dynamodb_event, full_row, mysql_event, postgres_event, row};

fn decode(schema: &serde_json::Value, body: &[u8]) -> Avro {
    let schema = apache_avro::Schema::parse(schema).expect("apache-avro accepts the schema");
    let mut reader = body;
    let value = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
        .build()
        .expect("a reader of the schema")
        .read_value(&mut reader)
        .expect("a valid body");
    assert!(reader.is_empty(), "{} bytes left over", reader.len());
    value
}

fn field<'a>(record: &'a Avro, name: &str) -> &'a Avro {
    let Avro::Record(fields) = record else {
        panic!("not a record: {record:?}");
    };
    &fields
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no field {name}"))
        .1
}

/// The value inside an optional field's union.
fn present(value: &Avro) -> &Avro {
    match value {
        Avro::Union(_, inner) => inner,
        other => other,
    }
}

#[test]
fn an_insert_reads_back_with_debeziums_values() {
    let encoder = AvroEncoder::new(DebeziumOptions::default());
    let event = postgres_event(Op::Insert, None, Some(full_row()));
    let schema = encoder.value_schema(&event);
    let mut body = Vec::new();
    encoder.encode_value(&event, &mut body).unwrap();
    let envelope = decode(&schema, &body);
    assert_eq!(present(field(&envelope, "before")), &Avro::Null);
    let after = present(field(&envelope, "after"));
    assert_eq!(field(after, "id"), &Avro::Long(42));
    assert_eq!(
        present(field(after, "amount")),
        &Avro::Decimal(apache_avro::Decimal::from(vec![0x07, 0xcf]))
    );
    assert_eq!(present(field(after, "note")), &Avro::String("gift".into()));
    assert_eq!(
        present(field(after, "placed_at")),
        &Avro::Long(1_763_781_000_120)
    );
    assert_eq!(
        present(field(after, "paid_at")),
        &Avro::String("2025-11-22T03:10:00.120000Z".into())
    );
    assert_eq!(present(field(after, "day")), &Avro::Int(20_414));
    assert_eq!(field(&envelope, "op"), &Avro::String("c".into()));
    let source = field(&envelope, "source");
    assert_eq!(
        field(source, "connector"),
        &Avro::String("postgresql".into())
    );
    assert_eq!(
        present(field(source, "snapshot")),
        &Avro::String("false".into())
    );
    assert_eq!(present(field(source, "lsn")), &Avro::Long(24_023_128));
}

#[test]
fn the_schema_follows_avro_data_with_debeziums_names() {
    let encoder = AvroEncoder::new(DebeziumOptions::default());
    let event = postgres_event(Op::Insert, None, Some(full_row()));
    let schema = encoder.value_schema(&event);
    assert_eq!(schema["name"], "Envelope");
    assert_eq!(schema["namespace"], "shop.public.orders");
    assert_eq!(schema["connect.name"], "shop.public.orders.Envelope");
    assert_eq!(schema["connect.version"], 2);
    let fields = schema["fields"].as_array().unwrap();
    let before = &fields[0];
    assert_eq!(before["default"], serde_json::Value::Null);
    assert_eq!(before["type"][0], "null");
    assert_eq!(before["type"][1]["name"], "Value");
    // The second use of the row record names it instead of defining it again.
    assert_eq!(
        fields[1]["type"],
        json!(["null", "shop.public.orders.Value"])
    );
    let amount = &before["type"][1]["fields"][1];
    assert_eq!(
        amount["type"][1],
        json!({"type": "bytes", "scale": 2, "precision": 10, "connect.version": 1,
               "connect.parameters": {"scale": "2", "connect.decimal.precision": "10"},
               "connect.name": "org.apache.kafka.connect.data.Decimal", "logicalType": "decimal"})
    );
    let snapshot = &fields[2]["type"]["fields"][4];
    assert_eq!(snapshot["name"], "snapshot");
    assert_eq!(snapshot["default"], "false");
    assert_eq!(
        snapshot["type"][1], "null",
        "a default makes null the second branch"
    );
}

#[test]
fn keys_and_keyless_rows() {
    let encoder = AvroEncoder::new(DebeziumOptions::default());
    let event = postgres_event(Op::Delete, Some(row(&[("id", Column::Int(42))])), None);
    let schema = encoder.key_schema(&event, true).unwrap();
    assert_eq!(schema["name"], "Key");
    let mut body = Vec::new();
    assert!(encoder.encode_key(&event, true, &mut body).unwrap());
    let key = decode(&schema, &body);
    assert_eq!(field(&key, "id"), &Avro::Long(42));
    assert_eq!(
        field(&key, "__dbz__physicalTableIdentifier"),
        &Avro::String("shop.public.orders".into())
    );
    let mut keyless = event.clone();
    keyless.key = Row::new();
    body.clear();
    assert!(!encoder.encode_key(&keyless, false, &mut body).unwrap());
    assert!(body.is_empty() && encoder.key_schema(&keyless, false).is_none());
}

#[test]
fn names_avro_does_not_allow_are_made_valid() {
    assert_eq!(avro_name("kafka-e2e-1"), "kafka_e2e_1");
    assert_eq!(avro_name("9lives"), "_9lives");
    assert_eq!(avro_name("naïve col"), "na_ve_col");
    let encoder = AvroEncoder::new(DebeziumOptions::default());
    let mut event = postgres_event(Op::Insert, None, Some(full_row()));
    event.source.pipeline = "my-pipeline".into();
    let schema = encoder.value_schema(&event);
    assert_eq!(schema["namespace"], "my_pipeline.public.orders");
    apache_avro::Schema::parse(&schema).expect("a valid schema");
}

#[test]
fn a_value_avro_cannot_carry_is_a_data_error_naming_the_field() {
    let encoder = AvroEncoder::new(DebeziumOptions::default());
    let mut event = postgres_event(Op::Insert, None, Some(full_row()));
    event.after = Some(row(&[("id", Column::UInt(u64::MAX))]));
    event.key = row(&[("id", Column::UInt(u64::MAX))]);
    let mut body = Vec::new();
    let err = encoder.encode_value(&event, &mut body).unwrap_err();
    assert_eq!(err.format, "avro");
    assert!(
        err.reason
            .contains("id: an unsigned value beyond Avro's long"),
        "{err}"
    );
}

/// Encodes `event`'s value and reads it back; returns its `after` record.
fn after_of(event: &crate::envelope::ChangeEvent) -> Avro {
    let encoder = AvroEncoder::new(DebeziumOptions::default());
    let schema = encoder.value_schema(event);
    let mut body = Vec::new();
    encoder.encode_value(event, &mut body).unwrap();
    present(field(&decode(&schema, &body), "after")).clone()
}

#[test]
fn mysql_types_read_back_in_debeziums_forms() {
    let after = after_of(&mysql_event());
    assert_eq!(field(&after, "id"), &Avro::Long(4_000_000_000));
    assert_eq!(present(field(&after, "small")), &Avro::Int(-3));
    assert_eq!(present(field(&after, "at")), &Avro::Long(-90_000_500_000));
    assert_eq!(present(field(&after, "size")), &Avro::String("m".into()));
    assert_eq!(
        present(field(&after, "flags")),
        &Avro::Bytes(vec![0x02, 0x01])
    );
    assert_eq!(present(field(&after, "y")), &Avro::Int(2025));
}

#[test]
fn dynamodb_items_read_back_typed_by_their_values() {
    let after = after_of(&dynamodb_event());
    assert_eq!(present(field(&after, "pk")), &Avro::String("user#1".into()));
    let number = present(field(&after, "n"));
    assert_eq!(field(number, "scale"), &Avro::Int(1));
    assert_eq!(field(number, "value"), &Avro::Bytes(vec![0x0f]));
    assert_eq!(
        present(field(&after, "tags")),
        &Avro::Array(vec![Avro::Union(1, Box::new(Avro::String("a".into())))])
    );
    assert_eq!(
        present(field(&after, "mixed")),
        &Avro::String("[\"a\",1]".into())
    );
}

#[test]
fn a_before_image_without_a_not_null_column_still_encodes_with_that_column_null() {
    use crate::envelope::TableSchema;
    let mut event = postgres_event(Op::Delete, Some(row(&[("id", Column::Int(42))])), None);
    let mut schema: TableSchema = (**event.source.table_schema.as_ref().unwrap()).clone();
    for column in &mut schema.columns {
        column.nullable = false;
    }
    event.source.table_schema = Some(std::sync::Arc::new(schema));
    let encoder = AvroEncoder::new(DebeziumOptions::default());
    let avro_schema = encoder.value_schema(&event);
    let mut body = Vec::new();
    encoder.encode_value(&event, &mut body).unwrap();
    let before = present(field(&decode(&avro_schema, &body), "before")).clone();
    assert_eq!(field(&before, "id"), &Avro::Long(42));
    assert_eq!(
        field(&before, "amount"),
        &Avro::Union(0, Box::new(Avro::Null))
    );
}
