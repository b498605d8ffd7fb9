//! How far a table's copy got: stored as its own checkpoint partition, `snapshot/<table>`,
//! beside the stream's position, so that an interrupted copy resumes at its first unfinished
//! chunk instead of starting over.
//!
//! A database source copies a table in chunks ordered by its key (or, without a key, by
//! physical location). After every chunk's rows it emits a mark for the table's partition
//! with the last key copied; the pipeline stores it once those rows are acknowledged, like any
//! other mark. A table is `done` after its last chunk.
//!
//! A large table copied by several workers at once is split into ranges of its first key
//! column, each with its own partition (`snapshot/<table>#range<n>`) and bounds.
//!
//! Each request to copy a table (the first run's snapshot, a re-snapshot) is a new
//! *generation*: ranks order generation first, then chunks, with `done` last, so a new copy
//! of a table outranks every stored position of the previous one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoints, Position};
use crate::envelope::{now_ms, ChangeEvent, Op};

/// Partitions holding a table's copy progress start with this.
const PARTITION_PREFIX: &str = "snapshot/";
/// Separates a table's name from its range's number in a partition name.
const RANGE: &str = "#range";

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
    /// For one range of a split table: where the range starts (the first key column's
    /// value, included) and ends (excluded); `None` is the table's start or end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<String>,
    /// The position (source-specific text) of the snapshot this copy reads, when it is later
    /// than the stream's start: until the stream reaches it, the table's changes are in the
    /// copy already. `None`: the copy reads at the stream's start, or streams chunk by chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<String>,
}

impl TableProgress {
    /// A copy of generation `generation`, with nothing copied yet.
    pub fn started(generation: u64) -> Self {
        TableProgress {
            generation,
            chunks: 0,
            after: None,
            done: false,
            lower: None,
            upper: None,
            read_at: None,
        }
    }

    /// The same copy restricted to one range of the table's first key column.
    pub fn within(self, lower: Option<String>, upper: Option<String>) -> Self {
        TableProgress {
            lower,
            upper,
            ..self
        }
    }

    /// The progress once one more chunk, ending at `last_key`, is copied.
    pub fn after_chunk(&self, last_key: Vec<String>) -> Self {
        TableProgress {
            chunks: self.chunks + 1,
            after: Some(last_key),
            done: false,
            ..self.clone()
        }
    }

    /// The progress once the last chunk is copied.
    pub fn finished(&self) -> Self {
        TableProgress {
            done: true,
            ..self.clone()
        }
    }

    /// The checkpoint partition of `table` (its qualified name), or of its range `range`.
    pub fn partition(table: &str, range: Option<u32>) -> String {
        match range {
            None => format!("{PARTITION_PREFIX}{table}"),
            Some(range) => format!("{PARTITION_PREFIX}{table}{RANGE}{range}"),
        }
    }

    /// The table, and range, whose progress `partition` holds, if it holds one.
    pub fn table_of(partition: &str) -> Option<(&str, Option<u32>)> {
        let unit = partition.strip_prefix(PARTITION_PREFIX)?;
        Some(match unit.rsplit_once(RANGE) {
            Some((table, range)) => match range.parse() {
                Ok(range) => (table, Some(range)),
                Err(_) => (unit, None),
            },
            None => (unit, None),
        })
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

    /// The partitions of `table`'s ranges, stored in `checkpoints` or `queued` (range
    /// numbers): a new copy of the whole table replaces them, so they are forgotten rather
    /// than resumed after a restart.
    pub fn range_partitions(
        checkpoints: &Checkpoints,
        table: &str,
        queued: impl IntoIterator<Item = u32>,
    ) -> Vec<String> {
        let mut ranges: Vec<u32> = checkpoints
            .keys()
            .filter_map(|partition| Self::table_of(partition))
            .filter(|(t, _)| *t == table)
            .filter_map(|(_, range)| range)
            .chain(queued)
            .collect();
        ranges.sort_unstable();
        ranges.dedup();
        ranges
            .into_iter()
            .map(|range| Self::partition(table, Some(range)))
            .collect()
    }

    /// Every table's (or range's) stored progress, by table and range. A partition that does
    /// not parse is an error naming it: it was written by another version or by hand.
    pub fn stored(
        checkpoints: &Checkpoints,
    ) -> Result<BTreeMap<(String, Option<u32>), Self>, String> {
        checkpoints
            .iter()
            .filter_map(|(partition, position)| {
                Self::table_of(partition).map(|(table, range)| {
                    Self::parse(&position.token)
                        .map(|progress| ((table.to_owned(), range), progress))
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
    pub fn next_generation<K>(stored: &BTreeMap<K, Self>) -> u64 {
        stored.values().map(|p| p.generation).max().unwrap_or(0) + 1
    }
}

/// How many rows a copy made while streaming asks for per chunk: `snapshot_chunk_rows`, or
/// about as many as fit after a chunk was cut short by its size, growing back (doubling) while
/// chunks fit.
#[derive(Debug, Default, Clone, Copy)]
pub struct RowLimit(Option<u32>);

impl RowLimit {
    /// The rows the next chunk asks for.
    pub fn rows(self, chunk_rows: u32) -> u32 {
        self.0.unwrap_or(chunk_rows)
    }

    /// After a chunk that asked for `limit` rows and kept `kept`: `cut` short by its size, or
    /// the table's `last`.
    pub fn after(&mut self, (limit, chunk_rows): (u32, u32), kept: u64, cut: bool, last: bool) {
        self.0 = match (cut, last) {
            (true, _) => Some(u32::try_from(kept).unwrap_or(u32::MAX).max(1)),
            (false, false) if limit < chunk_rows => Some(limit.saturating_mul(2).min(chunk_rows)),
            _ => None,
        };
    }
}

/// A copy's rows handed to the pipeline together: one wait for its budget and one hand-over
/// per batch instead of per row. A batch holds at most 256 rows and an eighth of the buffer.
/// Its size is summed as rows are added, and its rows share one time stamp ([`CopyBatch::ts_ms`],
/// read when the batch starts): per row, both were a measurable part of a copy's CPU.
pub struct CopyBatch {
    events: Vec<ChangeEvent>,
    bytes: usize,
    max_bytes: usize,
    ts_ms: i64,
}

/// Copied rows ready to go to the pipeline, with their size for its byte budget.
pub struct CopiedRows {
    pub events: Vec<ChangeEvent>,
    pub bytes: usize,
}

impl CopyBatch {
    const ROWS: usize = 256;

    pub fn new(budget_bytes: u32) -> Self {
        CopyBatch {
            events: Vec::with_capacity(Self::ROWS),
            bytes: 0,
            max_bytes: budget_bytes as usize / 8,
            ts_ms: now_ms(),
        }
    }

    /// The time the rows of this batch are stamped with (`ts_ms`, when the bridge read them).
    pub fn ts_ms(&self) -> i64 {
        self.ts_ms
    }

    /// Adds `event`, a copied row (never a key change); returns whether the batch is full.
    pub fn add(&mut self, event: ChangeEvent) -> bool {
        debug_assert_eq!(event.op, Op::Snapshot, "a copy batch holds copied rows");
        self.bytes += event.approx_size().max(1);
        self.events.push(event);
        self.events.len() >= Self::ROWS || self.bytes >= self.max_bytes
    }

    /// The rows added so far; the next batch starts empty, with a new time stamp.
    pub fn take(&mut self) -> CopiedRows {
        self.ts_ms = now_ms();
        CopiedRows {
            events: std::mem::replace(&mut self.events, Vec::with_capacity(Self::ROWS)),
            bytes: std::mem::take(&mut self.bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_chunk_sets_the_next_limit_which_grows_back_while_chunks_fit() {
        let mut limit = RowLimit::default();
        assert_eq!(limit.rows(1000), 1000);
        limit.after((1000, 1000), 3, true, false);
        assert_eq!(limit.rows(1000), 3);
        limit.after((3, 1000), 3, false, false);
        assert_eq!(limit.rows(1000), 6);
        limit.after((600, 1000), 600, false, false);
        assert_eq!(limit.rows(1000), 1000);
        limit.after((3, 1000), 1, false, true);
        assert_eq!(
            limit.rows(1000),
            1000,
            "a new table starts at the full size"
        );
    }

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
        checkpoints.insert(
            TableProgress::partition("public.t", None),
            progress.position(),
        );
        let range = TableProgress::started(3).within(Some("100".into()), None);
        checkpoints.insert(
            TableProgress::partition("public.v#1", Some(2)),
            range.position(),
        );
        checkpoints.insert(
            TableProgress::partition("public.w#3", None),
            range.position(),
        );
        let stored = TableProgress::stored(&checkpoints).unwrap();
        assert_eq!(stored.len(), 3);
        assert_eq!(
            stored[&("public.w#3".to_owned(), None)],
            range,
            "a # in a table's name"
        );
        assert_eq!(stored[&("public.t".to_owned(), None)], progress);
        assert_eq!(stored[&("public.v#1".to_owned(), Some(2))], range);
        assert_eq!(TableProgress::next_generation(&stored), 4);

        checkpoints.insert(
            TableProgress::partition("public.u", None),
            Position::from_counter("0/20", 32),
        );
        let err = TableProgress::stored(&checkpoints).unwrap_err();
        assert!(err.contains("snapshot/public.u"), "{err}");
    }

    #[test]
    fn a_tables_range_partitions_come_from_the_store_and_the_queue_once_each() {
        let mut checkpoints = Checkpoints::new();
        for partition in [
            TableProgress::partition("app.t", Some(0)),
            TableProgress::partition("app.t", Some(2)),
            TableProgress::partition("app.t", None),
            TableProgress::partition("app.other", Some(1)),
        ] {
            checkpoints.insert(partition, TableProgress::started(1).position());
        }
        assert_eq!(
            TableProgress::range_partitions(&checkpoints, "app.t", [2, 1]),
            [
                "snapshot/app.t#range0",
                "snapshot/app.t#range1",
                "snapshot/app.t#range2"
            ]
        );
        assert!(TableProgress::range_partitions(&checkpoints, "app.u", []).is_empty());
    }
}
