//! MySQL DECIMAL (exact text at its scale, up to DECIMAL(65,30) both ways, zero scale,
//! negatives and fractions under 1), FLOAT and DOUBLE (negative, extremes, subnormal) from
//! MariaDB through the snapshot and the binlog, and NULLs.

mod support;

use serde_json::json;
use support::mysql::type_round_trip;

const MAX_65_30: &str = "99999999999999999999999999999999999.999999999999999999999999999999";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decimals_floats_and_doubles() {
    type_round_trip(
        "decimals",
        "",
        "big DECIMAL(65,30), whole DECIMAL(10,0), d DECIMAL(30,10), small DECIMAL(5,2), \
         f FLOAT, dbl DOUBLE, dbl2 DOUBLE",
        &[
            (
                &format!("{MAX_65_30}, 9999999999, 12345678901234567890.0123456789, 999.99, 1.5, 0.5, 0.1"),
                json!({"big": MAX_65_30, "whole": "9999999999",
                       "d": "12345678901234567890.0123456789", "small": "999.99",
                       "f": 1.5, "dbl": 0.5, "dbl2": 0.1}),
            ),
            (
                &format!("-{MAX_65_30}, -9999999999, -0.0000000001, -0.01, -3.25, \
                          -1.7976931348623157e308, -2.2250738585072014e-308"),
                json!({"big": format!("-{MAX_65_30}"), "whole": "-9999999999",
                       "d": "-0.0000000001", "small": "-0.01", "f": -3.25,
                       "dbl": -1.7976931348623157e308, "dbl2": -2.2250738585072014e-308}),
            ),
            (
                "0.000000000000000000000000000001, 0, 0, 1.5, 0, 5e-324, 1e-300",
                json!({"big": "0.000000000000000000000000000001", "whole": "0",
                       "d": "0.0000000000", "small": "1.50", "f": 0.0, "dbl": 5e-324,
                       "dbl2": 1e-300}),
            ),
            (
                "-1, 42, 1, -999.99, 16777216, 1.7976931348623157e308, 123456789.125",
                json!({"big": "-1.000000000000000000000000000000", "whole": "42",
                       "d": "1.0000000000", "small": "-999.99", "f": 16777216.0,
                       "dbl": 1.7976931348623157e308, "dbl2": 123456789.125}),
            ),
        ],
    )
    .await;
}

/// FLOAT is single precision: 1.1 is stored as the f32 nearest it, which is written as the
/// shortest decimal that reads back as that f32 (as Debezium's FLOAT32 is: 1.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn float_keeps_the_value_written() {
    type_round_trip(
        "floats",
        "",
        "f FLOAT, g FLOAT",
        &[
            ("1.1, -0.1", json!({"f": 1.1, "g": -0.1})),
            ("1e38, 1e-38", json!({"f": 1e38, "g": 1e-38})),
        ],
    )
    .await;
}
