//! The daemon: turns the configuration into pipeline plans and runs them side by side.
//!
//! [`plan`] types every connector section (so `check` and `run` reject the same mistakes
//! before anything connects). [`run`] starts one supervised task per pipeline; each fails or
//! restarts on its own, and none takes the others down. It returns when every pipeline has
//! finished, stopped for good, or been shut down.

mod connectors;
mod supervisor;

use std::sync::Arc;

pub use connectors::{SinkSpec, SourceSpec};

use crate::checkpoint::CheckpointStore;
use crate::config::{Config, ConfigError, RestartConfig};
use crate::pipeline::{PipelineError, PipelineSettings};
use crate::shutdown::Shutdown;

/// Everything needed to (re)start one pipeline.
#[derive(Debug)]
pub struct PipelinePlan {
    pub settings: PipelineSettings,
    pub restart: RestartConfig,
    pub source: SourceSpec,
    pub sink: SinkSpec,
}

/// Types and validates every pipeline of `config` (or only the one named `only`).
pub fn plan(config: &Config, only: Option<&str>) -> Result<Vec<PipelinePlan>, ConfigError> {
    if let Some(name) = only {
        if config.pipeline(name).is_none() {
            let defined: Vec<_> = config.pipelines.iter().map(|p| p.name.as_str()).collect();
            return Err(ConfigError::invalid(
                "--pipeline",
                format!("no pipeline is named {name:?} (defined: {})", defined.join(", ")),
            ));
        }
    }
    config
        .pipelines
        .iter()
        .filter(|p| only.is_none_or(|name| p.name == name))
        .map(|p| {
            Ok(PipelinePlan {
                settings: PipelineSettings { name: p.name.as_str().into(), batch: p.batch.clone(), buffer: p.buffer.clone() },
                restart: p.restart.clone(),
                source: SourceSpec::parse(&p.source)?,
                sink: SinkSpec::parse(&p.sink)?,
            })
        })
        .collect()
}

/// How each pipeline ended.
#[derive(Debug)]
pub struct DaemonOutcome {
    pub failed: Vec<(Arc<str>, PipelineError)>,
}

/// Runs every plan until all have ended.
pub async fn run(plans: Vec<PipelinePlan>, store: Arc<CheckpointStore>, shutdown: Shutdown) -> DaemonOutcome {
    let mut tasks = tokio::task::JoinSet::new();
    for plan in plans {
        let plan = Arc::new(plan);
        tracing::info!(pipeline = %plan.settings.name, source = plan.source.kind(), sink = plan.sink.kind(), "starting pipeline");
        let (store, shutdown) = (store.clone(), shutdown.clone());
        tasks.spawn(async move {
            let name = plan.settings.name.clone();
            (name, supervisor::supervise(plan, store, shutdown).await)
        });
    }
    let mut failed = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, Ok(()))) => {}
            Ok((name, Err(err))) => failed.push((name, err)),
            Err(join) => failed.push((
                "?".into(),
                PipelineError::Panic { stage: "supervisor", message: join.to_string() },
            )),
        }
    }
    DaemonOutcome { failed }
}
