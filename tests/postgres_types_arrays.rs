//! One- and multi-dimensional arrays of the supported types, with NULL elements.

mod support;

use serde_json::json;
use support::types::{case, round_trip};

#[tokio::test]
async fn one_and_multi_dimensional_arrays() {
    round_trip(
        "types_arrays",
        "CREATE TYPE color AS ENUM ('red', 'green');",
        &[
            case("int[]", "'{1,NULL,3}'", json!([1, null, 3])),
            case("int[][]", "'{{1,2},{3,4}}'", json!([[1, 2], [3, 4]])).refused_by_debezium(),
            case(
                "text[]",
                "ARRAY['a b', 'c\"d', 'NULL', NULL, '']",
                json!(["a b", "c\"d", "NULL", null, ""]),
            ),
            case("numeric[]", "'{1.50,NaN}'", json!(["1.50", "NaN"])).refused_by_debezium(),
            case("boolean[]", "'{t,f}'", json!([true, false])),
            case(
                "uuid[]",
                "'{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}'",
                json!(["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]),
            ),
            case(
                "timestamptz[]",
                "ARRAY['2025-01-01 00:00:00+00'::timestamptz]",
                json!(["2025-01-01T00:00:00Z"]),
            ),
            case(
                "jsonb[]",
                "ARRAY['{\"a\":1}'::jsonb, '[]'::jsonb]",
                json!([{"a": 1}, []]),
            ),
            case("bytea[]", "ARRAY['\\x01'::bytea]", json!(["AQ=="])),
            case("color[]", "'{red,green}'", json!(["red", "green"])),
            case("int[]", "'{}'", json!([])),
            case("int[]", "'[0:1]={7,8}'", json!([7, 8])),
            case("point[]", "ARRAY['(1,2)'::point]", json!(["(1,2)"])),
        ],
    )
    .await;
}
