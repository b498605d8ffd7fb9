//! The record-size policy shared by the stream sinks: what happens to an event whose record
//! is larger than the destination accepts.
//!
//! `fail` (the default) stops the pipeline with a data error naming the table and position;
//! `dead_letter` appends the event, with the reason, to a local JSON-lines file (created
//! owner-only, fsynced before the batch is acknowledged), counts it, logs it, and goes on.
//! Nothing is dropped silently. The key is logged at `debug` only: row values stay out of
//! the `info` log and of error messages.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::envelope::ChangeEvent;
use crate::error::{ConnectorError, Disposition};
use crate::format::JsonFormat;
use crate::telemetry::PipelineProbe;

/// The `oversize` setting of a sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OversizePolicy {
    #[default]
    Fail,
    DeadLetter,
}

#[derive(Debug, thiserror::Error)]
pub enum OversizeError {
    #[error("record of {bytes} bytes for table {table} at position {position} exceeds the limit of {limit} bytes (oversize = \"fail\"; set oversize = \"dead_letter\" to set such records aside)")]
    TooLarge {
        table: String,
        position: String,
        bytes: usize,
        limit: usize,
    },
    #[error("cannot write dead-letter file {}", path.display())]
    DeadLetter {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ConnectorError for OversizeError {
    fn disposition(&self) -> Disposition {
        match self {
            OversizeError::TooLarge { .. } => Disposition::Data,
            OversizeError::DeadLetter { .. } => Disposition::Transient,
        }
    }
}

/// Applies the policy to records, one batch at a time.
pub struct RecordLimit {
    max_bytes: usize,
    policy: OversizePolicy,
    dead_letter: Option<(PathBuf, File)>,
    /// Events set aside since start.
    pub dead_lettered: u64,
    pending_sync: bool,
    probe: Option<Arc<PipelineProbe>>,
}

impl RecordLimit {
    /// `dead_letter_path` is required (and opened) for the `dead_letter` policy.
    pub fn new(
        max_bytes: usize,
        policy: OversizePolicy,
        dead_letter_path: Option<&Path>,
    ) -> Result<Self, OversizeError> {
        let dead_letter = match (policy, dead_letter_path) {
            (OversizePolicy::DeadLetter, Some(path)) => {
                let open = || -> std::io::Result<File> {
                    crate::private_fs::create_parent_dirs(path)?;
                    crate::private_fs::open_options()
                        .create(true)
                        .append(true)
                        .open(path)
                };
                Some((
                    path.to_owned(),
                    open().map_err(|source| OversizeError::DeadLetter {
                        path: path.to_owned(),
                        source,
                    })?,
                ))
            }
            _ => None,
        };
        Ok(RecordLimit {
            max_bytes,
            policy,
            dead_letter,
            dead_lettered: 0,
            pending_sync: false,
            probe: None,
        })
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Whether a record of `bytes` for `event` may be sent. An oversized one fails the batch
    /// (`fail`) or is written to the dead-letter file (`dead_letter`) and must be skipped.
    pub fn admit(
        &mut self,
        event: &ChangeEvent,
        bytes: usize,
        destination: &str,
    ) -> Result<bool, OversizeError> {
        if bytes <= self.max_bytes {
            return Ok(true);
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            let mut key = Vec::new();
            JsonFormat::write_key(event, &mut key);
            tracing::debug!(table = %event.qualified_table(), position = %event.source.position, key = %String::from_utf8_lossy(&key), "oversized record");
        }
        match (&mut self.dead_letter, self.policy) {
            (Some((path, file)), OversizePolicy::DeadLetter) => {
                let mut line = format!(
                    "{{\"reason\":\"record of {bytes} bytes exceeds the limit of {} bytes\",\"destination\":{},\"event\":",
                    self.max_bytes,
                    serde_json::to_string(destination).expect("a string serializes")
                )
                .into_bytes();
                JsonFormat::write_value(event, &mut line);
                line.extend_from_slice(b"}\n");
                file.write_all(&line)
                    .map_err(|source| OversizeError::DeadLetter {
                        path: path.clone(),
                        source,
                    })?;
                self.pending_sync = true;
                self.dead_lettered += 1;
                if let Some(probe) = &self.probe {
                    probe.oversize_event("dead_letter");
                }
                tracing::warn!(table = %event.qualified_table(), position = %event.source.position, bytes, limit = self.max_bytes, dead_letter = %path.display(), total = self.dead_lettered, "oversized record written to the dead-letter file");
                Ok(false)
            }
            _ => Err(OversizeError::TooLarge {
                table: event.qualified_table(),
                position: event.source.position.to_string(),
                bytes,
                limit: self.max_bytes,
            }),
        }
    }

    /// Counts the records set aside into `probe` from now on.
    pub fn observe(&mut self, probe: Arc<PipelineProbe>) {
        self.probe = Some(probe);
    }

    /// Makes the dead-letter writes of this batch durable; call before acknowledging it.
    pub fn sync(&mut self) -> Result<(), OversizeError> {
        if let (true, Some((path, file))) = (self.pending_sync, &mut self.dead_letter) {
            file.sync_data()
                .map_err(|source| OversizeError::DeadLetter {
                    path: path.clone(),
                    source,
                })?;
            self.pending_sync = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::generator::GeneratorSource;

    fn event() -> ChangeEvent {
        GeneratorSource::sample_event(5, 7)
    }

    #[test]
    fn fail_names_table_and_position_not_the_key() {
        let mut limit = RecordLimit::new(10, OversizePolicy::Fail, None).unwrap();
        assert!(limit.admit(&event(), 10, "t").unwrap());
        let err = limit.admit(&event(), 11, "t").unwrap_err();
        assert_eq!(err.disposition(), Disposition::Data);
        assert!(
            err.to_string().contains("table db.items at position 7"),
            "{err}"
        );
        assert!(!err.to_string().contains("\"id\""), "{err}");
    }

    #[test]
    fn dead_letter_keeps_the_event_and_counts_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dl/dead.jsonl");
        let mut limit = RecordLimit::new(10, OversizePolicy::DeadLetter, Some(&path)).unwrap();
        assert!(!limit.admit(&event(), 500, "topic-a").unwrap());
        limit.sync().unwrap();
        assert_eq!(limit.dead_lettered, 1);
        let line: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&path).unwrap().trim()).unwrap();
        assert_eq!(line["destination"], "topic-a");
        assert_eq!(line["event"]["source"]["position"], "7");
        assert!(line["reason"].as_str().unwrap().contains("500 bytes"));
    }
}
