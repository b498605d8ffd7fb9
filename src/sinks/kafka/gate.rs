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
//! that one chunk is one request). Each record goes with a [`Sent`] as its delivery opaque,
//! shared by the records of one batch in one chunk: it names the batch and the partition's
//! [`InFlight`] count. A delivery report counts that down without a lock; only the last report
//! of a chunk takes the lock, to release the next. Per-key order holds: a key always maps to
//! one partition, whose queue is first in, first out.
//!
//! Errors: a record librdkafka refuses when it is released fails its batch through the
//! batch's [`BatchAcks`], as a failed delivery report does. Memory stays bounded by the
//! pipeline: only the batches it has in flight are held here.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Slices of the batch's buffer ([`super::records`]); no key for a record the format
    /// gives none.
    pub key: Option<Bytes>,
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
        self.key.as_ref().map_or(0, Bytes::len)
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

/// Puts one record into librdkafka (taking its headers) with its delivery opaque; the error
/// when librdkafka refuses it.
pub type Enqueue<'a> = dyn FnMut(&mut Held, &Arc<Sent>) -> Result<(), KafkaError> + 'a;

/// What one partition has in librdkafka: its records not reported yet, plus one while a chunk
/// is being released (so that reports of the chunk's first records cannot find the partition
/// idle before its last record is in). It goes up from zero only under the gate's lock.
pub struct InFlight {
    count: AtomicUsize,
    topic: Arc<str>,
    partition: i32,
}

impl InFlight {
    fn idle(&self) -> bool {
        self.count.load(Ordering::Acquire) == 0
    }

    fn add_one(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    /// One record fewer; true when that left the partition idle.
    pub fn remove_one(&self) -> bool {
        self.count.fetch_sub(1, Ordering::AcqRel) == 1
    }
}

/// The delivery opaque of a run of records of one batch in one chunk.
pub struct Sent {
    pub acks: Arc<BatchAcks>,
    pub in_flight: Arc<InFlight>,
}

struct PartitionQueue {
    in_flight: Arc<InFlight>,
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

    /// The last record `in_flight` counted was reported ([`InFlight::remove_one`]): the
    /// partition's next chunk goes, unless another went in the meantime.
    pub fn idle(&mut self, in_flight: &InFlight, enqueue: &mut Enqueue<'_>) {
        let limits = self.limits;
        let index = usize::try_from(in_flight.partition).expect("partitions are not negative");
        if let Some(queue) = self
            .topics
            .get_mut(&in_flight.topic)
            .and_then(|queues| queues.get_mut(index))
        {
            release(queue, limits, enqueue);
        }
    }

    fn queue(&mut self, topic: &Arc<str>, partition: i32) -> &mut PartitionQueue {
        let queues = self.topics.entry(topic.clone()).or_default();
        let index = usize::try_from(partition).expect("partitions are not negative");
        while queues.len() <= index {
            let in_flight = InFlight {
                count: AtomicUsize::new(0),
                topic: topic.clone(),
                partition: queues.len() as i32,
            };
            queues.push(PartitionQueue {
                in_flight: Arc::new(in_flight),
                waiting: VecDeque::new(),
            });
        }
        &mut queues[index]
    }
}

/// Releases chunks while the partition has nothing in librdkafka and records wait (a chunk
/// whose every record was refused, or was reported before the chunk was all in, releases the
/// next one at once).
fn release(queue: &mut PartitionQueue, limits: ChunkLimits, enqueue: &mut Enqueue<'_>) {
    let in_flight = &queue.in_flight;
    while in_flight.idle() && !queue.waiting.is_empty() {
        in_flight.add_one(); // the chunk's own hold
        let (mut records, mut bytes) = (0, 0);
        let mut sent: Option<Arc<Sent>> = None;
        while let Some(next) = queue.waiting.front() {
            let size = next.size();
            if records > 0 && (records >= limits.records || bytes + size > limits.bytes) {
                break;
            }
            let mut record = queue.waiting.pop_front().expect("a front record");
            records += 1;
            bytes += size;
            if !sent
                .as_ref()
                .is_some_and(|sent| Arc::ptr_eq(&sent.acks, &record.acks))
            {
                sent = Some(Arc::new(Sent {
                    acks: record.acks.clone(),
                    in_flight: in_flight.clone(),
                }));
            }
            in_flight.add_one();
            if let Err(error) = enqueue(&mut record, sent.as_ref().expect("just set")) {
                in_flight.remove_one();
                record.acks.fail_one(&record.topic, error);
            }
        }
        in_flight.remove_one();
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
        partitions.offer(records, &mut |held, sent| {
            enqueue(producer.as_ref(), held, sent)
        });
    }

    /// Called by the producer context for every delivery report, after the batch's.
    pub fn reported(&self, sent: &Sent) {
        if !sent.in_flight.remove_one() {
            return;
        }
        let mut state = self.state.lock().expect("not poisoned");
        let (producer, partitions) = &mut *state;
        partitions.idle(&sent.in_flight, &mut |held, sent| {
            enqueue(producer.as_ref(), held, sent)
        });
    }
}

fn enqueue(
    producer: Option<&Producer>,
    held: &mut Held,
    sent: &Arc<Sent>,
) -> Result<(), KafkaError> {
    let Some(producer) = producer else {
        return Err(KafkaError::Canceled);
    };
    let headers = held.headers.take();
    let mut record = BaseRecord::<[u8], [u8], _>::with_opaque_to(&held.topic, sent.clone())
        .partition(held.partition);
    if let Some(key) = &held.key {
        record = record.key(&key[..]);
    }
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
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: Some(Bytes::from(vec![0; 36])),
            headers: None,
            header_bytes: 0,
            acks: acks.clone(),
        }
    }

    /// What reached librdkafka, in order: (partition, key) and the record's delivery opaque.
    #[derive(Default)]
    struct Librdkafka {
        sent: Vec<(i32, String, Arc<Sent>)>,
        /// Refuse this many records before accepting any.
        refuse: usize,
    }

    impl Librdkafka {
        fn accept(&mut self) -> impl FnMut(&mut Held, &Arc<Sent>) -> Result<(), KafkaError> + '_ {
            |held, sent| {
                if self.refuse > 0 {
                    self.refuse -= 1;
                    return Err(KafkaError::Canceled);
                }
                let key = String::from_utf8(held.key.as_deref().unwrap().to_vec()).unwrap();
                self.sent.push((held.partition, key, sent.clone()));
                Ok(())
            }
        }

        fn keys(&self) -> Vec<(i32, &str)> {
            self.sent.iter().map(|(p, k, _)| (*p, k.as_str())).collect()
        }

        /// The delivery report of the `index`th record sent, as [`Gate::reported`] counts it.
        fn report(&mut self, partitions: &mut Partitions, index: usize) {
            let sent = self.sent[index].2.clone();
            if sent.in_flight.remove_one() {
                partitions.idle(&sent.in_flight, &mut self.accept());
            }
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
        let mut kafka = Librdkafka::default();
        partitions.offer(
            vec![record(&acks, 0, "a1"), record(&acks, 0, "a2")],
            &mut kafka.accept(),
        );
        partitions.offer(
            vec![record(&acks, 0, "a3"), record(&acks, 1, "b1")],
            &mut kafka.accept(),
        );
        assert_eq!(kafka.keys(), [(0, "a1"), (0, "a2"), (1, "b1")]);

        kafka.report(&mut partitions, 0);
        assert_eq!(kafka.sent.len(), 3, "a2 is still in librdkafka");
        partitions.offer(vec![record(&acks, 0, "a4")], &mut kafka.accept());
        kafka.report(&mut partitions, 1);
        assert_eq!(&kafka.keys()[3..], [(0, "a3"), (0, "a4")]);
    }

    /// The records of one batch in one chunk share their delivery opaque; another batch, or
    /// the next chunk, has its own. A report that comes while its chunk is still being handed
    /// over does not leave the partition idle: the rest of the chunk is still to come.
    #[test]
    fn a_chunk_shares_an_opaque_per_batch_and_is_held_while_it_is_handed_over() {
        let (first, _rx1) = BatchAcks::new();
        let (second, _rx2) = BatchAcks::new();
        let mut partitions = Partitions::new(LIMITS);
        let mut reports_during_handover = Vec::new();
        let mut handed = Vec::<Arc<Sent>>::new();
        partitions.offer(
            vec![
                record(&first, 0, "a"),
                record(&first, 0, "b"),
                record(&second, 0, "c"),
                record(&second, 0, "d"),
            ],
            &mut |_held: &mut Held, sent: &Arc<Sent>| {
                // librdkafka reports the record before this one as this one goes in.
                if let Some(previous) = handed.last() {
                    reports_during_handover.push(previous.in_flight.remove_one());
                }
                handed.push(sent.clone());
                Ok(())
            },
        );
        assert_eq!(handed.len(), 3, "one chunk: a, b, c");
        assert!(Arc::ptr_eq(&handed[0], &handed[1]));
        assert!(!Arc::ptr_eq(&handed[1], &handed[2]));
        assert!(Arc::ptr_eq(&handed[2].acks, &second));
        assert_eq!(reports_during_handover, [false, false]);
        // Only c is left in librdkafka; its report releases d.
        assert!(handed[2].in_flight.remove_one());
        let mut kafka = Librdkafka::default();
        partitions.idle(&handed[2].in_flight, &mut kafka.accept());
        assert_eq!(kafka.keys(), [(0, "d")]);
        assert!(!Arc::ptr_eq(&kafka.sent[0].2, &handed[2]), "a new chunk");
    }

    /// A chunk stops at librdkafka's batch limits, by count and by bytes (100 bytes a
    /// record here), but always takes at least one record.
    #[test]
    fn a_chunk_is_one_requests_worth() {
        let (acks, _rx) = BatchAcks::new();
        let mut partitions = Partitions::new(LIMITS);
        let mut kafka = Librdkafka::default();
        let five = (1..=5)
            .map(|i| record(&acks, 0, &format!("k{i}")))
            .collect();
        partitions.offer(five, &mut kafka.accept());
        assert_eq!(kafka.sent.len(), 3);
        for index in 0..3 {
            kafka.report(&mut partitions, index);
        }
        assert_eq!(kafka.sent.len(), 5);

        let mut by_bytes = Partitions::new(ChunkLimits {
            records: 100,
            bytes: 250,
        });
        let mut kafka = Librdkafka::default();
        let four = (1..=4)
            .map(|i| record(&acks, 2, &format!("k{i}")))
            .collect();
        by_bytes.offer(four, &mut kafka.accept());
        assert_eq!(kafka.sent.len(), 2);

        let mut tiny = Partitions::new(ChunkLimits {
            records: 100,
            bytes: 10,
        });
        let mut kafka = Librdkafka::default();
        tiny.offer(vec![record(&acks, 0, "big")], &mut kafka.accept());
        assert_eq!(kafka.sent.len(), 1);
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
        let mut kafka = Librdkafka {
            refuse: 1,
            ..Librdkafka::default()
        };
        partitions.offer(
            vec![record(&refused_batch, 0, "x"), record(&next_batch, 0, "y")],
            &mut kafka.accept(),
        );
        assert_eq!(kafka.keys(), [(0, "y")]);
        refused_batch.settle_one();
        assert!(refused_batch.outcome(refused_done).await.is_err());
    }
}
