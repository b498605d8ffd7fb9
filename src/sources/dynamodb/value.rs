//! DynamoDB AttributeValues to envelope values: plain JSON, nothing lost.
//!
//! | AttributeValue | value | JSON |
//! | --- | --- | --- |
//! | `S` | text | string |
//! | `N` | exact decimal | string with every digit (38 significant digits fit) |
//! | `B` | bytes | base64 string |
//! | `BOOL` | bool | `true` / `false` |
//! | `NULL` | null | `null` |
//! | `M` | JSON object | object of the mapped values (numbers as strings, bytes as base64) |
//! | `L` | array | array of the mapped values |
//! | `SS` / `NS` / `BS` | array | array of strings / number strings / base64 strings |

use std::collections::HashMap;

use aws_sdk_dynamodbstreams::types::AttributeValue;
use base64::Engine as _;

use crate::envelope::{Decimal, Json, Row, Value};

/// A row from an item or key map, columns in name order (DynamoDB maps have no order).
pub fn row(item: &HashMap<String, AttributeValue>) -> Row {
    let mut names: Vec<&String> = item.keys().collect();
    names.sort();
    names
        .into_iter()
        .map(|name| (name.as_str().into(), value(&item[name])))
        .collect()
}

pub fn value(attribute: &AttributeValue) -> Value {
    match attribute {
        AttributeValue::S(s) => Value::Text(s.clone()),
        AttributeValue::N(n) => number(n),
        AttributeValue::B(b) => Value::Bytes(b.as_ref().to_vec()),
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::L(items) => Value::Array(items.iter().map(value).collect()),
        AttributeValue::Ss(items) => Value::Array(items.iter().cloned().map(Value::Text).collect()),
        AttributeValue::Ns(items) => Value::Array(items.iter().map(|n| number(n)).collect()),
        AttributeValue::Bs(items) => Value::Array(
            items
                .iter()
                .map(|b| Value::Bytes(b.as_ref().to_vec()))
                .collect(),
        ),
        AttributeValue::M(map) => {
            let json =
                serde_json::Value::Object(map.iter().map(|(k, v)| (k.clone(), json(v))).collect());
            Value::Json(Json::parse(&json.to_string()).expect("serde_json writes valid JSON"))
        }
        // A type this version does not know: keep its debug text rather than drop it.
        other => Value::Other {
            type_name: "AttributeValue".into(),
            text: format!("{other:?}"),
        },
    }
}

fn number(n: &str) -> Value {
    match Decimal::parse(n) {
        Ok(d) => Value::Decimal(d),
        Err(_) => Value::Other {
            type_name: "N".into(),
            text: n.to_owned(),
        },
    }
}

/// The JSON of a value nested in a map (the same mapping, written directly).
fn json(attribute: &AttributeValue) -> serde_json::Value {
    use serde_json::Value as J;
    let b64 = |b: &[u8]| J::String(base64::engine::general_purpose::STANDARD.encode(b));
    match attribute {
        AttributeValue::S(s) => J::String(s.clone()),
        AttributeValue::N(n) => J::String(n.clone()),
        AttributeValue::B(b) => b64(b.as_ref()),
        AttributeValue::Bool(b) => J::Bool(*b),
        AttributeValue::Null(_) => J::Null,
        AttributeValue::L(items) => J::Array(items.iter().map(json).collect()),
        AttributeValue::Ss(items) | AttributeValue::Ns(items) => {
            J::Array(items.iter().cloned().map(J::String).collect())
        }
        AttributeValue::Bs(items) => J::Array(items.iter().map(|b| b64(b.as_ref())).collect()),
        AttributeValue::M(map) => {
            J::Object(map.iter().map(|(k, v)| (k.clone(), json(v))).collect())
        }
        other => J::String(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::JsonFormat;
    use aws_sdk_dynamodbstreams::primitives::Blob;

    /// Every AttributeValue type, through the JSON format, as a consumer reads it.
    #[test]
    fn every_attribute_type_round_trips_to_plain_json() {
        let big = "12345678901234567890123456789012345678"; // 38 digits
        let item: HashMap<String, AttributeValue> = [
            ("s", AttributeValue::S("héllo".into())),
            ("n", AttributeValue::N(big.into())),
            (
                "frac",
                AttributeValue::N("-0.000000000000000000000000000000000001".into()),
            ),
            ("b", AttributeValue::B(Blob::new(vec![0, 1, 255]))),
            ("t", AttributeValue::Bool(true)),
            ("z", AttributeValue::Null(true)),
            (
                "l",
                AttributeValue::L(vec![
                    AttributeValue::N("1".into()),
                    AttributeValue::S("x".into()),
                ]),
            ),
            ("ss", AttributeValue::Ss(vec!["a".into(), "b".into()])),
            ("ns", AttributeValue::Ns(vec![big.into(), "2.5".into()])),
            ("bs", AttributeValue::Bs(vec![Blob::new(vec![7])])),
            (
                "m",
                AttributeValue::M(
                    [
                        (
                            "deep".to_owned(),
                            AttributeValue::M(
                                [("n".to_owned(), AttributeValue::N(big.into()))].into(),
                            ),
                        ),
                        ("bytes".to_owned(), AttributeValue::B(Blob::new(vec![1, 2]))),
                    ]
                    .into(),
                ),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let mut event =
            crate::sources::generator::GeneratorSource::new(toml::from_str("keys = 1").unwrap())
                .event(&"p".into(), &"d".into(), &"t".into(), 1);
        event.after = Some(row(&item));
        let mut out = Vec::new();
        JsonFormat::write_value(&event, &mut out);
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let after = &json["after"];
        let expected = serde_json::json!({
            "b": "AAH/", "bs": ["Bw=="], "frac": "-0.000000000000000000000000000000000001",
            "l": ["1", "x"], "m": {"bytes": "AQI=", "deep": {"n": big}}, "n": big,
            "ns": [big, "2.5"], "s": "héllo", "ss": ["a", "b"], "t": true, "z": null
        });
        assert_eq!(after, &expected);
        let keys: Vec<&String> = after.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["b", "bs", "frac", "l", "m", "n", "ns", "s", "ss", "t", "z"],
            "name order"
        );
    }
}
