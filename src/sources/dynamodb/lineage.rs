//! Which shards may be read now: a shard's records follow its parent's, so a child is read
//! only after its parent was read to its end (otherwise changes of one item would be read out
//! of order). A parent no longer listed (trimmed after 24 hours) does not hold its children back.
//!
//! A finished shard the latest listing does not hold is gone from the stream: its checkpoint
//! can be forgotten. Its id is still remembered for a day, so that a shard missing from one
//! listing and listed again is never read a second time.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use super::server::ShardInfo;

#[derive(Debug, Clone)]
struct Shard {
    parent: Option<String>,
    closed: bool,
    finished: bool,
    /// Since when the listings no longer hold it (`None`: the latest listing does).
    unlisted_since: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct Lineage {
    shards: BTreeMap<String, Shard>,
}

impl Lineage {
    /// Adds newly listed shards and updates the closed flags; finished shards stay finished.
    /// Shards `listed` (a complete listing) does not hold are unlisted from `now` on.
    pub fn update(&mut self, listed: &[ShardInfo], now: Instant) {
        for info in listed {
            let shard = self.shards.entry(info.id.clone()).or_insert(Shard {
                parent: info.parent.clone(),
                closed: info.closed,
                finished: false,
                unlisted_since: None,
            });
            shard.closed |= info.closed;
            shard.unlisted_since = None;
        }
        let listed: HashSet<&str> = listed.iter().map(|s| s.id.as_str()).collect();
        for (id, shard) in &mut self.shards {
            if !listed.contains(id.as_str()) {
                shard.unlisted_since.get_or_insert(now);
            }
        }
    }

    /// Finished shards the latest listing does not hold: gone from the stream.
    pub fn gone(&self) -> Vec<String> {
        self.shards
            .iter()
            .filter(|(_, s)| s.finished && s.unlisted_since.is_some())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Stops remembering finished shards unlisted for longer than `after`.
    pub fn drop_gone(&mut self, now: Instant, after: Duration) {
        self.shards.retain(|_, s| {
            !(s.finished
                && s.unlisted_since
                    .is_some_and(|t| now.duration_since(t) > after))
        });
    }

    /// Records that `shard` was read to its end (or, from a checkpoint, had been).
    pub fn finish(&mut self, shard: &str) {
        self.shards
            .entry(shard.to_owned())
            .or_insert(Shard {
                parent: None,
                closed: true,
                finished: false,
                unlisted_since: None,
            })
            .finished = true;
    }

    pub fn is_listed(&self, shard: &str) -> bool {
        self.shards.contains_key(shard)
    }

    pub fn is_closed(&self, shard: &str) -> bool {
        self.shards.get(shard).is_some_and(|s| s.closed)
    }

    /// Unfinished shards whose parent is finished or unknown, in id order.
    pub fn readable(&self) -> Vec<String> {
        self.shards
            .iter()
            .filter(|(_, s)| !s.finished)
            .filter(|(_, s)| {
                s.parent
                    .as_ref()
                    .is_none_or(|p| self.shards.get(p).is_none_or(|parent| parent.finished))
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Whether every listed shard is finished.
    pub fn all_finished(&self) -> bool {
        self.shards.values().all(|s| s.finished)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parent: Option<&str>, closed: bool) -> ShardInfo {
        ShardInfo {
            id: id.into(),
            parent: parent.map(Into::into),
            closed,
        }
    }

    #[test]
    fn children_wait_for_their_parent_and_a_split_frees_both() {
        let mut lineage = Lineage::default();
        let now = Instant::now();
        lineage.update(
            &[
                shard("a", None, true),
                shard("b1", Some("a"), false),
                shard("b2", Some("a"), false),
                shard("c", Some("gone"), false),
            ],
            now,
        );
        // "gone" was trimmed: c is readable; b1 and b2 wait for a.
        assert_eq!(lineage.readable(), ["a", "c"]);
        lineage.finish("a");
        assert_eq!(lineage.readable(), ["b1", "b2", "c"]);
        lineage.update(
            &[
                shard("a", None, true),
                shard("b1", Some("a"), false),
                shard("b2", Some("a"), false),
                shard("c", Some("gone"), false),
                shard("d", Some("b1"), false),
            ],
            now,
        );
        assert!(!lineage.readable().contains(&"d".to_owned()));
        lineage.finish("b1");
        assert!(lineage.readable().contains(&"d".to_owned()));
        assert!(!lineage.all_finished());
    }

    #[test]
    fn finished_shards_missing_from_a_listing_are_gone_and_never_readable_again() {
        let mut lineage = Lineage::default();
        let start = Instant::now();
        lineage.finish("old"); // from a checkpoint
        lineage.update(
            &[shard("a", None, true), shard("b", Some("a"), false)],
            start,
        );
        assert_eq!(lineage.gone(), ["old"]);
        lineage.finish("a");
        lineage.update(&[shard("b", Some("a"), false)], start);
        assert_eq!(lineage.gone(), ["a", "old"], "b is open: not gone");
        // Listed again (an inconsistent listing): remembered, not read from its start again.
        lineage.update(
            &[shard("a", None, true), shard("b", Some("a"), false)],
            start,
        );
        assert_eq!(lineage.gone(), ["old"]);
        assert_eq!(lineage.readable(), ["b"]);
        // After a day unlisted, a finished shard's id is dropped; open ones stay.
        let day = Duration::from_secs(24 * 3600);
        lineage.update(&[shard("b", Some("a"), false)], start + day);
        lineage.drop_gone(start + day + Duration::from_secs(1), day);
        assert_eq!(lineage.gone(), ["a"], "old was dropped");
        lineage.drop_gone(start + day * 3, day);
        assert!(lineage.gone().is_empty());
        assert_eq!(lineage.readable(), ["b"]);
    }
}
