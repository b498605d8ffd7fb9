//! PostgreSQL fixtures: a schema, slot and publication per test on the server that
//! `scripts/services.sh` started (its URL comes from `CDC_BRIDGE_PG_URL`).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use super::{terminate, Workspace};

pub const MAIN: &str = "CDC_BRIDGE_PG_URL";
pub const RESTARTABLE: &str = "CDC_BRIDGE_PG_RESTART_URL";
pub const REPLICA_WAL: &str = "CDC_BRIDGE_PG_REPLICA_URL";
pub const ADMIN: &str = "CDC_BRIDGE_PG_ADMIN_URL";
pub const SMALL_WAL: &str = "CDC_BRIDGE_PG_SMALL_WAL_URL";
pub const SMALL_WAL_ADMIN: &str = "CDC_BRIDGE_PG_SMALL_WAL_ADMIN_URL";

/// The URL in environment variable `var` (set by `scripts/services.sh env`).
pub fn env_url(var: &str) -> String {
    std::env::var(var)
        .unwrap_or_else(|_| panic!("{var} is not set: run the tests with scripts/test.sh"))
}

pub fn pg_url() -> String {
    env_url(MAIN)
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(connection);
    client
}

/// A test's own schema (`name`), slot and publication, and a workspace for the bridge.
pub struct PgFixture {
    pub name: String,
    /// The environment variable holding this fixture's server URL.
    pub url_var: &'static str,
    pub ws: Workspace,
    pub client: tokio_postgres::Client,
}

impl PgFixture {
    pub async fn new(name: &str) -> Self {
        Self::on(MAIN, name).await
    }

    /// A fixture on the server whose URL is in `url_var`.
    pub async fn on(url_var: &'static str, name: &str) -> Self {
        let client = connect(&env_url(url_var)).await;
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}; DROP PUBLICATION IF EXISTS {name}"))
            .await
            .expect("create schema");
        drop_slot(&client, name).await;
        PgFixture {
            name: name.to_owned(),
            url_var,
            ws: Workspace::new(),
            client,
        }
    }

    /// Writes a config capturing `tables` (names within the schema) into `out/<name>.jsonl`.
    pub fn config(&self, tables: &[&str], source_extra: &str) -> PathBuf {
        let tables: Vec<String> = tables
            .iter()
            .map(|t| format!("\"{}.{t}\"", self.name))
            .collect();
        self.ws.config(&format!(
            "[[pipeline]]\nname = \"{n}\"\n[pipeline.source]\nkind = \"postgres\"\nurl = \"${{{var}}}\"\n\
             slot = \"{n}\"\npublication = \"{n}\"\ntables = [{}]\nheartbeat_interval_ms = 500\nstatus_interval_ms = 1000\n{source_extra}\n\
             [pipeline.sink]\nkind = \"file\"\npath = \"out/{n}.jsonl\"\n[pipeline.batch]\nlinger_ms = 5\n",
            tables.join(", "),
            n = self.name,
            var = self.url_var
        ))
    }

    /// Like [`PgFixture::config`], with `url` (a literal value) instead of the fixture's.
    pub fn config_with_url(&self, tables: &[&str], source_extra: &str, url: &str) -> PathBuf {
        let config = self.config(tables, source_extra);
        let text = std::fs::read_to_string(&config).unwrap().replace(
            &format!("url = \"${{{}}}\"", self.url_var),
            &format!("url = \"{url}\""),
        );
        std::fs::write(&config, text).unwrap();
        config
    }

    pub fn out(&self) -> PathBuf {
        self.ws.path(&format!("out/{}.jsonl", self.name))
    }

    pub fn spawn(&self, config: &std::path::Path) -> Child {
        self.ws
            .spawn(&["run", "--config", config.to_str().unwrap()])
    }

    /// Every event written so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        read_events(&self.out())
    }

    /// Waits until at least `count` events were written.
    pub fn wait_for_events(&self, count: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let start = std::time::Instant::now();
        loop {
            let events = self.events();
            if events.len() >= count {
                return events;
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out waiting for {count} events (have {}); bridge log:\n{}",
                    events.len(),
                    self.ws.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, and the exit status must be 0.
    pub fn stop(&self, mut child: Child) {
        terminate(&child);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "bridge exit status");
    }

    pub async fn sql(&self, sql: &str) {
        self.client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Waits until the slot confirmed everything written so far (the bridge caught up).
    pub async fn wait_caught_up(&self, timeout: Duration) {
        let row = self
            .client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .unwrap();
        let target: String = row.get(0);
        let start = std::time::Instant::now();
        loop {
            let done = self
                .client
                .query_opt(
                    "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND confirmed_flush_lsn >= $2::text::pg_lsn",
                    &[&self.name, &target],
                )
                .await
                .map(|r| r.is_some())
                .unwrap_or(false);
            if done {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "bridge did not catch up to {target}; log:\n{}",
                self.ws.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The LSN stored as this pipeline's checkpoint (the bridge must not be running).
    pub fn stored_lsn(&self) -> Option<u64> {
        let store = cdc_bridge::checkpoint::CheckpointStore::open(&self.ws.path("state")).ok()?;
        let position = store.load(&self.name).ok()?.remove("")?;
        Some(u64::from_be_bytes(position.rank.try_into().ok()?))
    }

    pub async fn cleanup(&self) {
        drop_slot(&self.client, &self.name).await;
    }
}

pub async fn drop_slot(client: &tokio_postgres::Client, slot: &str) {
    // The slot may still be held by a bridge that is shutting down: retry briefly.
    for _ in 0..50 {
        let dropped = client
            .execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", &[&slot])
            .await;
        if dropped.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn read_events(path: &std::path::Path) -> Vec<serde_json::Value> {
    super::read_records(path)
}

/// Applies `migrations/postgres/*.sql` as the superuser (serialised between tests).
pub async fn apply_migrations() {
    let admin = connect(&env_url(ADMIN)).await;
    admin
        .execute("SELECT pg_advisory_lock(4242)", &[])
        .await
        .unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    for file in files {
        let sql = std::fs::read_to_string(&file).unwrap();
        admin
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
    admin
        .execute("SELECT pg_advisory_unlock(4242)", &[])
        .await
        .unwrap();
}

/// The URL of the role the migrations create, on the main test server.
pub fn migrated_role_url() -> String {
    pg_url().replace("cdc:cdc@", "cdc_bridge:change-me@")
}
