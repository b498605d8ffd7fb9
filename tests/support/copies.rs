//! What the resumable-copy tests share: the kill loop (SIGKILL the bridge during a table's
//! first copy, several times, and read after each kill how far the stored copy got), and the
//! check that every key's versions reach the consumer in order.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use cdc_bridge::checkpoint::CheckpointStore;
use cdc_bridge::source::progress::TableProgress;

use super::{read_records, wait_until, Rng, Workspace};

/// How far a table's stored copy got, over its ranges.
#[derive(Debug, Clone)]
pub struct CopyProgress {
    pub generation: u64,
    pub ranges: usize,
    pub chunks: u64,
    pub done: bool,
    /// Where the copy read, when later than the stream's start (MariaDB workers).
    pub read_at: Option<String>,
}

impl CopyProgress {
    /// Chunks stored, or `done`.
    pub fn summary(&self) -> String {
        if self.done {
            "done".into()
        } else {
            self.chunks.to_string()
        }
    }
}

/// The stored copy progress of `table` for `pipeline` (the bridge must not be running).
pub fn stored_copy(ws: &Workspace, pipeline: &str, table: &str) -> Option<CopyProgress> {
    let store = CheckpointStore::open(&ws.path("state")).ok()?;
    let stored = TableProgress::stored(&store.load(pipeline).ok()?).unwrap();
    let ranges: Vec<&TableProgress> = stored
        .iter()
        .filter(|((t, _), _)| t == table)
        .map(|(_, p)| p)
        .collect();
    let first = ranges.first()?;
    assert!(ranges.iter().all(|p| p.generation == first.generation));
    Some(CopyProgress {
        generation: first.generation,
        ranges: ranges.len(),
        chunks: ranges.iter().map(|p| p.chunks).sum(),
        done: ranges.iter().all(|p| p.done),
        read_at: first.read_at.clone(),
    })
}

/// Runs the bridge on `config` up to `kills` times, each SIGKILLed: the first once `output`
/// holds `first_rows` records, the others 0.3 to 1 s after they start. After each kill the
/// stored copy of `table` must be of the same generation as before (a resumed copy goes on,
/// it does not start over) and no shorter. Stops early when the copy is done. Returns the
/// progress after each kill and where each run's output began.
pub async fn kill_during_copy(
    ws: &Workspace,
    config: &Path,
    (pipeline, table): (&str, &str),
    output: &Path,
    first_rows: usize,
    kills: usize,
) -> (Vec<CopyProgress>, Vec<usize>) {
    let mut rng = Rng::seeded();
    let mut progress: Vec<CopyProgress> = Vec::new();
    let mut runs = Vec::new();
    for kill in 0..kills {
        runs.push(read_records(output).len());
        let mut child = ws.spawn(&["run", "--config", config.to_str().unwrap()]);
        if kill == 0 {
            wait_until(Duration::from_secs(120), "the first copied rows", || {
                read_records(output).len() >= first_rows
            });
        } else {
            tokio::time::sleep(Duration::from_millis(300 + rng.below(700))).await;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "bridge exited early:\n{}",
            ws.log_tail()
        );
        child.kill().unwrap();
        child.wait().unwrap();
        let stored = stored_copy(ws, pipeline, table).expect("the copy's progress is stored");
        if let Some(previous) = progress.last() {
            assert_eq!(
                stored.generation, previous.generation,
                "a resumed copy goes on; it does not start over"
            );
            assert!(
                stored.chunks >= previous.chunks,
                "stored progress moved back"
            );
        }
        let done = stored.done;
        progress.push(stored);
        if done {
            break;
        }
    }
    assert!(
        progress[0].chunks > 0 && !progress[0].done,
        "the first kill must land during the copy: {:?}",
        progress[0]
    );
    runs.push(read_records(output).len());
    (progress, runs)
}

/// Per key (`key.id`): versions (`g`, from `before` for a delete) only move forward, and no
/// copied row follows its key's delete.
pub fn check_key_order<'a>(events: impl IntoIterator<Item = &'a serde_json::Value>) {
    let mut last: HashMap<i64, (&str, i64)> = HashMap::new();
    for event in events {
        let id = event["key"]["id"].as_i64().unwrap();
        let op = event["op"].as_str().unwrap();
        let g = match op {
            "delete" => event["before"]["g"].as_i64().unwrap(),
            _ => event["after"]["g"].as_i64().unwrap(),
        };
        if let Some(&(previous_op, previous_g)) = last.get(&id) {
            assert!(
                g >= previous_g,
                "key {id}: {op} of version {g} after {previous_op} of version {previous_g}"
            );
            assert!(
                !(op == "snapshot" && previous_op == "delete"),
                "key {id}: a copy after its delete"
            );
        }
        last.insert(id, (op, g));
    }
}
