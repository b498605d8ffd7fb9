//! MySQL character and binary strings from MariaDB through the snapshot and the binlog:
//! CHAR / VARCHAR / TEXT in utf8mb4 (accents, emoji, trailing spaces) and in latin1 (é is one
//! byte there: text in the JSON all the same), BINARY / VARBINARY / BLOB as base64 (0x00 and
//! 0xff, BINARY's zero padding), values over 255 bytes, empty strings apart from NULLs.

mod support;

use base64::Engine as _;
use serde_json::json;
use support::mysql::type_round_trip;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utf8mb4_text_and_bytes() {
    let long_text = "é😀".repeat(100);
    let long_bytes = base64::engine::general_purpose::STANDARD.encode([0u8, 0xff].repeat(150));
    type_round_trip(
        "strings",
        "",
        "c CHAR(10) CHARACTER SET utf8mb4, v VARCHAR(300) CHARACTER SET utf8mb4, \
         t TEXT CHARACTER SET utf8mb4, vb VARBINARY(300), bl BLOB",
        &[
            (
                "'héllo', 'héllo', 'h😀llo', x'00ff', x'00ff00ff00ff'",
                json!({"c": "héllo", "v": "héllo", "t": "h😀llo", "vb": "AP8=",
                       "bl": "AP8A/wD/"}),
            ),
            (
                "'', '', '', '', ''",
                json!({"c": "", "v": "", "t": "", "vb": "", "bl": ""}),
            ),
            (
                // CHAR drops trailing spaces, VARCHAR and TEXT keep them.
                "'😀  ', ' 😀 ', ' ', x'ff', x'00'",
                json!({"c": "😀", "v": " 😀 ", "t": " ", "vb": "/w==", "bl": "AA=="}),
            ),
            (
                &format!(
                    "'x', '{long_text}', '{long_text}', REPEAT(x'00ff', 150), \
                          REPEAT(x'00ff', 150)"
                ),
                json!({"c": "x", "v": long_text, "t": long_text, "vb": long_bytes,
                       "bl": long_bytes}),
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latin1_text() {
    type_round_trip(
        "latin1",
        "",
        "lc CHAR(5) CHARACTER SET latin1, lv VARCHAR(10) CHARACTER SET latin1, \
         lt TEXT CHARACTER SET latin1",
        &[
            (
                "'é', 'café', 'ÿé'",
                json!({"lc": "é", "lv": "café", "lt": "ÿé"}),
            ),
            (
                "'', 'b  ', 'c '",
                json!({"lc": "", "lv": "b  ", "lt": "c "}),
            ),
            (
                "'ÀÿÆ', 'Ünïcödé', REPEAT('é', 300)",
                json!({"lc": "ÀÿÆ", "lv": "Ünïcödé", "lt": "é".repeat(300)}),
            ),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_keeps_its_zero_padding() {
    type_round_trip(
        "binaries",
        "",
        "bn BINARY(4), b16 BINARY(16)",
        &[
            (
                "x'00ff', x'01'",
                json!({"bn": "AP8AAA==", "b16": "AQAAAAAAAAAAAAAAAAAAAA=="}),
            ),
            (
                "'', x'00'",
                json!({"bn": "AAAAAA==", "b16": "AAAAAAAAAAAAAAAAAAAAAA=="}),
            ),
            (
                "x'ff00ff00', x'000102030405060708090a0b0c0d0eff'",
                json!({"bn": "/wD/AA==", "b16": "AAECAwQFBgcICQoLDA0O/w=="}),
            ),
            (
                "x'00010203', x'ff'",
                json!({"bn": "AAECAw==", "b16": "/wAAAAAAAAAAAAAAAAAAAA=="}),
            ),
        ],
    )
    .await;
}
