//! The `postgres` source: logical replication with pgoutput (protocol version 2, streaming of
//! in-progress transactions), with a consistent initial snapshot and exact resume.
//!
//! Flow: check the server (wal_level, REPLICATION role, tables) -> ensure the publication ->
//! decide from the stored checkpoint and the slot's state where to start:
//! - a checkpoint and its slot: stream from the checkpoint's LSN, copying while streaming the
//!   tables whose stored copy progress is unfinished ([`backfill`]);
//! - no checkpoint: create the slot (exporting a snapshot), store the consistent point, copy
//!   the tables inside that snapshot in chunks ([`snapshot`], [`chunk`]) with their progress
//!   stored after each chunk, then stream from the consistent point ([`stream`]). A slot
//!   without a stored checkpoint (left by a run that stopped before storing one) is dropped.
//!
//! The walsender connection is driven by hand ([`server`], [`decode`]); ordinary SQL
//! (catalog, snapshot, heartbeats) goes through tokio-postgres ([`catalog`]). Both open their
//! stream through [`transport`]: TLS as `sslmode` says ([`tls`]), and never a cleartext
//! password over a plain connection unless `allow_cleartext_password` is set. Values are read
//! from their text form ([`value`]).
//!
//! Errors ([`PostgresError`]): lost connections and server restarts are transient (the
//! pipeline restarts from its checkpoint with backoff); missing prerequisites, a missing,
//! invalidated or advanced slot are fatal, each with the fix in its message.

mod array;
#[cfg(test)]
mod auth_tests;
mod backfill;
mod catalog;
mod chunk;
mod column_types;
mod config;
mod copy_text;
mod decode;
mod error;
#[doc(hidden)]
pub mod fuzz;
mod lsn;
mod publication;
mod retention;
mod server;
mod snapshot;
mod spool;
mod stream;
mod table;
mod tls;
mod transport;
mod value;

use std::sync::Arc;

use async_trait::async_trait;

pub use backfill::request as request_snapshot;
pub use config::{PostgresConfig, SnapshotMode};
pub use error::PostgresError;
pub use lsn::Lsn;
pub use stream::HEARTBEAT_PREFIX;

/// An ordinary SQL session for another part of the daemon (the Postgres checkpoint store),
/// made from a connection URL the way the source makes its own: TLS as `sslmode` says, and
/// cleartext passwords refused unless allowed.
pub async fn sql_session(
    url: &crate::config::Secret,
    allow_cleartext_password: bool,
    application_name: &str,
) -> Result<tokio_postgres::Client, PostgresError> {
    let endpoint =
        transport::Endpoint::of_url(url, allow_cleartext_password, application_name.to_owned())?;
    catalog::connect_to(url, &endpoint).await
}

use crate::check::Finding;
use crate::checkpoint::Position;
use crate::error::BoxError;
use crate::source::progress::TableProgress;
use crate::source::{Halt, Mark, Source, SourceContext, Start};
use backfill::Backfill;
use server::ReplicationConnection;
use snapshot::TableCopy;
use stream::Streamer;
use transport::Endpoint;
use value::TypeRegistry;

pub struct PostgresSource {
    config: PostgresConfig,
}

impl PostgresSource {
    pub fn new(config: PostgresConfig) -> Self {
        PostgresSource { config }
    }

    async fn replicate(&self, ctx: &mut SourceContext) -> Result<(), Halt<PostgresError>> {
        let config = &self.config;
        let endpoint = Endpoint::new(config)?;
        let sql = catalog::connect(config).await?;
        catalog::require_replication(&catalog::server_facts(&sql).await?)?;
        let tables = config.table_names();
        let (oids, missing) = catalog::table_oids(&sql, &tables).await?;
        catalog::require_tables(&missing)?;
        publication::ensure(&sql, &config.publication, &tables).await?;
        if let Some(coverage) = publication::coverage(&sql, &config.publication, &tables).await? {
            coverage.require(&config.publication)?;
            if let Some(warning) = coverage.skipped_warning(&config.publication) {
                tracing::warn!(pipeline = %ctx.pipeline, "{warning}");
            }
        }
        let _measuring = retention::measure(config, ctx.probe.clone());

        let stored = match ctx.resume.get("") {
            Some(p) => Some(
                p.token
                    .parse::<Lsn>()
                    .map_err(|_| PostgresError::BadCheckpoint(p.token.clone()))?,
            ),
            None => None,
        };
        let slot = catalog::slot_state(&sql, &config.slot).await?;
        if let Some(pid) = slot
            .as_ref()
            .and_then(|s| s.active_pid)
            .filter(|_| ctx.leased)
        {
            tracing::warn!(pipeline = %ctx.pipeline, slot = %config.slot, pid, "the slot is still used by the previous holder of the pipeline's lease: ending that session");
            catalog::terminate_backend(&sql, pid).await?;
        }
        let database: Arc<str> = endpoint.dbname.as_str().into();
        let progress = TableProgress::stored(&ctx.resume).map_err(PostgresError::BadProgress)?;
        let mode = config.snapshot;
        if mode.start(stored.is_some()) == Start::Done {
            tracing::info!(pipeline = %ctx.pipeline, "snapshot already complete (snapshot = \"initial_only\")");
            return Ok(());
        }
        let start = match (stored, slot) {
            (Some(checkpoint), None) => {
                return Err(PostgresError::SlotMissing {
                    slot: config.slot.clone(),
                    checkpoint: checkpoint.to_string(),
                }
                .into())
            }
            (Some(checkpoint), Some(state)) => {
                if state.lost {
                    return Err(PostgresError::SlotInvalidated {
                        slot: config.slot.clone(),
                    }
                    .into());
                }
                if let Some(confirmed) = state.confirmed_flush.filter(|c| *c > checkpoint) {
                    return Err(PostgresError::SlotAhead {
                        slot: config.slot.clone(),
                        confirmed: confirmed.to_string(),
                        checkpoint: checkpoint.to_string(),
                    }
                    .into());
                }
                checkpoint
            }
            (None, Some(state)) if mode == SnapshotMode::Never => {
                if state.lost {
                    return Err(PostgresError::SlotInvalidated {
                        slot: config.slot.clone(),
                    }
                    .into());
                }
                state.confirmed_flush.unwrap_or_default()
            }
            (None, existing) => {
                if existing.is_some() {
                    tracing::warn!(pipeline = %ctx.pipeline, slot = %config.slot, "slot exists but no checkpoint is stored (an earlier snapshot was interrupted): dropping the slot and starting over");
                    catalog::drop_slot(&sql, &config.slot).await?;
                }
                let ordered: Vec<_> = tables.iter().map(|t| (t.clone(), oids[t])).collect();
                let generation = TableProgress::next_generation(&progress);
                let copies = if mode == SnapshotMode::Never {
                    Vec::new()
                } else {
                    snapshot::plan(&sql, config, &ordered, generation).await?
                };
                for (table, range) in progress.keys() {
                    let planned = copies
                        .iter()
                        .any(|c| c.name.to_string() == *table && c.range == *range);
                    if !planned {
                        ctx.emit
                            .forget(TableProgress::partition(table, *range))
                            .await?;
                    }
                }
                return self
                    .snapshot_then_stream(ctx, &sql, endpoint, database, (&copies, generation))
                    .await;
            }
        };
        let backfill = unfinished_copies(&sql, &progress, ctx).await?;
        let conn = ReplicationConnection::connect(&endpoint).await?;
        let mut streamer =
            Streamer::new(conn, &sql, config, TypeRegistry::default(), database, start);
        streamer.backfill = backfill;
        streamer.run(ctx).await?;
        Ok(())
    }

    /// Creates the slot, copies the tables (unless `snapshot = "never"`), and streams on.
    async fn snapshot_then_stream(
        &self,
        ctx: &mut SourceContext,
        sql: &tokio_postgres::Client,
        endpoint: Endpoint,
        database: Arc<str>,
        (tables, generation): (&[TableCopy], u64),
    ) -> Result<(), Halt<PostgresError>> {
        let config = &self.config;
        let mut conn = ReplicationConnection::connect(&endpoint).await?;
        let temporary = if config.snapshot == SnapshotMode::InitialOnly {
            "TEMPORARY "
        } else {
            ""
        };
        let export = if config.snapshot == SnapshotMode::Never {
            "NOEXPORT_SNAPSHOT"
        } else {
            "EXPORT_SNAPSHOT"
        };
        let rows = conn
            .simple_query(&format!(
                "CREATE_REPLICATION_SLOT {} {temporary}LOGICAL pgoutput {export}",
                config.slot
            ))
            .await
            .map_err(|err| err.of_slot_creation(&config.slot))?;
        let row = rows.first().ok_or_else(|| {
            PostgresError::Protocol("CREATE_REPLICATION_SLOT returned no row".into())
        })?;
        let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let consistent_point: Lsn = field(1)
            .parse()
            .map_err(|_| PostgresError::Protocol(format!("bad consistent point {:?}", field(1))))?;
        tracing::info!(pipeline = %ctx.pipeline, slot = %config.slot, consistent_point = %consistent_point, "created replication slot");
        let mark = Mark {
            partition: String::new(),
            position: Position::from_counter(consistent_point.to_string(), consistent_point.0),
        };
        if config.snapshot != SnapshotMode::Never {
            for table in tables {
                ctx.emit.checkpoint(table.mark(&table.progress)).await?;
            }
            if config.snapshot == SnapshotMode::Initial {
                // From here on, an interrupted run streams on from the consistent point and
                // copies what is left of the tables while streaming.
                ctx.emit.checkpoint(mark.clone()).await?;
            }
            ctx.probe.snapshotting();
            snapshot::copy_tables(
                sql,
                config,
                tables,
                &field(2),
                consistent_point,
                &database,
                ctx,
            )
            .await?;
        }
        if config.snapshot != SnapshotMode::Initial {
            ctx.emit.checkpoint(mark).await?;
        }
        if config.snapshot == SnapshotMode::InitialOnly {
            conn.close().await;
            return Ok(());
        }
        let mut streamer = Streamer::new(
            conn,
            sql,
            config,
            TypeRegistry::default(),
            database,
            consistent_point,
        );
        // A copy requested later outranks this run's.
        streamer.backfill = Backfill::new(Vec::new(), generation);
        streamer.run(ctx).await?;
        Ok(())
    }
}

#[async_trait]
impl Source for PostgresSource {
    async fn run(self: Box<Self>, mut ctx: SourceContext) -> Result<(), BoxError> {
        match self.replicate(&mut ctx).await {
            Ok(()) | Err(Halt::Stopped) => Ok(()),
            Err(Halt::Failed(err)) => Err(err.into()),
        }
    }
}

/// `cdc-bridge check` for this source: what the server offers and what is missing.
pub async fn check(config: &PostgresConfig) -> Vec<Finding> {
    let mut findings = Vec::new();
    let sql = match catalog::connect(config).await {
        Ok(sql) => sql,
        Err(err) => {
            return vec![Finding::fail(format!(
                "cannot connect: {}",
                crate::error::report(&err)
            ))]
        }
    };
    let outcome: Result<(), PostgresError> = async {
        let facts = catalog::server_facts(&sql).await?;
        findings.push(Finding::ok(format!("PostgreSQL {}", facts.version)));
        findings.push(match catalog::require_replication(&facts) {
            Ok(()) => Finding::ok(format!("wal_level = logical; role {} has REPLICATION", facts.role)),
            Err(err) => Finding::fail(err.to_string()),
        });
        let tables = config.table_names();
        let (oids, missing) = catalog::table_oids(&sql, &tables).await?;
        findings.push(match catalog::require_tables(&missing) {
            Ok(()) => Finding::ok(format!("tables exist: {}", config.tables.join(", "))),
            Err(err) => Finding::fail(err.to_string()),
        });
        if missing.is_empty() {
            findings.extend(publication_findings(&sql, &config.publication, &tables).await?);
        }
        let oid_list: Vec<u32> = oids.values().copied().collect();
        let keyless = catalog::tables_without_key(&sql, &oid_list).await?;
        if !keyless.is_empty() {
            findings.push(Finding::warn(format!(
                "no primary key or replica identity on {}: updates and deletes carry no key (ALTER TABLE ... REPLICA IDENTITY FULL, or add a primary key)",
                keyless.join(", ")
            )));
        }
        let slot = catalog::slot_state(&sql, &config.slot).await?;
        findings.push(match (&slot, facts.used_slots < facts.max_replication_slots) {
            (Some(state), _) if state.lost => Finding::fail(PostgresError::SlotInvalidated { slot: config.slot.clone() }.to_string()),
            (Some(_), _) => Finding::ok(format!("replication slot {} exists", config.slot)),
            (None, true) => Finding::ok(format!(
                "replication slot {} will be created ({} of {} slots in use)",
                config.slot, facts.used_slots, facts.max_replication_slots
            )),
            (None, false) => Finding::fail(format!(
                "no free replication slot ({} of {} in use): raise max_replication_slots and restart PostgreSQL, or drop an unused slot",
                facts.used_slots, facts.max_replication_slots
            )),
        });
        Ok(())
    }
    .await;
    if let Err(err) = outcome {
        findings.push(Finding::fail(crate::error::report(&err)));
    }
    findings
}

/// `cdc-bridge check` on the publication: whether it publishes every table under its own name,
/// and the operations it leaves out.
async fn publication_findings(
    sql: &tokio_postgres::Client,
    name: &str,
    tables: &[config::TableName],
) -> Result<Vec<Finding>, PostgresError> {
    let Some(coverage) = publication::coverage(sql, name, tables).await? else {
        return Ok(vec![Finding::ok(format!(
            "publication {name} will be created for the tables"
        ))]);
    };
    let mut findings = vec![match coverage.require(name) {
        Ok(()) => Finding::ok(format!("publication {name} publishes every table")),
        Err(err) => Finding::fail(err.to_string()),
    }];
    findings.extend(coverage.skipped_warning(name).map(Finding::warn));
    Ok(findings)
}

/// The tables an earlier run began to copy and did not finish, to copy while streaming from
/// their stored progress. A table dropped since is forgotten.
async fn unfinished_copies(
    sql: &tokio_postgres::Client,
    progress: &std::collections::BTreeMap<(String, Option<u32>), TableProgress>,
    ctx: &SourceContext,
) -> Result<Backfill, Halt<PostgresError>> {
    let unfinished: Vec<(config::TableName, Option<u32>, &TableProgress)> = progress
        .iter()
        .filter(|(_, p)| !p.done)
        .filter_map(|((table, range), p)| {
            backfill::table_named(table).map(|name| (name, *range, p))
        })
        .collect();
    let mut names: Vec<_> = unfinished.iter().map(|(name, ..)| name.clone()).collect();
    names.dedup();
    let (oids, missing) = catalog::table_oids(sql, &names).await?;
    for (name, range, _) in &unfinished {
        if missing.contains(name) {
            tracing::warn!(pipeline = %ctx.pipeline, table = %name, "the unfinished copy of a table that no longer exists is dropped");
            ctx.emit
                .forget(TableProgress::partition(&name.to_string(), *range))
                .await?;
        }
    }
    let copies: Vec<TableCopy> = unfinished
        .into_iter()
        .filter_map(|(name, range, p)| {
            oids.get(&name).map(|&oid| TableCopy {
                name,
                oid,
                range,
                progress: p.clone(),
            })
        })
        .collect();
    if !copies.is_empty() {
        tracing::info!(pipeline = %ctx.pipeline, tables = copies.len(), "an earlier run's copy is unfinished: copying the rest while streaming");
        ctx.probe
            .snapshot_started(&snapshot::estimates(sql, &copies).await?);
    }
    let generation = TableProgress::next_generation(progress) - 1;
    Ok(Backfill::new(copies, generation))
}
