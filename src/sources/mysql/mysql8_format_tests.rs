//! MySQL 8's binlog formats, which MariaDB (the only server on the test machines) does not
//! write: a TABLE_MAP with FULL optional metadata, a v2 WRITE_ROWS event (type 30) and binary
//! JSON. Each event is built byte by byte as MySQL 8 writes it (no checksum), read by the same
//! library calls the stream uses, and mapped by [`table`] and [`value`].

use mysql_common::binlog::events::EventData;

use super::gtid::{Gtid, GtidState};
use super::table;
use super::test_events::event;
use super::value;
use crate::envelope::Value;

const TABLE_MAP: u8 = 19;
const WRITE_ROWS_V2: u8 = 30;
const GTID: u8 = 33;
const TABLE_ID: u64 = 91;

/// `app.orders (id BIGINT UNSIGNED PRIMARY KEY, doc JSON, note VARCHAR(20) utf8mb4)`.
fn table_map() -> Vec<u8> {
    let mut body = TABLE_ID.to_le_bytes()[..6].to_vec();
    body.extend(1u16.to_le_bytes()); // flags
    body.extend([3]);
    body.extend(b"app\0");
    body.extend([6]);
    body.extend(b"orders\0");
    body.push(3); // columns
    body.extend([8, 245, 15]); // LONGLONG, JSON, VARCHAR
    body.extend([3, 4, 80, 0]); // metadata: JSON length bytes; VARCHAR max bytes (LE u16)
    body.push(0b110); // nullable: doc, note
    let tlv = |body: &mut Vec<u8>, kind: u8, value: &[u8]| {
        body.push(kind);
        body.push(value.len() as u8);
        body.extend_from_slice(value);
    };
    tlv(&mut body, 1, &[0b1000_0000]); // SIGNEDNESS: the one numeric column is unsigned
    tlv(&mut body, 2, &[45]); // DEFAULT_CHARSET: utf8mb4_general_ci
    tlv(&mut body, 4, b"\x02id\x03doc\x04note"); // COLUMN_NAME
    tlv(&mut body, 8, &[0]); // SIMPLE_PRIMARY_KEY: column 0
    body
}

/// MySQL binary JSON for `{"a": [1, 2]}`: a small object holding a small array of int16s.
fn jsonb_object() -> Vec<u8> {
    let array: Vec<u8> = vec![2, 0, 10, 0, 5, 1, 0, 5, 2, 0];
    let mut object = vec![1, 0, 22, 0]; // one member, 22 bytes
    object.extend([11, 0, 1, 0]); // key at offset 11, 1 byte
    object.extend([2, 12, 0]); // small array at offset 12
    object.push(b'a');
    object.extend(array);
    let mut jsonb = vec![0]; // small object
    jsonb.extend(object);
    jsonb
}

fn write_rows_v2() -> Vec<u8> {
    let mut body = TABLE_ID.to_le_bytes()[..6].to_vec();
    body.extend(1u16.to_le_bytes()); // flags: end of statement
    body.extend(2u16.to_le_bytes()); // extra data length (no extra data)
    body.push(3); // columns
    body.push(0b111); // all present
                      // Row 1: every column set.
    body.push(0); // null bitmap
    body.extend(u64::MAX.to_le_bytes());
    let jsonb = jsonb_object();
    body.extend((jsonb.len() as u32).to_le_bytes());
    body.extend(&jsonb);
    body.push("héllo".len() as u8);
    body.extend("héllo".as_bytes());
    // Row 2: doc and note NULL.
    body.push(0b110);
    body.extend(7u64.to_le_bytes());
    body
}

#[test]
fn v2_rows_with_binary_json_map_to_values() {
    let map_event = event(TABLE_MAP, &table_map());
    let Ok(Some(EventData::TableMapEvent(tme))) = map_event.read_data() else {
        panic!("not a table map")
    };
    let table = table::shape(&tme)
        .unwrap()
        .expect("FULL metadata has names");
    let names: Vec<&str> = table.columns.iter().map(|c| &*c.name).collect();
    assert_eq!(names, ["id", "doc", "note"]);
    assert_eq!(table.key, [0]);
    assert!(table.columns[0].unsigned);

    let rows_event = event(WRITE_ROWS_V2, &write_rows_v2());
    let Ok(Some(EventData::RowsEvent(rows))) = rows_event.read_data() else {
        panic!("not a rows event")
    };
    let mut decoded = Vec::new();
    for pair in rows.rows(&tme) {
        let (before, after) = pair.unwrap();
        assert!(before.is_none(), "an insert has no before image");
        let after = after.unwrap();
        let values: Vec<Value> = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, column)| value::value(column, after.as_ref(i)).unwrap())
            .collect();
        decoded.push(values);
    }
    assert_eq!(decoded.len(), 2);
    assert_eq!(decoded[0][0], Value::UInt(u64::MAX));
    let Value::Json(doc) = &decoded[0][1] else {
        panic!("doc is {:?}", decoded[0][1])
    };
    let doc: serde_json::Value = serde_json::from_str(doc.as_str()).unwrap();
    assert_eq!(doc, serde_json::json!({"a": [1, 2]}));
    assert_eq!(decoded[0][2], Value::Text("héllo".into()));
    assert_eq!(decoded[1], [Value::UInt(7), Value::Null, Value::Null]);
}

#[test]
fn gtid_events_extend_the_executed_set() {
    let uuid = [
        0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42, 0x95,
        0x62,
    ];
    let mut body = vec![1]; // flags: may have been committed
    body.extend(uuid);
    body.extend(24u64.to_le_bytes()); // transaction number
    body.push(2); // logical timestamps follow
    body.extend(10u64.to_le_bytes()); // last committed
    body.extend(11u64.to_le_bytes()); // sequence number
    let gtid_event = event(GTID, &body);
    let Ok(Some(EventData::GtidEvent(gtid))) = gtid_event.read_data() else {
        panic!("not a GTID event")
    };
    let gtid = Gtid::from_mysql(&gtid).unwrap();
    assert_eq!(gtid.to_string(), "3e11fa47-71ca-11e1-9e33-c80aa9429562:24");
    let mut state = GtidState::parse("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-23").unwrap();
    state.commit(&gtid);
    assert_eq!(
        state.to_string(),
        "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-24"
    );
}

/// `app.d (n DECIMAL)` with the column's precision and scale as the TABLE_MAP gives them.
fn decimal_table_map(precision: u8, scale: u8) -> Vec<u8> {
    let mut body = TABLE_ID.to_le_bytes()[..6].to_vec();
    body.extend(1u16.to_le_bytes());
    body.extend([3]);
    body.extend(b"app\0");
    body.extend([1]);
    body.extend(b"d\0");
    body.push(1); // columns
    body.push(246); // NEWDECIMAL
    body.extend([2, precision, scale]); // metadata
    body.push(0b1); // nullable
    body
}

#[test]
fn a_decimal_scale_beyond_its_precision_is_malformed() {
    // The row reader would size a buffer from (precision - scale): 8e18 bytes, an abort.
    for (precision, scale, valid) in [
        (10, 20, false),
        (0, 0, false),
        (66, 2, false),
        (65, 30, true),
    ] {
        let map_event = event(TABLE_MAP, &decimal_table_map(precision, scale));
        let Ok(Some(EventData::TableMapEvent(tme))) = map_event.read_data() else {
            panic!("not a table map")
        };
        assert_eq!(
            table::shape(&tme).is_ok(),
            valid,
            "DECIMAL({precision},{scale})"
        );
        assert_eq!(
            table::shape_from_catalog(&tme, &[], &[]).is_err_and(|e| e.contains("DECIMAL")),
            !valid,
            "DECIMAL({precision},{scale})"
        );
    }
}

#[test]
fn a_column_with_less_metadata_than_its_type_has_is_malformed() {
    // VARCHAR with one metadata byte of the two MySQL writes: the row reader indexes both.
    let mut body = TABLE_ID.to_le_bytes()[..6].to_vec();
    body.extend(1u16.to_le_bytes());
    body.extend([3]);
    body.extend(b"app\0");
    body.extend([1]);
    body.extend(b"v\0");
    body.push(1); // columns
    body.push(15); // VARCHAR
    body.extend([1, 80]); // metadata: 1 byte
    body.push(0b1); // nullable
    let map_event = event(TABLE_MAP, &body);
    let Ok(Some(EventData::TableMapEvent(tme))) = map_event.read_data() else {
        panic!("not a table map")
    };
    assert!(table::shape(&tme).is_err_and(|e| e.contains("metadata")));
}
