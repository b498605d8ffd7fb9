//! `kind = "mysql"` settings (MySQL 8 and MariaDB; the flavor is detected).

use serde::Deserialize;

use crate::config::{ConfigError, Secret};

pub use crate::source::SnapshotMode;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlConfig {
    /// `mysql://user:password@host:port/database`.
    pub url: Secret,
    /// This client's server id among the server's replicas: unique per pipeline.
    #[serde(default = "default_server_id")]
    pub server_id: u32,
    /// `database.table` or `database.*`.
    pub tables: Vec<String>,
    #[serde(default)]
    pub snapshot: SnapshotMode,
}

fn default_server_id() -> u32 {
    5400
}

/// Which tables a pipeline captures.
#[derive(Debug, Clone)]
pub struct TableFilter(Vec<(String, Option<String>)>);

impl TableFilter {
    pub fn matches(&self, database: &str, table: &str) -> bool {
        self.0
            .iter()
            .any(|(db, t)| db == database && t.as_deref().is_none_or(|t| t == table))
    }
}

impl MysqlConfig {
    pub fn validate(&self, key: &str) -> Result<TableFilter, ConfigError> {
        if !self.url.expose().starts_with("mysql://") {
            return Err(ConfigError::invalid(
                format!("{key}.url"),
                "must start with mysql://",
            ));
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
        Ok(TableFilter(filter))
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
}
