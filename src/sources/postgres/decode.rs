//! Decoding of the replication stream: the CopyData frames (XLogData, keepalive), the standby
//! status update we send, and the pgoutput (protocol version 2) logical messages inside
//! XLogData. Values stay as slices of the received buffer until the event is built.

use bytes::{Buf, Bytes};

use super::error::PostgresError;
use super::lsn::Lsn;

/// Microseconds from the Unix epoch to the PostgreSQL epoch (2000-01-01).
pub const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// A time from the wire (microseconds since 2000-01-01) as milliseconds since the Unix epoch;
/// PostgreSQL's own range ends far inside i64, so the ends saturate rather than overflow.
pub fn unix_ms(pg_us: i64) -> i64 {
    pg_us.saturating_add(PG_EPOCH_OFFSET_US).div_euclid(1000)
}

/// One CopyData frame of the replication stream.
pub enum Frame {
    /// WAL data: the pgoutput message that starts at `start`.
    XLogData { start: Lsn, data: Bytes },
    /// The server's WAL end; `reply` asks for a status update now.
    Keepalive { wal_end: Lsn, reply: bool },
}

pub fn parse_frame(mut buf: Bytes) -> Result<Frame, PostgresError> {
    let mut r = Reader(&mut buf);
    match r.u8()? {
        b'w' => {
            let start = Lsn(r.u64()?);
            let _end = r.u64()?;
            let _send_time = r.i64()?;
            Ok(Frame::XLogData { start, data: buf })
        }
        b'k' => {
            let wal_end = Lsn(r.u64()?);
            let _send_time = r.i64()?;
            Ok(Frame::Keepalive {
                wal_end,
                reply: r.u8()? == 1,
            })
        }
        tag => Err(PostgresError::Protocol(format!(
            "unknown replication frame {:?}",
            tag as char
        ))),
    }
}

/// A standby status update: everything up to `flush` is durably processed.
pub fn status_update(write: Lsn, flush: Lsn, now_unix_us: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(34);
    out.push(b'r');
    out.extend_from_slice(&write.0.to_be_bytes());
    out.extend_from_slice(&flush.0.to_be_bytes());
    out.extend_from_slice(&flush.0.to_be_bytes());
    out.extend_from_slice(&(now_unix_us - PG_EPOCH_OFFSET_US).to_be_bytes());
    out.push(0);
    out
}

/// One column of a tuple as sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    Null,
    /// An unchanged TOASTed value that was not sent.
    Unchanged,
    Text(Bytes),
    Binary(Bytes),
}

pub type Tuple = Vec<Datum>;

/// The old row of an update or delete.
#[derive(Debug, Clone, PartialEq)]
pub enum OldRow {
    /// Only the replica-identity (key) columns are meaningful (REPLICA IDENTITY DEFAULT/INDEX).
    Key(Tuple),
    /// The whole old row (REPLICA IDENTITY FULL).
    Full(Tuple),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ColumnDef {
    /// Part of the replica identity.
    pub identity: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RelationDef {
    pub oid: u32,
    pub schema: String,
    pub table: String,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<ColumnDef>,
}

/// A pgoutput message. `xid` is present only inside a streamed-transaction block.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Begin {
        final_lsn: Lsn,
        commit_ts_us: i64,
        xid: u32,
    },
    Commit {
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_ts_us: i64,
    },
    Origin,
    Relation {
        xid: Option<u32>,
        relation: RelationDef,
    },
    Type {
        xid: Option<u32>,
    },
    Insert {
        xid: Option<u32>,
        oid: u32,
        new: Tuple,
    },
    Update {
        xid: Option<u32>,
        oid: u32,
        old: Option<OldRow>,
        new: Tuple,
    },
    Delete {
        xid: Option<u32>,
        oid: u32,
        old: OldRow,
    },
    Truncate {
        xid: Option<u32>,
        oids: Vec<u32>,
    },
    Logical {
        xid: Option<u32>,
        transactional: bool,
        lsn: Lsn,
        prefix: String,
        content: Bytes,
    },
    StreamStart {
        xid: u32,
    },
    StreamStop,
    StreamCommit {
        xid: u32,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_ts_us: i64,
    },
    StreamAbort {
        xid: u32,
        subxid: u32,
    },
}

impl Message {
    /// The streamed transaction a change belongs to, when inside a stream block.
    pub fn stream_xid(&self) -> Option<u32> {
        match self {
            Message::Relation { xid, .. }
            | Message::Type { xid }
            | Message::Insert { xid, .. }
            | Message::Update { xid, .. }
            | Message::Delete { xid, .. }
            | Message::Truncate { xid, .. }
            | Message::Logical { xid, .. } => *xid,
            _ => None,
        }
    }
}

/// Decodes one pgoutput message; `in_stream` tells whether a stream block is open.
pub fn parse_message(mut buf: Bytes, in_stream: bool) -> Result<Message, PostgresError> {
    let mut r = Reader(&mut buf);
    let tag = r.u8()?;
    let stream_xid = |r: &mut Reader<'_>| -> Result<Option<u32>, PostgresError> {
        if in_stream {
            Ok(Some(r.u32()?))
        } else {
            Ok(None)
        }
    };
    let message = match tag {
        b'B' => Message::Begin {
            final_lsn: Lsn(r.u64()?),
            commit_ts_us: r.i64()?,
            xid: r.u32()?,
        },
        b'C' => {
            let _flags = r.u8()?;
            Message::Commit {
                commit_lsn: Lsn(r.u64()?),
                end_lsn: Lsn(r.u64()?),
                commit_ts_us: r.i64()?,
            }
        }
        b'O' => Message::Origin,
        b'R' => {
            let xid = stream_xid(&mut r)?;
            let oid = r.u32()?;
            let schema = r.cstring()?;
            let table = r.cstring()?;
            let replica_identity = r.u8()?;
            let count = r.u16()?;
            let mut columns = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let identity = r.u8()? & 1 == 1;
                columns.push(ColumnDef {
                    identity,
                    name: r.cstring()?,
                    type_oid: r.u32()?,
                    type_modifier: r.i32()?,
                });
            }
            Message::Relation {
                xid,
                relation: RelationDef {
                    oid,
                    schema,
                    table,
                    replica_identity,
                    columns,
                },
            }
        }
        b'Y' => Message::Type {
            xid: stream_xid(&mut r)?,
        },
        b'I' => {
            let xid = stream_xid(&mut r)?;
            let oid = r.u32()?;
            r.expect(b'N')?;
            Message::Insert {
                xid,
                oid,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let xid = stream_xid(&mut r)?;
            let oid = r.u32()?;
            let old = match r.u8()? {
                b'K' => Some(OldRow::Key(r.tuple()?)),
                b'O' => Some(OldRow::Full(r.tuple()?)),
                b'N' => None,
                other => {
                    return Err(PostgresError::Protocol(format!(
                        "update tuple kind {:?}",
                        other as char
                    )))
                }
            };
            if old.is_some() {
                r.expect(b'N')?;
            }
            Message::Update {
                xid,
                oid,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let xid = stream_xid(&mut r)?;
            let oid = r.u32()?;
            let old = match r.u8()? {
                b'K' => OldRow::Key(r.tuple()?),
                b'O' => OldRow::Full(r.tuple()?),
                other => {
                    return Err(PostgresError::Protocol(format!(
                        "delete tuple kind {:?}",
                        other as char
                    )))
                }
            };
            Message::Delete { xid, oid, old }
        }
        b'T' => {
            let xid = stream_xid(&mut r)?;
            let count = r.u32()?;
            let _options = r.u8()?;
            let oids = (0..count).map(|_| r.u32()).collect::<Result<_, _>>()?;
            Message::Truncate { xid, oids }
        }
        b'M' => {
            // The xid is sent only for transactional messages inside a stream block.
            let peek_flags_at = if in_stream { 4 } else { 0 };
            let transactional = r.0.get(peek_flags_at).is_some_and(|f| f & 1 == 1);
            let xid = if in_stream && transactional {
                Some(r.u32()?)
            } else {
                None
            };
            let _flags = r.u8()?;
            let lsn = Lsn(r.u64()?);
            let prefix = r.cstring()?;
            let len = r.u32()? as usize;
            Message::Logical {
                xid,
                transactional,
                lsn,
                prefix,
                content: r.bytes(len)?,
            }
        }
        b'S' => {
            let xid = r.u32()?;
            let _first_segment = r.u8()?;
            Message::StreamStart { xid }
        }
        b'E' => Message::StreamStop,
        b'c' => {
            let xid = r.u32()?;
            let _flags = r.u8()?;
            Message::StreamCommit {
                xid,
                commit_lsn: Lsn(r.u64()?),
                end_lsn: Lsn(r.u64()?),
                commit_ts_us: r.i64()?,
            }
        }
        b'A' => Message::StreamAbort {
            xid: r.u32()?,
            subxid: r.u32()?,
        },
        other => {
            return Err(PostgresError::Protocol(format!(
                "unknown pgoutput message {:?}",
                other as char
            )))
        }
    };
    Ok(message)
}

/// Big-endian reads from a buffer, each checked for length.
struct Reader<'a>(&'a mut Bytes);

impl Reader<'_> {
    fn need(&self, n: usize) -> Result<(), PostgresError> {
        if self.0.remaining() < n {
            return Err(PostgresError::Protocol(format!(
                "message truncated: need {n} more bytes, have {}",
                self.0.remaining()
            )));
        }
        Ok(())
    }

    fn u8(&mut self) -> Result<u8, PostgresError> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }

    fn expect(&mut self, tag: u8) -> Result<(), PostgresError> {
        let got = self.u8()?;
        if got != tag {
            return Err(PostgresError::Protocol(format!(
                "expected {:?}, got {:?}",
                tag as char, got as char
            )));
        }
        Ok(())
    }

    fn u16(&mut self) -> Result<u16, PostgresError> {
        self.need(2)?;
        Ok(self.0.get_u16())
    }

    fn u32(&mut self) -> Result<u32, PostgresError> {
        self.need(4)?;
        Ok(self.0.get_u32())
    }

    fn i32(&mut self) -> Result<i32, PostgresError> {
        self.need(4)?;
        Ok(self.0.get_i32())
    }

    fn u64(&mut self) -> Result<u64, PostgresError> {
        self.need(8)?;
        Ok(self.0.get_u64())
    }

    fn i64(&mut self) -> Result<i64, PostgresError> {
        self.need(8)?;
        Ok(self.0.get_i64())
    }

    fn bytes(&mut self, n: usize) -> Result<Bytes, PostgresError> {
        self.need(n)?;
        Ok(self.0.split_to(n))
    }

    fn cstring(&mut self) -> Result<String, PostgresError> {
        let end = self
            .0
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| PostgresError::Protocol("unterminated string".into()))?;
        let text = String::from_utf8_lossy(&self.0[..end]).into_owned();
        self.0.advance(end + 1);
        Ok(text)
    }

    fn tuple(&mut self) -> Result<Tuple, PostgresError> {
        let count = self.u16()?;
        let mut tuple = Vec::with_capacity(count as usize);
        for _ in 0..count {
            tuple.push(match self.u8()? {
                b'n' => Datum::Null,
                b'u' => Datum::Unchanged,
                b't' => {
                    let len = self.u32()? as usize;
                    Datum::Text(self.bytes(len)?)
                }
                b'b' => {
                    let len = self.u32()? as usize;
                    Datum::Binary(self.bytes(len)?)
                }
                other => {
                    return Err(PostgresError::Protocol(format!(
                        "tuple datum kind {:?}",
                        other as char
                    )))
                }
            });
        }
        Ok(tuple)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be32(v: u32) -> [u8; 4] {
        v.to_be_bytes()
    }

    #[test]
    fn decodes_relation_and_update_with_key_and_unchanged_toast() {
        let mut rel = vec![b'R'];
        rel.extend(be32(16384));
        rel.extend(b"public\0orders\0d");
        rel.extend(2u16.to_be_bytes());
        rel.push(1);
        rel.extend(b"id\0");
        rel.extend(be32(23));
        rel.extend((-1i32).to_be_bytes());
        rel.push(0);
        rel.extend(b"note\0");
        rel.extend(be32(25));
        rel.extend((-1i32).to_be_bytes());
        let Message::Relation { relation, xid } = parse_message(Bytes::from(rel), false).unwrap()
        else {
            panic!()
        };
        assert_eq!(xid, None);
        assert_eq!(relation.table, "orders");
        assert!(relation.columns[0].identity && !relation.columns[1].identity);

        let mut upd = vec![b'U'];
        upd.extend(be32(7)); // xid: inside a stream block
        upd.extend(be32(16384));
        upd.push(b'K');
        upd.extend(2u16.to_be_bytes());
        upd.push(b't');
        upd.extend(be32(1));
        upd.push(b'1');
        upd.push(b'n');
        upd.push(b'N');
        upd.extend(2u16.to_be_bytes());
        upd.push(b't');
        upd.extend(be32(1));
        upd.push(b'2');
        upd.push(b'u');
        let message = parse_message(Bytes::from(upd), true).unwrap();
        assert_eq!(message.stream_xid(), Some(7));
        let Message::Update {
            old: Some(OldRow::Key(old)),
            new,
            ..
        } = message
        else {
            panic!()
        };
        assert_eq!(old[0], Datum::Text(Bytes::from_static(b"1")));
        assert_eq!(
            new,
            vec![Datum::Text(Bytes::from_static(b"2")), Datum::Unchanged]
        );
    }

    #[test]
    fn truncated_messages_are_errors_not_panics() {
        for bytes in [
            &b"B\0\0"[..],
            b"I\0\0\0\x01N\0\x01t\0\0\0\x09ab",
            b"R\0\0\0\x01public",
            b"Z",
        ] {
            assert!(
                parse_message(Bytes::copy_from_slice(bytes), false).is_err(),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn status_update_layout() {
        let update = status_update(Lsn(5), Lsn(3), PG_EPOCH_OFFSET_US + 1);
        assert_eq!(update.len(), 34);
        assert_eq!(update[0], b'r');
        assert_eq!(&update[9..17], &3u64.to_be_bytes());
        assert_eq!(&update[25..33], &1i64.to_be_bytes());
    }

    #[test]
    fn commit_times_at_the_ends_of_the_range_do_not_overflow() {
        assert_eq!(unix_ms(0), PG_EPOCH_OFFSET_US / 1000);
        assert_eq!(unix_ms(i64::MAX), i64::MAX / 1000);
        assert_eq!(
            unix_ms(i64::MIN),
            (i64::MIN + PG_EPOCH_OFFSET_US).div_euclid(1000)
        );
    }
}
