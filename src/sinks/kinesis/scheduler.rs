//! Which records go into the next PutRecords call: the ordering rule of the Kinesis sink.
//!
//! Kinesis may accept some records of a call and reject others, and calls in flight at once
//! complete in any order. To keep every partition key in source order through that, a record
//! is sent only when every earlier record of its key has been accepted:
//! - a key is in at most one call in flight;
//! - a call holds the earliest waiting record of each key it includes, and (when records are
//!   aggregated) later records of that key only inside the same aggregate, which Kinesis
//!   accepts or rejects as a whole;
//! - a rejected record keeps its place: it stays the earliest of its key, and its key stays
//!   blocked until it is retried (after a backoff) and accepted.
//!
//! The scheduler is pure bookkeeping (no I/O, time passed in), so the rule is tested here with
//! scripted outcomes; `worker.rs` drives it with real calls.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::backoff;

/// One event, ready to send.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition_key: String,
    pub data: Vec<u8>,
    /// For error messages: the event's table and source position.
    pub table: String,
    pub position: String,
}

impl Record {
    /// What the record counts against the per-call and per-record limits.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// Limits of one call.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// Kinesis records per call.
    pub records: usize,
    /// Bytes per call (data plus partition keys).
    pub bytes: usize,
    /// Bytes per Kinesis record (an aggregate must fit in one).
    pub record_bytes: usize,
}

/// One Kinesis record of a call: a single event, or several aggregated into one.
pub type Entry = Vec<u64>;

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum State {
    Waiting,
    InFlight,
}

#[derive(Debug)]
struct Slot {
    record: Record,
    batch: u64,
    state: State,
    /// Failed attempts so far.
    attempts: u32,
    not_before: Option<Instant>,
    first_failure: Option<Instant>,
}

/// A record that keeps failing past the retry timeout.
#[derive(Debug)]
pub struct Exhausted {
    pub record: Record,
    pub attempts: u32,
    pub failing_for: Duration,
}

/// Bookkeeping of unaccepted records, in source order.
pub struct Scheduler {
    /// Every record not yet accepted, by arrival number (source order).
    slots: BTreeMap<u64, Slot>,
    next_seq: u64,
    /// Records waiting to be sent (not in flight).
    waiting: usize,
    /// Records still unaccepted per batch.
    batches: HashMap<u64, usize>,
    retry_base: Duration,
    retry_max: Duration,
    retry_timeout: Duration,
}

/// A record overhead of the aggregated format (tags, indexes, framing), generously rounded.
const AGGREGATE_RECORD_OVERHEAD: usize = 16;
/// Magic number, protobuf framing and MD5 trailer of one aggregate.
const AGGREGATE_OVERHEAD: usize = 4 + 16 + 16;

impl Scheduler {
    pub fn new(retry_base: Duration, retry_max: Duration, retry_timeout: Duration) -> Self {
        Scheduler {
            slots: BTreeMap::new(),
            next_seq: 0,
            waiting: 0,
            batches: HashMap::new(),
            retry_base,
            retry_max,
            retry_timeout,
        }
    }

    /// Queues the records of one batch, in order. `records` must not be empty.
    pub fn push(&mut self, batch: u64, records: Vec<Record>) {
        debug_assert!(!records.is_empty());
        self.batches.insert(batch, records.len());
        self.waiting += records.len();
        for record in records {
            self.slots.insert(
                self.next_seq,
                Slot {
                    record,
                    batch,
                    state: State::Waiting,
                    attempts: 0,
                    not_before: None,
                    first_failure: None,
                },
            );
            self.next_seq += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn record(&self, seq: u64) -> &Record {
        &self.slots[&seq].record
    }

    /// Records not in flight (for the linger decision; some may be held back by their key).
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// Picks the next call and marks its records in flight. `shard_of` groups records into
    /// aggregates (records of one group share a shard); without it every record is an entry
    /// of its own. Returns the entries (possibly none) and the earliest time a record held
    /// back by its backoff may go.
    pub fn next_call(
        &mut self,
        now: Instant,
        limits: CallLimits,
        shard_of: Option<&dyn Fn(&str) -> usize>,
    ) -> (Vec<Entry>, Option<Instant>) {
        let mut blocked: HashSet<&str> = HashSet::new();
        // For aggregation: the entry that holds a key, and the open entry of each shard.
        let mut owner: HashMap<&str, usize> = HashMap::new();
        let mut open_entry: HashMap<usize, usize> = HashMap::new();
        let mut entries: Vec<(Entry, usize)> = Vec::new();
        let mut call_bytes = 0;
        let mut wake: Option<Instant> = None;
        for (&seq, slot) in &self.slots {
            let key = slot.record.partition_key.as_str();
            if blocked.contains(key) {
                continue;
            }
            if slot.state == State::InFlight {
                blocked.insert(key);
                continue;
            }
            if let Some(at) = slot.not_before.filter(|at| *at > now) {
                wake = Some(wake.map_or(at, |w| w.min(at)));
                blocked.insert(key);
                continue;
            }
            let size = slot.record.size();
            let Some(shard_of) = shard_of else {
                if entries.len() == limits.records || call_bytes + size > limits.bytes {
                    break;
                }
                call_bytes += size;
                entries.push((vec![seq], size));
                blocked.insert(key);
                continue;
            };
            let size = size + AGGREGATE_RECORD_OVERHEAD;
            let target = match owner.get(key) {
                Some(&entry) => Some(entry),
                None => open_entry.get(&shard_of(key)).copied(),
            };
            let fits = |entry: usize| {
                entries[entry].1 + size <= limits.record_bytes && call_bytes + size <= limits.bytes
            };
            match target.filter(|&entry| fits(entry)) {
                Some(entry) => {
                    entries[entry].0.push(seq);
                    entries[entry].1 += size;
                    call_bytes += size;
                    owner.insert(key, entry);
                }
                None if owner.contains_key(key) => {
                    // Its earlier records fill an aggregate already: the rest waits.
                    blocked.insert(key);
                }
                None => {
                    let new_size = size + AGGREGATE_OVERHEAD;
                    if entries.len() == limits.records || call_bytes + new_size > limits.bytes {
                        break;
                    }
                    entries.push((vec![seq], new_size));
                    call_bytes += new_size;
                    owner.insert(key, entries.len() - 1);
                    open_entry.insert(shard_of(key), entries.len() - 1);
                }
            }
        }
        let entries: Vec<Entry> = entries.into_iter().map(|(entry, _)| entry).collect();
        for seq in entries.iter().flatten() {
            self.slots.get_mut(seq).expect("picked from slots").state = State::InFlight;
            self.waiting -= 1;
        }
        (entries, wake)
    }

    /// The record was accepted. Returns its batch when that was the batch's last record.
    pub fn accepted(&mut self, seq: u64) -> Option<u64> {
        let slot = self
            .slots
            .remove(&seq)
            .expect("accepted record is in flight");
        let remaining = self
            .batches
            .get_mut(&slot.batch)
            .expect("batch of a record");
        *remaining -= 1;
        if *remaining == 0 {
            self.batches.remove(&slot.batch);
            Some(slot.batch)
        } else {
            None
        }
    }

    /// The record was rejected (retryably): it waits for its backoff and keeps its key blocked.
    /// Fails when it has been failing for longer than the retry timeout.
    pub fn rejected(&mut self, seq: u64, now: Instant) -> Result<(), Exhausted> {
        let slot = self
            .slots
            .get_mut(&seq)
            .expect("rejected record is in flight");
        let first = *slot.first_failure.get_or_insert(now);
        if now.duration_since(first) > self.retry_timeout {
            return Err(Exhausted {
                record: slot.record.clone(),
                attempts: slot.attempts + 1,
                failing_for: now.duration_since(first),
            });
        }
        let delay = backoff::exponential(slot.attempts, self.retry_base, self.retry_max);
        slot.attempts += 1;
        slot.state = State::Waiting;
        self.waiting += 1;
        slot.not_before = Some(now + backoff::with_jitter(delay));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: CallLimits = CallLimits {
        records: 500,
        bytes: 5 << 20,
        record_bytes: 1 << 20,
    };

    fn record(key: &str, n: u32) -> Record {
        Record {
            partition_key: key.to_owned(),
            data: format!("{key}-{n}").into_bytes(),
            table: "t".into(),
            position: n.to_string(),
        }
    }

    fn keys(s: &Scheduler, entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| {
                e.iter()
                    .map(|seq| String::from_utf8(s.record(*seq).data.clone()).unwrap())
                    .collect::<Vec<_>>()
                    .join("+")
            })
            .collect()
    }

    fn scheduler() -> Scheduler {
        Scheduler::new(
            Duration::from_millis(10),
            Duration::from_millis(100),
            Duration::from_secs(60),
        )
    }

    #[test]
    fn a_key_is_in_one_call_once_and_waits_for_its_earlier_record() {
        let mut s = scheduler();
        s.push(
            1,
            vec![
                record("a", 1),
                record("b", 1),
                record("a", 2),
                record("c", 1),
            ],
        );
        let now = Instant::now();
        let (first, _) = s.next_call(now, LIMITS, None);
        assert_eq!(keys(&s, &first), ["a-1", "b-1", "c-1"]);
        // a-2 may not go while a-1 is in flight.
        assert!(s.next_call(now, LIMITS, None).0.is_empty());
        // a-1 rejected, b-1 and c-1 accepted: a-2 still waits behind a-1's backoff.
        s.rejected(first[0][0], now).unwrap();
        assert_eq!(s.accepted(first[1][0]), None);
        assert_eq!(s.accepted(first[2][0]), None);
        let (none, wake) = s.next_call(now, LIMITS, None);
        assert!(none.is_empty());
        let wake = wake.expect("a backoff to wait for");
        let (retry, _) = s.next_call(wake, LIMITS, None);
        assert_eq!(keys(&s, &retry), ["a-1"]);
        assert_eq!(s.accepted(retry[0][0]), None);
        let (last, _) = s.next_call(wake, LIMITS, None);
        assert_eq!(keys(&s, &last), ["a-2"]);
        assert_eq!(s.accepted(last[0][0]), Some(1));
        assert!(s.is_empty());
    }

    #[test]
    fn calls_respect_record_and_byte_limits() {
        let mut s = scheduler();
        s.push(1, (0..7).map(|n| record(&format!("k{n}"), n)).collect());
        let limits = CallLimits {
            records: 3,
            ..LIMITS
        };
        let (call, _) = s.next_call(Instant::now(), limits, None);
        assert_eq!(call.len(), 3);
        let limits = CallLimits {
            bytes: 12,
            ..LIMITS
        }; // "k3" + "k3-3" = 6 bytes each
        let (call, _) = s.next_call(Instant::now(), limits, None);
        assert_eq!(keys(&s, &call), ["k3-3", "k4-4"]);
    }

    #[test]
    fn aggregation_groups_by_shard_and_keeps_a_key_in_one_aggregate() {
        let mut s = scheduler();
        s.push(
            1,
            vec![
                record("a", 1),
                record("b", 1),
                record("a", 2),
                record("c", 1),
                record("b", 2),
            ],
        );
        let shard = |key: &str| usize::from(key == "c");
        let (call, _) = s.next_call(Instant::now(), LIMITS, Some(&shard));
        assert_eq!(keys(&s, &call), ["a-1+b-1+a-2+b-2", "c-1"]);
    }

    #[test]
    fn a_full_aggregate_blocks_the_rest_of_its_keys() {
        let mut s = scheduler();
        s.push(1, vec![record("a", 1), record("a", 2), record("b", 1)]);
        let shard = |_: &str| 0;
        let limits = CallLimits {
            record_bytes: 3 + AGGREGATE_RECORD_OVERHEAD + AGGREGATE_OVERHEAD,
            ..LIMITS
        };
        let (call, _) = s.next_call(Instant::now(), limits, Some(&shard));
        // a-2 does not fit a-1's aggregate and may not go elsewhere; b-1 opens a new one.
        assert_eq!(keys(&s, &call), ["a-1", "b-1"]);
    }

    #[test]
    fn a_record_failing_past_the_timeout_is_reported() {
        let mut s = Scheduler::new(
            Duration::from_millis(1),
            Duration::from_millis(1),
            Duration::from_secs(1),
        );
        s.push(7, vec![record("a", 1)]);
        let t0 = Instant::now();
        let (call, _) = s.next_call(t0, LIMITS, None);
        s.rejected(call[0][0], t0).unwrap();
        let t1 = t0 + Duration::from_secs(2);
        let (call, _) = s.next_call(t1, LIMITS, None);
        let exhausted = s.rejected(call[0][0], t1).unwrap_err();
        assert_eq!(exhausted.attempts, 2);
        assert_eq!(exhausted.record.position, "1");
    }

    /// Random outcomes over many rounds: the order in which records of a key are accepted is
    /// always their source order, and every record is accepted once.
    #[test]
    fn accepted_order_per_key_is_source_order_under_random_failures() {
        let mut s = scheduler();
        let mut next = [0u32; 5];
        let mut seed = 0x2545F4914F6CDD1Du64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for batch in 0..40 {
            let records = (0..25)
                .map(|_| {
                    let k = (rand() % 5) as usize;
                    next[k] += 1;
                    record(&format!("k{k}"), next[k])
                })
                .collect();
            s.push(batch, records);
        }
        let mut seen: HashMap<String, u32> = HashMap::new();
        let mut now = Instant::now();
        let mut in_flight: Vec<Vec<Entry>> = Vec::new();
        while !s.is_empty() {
            now += Duration::from_millis(50);
            let limits = CallLimits {
                records: 7,
                ..LIMITS
            };
            let (call, _) = s.next_call(now, limits, None);
            let idle = call.is_empty();
            in_flight.push(call);
            // Up to three calls in flight; then complete a random one, with random
            // per-record failures.
            if in_flight.len() < 3 && !idle {
                continue;
            }
            let index = (rand() as usize) % in_flight.len();
            for entry in in_flight.swap_remove(index) {
                let seq = entry[0];
                if rand() % 3 == 0 {
                    s.rejected(seq, now).unwrap();
                } else {
                    let r = s.record(seq).clone();
                    let n: u32 = r.position.parse().unwrap();
                    let last = seen.entry(r.partition_key.clone()).or_default();
                    assert_eq!(*last + 1, n, "key {} out of order", r.partition_key);
                    *last = n;
                    s.accepted(seq);
                }
            }
        }
        for (k, n) in next.iter().enumerate() {
            assert_eq!(seen.get(&format!("k{k}")).copied().unwrap_or(0), *n);
        }
    }
}
