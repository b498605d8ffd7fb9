//! `kind = "postgres"` settings.

use std::num::NonZeroU32;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{ConfigError, Secret};

pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 10_000;
pub const DEFAULT_STATUS_INTERVAL_MS: u64 = 10_000;
pub const DEFAULT_SNAPSHOT_CHUNK_ROWS: u32 = 10_000;
pub const DEFAULT_STREAM_MEMORY_BYTES: usize = 8 * 1024 * 1024;

pub use crate::source::SnapshotMode;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/dbname?sslmode=verify-full&sslrootcert=ca.pem`;
    /// use `${VAR}` for the password. Never logged.
    pub url: Secret,
    /// Send the password when the server asks for it in cleartext (pg_hba.conf method
    /// `password`) over an unencrypted connection. Off: such a login is refused.
    #[serde(default)]
    pub allow_cleartext_password: bool,
    /// Logical replication slot, created when missing.
    pub slot: String,
    /// Publication, created for `tables` when missing; an existing one is used as it is.
    pub publication: String,
    /// `schema.table` names to capture.
    pub tables: Vec<String>,
    #[serde(default)]
    pub snapshot: SnapshotMode,
    /// Emit a heartbeat message this often so an idle database's slot keeps moving; 0: off.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_interval_ms: u64,
    /// Send a standby status update at least this often.
    #[serde(default = "default_status")]
    pub status_interval_ms: u64,
    /// Rows fetched per round trip during the snapshot (streamed: memory follows the buffer's
    /// byte budget, not this count).
    #[serde(default = "default_chunk")]
    pub snapshot_chunk_rows: NonZeroU32,
    /// Workers copying tables at once in the first run's snapshot, each on its own connection
    /// inside the exported snapshot; a large table is split into one key range per worker.
    #[serde(default = "default_parallelism")]
    pub snapshot_parallelism: NonZeroU32,
    /// Bytes of a streamed in-progress transaction kept in memory before spilling to disk.
    #[serde(default = "default_stream_memory")]
    pub stream_memory_bytes: usize,
    /// Where spilled transactions go (deleted when done); default: the system temp dir.
    #[serde(default)]
    pub spill_dir: Option<PathBuf>,
}

fn default_heartbeat() -> u64 {
    DEFAULT_HEARTBEAT_INTERVAL_MS
}

fn default_status() -> u64 {
    DEFAULT_STATUS_INTERVAL_MS
}

fn default_chunk() -> NonZeroU32 {
    NonZeroU32::new(DEFAULT_SNAPSHOT_CHUNK_ROWS).expect("nonzero")
}

fn default_parallelism() -> NonZeroU32 {
    NonZeroU32::MIN
}

fn default_stream_memory() -> usize {
    DEFAULT_STREAM_MEMORY_BYTES
}

/// A table to capture.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    pub schema: String,
    pub table: String,
}

impl TableName {
    /// `"schema"."table"`, quoted for SQL.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table))
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

impl PostgresConfig {
    /// Checks what serde cannot; `key` is the section's key path.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let (url, _tls) = super::tls::split_url(self.url.expose())
            .map_err(|e| ConfigError::invalid(format!("{key}.url"), e))?;
        let parsed: tokio_postgres::Config = url.parse().map_err(|e| {
            ConfigError::invalid(
                format!("{key}.url"),
                format!("not a PostgreSQL connection URL: {e}"),
            )
        })?;
        if parsed.get_user().is_none() {
            return Err(ConfigError::invalid(format!("{key}.url"), "names no user"));
        }
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if !name_ok(&self.slot) {
            return Err(ConfigError::invalid(
                format!("{key}.slot"),
                "use 1-63 lower-case letters, digits or `_`",
            ));
        }
        if self.publication.is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.publication"),
                "must not be empty",
            ));
        }
        if self.tables.is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.tables"),
                "list at least one `schema.table`",
            ));
        }
        for (i, table) in self.tables.iter().enumerate() {
            if parse_table(table).is_none() {
                return Err(ConfigError::invalid(
                    format!("{key}.tables[{i}]"),
                    format!("{table:?} is not `schema.table`"),
                ));
            }
        }
        Ok(())
    }

    /// How this source's connections appear in `pg_stat_activity`.
    pub fn application_name(&self) -> String {
        format!("cdc-bridge {}", self.slot)
    }

    pub fn table_names(&self) -> Vec<TableName> {
        self.tables.iter().filter_map(|t| parse_table(t)).collect()
    }
}

fn parse_table(text: &str) -> Option<TableName> {
    let (schema, table) = text.split_once('.')?;
    (!schema.is_empty() && !table.is_empty() && !table.contains('.')).then(|| TableName {
        schema: schema.to_owned(),
        table: table.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Result<PostgresConfig, String> {
        let text = format!(
            "url = \"postgres://cdc:pw@127.0.0.1:5432/app\"\nslot = \"s1\"\npublication = \"p\"\ntables = [\"public.orders\"]\n{extra}"
        );
        let config: PostgresConfig = toml::from_str(&text).map_err(|e| e.to_string())?;
        config
            .validate("pipeline[0].source")
            .map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn validates_names_tables_and_url() {
        assert!(config("").is_ok());
        assert_eq!(config("").unwrap().snapshot, SnapshotMode::Initial);
        let bad_slot = toml::from_str::<PostgresConfig>("url = \"postgres://u@h/d\"\nslot = \"Bad-Slot\"\npublication = \"p\"\ntables = [\"a.b\"]").unwrap();
        assert_eq!(
            bad_slot.validate("k").unwrap_err().to_string(),
            "k.slot: use 1-63 lower-case letters, digits or `_`"
        );
        let bad_table = toml::from_str::<PostgresConfig>("url = \"postgres://u@h/d\"\nslot = \"s\"\npublication = \"p\"\ntables = [\"a.b\", \"orders\"]").unwrap();
        assert!(bad_table
            .validate("k")
            .unwrap_err()
            .to_string()
            .starts_with("k.tables[1]: "));
        let tls = toml::from_str::<PostgresConfig>("url = \"postgres://u@h/d?sslmode=allow\"\nslot = \"s\"\npublication = \"p\"\ntables = [\"a.b\"]").unwrap();
        assert_eq!(
            tls.validate("k").unwrap_err().to_string(),
            "k.url: sslmode=allow is not supported; use disable, prefer, require, verify-ca or verify-full"
        );
    }

    #[test]
    fn debug_output_hides_the_url() {
        let debug = format!("{:?}", config("").unwrap());
        assert!(!debug.contains("pw@"), "{debug}");
    }
}
