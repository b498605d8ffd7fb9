//! The `source` block of Debezium's envelope: the fields Debezium's connector for the same
//! database writes (Postgres: `schema`, `table`, `txId`, `lsn`, `xmin`; MySQL/MariaDB:
//! `table`, `server_id`, `gtid`, `file`, `pos`, `row`, `thread`, `query`), after the fields
//! every connector shares. DynamoDB, which Debezium has no connector for, writes `table`,
//! `shard` and `sequence_number`; the generator `table` and `seq`.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::schema::Schema;
use crate::envelope::{ChangeEvent, SourceKind, SourcePosition};

/// Debezium's `source.version`: the version of what wrote the record.
const VERSION: &str = concat!("cdc-bridge-", env!("CARGO_PKG_VERSION"));

/// The values of `source.snapshot`, as Debezium 2.x declares them.
const SNAPSHOT_VALUES: &str = "true,last,false,incremental";

/// Debezium's name for the connector.
pub fn connector_name(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Postgres => "postgresql",
        SourceKind::Mysql => "mysql",
        SourceKind::Dynamodb => "dynamodb",
        SourceKind::Generator => "generator",
    }
}

/// The source block of `event`.
pub struct SourceBlock<'a>(pub &'a ChangeEvent);

impl Serialize for SourceBlock<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let event = self.0;
        let src = &event.source;
        let ts_ms = src.commit_ts_ms.unwrap_or(event.ts_ms);
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("version", VERSION)?;
        map.serialize_entry("connector", connector_name(src.connector))?;
        map.serialize_entry("name", &*src.pipeline)?;
        map.serialize_entry("ts_ms", &ts_ms)?;
        map.serialize_entry("snapshot", if src.snapshot { "true" } else { "false" })?;
        map.serialize_entry("db", &*src.database)?;
        match &src.position {
            SourcePosition::Postgres(pg) => {
                // [last commit LSN, this change's LSN]: cdc-bridge keeps the commit LSN of
                // the change's own transaction, so the first is unknown.
                let sequence = format!("[null,\"{}\"]", pg.lsn);
                map.serialize_entry("sequence", &sequence)?;
                timestamps(&mut map, ts_ms)?;
                map.serialize_entry("schema", &src.schema.as_deref())?;
                map.serialize_entry("table", &*src.table)?;
                map.serialize_entry("txId", &pg.txid)?;
                map.serialize_entry("lsn", &pg.lsn)?;
                map.serialize_entry("xmin", &None::<i64>)?;
            }
            SourcePosition::Mysql(my) => {
                map.serialize_entry("sequence", &None::<&str>)?;
                timestamps(&mut map, ts_ms)?;
                map.serialize_entry("table", &*src.table)?;
                map.serialize_entry("server_id", &my.server_id)?;
                map.serialize_entry("gtid", &my.gtid.as_deref())?;
                map.serialize_entry("file", &*my.file)?;
                map.serialize_entry("pos", &my.pos)?;
                map.serialize_entry("row", &my.row)?;
                map.serialize_entry("thread", &None::<i64>)?;
                map.serialize_entry("query", &None::<&str>)?;
            }
            SourcePosition::Dynamodb(dy) => {
                map.serialize_entry("sequence", &None::<&str>)?;
                timestamps(&mut map, ts_ms)?;
                map.serialize_entry("table", &*src.table)?;
                map.serialize_entry("shard", &*dy.shard)?;
                map.serialize_entry("sequence_number", &*dy.sequence)?;
            }
            SourcePosition::Generator { seq } => {
                map.serialize_entry("sequence", &None::<&str>)?;
                timestamps(&mut map, ts_ms)?;
                map.serialize_entry("table", &*src.table)?;
                map.serialize_entry("seq", seq)?;
            }
        }
        map.end()
    }
}

fn timestamps<M: SerializeMap>(map: &mut M, ts_ms: i64) -> Result<(), M::Error> {
    map.serialize_entry("ts_us", &ts_ms.saturating_mul(1_000))?;
    map.serialize_entry("ts_ns", &ts_ms.saturating_mul(1_000_000))
}

/// The Connect schema of the source block of events from `kind`.
pub fn source_schema(kind: SourceKind) -> Schema {
    let string = |name: &'static str| Schema::new("string", false).named_field(name);
    let int64 = |name: &'static str| Schema::new("int64", false).named_field(name);
    let optional = |mut schema: Schema| {
        schema.optional = true;
        schema
    };
    let mut fields = vec![
        string("version"),
        string("connector"),
        string("name"),
        int64("ts_ms"),
        Schema {
            parameters: vec![("allowed", SNAPSHOT_VALUES.to_owned())],
            default: Some("false"),
            ..Schema::logical("string", "io.debezium.data.Enum", true)
        }
        .named_field("snapshot"),
        string("db"),
        optional(string("sequence")),
        optional(int64("ts_us")),
        optional(int64("ts_ns")),
    ];
    let name = match kind {
        SourceKind::Postgres => {
            fields.extend([
                string("schema"),
                string("table"),
                optional(int64("txId")),
                optional(int64("lsn")),
                optional(int64("xmin")),
            ]);
            "io.debezium.connector.postgresql.Source"
        }
        SourceKind::Mysql => {
            fields.extend([
                optional(string("table")),
                int64("server_id"),
                optional(string("gtid")),
                string("file"),
                int64("pos"),
                Schema::new("int32", false).named_field("row"),
                optional(int64("thread")),
                optional(string("query")),
            ]);
            "io.debezium.connector.mysql.Source"
        }
        SourceKind::Dynamodb => {
            fields.extend([string("table"), string("shard"), string("sequence_number")]);
            "cdc_bridge.dynamodb.Source"
        }
        SourceKind::Generator => {
            fields.extend([string("table"), int64("seq")]);
            "cdc_bridge.generator.Source"
        }
    };
    Schema::structure(name, fields, false).named_field("source")
}
