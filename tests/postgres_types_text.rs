//! Text, binary, JSON, UUID, network, bit-string, XML, enum and domain values.

mod support;

use serde_json::json;
use support::types::{case, round_trip};

#[tokio::test]
async fn text_binary_json_uuid_network_bits_enums_domains() {
    round_trip(
        "types_text",
        "CREATE TYPE mood AS ENUM ('sad', 'happy'); CREATE DOMAIN posint AS integer CHECK (VALUE > 0); \
         CREATE DOMAIN email AS text;",
        &[
            case("text", "E'line\\nbreak \"quoted\" \\\\ ünïcødé 🎉'", json!("line\nbreak \"quoted\" \\ ünïcødé 🎉")),
            case("varchar(10)", "'short'", json!("short")),
            case("char(5)", "'ab'", json!("ab   ")),
            case("name", "'a_name'", json!("a_name")),
            case("\"char\"", "'x'", json!("x")),
            case("bytea", "'\\x00ff10'::bytea", json!("AP8Q")),
            case("json", "'{\"b\": 1, \"a\": [1.10, null]}'", json!({"b": 1, "a": [1.10, null]})),
            case("jsonb", "'{\"n\": 12345678901234567890123}'", json!({"n": 12345678901234567890123.0})),
            case("uuid", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")),
            case("inet", "'192.168.0.1/24'", json!("192.168.0.1/24")),
            case("cidr", "'10.0.0.0/8'", json!("10.0.0.0/8")),
            case("macaddr", "'08:00:2b:01:02:03'", json!("08:00:2b:01:02:03")),
            case("bit(4)", "B'1010'", json!("1010")),
            case("varbit", "B'101'", json!("101")),
            case("xml", "'<a>x</a>'", json!("<a>x</a>")),
            case("mood", "'happy'", json!("happy")),
            case("posint", "42", json!(42)),
            case("email", "'a@x.org'", json!("a@x.org")),
            case("point", "'(1,2)'", json!("(1,2)")),
        ],
    )
    .await;
}
