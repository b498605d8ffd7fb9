//! `cdc-bridge checkpoints`: list the stored positions, reset a pipeline's, or export them to
//! a JSON file and import them into another store (moving a pipeline to another machine or
//! state_dir).
//!
//! Import checks every position before it writes any: a pipeline the configuration does not
//! define, or a position behind the one already stored (stored progress never moves
//! backward), refuses the whole file. Each pipeline's positions are then written in one
//! transaction.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use serde::{Deserialize, Serialize};

use super::{config_failure, failure, EXIT_CONFIG, EXIT_RUNTIME};
use crate::checkpoint::{Checkpoints, Position, Store, StoredCheckpoint};
use crate::config::Config;
use crate::daemon::StoreSpec;
use crate::error::report;

#[derive(Debug, Subcommand)]
pub enum CheckpointsAction {
    /// Forget a pipeline's stored positions: its next run starts from the beginning.
    Reset {
        #[arg(long, value_name = "NAME")]
        pipeline: String,
    },
    /// Write the stored positions (of every pipeline, or one) as JSON to standard output.
    Export {
        #[arg(long, value_name = "NAME")]
        pipeline: Option<String>,
    },
    /// Store the positions of an exported file (`-` for standard input); the daemon must not
    /// be running on this state_dir.
    Import {
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
}

/// The export file: a version, then one entry per stored position.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Export {
    cdc_bridge_checkpoints: u32,
    checkpoints: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    pipeline: String,
    partition: String,
    position: Position,
}

const EXPORT_VERSION: u32 = 1;

/// One line per stored position.
pub fn print_stored(stored: &[StoredCheckpoint]) {
    println!("{:<24} {:<24} POSITION", "PIPELINE", "PARTITION");
    for c in stored {
        let partition = if c.partition.is_empty() {
            "-"
        } else {
            &c.partition
        };
        println!("{:<24} {:<24} {}", c.pipeline, partition, c.position.token);
    }
}

pub async fn checkpoints(path: Option<&Path>, action: Option<CheckpointsAction>) -> ExitCode {
    let Some(path) = path else {
        return failure(EXIT_CONFIG, "--config FILE is required");
    };
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(err) => return config_failure(path, &err),
    };
    let store = match StoreSpec::parse(&config.daemon) {
        Ok(spec) => spec,
        Err(err) => return config_failure(path, &err),
    };
    let store = match store.open().await {
        Ok(store) => store.checkpoints(),
        Err(err) => return failure(EXIT_RUNTIME, &report(&err)),
    };
    let unknown = |pipeline: &str| {
        config
            .pipeline(pipeline)
            .is_none()
            .then(|| format!("no pipeline is named {pipeline:?} in {}", path.display()))
    };
    match action {
        None => match store.list().await {
            Ok(stored) => {
                print_stored(&stored);
                ExitCode::SUCCESS
            }
            Err(err) => failure(EXIT_RUNTIME, &report(&err)),
        },
        Some(CheckpointsAction::Reset { pipeline }) => {
            if let Some(message) = unknown(&pipeline) {
                return failure(EXIT_CONFIG, &format!("--pipeline: {message}"));
            }
            match store.reset(&pipeline).await {
                Ok(n) => {
                    println!("removed {n} checkpoint(s) of pipeline {pipeline}; its next run starts from the beginning");
                    ExitCode::SUCCESS
                }
                Err(err) => failure(EXIT_RUNTIME, &report(&err)),
            }
        }
        Some(CheckpointsAction::Export { pipeline }) => {
            if let Some(message) = pipeline.as_deref().and_then(unknown) {
                return failure(EXIT_CONFIG, &format!("--pipeline: {message}"));
            }
            let stored = match store.list().await {
                Ok(stored) => stored,
                Err(err) => return failure(EXIT_RUNTIME, &report(&err)),
            };
            let export = Export {
                cdc_bridge_checkpoints: EXPORT_VERSION,
                checkpoints: stored
                    .into_iter()
                    .filter(|c| pipeline.as_ref().is_none_or(|p| *p == c.pipeline))
                    .map(|c| Entry {
                        pipeline: c.pipeline,
                        partition: c.partition,
                        position: c.position,
                    })
                    .collect(),
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&export).expect("positions serialize")
            );
            ExitCode::SUCCESS
        }
        Some(CheckpointsAction::Import { file }) => match import(&*store, &file, &unknown).await {
            Ok(imported) => {
                println!("imported {imported} checkpoint(s) from {}", file.display());
                ExitCode::SUCCESS
            }
            Err(message) => failure(EXIT_RUNTIME, &message),
        },
    }
}

/// Stores every position of `file`, or none; how many it stored.
async fn import(
    store: &dyn Store,
    file: &Path,
    unknown: &dyn Fn(&str) -> Option<String>,
) -> Result<usize, String> {
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    }
    .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let export: Export = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{} is not a checkpoint export (from `cdc-bridge checkpoints export`): {e}",
            file.display()
        )
    })?;
    if export.cdc_bridge_checkpoints != EXPORT_VERSION {
        return Err(format!(
            "{}: export version {} is not supported (this cdc-bridge reads version {EXPORT_VERSION})",
            file.display(),
            export.cdc_bridge_checkpoints
        ));
    }
    let mut by_pipeline: BTreeMap<String, Checkpoints> = BTreeMap::new();
    for entry in export.checkpoints {
        if let Some(message) = unknown(&entry.pipeline) {
            return Err(format!("{}: {message}", file.display()));
        }
        by_pipeline
            .entry(entry.pipeline)
            .or_default()
            .insert(entry.partition, entry.position);
    }
    // Every position is checked before any is written.
    for (pipeline, positions) in &by_pipeline {
        let stored = store.load(pipeline).await.map_err(|e| report(&e))?;
        for (partition, position) in positions {
            if let Some(current) = stored.get(partition).filter(|s| s.rank > position.rank) {
                return Err(format!(
                    "{}: the position of pipeline {pipeline:?} partition {partition:?} ({}) is behind the one stored ({}); nothing was imported (to go back on purpose, run `checkpoints reset --pipeline {pipeline}` first)",
                    file.display(),
                    position.token,
                    current.token
                ));
            }
        }
    }
    let mut imported = 0;
    for (pipeline, positions) in &by_pipeline {
        store
            .apply(pipeline, positions, &[], None)
            .await
            .map_err(|e| report(&e))?;
        imported += positions.len();
    }
    Ok(imported)
}
