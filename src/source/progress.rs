//! How far a table's copy got: stored as its own checkpoint partition, `snapshot/<table>`,
//! beside the stream's position, so that an interrupted copy resumes at its first unfinished
//! chunk instead of starting over.
//!
//! A database source copies a table in chunks ordered by its key (or, without a key, by
//! physical location). After every chunk's rows it emits a mark for the table's partition
//! with the last key copied; the pipeline stores it once those rows are acknowledged, like any
//! other mark. A table is `done` after its last chunk.
//!
//! Each request to copy a table (the first run's snapshot, a re-snapshot) is a new
//! *generation*: ranks order generation first, then chunks, with `done` last, so a new copy
//! of a table outranks every stored position of the previous one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoints, Position};

/// Partitions holding a table's copy progress start with this.
const PARTITION_PREFIX: &str = "snapshot/";

/// One table's copy: which generation, how many chunks are stored, and where the next starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableProgress {
    pub generation: u64,
    pub chunks: u64,
    /// The key values (text form) of the last row copied; `None` before the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub done: bool,
}

impl TableProgress {
    /// A copy of generation `generation`, with nothing copied yet.
    pub fn started(generation: u64) -> Self {
        TableProgress {
            generation,
            chunks: 0,
            after: None,
            done: false,
        }
    }

    /// The progress once one more chunk, ending at `last_key`, is copied.
    pub fn after_chunk(&self, last_key: Vec<String>) -> Self {
        TableProgress {
            generation: self.generation,
            chunks: self.chunks + 1,
            after: Some(last_key),
            done: false,
        }
    }

    /// The progress once the last chunk is copied.
    pub fn finished(&self) -> Self {
        TableProgress {
            done: true,
            ..self.clone()
        }
    }

    /// The checkpoint partition of `table` (its qualified name).
    pub fn partition(table: &str) -> String {
        format!("{PARTITION_PREFIX}{table}")
    }

    /// The table whose progress `partition` holds, if it holds one.
    pub fn table_of(partition: &str) -> Option<&str> {
        partition.strip_prefix(PARTITION_PREFIX)
    }

    /// This progress as a stored position.
    pub fn position(&self) -> Position {
        let mut rank = self.generation.to_be_bytes().to_vec();
        let chunks = if self.done { u64::MAX } else { self.chunks };
        rank.extend_from_slice(&chunks.to_be_bytes());
        Position {
            token: serde_json::to_string(self).expect("progress serializes"),
            rank,
        }
    }

    /// Reads a stored position back.
    pub fn parse(token: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(token)
    }

    /// Every table's stored progress, by table. A partition that does not parse is an error
    /// naming it: it was written by another version or by hand.
    pub fn stored(checkpoints: &Checkpoints) -> Result<BTreeMap<String, Self>, String> {
        checkpoints
            .iter()
            .filter_map(|(partition, position)| {
                Self::table_of(partition).map(|table| {
                    Self::parse(&position.token)
                        .map(|progress| (table.to_owned(), progress))
                        .map_err(|err| {
                            format!(
                                "stored progress of {partition} ({:?}): {err}",
                                position.token
                            )
                        })
                })
            })
            .collect()
    }

    /// The generation a new copy takes: above every stored one.
    pub fn next_generation(stored: &BTreeMap<String, Self>) -> u64 {
        stored.values().map(|p| p.generation).max().unwrap_or(0) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_order_generations_then_chunks_with_done_last() {
        let first = TableProgress::started(1);
        let one = first.after_chunk(vec!["10".into()]);
        let two = one.after_chunk(vec!["20".into()]);
        let done = two.finished();
        let next = TableProgress::started(2);
        let ranks: Vec<Vec<u8>> = [&first, &one, &two, &done, &next]
            .iter()
            .map(|p| p.position().rank)
            .collect();
        let mut sorted = ranks.clone();
        sorted.sort();
        assert_eq!(ranks, sorted);
        assert_eq!(
            sorted
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            5
        );
    }

    #[test]
    fn stored_progress_reads_back_and_a_new_copy_outranks_it() {
        let mut checkpoints = Checkpoints::new();
        checkpoints.insert(String::new(), Position::from_counter("0/10", 16));
        let progress = TableProgress::started(3).after_chunk(vec!["a'b".into(), "7".into()]);
        checkpoints.insert(TableProgress::partition("public.t"), progress.position());
        let stored = TableProgress::stored(&checkpoints).unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored["public.t"], progress);
        assert_eq!(TableProgress::next_generation(&stored), 4);

        checkpoints.insert(
            TableProgress::partition("public.u"),
            Position::from_counter("0/20", 32),
        );
        let err = TableProgress::stored(&checkpoints).unwrap_err();
        assert!(err.contains("snapshot/public.u"), "{err}");
    }
}
