//! Events the format tests share: a Postgres `orders` table with a declared schema, and its
//! changes.

use std::sync::Arc;

use chrono::{NaiveDate, TimeZone, Utc};

use crate::envelope::{
    ChangeEvent, ColumnSchema, ColumnType, Decimal, DynamodbPosition, MysqlPosition, Op,
    PostgresPosition, Row, SourceInfo, SourceKind, SourcePosition, TableSchema, Value,
};

pub fn column(
    name: &str,
    source_type: &str,
    kind: ColumnType,
    nullable: bool,
    key: bool,
) -> ColumnSchema {
    ColumnSchema {
        name: name.into(),
        source_type: source_type.into(),
        kind,
        nullable,
        key,
    }
}

pub fn orders_schema() -> Arc<TableSchema> {
    Arc::new(TableSchema {
        columns: vec![
            column(
                "id",
                "bigint",
                ColumnType::Int {
                    bits: 64,
                    unsigned: false,
                },
                false,
                true,
            ),
            column(
                "amount",
                "numeric(10,2)",
                ColumnType::Decimal {
                    precision: Some(10),
                    scale: Some(2),
                },
                true,
                false,
            ),
            column(
                "note",
                "text",
                ColumnType::Text { length: None },
                true,
                false,
            ),
            column(
                "placed_at",
                "timestamp(3) without time zone",
                ColumnType::Timestamp { precision: 3 },
                true,
                false,
            ),
            column(
                "paid_at",
                "timestamp with time zone",
                ColumnType::TimestampTz { precision: 6 },
                true,
                false,
            ),
            column("day", "date", ColumnType::Date, true, false),
        ],
    })
}

pub fn row(columns: &[(&str, Value)]) -> Row {
    columns
        .iter()
        .map(|(n, v)| ((*n).into(), v.clone()))
        .collect()
}

pub fn postgres_event(op: Op, before: Option<Row>, after: Option<Row>) -> ChangeEvent {
    ChangeEvent {
        op,
        source: SourceInfo {
            connector: SourceKind::Postgres,
            pipeline: "shop".into(),
            database: "app".into(),
            schema: Some("public".into()),
            table: "orders".into(),
            table_schema: Some(orders_schema()),
            position: SourcePosition::Postgres(PostgresPosition {
                lsn: 24_023_128,
                txid: Some(748),
            }),
            commit_ts_ms: Some(1_763_781_000_123),
            snapshot: op == Op::Snapshot,
            ttl_expired: false,
        },
        key: if op == Op::Truncate {
            Row::new()
        } else {
            row(&[("id", Value::Int(42))])
        },
        before,
        after,
        unchanged: Vec::new(),
        key_change: None,
        ts_ms: 1_763_781_000_200,
    }
}

pub fn full_row() -> Row {
    row(&[
        ("id", Value::Int(42)),
        ("amount", Value::Decimal(Decimal::parse("19.99").unwrap())),
        ("note", Value::Text("gift".into())),
        (
            "placed_at",
            Value::Timestamp(
                NaiveDate::from_ymd_opt(2025, 11, 22)
                    .unwrap()
                    .and_hms_milli_opt(3, 10, 0, 120)
                    .unwrap(),
            ),
        ),
        (
            "paid_at",
            Value::TimestampTz(Utc.timestamp_opt(1_763_781_000, 120_000_000).unwrap()),
        ),
        (
            "day",
            Value::Date(NaiveDate::from_ymd_opt(2025, 11, 22).unwrap()),
        ),
    ])
}

/// A MySQL insert into `app.orders` with types Debezium's MySQL connector maps its own way:
/// an unsigned int key, a tinyint, a TIME beyond a day, an ENUM, a BIT(16) and a YEAR.
pub fn mysql_event() -> ChangeEvent {
    let schema = Arc::new(TableSchema {
        columns: vec![
            column(
                "id",
                "int unsigned",
                ColumnType::Int {
                    bits: 32,
                    unsigned: true,
                },
                false,
                true,
            ),
            column(
                "small",
                "tinyint",
                ColumnType::Int {
                    bits: 8,
                    unsigned: false,
                },
                true,
                false,
            ),
            column(
                "at",
                "time(3)",
                ColumnType::Time {
                    precision: 3,
                    zoned: false,
                },
                true,
                false,
            ),
            column(
                "size",
                "enum",
                ColumnType::Enum {
                    labels: vec!["s".to_owned(), "m".to_owned()].into(),
                },
                true,
                false,
            ),
            column(
                "flags",
                "bit(16)",
                ColumnType::Bits { length: Some(16) },
                true,
                false,
            ),
            column("y", "year", ColumnType::Year, true, false),
        ],
    });
    let mut event = postgres_event(
        Op::Insert,
        None,
        Some(row(&[
            ("id", Value::UInt(4_000_000_000)),
            ("small", Value::Int(-3)),
            (
                "at",
                Value::Other {
                    type_name: "time".into(),
                    text: "-25:00:00.500000".into(),
                },
            ),
            ("size", Value::Text("m".into())),
            ("flags", Value::UInt(0x0102)),
            ("y", Value::Int(2025)),
        ])),
    );
    event.key = row(&[("id", Value::UInt(4_000_000_000))]);
    event.source.connector = SourceKind::Mysql;
    event.source.schema = None;
    event.source.table_schema = Some(schema);
    event.source.position = SourcePosition::Mysql(MysqlPosition {
        file: "binlog.000003".into(),
        pos: 1_234,
        row: 1,
        server_id: 11,
        gtid: Some("0-11-7".into()),
    });
    event
}

/// A DynamoDB item insert: no table schema; a string key, a number, a string set and a list
/// of mixed types.
pub fn dynamodb_event() -> ChangeEvent {
    let mut event = postgres_event(
        Op::Insert,
        None,
        Some(row(&[
            ("pk", Value::Text("user#1".into())),
            ("n", Value::Decimal(Decimal::parse("1.5").unwrap())),
            ("tags", Value::Array(vec![Value::Text("a".into())])),
            (
                "mixed",
                Value::Array(vec![Value::Text("a".into()), Value::Int(1)]),
            ),
        ])),
    );
    event.key = row(&[("pk", Value::Text("user#1".into()))]);
    event.source.connector = SourceKind::Dynamodb;
    event.source.schema = None;
    event.source.database = "dynamodb".into();
    event.source.table_schema = None;
    event.source.position = SourcePosition::Dynamodb(DynamodbPosition {
        shard: "shardId-1".into(),
        sequence: "100".into(),
    });
    event
}
