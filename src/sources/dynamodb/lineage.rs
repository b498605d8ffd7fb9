//! Which shards may be read now: a shard's records follow its parent's, so a child is read
//! only after its parent was read to its end (otherwise changes of one item would be read out
//! of order). A parent no longer listed (trimmed after 24 hours) does not hold its children back.

use std::collections::BTreeMap;

use super::api::ShardInfo;

#[derive(Debug, Clone)]
struct Shard {
    parent: Option<String>,
    closed: bool,
    finished: bool,
}

#[derive(Debug, Default)]
pub struct Lineage {
    shards: BTreeMap<String, Shard>,
}

impl Lineage {
    /// Adds newly listed shards and updates the closed flags; finished shards stay finished.
    pub fn update(&mut self, listed: &[ShardInfo]) {
        for info in listed {
            let shard = self.shards.entry(info.id.clone()).or_insert(Shard {
                parent: info.parent.clone(),
                closed: info.closed,
                finished: false,
            });
            shard.closed |= info.closed;
        }
    }

    /// Records that `shard` was read to its end (or, from a checkpoint, had been).
    pub fn finish(&mut self, shard: &str) {
        self.shards
            .entry(shard.to_owned())
            .or_insert(Shard {
                parent: None,
                closed: true,
                finished: false,
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
        lineage.update(&[
            shard("a", None, true),
            shard("b1", Some("a"), false),
            shard("b2", Some("a"), false),
            shard("c", Some("gone"), false),
        ]);
        // "gone" was trimmed: c is readable; b1 and b2 wait for a.
        assert_eq!(lineage.readable(), ["a", "c"]);
        lineage.finish("a");
        assert_eq!(lineage.readable(), ["b1", "b2", "c"]);
        lineage.update(&[shard("d", Some("b1"), false)]);
        assert!(!lineage.readable().contains(&"d".to_owned()));
        lineage.finish("b1");
        assert!(lineage.readable().contains(&"d".to_owned()));
        assert!(!lineage.all_finished());
    }
}
