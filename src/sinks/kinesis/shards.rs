//! The stream's shards and their hash-key ranges (from ListShards): the open ones predict
//! where a partition key lands (aggregation groups records by shard); all of them, closed ones
//! included, tell whether an aggregate that landed on a shard holds only keys of its range
//! (after a reshard it may not, see `worker.rs`). Also per-shard pacing.
//!
//! Pacing keeps each shard within its write limits (1,000 records/s and 1 MiB/s) with a
//! one-second burst, so a backlog drains at the rate the stream accepts instead of in waves
//! of throttling errors.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;

use super::config::StreamRef;
use super::partition_key::hash_key;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRange {
    pub shard_id: String,
    pub start: u128,
    pub end: u128,
}

/// The shards of a stream: the open ones by hash-key range, and the range of every shard
/// listed (closed ones too) by id.
#[derive(Debug, Clone, Default)]
pub struct ShardMap {
    shards: Vec<ShardRange>,
    ranges: HashMap<String, (u128, u128)>,
}

impl ShardMap {
    /// A map of the open shards `open` and the shards `closed`.
    pub fn new(mut open: Vec<ShardRange>, closed: Vec<ShardRange>) -> Self {
        open.sort_by_key(|s| s.start);
        let ranges = open
            .iter()
            .chain(&closed)
            .map(|s| (s.shard_id.clone(), (s.start, s.end)))
            .collect();
        ShardMap {
            shards: open,
            ranges,
        }
    }

    /// Lists the stream's shards (all pages), open and closed.
    pub async fn load(
        client: &Client,
        stream: &StreamRef,
    ) -> Result<
        Self,
        aws_sdk_kinesis::error::SdkError<aws_sdk_kinesis::operation::list_shards::ListShardsError>,
    > {
        let (mut open, mut closed) = (Vec::new(), Vec::new());
        let mut token: Option<String> = None;
        loop {
            let request = client.list_shards();
            let request = match (&token, stream) {
                (Some(token), _) => request.next_token(token),
                (None, StreamRef::Name(name)) => request.stream_name(name),
                (None, StreamRef::Arn { arn, .. }) => request.stream_arn(arn),
            };
            let page = request.send().await?;
            for shard in page.shards() {
                let is_open = shard
                    .sequence_number_range()
                    .is_none_or(|r| r.ending_sequence_number().is_none());
                let range = shard.hash_key_range();
                let parse = |s: Option<&str>| s.and_then(|s| s.parse::<u128>().ok());
                if let (Some(start), Some(end)) = (
                    parse(range.map(|r| r.starting_hash_key())),
                    parse(range.map(|r| r.ending_hash_key())),
                ) {
                    let shard = ShardRange {
                        shard_id: shard.shard_id().to_owned(),
                        start,
                        end,
                    };
                    if is_open { &mut open } else { &mut closed }.push(shard);
                }
            }
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        Ok(ShardMap::new(open, closed))
    }

    pub fn len(&self) -> usize {
        self.shards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// The index of the shard a partition key hashes to (0 when the map is empty).
    pub fn shard_of(&self, partition_key: &str) -> usize {
        let hash = hash_key(partition_key);
        self.shards
            .partition_point(|s| s.end < hash)
            .min(self.shards.len().saturating_sub(1))
    }

    pub fn shard_id(&self, index: usize) -> Option<&str> {
        self.shards.get(index).map(|s| s.shard_id.as_str())
    }

    /// Whether every key of `partition_keys` hashes into the range of shard `shard_id`; `None`
    /// when the map does not know that shard (it is newer than the map).
    pub fn holds_all<'a>(
        &self,
        shard_id: &str,
        mut partition_keys: impl Iterator<Item = &'a str>,
    ) -> Option<bool> {
        let &(start, end) = self.ranges.get(shard_id)?;
        Some(partition_keys.all(|key| (start..=end).contains(&hash_key(key))))
    }
}

/// Per-shard write pacing (a token bucket per shard and limit, as theoretical arrival times).
#[derive(Debug, Default)]
pub struct Pacer {
    /// Per shard: when the records and the bytes sent so far are "paid for".
    paid_until: HashMap<usize, (Instant, Instant)>,
}

pub const RECORDS_PER_SECOND: u32 = 1000;
pub const BYTES_PER_SECOND: u32 = 1024 * 1024;
const BURST: Duration = Duration::from_secs(1);

impl Pacer {
    /// Reserves capacity for a call that writes `(shard, records, bytes)` and returns when the
    /// call may start (now, or later when a shard is over its rate).
    pub fn reserve(&mut self, usage: &HashMap<usize, (u32, usize)>, now: Instant) -> Instant {
        let mut start = now;
        for (&shard, &(records, bytes)) in usage {
            let (rec_tat, byte_tat) = self.paid_until.get(&shard).copied().unwrap_or((now, now));
            let rec_cost =
                Duration::from_secs_f64(f64::from(records) / f64::from(RECORDS_PER_SECOND));
            let byte_cost = Duration::from_secs_f64(bytes as f64 / f64::from(BYTES_PER_SECOND));
            let rec_tat = rec_tat.max(now) + rec_cost;
            let byte_tat = byte_tat.max(now) + byte_cost;
            start = start
                .max(rec_tat.checked_sub(BURST).unwrap_or(now))
                .max(byte_tat.checked_sub(BURST).unwrap_or(now));
            self.paid_until.insert(shard, (rec_tat, byte_tat));
        }
        start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(shard_id: &str, start: u128, end: u128) -> ShardRange {
        ShardRange {
            shard_id: shard_id.into(),
            start,
            end,
        }
    }

    #[test]
    fn keys_map_to_the_shard_whose_range_holds_their_hash() {
        let half = u128::MAX / 2;
        let map = ShardMap::new(
            vec![range("s1", half + 1, u128::MAX), range("s0", 0, half)],
            vec![],
        );
        for key in ["a", "b", "c", "public.orders:{\"id\":1}"] {
            let expected = if hash_key(key) <= half { "s0" } else { "s1" };
            assert_eq!(map.shard_id(map.shard_of(key)), Some(expected), "{key}");
        }
    }

    #[test]
    fn a_shard_holds_the_keys_of_its_range_closed_or_not() {
        let half = u128::MAX / 2;
        // s0 was split into s1 (lower half) and s2.
        let map = ShardMap::new(
            vec![range("s1", 0, half), range("s2", half + 1, u128::MAX)],
            vec![range("s0", 0, u128::MAX)],
        );
        let (low, high): (Vec<&str>, Vec<&str>) = ["a", "b", "c", "d", "e", "f"]
            .into_iter()
            .partition(|key| hash_key(key) <= half);
        assert!(!low.is_empty() && !high.is_empty());
        let both = || low.iter().chain(&high).copied();
        assert_eq!(map.holds_all("s0", both()), Some(true));
        assert_eq!(map.holds_all("s1", low.iter().copied()), Some(true));
        assert_eq!(map.holds_all("s1", both()), Some(false));
        assert_eq!(map.holds_all("s2", both()), Some(false));
        assert_eq!(map.holds_all("s3", both()), None);
    }

    #[test]
    fn pacing_allows_a_burst_then_the_shard_rate() {
        let mut pacer = Pacer::default();
        let now = Instant::now();
        let call = HashMap::from([(0, (500, 1000))]);
        assert_eq!(pacer.reserve(&call, now), now);
        assert_eq!(
            pacer.reserve(&call, now),
            now,
            "1,000 records fit the burst"
        );
        let third = pacer.reserve(&call, now);
        assert_eq!(third - now, Duration::from_millis(500));
        // Another shard is not held back by the first.
        assert_eq!(pacer.reserve(&HashMap::from([(1, (500, 1000))]), now), now);
        // Bytes count too: 2 MiB on a fresh shard waits a second beyond the burst.
        let big = HashMap::from([(2, (1, 2 * 1024 * 1024))]);
        assert_eq!(pacer.reserve(&big, now) - now, Duration::from_secs(1));
    }
}
