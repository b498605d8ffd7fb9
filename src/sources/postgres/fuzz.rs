//! Entry points for fuzzing the decoders of bytes from the server or the spool file (see
//! `fuzz/` and `tests/fuzz_corpus.rs`). Each takes arbitrary bytes and runs them through the
//! same functions the source uses; any panic is a bug. Not part of the supported API.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend;

use super::copy_text::CopyRow;
use super::decode::{self, Frame, Message};
use super::table::{ChangeContext, Column, Relation};
use super::value::{self, Decoder, TypeRegistry};
use super::{server, spool, stream};
use crate::envelope::PostgresPosition;
use crate::format::JsonFormat;

/// A sequence of replication CopyData payloads, each prefixed by its length (u16 BE): every
/// frame is decoded, its pgoutput message parsed (inside or outside a stream block, as the
/// stream's Stream Start / Stop say), tables registered from Relation messages with the
/// built-in decoders, and row changes turned into events and encoded as JSON.
pub fn replication_messages(data: &[u8]) {
    let mut rest = data;
    let mut in_stream = false;
    let mut relations: HashMap<u32, Arc<Relation>> = HashMap::new();
    let registry = TypeRegistry::default();
    let mut context = ChangeContext {
        pipeline: "fuzz".into(),
        database: "fuzz".into(),
        position: PostgresPosition::default(),
        commit_ts_ms: None,
    };
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let len = usize::from(u16::from_be_bytes(*len)).min(tail.len());
        let (frame, tail) = tail.split_at(len);
        rest = tail;
        let Ok(Frame::XLogData { start, data }) =
            decode::parse_frame(Bytes::copy_from_slice(frame))
        else {
            continue;
        };
        let Ok(message) = decode::parse_message(data, in_stream) else {
            continue;
        };
        match &message {
            Message::StreamStart { .. } => in_stream = true,
            Message::StreamStop => in_stream = false,
            Message::Begin {
                final_lsn,
                commit_ts_us,
                xid,
            } => {
                context.position = PostgresPosition {
                    lsn: final_lsn.0,
                    txid: Some(*xid),
                };
                context.commit_ts_ms = Some(decode::unix_ms(*commit_ts_us));
            }
            Message::Commit { commit_ts_us, .. } | Message::StreamCommit { commit_ts_us, .. } => {
                decode::unix_ms(*commit_ts_us);
            }
            Message::Relation { relation, .. } => {
                let columns = relation
                    .columns
                    .iter()
                    .map(|c| Column {
                        name: c.name.as_str().into(),
                        type_oid: c.type_oid,
                        typmod: c.type_modifier,
                        decoder: registry.get(c.type_oid),
                        identity: c.identity,
                    })
                    .collect::<Vec<_>>();
                let name = (
                    relation.schema.as_str().into(),
                    relation.table.as_str().into(),
                );
                relations.insert(
                    relation.oid,
                    Arc::new(Relation::new(relation.oid, name, columns, &[])),
                );
            }
            _ => {}
        }
        context.position.lsn = start.0;
        if let Ok(events) = stream::events(&message, &context, |oid| relations.get(&oid)) {
            for event in events {
                let mut out = Vec::new();
                JsonFormat::write_value(&event, &mut out);
                JsonFormat::write_key(&event, &mut out);
            }
        }
    }
}

/// A decoder chosen by the first byte (an array of it when the high bit is set, with the
/// second byte as the delimiter), then the rest as the value's text form.
pub fn text_value(data: &[u8]) {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let scalars = [
        Decoder::Bool,
        Decoder::Int,
        Decoder::Numeric,
        Decoder::Float,
        Decoder::Text,
        Decoder::Bytea,
        Decoder::Json,
        Decoder::Uuid,
        Decoder::Date,
        Decoder::Time,
        Decoder::Timestamp,
        Decoder::TimestampTz,
        Decoder::Named("timetz".into()),
        Decoder::Named("interval".into()),
    ];
    let scalar = scalars[usize::from(choice & 0x7f) % scalars.len()].clone();
    let (decoder, text) = match (choice & 0x80 != 0, rest.split_first()) {
        (true, Some((&delimiter, text))) => (
            Decoder::Array {
                element: Box::new(scalar),
                delimiter,
            },
            text,
        ),
        _ => (scalar, rest),
    };
    let value = value::decode(&decoder, &String::from_utf8_lossy(text));
    let mut row = crate::envelope::Row::new();
    row.push("v".into(), value);
    let mut out = Vec::new();
    let event = crate::envelope::ChangeEvent {
        op: crate::envelope::Op::Insert,
        source: crate::envelope::SourceInfo {
            connector: crate::envelope::SourceKind::Postgres,
            pipeline: "fuzz".into(),
            database: "fuzz".into(),
            schema: None,
            table: "t".into(),
            table_schema: None,
            position: crate::envelope::SourcePosition::Generator { seq: 0 },
            commit_ts_ms: None,
            snapshot: false,
            ttl_expired: false,
        },
        key: crate::envelope::Row::new(),
        before: None,
        after: Some(row),
        unchanged: Vec::new(),
        key_change: None,
        ts_ms: 0,
    };
    JsonFormat::write_value(&event, &mut out);
}

/// Bytes as the server sends them on a replication connection, cut into backend messages by
/// the connection's framing; each message read as the connection reads it.
pub fn backend_messages(data: &[u8]) {
    let mut read = BytesMut::from(data);
    while let Ok(server::Framed::Message(message)) = server::take_message(&mut read) {
        match message {
            server::Backend::CopyData(data) => {
                let _ = decode::parse_frame(data);
            }
            server::Backend::Other(backend::Message::DataRow(body)) => {
                let _ = server::text_values(&body);
            }
            server::Backend::Other(backend::Message::ErrorResponse(body)) => {
                server::server_error(&body);
            }
            server::Backend::Other(backend::Message::AuthenticationSasl(body)) => {
                let mut mechanisms = body.mechanisms();
                while let Ok(Some(_)) = mechanisms.next() {}
            }
            _ => {}
        }
    }
}

/// Bytes of a spool file, read back entry by entry.
pub fn spool_entries(data: &[u8]) {
    let mut input = data;
    while spool::read_entry(&mut input).is_ok() {}
}

/// Lines of COPY's text format, as a copy reads its chunks: each line split into its fields
/// and turned into a snapshot event of a table of text columns, encoded as JSON.
pub fn copy_rows(data: &[u8]) {
    let columns: Vec<Column> = (0..4)
        .map(|i| Column {
            name: format!("c{i}").into(),
            type_oid: 25,
            typmod: -1,
            decoder: Decoder::Text,
            identity: i == 0,
        })
        .collect();
    let relation = Relation::new(1, ("s".into(), "t".into()), columns, &[]);
    let context = ChangeContext {
        pipeline: "fuzz".into(),
        database: "fuzz".into(),
        position: PostgresPosition::default(),
        commit_ts_ms: None,
    };
    let mut row = CopyRow::default();
    let mut out = Vec::new();
    for line in data.split_inclusive(|&b| b == b'\n') {
        if row.read(line).is_ok() {
            let event = relation.snapshot_event(&context, 0, |i| row.get(i));
            out.clear();
            JsonFormat::write_value(&event, &mut out);
        }
    }
}
