//! Leases: how several instances sharing one store decide who runs which pipeline.
//!
//! Every pipeline is a lease row in the shared store: an owner, an `epoch` (the fencing
//! counter, raised on every takeover) and a `heartbeat` (raised on every renewal). Every
//! change is a conditional write on the row as it was read, so two instances never both win.
//!
//! Expiry needs no synchronized clocks (the Kinesis Client Library's method): an instance
//! remembers when it first saw each row in its current state, and counts the row as expired
//! once it has stayed unchanged for a whole lease duration on its own clock. A holder renews
//! at a third of the duration, so only a dead, paused or cut-off holder lets its row expire.
//!
//! [`Balance`] turns one reading of the table into the leases to take: unowned and expired
//! ones first, up to an even share; then, at most one per round, one stolen from the busiest
//! instance if it holds two more than this one. The holder of a stolen lease finds out at its
//! next renewal, and its commits are refused from the moment of the takeover (the
//! [`Fence`](crate::checkpoint::Fence) in every commit), so nothing it delivers afterwards is
//! stored as progress.

mod balance;
mod partitions;

use std::fmt;

use async_trait::async_trait;

use crate::checkpoint::{CheckpointError, Fence, Store};

pub use balance::{Balance, Decision};
pub use partitions::{
    partition_lease, partition_lease_prefix, Offer, PartitionFencedStore, PartitionLeases,
};

/// One lease row as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: String,
    /// The instance holding it; `None` once released (free to take at once).
    pub owner: Option<String>,
    pub epoch: u64,
    pub heartbeat: u64,
}

impl Lease {
    /// The fence its owner commits with.
    pub fn fence(&self) -> Option<Fence> {
        self.owner.as_ref().map(|owner| Fence {
            lease: self.key.clone(),
            owner: owner.clone(),
            epoch: self.epoch,
        })
    }
}

/// The lease key of a pipeline.
pub fn pipeline_lease(pipeline: &str) -> String {
    format!("pipeline/{pipeline}")
}

/// The lease operations of a shared store. Each is one conditional write (or a read).
#[async_trait]
pub trait LeaseTable: Send + Sync + fmt::Debug {
    /// Every lease row.
    async fn leases(&self) -> Result<Vec<Lease>, CheckpointError>;

    /// Creates the row `key`, unowned at epoch 0, unless it exists.
    async fn create(&self, key: &str) -> Result<(), CheckpointError>;

    /// Raises the heartbeat if `fence` still holds the lease; `false` when it does not.
    async fn renew(&self, fence: &Fence) -> Result<bool, CheckpointError>;

    /// Takes the lease for `owner` if its row is still exactly `seen`, raising the epoch;
    /// `None` when another instance changed it first.
    async fn take(&self, seen: &Lease, owner: &str) -> Result<Option<Fence>, CheckpointError>;

    /// Gives the lease up (no owner, same epoch) if `fence` still holds it, so that another
    /// instance takes it over without waiting for it to expire.
    async fn release(&self, fence: &Fence) -> Result<(), CheckpointError>;

    /// Deletes the row if `fence` still holds it (a partition done for good); `false` when
    /// it does not.
    async fn delete(&self, fence: &Fence) -> Result<bool, CheckpointError>;
}

/// A store that keeps checkpoints and leases side by side (so commits can be fenced).
pub trait SharedStore: Store + LeaseTable {}

impl<T: Store + LeaseTable> SharedStore for T {}
