//! Hands records to librdkafka one request's worth per partition at a time.
//!
//! Why: librdkafka's idempotent producer keeps a single ProduceRequest in flight per partition
//! (its limit of 5 requests is compared with the partition's count of messages in flight),
//! and while that request is out, any further record of the partition whose `linger.ms` has
//! passed makes its broker thread poll without sleeping. Profiled at saturation, that poll
//! loop was 85% of the daemon's CPU. Holding the partition's next records here until every
//! record it has in librdkafka is reported gives librdkafka the same single request per
//! partition, with everything that arrived in the meantime in it, and nothing to spin on.
//!
//! Flow: the sink assigns each record its partition ([`super::partitioner`]) and offers a
//! batch's records in order; they join their partition's queue. A partition with nothing in
//! librdkafka releases a chunk of its queue at once (at most librdkafka's batch limits, so
//! that one chunk is one request); each delivery report counts down its partition, and the
//! last report of a chunk releases the next. Per-key order holds: a key always maps to one
//! partition, whose queue is first in, first out.
//!
//! Errors: a record librdkafka refuses when it is released fails its batch through the
//! batch's [`BatchAcks`], as a failed delivery report does. Memory stays bounded by the
//! pipeline: only the batches it has in flight are held here.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::BaseRecord;

use super::delivery::BatchAcks;
use super::Producer;

/// Bytes librdkafka adds to a record in a request, beside its key, value and headers.
const RECORD_FRAMING: usize = 64;
/// Bytes a request adds to each header, beside its key and value.
const HEADER_FRAMING: usize = 8;

/// A record waiting for its partition.
pub struct Held {
    pub topic: Arc<str>,
    pub partition: i32,
    /// Slices of the batch's buffer ([`super::records`]).
    pub key: Bytes,
    /// `None` for a tombstone.
    pub value: Option<Bytes>,
    pub headers: Option<OwnedHeaders>,
    /// The headers' size in a request, counted as they were built ([`headers`]): reading them
    /// back from librdkafka walks its header list once per header, a tenth of the sink's CPU.
    pub header_bytes: usize,
    pub acks: Arc<BatchAcks>,
}

impl Held {
    fn size(&self) -> usize {
        self.key.len()
            + self.value.as_ref().map_or(0, Bytes::len)
            + self.header_bytes
            + RECORD_FRAMING
    }
}

/// Headers with text values, and their size in a request.
pub fn headers(pairs: &[(&str, &str)]) -> (OwnedHeaders, usize) {
    let bytes = pairs
        .iter()
        .map(|(key, value)| key.len() + value.len() + HEADER_FRAMING)
        .sum();
    let headers = pairs.iter().fold(
        OwnedHeaders::new_with_capacity(pairs.len()),
        |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(*value),
            })
        },
    );
    (headers, bytes)
}

/// What one chunk may hold: librdkafka's `batch.num.messages` and `batch.size`, so that a
/// chunk leaves as one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkLimits {
    pub records: usize,
    pub bytes: usize,
}

impl ChunkLimits {
    /// librdkafka's defaults for `batch.num.messages` and `batch.size`.
    pub const LIBRDKAFKA_DEFAULTS: ChunkLimits = ChunkLimits {
        records: 10_000,
        bytes: 1_000_000,
    };
}

/// Puts one record into librdkafka (taking its headers); the error when librdkafka refuses it.
pub type Enqueue<'a> = dyn FnMut(&mut Held) -> Result<(), KafkaError> + 'a;

#[derive(Default)]
struct PartitionQueue {
    /// Records in librdkafka not reported yet.
    outstanding: usize,
    waiting: VecDeque<Held>,
}

/// Every partition's queue, and what each has in librdkafka.
pub struct Partitions {
    limits: ChunkLimits,
    topics: HashMap<Arc<str>, Vec<PartitionQueue>>,
}

impl Partitions {
    pub fn new(limits: ChunkLimits) -> Self {
        Partitions {
            limits,
            topics: HashMap::new(),
        }
    }

    /// Queues `records` in order, then releases a chunk for each partition they went to that
    /// has nothing in librdkafka.
    pub fn offer(&mut self, records: Vec<Held>, enqueue: &mut Enqueue<'_>) {
        let mut touched: Vec<(Arc<str>, i32)> = Vec::new();
        for record in records {
            let queue = self.queue(&record.topic, record.partition);
            if queue.waiting.is_empty() {
                touched.push((record.topic.clone(), record.partition));
            }
            queue.waiting.push_back(record);
        }
        let limits = self.limits;
        for (topic, partition) in touched {
            release(self.queue(&topic, partition), limits, enqueue);
        }
    }

    /// A record of `topic` / `partition` was reported: when it was the last one librdkafka
    /// held for that partition, the next chunk goes.
    pub fn reported(&mut self, topic: &str, partition: i32, enqueue: &mut Enqueue<'_>) {
        let limits = self.limits;
        let Some(queue) = self
            .topics
            .get_mut(topic)
            .and_then(|queues| queues.get_mut(usize::try_from(partition).ok()?))
        else {
            return;
        };
        queue.outstanding = queue.outstanding.saturating_sub(1);
        release(queue, limits, enqueue);
    }

    fn queue(&mut self, topic: &Arc<str>, partition: i32) -> &mut PartitionQueue {
        let queues = self.topics.entry(topic.clone()).or_default();
        let index = usize::try_from(partition).expect("partitions are not negative");
        if queues.len() <= index {
            queues.resize_with(index + 1, PartitionQueue::default);
        }
        &mut queues[index]
    }
}

/// Releases chunks while the partition has nothing in librdkafka and records wait (a chunk
/// whose every record was refused releases the next one at once).
fn release(queue: &mut PartitionQueue, limits: ChunkLimits, enqueue: &mut Enqueue<'_>) {
    while queue.outstanding == 0 && !queue.waiting.is_empty() {
        let (mut records, mut bytes) = (0, 0);
        while let Some(next) = queue.waiting.front() {
            let size = next.size();
            if records > 0 && (records >= limits.records || bytes + size > limits.bytes) {
                break;
            }
            let mut record = queue.waiting.pop_front().expect("a front record");
            records += 1;
            bytes += size;
            match enqueue(&mut record) {
                Ok(()) => queue.outstanding += 1,
                Err(error) => record.acks.fail_one(&record.topic, error),
            }
        }
    }
}

/// The partition queues shared by the sink (which offers records) and librdkafka's polling
/// thread (which reports them), with the producer both release chunks into.
pub struct Gate {
    state: Mutex<(Option<Producer>, Partitions)>,
}

impl Gate {
    pub fn new(limits: ChunkLimits) -> Self {
        Gate {
            state: Mutex::new((None, Partitions::new(limits))),
        }
    }

    /// Gives the gate the producer whose context holds it (the producer is made after its
    /// context).
    pub fn attach(&self, producer: Producer) {
        self.state.lock().expect("not poisoned").0 = Some(producer);
    }

    /// Ends the cycle between the producer and its context; the caller drops the producer
    /// outside librdkafka's polling thread, which a producer's drop joins.
    pub fn detach(&self) -> Option<Producer> {
        self.state.lock().expect("not poisoned").0.take()
    }

    pub fn offer(&self, records: Vec<Held>) {
        let mut state = self.state.lock().expect("not poisoned");
        let (producer, partitions) = &mut *state;
        partitions.offer(records, &mut |held| enqueue(producer.as_ref(), held));
    }

    /// Called by the producer context for every delivery report.
    pub fn reported(&self, topic: &str, partition: i32) {
        let mut state = self.state.lock().expect("not poisoned");
        let (producer, partitions) = &mut *state;
        partitions.reported(topic, partition, &mut |held| {
            enqueue(producer.as_ref(), held)
        });
    }
}

fn enqueue(producer: Option<&Producer>, held: &mut Held) -> Result<(), KafkaError> {
    let Some(producer) = producer else {
        return Err(KafkaError::Canceled);
    };
    let headers = held.headers.take();
    let mut record = BaseRecord::with_opaque_to(&held.topic, held.acks.clone())
        .partition(held.partition)
        .key(&held.key[..]);
    if let Some(value) = &held.value {
        record = record.payload(&value[..]);
    }
    if let Some(headers) = headers {
        record = record.headers(headers);
    }
    producer.send(record).map_err(|(error, _)| error)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size counted for a record's headers is what reading them back would give, and the
    /// headers keep their order.
    #[test]
    fn headers_are_sized_as_they_are_built() {
        use rdkafka::message::Headers as _;
        let (headers, bytes) = headers(&[("op", "c"), ("position", "0/16B3748")]);
        let read: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|h| (h.key, h.value.unwrap_or_default()))
            .collect();
        assert_eq!(read, [("op", &b"c"[..]), ("position", &b"0/16B3748"[..])]);
        let counted: usize = read
            .iter()
            .map(|(key, value)| key.len() + value.len() + HEADER_FRAMING)
            .sum();
        assert_eq!(bytes, counted);
        assert_eq!(bytes, 2 + 1 + 8 + 8 + 9 + 8);
    }

    fn record(acks: &Arc<BatchAcks>, partition: i32, key: &str) -> Held {
        acks.expect_one();
        Held {
            topic: "t".into(),
            partition,
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Some(Bytes::from(vec![0; 36])),
            headers: None,
            header_bytes: 0,
            acks: acks.clone(),
        }
    }

    /// What reached librdkafka, in order: (partition, key).
    type Sent = Vec<(i32, String)>;

    fn accept(sent: &mut Sent) -> impl FnMut(&mut Held) -> Result<(), KafkaError> + '_ {
        |held| {
            sent.push((
                held.partition,
                String::from_utf8(held.key.to_vec()).unwrap(),
            ));
            Ok(())
        }
    }

    const LIMITS: ChunkLimits = ChunkLimits {
        records: 3,
        bytes: 1_000,
    };

    /// A partition with records in librdkafka holds the next ones until the last is
    /// reported, then sends them together; another partition is not held up meanwhile.
    #[test]
    fn a_partition_waits_for_its_chunk_to_be_reported() {
        let (acks, _rx) = BatchAcks::new();
        let mut partitions = Partitions::new(LIMITS);
        let mut sent = Sent::new();
        partitions.offer(
            vec![record(&acks, 0, "a1"), record(&acks, 0, "a2")],
            &mut accept(&mut sent),
        );
        partitions.offer(
            vec![record(&acks, 0, "a3"), record(&acks, 1, "b1")],
            &mut accept(&mut sent),
        );
        assert_eq!(sent, [(0, "a1".into()), (0, "a2".into()), (1, "b1".into())]);

        partitions.reported("t", 0, &mut accept(&mut sent));
        assert_eq!(sent.len(), 3, "a2 is still in librdkafka");
        partitions.offer(vec![record(&acks, 0, "a4")], &mut accept(&mut sent));
        partitions.reported("t", 0, &mut accept(&mut sent));
        assert_eq!(&sent[3..], [(0, "a3".into()), (0, "a4".into())]);
    }

    /// A chunk stops at librdkafka's batch limits, by count and by bytes (100 bytes a
    /// record here), but always takes at least one record.
    #[test]
    fn a_chunk_is_one_requests_worth() {
        let (acks, _rx) = BatchAcks::new();
        let mut partitions = Partitions::new(LIMITS);
        let mut sent = Sent::new();
        let five = (1..=5)
            .map(|i| record(&acks, 0, &format!("k{i}")))
            .collect();
        partitions.offer(five, &mut accept(&mut sent));
        assert_eq!(sent.len(), 3);
        for _ in 0..3 {
            partitions.reported("t", 0, &mut accept(&mut sent));
        }
        assert_eq!(sent.len(), 5);

        let mut by_bytes = Partitions::new(ChunkLimits {
            records: 100,
            bytes: 250,
        });
        let mut sent = Sent::new();
        let four = (1..=4)
            .map(|i| record(&acks, 2, &format!("k{i}")))
            .collect();
        by_bytes.offer(four, &mut accept(&mut sent));
        assert_eq!(sent.len(), 2);

        let mut tiny = Partitions::new(ChunkLimits {
            records: 100,
            bytes: 10,
        });
        let mut sent = Sent::new();
        tiny.offer(vec![record(&acks, 0, "big")], &mut accept(&mut sent));
        assert_eq!(sent.len(), 1);
    }

    /// A record librdkafka refuses fails its batch, and the records behind it are not
    /// stranded: with nothing of the partition in librdkafka, the next chunk goes at once.
    #[tokio::test]
    async fn a_refused_record_fails_its_batch_and_releases_the_next_chunk() {
        let (refused_batch, refused_done) = BatchAcks::new();
        let (next_batch, _next_done) = BatchAcks::new();
        let mut partitions = Partitions::new(ChunkLimits {
            records: 1,
            bytes: 1_000,
        });
        let mut sent = Sent::new();
        let mut refuse_first = {
            let mut first = true;
            let sent = &mut sent;
            move |held: &mut Held| {
                if std::mem::take(&mut first) {
                    return Err(KafkaError::Canceled);
                }
                sent.push((
                    held.partition,
                    String::from_utf8(held.key.to_vec()).unwrap(),
                ));
                Ok(())
            }
        };
        partitions.offer(
            vec![record(&refused_batch, 0, "x"), record(&next_batch, 0, "y")],
            &mut refuse_first,
        );
        assert_eq!(sent, [(0, "y".into())]);
        refused_batch.settle_one();
        assert!(refused_batch.outcome(refused_done).await.is_err());
    }
}
