//! Kafka Connect schemas as Avro schemas, by the rules of Confluent's `AvroData` (what
//! Debezium's Avro converter writes): structs become records named by their Connect name
//! (`shop.public.orders.Value` is record `Value` in namespace `shop.public.orders`), optional
//! values unions with `null` (`["null", T]` with default null; `[T, "null"]` when the Connect
//! schema has a default of its own), Connect's names, versions, parameters and defaults kept
//! as `connect.*` properties, `int16` an Avro `int` marked `connect.type`, and Connect's
//! `Decimal` Avro's `decimal` logical type. A record already defined in the schema is named,
//! not defined again (Avro allows one definition per name).
//!
//! Avro names allow only letters, digits and `_`: every other character of a name becomes
//! `_`, and a name that starts with a digit gets a `_` in front.

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use crate::format::debezium::Schema;

const DECIMAL: &str = "org.apache.kafka.connect.data.Decimal";

/// The Avro schema of `schema`.
pub fn avro_schema(schema: &Schema) -> Value {
    let mut defined = HashSet::new();
    avro_type(schema, &mut defined)
}

/// Whether an optional value is the union's second branch (`[T, "null"]`): when the Connect
/// schema declares a default, which Avro requires to be the first branch's.
pub fn null_is_second(schema: &Schema) -> bool {
    schema.default.is_some()
}

/// `schema` as the type of a field or an array item: optional ones as unions with null.
fn field_type(schema: &Schema, defined: &mut HashSet<String>) -> Value {
    let inner = avro_type(schema, defined);
    match (schema.optional, null_is_second(schema)) {
        (false, _) => inner,
        (true, false) => json!(["null", inner]),
        (true, true) => json!([inner, "null"]),
    }
}

fn avro_type(schema: &Schema, defined: &mut HashSet<String>) -> Value {
    if schema.kind == "struct" {
        return record(schema, defined);
    }
    if schema.kind == "array" {
        let items = schema
            .items
            .as_deref()
            .map_or_else(|| json!("string"), |items| field_type(items, defined));
        return json!({"type": "array", "items": items});
    }
    let primitive = match schema.kind {
        "int8" | "int16" | "int32" => "int",
        "int64" => "long",
        other => other,
    };
    let mut props = Map::new();
    if matches!(schema.kind, "int8" | "int16") {
        props.insert("connect.type".into(), json!(schema.kind));
    }
    connect_properties(schema, &mut props);
    if schema.name.as_deref() == Some(DECIMAL) {
        let parameter = |key: &str| {
            schema
                .parameters
                .iter()
                .find(|(k, _)| *k == key)
                .and_then(|(_, v)| v.parse::<u32>().ok())
        };
        props.insert("logicalType".into(), json!("decimal"));
        props.insert("scale".into(), json!(parameter("scale").unwrap_or(0)));
        // AvroData's precision when Connect's schema gives none.
        props.insert(
            "precision".into(),
            json!(parameter("connect.decimal.precision").unwrap_or(64)),
        );
    }
    if props.is_empty() {
        return json!(primitive);
    }
    props.insert("type".into(), json!(primitive));
    Value::Object(props)
}

fn connect_properties(schema: &Schema, props: &mut Map<String, Value>) {
    if let Some(version) = schema.version {
        props.insert("connect.version".into(), json!(version));
    }
    if let Some(doc) = schema.doc {
        props.insert("connect.doc".into(), json!(doc));
    }
    if !schema.parameters.is_empty() {
        let parameters: Map<String, Value> = schema
            .parameters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        props.insert("connect.parameters".into(), Value::Object(parameters));
    }
    if let Some(default) = schema.default {
        props.insert("connect.default".into(), json!(default));
    }
    if let Some(name) = &schema.name {
        props.insert("connect.name".into(), json!(&**name));
    }
}

fn record(schema: &Schema, defined: &mut HashSet<String>) -> Value {
    let connect_name = schema.name.as_deref().unwrap_or("ConnectDefault");
    let full = full_name(connect_name);
    if !defined.insert(full.clone()) {
        return json!(full);
    }
    let (namespace, name) = match full.rsplit_once('.') {
        Some((namespace, name)) => (Some(namespace.to_owned()), name.to_owned()),
        None => (None, full.clone()),
    };
    let fields: Vec<Value> = schema
        .fields
        .iter()
        .map(|field| {
            let mut out = Map::new();
            out.insert(
                "name".into(),
                json!(avro_name(field.field.as_deref().unwrap_or(""))),
            );
            out.insert("type".into(), field_type(field, defined));
            match (field.optional, field.default) {
                (_, Some(default)) => {
                    out.insert("default".into(), json!(default));
                }
                (true, None) => {
                    out.insert("default".into(), Value::Null);
                }
                (false, None) => {}
            }
            Value::Object(out)
        })
        .collect();
    let mut out = Map::new();
    out.insert("type".into(), json!("record"));
    out.insert("name".into(), json!(name));
    if let Some(namespace) = namespace {
        out.insert("namespace".into(), json!(namespace));
    }
    out.insert("fields".into(), Value::Array(fields));
    if let Some(doc) = schema.doc {
        out.insert("doc".into(), json!(doc));
    }
    if let Some(version) = schema.version {
        out.insert("connect.version".into(), json!(version));
    }
    out.insert("connect.name".into(), json!(connect_name));
    Value::Object(out)
}

/// A dotted Connect name with every part made a valid Avro name.
fn full_name(connect_name: &str) -> String {
    connect_name
        .split('.')
        .map(avro_name)
        .collect::<Vec<_>>()
        .join(".")
}

/// `name` with every character Avro does not allow in a name replaced by `_`.
pub fn avro_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}
