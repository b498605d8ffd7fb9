//! The commit tracker: turns out-of-order batch acknowledgements into checkpoints that are
//! safe to store.
//!
//! Every batch is registered in source order with the checkpoint marks it carries. A batch's
//! marks become storable only when that batch and every batch before it are acknowledged, so a
//! checkpoint never passes a gap. A failed batch is never acknowledged: nothing after it is
//! ever released.

use std::collections::{BTreeMap, VecDeque};

use crate::checkpoint::Position;

/// Checkpoint marks by partition: the latest position, or `None` when the partition was
/// forgotten (its stored position is to be deleted).
pub type Marks = BTreeMap<String, Option<Position>>;

/// Identifies a registered batch; increases by one per registration.
pub type BatchId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    InFlight,
    Acknowledged,
    Failed,
}

#[derive(Debug, Default)]
pub struct CommitTracker {
    /// Id of the front of `pending`.
    first_pending: BatchId,
    pending: VecDeque<(State, Marks)>,
}

impl CommitTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the next batch, with the checkpoint marks it carries (latest per partition).
    pub fn register(&mut self, marks: Marks) -> BatchId {
        self.pending.push_back((State::InFlight, marks));
        self.first_pending + self.pending.len() as u64 - 1
    }

    /// Records that batch `id` was delivered. Returns the marks that became storable: the
    /// latest per partition over every batch released by this acknowledgement, or `None`.
    pub fn acknowledge(&mut self, id: BatchId) -> Option<Marks> {
        let slot = self.slot(id)?;
        if slot.0 == State::InFlight {
            slot.0 = State::Acknowledged;
        }
        let mut released = Marks::new();
        while self
            .pending
            .front()
            .is_some_and(|(state, _)| *state == State::Acknowledged)
        {
            let (_, marks) = self.pending.pop_front().expect("front exists");
            self.first_pending += 1;
            released.extend(marks);
        }
        (!released.is_empty()).then_some(released)
    }

    /// Records that batch `id` failed: it and every later batch stay unreleased.
    pub fn fail(&mut self, id: BatchId) {
        if let Some(slot) = self.slot(id) {
            slot.0 = State::Failed;
        }
    }

    /// Batches registered and not yet released.
    pub fn unreleased(&self) -> usize {
        self.pending.len()
    }

    fn slot(&mut self, id: BatchId) -> Option<&mut (State, Marks)> {
        let index = id.checked_sub(self.first_pending)?;
        self.pending.get_mut(usize::try_from(index).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(n: u64) -> Marks {
        Marks::from([(
            String::new(),
            Some(Position::from_counter(n.to_string(), n)),
        )])
    }

    fn stored_counter(marks: Option<Marks>) -> Option<String> {
        marks.map(|m| m[""].as_ref().unwrap().token.clone())
    }

    #[test]
    fn in_order_acknowledgements_release_each_batch() {
        let mut tracker = CommitTracker::new();
        let a = tracker.register(mark(1));
        let b = tracker.register(mark(2));
        assert_eq!(stored_counter(tracker.acknowledge(a)), Some("1".into()));
        assert_eq!(stored_counter(tracker.acknowledge(b)), Some("2".into()));
        assert_eq!(tracker.unreleased(), 0);
    }

    #[test]
    fn out_of_order_acknowledgements_never_pass_a_gap() {
        let mut tracker = CommitTracker::new();
        let ids: Vec<_> = (1..=4).map(|n| tracker.register(mark(n))).collect();
        assert_eq!(tracker.acknowledge(ids[3]), None);
        assert_eq!(tracker.acknowledge(ids[1]), None);
        assert_eq!(tracker.acknowledge(ids[2]), None);
        // The gap (batch 1) closes: everything up to batch 4 is released at once.
        assert_eq!(
            stored_counter(tracker.acknowledge(ids[0])),
            Some("4".into())
        );
    }

    #[test]
    fn a_failed_batch_is_never_skipped() {
        let mut tracker = CommitTracker::new();
        let a = tracker.register(mark(1));
        let b = tracker.register(mark(2));
        let c = tracker.register(mark(3));
        assert_eq!(stored_counter(tracker.acknowledge(a)), Some("1".into()));
        tracker.fail(b);
        assert_eq!(tracker.acknowledge(c), None);
        // A late "success" for the failed batch does not release it either.
        assert_eq!(tracker.acknowledge(b), None);
        assert_eq!(tracker.unreleased(), 2);
    }

    #[test]
    fn batches_without_marks_pass_through_and_latest_mark_per_partition_wins() {
        let mut tracker = CommitTracker::new();
        let a = tracker.register(Marks::new());
        let shard_marks = Marks::from([
            ("s1".to_owned(), Some(Position::from_counter("10", 10))),
            ("s2".to_owned(), Some(Position::from_counter("20", 20))),
        ]);
        let b = tracker.register(shard_marks);
        let c = tracker.register(Marks::from([(
            "s1".to_owned(),
            Some(Position::from_counter("11", 11)),
        )]));
        let d = tracker.register(Marks::from([("s2".to_owned(), None)]));
        assert_eq!(tracker.acknowledge(a), None);
        assert_eq!(tracker.acknowledge(c), None);
        let released = tracker.acknowledge(b).unwrap();
        assert_eq!(released["s1"].as_ref().unwrap().token, "11");
        assert_eq!(released["s2"].as_ref().unwrap().token, "20");
        // A later forget releases after the mark it follows, never before.
        assert_eq!(tracker.acknowledge(d).unwrap()["s2"], None);
    }

    #[test]
    fn acknowledging_unknown_or_released_ids_changes_nothing() {
        let mut tracker = CommitTracker::new();
        let a = tracker.register(mark(1));
        assert!(tracker.acknowledge(a).is_some());
        assert_eq!(tracker.acknowledge(a), None);
        assert_eq!(tracker.acknowledge(99), None);
    }
}
