//! Where in its source a change was read, typed per source: a format reads the LSN, the binlog
//! file and offset or the shard and sequence number as fields, never by parsing a string.
//!
//! [`SourcePosition`]'s text form (`Display`) is the one cdc-bridge's JSON format has always
//! written as `source.position`: `X/Y` (a Postgres LSN), `file:pos`, `shard:sequence`, or the
//! generator's sequence number.

use std::fmt;
use std::sync::Arc;

/// The position of one change in its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourcePosition {
    /// The generator's sequence number of the event (also its transaction).
    Generator {
        seq: u64,
    },
    Postgres(PostgresPosition),
    Mysql(MysqlPosition),
    Dynamodb(DynamodbPosition),
}

/// A Postgres change: its transaction's commit LSN (for a snapshot row, the snapshot's
/// consistent point) and the transaction id (none for snapshot rows).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PostgresPosition {
    pub lsn: u64,
    pub txid: Option<u32>,
}

/// A MySQL/MariaDB change: the binlog file and the offset after its rows event, the row's
/// index within that event, the server that wrote the event, and the transaction's GTID when
/// the server logs them. Snapshot rows carry the binlog position the snapshot is consistent
/// with, row 0 and server id 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlPosition {
    pub file: Arc<str>,
    pub pos: u64,
    pub row: u32,
    pub server_id: u32,
    pub gtid: Option<Arc<str>>,
}

/// A DynamoDB Streams record: its shard and its sequence number (decimal digits, up to 40 of
/// them, so kept as text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamodbPosition {
    pub shard: Arc<str>,
    pub sequence: Arc<str>,
}

/// A transaction id as the JSON format writes it: a number's digits or a GTID's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Txid<'a> {
    Number(u64),
    Text(&'a str),
}

impl SourcePosition {
    /// The id of the change's transaction, where the source has one.
    pub fn txid(&self) -> Option<Txid<'_>> {
        match self {
            SourcePosition::Generator { seq } => Some(Txid::Number(*seq)),
            SourcePosition::Postgres(pg) => pg.txid.map(|xid| Txid::Number(u64::from(xid))),
            SourcePosition::Mysql(my) => my.gtid.as_deref().map(Txid::Text),
            SourcePosition::Dynamodb(_) => None,
        }
    }

    /// A rough size in bytes of what this position holds beyond its inline part.
    pub fn approx_heap_size(&self) -> usize {
        match self {
            SourcePosition::Generator { .. } | SourcePosition::Postgres(_) => 0,
            SourcePosition::Mysql(my) => my.file.len() + my.gtid.as_ref().map_or(0, |g| g.len()),
            SourcePosition::Dynamodb(dy) => dy.shard.len() + dy.sequence.len(),
        }
    }
}

impl fmt::Display for SourcePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourcePosition::Generator { seq } => write!(f, "{seq}"),
            SourcePosition::Postgres(pg) => {
                write!(f, "{:X}/{:X}", pg.lsn >> 32, pg.lsn & 0xFFFF_FFFF)
            }
            SourcePosition::Mysql(my) => write!(f, "{}:{}", my.file, my.pos),
            SourcePosition::Dynamodb(dy) => write!(f, "{}:{}", dy.shard, dy.sequence),
        }
    }
}

impl fmt::Display for Txid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Txid::Number(n) => write!(f, "{n}"),
            Txid::Text(text) => f.write_str(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_print_as_each_source_spells_them() {
        let pg = SourcePosition::Postgres(PostgresPosition {
            lsn: 0x16_B374_D848,
            txid: Some(748),
        });
        assert_eq!(pg.to_string(), "16/B374D848");
        assert_eq!(pg.txid().map(|t| t.to_string()).as_deref(), Some("748"));
        let my = SourcePosition::Mysql(MysqlPosition {
            file: "binlog.000003".into(),
            pos: 4_294_967_400,
            row: 2,
            server_id: 1,
            gtid: Some("0-1-42".into()),
        });
        assert_eq!(my.to_string(), "binlog.000003:4294967400");
        assert_eq!(my.txid(), Some(Txid::Text("0-1-42")));
        let dy = SourcePosition::Dynamodb(DynamodbPosition {
            shard: "shardId-1".into(),
            sequence: "49590338271490256608559692538361571095921575989136588898".into(),
        });
        assert_eq!(
            dy.to_string(),
            "shardId-1:49590338271490256608559692538361571095921575989136588898"
        );
        assert_eq!(dy.txid(), None);
        assert_eq!(SourcePosition::Generator { seq: 9 }.to_string(), "9");
    }
}
