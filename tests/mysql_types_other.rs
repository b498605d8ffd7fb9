//! The other MySQL types from MariaDB through the snapshot and the binlog: ENUM and SET as
//! their labels (the empty set, several members), BIT(1), BIT(10) and BIT(64) as unsigned
//! integers, JSON (MariaDB's, a checked LONGTEXT, embedded as JSON, big numbers exact), GEOMETRY as
//! `{"srid": n, "wkb": base64}` (POINT(1 2) with SRID 4326 is its 21 WKB bytes), and NULLs.

mod support;

use base64::Engine as _;
use serde_json::json;
use support::mysql::type_round_trip;

/// POINT(1 2) as WKB: little-endian, type 1 (point), x, y.
const POINT_1_2: &str = "AQEAAAAAAAAAAADwPwAAAAAAAABA";

#[test]
fn the_expected_point_is_the_wkb_of_point_1_2() {
    let wkb = base64::engine::general_purpose::STANDARD
        .decode(POINT_1_2)
        .unwrap();
    let mut expected = vec![1u8];
    expected.extend(1u32.to_le_bytes());
    expected.extend(1f64.to_le_bytes());
    expected.extend(2f64.to_le_bytes());
    assert_eq!(wkb.len(), 21);
    assert_eq!(wkb, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enums_sets_bits_json_geometry() {
    type_round_trip(
        "other",
        "",
        "e ENUM('small','large'), s SET('x','y','z'), b1 BIT(1), b10 BIT(10), b64 BIT(64), \
         j JSON, g GEOMETRY",
        &[
            (
                "'large', 'x,z', b'1', b'1000000001', x'FFFFFFFFFFFFFFFF', '{\"a\": [1, 2]}', \
                 ST_GeomFromText('POINT(1 2)', 4326)",
                json!({"e": "large", "s": "x,z", "b1": 1, "b10": 513,
                       "b64": 18446744073709551615u64, "j": {"a": [1, 2]},
                       "g": {"srid": 4326, "wkb": POINT_1_2}}),
            ),
            (
                "'small', '', b'0', b'0', x'8000000000000001', \
                 '[1, \"two\", null, true, {\"n\": 123456789012345678901234567890}]', \
                 ST_GeomFromText('LINESTRING(0 0, 1 1)')",
                json!({"e": "small", "s": "", "b1": 0, "b10": 0, "b64": 9223372036854775809u64,
                       "j": [1, "two", null, true, {"n": 123456789012345678901234567890.0}],
                       "g": {"srid": 0,
                             "wkb": "AQIAAAACAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAPA/AAAAAAAA8D8="}}),
            ),
            (
                "'large', 'z,y,x', b'1', b'1111111111', b'1', '123456789012345678901234567890.5', \
                 ST_GeomFromText('POINT(-73.5 40.25)', 4326)",
                json!({"e": "large", "s": "x,y,z", "b1": 1, "b10": 1023, "b64": 1,
                       "j": 123456789012345678901234567890.5,
                       "g": {"srid": 4326, "wkb": "AQEAAAAAAAAAAGBSwAAAAAAAIERA"}}),
            ),
            (
                "'small', 'y', b'0', b'0000000001', x'0000000100000000', '\"text\"', \
                 ST_GeomFromText('POINT(0 0)')",
                json!({"e": "small", "s": "y", "b1": 0, "b10": 1, "b64": 4294967296u64,
                       "j": "text",
                       "g": {"srid": 0, "wkb": "AQEAAAAAAAAAAAAAAAAAAAAAAAAA"}}),
            ),
        ],
    )
    .await;
}
