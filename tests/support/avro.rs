//! Reading Avro records in Confluent's framing: each body decoded with apache-avro by the
//! schema the registry serves for the id its framing carries.
#![allow(dead_code)]

use apache_avro::types::Value as Avro;

pub fn registry() -> String {
    std::env::var("CDC_BRIDGE_SCHEMA_REGISTRY_URL")
        .expect("CDC_BRIDGE_SCHEMA_REGISTRY_URL is not set: run the tests with scripts/test.sh")
}

/// The registry's schema of `id`, as the registry serves it.
pub fn schema_of(id: u32) -> apache_avro::Schema {
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
pub fn decode(framed: &[u8]) -> (u32, Avro) {
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

pub fn field<'a>(record: &'a Avro, name: &str) -> &'a Avro {
    let Avro::Record(fields) = record else {
        panic!("not a record: {record:?}");
    };
    let value = &fields.iter().find(|(n, _)| n == name).unwrap().1;
    match value {
        Avro::Union(_, inner) => inner,
        other => other,
    }
}
