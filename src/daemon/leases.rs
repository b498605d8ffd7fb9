//! Running pipelines under leases, on a shared store: the coordinator loop of one instance.
//!
//! Every round (a third of the lease duration, at most a second) the loop
//! 1. renews the leases it holds, when a third of the duration has passed since the last
//!    renewal; one it no longer holds (taken over) or could not renew for almost a whole
//!    duration (the store unreachable: another instance may take it from then on) is lost:
//!    its pipeline is told to stop;
//! 2. collects pipelines that ended: one that stopped because its commit was fenced lost its
//!    lease; one that finished or stopped for good keeps it (so that another instance does
//!    not run into the same fatal error: the operator has to act);
//! 3. reads the lease table, lets [`Balance`] choose what to take, takes it with a
//!    conditional write and starts the pipeline with a store fenced by the new epoch.
//!
//! A pipeline whose source spreads its partitions over instances (see [`super::spread`])
//! holds no pipeline lease: a copy runs here, reading the partitions whose leases it holds,
//! renewed and taken in the same rounds.
//!
//! Pipelines it does not hold are `standby` in the telemetry, naming the holder. On shutdown
//! it stops its pipelines (each stores its last checkpoint) and releases their leases, so the
//! others take over at once instead of after a lease duration.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::spread::Spread;
use super::{supervise_plan, DaemonOutcome, PipelinePlan};
use crate::checkpoint::{CheckpointError, Fence, FencedStore, Store};
use crate::config::LeaseConfig;
use crate::coordination::{pipeline_lease, Balance, Lease, SharedStore};
use crate::error::report;
use crate::pipeline::PipelineError;
use crate::shutdown::{Shutdown, ShutdownTrigger};
use crate::telemetry::{PipelineProbe, Telemetry};

/// How this instance holds leases.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub instance: String,
    pub duration: Duration,
}

impl LeaseSettings {
    pub fn of(config: &LeaseConfig) -> Self {
        LeaseSettings {
            instance: config
                .instance_id
                .clone()
                .unwrap_or_else(generated_instance_id),
            duration: Duration::from_millis(config.lease_duration_ms),
        }
    }

    fn renew_interval(&self) -> Duration {
        self.duration / 3
    }

    /// A lease not renewed for this long is given up without asking the store: from the
    /// duration on, another instance may take it.
    fn give_up_after(&self) -> Duration {
        self.duration - self.renew_interval()
    }

    /// A lease is renewed once this long has passed since its last renewal (a round before a
    /// third of the duration, so that none is renewed later than that).
    fn due_after(&self) -> Duration {
        self.renew_interval() - self.round()
    }

    /// How often the lease table is read: a released lease is taken (and an expired one
    /// noticed) within this long, without renewing more often than needed.
    fn round(&self) -> Duration {
        self.renew_interval().min(MAX_ROUND)
    }
}

/// The longest round of the lease loop, whatever the lease duration.
const MAX_ROUND: Duration = Duration::from_secs(1);

/// Host name, process id and start time: unique per process, readable in the lease table.
fn generated_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "cdc-bridge".into());
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{host}-{}-{started}", std::process::id())
}

/// What became of one lease at a renewal round.
pub(super) enum Renewal {
    NotDue,
    /// Renewed, as asked at this instant.
    Renewed(Instant),
    /// The store could not be asked; tried again next round.
    Retrying,
    /// Taken over, or not renewed in time: why.
    Lost(String),
}

/// Renews `fence` if it is due (last renewed at `renewed`).
pub(super) async fn renew_lease(
    store: &dyn SharedStore,
    settings: &LeaseSettings,
    fence: &Fence,
    renewed: Instant,
) -> Renewal {
    let since = renewed.elapsed();
    if since >= settings.give_up_after() {
        return Renewal::Lost(format!("not renewed for {} ms", since.as_millis()));
    }
    if since < settings.due_after() {
        return Renewal::NotDue;
    }
    // A renewal counts from when it was asked: the store applied it after that, so no other
    // instance can see the lease expire before `asked` + the duration.
    let asked = Instant::now();
    let renewal = store.renew(fence).await;
    let now = Instant::now();
    match renewal {
        Ok(true) => Renewal::Renewed(asked),
        Ok(false) => Renewal::Lost("another instance took it over".to_owned()),
        Err(err) if now.duration_since(renewed) >= settings.give_up_after() => {
            Renewal::Lost(format!(
                "not renewed for {} ms: {}",
                now.duration_since(renewed).as_millis(),
                report(&err)
            ))
        }
        Err(err) => {
            tracing::warn!(lease = %fence.lease, error = %report(&err), "cannot renew the lease; retrying");
            Renewal::Retrying
        }
    }
}

/// How a supervised copy of a pipeline ended; a panic counts as its failure.
pub(super) async fn outcome_of(
    task: JoinHandle<Result<(), PipelineError>>,
) -> Result<(), PipelineError> {
    task.await.unwrap_or_else(|join| {
        Err(PipelineError::Panic {
            stage: "supervisor",
            message: join.to_string(),
        })
    })
}

/// A pipeline this instance runs under its lease.
struct Running {
    plan: Arc<PipelinePlan>,
    fence: Fence,
    stop: ShutdownTrigger,
    task: JoinHandle<Result<(), PipelineError>>,
    renewed: Instant,
}

/// A copy told to stop after its lease (at `epoch`) was lost.
struct Stopping {
    key: String,
    task: JoinHandle<Result<(), PipelineError>>,
    epoch: u64,
}

/// A pipeline that ended here while its lease is still held (finished, or stopped for good).
struct Ended {
    fence: Fence,
    renewed: Instant,
}

/// A pipeline of the configuration: what runs it, and where it reports.
struct Shared {
    plan: Arc<PipelinePlan>,
    probe: Arc<PipelineProbe>,
}

struct Coordinator {
    store: Arc<dyn SharedStore>,
    settings: LeaseSettings,
    /// Every pipeline of the configuration, by lease key.
    pipelines: HashMap<String, Shared>,
    running: HashMap<String, Running>,
    ended: HashMap<String, Ended>,
    /// Copies told to stop after their lease was lost, not yet returned.
    stopping: Vec<Stopping>,
    failed: Vec<(Arc<str>, PipelineError)>,
    balance: Balance,
    /// Pipelines spread by partition: a copy of each runs here.
    spread: Vec<Spread>,
}

pub async fn run(
    plans: Vec<Arc<PipelinePlan>>,
    store: Arc<dyn SharedStore>,
    settings: LeaseSettings,
    mut shutdown: Shutdown,
    telemetry: &Telemetry,
) -> DaemonOutcome {
    tracing::info!(instance = %settings.instance, store = %store.describe(), lease_ms = settings.duration.as_millis() as u64, "sharing pipelines through leases");
    let (spread, whole): (Vec<_>, Vec<_>) = plans
        .into_iter()
        .partition(|plan| plan.source.spreads_partitions());
    let mut coordinator = Coordinator {
        balance: Balance::new(settings.instance.clone(), settings.duration),
        spread: spread
            .into_iter()
            .map(|plan| {
                let probe = telemetry.probe(&plan.settings.name);
                Spread::new(plan, probe, &settings)
            })
            .collect(),
        pipelines: whole
            .into_iter()
            .map(|plan| {
                let probe = telemetry.probe(&plan.settings.name);
                (pipeline_lease(&plan.settings.name), Shared { plan, probe })
            })
            .collect(),
        store,
        settings,
        running: HashMap::new(),
        ended: HashMap::new(),
        stopping: Vec::new(),
        failed: Vec::new(),
    };
    if let Err(err) = coordinator.create_leases(&mut shutdown).await {
        return coordinator.fail_all(err);
    }
    for spread in &mut coordinator.spread {
        tracing::info!(pipeline = %spread.name(), "spreading the pipeline's partitions over the instances");
        spread.start_copy(&coordinator.store);
    }
    let mut tick = tokio::time::interval(coordinator.settings.round());
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.requested() => break,
            _ = tick.tick() => {}
        }
        coordinator.renew().await;
        coordinator.collect_ended().await;
        coordinator.take().await;
    }
    coordinator.shut_down().await;
    DaemonOutcome {
        failed: coordinator.failed,
    }
}

impl Coordinator {
    /// One lease row per pipeline; retried while the store is unreachable.
    async fn create_leases(&self, shutdown: &mut Shutdown) -> Result<(), CheckpointError> {
        for key in self.pipelines.keys() {
            let mut backoff = Duration::from_millis(500);
            loop {
                match self.store.create(key).await {
                    Ok(()) => break,
                    Err(err @ CheckpointError::Unavailable { .. }) => {
                        tracing::warn!(error = %report(&err), "cannot create the lease rows yet; retrying");
                    }
                    Err(err) => return Err(err),
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.requested() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
        Ok(())
    }

    fn fail_all(self, err: CheckpointError) -> DaemonOutcome {
        let message = report(&err);
        tracing::error!(error = %message, "cannot use the coordination store");
        let failed = self
            .pipelines
            .values()
            .map(|Shared { plan, .. }| plan)
            .chain(self.spread.iter().map(|s| s.plan()))
            .map(|plan| {
                let err = CheckpointError::Refused {
                    store: self.store.describe(),
                    action: "creating the lease rows",
                    fix: message.clone(),
                    source: message.clone().into(),
                };
                (plan.settings.name.clone(), PipelineError::Checkpoint(err))
            })
            .collect();
        DaemonOutcome { failed }
    }

    /// Renews the held leases that are due; stops the pipelines whose lease is lost (see
    /// [`renew_lease`]), and restarts spread copies without their lost partitions.
    async fn renew(&mut self) {
        let mut lost = Vec::new();
        let fences: Vec<(String, Fence, Instant)> = self
            .running
            .iter()
            .map(|(k, r)| (k.clone(), r.fence.clone(), r.renewed))
            .chain(
                self.ended
                    .iter()
                    .map(|(k, e)| (k.clone(), e.fence.clone(), e.renewed)),
            )
            .collect();
        for (key, fence, renewed) in fences {
            match renew_lease(&*self.store, &self.settings, &fence, renewed).await {
                Renewal::NotDue | Renewal::Retrying => {}
                Renewal::Renewed(asked) => self.renewed(&key, asked),
                Renewal::Lost(why) => lost.push((key, why)),
            }
        }
        for (key, why) in lost {
            self.lose(&key, &why);
        }
        for spread in &mut self.spread {
            spread.renew(&*self.store, &self.settings).await;
        }
    }

    fn renewed(&mut self, key: &str, now: Instant) {
        if let Some(running) = self.running.get_mut(key) {
            running.renewed = now;
        }
        if let Some(ended) = self.ended.get_mut(key) {
            ended.renewed = now;
        }
    }

    /// Stops this instance's copy of the pipeline of a lost lease.
    fn lose(&mut self, key: &str, why: &str) {
        self.ended.remove(key);
        if let Some(running) = self.running.remove(key) {
            tracing::warn!(pipeline = %running.plan.settings.name, epoch = running.fence.epoch, reason = why, "lost the pipeline's lease; stopping this instance's copy");
            running.stop.trigger();
            self.stopping.push(Stopping {
                key: key.to_owned(),
                task: running.task,
                epoch: running.fence.epoch,
            });
        }
        if let Some(shared) = self.pipelines.get(key) {
            shared.probe.lease_lost();
        }
    }

    /// Takes the outcome of pipelines that ended on their own.
    async fn collect_ended(&mut self) {
        for spread in &mut self.spread {
            spread.collect(&self.store, &mut self.failed).await;
        }
        let finished: Vec<String> = self
            .running
            .iter()
            .filter(|(_, r)| r.task.is_finished())
            .map(|(k, _)| k.clone())
            .collect();
        for key in finished {
            let running = self.running.remove(&key).expect("listed");
            let outcome = outcome_of(running.task).await;
            match outcome {
                Err(err) if err.is_fenced() => {
                    if let Some(shared) = self.pipelines.get(&key) {
                        shared.probe.lease_lost();
                    }
                    tracing::warn!(pipeline = %running.plan.settings.name, epoch = running.fence.epoch, "a commit was fenced: another instance took the lease over; this copy stopped and stored nothing more");
                }
                outcome => {
                    if let Err(err) = outcome {
                        self.failed.push((running.plan.settings.name.clone(), err));
                    }
                    let ended = Ended {
                        fence: running.fence,
                        renewed: running.renewed,
                    };
                    self.ended.insert(key, ended);
                }
            }
        }
        // A stopped copy ended with `finished` (or an error) in its probe; it is standby
        // here until the lease table says who holds it now.
        let pipelines = &self.pipelines;
        self.stopping.retain(|stopping| {
            let done = stopping.task.is_finished();
            if done {
                if let Some(shared) = pipelines.get(&stopping.key) {
                    shared.probe.standby(None, stopping.epoch);
                }
            }
            !done
        });
    }

    /// Reads the lease table, takes what the balance says, starts those pipelines.
    async fn take(&mut self) {
        let rows = match self.store.leases().await {
            Ok(rows) => rows,
            Err(err) => {
                tracing::warn!(error = %report(&err), "cannot read the lease table; retrying");
                return;
            }
        };
        for spread in &mut self.spread {
            spread.take(&*self.store, &rows, &self.settings).await;
        }
        let rows: Vec<Lease> = rows
            .into_iter()
            .filter(|row| self.pipelines.contains_key(&row.key))
            .collect();
        let held: HashSet<String> = self
            .running
            .keys()
            .chain(self.ended.keys())
            .chain(self.stopping.iter().map(|s| &s.key))
            .cloned()
            .collect();
        let decision = self.balance.decide(&rows, &held, Instant::now());
        for row in &decision.take {
            let asked = Instant::now();
            match self.store.take(row, &self.settings.instance).await {
                Ok(Some(fence)) => self.start(fence, asked),
                Ok(None) => {
                    tracing::debug!(lease = %row.key, "another instance changed the lease first")
                }
                Err(err) => {
                    tracing::warn!(lease = %row.key, error = %report(&err), "cannot take the lease")
                }
            }
        }
        for row in &rows {
            if !self.running.contains_key(&row.key) && !self.ended.contains_key(&row.key) {
                if let Some(shared) = self.pipelines.get(&row.key) {
                    shared.probe.standby(row.owner.as_deref(), row.epoch);
                }
            }
        }
    }

    /// Starts the pipeline of a lease taken (as renewed) at `taken`.
    fn start(&mut self, fence: Fence, taken: Instant) {
        let key = fence.lease.clone();
        let plan = self.pipelines[&key].plan.clone();
        let probe = self.pipelines[&key].probe.clone();
        tracing::info!(pipeline = %plan.settings.name, epoch = fence.epoch, instance = %fence.owner, "took the pipeline's lease");
        probe.lease_acquired(&fence.owner, fence.epoch);
        let store: Arc<dyn Store> = self.store.clone();
        let fenced: Arc<dyn Store> = Arc::new(FencedStore::new(store, fence.clone()));
        let stop = ShutdownTrigger::new();
        let task = tokio::spawn(supervise_plan(
            plan.clone(),
            fenced,
            stop.subscribe(),
            probe,
        ));
        self.running.insert(
            key,
            Running {
                plan,
                fence,
                stop,
                task,
                renewed: taken,
            },
        );
    }

    /// Stops every pipeline (each stores its last checkpoint), then releases the leases.
    /// The leases are renewed while the pipelines drain: a drain longer than the lease must
    /// not let another instance take a pipeline over under it.
    async fn shut_down(&mut self) {
        let mut draining = Vec::new();
        for (key, running) in self.running.drain() {
            running.stop.trigger();
            let ended = Ended {
                fence: running.fence,
                renewed: running.renewed,
            };
            self.ended.insert(key, ended);
            draining.push((running.plan.settings.name.clone(), running.task));
        }
        for spread in &mut self.spread {
            if let Some(task) = spread.stop() {
                draining.push((spread.name().clone(), task));
            }
        }
        let stopping: Vec<_> = self.stopping.drain(..).map(|s| s.task).collect();
        let drained = async move {
            for (pipeline, task) in draining {
                if let Ok(Err(err)) = task.await {
                    if !err.is_fenced() {
                        tracing::warn!(%pipeline, error = %report(&err), "pipeline failed while shutting down");
                    }
                }
            }
            for task in stopping {
                let _ = task.await;
            }
        };
        tokio::pin!(drained);
        let mut tick = tokio::time::interval(self.settings.round());
        tick.tick().await;
        loop {
            tokio::select! {
                biased;
                _ = &mut drained => break,
                _ = tick.tick() => self.renew().await,
            }
        }
        for spread in &mut self.spread {
            spread.release(&*self.store).await;
        }
        for (_, ended) in self.ended.drain() {
            let fence = ended.fence;
            match self.store.release(&fence).await {
                Ok(()) => tracing::info!(lease = %fence.lease, "released the lease"),
                Err(err) => {
                    tracing::warn!(lease = %fence.lease, error = %report(&err), "cannot release the lease; another instance takes it over when it expires")
                }
            }
        }
    }
}
