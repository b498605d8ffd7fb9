//! Ordinary SQL against the source database (tokio-postgres): the session, prerequisite
//! checks, the publication, slot state, and table metadata.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::{Client, NoTls};

use super::config::{PostgresConfig, TableName};
use super::error::PostgresError;
use super::lsn::Lsn;
use super::server::SESSION_OPTIONS;
use super::table::{Column, DeclaredColumn, Relation};
use super::tls::split_url;
use super::transport::{self, Endpoint};
use super::value::TypeRegistry;
use crate::config::Secret;

/// Opens the SQL session with the same text-output settings as the replication session, over
/// the same kind of stream ([`transport::open`]: TLS as `sslmode` says, cleartext guard).
pub async fn connect(config: &PostgresConfig) -> Result<Client, PostgresError> {
    connect_to(&config.url, &Endpoint::new(config)?).await
}

/// Opens an ordinary SQL session to `endpoint` (made from `url`), as [`connect`] does.
pub async fn connect_to(url: &Secret, endpoint: &Endpoint) -> Result<Client, PostgresError> {
    let (url, _) = split_url(url.expose()).map_err(PostgresError::Tls)?;
    let mut pg: tokio_postgres::Config = url
        .parse()
        .map_err(|e| PostgresError::Protocol(format!("bad url: {e}")))?;
    pg.options(SESSION_OPTIONS)
        .application_name(&endpoint.application_name)
        .ssl_mode(tokio_postgres::config::SslMode::Disable);
    let stream = transport::open(endpoint).await?;
    let (client, connection) =
        pg.connect_raw(stream, NoTls)
            .await
            .map_err(|e| match e.as_db_error() {
                Some(db) if db.code().code().starts_with("28") => {
                    PostgresError::Auth(db.message().to_owned())
                }
                _ if transport::is_cleartext_refusal(&e) => PostgresError::CleartextPassword,
                _ => PostgresError::sql("connecting", e),
            })?;
    spawn_connection(connection);
    Ok(client)
}

fn spawn_connection<F>(connection: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "SQL connection ended");
        }
    });
}

/// Server settings and role attributes the source needs.
#[derive(Debug, Clone)]
pub struct ServerFacts {
    pub version: String,
    pub wal_level: String,
    pub role: String,
    pub replication_role: bool,
    pub max_replication_slots: i64,
    pub used_slots: i64,
}

pub async fn server_facts(client: &Client) -> Result<ServerFacts, PostgresError> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('wal_level'), current_user::text, \
                    (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user), \
                    current_setting('max_replication_slots')::bigint, \
                    (SELECT count(*) FROM pg_replication_slots)",
            &[],
        )
        .await
        .map_err(|e| PostgresError::sql("reading server settings", e))?;
    Ok(ServerFacts {
        version: row.get(0),
        wal_level: row.get(1),
        role: row.get(2),
        replication_role: row.get(3),
        max_replication_slots: row.get(4),
        used_slots: row.get(5),
    })
}

/// Fails with the fix when logical replication cannot work.
pub fn require_replication(facts: &ServerFacts) -> Result<(), PostgresError> {
    if facts.wal_level != "logical" {
        return Err(PostgresError::WalLevel {
            found: facts.wal_level.clone(),
        });
    }
    if !facts.replication_role {
        return Err(PostgresError::NoReplication {
            role: facts.role.clone(),
        });
    }
    Ok(())
}

/// Table OIDs by name; names missing from the database are listed.
pub async fn table_oids(
    client: &Client,
    tables: &[TableName],
) -> Result<(HashMap<TableName, u32>, Vec<TableName>), PostgresError> {
    let mut found = HashMap::new();
    let mut missing = Vec::new();
    for table in tables {
        let row = client
            .query_opt(
                "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
                &[&table.schema, &table.table],
            )
            .await
            .map_err(|e| PostgresError::sql("looking up tables", e))?;
        match row {
            Some(row) => {
                found.insert(table.clone(), row.get(0));
            }
            None => missing.push(table.clone()),
        }
    }
    Ok((found, missing))
}

pub fn require_tables(missing: &[TableName]) -> Result<(), PostgresError> {
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<_> = missing.iter().map(ToString::to_string).collect();
    Err(PostgresError::MissingTables {
        tables: names.join(", "),
    })
}

/// What the server knows of a replication slot.
#[derive(Debug, Clone)]
pub struct SlotState {
    pub confirmed_flush: Option<Lsn>,
    pub lost: bool,
    /// The server process streaming from the slot, if one is.
    pub active_pid: Option<i32>,
}

pub async fn slot_state(client: &Client, slot: &str) -> Result<Option<SlotState>, PostgresError> {
    let row = client
        .query_opt(
            "SELECT confirmed_flush_lsn::text, coalesce(wal_status, ''), active_pid FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| PostgresError::sql("looking up the replication slot", e))?;
    Ok(row.map(|row| SlotState {
        confirmed_flush: row.get::<_, Option<String>>(0).and_then(|t| t.parse().ok()),
        lost: row.get::<_, String>(1) == "lost",
        active_pid: row.get(2),
    }))
}

/// Ends the server process `pid` (a walsender of the same role: allowed without superuser).
pub async fn terminate_backend(client: &Client, pid: i32) -> Result<(), PostgresError> {
    client
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .map_err(|e| PostgresError::sql(format!("ending server process {pid}"), e))?;
    Ok(())
}

pub async fn drop_slot(client: &Client, slot: &str) -> Result<(), PostgresError> {
    client
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .map_err(|e| PostgresError::sql(format!("dropping replication slot {slot}"), e))?;
    Ok(())
}

/// The table with OID `oid` as the snapshot and the stream see it.
pub async fn relation(
    client: &Client,
    types: &mut TypeRegistry,
    oid: u32,
) -> Result<Relation, PostgresError> {
    let head = client
        .query_one(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
            &[&oid],
        )
        .await
        .map_err(|e| PostgresError::sql("reading table metadata", e))?;
    let rows = client
        .query(
            "SELECT a.attname::text, a.atttypid, a.atttypmod, \
                    coalesce(a.attnum = ANY(ri.indkey), false) \
             FROM pg_attribute a \
             LEFT JOIN LATERAL (SELECT i.indkey FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisreplident) ri ON true \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(|e| PostgresError::sql("reading table columns", e))?;
    let type_oids: Vec<u32> = rows.iter().map(|r| r.get(1)).collect();
    types.ensure(client, &type_oids).await?;
    let columns = rows
        .iter()
        .map(|r| Column {
            name: Arc::from(r.get::<_, String>(0)),
            type_oid: r.get(1),
            typmod: r.get(2),
            decoder: types.get(r.get(1)),
            identity: r.get(3),
        })
        .collect();
    let declared = declared_columns(client, oid).await?;
    let name = (
        Arc::from(head.get::<_, String>(0)),
        Arc::from(head.get::<_, String>(1)),
    );
    Ok(Relation::new(oid, name, columns, &declared))
}

/// The declared type, NOT NULL and primary-key membership of each column of table `oid`.
pub async fn declared_columns(
    client: &Client,
    oid: u32,
) -> Result<Vec<DeclaredColumn>, PostgresError> {
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                    coalesce(a.attnum = ANY(pk.indkey), false) \
             FROM pg_attribute a \
             LEFT JOIN LATERAL (SELECT i.indkey FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisprimary) pk ON true \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
            &[&oid],
        )
        .await
        .map_err(|e| PostgresError::sql("reading the table's declared columns", e))?;
    Ok(rows
        .iter()
        .map(|r| DeclaredColumn {
            name: r.get(0),
            declared_type: r.get(1),
            not_null: r.get(2),
            primary_key: r.get(3),
        })
        .collect())
}

/// Estimated row count of a table (for snapshot progress).
pub async fn estimated_rows(client: &Client, oid: u32) -> Result<i64, PostgresError> {
    let row = client
        .query_one(
            "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = $1",
            &[&oid],
        )
        .await
        .map_err(|e| PostgresError::sql("estimating table size", e))?;
    Ok(row.get(0))
}

/// Tables among `oids` with neither a primary key nor a usable replica identity.
pub async fn tables_without_key(
    client: &Client,
    oids: &[u32],
) -> Result<Vec<String>, PostgresError> {
    let rows = client
        .query(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.oid = ANY($1) AND c.relreplident IN ('d', 'n') \
               AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) \
             ORDER BY 1",
            &[&oids],
        )
        .await
        .map_err(|e| PostgresError::sql("checking keys", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
