//! Dates, times, timestamps (with infinities and BC years) and intervals, as ISO-8601.

mod support;

use serde_json::json;
use support::types::{case, round_trip};

#[tokio::test]
async fn dates_times_timestamps_intervals() {
    round_trip(
        "types_time",
        "",
        &[
            case("date", "'2025-11-22'", json!("2025-11-22")),
            case("date", "'0044-03-15 BC'", json!("-0043-03-15")),
            case("date", "'infinity'", json!("infinity")).refused_by_debezium(),
            case("time", "'03:04:05.123456'", json!("03:04:05.123456")),
            case("time", "'23:59:59'", json!("23:59:59")),
            case("timetz", "'12:34:56+02'", json!("12:34:56+02:00")),
            case(
                "timestamp",
                "'2025-11-22 03:04:05.5'",
                json!("2025-11-22T03:04:05.500"),
            ),
            case("timestamp", "'-infinity'", json!("-infinity")).refused_by_debezium(),
            case(
                "timestamptz",
                "'2025-11-22 03:04:05.123+05:30'",
                json!("2025-11-21T21:34:05.123Z"),
            ),
            case("timestamptz", "'infinity'", json!("infinity")),
            case(
                "timestamptz(0)",
                "'1999-12-31 23:59:59Z'",
                json!("1999-12-31T23:59:59Z"),
            ),
            case(
                "interval",
                "'1 year 2 months 3 days 04:05:06.5'",
                json!("P1Y2M3DT4H5M6.5S"),
            ),
        ],
    )
    .await;
}
