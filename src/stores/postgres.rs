//! The Postgres shared store: checkpoints and leases in two tables of a database the user
//! picks (`<schema>.cdc_bridge_checkpoints`, `<schema>.cdc_bridge_leases`), created on first
//! use under an advisory lock (so instances starting together do not race).
//!
//! A fenced commit is one transaction: it reads the lease row `FOR SHARE` (a takeover, which
//! updates that row, waits for the commit, and a commit after a takeover finds the new epoch
//! and stores nothing), then writes every position with an upsert that keeps the stored one
//! when it ranks higher (`bytea` compares bytewise, as ranks do). Lease changes are single
//! conditional `UPDATE`s.
//!
//! One connection (TLS as the URL's `sslmode` says, as the Postgres source connects) is shared
//! by every call and reopened after a connection failure; its waits are bounded by the lease
//! duration (see [`session_limits`]), so a paused holder cannot block a takeover. Errors: connection and server
//! failures of SQLSTATE classes 08, 40, 53, 57 are transient; anything else (a missing
//! privilege, a table of another shape) is refused with the fix.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::checkpoint::{
    CheckpointError, Checkpoints, Fence, Position, Store, StoreCause, StoredCheckpoint,
};
use crate::config::Secret;
use crate::coordination::{Lease, LeaseTable};
use crate::error::{ConnectorError, Disposition};
use crate::sources::postgres::{sql_session, PostgresError};

/// `[daemon.coordination]` with `kind = "postgres"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresStoreConfig {
    /// `postgres://user:password@host:port/database?sslmode=...`.
    pub url: Secret,
    /// The schema holding the two tables (created if missing: the role needs CREATE on it).
    #[serde(default = "default_schema")]
    pub schema: String,
    #[serde(default)]
    pub allow_cleartext_password: bool,
}

fn default_schema() -> String {
    "public".into()
}

#[derive(Debug)]
pub struct PostgresStore {
    config: PostgresStoreConfig,
    checkpoints: String,
    leases: String,
    /// The shared connection; `None` until first used and after it failed.
    client: Mutex<Option<Client>>,
    /// `SET` statements run on every new session.
    limits: String,
    /// How long one call (connecting included) may take: a third of the lease duration, so
    /// that an unreachable store cannot stall a round of the lease loop past a renewal.
    call_limit: Duration,
}

/// Bounds on every wait of a store session, each a third of the lease duration.
/// - `idle_in_transaction_session_timeout`: a holder paused in the middle of a commit holds
///   the lease row's lock; the server ends its session, so the lock cannot block a takeover
///   for longer than this.
/// - `lock_timeout`: a take or renewal waiting for that lock gives up (and retries next round)
///   instead of stalling the instance's lease loop.
/// - `statement_timeout`: no call hangs on a server that stopped answering.
fn session_limits(lease: Duration) -> String {
    let third = (lease / 3).as_millis().max(100);
    format!(
        "SET idle_in_transaction_session_timeout = {third}; SET lock_timeout = {third}; SET statement_timeout = {}",
        lease.as_millis().max(1000)
    )
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl PostgresStore {
    /// Connects and creates the tables if they are missing. `lease` (the lease duration)
    /// bounds the session's waits: see [`session_limits`].
    pub async fn open(
        config: PostgresStoreConfig,
        lease: Duration,
    ) -> Result<Self, CheckpointError> {
        let schema = quote_ident(&config.schema);
        let store = PostgresStore {
            limits: session_limits(lease),
            call_limit: lease / 3,
            checkpoints: format!("{schema}.cdc_bridge_checkpoints"),
            leases: format!("{schema}.cdc_bridge_leases"),
            config,
            client: Mutex::new(None),
        };
        store.create_tables().await?;
        Ok(store)
    }

    /// Creates the schema and tables that are missing. Existing ones are left alone without
    /// a `CREATE` (which needs the privilege even when there is nothing to create).
    async fn create_tables(&self) -> Result<(), CheckpointError> {
        let mut guard = self.session().await?;
        let client = guard.as_mut().expect("session opened");
        let exists = client
            .query_one(
                "SELECT to_regclass($1::text) IS NOT NULL AND to_regclass($2::text) IS NOT NULL",
                &[&self.checkpoints, &self.leases],
            )
            .await
            .map_err(|e| self.fail("looking up the tables", e))?;
        if exists.get::<_, bool>(0) {
            return Ok(());
        }
        let create_schema = client
            .query_opt(
                "SELECT 1 FROM pg_namespace WHERE nspname = $1",
                &[&self.config.schema],
            )
            .await
            .map_err(|e| self.fail("looking up the schema", e))?
            .is_none();
        let setup = format!(
            "SELECT pg_advisory_xact_lock(hashtext('cdc_bridge_store_setup'));
             {create_schema}
             CREATE TABLE IF NOT EXISTS {checkpoints} (
                 pipeline text NOT NULL,
                 partition text NOT NULL,
                 token text NOT NULL,
                 rank bytea NOT NULL,
                 PRIMARY KEY (pipeline, partition));
             CREATE TABLE IF NOT EXISTS {leases} (
                 lease text PRIMARY KEY,
                 owner text,
                 epoch bigint NOT NULL,
                 heartbeat bigint NOT NULL);",
            create_schema = if create_schema {
                format!(
                    "CREATE SCHEMA IF NOT EXISTS {};",
                    quote_ident(&self.config.schema)
                )
            } else {
                String::new()
            },
            checkpoints = self.checkpoints,
            leases = self.leases,
        );
        let txn = client
            .transaction()
            .await
            .map_err(|e| self.fail("creating tables", e))?;
        txn.batch_execute(&setup)
            .await
            .map_err(|e| self.fail("creating tables", e))?;
        txn.commit()
            .await
            .map_err(|e| self.fail("creating tables", e))?;
        Ok(())
    }

    /// The shared session, opened if there is none.
    async fn session(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, Option<Client>>, CheckpointError> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            let client = sql_session(
                &self.config.url,
                self.config.allow_cleartext_password,
                "cdc-bridge store",
            )
            .await
            .map_err(|e| self.connect_failed(e))?;
            client
                .batch_execute(&self.limits)
                .await
                .map_err(|e| self.fail("setting session limits", e))?;
            *guard = Some(client);
        }
        Ok(guard)
    }

    /// Runs `work` on the session, within [`PostgresStore::call_limit`]. A connection that
    /// failed or did not answer in time is dropped so the next call reopens it; whatever ended
    /// the session (a network failure, the server ending it, e.g. for
    /// `idle_in_transaction_session_timeout` after a stall) is transient.
    async fn with_client<T>(
        &self,
        action: &'static str,
        work: impl AsyncFnOnce(&mut Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, CheckpointError> {
        let answered = tokio::time::timeout(self.call_limit, async {
            let mut guard = self.session().await?;
            let client = guard.as_mut().expect("session opened");
            match work(client).await {
                Ok(value) => Ok(value),
                Err(err) if err.code().is_none() || client.is_closed() => {
                    *guard = None;
                    Err(self.unavailable(action, Box::new(err)))
                }
                Err(err) => Err(self.fail(action, err)),
            }
        })
        .await;
        match answered {
            Ok(outcome) => outcome,
            Err(_) => {
                // The session may be mid-transaction: never reuse it.
                if let Ok(mut guard) = self.client.try_lock() {
                    *guard = None;
                }
                let waited = format!("no answer within {} ms", self.call_limit.as_millis());
                Err(self.unavailable(action, waited.into()))
            }
        }
    }

    fn unavailable(&self, action: &'static str, source: StoreCause) -> CheckpointError {
        CheckpointError::Unavailable {
            store: self.describe(),
            action,
            source,
        }
    }

    fn connect_failed(&self, err: PostgresError) -> CheckpointError {
        let store = self.describe();
        match err.disposition() {
            Disposition::Transient => CheckpointError::Unavailable {
                store,
                action: "connecting",
                source: Box::new(err),
            },
            _ => CheckpointError::Refused {
                store,
                action: "connecting",
                fix: "check the url, the credentials and sslmode of [daemon.coordination]".into(),
                source: Box::new(err),
            },
        }
    }

    fn fail(&self, action: &'static str, err: tokio_postgres::Error) -> CheckpointError {
        let store = self.describe();
        let code = err.code().cloned();
        let transient = match &code {
            None => true,
            // ... and 55P03: a lock wait that ran into `lock_timeout`; 25P03: the server ended
            // a transaction that stalled; 25006: a read-only server (a failover under way).
            Some(code) => {
                ["08", "40", "53", "57"]
                    .iter()
                    .any(|class| code.code().starts_with(class))
                    || *code == SqlState::LOCK_NOT_AVAILABLE
                    || *code == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT
                    || *code == SqlState::READ_ONLY_SQL_TRANSACTION
            }
        };
        if transient {
            return CheckpointError::Unavailable {
                store,
                action,
                source: Box::new(err),
            };
        }
        let fix = match code {
            Some(SqlState::INSUFFICIENT_PRIVILEGE) => format!(
                "the role lacks a privilege: let it create tables in schema {schema:?} (GRANT CREATE ON SCHEMA {schema} TO <role>) or create the tables beforehand (see the README) and GRANT SELECT, INSERT, UPDATE, DELETE on them",
                schema = self.config.schema
            ),
            _ => "see the server's message".into(),
        };
        CheckpointError::Refused {
            store,
            action,
            fix,
            source: Box::new(err),
        }
    }
}

/// The position in columns `token`, `rank` of `row`, starting at column `at`.
fn position_of(row: &tokio_postgres::Row, at: usize) -> Position {
    Position {
        token: row.get(at),
        rank: row.get(at + 1),
    }
}

fn epoch_of(value: i64) -> u64 {
    value.max(0) as u64
}

#[async_trait]
impl Store for PostgresStore {
    fn describe(&self) -> String {
        format!("postgres table {}", self.checkpoints)
    }

    async fn load(&self, pipeline: &str) -> Result<Checkpoints, CheckpointError> {
        let sql = format!(
            "SELECT partition, token, rank FROM {} WHERE pipeline = $1",
            self.checkpoints
        );
        let rows = self
            .with_client("reading checkpoints", async |c| {
                c.query(&sql, &[&pipeline]).await
            })
            .await?;
        Ok(rows
            .iter()
            .map(|row| (row.get(0), position_of(row, 1)))
            .collect())
    }

    async fn list(&self) -> Result<Vec<StoredCheckpoint>, CheckpointError> {
        let sql = format!(
            "SELECT pipeline, partition, token, rank FROM {} ORDER BY pipeline, partition",
            self.checkpoints
        );
        let rows = self
            .with_client("reading checkpoints", async |c| c.query(&sql, &[]).await)
            .await?;
        Ok(rows
            .iter()
            .map(|row| StoredCheckpoint {
                pipeline: row.get(0),
                partition: row.get(1),
                position: position_of(row, 2),
            })
            .collect())
    }

    async fn apply(
        &self,
        pipeline: &str,
        updates: &Checkpoints,
        removed: &[String],
        fence: Option<&Fence>,
    ) -> Result<(), CheckpointError> {
        let check_lease = format!(
            "SELECT 1 FROM {} WHERE lease = $1 AND owner = $2 AND epoch = $3 FOR SHARE",
            self.leases
        );
        let delete = format!(
            "DELETE FROM {} WHERE pipeline = $1 AND partition = ANY($2)",
            self.checkpoints
        );
        let upsert = format!(
            "INSERT INTO {t} (pipeline, partition, token, rank)
             SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bytea[])
             ON CONFLICT (pipeline, partition) DO UPDATE
                 SET token = EXCLUDED.token, rank = EXCLUDED.rank
                 WHERE {t}.rank <= EXCLUDED.rank
             RETURNING partition",
            t = self.checkpoints
        );
        let partitions: Vec<&str> = updates.keys().map(String::as_str).collect();
        let tokens: Vec<&str> = updates.values().map(|p| p.token.as_str()).collect();
        let ranks: Vec<&[u8]> = updates.values().map(|p| p.rank.as_slice()).collect();
        let outcome = self
            .with_client("storing checkpoints", async |c| {
                let txn = c.transaction().await?;
                if let Some(fence) = fence {
                    let epoch = fence.epoch as i64;
                    let held = txn
                        .query_opt(&check_lease, &[&fence.lease, &fence.owner, &epoch])
                        .await?;
                    if held.is_none() {
                        return Ok(Err(CheckpointError::Fenced {
                            lease: fence.lease.clone(),
                            epoch: fence.epoch,
                        }));
                    }
                }
                if !removed.is_empty() {
                    txn.execute(&delete, &[&pipeline, &removed]).await?;
                }
                let written = txn
                    .query(&upsert, &[&pipeline, &partitions, &tokens, &ranks])
                    .await?;
                if written.len() < updates.len() {
                    let written: Vec<String> = written.iter().map(|r| r.get(0)).collect();
                    let behind = updates
                        .iter()
                        .find(|(partition, _)| !written.contains(partition))
                        .expect("a partition was not written");
                    let stored: String = txn
                        .query_one(
                            &format!(
                                "SELECT token FROM {} WHERE pipeline = $1 AND partition = $2",
                                self.checkpoints
                            ),
                            &[&pipeline, behind.0],
                        )
                        .await?
                        .get(0);
                    return Ok(Err(CheckpointError::Regression {
                        pipeline: pipeline.to_owned(),
                        partition: behind.0.clone(),
                        stored,
                        proposed: behind.1.token.clone(),
                    }));
                }
                txn.commit().await?;
                Ok(Ok(()))
            })
            .await?;
        outcome
    }

    async fn check_fence(&self, fence: &Fence) -> Result<(), CheckpointError> {
        let sql = format!(
            "SELECT 1 FROM {} WHERE lease = $1 AND owner = $2 AND epoch = $3",
            self.leases
        );
        let epoch = fence.epoch as i64;
        let held = self
            .with_client("checking a lease", async |c| {
                c.query_opt(&sql, &[&fence.lease, &fence.owner, &epoch])
                    .await
            })
            .await?;
        match held {
            Some(_) => Ok(()),
            None => Err(CheckpointError::Fenced {
                lease: fence.lease.clone(),
                epoch: fence.epoch,
            }),
        }
    }

    async fn reset(&self, pipeline: &str) -> Result<usize, CheckpointError> {
        let sql = format!("DELETE FROM {} WHERE pipeline = $1", self.checkpoints);
        let count = self
            .with_client("resetting checkpoints", async |c| {
                c.execute(&sql, &[&pipeline]).await
            })
            .await?;
        Ok(count as usize)
    }
}

#[async_trait]
impl LeaseTable for PostgresStore {
    async fn leases(&self) -> Result<Vec<Lease>, CheckpointError> {
        let sql = format!(
            "SELECT lease, owner, epoch, heartbeat FROM {} ORDER BY lease",
            self.leases
        );
        let rows = self
            .with_client("reading leases", async |c| c.query(&sql, &[]).await)
            .await?;
        Ok(rows
            .iter()
            .map(|row| Lease {
                key: row.get(0),
                owner: row.get(1),
                epoch: epoch_of(row.get(2)),
                heartbeat: epoch_of(row.get(3)),
            })
            .collect())
    }

    async fn create(&self, key: &str) -> Result<(), CheckpointError> {
        let sql = format!(
            "INSERT INTO {} (lease, owner, epoch, heartbeat) VALUES ($1, NULL, 0, 0)
             ON CONFLICT (lease) DO NOTHING",
            self.leases
        );
        self.with_client("creating a lease", async |c| c.execute(&sql, &[&key]).await)
            .await
            .map(drop)
    }

    async fn renew(&self, fence: &Fence) -> Result<bool, CheckpointError> {
        let sql = format!(
            "UPDATE {} SET heartbeat = heartbeat + 1
             WHERE lease = $1 AND owner = $2 AND epoch = $3",
            self.leases
        );
        let epoch = fence.epoch as i64;
        let updated = self
            .with_client("renewing a lease", async |c| {
                c.execute(&sql, &[&fence.lease, &fence.owner, &epoch]).await
            })
            .await?;
        Ok(updated == 1)
    }

    async fn take(&self, seen: &Lease, owner: &str) -> Result<Option<Fence>, CheckpointError> {
        let sql = format!(
            "UPDATE {} SET owner = $2, epoch = epoch + 1, heartbeat = heartbeat + 1
             WHERE lease = $1 AND owner IS NOT DISTINCT FROM $3 AND epoch = $4 AND heartbeat = $5
             RETURNING epoch",
            self.leases
        );
        let (epoch, heartbeat) = (seen.epoch as i64, seen.heartbeat as i64);
        let row = self
            .with_client("taking a lease", async |c| {
                c.query_opt(&sql, &[&seen.key, &owner, &seen.owner, &epoch, &heartbeat])
                    .await
            })
            .await?;
        Ok(row.map(|row| Fence {
            lease: seen.key.clone(),
            owner: owner.to_owned(),
            epoch: epoch_of(row.get(0)),
        }))
    }

    async fn release(&self, fence: &Fence) -> Result<(), CheckpointError> {
        let sql = format!(
            "UPDATE {} SET owner = NULL, heartbeat = heartbeat + 1
             WHERE lease = $1 AND owner = $2 AND epoch = $3",
            self.leases
        );
        let epoch = fence.epoch as i64;
        self.with_client("releasing a lease", async |c| {
            c.execute(&sql, &[&fence.lease, &fence.owner, &epoch]).await
        })
        .await
        .map(drop)
    }

    async fn delete(&self, fence: &Fence) -> Result<bool, CheckpointError> {
        let sql = format!(
            "DELETE FROM {} WHERE lease = $1 AND owner = $2 AND epoch = $3",
            self.leases
        );
        let epoch = fence.epoch as i64;
        let deleted = self
            .with_client("deleting a lease", async |c| {
                c.execute(&sql, &[&fence.lease, &fence.owner, &epoch]).await
            })
            .await?;
        Ok(deleted == 1)
    }
}
