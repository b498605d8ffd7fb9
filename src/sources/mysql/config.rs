//! `kind = "mysql"` settings (MySQL 8 and MariaDB; the flavor is detected).

use serde::Deserialize;

use super::position::BinlogPosition;
use crate::config::{ConfigError, Secret};

pub use crate::source::SnapshotMode;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlConfig {
    /// `mysql://user:password@host:port/database[?ssl-mode=VERIFY_IDENTITY&ssl-ca=/ca.pem]`.
    pub url: Secret,
    /// This client's server id among the server's replicas: unique per pipeline.
    #[serde(default = "default_server_id")]
    pub server_id: u32,
    /// `database.table` or `database.*`.
    pub tables: Vec<String>,
    #[serde(default)]
    pub snapshot: SnapshotMode,
    /// Where a pipeline without a checkpoint starts (needs `snapshot = "never"`): `file:pos`,
    /// a MariaDB GTID list or a MySQL GTID set. Default: the server's current position.
    #[serde(default)]
    pub start_position: Option<String>,
    /// How a restart finds its place: by the stored GTID state when there is one (MariaDB
    /// always; MySQL with gtid_mode = ON), or by binlog file and offset.
    #[serde(default)]
    pub resume_by: ResumeBy,
    /// Rows per chunk of a table's copy (its progress is stored after each chunk).
    #[serde(default = "default_chunk")]
    pub snapshot_chunk_rows: std::num::NonZeroU32,
    /// Workers copying tables at once in the first run's snapshot, each on its own connection
    /// in a consistent snapshot of its own (see the README on how their positions line up).
    #[serde(default = "default_parallelism")]
    pub snapshot_parallelism: std::num::NonZeroU32,
    /// `database.table` that `cdc-bridge snapshot` writes requests into (MariaDB; columns
    /// `pipeline` and `tables`, see the README). None: requests are refused.
    #[serde(default)]
    pub signal_table: Option<String>,
}

fn default_chunk() -> std::num::NonZeroU32 {
    std::num::NonZeroU32::new(10_000).expect("nonzero")
}

fn default_parallelism() -> std::num::NonZeroU32 {
    std::num::NonZeroU32::MIN
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResumeBy {
    #[default]
    Gtid,
    File,
}

fn default_server_id() -> u32 {
    5400
}

/// Which tables a pipeline captures.
#[derive(Debug, Clone)]
pub struct TableFilter(Vec<(String, Option<String>)>, Option<(String, String)>);

impl TableFilter {
    /// Whether `database.table` is the signal table (`signal_table`).
    pub fn signals(&self, database: &str, table: &str) -> bool {
        self.1
            .as_ref()
            .is_some_and(|(d, t)| d == database && t == table)
    }

    pub fn matches(&self, database: &str, table: &str) -> bool {
        self.0
            .iter()
            .any(|(db, t)| db == database && t.as_deref().is_none_or(|t| t == table))
    }
}

impl MysqlConfig {
    /// The databases the source reads changes of: those of `tables` (the part before the dot
    /// of each entry) and the signal table's, in order, each once.
    pub fn databases(&self) -> Vec<&str> {
        let mut databases: Vec<&str> = Vec::new();
        let signal = self.signal_table.as_deref();
        let entries = self.tables.iter().map(String::as_str).chain(signal);
        for db in entries.filter_map(|t| t.split_once('.')).map(|(db, _)| db) {
            if !databases.contains(&db) {
                databases.push(db);
            }
        }
        databases
    }

    pub fn validate(&self, key: &str) -> Result<TableFilter, ConfigError> {
        if !self.url.expose().starts_with("mysql://") {
            return Err(ConfigError::invalid(
                format!("{key}.url"),
                "must start with mysql://",
            ));
        }
        if let Err(reason) = super::tls::split_url(self.url.expose()) {
            return Err(ConfigError::invalid(format!("{key}.url"), reason));
        }
        if self.server_id == 0 {
            return Err(ConfigError::invalid(
                format!("{key}.server_id"),
                "must not be 0 (a replica needs an id)",
            ));
        }
        if self.tables.is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.tables"),
                "list at least one database.table or database.*",
            ));
        }
        let mut filter = Vec::new();
        for (i, entry) in self.tables.iter().enumerate() {
            let Some((db, table)) = entry
                .split_once('.')
                .filter(|(d, t)| !d.is_empty() && !t.is_empty())
            else {
                return Err(ConfigError::invalid(
                    format!("{key}.tables[{i}]"),
                    "write database.table or database.*",
                ));
            };
            filter.push((db.to_owned(), (table != "*").then(|| table.to_owned())));
        }
        if let Some(signal) = &self.signal_table {
            if self.signal_table_name().is_none() {
                return Err(ConfigError::invalid(
                    format!("{key}.signal_table"),
                    format!("{signal:?}: write database.table"),
                ));
            }
        }
        let field = format!("{key}.start_position");
        if let Some(start) = self
            .start()
            .map_err(|reason| ConfigError::invalid(field.clone(), reason))?
        {
            if self.snapshot != SnapshotMode::Never {
                return Err(ConfigError::invalid(
                    field,
                    "needs snapshot = \"never\" (a snapshot starts at its own position)",
                ));
            }
            if start.file.is_empty() && self.resume_by == ResumeBy::File {
                return Err(ConfigError::invalid(
                    field,
                    "is a GTID state but resume_by = \"file\": give file:pos, or resume by gtid",
                ));
            }
        }
        let signal = self
            .signal_table_name()
            .map(|(d, t)| (d.to_owned(), t.to_owned()));
        Ok(TableFilter(filter, signal))
    }

    /// The signal table as (database, table).
    pub fn signal_table_name(&self) -> Option<(&str, &str)> {
        self.signal_table
            .as_deref()?
            .split_once('.')
            .filter(|(d, t)| !d.is_empty() && !t.is_empty() && !t.contains('.'))
    }

    /// The configured start position, parsed.
    pub fn start(&self) -> Result<Option<BinlogPosition>, String> {
        self.start_position
            .as_deref()
            .map(BinlogPosition::parse_start)
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TableFilter, String> {
        let config: MysqlConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate("s").map_err(|e| e.to_string())
    }

    #[test]
    fn tables_and_snapshot() {
        let base = "url = \"mysql://u:p@h/app\"\nsnapshot = \"never\"\n";
        let filter = parse(&format!("{base}tables = [\"app.orders\", \"shop.*\"]")).unwrap();
        assert!(filter.matches("app", "orders") && filter.matches("shop", "x"));
        assert!(!filter.matches("app", "other"));
        assert!(parse(&format!("{base}tables = [\"orders\"]"))
            .unwrap_err()
            .starts_with("s.tables[0]"));
        assert!(
            parse("url = \"mysql://u:p@h/app\"\ntables = [\"a.b\"]\nsnapshot = \"always\"")
                .unwrap_err()
                .contains("unknown variant `always`")
        );
    }

    #[test]
    fn start_position_is_checked() {
        let base = "url = \"mysql://u:p@h/app\"\ntables = [\"a.b\"]\n";
        assert!(parse(&format!(
            "{base}snapshot = \"never\"\nstart_position = \"0-1-5\""
        ))
        .is_ok());
        assert!(parse(&format!(
            "{base}snapshot = \"never\"\nstart_position = \"bin.000001:4\"\nresume_by = \"file\""
        ))
        .is_ok());
        let err = parse(&format!("{base}start_position = \"0-1-5\"")).unwrap_err();
        assert!(
            err.starts_with("s.start_position") && err.contains("snapshot"),
            "{err}"
        );
        let err = parse(&format!(
            "{base}snapshot = \"never\"\nstart_position = \"0-1-5\"\nresume_by = \"file\""
        ))
        .unwrap_err();
        assert!(err.contains("resume_by"), "{err}");
        let err = parse(&format!(
            "{base}snapshot = \"never\"\nstart_position = \"soon\""
        ))
        .unwrap_err();
        assert!(
            err.starts_with("s.start_position") && err.contains("file:pos"),
            "{err}"
        );
    }
}
