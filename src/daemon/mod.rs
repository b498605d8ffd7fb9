//! The daemon: turns the configuration into pipeline plans and runs them side by side.
//!
//! [`plan`] types every connector section (so `check` and `run` reject the same mistakes
//! before anything connects). [`run`] starts one supervised task per pipeline; each fails or
//! restarts on its own, and none takes the others down. With the local store it returns when
//! every pipeline has finished, stopped for good, or been shut down; with a shared store
//! (`leases`) it runs the pipelines whose leases this instance holds, until shutdown.

mod connectors;
mod leases;
mod spread;
pub mod supervisor;

use std::sync::Arc;

pub use connectors::{OpenedStore, SinkSpec, SourceSpec, StoreSpec};

use crate::checkpoint::Store;
use crate::config::{Config, ConfigError, LeaseConfig, RestartConfig};
use crate::pipeline::{PipelineError, PipelineSettings};
use crate::shutdown::Shutdown;
use crate::telemetry::{PipelineProbe, Telemetry};

/// Everything needed to (re)start one pipeline.
#[derive(Debug)]
pub struct PipelinePlan {
    pub settings: PipelineSettings,
    pub restart: RestartConfig,
    pub source: SourceSpec,
    pub sink: SinkSpec,
}

impl PipelinePlan {
    /// Fresh connector instances for one run of this pipeline.
    pub async fn connect(&self) -> supervisor::Connected {
        let source = self.source.build().await.map_err(PipelineError::Source)?;
        let sink = self.sink.build().await.map_err(PipelineError::Sink)?;
        Ok((source, sink))
    }
}

/// Types and validates every pipeline of `config` (or only the one named `only`).
pub fn plan(config: &Config, only: Option<&str>) -> Result<Vec<PipelinePlan>, ConfigError> {
    StoreSpec::parse(&config.daemon)?;
    if let Some(name) = only {
        if config.pipeline(name).is_none() {
            let defined: Vec<_> = config.pipelines.iter().map(|p| p.name.as_str()).collect();
            return Err(ConfigError::invalid(
                "--pipeline",
                format!(
                    "no pipeline is named {name:?} (defined: {})",
                    defined.join(", ")
                ),
            ));
        }
    }
    config
        .pipelines
        .iter()
        .filter(|p| only.is_none_or(|name| p.name == name))
        .map(|p| {
            Ok(PipelinePlan {
                settings: PipelineSettings {
                    name: p.name.as_str().into(),
                    batch: p.batch.clone(),
                    buffer: p.buffer.clone(),
                },
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

/// Runs the plans until all have ended (local store), or until shutdown (shared store: each
/// pipeline runs on the instance holding its lease), each reporting to its probe.
pub async fn run(
    plans: Vec<PipelinePlan>,
    store: OpenedStore,
    leases: &LeaseConfig,
    shutdown: Shutdown,
    telemetry: &Telemetry,
) -> DaemonOutcome {
    let plans = plans.into_iter().map(Arc::new).collect();
    match store {
        OpenedStore::Local(store) => run_all(plans, store, shutdown, telemetry).await,
        OpenedStore::Shared(store) => {
            let settings = leases::LeaseSettings::of(leases);
            leases::run(plans, store, settings, shutdown, telemetry).await
        }
    }
}

/// Runs every plan in this process until all have ended.
async fn run_all(
    plans: Vec<Arc<PipelinePlan>>,
    store: Arc<dyn Store>,
    shutdown: Shutdown,
    telemetry: &Telemetry,
) -> DaemonOutcome {
    let mut tasks = tokio::task::JoinSet::new();
    for plan in plans {
        let probe = telemetry.probe(&plan.settings.name);
        let (store, shutdown) = (store.clone(), shutdown.clone());
        tasks.spawn(async move {
            let outcome = supervise_plan(plan.clone(), store, shutdown, probe).await;
            (plan.settings.name.clone(), outcome)
        });
    }
    let mut failed = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, Ok(()))) => {}
            Ok((name, Err(err))) => failed.push((name, err)),
            Err(join) => failed.push((
                "?".into(),
                PipelineError::Panic {
                    stage: "supervisor",
                    message: join.to_string(),
                },
            )),
        }
    }
    DaemonOutcome { failed }
}

/// Supervises one pipeline (restarts after transient failures) until it ends.
async fn supervise_plan(
    plan: Arc<PipelinePlan>,
    store: Arc<dyn Store>,
    shutdown: Shutdown,
    probe: Arc<PipelineProbe>,
) -> Result<(), PipelineError> {
    tracing::info!(pipeline = %plan.settings.name, source = plan.source.kind(), sink = plan.sink.kind(), "starting pipeline");
    let connect_plan = plan.clone();
    let connect: supervisor::Connect = Box::new(move || {
        let plan = connect_plan.clone();
        Box::pin(async move { plan.connect().await })
    });
    let (settings, restart) = (&plan.settings, &plan.restart);
    supervisor::supervise(settings, restart, connect, store, shutdown, probe).await
}
