//! Partition leases: a pipeline whose source reads independent partitions (the shards of a
//! DynamoDB stream) runs on every instance at once, and each copy reads only the partitions
//! whose lease its instance holds.
//!
//! Flow: the source [offers](PartitionLeases::offer) the partitions it could read now (for
//! DynamoDB: unfinished shards whose parent is finished, as the shared checkpoints say) and
//! names those whose last position is stored (done). The instance's coordinator creates a lease
//! row per offered partition (`partition/<pipeline>/<partition>`), takes an even share of them
//! with the same [`Balance`](super::Balance) as pipeline leases, renews them, and
//! [grants](PartitionLeases::grant) each one it holds to the copy; the copy opens a granted
//! partition after its stored position. Rows of done partitions are deleted by their holder.
//!
//! Fencing: the copy's commits go through [`PartitionFencedStore`], which stores each
//! partition's position conditional on that partition's own lease. A partition whose lease was
//! lost is not stored by this copy any more (the new holder resumes from what is stored), and
//! the coordinator restarts the copy, so nothing it had in flight for that partition is ever
//! committed under a later grant.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::watch;

use crate::checkpoint::{CheckpointError, Checkpoints, Fence, Store, StoredCheckpoint};

/// The lease key of one partition of a pipeline.
pub fn partition_lease(pipeline: &str, partition: &str) -> String {
    format!("{}{partition}", partition_lease_prefix(pipeline))
}

/// The prefix of every partition lease of a pipeline.
pub fn partition_lease_prefix(pipeline: &str) -> String {
    format!("partition/{pipeline}/")
}

/// What the source says it could read, and what it has finished for good.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offer {
    /// Partitions that may be read now.
    pub readable: BTreeSet<String>,
    /// Partitions whose last position is stored: never to be read again.
    pub done: BTreeSet<String>,
}

/// The partitions of one pipeline between its copy (the source) and the coordinator.
#[derive(Debug)]
pub struct PartitionLeases {
    pipeline: String,
    store: Arc<dyn Store>,
    offer: Mutex<Offer>,
    granted: watch::Sender<BTreeMap<String, Fence>>,
}

impl PartitionLeases {
    pub fn new(pipeline: impl Into<String>, store: Arc<dyn Store>) -> Self {
        PartitionLeases {
            pipeline: pipeline.into(),
            store,
            offer: Mutex::new(Offer::default()),
            granted: watch::Sender::new(BTreeMap::new()),
        }
    }

    // ---- the source's side ----

    /// Replaces what the source could read now and what it knows is done.
    pub fn offer(&self, offer: Offer) {
        *self.offer.lock().expect("not poisoned") = offer;
    }

    /// The partitions granted to this copy, with a notification on every change.
    pub fn granted(&self) -> watch::Receiver<BTreeMap<String, Fence>> {
        self.granted.subscribe()
    }

    /// Every stored position of the pipeline, read now (the other instances' progress too).
    pub async fn stored(&self) -> Result<Checkpoints, CheckpointError> {
        self.store.load(&self.pipeline).await
    }

    // ---- the coordinator's side ----

    pub fn offered(&self) -> Offer {
        self.offer.lock().expect("not poisoned").clone()
    }

    pub fn grant(&self, partition: &str, fence: Fence) {
        self.granted.send_modify(|granted| {
            granted.insert(partition.to_owned(), fence);
        });
    }

    pub fn revoke(&self, partition: &str) {
        self.granted
            .send_if_modified(|granted| granted.remove(partition).is_some());
    }

    fn fence_of(&self, partition: &str) -> Option<Fence> {
        self.granted.borrow().get(partition).cloned()
    }
}

/// A store seen by one copy of a pipeline spread by partition: each partition's position is
/// stored conditional on its own lease; positions of partitions not granted (any more) are
/// not stored.
#[derive(Debug)]
pub struct PartitionFencedStore {
    inner: Arc<dyn Store>,
    leases: Arc<PartitionLeases>,
}

impl PartitionFencedStore {
    pub fn new(inner: Arc<dyn Store>, leases: Arc<PartitionLeases>) -> Self {
        PartitionFencedStore { inner, leases }
    }
}

#[async_trait]
impl Store for PartitionFencedStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn load(&self, pipeline: &str) -> Result<Checkpoints, CheckpointError> {
        self.inner.load(pipeline).await
    }

    async fn list(&self) -> Result<Vec<StoredCheckpoint>, CheckpointError> {
        self.inner.list().await
    }

    /// One fenced commit per partition. A partition's commits only ever come from its holder,
    /// so commits of different partitions need not be one transaction. Forgotten partitions
    /// (finished and gone from the source) are deleted without a fence: no lease covers them.
    async fn apply(
        &self,
        pipeline: &str,
        updates: &Checkpoints,
        removed: &[String],
        _fence: Option<&Fence>,
    ) -> Result<(), CheckpointError> {
        for (partition, position) in updates {
            let Some(fence) = self.leases.fence_of(partition) else {
                tracing::debug!(
                    pipeline,
                    partition,
                    "not storing the position of a partition whose lease is lost"
                );
                continue;
            };
            let update = Checkpoints::from([(partition.clone(), position.clone())]);
            self.inner
                .apply(pipeline, &update, &[], Some(&fence))
                .await?;
        }
        if !removed.is_empty() {
            let none = Checkpoints::new();
            self.inner.apply(pipeline, &none, removed, None).await?;
        }
        Ok(())
    }

    async fn reset(&self, pipeline: &str) -> Result<usize, CheckpointError> {
        self.inner.reset(pipeline).await
    }

    fn partition_leases(&self) -> Option<Arc<PartitionLeases>> {
        Some(self.leases.clone())
    }

    async fn check_fence(&self, fence: &Fence) -> Result<(), CheckpointError> {
        self.inner.check_fence(fence).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{CheckpointStore, Position};

    fn fence(partition: &str, epoch: u64) -> Fence {
        Fence {
            lease: partition_lease("p", partition),
            owner: "me".into(),
            epoch,
        }
    }

    /// The local store ignores fences, so what reaches it shows what the wrapper lets through.
    #[tokio::test]
    async fn positions_of_partitions_not_granted_are_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let local: Arc<dyn Store> = Arc::new(CheckpointStore::open(dir.path()).unwrap());
        let leases = Arc::new(PartitionLeases::new("p", local.clone()));
        let store = PartitionFencedStore::new(local.clone(), leases.clone());
        leases.grant("a", fence("a", 1));
        leases.grant("b", fence("b", 1));
        let mut granted = leases.granted();
        leases.revoke("b");
        assert!(granted.has_changed().unwrap());
        assert_eq!(
            granted.borrow_and_update().keys().collect::<Vec<_>>(),
            ["a"]
        );
        let updates = Checkpoints::from([
            ("a".to_owned(), Position::from_counter("1", 1)),
            ("b".to_owned(), Position::from_counter("1", 1)),
        ]);
        store.apply("p", &updates, &[], None).await.unwrap();
        let stored = leases.stored().await.unwrap();
        assert_eq!(stored.keys().collect::<Vec<_>>(), ["a"]);
        store
            .apply("p", &Checkpoints::new(), &["a".to_owned()], None)
            .await
            .unwrap();
        assert!(leases.stored().await.unwrap().is_empty());
        leases.revoke("b"); // not granted: no notification
        assert!(!granted.has_changed().unwrap());
    }
}
