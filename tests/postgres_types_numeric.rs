//! Numbers and booleans from PostgreSQL, exact in the JSON (snapshot and streaming).

mod support;

use serde_json::json;
use support::types::{case, round_trip};

#[tokio::test]
async fn integers_numeric_floats_booleans_money() {
    round_trip(
        "types_numeric",
        "",
        &[
            case("smallint", "-32768", json!(-32768)),
            case("integer", "2147483647", json!(2147483647)),
            case("bigint", "-9223372036854775808", json!(i64::MIN)),
            case("bigint", "9223372036854775807", json!(i64::MAX)),
            case(
                "numeric",
                "12345678901234567890.123456789012345678",
                json!("12345678901234567890.123456789012345678"),
            ),
            case("numeric(10,4)", "1.5", json!("1.5000")),
            case("numeric", "'NaN'", json!("NaN")).refused_by_debezium(),
            case("numeric", "'-Infinity'", json!("-Infinity")).refused_by_debezium(),
            case("real", "2.75", json!(2.75)),
            case("double precision", "0.1", json!(0.1)),
            case("double precision", "'NaN'", json!("NaN")),
            case("double precision", "'Infinity'", json!("Infinity")),
            case("real", "'-Infinity'", json!("-Infinity")),
            case("double precision", "1e308", json!(1e308)),
            case("boolean", "true", json!(true)),
            case("boolean", "false", json!(false)),
            case("money", "1234.56", json!("$1,234.56")),
            case("oid", "4294967295", json!(4294967295u64)),
        ],
    )
    .await;
}
