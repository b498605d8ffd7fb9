//! Checkpoints: how far each pipeline has been delivered, and the stores that keep them.
//!
//! A pipeline commits a position only after its sink acknowledged every event up to it; the
//! commit is durable when [`Store::apply`] returns. Positions are keyed by pipeline and
//! partition (`""` for single-stream sources; e.g. a DynamoDB shard id otherwise). Stored
//! progress never moves backward: every position carries a `rank` (bytes compared
//! lexicographically, defined by its source) and a commit with a lower rank than the stored one
//! is refused as a bug, not applied.
//!
//! [`CheckpointStore`] is the local store (a redb file, one process). Shared stores (a table in
//! Postgres or DynamoDB, see `crate::stores`) let several instances take turns running a
//! pipeline: each commit there carries a [`Fence`], the lease epoch its writer holds, and is
//! refused ([`CheckpointError::Fenced`]) once another instance took the lease over.
//!
//! Errors: a store that cannot be reached is transient (the pipeline backs off and resumes);
//! a locked, corrupt or misconfigured store, a regression and a lost lease are fatal.

mod local;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Disposition;

pub use local::{CheckpointStore, STORE_FILE};

/// A source position that a source can resume after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The position in the source's notation, parsed back by the source on resume.
    pub token: String,
    /// Orders positions of one partition: a later position has a greater rank.
    pub rank: Vec<u8>,
}

impl Position {
    /// A position whose order is a single counter (an LSN, a sequence number).
    pub fn from_counter(token: impl Into<String>, counter: u64) -> Self {
        Position {
            token: token.into(),
            rank: counter.to_be_bytes().to_vec(),
        }
    }
}

/// Stored positions of one pipeline, by partition.
pub type Checkpoints = BTreeMap<String, Position>;

/// A stored checkpoint, as listed by `cdc-bridge checkpoints`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub pipeline: String,
    pub partition: String,
    pub position: Position,
}

/// Proof of holding a lease: a commit made with it is stored only while `owner` still holds
/// `lease` at `epoch` (the fencing counter, raised on every takeover).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub lease: String,
    pub owner: String,
    pub epoch: u64,
}

/// An error of a store's own client (network, server, permissions), with its disposition.
pub type StoreCause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot create state directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint store {} is in use by another cdc-bridge process (one process per state_dir)", path.display())]
    Locked { path: PathBuf },
    #[error("checkpoint store {}", path.display())]
    Storage {
        path: PathBuf,
        #[source]
        source: redb::Error,
    },
    #[error("checkpoint store {store}: stored position of pipeline {pipeline:?} partition {partition:?} is not readable")]
    Corrupt {
        store: String,
        pipeline: String,
        partition: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("refusing to move the checkpoint of pipeline {pipeline:?} partition {partition:?} backward from {stored} to {proposed}")]
    Regression {
        pipeline: String,
        partition: String,
        stored: String,
        proposed: String,
    },
    /// The store could not be reached or answered with a passing failure: retry.
    #[error("checkpoint store {store} is unavailable while {action}")]
    Unavailable {
        store: String,
        action: &'static str,
        #[source]
        source: StoreCause,
    },
    /// The store refused for a reason that retrying does not fix (permissions, a table of
    /// another shape); the message says what to change.
    #[error("checkpoint store {store}: {action} failed: {fix}")]
    Refused {
        store: String,
        action: &'static str,
        fix: String,
        #[source]
        source: StoreCause,
    },
    /// Another instance took the lease over: this copy of the pipeline must stop.
    #[error("lease {lease:?} was taken over by another instance (this instance held epoch {epoch}); nothing more is stored by this copy")]
    Fenced { lease: String, epoch: u64 },
}

impl CheckpointError {
    pub fn disposition(&self) -> Disposition {
        match self {
            CheckpointError::Unavailable { .. } => Disposition::Transient,
            _ => Disposition::Fatal,
        }
    }
}

/// Where checkpoints are kept. Calls are async: a shared store is a network round trip, the
/// local one runs on the blocking pool.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Names the store in messages (a path, a table).
    fn describe(&self) -> String;

    /// The stored positions of `pipeline` (empty when it has none).
    async fn load(&self, pipeline: &str) -> Result<Checkpoints, CheckpointError>;

    /// Every stored position, ordered by pipeline and partition.
    async fn list(&self) -> Result<Vec<StoredCheckpoint>, CheckpointError>;

    /// Stores `updates` for `pipeline` and deletes the positions of `removed` partitions
    /// (partitions the source will never read again), durably. Refuses with
    /// [`CheckpointError::Regression`] a position ranking below the stored one, and with
    /// [`CheckpointError::Fenced`] a commit whose `fence` is no longer the lease's current one.
    async fn apply(
        &self,
        pipeline: &str,
        updates: &Checkpoints,
        removed: &[String],
        fence: Option<&Fence>,
    ) -> Result<(), CheckpointError>;

    /// Removes every stored position of `pipeline`; returns how many there were.
    async fn reset(&self, pipeline: &str) -> Result<usize, CheckpointError>;

    /// The lease every commit through this handle is fenced by, if any.
    fn fence(&self) -> Option<&Fence> {
        None
    }

    /// For a copy of a pipeline spread by partition: the partitions it may read.
    fn partition_leases(&self) -> Option<Arc<crate::coordination::PartitionLeases>> {
        None
    }

    /// Fails with [`CheckpointError::Fenced`] unless `fence` still holds its lease (a store
    /// without leases has nothing to check).
    async fn check_fence(&self, _fence: &Fence) -> Result<(), CheckpointError> {
        Ok(())
    }
}

/// A store seen through one lease: every commit carries `fence`. The daemon hands one to each
/// pipeline it runs under a lease, so the pipeline itself knows nothing of leases.
#[derive(Debug)]
pub struct FencedStore {
    inner: Arc<dyn Store>,
    fence: Fence,
}

impl FencedStore {
    pub fn new(inner: Arc<dyn Store>, fence: Fence) -> Self {
        FencedStore { inner, fence }
    }
}

#[async_trait]
impl Store for FencedStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    /// Loading starts a run: a copy whose lease was taken over must not start again (its
    /// source would end the new holder's session), so the fence is checked first.
    async fn load(&self, pipeline: &str) -> Result<Checkpoints, CheckpointError> {
        self.inner.check_fence(&self.fence).await?;
        self.inner.load(pipeline).await
    }

    async fn list(&self) -> Result<Vec<StoredCheckpoint>, CheckpointError> {
        self.inner.list().await
    }

    async fn apply(
        &self,
        pipeline: &str,
        updates: &Checkpoints,
        removed: &[String],
        _fence: Option<&Fence>,
    ) -> Result<(), CheckpointError> {
        let fence = Some(&self.fence);
        self.inner.apply(pipeline, updates, removed, fence).await
    }

    async fn reset(&self, pipeline: &str) -> Result<usize, CheckpointError> {
        self.inner.reset(pipeline).await
    }

    fn fence(&self) -> Option<&Fence> {
        Some(&self.fence)
    }

    async fn check_fence(&self, fence: &Fence) -> Result<(), CheckpointError> {
        self.inner.check_fence(fence).await
    }
}
