//! What `/status` and `/readyz` answer, and what `cdc-bridge status` prints.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::SnapshotTable;

/// One pipeline, as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineStatus {
    pub pipeline: String,
    /// starting, snapshotting, streaming, backing_off, stopped, finished or standby.
    pub state: String,
    pub since_unix_ms: i64,
    /// Why it is backing off or stopped; the message says what to fix.
    pub error: Option<String>,
    /// Stored positions by partition ("" for a source with one).
    pub stored: BTreeMap<String, String>,
    pub lag_seconds: f64,
    /// Where the source can tell (Postgres: WAL past the slot's confirmed position).
    pub lag_bytes: Option<i64>,
    pub seconds_since_last_event: Option<f64>,
    pub events_read: u64,
    pub events_delivered: u64,
    pub snapshot: Option<SnapshotStatus>,
    /// With a shared store: who runs the pipeline.
    #[serde(default)]
    pub lease: Option<LeaseStatus>,
}

/// The holder of a pipeline's lease, as this instance last read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseStatus {
    /// The instance running the pipeline; `None` while nobody holds the lease.
    pub holder: Option<String>,
    /// The fencing counter: raised on every takeover.
    pub epoch: u64,
    /// Whether this instance is the holder.
    pub held_here: bool,
    /// For a pipeline spread by partition over the instances (every instance runs a copy):
    /// the partitions whose leases this instance holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotStatus {
    pub tables_remaining: usize,
    pub tables: Vec<TableStatus>,
}

/// Snapshot progress of one table, with its rate and the time left at that rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableStatus {
    pub table: String,
    pub rows_copied: u64,
    pub rows_estimated: Option<u64>,
    pub rows_per_second: f64,
    pub eta_seconds: Option<f64>,
    pub finished: bool,
}

impl TableStatus {
    pub(super) fn of(table: &str, progress: &SnapshotTable) -> Self {
        let elapsed = progress.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
        let rate = if elapsed > 0.0 {
            progress.copied as f64 / elapsed
        } else {
            0.0
        };
        let eta_seconds = match (progress.finished, progress.estimated) {
            (true, _) => Some(0.0),
            (false, Some(estimated)) if rate > 0.0 => {
                Some(estimated.saturating_sub(progress.copied) as f64 / rate)
            }
            _ => None,
        };
        TableStatus {
            table: table.to_owned(),
            rows_copied: progress.copied,
            rows_estimated: progress.estimated,
            rows_per_second: rate,
            eta_seconds,
            finished: progress.finished,
        }
    }
}

/// Whether every pipeline is snapshotting or streaming (or has finished its work, as
/// `initial_only` does); else why not, pipeline by pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    NotReady(Vec<String>),
}

impl Readiness {
    pub fn of(pipelines: &[PipelineStatus]) -> Self {
        let reasons: Vec<String> = pipelines
            .iter()
            .filter(|p| {
                !matches!(
                    p.state.as_str(),
                    "snapshotting" | "streaming" | "finished" | "standby"
                )
            })
            .map(|p| match &p.error {
                Some(error) => format!("pipeline {}: {}: {error}", p.pipeline, p.state),
                None => format!("pipeline {}: {}", p.pipeline, p.state),
            })
            .collect();
        if reasons.is_empty() {
            Readiness::Ready
        } else {
            Readiness::NotReady(reasons)
        }
    }
}
