//! Entry points for fuzzing every decoder of bytes from the network or disk, one function
//! per target of the `fuzz/` crate. `tests/fuzz_corpus.rs` replays the committed corpus
//! through the same functions on stable Rust. Each takes arbitrary bytes; any panic, hang or
//! unbounded allocation is a bug. Not part of the supported API.

pub use crate::sources::dynamodb::fuzz::get_records_response as dynamodb_records;
pub use crate::sources::mysql::fuzz::{
    binlog_events as mysql_binlog, positions as mysql_positions,
};
pub use crate::sources::postgres::fuzz::{
    backend_messages as pg_backend_messages, copy_rows as pg_copy_rows,
    replication_messages as pg_replication, spool_entries as pg_spool, text_value as pg_text_value,
};

use crate::sinks::kinesis::{aggregate, deaggregate};

/// A fuzz target: arbitrary bytes in, a panic only on a bug.
pub type Target = fn(&[u8]);

/// Every target, by the name of its corpus folder (`fuzz/corpus/<name>`).
pub const TARGETS: &[(&str, Target)] = &[
    ("pg_replication", pg_replication),
    ("pg_text_value", pg_text_value),
    ("pg_backend_messages", pg_backend_messages),
    ("pg_spool", pg_spool),
    ("pg_copy_rows", pg_copy_rows),
    ("mysql_binlog", mysql_binlog),
    ("mysql_positions", mysql_positions),
    ("kinesis_kpl", kinesis_kpl),
    ("dynamodb_records", dynamodb_records),
];

/// KPL aggregated records: `data` as a record to de-aggregate, then cut into `(key, data)`
/// pairs (each a u8 length and bytes) that must survive aggregation and de-aggregation.
pub fn kinesis_kpl(data: &[u8]) {
    let _ = deaggregate(data);
    let mut pairs: Vec<(String, &[u8])> = Vec::new();
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let (key, tail) = tail.split_at(usize::from(len % 16).min(tail.len()));
        let len = usize::from(*tail.first().unwrap_or(&0)).min(tail.len().saturating_sub(1));
        let (record, tail) = tail.get(1..).unwrap_or_default().split_at(len);
        pairs.push((String::from_utf8_lossy(key).into_owned(), record));
        rest = tail;
    }
    let packed = aggregate(pairs.iter().map(|(k, d)| (k.as_str(), *d)));
    let unpacked = deaggregate(&packed).expect("an aggregate de-aggregates");
    let expected: Vec<(String, Vec<u8>)> =
        pairs.iter().map(|(k, d)| (k.clone(), d.to_vec())).collect();
    assert_eq!(unpacked, expected);
}
