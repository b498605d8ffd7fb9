//! Errors of the Postgres source, each with its disposition and, where the operator must act,
//! the fix in its message.

use std::fmt;

use crate::error::{ConnectorError, Disposition};

/// An error reported by the server (ErrorResponse), with its SQLSTATE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub severity: String,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, " hint: {hint}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error("cannot connect to PostgreSQL at {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connection to PostgreSQL lost")]
    Io(#[source] std::io::Error),
    #[error("PostgreSQL: {0}")]
    Server(ServerError),
    #[error("PostgreSQL query failed: {context}")]
    Sql {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("wal_level is {found:?} but logical replication needs wal_level = logical: run ALTER SYSTEM SET wal_level = logical (or set it in postgresql.conf) and restart PostgreSQL")]
    WalLevel { found: String },
    #[error("role {role:?} lacks the REPLICATION attribute: run ALTER ROLE {role} REPLICATION as a superuser (see migrations/postgres/)")]
    NoReplication { role: String },
    #[error(
        "table(s) not found: {tables}; create them, or fix `tables` in the source configuration"
    )]
    MissingTables { tables: String },
    #[error("publication {publication} does not publish {tables}: the snapshot would copy them and their changes would never be streamed. Run ALTER PUBLICATION {publication} ADD TABLE {tables} (as the tables' owner), or remove them from `tables`; a partition is published through its partitioned table, so list that instead")]
    /// `publication` and `tables` are quoted identifiers, ready for the statement.
    Unpublished { publication: String, tables: String },
    #[error("publication {publication} has publish_via_partition_root = false, so it publishes the changes of partitioned table(s) {tables} under each partition's own name, while the snapshot copies them under the table's name: a consumer would keep copied rows the stream never updates or deletes. Run ALTER PUBLICATION {publication} SET (publish_via_partition_root = true) (as the tables' owner), or list the partitions in `tables` instead")]
    /// `publication` and `tables` are quoted identifiers, ready for the statement.
    PartitionsPublished { publication: String, tables: String },
    #[error("publication {publication:?} publishes only some columns of table {table}, without its key column(s) {columns}: copies read a table in key order and events are keyed by it. Add the key columns to the publication's column list")]
    KeyNotPublished {
        publication: String,
        table: String,
        columns: String,
    },
    #[error("replication slot {slot:?} does not exist, but checkpoint {checkpoint} is stored: the changes since then cannot be read any more. To start over with a new snapshot, run `cdc-bridge checkpoints reset --config FILE --pipeline NAME`")]
    SlotMissing { slot: String, checkpoint: String },
    /// Another session created the slot between this run's look and its own create: another
    /// copy of the pipeline starting (two instances during a takeover). The next attempt
    /// finds the slot and decides again.
    #[error("replication slot {slot:?} was created by another session while this run was creating it (another copy of this pipeline starting, e.g. on another instance during a takeover); retrying")]
    SlotCreatedConcurrently { slot: String },
    #[error("replication slot {slot:?} was invalidated (wal_status = lost; max_slot_wal_keep_size exceeded?): the changes it held are gone. Drop it with SELECT pg_drop_replication_slot('{slot}') and reset this pipeline's checkpoints to take a new snapshot")]
    SlotInvalidated { slot: String },
    #[error("replication slot {slot:?} has confirmed changes up to {confirmed}, beyond the stored checkpoint {checkpoint}: the changes in between were acknowledged to PostgreSQL but never delivered (did another client use this slot?). To start over: drop the slot and reset this pipeline's checkpoints")]
    SlotAhead {
        slot: String,
        confirmed: String,
        checkpoint: String,
    },
    #[error(
        "the stored checkpoint {0:?} is not a PostgreSQL LSN; reset this pipeline's checkpoints"
    )]
    BadCheckpoint(String),
    #[error("{0}; reset this pipeline's checkpoints")]
    BadProgress(String),
    /// A snapshot request that cannot be served, with the reason and the fix.
    #[error("{0}")]
    SnapshotRequest(String),
    #[error("unexpected replication protocol data: {0}")]
    Protocol(String),
    #[error("the server announced a message of {len} bytes (type {tag:?}), more than the {max} bytes PostgreSQL can send in one message; refusing it (corrupted stream, or not a PostgreSQL server?)")]
    MessageTooLarge { tag: char, len: usize, max: usize },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("the server asks for the password in cleartext over an unencrypted connection; refused. Connect with TLS (sslmode=prefer, require, verify-ca or verify-full, and ssl = on in the server), or change the method in pg_hba.conf to scram-sha-256, or set allow_cleartext_password = true in the source to accept the risk")]
    CleartextPassword,
    #[error("cannot spill a large transaction to disk")]
    Spill(#[source] std::io::Error),
}

impl PostgresError {
    /// A read error; the cleartext guard's refusal becomes [`PostgresError::CleartextPassword`].
    pub fn from_io(err: std::io::Error) -> Self {
        if super::transport::is_cleartext_refusal(&err) {
            PostgresError::CleartextPassword
        } else {
            PostgresError::Io(err)
        }
    }

    pub fn sql(context: impl Into<String>, source: tokio_postgres::Error) -> Self {
        PostgresError::Sql {
            context: context.into(),
            source,
        }
    }
}

/// Transient for connection, shutdown, resource and lock-conflict errors; fatal for errors
/// the operator must fix (authentication, privileges, missing objects, bad settings).
fn disposition_of_sqlstate(code: &str) -> Disposition {
    let transient_class = ["08", "53", "57", "40", "58"]
        .iter()
        .any(|class| code.starts_with(class));
    if transient_class || code == "55006" || code == "55P03" {
        Disposition::Transient
    } else {
        Disposition::Fatal
    }
}

impl PostgresError {
    /// What a failed `CREATE_REPLICATION_SLOT` of `slot` means: a slot that already exists
    /// (SQLSTATE 42710) was created concurrently, which a retry resolves.
    pub fn of_slot_creation(self, slot: &str) -> Self {
        match self {
            PostgresError::Server(err) if err.code == "42710" => {
                PostgresError::SlotCreatedConcurrently {
                    slot: slot.to_owned(),
                }
            }
            other => other,
        }
    }
}

impl ConnectorError for PostgresError {
    fn disposition(&self) -> Disposition {
        match self {
            PostgresError::Connect { .. }
            | PostgresError::Io(_)
            | PostgresError::Spill(_)
            | PostgresError::SlotCreatedConcurrently { .. } => Disposition::Transient,
            PostgresError::Server(err) => disposition_of_sqlstate(&err.code),
            PostgresError::Sql { source, .. } => match source.code() {
                Some(code) => disposition_of_sqlstate(code.code()),
                None => Disposition::Transient,
            },
            PostgresError::Auth(_)
            | PostgresError::WalLevel { .. }
            | PostgresError::NoReplication { .. }
            | PostgresError::MissingTables { .. }
            | PostgresError::Unpublished { .. }
            | PostgresError::PartitionsPublished { .. }
            | PostgresError::KeyNotPublished { .. }
            | PostgresError::SlotMissing { .. }
            | PostgresError::SlotInvalidated { .. }
            | PostgresError::SlotAhead { .. }
            | PostgresError::BadCheckpoint(_)
            | PostgresError::BadProgress(_)
            | PostgresError::SnapshotRequest(_)
            | PostgresError::Tls(_)
            | PostgresError::CleartextPassword
            | PostgresError::Protocol(_)
            | PostgresError::MessageTooLarge { .. } => Disposition::Fatal,
        }
    }
}

impl From<PostgresError> for crate::source::Halt<PostgresError> {
    fn from(err: PostgresError) -> Self {
        crate::source::Halt::Failed(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str) -> PostgresError {
        PostgresError::Server(ServerError {
            severity: "ERROR".into(),
            code: code.into(),
            message: "replication slot \"s\" already exists".into(),
            detail: None,
            hint: None,
        })
    }

    /// Two copies of a pipeline starting at once (a takeover right after a start) both find
    /// no slot and both create it: the loser's run is retried, not stopped for good.
    #[test]
    fn a_slot_created_concurrently_is_transient_and_other_creation_errors_keep_theirs() {
        let raced = server("42710").of_slot_creation("s");
        assert!(matches!(&raced, PostgresError::SlotCreatedConcurrently { slot } if slot == "s"));
        assert_eq!(raced.disposition(), Disposition::Transient);
        assert_eq!(
            server("42710").disposition(),
            Disposition::Fatal,
            "elsewhere unchanged"
        );
        let other = server("42501").of_slot_creation("s");
        assert!(matches!(other, PostgresError::Server(_)));
    }
}
