//! The local checkpoint store: positions in a redb file in the daemon's `state_dir`, fsynced
//! on every commit. One process holds the file at a time (redb's lock), which is all the
//! fencing a single instance needs; shared stores with leases are for several instances.
//!
//! Errors: a store locked by another process, an unreadable or corrupt file, or a regression
//! are all [`CheckpointError`]s; the daemon treats them as fatal.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{CheckpointError, Checkpoints, Fence, Position, Store, StoredCheckpoint};

/// (pipeline, partition) -> JSON-encoded [`Position`].
const CHECKPOINTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("checkpoints");

/// The file name of the store inside the daemon's `state_dir`.
pub const STORE_FILE: &str = "checkpoints.redb";

/// The redb-backed checkpoint store. One per process and `state_dir`; shared by pipelines.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    db: Arc<Database>,
    path: PathBuf,
}

/// Creates an empty store at `path` so that a kill at any moment leaves either no store or a
/// whole one: redb sizes a new file before it writes its header, and a file cut in between
/// cannot be opened again. The store is made owner-only under a temporary name, then renamed.
fn create_store(path: &Path) -> Result<(), redb::Error> {
    let fresh = path.with_extension("redb.new");
    crate::private_fs::open_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&fresh)?;
    drop(Database::create(&fresh)?);
    std::fs::rename(&fresh, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl CheckpointStore {
    /// Opens (or creates) the store in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, CheckpointError> {
        crate::private_fs::create_dir_all(state_dir).map_err(|source| {
            CheckpointError::CreateDir {
                path: state_dir.to_owned(),
                source,
            }
        })?;
        let path = state_dir.join(STORE_FILE);
        if !path.exists() {
            create_store(&path).map_err(|source| CheckpointError::Storage {
                path: path.clone(),
                source,
            })?;
        }
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                CheckpointError::Locked { path: path.clone() }
            }
            other => CheckpointError::Storage {
                path: path.clone(),
                source: other.into(),
            },
        })?;
        Ok(CheckpointStore {
            db: Arc::new(db),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored positions of `pipeline` (empty when it has none).
    pub fn load(&self, pipeline: &str) -> Result<Checkpoints, CheckpointError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|c| c.pipeline == pipeline)
            .map(|c| (c.partition, c.position))
            .collect())
    }

    /// Every stored position, ordered by pipeline and partition.
    pub fn list(&self) -> Result<Vec<StoredCheckpoint>, CheckpointError> {
        let txn = self.db.begin_read().map_err(|e| self.storage(e))?;
        let table = match txn.open_table(CHECKPOINTS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.storage(e)),
        };
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.storage(e))? {
            let (key, value) = entry.map_err(|e| self.storage(e))?;
            let (pipeline, partition) = key.value();
            let position = self.decode(pipeline, partition, value.value())?;
            out.push(StoredCheckpoint {
                pipeline: pipeline.to_owned(),
                partition: partition.to_owned(),
                position,
            });
        }
        Ok(out)
    }

    /// Stores `updates` for `pipeline` in one durable transaction. Refuses (changing nothing)
    /// if any position ranks below the one stored for its partition.
    pub fn commit(&self, pipeline: &str, updates: &Checkpoints) -> Result<(), CheckpointError> {
        self.apply(pipeline, updates, &[])
    }

    /// Like [`CheckpointStore::commit`], and deletes the positions of `removed` partitions
    /// (partitions the source will never read again) in the same transaction.
    pub fn apply(
        &self,
        pipeline: &str,
        updates: &Checkpoints,
        removed: &[String],
    ) -> Result<(), CheckpointError> {
        let txn = self.db.begin_write().map_err(|e| self.storage(e))?;
        {
            let mut table = txn.open_table(CHECKPOINTS).map_err(|e| self.storage(e))?;
            for partition in removed {
                table
                    .remove((pipeline, partition.as_str()))
                    .map_err(|e| self.storage(e))?;
            }
            for (partition, position) in updates {
                let stored = match table
                    .get((pipeline, partition.as_str()))
                    .map_err(|e| self.storage(e))?
                {
                    Some(bytes) => Some(self.decode(pipeline, partition, bytes.value())?),
                    None => None,
                };
                if let Some(stored) = stored.filter(|s| s.rank > position.rank) {
                    return Err(CheckpointError::Regression {
                        pipeline: pipeline.to_owned(),
                        partition: partition.clone(),
                        stored: stored.token,
                        proposed: position.token.clone(),
                    });
                }
                let bytes = serde_json::to_vec(position).expect("a position always serializes");
                table
                    .insert((pipeline, partition.as_str()), bytes.as_slice())
                    .map_err(|e| self.storage(e))?;
            }
        }
        txn.commit().map_err(|e| self.storage(e))
    }

    /// Removes every stored position of `pipeline`; returns how many there were.
    pub fn reset(&self, pipeline: &str) -> Result<usize, CheckpointError> {
        let partitions: Vec<String> = self.load(pipeline)?.into_keys().collect();
        let txn = self.db.begin_write().map_err(|e| self.storage(e))?;
        {
            let mut table = txn.open_table(CHECKPOINTS).map_err(|e| self.storage(e))?;
            for partition in &partitions {
                table
                    .remove((pipeline, partition.as_str()))
                    .map_err(|e| self.storage(e))?;
            }
        }
        txn.commit().map_err(|e| self.storage(e))?;
        Ok(partitions.len())
    }

    fn decode(
        &self,
        pipeline: &str,
        partition: &str,
        bytes: &[u8],
    ) -> Result<Position, CheckpointError> {
        serde_json::from_slice(bytes).map_err(|source| CheckpointError::Corrupt {
            store: self.path.display().to_string(),
            pipeline: pipeline.to_owned(),
            partition: partition.to_owned(),
            source,
        })
    }

    fn storage(&self, err: impl Into<redb::Error>) -> CheckpointError {
        CheckpointError::Storage {
            path: self.path.clone(),
            source: err.into(),
        }
    }
}

/// The async face of the local store: each call runs on the blocking pool (a commit fsyncs).
/// A fence is not checked: the file's lock already makes this process the only writer.
#[async_trait]
impl Store for CheckpointStore {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    async fn load(&self, pipeline: &str) -> Result<Checkpoints, CheckpointError> {
        let (store, pipeline) = (self.clone(), pipeline.to_owned());
        blocking(move || CheckpointStore::load(&store, &pipeline)).await
    }

    async fn list(&self) -> Result<Vec<StoredCheckpoint>, CheckpointError> {
        let store = self.clone();
        blocking(move || CheckpointStore::list(&store)).await
    }

    async fn apply(
        &self,
        pipeline: &str,
        updates: &Checkpoints,
        removed: &[String],
        _fence: Option<&Fence>,
    ) -> Result<(), CheckpointError> {
        let (store, pipeline) = (self.clone(), pipeline.to_owned());
        let (updates, removed) = (updates.clone(), removed.to_vec());
        blocking(move || CheckpointStore::apply(&store, &pipeline, &updates, &removed)).await
    }

    async fn reset(&self, pipeline: &str) -> Result<usize, CheckpointError> {
        let (store, pipeline) = (self.clone(), pipeline.to_owned());
        blocking(move || CheckpointStore::reset(&store, &pipeline)).await
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, CheckpointError> + Send + 'static,
) -> Result<T, CheckpointError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store is created under a temporary name and renamed whole; a leftover of a creation
    /// that was killed (here: garbage) is replaced, not opened.
    #[test]
    fn a_killed_creation_leaves_no_store_that_cannot_be_opened() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("checkpoints.redb.new"), [0u8; 4096]).unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        assert!(store.load("p").unwrap().is_empty());
        assert!(!dir.path().join("checkpoints.redb.new").exists());
        drop(store);
        CheckpointStore::open(dir.path()).unwrap();
    }

    fn single(counter: u64) -> Checkpoints {
        Checkpoints::from([(
            String::new(),
            Position::from_counter(counter.to_string(), counter),
        )])
    }

    #[test]
    fn commits_survive_reopening_and_are_per_pipeline() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = CheckpointStore::open(dir.path()).unwrap();
            store.commit("a", &single(7)).unwrap();
            store.commit("b", &single(3)).unwrap();
        }
        let store = CheckpointStore::open(dir.path()).unwrap();
        assert_eq!(store.load("a").unwrap(), single(7));
        assert_eq!(store.load("b").unwrap(), single(3));
        assert!(store.load("c").unwrap().is_empty());
        assert_eq!(store.list().unwrap().len(), 2);
    }

    #[test]
    fn stored_progress_never_moves_backward() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        store.commit("a", &single(10)).unwrap();
        store.commit("a", &single(10)).unwrap();
        let err = store.commit("a", &single(9)).unwrap_err();
        assert!(matches!(err, CheckpointError::Regression { .. }), "{err}");
        assert_eq!(store.load("a").unwrap(), single(10));
    }

    #[test]
    fn partitions_are_kept_apart_and_reset_removes_them_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        let shards = Checkpoints::from([
            ("shard-1".to_owned(), Position::from_counter("5", 5)),
            ("shard-2".to_owned(), Position::from_counter("2", 2)),
        ]);
        store.commit("ddb", &shards).unwrap();
        store.commit("other", &single(1)).unwrap();
        assert_eq!(store.load("ddb").unwrap(), shards);
        assert_eq!(store.reset("ddb").unwrap(), 2);
        assert!(store.load("ddb").unwrap().is_empty());
        assert_eq!(store.load("other").unwrap(), single(1));
    }

    #[test]
    fn removed_partitions_are_deleted_with_the_updates() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        let shards = Checkpoints::from([
            ("shard-1".to_owned(), Position::from_counter("5", 5)),
            ("shard-2".to_owned(), Position::from_counter("2", 2)),
        ]);
        store.commit("ddb", &shards).unwrap();
        store.commit("other", &shards).unwrap();
        let update = Checkpoints::from([("shard-2".to_owned(), Position::from_counter("3", 3))]);
        store.apply("ddb", &update, &["shard-1".into()]).unwrap();
        assert_eq!(store.load("ddb").unwrap(), update);
        assert_eq!(
            store.load("other").unwrap(),
            shards,
            "other pipelines untouched"
        );
    }

    #[test]
    fn a_second_open_of_the_same_store_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let _first = CheckpointStore::open(dir.path()).unwrap();
        let err = CheckpointStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, CheckpointError::Locked { .. }), "{err}");
    }
}
