//! The KPL aggregated-record format: many user records in one Kinesis record.
//!
//! Layout: the magic bytes `F3 89 9A C2`, a protobuf `AggregatedRecord` (a table of partition
//! keys, a table of explicit hash keys, and the records, each naming its partition key by
//! index), then the 16-byte MD5 of the protobuf bytes. KCL and the Lambda de-aggregation
//! libraries read it; Redshift streaming ingestion does not (it stores the bytes as they are).

use md5::{Digest, Md5};
use prost::Message;

pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

#[derive(Clone, PartialEq, Message)]
pub struct AggregatedRecord {
    #[prost(string, repeated, tag = "1")]
    pub partition_key_table: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub explicit_hash_key_table: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    pub records: Vec<SubRecord>,
}

/// One user record inside an aggregate (`Record` in the KPL's schema; proto2, so the
/// required fields are always written, also when zero).
#[derive(Clone, PartialEq, Message)]
pub struct SubRecord {
    #[prost(uint64, required, tag = "1")]
    pub partition_key_index: u64,
    #[prost(uint64, optional, tag = "2")]
    pub explicit_hash_key_index: Option<u64>,
    #[prost(bytes = "vec", required, tag = "3")]
    pub data: Vec<u8>,
    #[prost(message, repeated, tag = "4")]
    pub tags: Vec<Tag>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Tag {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

/// Packs `(partition key, data)` pairs, in order, into one aggregated record.
pub fn aggregate<'a>(records: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<u8> {
    let mut message = AggregatedRecord::default();
    let mut key_index: Vec<(&str, u64)> = Vec::new();
    for (key, data) in records {
        let index = match key_index.iter().find(|(k, _)| *k == key) {
            Some((_, index)) => *index,
            None => {
                let index = message.partition_key_table.len() as u64;
                message.partition_key_table.push(key.to_owned());
                key_index.push((key, index));
                index
            }
        };
        message.records.push(SubRecord {
            partition_key_index: index,
            explicit_hash_key_index: None,
            data: data.to_vec(),
            tags: Vec::new(),
        });
    }
    let body = message.encode_to_vec();
    let mut out = Vec::with_capacity(MAGIC.len() + body.len() + 16);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&body);
    out.extend_from_slice(&Md5::digest(&body));
    out
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeaggregateError {
    #[error("not an aggregated record (no magic bytes)")]
    NotAggregated,
    #[error("the MD5 trailer does not match the body")]
    Checksum,
    #[error("the body is not a valid AggregatedRecord: {0}")]
    Protobuf(String),
    #[error("a record names partition key {0}, which the table lacks")]
    KeyIndex(u64),
}

/// Unpacks an aggregated record into its `(partition key, data)` pairs, in order.
pub fn deaggregate(record: &[u8]) -> Result<Vec<(String, Vec<u8>)>, DeaggregateError> {
    let body = record
        .strip_prefix(&MAGIC)
        .filter(|rest| rest.len() >= 16)
        .ok_or(DeaggregateError::NotAggregated)?;
    let (body, trailer) = body.split_at(body.len() - 16);
    if Md5::digest(body).as_slice() != trailer {
        return Err(DeaggregateError::Checksum);
    }
    let message =
        AggregatedRecord::decode(body).map_err(|e| DeaggregateError::Protobuf(e.to_string()))?;
    message
        .records
        .into_iter()
        .map(|r| {
            let key = message
                .partition_key_table
                .get(r.partition_key_index as usize)
                .ok_or(DeaggregateError::KeyIndex(r.partition_key_index))?;
            Ok((key.clone(), r.data))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_shares_key_entries() {
        let packed = aggregate([("a", &b"1"[..]), ("b", b"2"), ("a", b"3")]);
        assert_eq!(packed[..4], MAGIC);
        let records = deaggregate(&packed).unwrap();
        let expect: Vec<(String, Vec<u8>)> = vec![
            ("a".into(), b"1".to_vec()),
            ("b".into(), b"2".to_vec()),
            ("a".into(), b"3".to_vec()),
        ];
        assert_eq!(records, expect);
        let body = &packed[4..packed.len() - 16];
        let message = AggregatedRecord::decode(body).unwrap();
        assert_eq!(message.partition_key_table, ["a", "b"]);
    }

    #[test]
    fn the_first_record_writes_its_zero_key_index() {
        // proto2 `required`: index 0 must be on the wire (field 1, varint 0) or a KCL parser
        // rejects the record. Record 0 is: 1a (field 3, length) len 08 00 1a 01 'x'.
        let packed = aggregate([("k", &b"x"[..])]);
        let body = &packed[4..packed.len() - 16];
        assert!(
            body.windows(4).any(|w| w == [0x1a, 0x05, 0x08, 0x00]),
            "{body:02x?}"
        );
    }

    #[test]
    fn damage_is_detected() {
        let mut packed = aggregate([("a", &b"1"[..])]);
        assert_eq!(
            deaggregate(b"{\"json\":1}"),
            Err(DeaggregateError::NotAggregated)
        );
        let n = packed.len();
        packed[n - 20] ^= 1;
        assert_eq!(deaggregate(&packed), Err(DeaggregateError::Checksum));
    }
}
