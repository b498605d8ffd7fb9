//! Events the format tests share: a Postgres `orders` table with a declared schema, and its
//! changes.

use std::sync::Arc;

use chrono::{NaiveDate, TimeZone, Utc};

use crate::envelope::{
    ChangeEvent, ColumnSchema, ColumnType, Decimal, Op, PostgresPosition, Row, SourceInfo,
    SourceKind, SourcePosition, TableSchema, Value,
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
