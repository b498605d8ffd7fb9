//! A batch's records before they reach the partition queues: every key and value of the batch
//! encoded into one buffer, which the records then share.
//!
//! Why: a key and a value of their own cost each event two allocations on the sink's thread
//! and two frees on librdkafka's (librdkafka copies what it is given), and a value grew its
//! buffer at least once. One buffer per batch, sized from the batch before, costs one.
//!
//! Flow: [`Encoder::encode`] appends an event's key and value and says where they are;
//! [`Encoder::forget`] takes back an encoding the size policy refused; [`Encoder::note`] keeps
//! a record (and its tombstone) to send; [`Encoder::finish`] freezes the buffer and gives each
//! noted record its slices of it. The buffer is freed once librdkafka has copied the last of
//! them.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use rdkafka::message::OwnedHeaders;

use super::delivery::BatchAcks;
use super::gate::Held;
use crate::envelope::ChangeEvent;
use crate::format::{EncodeError, Format};

/// A record whose key and value are ranges of the batch's buffer.
struct Noted {
    topic: Arc<str>,
    partition: i32,
    /// `None` for a record without a key.
    key: Option<Range<usize>>,
    /// `None` for a tombstone.
    value: Option<Range<usize>>,
    headers: Option<OwnedHeaders>,
    header_bytes: usize,
}

/// Encodes a batch's records into one buffer.
pub struct Encoder {
    buffer: Vec<u8>,
    noted: Vec<Noted>,
}

/// Where the key and the value of the record being encoded are in the buffer.
#[derive(Debug)]
pub struct Encoded {
    /// Empty when the format gives the record no key (`null_key`).
    pub key: Range<usize>,
    pub value: Range<usize>,
    /// The record has no key at all (Kafka's null key), not an empty one.
    pub null_key: bool,
}

impl Encoder {
    /// An encoder for `events` events whose records take about `bytes` bytes in all.
    pub fn new(events: usize, bytes: usize) -> Self {
        Encoder {
            buffer: Vec::with_capacity(bytes),
            noted: Vec::with_capacity(events),
        }
    }

    /// Appends the key and the value of `event` in `format`; the key names the table too when
    /// `table_in_key` ([`Format::encode_table_key`]). An event the format refuses leaves the
    /// buffer as it was.
    pub fn encode(
        &mut self,
        event: &ChangeEvent,
        format: &dyn Format,
        table_in_key: bool,
    ) -> Result<Encoded, EncodeError> {
        let start = self.buffer.len();
        let null_key = format.null_key(event);
        let key = if null_key {
            Ok(())
        } else if table_in_key {
            format.encode_table_key(event, &mut self.buffer)
        } else {
            format.encode_key(event, &mut self.buffer)
        };
        let key_end = self.buffer.len();
        let value = key.and_then(|()| format.encode_value(event, &mut self.buffer));
        if let Err(err) = value {
            self.buffer.truncate(start);
            return Err(err);
        }
        Ok(Encoded {
            key: start..key_end,
            value: key_end..self.buffer.len(),
            null_key,
        })
    }

    /// The bytes of `range`, as [`Encoder::encode`] returned it.
    pub fn bytes(&self, range: &Range<usize>) -> &[u8] {
        &self.buffer[range.clone()]
    }

    /// Takes back the last encoding (a record the size policy refused).
    pub fn forget(&mut self, encoded: Encoded) {
        self.buffer.truncate(encoded.key.start);
    }

    /// Notes a record of `encoded`, and a tombstone (the same key, no value) after it when
    /// `tombstone`.
    pub fn note(
        &mut self,
        topic: Arc<str>,
        partition: i32,
        encoded: Encoded,
        (headers, header_bytes): (OwnedHeaders, usize),
        tombstone: bool,
    ) {
        self.noted.push(Noted {
            topic,
            partition,
            key: (!encoded.null_key).then_some(encoded.key),
            value: Some(encoded.value),
            headers: Some(headers),
            header_bytes,
        });
        if tombstone {
            let record = self.noted.last().expect("just noted");
            let tombstone = Noted {
                topic: record.topic.clone(),
                partition,
                key: record.key.clone(),
                value: None,
                headers: None,
                header_bytes: 0,
            };
            self.noted.push(tombstone);
        }
    }

    /// The bytes encoded so far.
    pub fn len(&self) -> usize {
        self.buffer.len()
    }

    /// The noted records, each expected by `acks`, in the order they were noted.
    pub fn finish(self, acks: &Arc<BatchAcks>) -> Vec<Held> {
        let buffer = Bytes::from(self.buffer);
        self.noted
            .into_iter()
            .map(|noted| {
                acks.expect_one();
                Held {
                    topic: noted.topic,
                    partition: noted.partition,
                    key: noted.key.map(|key| buffer.slice(key)),
                    value: noted.value.map(|value| buffer.slice(value)),
                    headers: noted.headers,
                    header_bytes: noted.header_bytes,
                    acks: acks.clone(),
                }
            })
            .collect()
    }
}

/// The qualified table name (`schema.table`, or `database.table`) of a batch's events,
/// formatted once for each run of events of one table rather than once per event.
#[derive(Default)]
pub struct TableNames {
    last: Option<(Arc<str>, Arc<str>, String)>,
}

impl TableNames {
    pub fn of(&mut self, event: &ChangeEvent) -> &str {
        let source = &event.source;
        let namespace = source.schema.as_ref().unwrap_or(&source.database);
        let same = matches!(&self.last, Some((ns, table, _)) if **ns == **namespace && **table == *source.table);
        if !same {
            self.last = Some((
                namespace.clone(),
                source.table.clone(),
                event.qualified_table(),
            ));
        }
        &self.last.as_ref().expect("just set").2
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers as _;

    use super::*;
    use crate::format::JsonFormat;
    use crate::sources::generator::GeneratorSource;

    /// A record's partition, key, value and number of headers.
    type Shown<'a> = (i32, &'a [u8], Option<&'a [u8]>, usize);

    /// The key and the value of `event` in JSON, encoded on their own.
    fn json(event: &ChangeEvent) -> (Vec<u8>, Vec<u8>) {
        let (mut key, mut value) = (Vec::new(), Vec::new());
        JsonFormat::write_key(event, &mut key);
        JsonFormat::write_value(event, &mut value);
        (key, value)
    }

    /// Writes the key, then refuses the value, as a format does with a value it cannot
    /// represent.
    struct RefusesValues;

    impl Format for RefusesValues {
        fn encode_value(&self, event: &ChangeEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
            out.extend_from_slice(b"partial");
            Err(EncodeError::new(
                "test",
                event,
                "column v: no representation",
            ))
        }
        fn encode_key(&self, event: &ChangeEvent, out: &mut Vec<u8>) -> Result<(), EncodeError> {
            JsonFormat::write_key(event, out);
            Ok(())
        }
        fn encode_table_key(
            &self,
            event: &ChangeEvent,
            out: &mut Vec<u8>,
        ) -> Result<(), EncodeError> {
            self.encode_key(event, out)
        }
    }

    #[test]
    fn an_event_the_format_refuses_is_a_data_error_and_leaves_the_buffer_as_it_was() {
        use crate::error::{ConnectorError as _, Disposition};
        let mut encoder = Encoder::new(2, 8);
        let first = GeneratorSource::sample_event(5, 1);
        let kept = encoder.encode(&first, &JsonFormat, false).unwrap();
        let before = encoder.len();
        let second = GeneratorSource::sample_event(5, 2);
        let err = encoder.encode(&second, &RefusesValues, false).unwrap_err();
        assert_eq!(encoder.len(), before, "the refused key and value are gone");
        assert_eq!(encoder.bytes(&kept.value), &json(&first).1[..]);
        assert_eq!(err.disposition(), Disposition::Data);
        assert_eq!(
            err.to_string(),
            "the test format cannot encode the insert of table db.items at position 2: \
             column v: no representation"
        );
    }

    #[test]
    fn records_share_the_buffer_and_a_refused_encoding_leaves_no_trace() {
        let (acks, _all_reported) = BatchAcks::new();
        let mut encoder = Encoder::new(3, 8);
        let topic: Arc<str> = "t".into();
        let header = || super::super::gate::headers(&[("op", "u")]);

        // Built once each: an event's `ts_ms` is the time it was made.
        let events: Vec<ChangeEvent> = (1..=3)
            .map(|seq| GeneratorSource::sample_event(5, seq))
            .collect();
        let first = encoder.encode(&events[0], &JsonFormat, false).unwrap();
        assert_eq!(encoder.bytes(&first.key), br#"{"id":1}"#);
        encoder.note(topic.clone(), 0, first, header(), false);
        let refused = encoder.encode(&events[1], &JsonFormat, false).unwrap();
        encoder.forget(refused);
        let third = encoder.encode(&events[2], &JsonFormat, false).unwrap();
        encoder.note(topic, 2, third, header(), true);
        let ((key1, value1), (key3, value3)) = (json(&events[0]), json(&events[2]));
        assert_eq!(
            encoder.len(),
            key1.len() + value1.len() + key3.len() + value3.len()
        );

        let held = encoder.finish(&acks);
        let shown: Vec<Shown<'_>> = held
            .iter()
            .map(|h| {
                let headers = h.headers.as_ref().map_or(0, |h| h.count());
                (
                    h.partition,
                    h.key.as_deref().unwrap(),
                    h.value.as_deref(),
                    headers,
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                (0, &key1[..], Some(&value1[..]), 1),
                (2, &key3[..], Some(&value3[..]), 1),
                (2, &key3[..], None, 0),
            ]
        );
        assert_eq!(
            acks.expected(),
            3 + 1,
            "three records and the sink's own hold"
        );
    }

    #[test]
    fn table_names_follow_the_events_table() {
        let mut names = TableNames::default();
        let mut event = GeneratorSource::sample_event(5, 1);
        assert_eq!(names.of(&event), "db.items");
        event.source.schema = Some("public".into());
        assert_eq!(names.of(&event), "public.items");
        event.source.table = "orders".into();
        assert_eq!(names.of(&event), "public.orders");
        event.source.schema = None;
        assert_eq!(names.of(&event), "db.orders");
    }
}
