//! Row decoding, byte by byte: each test builds a TABLE_MAP and a rows event as the server
//! writes them (MySQL 8 and MariaDB encodings where they differ), reads them with the same
//! library calls the stream uses, and decodes the rows with [`TableRows`]. The equivalence
//! tests also read the same bytes through mysql_common's row reader and [`value::value`] (the
//! path this decoder replaced; still used for partial JSON updates) and compare.

use chrono::{NaiveDate, NaiveTime, TimeZone, Utc};
use mysql_common::binlog::events::{Event, EventData};

use super::*;
use crate::sources::mysql::stream::library_rows;
use crate::sources::mysql::table::{self, CatalogColumn};
use crate::sources::mysql::test_events::event;

const TABLE_MAP: u8 = 19;
const WRITE_V1: u8 = 23;
const UPDATE_V1: u8 = 24;
const DELETE_V1: u8 = 25;
const WRITE_V2: u8 = 30;
const UPDATE_V2: u8 = 31;
const DELETE_V2: u8 = 32;
const TABLE_ID: u64 = 77;

/// A column: its binlog type, TABLE_MAP metadata, and how the catalog describes it.
#[derive(Clone)]
struct Col {
    kind: u8,
    meta: Vec<u8>,
    unsigned: bool,
    binary: bool,
    latin1: bool,
    labels: Vec<String>,
}

fn col(kind: u8, meta: &[u8]) -> Col {
    Col {
        kind,
        meta: meta.to_vec(),
        unsigned: false,
        binary: false,
        latin1: false,
        labels: Vec::new(),
    }
}

impl Col {
    fn unsigned(mut self) -> Self {
        self.unsigned = true;
        self
    }
    fn binary(mut self) -> Self {
        self.binary = true;
        self
    }
    fn latin1(mut self) -> Self {
        self.latin1 = true;
        self
    }
    fn labels(mut self) -> Self {
        self.labels = vec!["a".into(), "b".into(), "c".into()];
        self
    }
}

/// `app.t` with `cols`, without optional metadata (MariaDB's default, MySQL's MINIMAL).
fn table_map(cols: &[Col]) -> Event {
    let mut body = TABLE_ID.to_le_bytes()[..6].to_vec();
    body.extend(1u16.to_le_bytes());
    body.extend(b"\x03app\0\x01t\0");
    body.push(cols.len() as u8);
    body.extend(cols.iter().map(|c| c.kind));
    let meta: Vec<u8> = cols.iter().flat_map(|c| c.meta.clone()).collect();
    body.push(meta.len() as u8);
    body.extend(meta);
    body.extend(vec![0xff; cols.len().div_ceil(8)]); // all nullable
    event(TABLE_MAP, &body)
}

/// A rows event: v2 types carry the extra-data header (`extra` after its length).
fn rows_event(
    type_code: u8,
    columns: usize,
    bitmaps: &[Vec<u8>],
    extra: &[u8],
    data: &[u8],
) -> Event {
    let mut body = TABLE_ID.to_le_bytes()[..6].to_vec();
    body.extend(1u16.to_le_bytes());
    if type_code >= WRITE_V2 {
        body.extend((2 + extra.len() as u16).to_le_bytes());
        body.extend(extra);
    }
    body.push(columns as u8);
    for bitmap in bitmaps {
        body.extend(bitmap);
    }
    body.extend(data);
    event(type_code, &body)
}

fn all_present(columns: usize) -> Vec<u8> {
    let mut bitmap = vec![0xff; columns.div_ceil(8)];
    if !columns.is_multiple_of(8) {
        *bitmap.last_mut().unwrap() = (1 << (columns % 8)) - 1;
    }
    bitmap
}

/// One image holding every column: the null bitmap (none null), then the values.
fn image(values: &[Vec<u8>]) -> Vec<u8> {
    let mut data = vec![0; values.len().div_ceil(8)];
    for v in values {
        data.extend(v);
    }
    data
}

/// The table's decoder and the shape from a stand-in catalog.
fn decoder(cols: &[Col], map: &Event) -> TableRows {
    let Ok(Some(EventData::TableMapEvent(tme))) = map.read_data() else {
        panic!("not a table map")
    };
    let catalog: Vec<CatalogColumn> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| CatalogColumn {
            name: format!("c{i}"),
            unsigned: c.unsigned,
            binary: c.binary,
            latin1: c.latin1,
            labels: c.labels.clone(),
            json: false,
        })
        .collect();
    let shape = table::shape_from_catalog(&tme, &catalog, &[0]).expect("a shape");
    TableRows::new(shape, &tme)
}

/// The rows of `rows` by this decoder and by the library path.
fn both(cols: &[Col], rows: &Event) -> (Result<Vec<Images>, String>, Result<Vec<Images>, String>) {
    let map = table_map(cols);
    let table = decoder(cols, &map);
    let Ok(Some(EventData::TableMapEvent(tme))) = map.read_data() else {
        panic!("not a table map")
    };
    let Ok(Some(EventData::RowsEvent(rows))) = rows.read_data() else {
        panic!("not a rows event")
    };
    (table.decode(&rows), library_rows(&table.shape, &rows, &tme))
}

fn values(row: &Row) -> Vec<Value> {
    row.iter().map(|(_, v)| v.clone()).collect()
}

/// Decodes one inserted row with every column set (v2 and v1 events), checks it against the
/// library path, and returns its values.
fn write_one(cols: &[Col], values_bytes: &[Vec<u8>]) -> Vec<Value> {
    let data = image(values_bytes);
    let mut decoded = Vec::new();
    for (type_code, extra) in [
        (WRITE_V2, &[][..]),
        (WRITE_V1, &[][..]),
        (WRITE_V2, &[1, 3, 0, 7][..]),
    ] {
        let event = rows_event(
            type_code,
            cols.len(),
            &[all_present(cols.len())],
            extra,
            &data,
        );
        let (ours, library) = both(cols, &event);
        let ours = ours.expect("decodes");
        assert_eq!(Ok(&ours), library.as_ref(), "ours vs the library path");
        assert_eq!(ours.len(), 1);
        let (before, after) = &ours[0];
        assert!(before.is_none());
        decoded.push(values(after.as_ref().unwrap()));
    }
    assert!(decoded.windows(2).all(|w| w[0] == w[1]), "v1 and v2 differ");
    decoded.remove(0)
}

/// One column, one value: its decoded value.
fn one(column: Col, bytes: &[u8]) -> Value {
    write_one(&[column], &[bytes.to_vec()]).remove(0)
}

fn other(type_name: &str, text: &str) -> Value {
    Value::Other {
        type_name: type_name.into(),
        text: text.into(),
    }
}

// Encoders, as the server writes each type.

/// DECIMAL(precision, scale) from its text: 9-digit groups in 4 big-endian bytes (leftover
/// digits in fewer), a negative number's bits inverted, the first bit flipped.
fn decimal_bytes(text: &str, precision: usize, scale: usize) -> Vec<u8> {
    const PARTIAL: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let int = format!("{int:0>width$}", width = precision - scale);
    let frac = format!("{frac:0<scale$}");
    let mut out: Vec<u8> = Vec::new();
    let mut push = |digits: &str| {
        let n = PARTIAL[digits.len()];
        let v: u32 = digits.parse().unwrap();
        out.extend(&v.to_be_bytes()[4 - n..]);
    };
    let lead = int.len() % 9;
    if lead > 0 {
        push(&int[..lead]);
    }
    for chunk in int.as_bytes()[lead..].chunks(9) {
        push(std::str::from_utf8(chunk).unwrap());
    }
    for chunk in frac.as_bytes().chunks(9) {
        push(std::str::from_utf8(chunk).unwrap());
    }
    if negative {
        out.iter_mut().for_each(|b| *b = !*b);
    }
    out[0] ^= 0x80;
    out
}

/// MySQL's packed TIME: hours << 36 | minutes << 30 | seconds << 24, plus microseconds.
fn packed_time(negative: bool, h: i64, m: i64, s: i64, us: i64) -> i64 {
    let magnitude = (((h << 12) | (m << 6) | s) << 24) + us;
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

/// TIME(fsp) as MySQL 5.6+ / MariaDB 10.1+ write it (my_time_packed_to_binary).
fn time2_bytes(packed: i64, fsp: u8) -> Vec<u8> {
    if fsp >= 5 {
        return (packed + 0x8000_0000_0000).to_be_bytes()[2..].to_vec();
    }
    let mut out = ((packed >> 24) + 0x80_0000).to_be_bytes()[5..].to_vec();
    let remainder = packed % (1 << 24);
    match fsp {
        1 | 2 => out.push((remainder / 10_000) as i8 as u8),
        3 | 4 => out.extend(((remainder / 100) as i16).to_be_bytes()),
        _ => {}
    }
    out
}

/// DATETIME(fsp) (MySQL 5.6+ / MariaDB 10.1+).
fn datetime2_bytes(date: (i64, i64, i64), time: (i64, i64, i64), us: i64, fsp: u8) -> Vec<u8> {
    let ymd = ((date.0 * 13 + date.1) << 5) | date.2;
    let hms = (time.0 << 12) | (time.1 << 6) | time.2;
    let mut out = (((ymd << 17) | hms) + 0x80_0000_0000).to_be_bytes()[3..].to_vec();
    out.extend(fraction_bytes(us, fsp));
    out
}

fn fraction_bytes(us: i64, fsp: u8) -> Vec<u8> {
    match fsp {
        1 | 2 => vec![(us / 10_000) as u8],
        3 | 4 => ((us / 100) as u16).to_be_bytes().to_vec(),
        5 | 6 => (us as u32).to_be_bytes()[1..].to_vec(),
        _ => Vec::new(),
    }
}

fn timestamp2_bytes(secs: u32, us: i64, fsp: u8) -> Vec<u8> {
    let mut out = secs.to_be_bytes().to_vec();
    out.extend(fraction_bytes(us, fsp));
    out
}

/// A length prefix of `n` bytes, then `bytes`.
fn prefixed(n: usize, bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u32).to_le_bytes()[..n].to_vec();
    out.extend(bytes);
    out
}

/// MySQL binary JSON for `{"a": [1, 2]}`.
fn jsonb_object() -> Vec<u8> {
    let array: Vec<u8> = vec![2, 0, 10, 0, 5, 1, 0, 5, 2, 0];
    let mut jsonb = vec![0, 1, 0, 22, 0, 11, 0, 1, 0, 2, 12, 0, b'a'];
    jsonb.extend(array);
    jsonb
}

fn geometry_point() -> Vec<u8> {
    let mut stored = 4326u32.to_le_bytes().to_vec();
    stored.push(1);
    stored.extend(1u32.to_le_bytes());
    stored.extend(1f64.to_le_bytes());
    stored.extend(2f64.to_le_bytes());
    stored
}

/// A column of every type with a value each, and the value it decodes to.
fn every_type() -> Vec<(Col, Vec<u8>, Value)> {
    let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
    let ts = |secs: i64, micros: u32| {
        Value::TimestampTz(Utc.timestamp_opt(secs, micros * 1000).unwrap())
    };
    let text = |s: &str| Value::Text(s.into());
    let json = |s: &str| Value::Json(crate::envelope::Json::parse(s).unwrap());
    vec![
        (col(1, &[]), vec![0xfb], Value::Int(-5)),
        (col(1, &[]).unsigned(), vec![0xfb], Value::UInt(251)),
        (
            col(2, &[]),
            (-300i16).to_le_bytes().to_vec(),
            Value::Int(-300),
        ),
        (
            col(2, &[]).unsigned(),
            65535u16.to_le_bytes().to_vec(),
            Value::UInt(65535),
        ),
        (col(9, &[]), vec![0xfe, 0xff, 0xff], Value::Int(-2)),
        (
            col(9, &[]).unsigned(),
            vec![0xfe, 0xff, 0xff],
            Value::UInt(0xff_fffe),
        ),
        (
            col(3, &[]),
            (-100_000i32).to_le_bytes().to_vec(),
            Value::Int(-100_000),
        ),
        (
            col(3, &[]).unsigned(),
            u32::MAX.to_le_bytes().to_vec(),
            Value::UInt(u32::MAX.into()),
        ),
        (
            col(8, &[]),
            i64::MIN.to_le_bytes().to_vec(),
            Value::Int(i64::MIN),
        ),
        (
            col(8, &[]).unsigned(),
            u64::MAX.to_le_bytes().to_vec(),
            Value::UInt(u64::MAX),
        ),
        (
            col(4, &[4]),
            1.1f32.to_le_bytes().to_vec(),
            Value::Float(1.1),
        ),
        (
            col(5, &[8]),
            (-2.5f64).to_le_bytes().to_vec(),
            Value::Float(-2.5),
        ),
        (
            col(246, &[10, 2]),
            decimal_bytes("-1234.56", 10, 2),
            dec("-1234.56"),
        ),
        (
            col(246, &[10, 2]),
            decimal_bytes("0.05", 10, 2),
            dec("0.05"),
        ),
        (
            col(246, &[30, 10]),
            decimal_bytes("12345678901234567890.0123456789", 30, 10),
            dec("12345678901234567890.0123456789"),
        ),
        (
            col(246, &[5, 0]).unsigned(),
            decimal_bytes("0", 5, 0),
            dec("0"),
        ),
        (
            col(246, &[65, 30]),
            decimal_bytes("-1.5", 65, 30),
            dec("-1.500000000000000000000000000000"),
        ),
        (col(13, &[]), vec![125], Value::Int(2025)),
        (col(13, &[]), vec![0], Value::Int(0)),
        (
            col(10, &[]),
            (29u32 | 2 << 5 | 2024 << 9).to_le_bytes()[..3].to_vec(),
            Value::Date(date(2024, 2, 29)),
        ),
        (col(10, &[]), vec![0, 0, 0], Value::Null),
        (
            col(11, &[]),
            123_456u32.to_le_bytes()[..3].to_vec(),
            Value::Time(NaiveTime::from_hms_opt(12, 34, 56).unwrap()),
        ),
        (
            col(12, &[]),
            20_240_229_123_456u64.to_le_bytes().to_vec(),
            Value::Timestamp(date(2024, 2, 29).and_hms_opt(12, 34, 56).unwrap()),
        ),
        (
            col(7, &[]),
            1_700_000_000u32.to_le_bytes().to_vec(),
            Value::Int(1_700_000_000),
        ),
        (
            col(19, &[0]),
            time2_bytes(packed_time(false, 12, 34, 56, 0), 0),
            Value::Time(NaiveTime::from_hms_opt(12, 34, 56).unwrap()),
        ),
        (
            col(19, &[0]),
            time2_bytes(packed_time(true, 838, 59, 59, 0), 0),
            other("time", "-838:59:59.000000"),
        ),
        (
            col(19, &[2]),
            time2_bytes(packed_time(true, 12, 34, 56, 780_000), 2),
            other("time", "-12:34:56.780000"),
        ),
        (
            col(19, &[1]),
            time2_bytes(packed_time(true, 0, 0, 0, 500_000), 1),
            other("time", "-00:00:00.500000"),
        ),
        (
            col(19, &[2]),
            time2_bytes(packed_time(false, 25, 0, 1, 10_000), 2),
            other("time", "25:00:01.010000"),
        ),
        (
            col(19, &[3]),
            time2_bytes(packed_time(true, 1, 2, 3, 456_000), 3),
            other("time", "-01:02:03.456000"),
        ),
        (
            col(19, &[4]),
            time2_bytes(packed_time(false, 1, 2, 3, 456_700), 4),
            Value::Time(NaiveTime::from_hms_micro_opt(1, 2, 3, 456_700).unwrap()),
        ),
        (
            col(19, &[6]),
            time2_bytes(packed_time(true, 1, 2, 3, 456_789), 6),
            other("time", "-01:02:03.456789"),
        ),
        (
            col(19, &[6]),
            time2_bytes(packed_time(false, 23, 59, 59, 999_999), 6),
            Value::Time(NaiveTime::from_hms_micro_opt(23, 59, 59, 999_999).unwrap()),
        ),
        (
            col(18, &[0]),
            datetime2_bytes((2024, 2, 29), (12, 34, 56), 0, 0),
            Value::Timestamp(date(2024, 2, 29).and_hms_opt(12, 34, 56).unwrap()),
        ),
        (
            col(18, &[2]),
            datetime2_bytes((1000, 1, 1), (0, 0, 0), 120_000, 2),
            Value::Timestamp(
                date(1000, 1, 1)
                    .and_hms_micro_opt(0, 0, 0, 120_000)
                    .unwrap(),
            ),
        ),
        (
            col(18, &[4]),
            datetime2_bytes((9999, 12, 31), (23, 59, 59), 999_900, 4),
            Value::Timestamp(
                date(9999, 12, 31)
                    .and_hms_micro_opt(23, 59, 59, 999_900)
                    .unwrap(),
            ),
        ),
        (
            col(18, &[6]),
            datetime2_bytes((2024, 7, 1), (1, 2, 3), 456_789, 6),
            Value::Timestamp(
                date(2024, 7, 1)
                    .and_hms_micro_opt(1, 2, 3, 456_789)
                    .unwrap(),
            ),
        ),
        (
            col(18, &[0]),
            datetime2_bytes((0, 0, 0), (0, 0, 0), 0, 0),
            Value::Null,
        ),
        (
            col(18, &[0]),
            datetime2_bytes((2025, 0, 10), (0, 0, 0), 0, 0),
            other("datetime", "2025-00-10 00:00:00.000000"),
        ),
        (
            col(17, &[0]),
            timestamp2_bytes(1_700_000_000, 0, 0),
            ts(1_700_000_000, 0),
        ),
        (
            col(17, &[6]),
            timestamp2_bytes(1_700_000_000, 123_456, 6),
            ts(1_700_000_000, 123_456),
        ),
        (
            col(17, &[3]),
            timestamp2_bytes(1, 500_000, 3),
            ts(1, 500_000),
        ),
        (col(17, &[2]), timestamp2_bytes(0, 0, 2), Value::Null),
        (col(16, &[2, 1]), vec![0x02, 0xff], Value::UInt(0x2ff)),
        (
            col(16, &[0, 8]),
            u64::MAX.to_be_bytes().to_vec(),
            Value::UInt(u64::MAX),
        ),
        (col(254, &[247, 1]).labels(), vec![2], text("b")),
        (col(254, &[247, 1]).labels(), vec![0], text("")),
        (
            col(254, &[247, 2]).labels(),
            9u16.to_le_bytes().to_vec(),
            Value::UInt(9),
        ),
        (col(254, &[248, 1]).labels(), vec![0b101], text("a,c")),
        (
            col(15, &[80, 0]),
            prefixed(1, "héllo".as_bytes()),
            text("héllo"),
        ),
        (
            col(15, &[0x2c, 1]),
            prefixed(2, &[b'x'; 300]),
            text(&"x".repeat(300)),
        ),
        (
            col(15, &[80, 0]).latin1(),
            prefixed(1, b"caf\xe9\x80"),
            text("café€"),
        ),
        (
            col(15, &[80, 0]),
            prefixed(1, b"\xff\xfe"),
            Value::Bytes(vec![0xff, 0xfe]),
        ),
        (
            col(15, &[80, 0]).binary(),
            prefixed(1, b"ab"),
            Value::Bytes(b"ab".to_vec()),
        ),
        (
            col(254, &[0xfe, 4]).binary(),
            prefixed(1, &[1, 2]),
            Value::Bytes(vec![1, 2, 0, 0]),
        ),
        (col(254, &[0xee, 0x90]), prefixed(2, b"x"), text("x")),
        (col(254, &[0xfe, 40]), prefixed(1, b"abc"), text("abc")),
        (
            col(252, &[2]).binary(),
            prefixed(2, &[0, 1, 2]),
            Value::Bytes(vec![0, 1, 2]),
        ),
        (col(252, &[1]), prefixed(1, b"tiny"), text("tiny")),
        (col(252, &[3]), prefixed(3, b"medium"), text("medium")),
        (
            col(252, &[4]),
            prefixed(4, b"{\"k\": 1}"),
            text("{\"k\": 1}"),
        ),
        (
            col(255, &[4]),
            prefixed(4, &geometry_point()),
            json(r#"{"srid":4326,"wkb":"AQEAAAAAAAAAAADwPwAAAAAAAABA"}"#),
        ),
        (
            col(245, &[4]),
            prefixed(4, &jsonb_object()),
            json(r#"{"a":[1,2]}"#),
        ),
        (col(245, &[4]), prefixed(4, &[]), json("null")),
    ]
}

fn dec(text: &str) -> Value {
    Value::Decimal(crate::envelope::Decimal::parse(text).unwrap())
}

#[test]
fn every_type_decodes_alone() {
    for (column, bytes, expected) in every_type() {
        let kind = column.kind;
        let meta = column.meta.clone();
        assert_eq!(
            one(column, &bytes),
            expected,
            "type {kind} meta {meta:?} bytes {bytes:?}"
        );
    }
}

/// One row of every type, through v1 and v2 events: the same values as the library path.
#[test]
fn a_row_of_every_type_matches_the_library_path() {
    let cases = every_type();
    let cols: Vec<Col> = cases.iter().map(|c| c.0.clone()).collect();
    let bytes: Vec<Vec<u8>> = cases.iter().map(|c| c.1.clone()).collect();
    let expected: Vec<Value> = cases.iter().map(|c| c.2.clone()).collect();
    assert_eq!(write_one(&cols, &bytes), expected);
}

/// Updates carry the before image, then the after image; deletes the before image only;
/// null bits leave a column's bytes out. v1 (MariaDB) and v2 (MySQL 8) alike.
#[test]
fn updates_and_deletes_with_nulls() {
    let cols = vec![col(8, &[]).unsigned(), col(15, &[80, 0]), col(3, &[])];
    let present = all_present(3);
    // before: (1, "old", NULL); after: (1, NULL, 7)
    let mut data = vec![0b100];
    data.extend(1u64.to_le_bytes());
    data.extend(prefixed(1, b"old"));
    data.push(0b010);
    data.extend(1u64.to_le_bytes());
    data.extend(7i32.to_le_bytes());
    for type_code in [UPDATE_V1, UPDATE_V2] {
        let event = rows_event(
            type_code,
            3,
            &[present.clone(), present.clone()],
            &[],
            &data,
        );
        let (ours, library) = both(&cols, &event);
        assert_eq!(ours, library);
        let ours = ours.unwrap();
        assert_eq!(ours.len(), 1);
        let (before, after) = &ours[0];
        assert_eq!(
            values(before.as_ref().unwrap()),
            [Value::UInt(1), Value::Text("old".into()), Value::Null]
        );
        assert_eq!(
            values(after.as_ref().unwrap()),
            [Value::UInt(1), Value::Null, Value::Int(7)]
        );
    }
    // Two deleted rows.
    let mut data = vec![0b110];
    data.extend(5u64.to_le_bytes());
    data.push(0b000);
    data.extend(6u64.to_le_bytes());
    data.extend(prefixed(1, b""));
    data.extend((-1i32).to_le_bytes());
    for type_code in [DELETE_V1, DELETE_V2] {
        let event = rows_event(type_code, 3, std::slice::from_ref(&present), &[], &data);
        let (ours, library) = both(&cols, &event);
        assert_eq!(ours, library);
        let ours = ours.unwrap();
        assert_eq!(ours.len(), 2);
        assert!(ours
            .iter()
            .all(|(before, after)| before.is_some() && after.is_none()));
        assert_eq!(
            values(ours[1].0.as_ref().unwrap()),
            [Value::UInt(6), Value::Text(String::new()), Value::Int(-1)]
        );
    }
}

/// A column left out of an image (binlog_row_image = MINIMAL) is null; the null bitmap covers
/// only the columns present.
#[test]
fn columns_absent_from_an_image_are_null() {
    let cols = vec![col(3, &[]), col(3, &[]), col(3, &[])];
    let mut data = vec![0b00]; // before: columns 0 and 2, neither null
    data.extend(1i32.to_le_bytes());
    data.extend(3i32.to_le_bytes());
    data.push(0b1); // after: column 1, null
    let event = rows_event(UPDATE_V2, 3, &[vec![0b101], vec![0b010]], &[], &data);
    let (ours, _) = both(&cols, &event);
    let ours = ours.unwrap();
    assert_eq!(
        values(ours[0].0.as_ref().unwrap()),
        [Value::Int(1), Value::Null, Value::Int(3)]
    );
    assert_eq!(
        values(ours[0].1.as_ref().unwrap()),
        [Value::Null, Value::Null, Value::Null]
    );
}

/// Every cut of a row's bytes is an error, never a panic; so are bytes the plan cannot read.
#[test]
fn damaged_rows_are_errors() {
    let cases = every_type();
    let cols: Vec<Col> = cases.iter().map(|c| c.0.clone()).collect();
    let bytes: Vec<Vec<u8>> = cases.iter().map(|c| c.1.clone()).collect();
    let data = image(&bytes);
    let map = table_map(&cols);
    let table = decoder(&cols, &map);
    for cut in 1..data.len() {
        let event = rows_event(
            WRITE_V2,
            cols.len(),
            &[all_present(cols.len())],
            &[],
            &data[..cut],
        );
        let Ok(Some(EventData::RowsEvent(rows))) = event.read_data() else {
            panic!("not a rows event")
        };
        assert!(table.decode(&rows).is_err(), "cut at {cut}");
    }
    // Each column alone, each of its bytes flipped and cut: any result but a panic.
    for (column, bytes, _) in cases {
        let cols = [column];
        for i in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[i] ^= flip;
                for data in [image(&[damaged.clone()]), image(&[damaged[..i].to_vec()])] {
                    let event = rows_event(WRITE_V1, 1, &[vec![1]], &[], &data);
                    // Where both paths read a value, it is the same one; except TIME(1)/(2)
                    // with a fraction byte over 99 hundredths, which the library path's
                    // repair of negative fractions takes for a wrong negative time.
                    let (ours, library) = both(&cols, &event);
                    if let (Ok(ours), Ok(library), false) = (&ours, &library, cols[0].kind == 19) {
                        assert_eq!(ours, library, "{data:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn unreadable_metadata_and_column_counts_are_errors() {
    let decode = |cols: &[Col], columns: usize, data: &[u8]| {
        let event = rows_event(WRITE_V2, columns, &[all_present(columns)], &[], data);
        both(cols, &event).0
    };
    // An ENUM of 3 bytes, a BLOB with a 5-byte length: errors once a value is there.
    for column in [col(254, &[247, 3]).labels(), col(252, &[5])] {
        let cols = [column];
        assert!(decode(&cols, 1, &[0, 1, 1, 1, 1, 1]).is_err());
        assert_eq!(
            decode(&cols, 1, &[1]).unwrap()[0].1.as_ref().map(values),
            Some(vec![Value::Null])
        );
    }
    // Images of no column take no bytes: bytes after them are an error, not endless rows.
    // (The library path reads such rows forever: it is not run here.)
    let cols = [col(1, &[])];
    let table = decoder(&cols, &table_map(&cols));
    let event = rows_event(WRITE_V2, 1, &[vec![0]], &[], &[1, 2]);
    let Ok(Some(EventData::RowsEvent(rows))) = event.read_data() else {
        panic!("not a rows event")
    };
    assert!(table.decode(&rows).is_err());
    // A rows event with another column count than its TABLE_MAP.
    assert!(decode(&[col(1, &[])], 2, &[0, 1, 2]).is_err());
    // A length past the end; a timestamp fraction over a second; bad binary JSON.
    assert!(decode(&[col(252, &[4])], 1, &[0, 0xff, 0xff, 0xff, 0xff]).is_err());
    assert!(decode(&[col(17, &[6])], 1, &[0, 0, 0, 0, 1, 0x0f, 0x42, 0x40]).is_err());
    assert!(decode(&[col(245, &[4])], 1, &[0, 1, 0, 0, 0, 0x7f]).is_err());
}

#[test]
fn decimals_print_as_mysql_common_does() {
    for (text, p, s) in [
        ("0.000", 6, 3),
        ("-0.001", 6, 3),
        ("999999999999999999", 18, 0),
        ("-100000000", 9, 0),
        ("1.000000001", 10, 9),
        (
            "-123456789012345678901234567890.123456789012345678901234567890",
            60,
            30,
        ),
    ] {
        let stored = decimal_bytes(text, p, s);
        assert_eq!(stored.len(), decimal_size(p, s), "{text}");
        assert_eq!(decimal_text(&stored, p, s), text);
        let library = mysql_common::binlog::decimal::Decimal::read_bin(&stored[..], p, s, false)
            .unwrap()
            .to_string();
        assert_eq!(library, text);
    }
}
