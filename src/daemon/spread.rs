//! Pipelines spread by partition (a DynamoDB stream's shards): every instance runs a copy of
//! the pipeline, and the copy reads the partitions whose lease this instance holds.
//!
//! Every round of the coordinator, for each such pipeline:
//! 1. the partition leases held are renewed like pipeline leases; a lost one is revoked from
//!    the copy, which stops reading it and stores nothing more for it (whatever it read from
//!    that partition and did not store is read again by the new holder). Should this instance
//!    take the partition again, the copy is restarted first: its positions of that partition
//!    still in flight must never be stored under the new lease;
//! 2. a copy that ended is collected: restarted after a lost lease (or a fenced commit),
//!    recorded as failed after a fatal error (its leases are kept, as for a pipeline lease, so
//!    the failure does not travel);
//! 3. the rows of partitions the source offers are created if missing, rows of partitions it
//!    says are done are deleted by their holder, and [`Balance`] picks what to take among the
//!    readable ones; each partition taken is granted to the copy.
//!
//! On shutdown the copy stops while its leases are still renewed, then they are released.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::leases::{outcome_of, renew_lease, LeaseSettings, Renewal};
use super::{supervise_plan, PipelinePlan};
use crate::checkpoint::{CheckpointError, Fence, Store};
use crate::coordination::{
    partition_lease_prefix, Balance, Lease, Offer, PartitionFencedStore, PartitionLeases,
    SharedStore,
};
use crate::error::report;
use crate::pipeline::PipelineError;
use crate::shutdown::ShutdownTrigger;
use crate::telemetry::PipelineProbe;

/// A partition lease this instance holds.
struct Held {
    fence: Fence,
    renewed: Instant,
}

/// The copy running here.
struct Copy {
    leases: Arc<PartitionLeases>,
    stop: ShutdownTrigger,
    task: JoinHandle<Result<(), PipelineError>>,
}

pub(super) struct Spread {
    plan: Arc<PipelinePlan>,
    probe: Arc<PipelineProbe>,
    prefix: String,
    balance: Balance,
    /// Expiry of rows of done partitions whose holder did not delete them (it died first).
    cleanup: Balance,
    /// What the source last offered: a restarted copy starts from it until its own first
    /// offer, so that rows seen unchanged keep counting toward their expiry meanwhile.
    offer: Offer,
    /// Partition leases held, by partition.
    held: BTreeMap<String, Held>,
    copy: Option<Copy>,
    /// Partitions revoked from the running copy: it may not be granted them again.
    revoked: BTreeSet<String>,
    /// The copy is being restarted.
    restarting: bool,
    /// The copy stopped for good (a fatal error): no new one is started.
    stopped: bool,
}

impl Spread {
    pub fn new(
        plan: Arc<PipelinePlan>,
        probe: Arc<PipelineProbe>,
        settings: &LeaseSettings,
    ) -> Self {
        Spread {
            prefix: partition_lease_prefix(&plan.settings.name),
            balance: Balance::new(settings.instance.clone(), settings.duration),
            cleanup: Balance::new(settings.instance.clone(), settings.duration),
            offer: Offer::default(),
            plan,
            probe,
            held: BTreeMap::new(),
            copy: None,
            revoked: BTreeSet::new(),
            restarting: false,
            stopped: false,
        }
    }

    pub fn name(&self) -> &Arc<str> {
        &self.plan.settings.name
    }

    pub fn plan(&self) -> &Arc<PipelinePlan> {
        &self.plan
    }

    /// Starts a copy that may read the partitions held now.
    pub fn start_copy(&mut self, store: &Arc<dyn SharedStore>) {
        let inner: Arc<dyn Store> = store.clone();
        let leases = Arc::new(PartitionLeases::new(
            self.plan.settings.name.to_string(),
            inner.clone(),
        ));
        for (partition, held) in &self.held {
            leases.grant(partition, held.fence.clone());
        }
        leases.offer(self.offer.clone());
        let fenced: Arc<dyn Store> = Arc::new(PartitionFencedStore::new(inner, leases.clone()));
        let stop = ShutdownTrigger::new();
        let task = tokio::spawn(supervise_plan(
            self.plan.clone(),
            fenced,
            stop.subscribe(),
            self.probe.clone(),
        ));
        self.copy = Some(Copy { leases, stop, task });
        self.revoked.clear();
        self.restarting = false;
    }

    /// Renews the partition leases that are due; a lost one is revoked from the copy.
    pub async fn renew(&mut self, store: &dyn SharedStore, settings: &LeaseSettings) {
        let mut lost = Vec::new();
        for (partition, held) in &mut self.held {
            match renew_lease(store, settings, &held.fence, held.renewed).await {
                Renewal::NotDue | Renewal::Retrying => {}
                Renewal::Renewed(at) => held.renewed = at,
                Renewal::Lost(why) => lost.push((partition.clone(), why)),
            }
        }
        for (partition, why) in lost {
            tracing::warn!(pipeline = %self.name(), %partition, reason = %why, "lost a partition's lease; this instance's copy stops reading it");
            self.held.remove(&partition);
            if let Some(copy) = &self.copy {
                copy.leases.revoke(&partition);
            }
            self.revoked.insert(partition);
            self.probe.partition_lease_lost();
        }
        self.report(&settings.instance);
    }

    /// Collects a copy that ended; starts the next one unless it stopped for good.
    pub async fn collect(
        &mut self,
        store: &Arc<dyn SharedStore>,
        failed: &mut Vec<(Arc<str>, PipelineError)>,
    ) {
        let ended = self.copy.as_ref().is_some_and(|c| c.task.is_finished());
        if ended {
            let copy = self.copy.take().expect("ended");
            let outcome = outcome_of(copy.task).await;
            match outcome {
                Err(err) if err.is_fenced() => {
                    tracing::warn!(pipeline = %self.name(), "a partition's commit was fenced: another instance took it over; restarting this instance's copy");
                    self.forget_lost(&**store).await;
                }
                _ if self.restarting => {}
                Err(err) => {
                    failed.push((self.name().clone(), err));
                    self.stopped = true;
                }
                Ok(()) => self.stopped = true,
            }
        }
        if self.copy.is_none() && !self.stopped {
            self.start_copy(store);
        }
    }

    /// Drops the partitions whose lease another instance holds now (found out by a fenced
    /// commit before the next renewal), so the next copy is not granted them.
    async fn forget_lost(&mut self, store: &dyn SharedStore) {
        let mut lost = Vec::new();
        for (partition, held) in &self.held {
            if let Err(CheckpointError::Fenced { .. }) = store.check_fence(&held.fence).await {
                lost.push(partition.clone());
            }
        }
        for partition in lost {
            self.held.remove(&partition);
            self.probe.partition_lease_lost();
        }
    }

    /// Reads this pipeline's rows out of `rows` (the whole table, read once this round):
    /// creates the offered ones, deletes the done ones, takes per the balance.
    pub async fn take(
        &mut self,
        store: &dyn SharedStore,
        rows: &[Lease],
        settings: &LeaseSettings,
    ) {
        let Some(copy) = self.copy.as_ref().filter(|_| !self.restarting) else {
            return;
        };
        let leases = copy.leases.clone();
        self.offer = leases.offered();
        let mine: Vec<Lease> = rows
            .iter()
            .filter(|r| r.key.starts_with(&self.prefix))
            .cloned()
            .collect();
        self.create_offered(store, &mine).await;
        self.delete_done(store, &mine, &leases, settings).await;
        self.take_share(store, &mine, &leases, settings).await;
        if self.restarting {
            if let Some(copy) = &self.copy {
                copy.stop.trigger();
            }
        }
        self.report(&settings.instance);
    }

    fn key(&self, partition: &str) -> String {
        format!("{}{partition}", self.prefix)
    }

    fn partition_of<'k>(&self, key: &'k str) -> &'k str {
        &key[self.prefix.len()..]
    }

    /// Creates the rows of offered partitions that have none.
    async fn create_offered(&self, store: &dyn SharedStore, mine: &[Lease]) {
        let listed: HashSet<&str> = mine.iter().map(|r| self.partition_of(&r.key)).collect();
        for partition in &self.offer.readable {
            if listed.contains(partition.as_str()) {
                continue;
            }
            let key = self.key(partition);
            if let Err(err) = store.create(&key).await {
                tracing::warn!(lease = %key, error = %report(&err), "cannot create a partition's lease");
            }
        }
    }

    /// Deletes the rows of done partitions: those held here, and free or expired ones left
    /// by a holder that died before deleting them (taken, then deleted).
    async fn delete_done(
        &mut self,
        store: &dyn SharedStore,
        mine: &[Lease],
        leases: &PartitionLeases,
        settings: &LeaseSettings,
    ) {
        let done = self.offer.done.clone();
        for partition in &done {
            self.delete_held(store, partition).await;
            leases.revoke(partition);
        }
        let left: Vec<Lease> = mine
            .iter()
            .filter(|r| done.contains(self.partition_of(&r.key)))
            .cloned()
            .collect();
        let decision = self.cleanup.decide(&left, &HashSet::new(), Instant::now());
        for row in decision.take {
            if let Ok(Some(fence)) = store.take(&row, &settings.instance).await {
                if let Err(err) = store.delete(&fence).await {
                    tracing::warn!(lease = %row.key, error = %report(&err), "cannot delete a finished partition's lease");
                }
            }
        }
    }

    /// Takes what the balance says among the readable partitions and grants them to the
    /// copy; one the copy read under an earlier lease restarts it instead.
    async fn take_share(
        &mut self,
        store: &dyn SharedStore,
        mine: &[Lease],
        leases: &PartitionLeases,
        settings: &LeaseSettings,
    ) {
        let readable: Vec<Lease> = mine
            .iter()
            .filter(|r| self.offer.readable.contains(self.partition_of(&r.key)))
            .cloned()
            .collect();
        // Only readable partitions count toward the share: one held but waiting for its
        // parent must not keep this instance from taking that parent.
        let held: HashSet<String> = self
            .held
            .keys()
            .filter(|p| self.offer.readable.contains(*p))
            .map(|p| self.key(p))
            .collect();
        let decision = self.balance.decide(&readable, &held, Instant::now());
        for row in &decision.take {
            let asked = Instant::now();
            let fence = match store.take(row, &settings.instance).await {
                Ok(Some(fence)) => fence,
                Ok(None) => continue,
                Err(err) => {
                    tracing::warn!(lease = %row.key, error = %report(&err), "cannot take a partition's lease");
                    continue;
                }
            };
            let partition = self.partition_of(&row.key).to_owned();
            tracing::info!(pipeline = %self.name(), %partition, epoch = fence.epoch, "took a partition's lease");
            self.probe.partition_lease_acquired();
            if self.revoked.contains(&partition) {
                tracing::info!(pipeline = %self.name(), %partition, "restarting this instance's copy: it read the partition under an earlier lease");
                self.restarting = true;
            } else {
                leases.grant(&partition, fence.clone());
            }
            let held = Held {
                fence,
                renewed: asked,
            };
            self.held.insert(partition, held);
        }
    }

    fn report(&self, instance: &str) {
        let partitions = self.held.keys().cloned().collect();
        self.probe.partitions_held(instance, partitions);
    }

    /// Stops the copy (it stores its last checkpoints), to be drained by the caller.
    pub fn stop(&mut self) -> Option<JoinHandle<Result<(), PipelineError>>> {
        let copy = self.copy.take()?;
        copy.stop.trigger();
        self.stopped = true;
        Some(copy.task)
    }

    /// Deletes the lease row of a partition done for good that this instance holds.
    async fn delete_held(&mut self, store: &dyn SharedStore, partition: &str) {
        let Some(held) = self.held.get(partition) else {
            return;
        };
        match store.delete(&held.fence).await {
            Ok(_) => {
                tracing::info!(pipeline = %self.name(), %partition, "partition read to its end; deleted its lease");
                self.held.remove(partition);
            }
            Err(err) => {
                tracing::warn!(%partition, error = %report(&err), "cannot delete a finished partition's lease")
            }
        }
    }

    /// Releases every partition lease held (after the copy drained); those of partitions
    /// done for good are deleted instead.
    pub async fn release(&mut self, store: &dyn SharedStore) {
        for partition in self.offer.done.clone() {
            self.delete_held(store, &partition).await;
        }
        for (partition, held) in std::mem::take(&mut self.held) {
            match store.release(&held.fence).await {
                Ok(()) => {
                    tracing::info!(pipeline = %self.name(), %partition, "released a partition's lease")
                }
                Err(err) => {
                    tracing::warn!(%partition, error = %report(&err), "cannot release a partition's lease; another instance takes it over when it expires")
                }
            }
        }
    }
}
