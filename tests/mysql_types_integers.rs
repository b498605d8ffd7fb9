//! MySQL integers from MariaDB, exact in the JSON through the snapshot and the binlog:
//! TINYINT, SMALLINT, MEDIUMINT (INT24), INT and BIGINT, signed at their min/max and -1,
//! UNSIGNED at 0, their max and their top bit alone (BIGINT UNSIGNED max stays exact), BOOL
//! (TINYINT(1): the binlog cannot tell it from TINYINT, so a number), and NULLs.

mod support;

use serde_json::json;
use support::mysql::{type_round_trip, type_round_trip_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integers_at_their_limits_both_signednesses() {
    // Avro's long cannot hold BIGINT UNSIGNED max: that format stops on it, naming `bu`.
    type_round_trip_with(
        "ints",
        "",
        "ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, su SMALLINT UNSIGNED, \
         mu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED, b BOOL",
        &[
            (
                "-128, 0, -32768, 0, 0, -2147483648, 0, -9223372036854775808, 0, FALSE",
                json!({"ti": -128, "tu": 0, "si": -32768, "su": 0, "mu": 0,
                       "i": -2147483648i64, "iu": 0, "bi": i64::MIN, "bu": 0, "b": 0}),
            ),
            (
                "127, 255, 32767, 65535, 16777215, 2147483647, 4294967295, \
                 9223372036854775807, 18446744073709551615, TRUE",
                json!({"ti": 127, "tu": 255, "si": 32767, "su": 65535, "mu": 16777215,
                       "i": 2147483647, "iu": 4294967295u64, "bi": i64::MAX,
                       "bu": 18446744073709551615u64, "b": 1}),
            ),
            (
                "-1, 128, -1, 32768, 8388608, -1, 2147483648, -1, 9223372036854775808, 1",
                json!({"ti": -1, "tu": 128, "si": -1, "su": 32768, "mu": 8388608, "i": -1,
                       "iu": 2147483648u64, "bi": -1, "bu": 9223372036854775808u64, "b": 1}),
            ),
            (
                "0, 1, 0, 1, 1, 0, 1, 0, 1, 0",
                json!({"ti": 0, "tu": 1, "si": 0, "su": 1, "mu": 1, "i": 0, "iu": 1, "bi": 0,
                       "bu": 1, "b": 0}),
            ),
        ],
        Some("bu"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_mediumint() {
    type_round_trip(
        "mediumints",
        "",
        "mi MEDIUMINT, mi2 MEDIUMINT",
        &[
            ("-8388608, 8388607", json!({"mi": -8388608, "mi2": 8388607})),
            ("-1, 0", json!({"mi": -1, "mi2": 0})),
            ("-65536, 65536", json!({"mi": -65536, "mi2": 65536})),
        ],
    )
    .await;
}
