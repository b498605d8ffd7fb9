//! Table shapes from information_schema, for binlogs without column names
//! (`binlog_row_metadata` MINIMAL or NO_LOG, MariaDB's default).
//!
//! The catalog describes each table as it is now, not as it was when an event was written;
//! [`table::shape_from_catalog`] refuses an event whose columns no longer fit, and every DDL
//! statement in the binlog empties the cache so the next event reads the catalog again. The
//! lookup connection is opened on first use.
//!
//! The row decoders built from the shapes ([`TableRows`]) are kept per table id, from the
//! first rows event after a TABLE_MAP until the next TABLE_MAP of that id or a DDL statement.

use std::collections::HashMap;
use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use mysql_common::binlog::events::TableMapEvent;

use super::config::MysqlConfig;
use super::decode::TableRows;
use super::error::MysqlError;
use super::table::{self, CatalogColumn, TableShape};
use super::{connect, sql};

/// Columns in order and primary-key indexes, per (database, table).
type Entry = (Vec<CatalogColumn>, Vec<usize>);

pub struct Catalog {
    config: MysqlConfig,
    conn: Option<Conn>,
    tables: HashMap<(String, String), Entry>,
    /// MariaDB JSON columns of tables whose shape came from the binlog's own metadata.
    json: HashMap<(String, String), Vec<String>>,
    decoders: HashMap<u64, Arc<TableRows>>,
}

/// More table ids than this in the decoder cache (ids grow with every table definition the
/// server loads): the cache starts again.
const MAX_DECODERS: usize = 10_000;

impl Catalog {
    pub fn new(config: &MysqlConfig) -> Self {
        Catalog {
            config: config.clone(),
            conn: None,
            tables: HashMap::new(),
            json: HashMap::new(),
            decoders: HashMap::new(),
        }
    }

    /// The row decoder for `tme`'s table: the one built since its last TABLE_MAP, else a new
    /// one from [`Catalog::shape`]. `Err(reason)` is a data error for the caller to place.
    pub async fn rows(
        &mut self,
        tme: &TableMapEvent<'_>,
    ) -> Result<Result<Arc<TableRows>, String>, MysqlError> {
        if let Some(rows) = self.decoders.get(&tme.table_id()) {
            return Ok(Ok(rows.clone()));
        }
        let shape = match self.shape(tme).await? {
            Ok(shape) => shape,
            Err(reason) => return Ok(Err(reason)),
        };
        if self.decoders.len() >= MAX_DECODERS {
            self.decoders.clear();
        }
        let rows = Arc::new(TableRows::new(shape, tme));
        self.decoders.insert(tme.table_id(), rows.clone());
        Ok(Ok(rows))
    }

    /// A TABLE_MAP for `table_id` went by: its rows are decoded by the new map.
    pub fn table_mapped(&mut self, table_id: u64) {
        self.decoders.remove(&table_id);
    }

    /// The shape of `tme`'s table: from the event's metadata when it has column names, else
    /// from the catalog. `Err(reason)` is a data error for the caller to place.
    pub async fn shape(
        &mut self,
        tme: &TableMapEvent<'_>,
    ) -> Result<Result<TableShape, String>, MysqlError> {
        let name = (
            tme.database_name().into_owned(),
            tme.table_name().into_owned(),
        );
        match table::shape(tme) {
            Ok(Some(mut shape)) => {
                // The binlog's metadata does not say which text columns are MariaDB JSON.
                if shape.may_hold_json() {
                    if !self.json.contains_key(&name) {
                        let columns = json_columns(self.conn().await?, &name.0, &name.1).await?;
                        self.json.insert(name.clone(), columns);
                    }
                    shape.mark_json(&self.json[&name]);
                }
                return Ok(Ok(shape));
            }
            Ok(None) => {}
            Err(reason) => return Ok(Err(reason)),
        }
        if !self.tables.contains_key(&name) {
            let entry = self.read(&name.0, &name.1).await?;
            self.tables.insert(name.clone(), entry);
        }
        let (columns, key) = &self.tables[&name];
        Ok(table::shape_from_catalog(tme, columns, key))
    }

    /// A schema change went by: read every table again when next needed.
    pub fn forget(&mut self) {
        self.tables.clear();
        self.json.clear();
        self.decoders.clear();
    }

    async fn conn(&mut self) -> Result<&mut Conn, MysqlError> {
        if self.conn.is_none() {
            self.conn = Some(connect(&self.config).await?);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    async fn read(&mut self, database: &str, table: &str) -> Result<Entry, MysqlError> {
        let entry = columns_of(self.conn().await?, database, table).await?;
        tracing::debug!(table = %format!("{database}.{table}"), columns = entry.0.len(), "shape read from information_schema");
        Ok(entry)
    }
}

/// The columns of `database.table` in order, and the indexes of its primary key, as
/// information_schema describes the table now.
pub async fn columns_of(conn: &mut Conn, database: &str, table: &str) -> Result<Entry, MysqlError> {
    let rows: Vec<(String, String, Option<String>, String, String)> = conn
        .exec(
            "SELECT COLUMN_NAME, COLUMN_TYPE, CHARACTER_SET_NAME, DATA_TYPE, COLUMN_KEY \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
             ORDER BY ORDINAL_POSITION",
            (database, table),
        )
        .await
        .map_err(sql("reading a table's columns from information_schema"))?;
    let key_names: Vec<String> = conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
             WHERE CONSTRAINT_NAME = 'PRIMARY' AND TABLE_SCHEMA = ? AND TABLE_NAME = ? \
             ORDER BY ORDINAL_POSITION",
            (database, table),
        )
        .await
        .map_err(sql("reading a table's primary key from information_schema"))?;
    // Only a LONGTEXT may be MariaDB's JSON: the check constraints are read only then.
    let may_hold_json = rows
        .iter()
        .any(|(_, _, _, data_type, _)| data_type.eq_ignore_ascii_case("longtext"));
    let mut columns: Vec<CatalogColumn> = rows
        .into_iter()
        .map(|(name, column_type, charset, data_type, _)| {
            catalog_column(name, &column_type, charset, &data_type)
        })
        .collect();
    if may_hold_json {
        let json = json_columns(conn, database, table).await?;
        for column in &mut columns {
            column.json = json.contains(&column.name);
        }
    }
    let key = key_names
        .iter()
        .filter_map(|k| columns.iter().position(|c| &c.name == k))
        .collect();
    Ok((columns, key))
}

/// One information_schema.COLUMNS row as a column description.
fn catalog_column(
    name: String,
    column_type: &str,
    charset: Option<String>,
    data_type: &str,
) -> CatalogColumn {
    let lower = column_type.to_ascii_lowercase();
    let binary_types = [
        "binary",
        "varbinary",
        "tinyblob",
        "blob",
        "mediumblob",
        "longblob",
    ];
    CatalogColumn {
        name,
        unsigned: lower.contains(" unsigned"),
        binary: charset.is_none()
            && binary_types.contains(&data_type.to_ascii_lowercase().as_str()),
        latin1: charset.as_deref() == Some("latin1"),
        labels: if lower.starts_with("enum(") || lower.starts_with("set(") {
            labels(column_type)
        } else {
            Vec::new()
        },
        // Set from the table's check constraints (`json_columns`).
        json: false,
    }
}

/// The columns of `database.table` that a `json_valid(column)` check constrains: MariaDB's
/// JSON columns (a LONGTEXT alias). MySQL's JSON is a type of its own and has none. Works on
/// both: CHECK_CONSTRAINTS names no table on MySQL, so the table's constraints are found
/// through TABLE_CONSTRAINTS.
pub async fn json_columns(
    conn: &mut Conn,
    database: &str,
    table: &str,
) -> Result<Vec<String>, MysqlError> {
    let clauses: Vec<String> = conn
        .exec(
            "SELECT cc.CHECK_CLAUSE FROM information_schema.TABLE_CONSTRAINTS tc \
             JOIN information_schema.CHECK_CONSTRAINTS cc \
               ON cc.CONSTRAINT_SCHEMA = tc.CONSTRAINT_SCHEMA AND cc.CONSTRAINT_NAME = tc.CONSTRAINT_NAME \
             WHERE tc.CONSTRAINT_TYPE = 'CHECK' AND tc.TABLE_SCHEMA = ? AND tc.TABLE_NAME = ?",
            (database, table),
        )
        .await
        .map_err(sql("reading a table's check constraints from information_schema"))?;
    Ok(clauses
        .iter()
        .filter_map(|c| json_valid_column(c))
        .collect())
}

/// The column of a check clause that is exactly `json_valid(`column`)`.
fn json_valid_column(clause: &str) -> Option<String> {
    let quoted = clause
        .trim()
        .strip_prefix("json_valid(`")?
        .strip_suffix("`)")?;
    if quoted.replace("``", "").contains('`') {
        return None;
    }
    Some(quoted.replace("``", "`"))
}

/// The quoted labels of `enum('a','b''c')` or `set(...)`: `a`, `b'c`.
fn labels(column_type: &str) -> Vec<String> {
    let inner = column_type
        .split_once('(')
        .map(|(_, rest)| rest.strip_suffix(')').unwrap_or(rest))
        .unwrap_or_default();
    let mut labels = Vec::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut label = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    label.push('\'');
                }
                '\'' => break,
                '\\' => {
                    if let Some(escaped) = chars.next() {
                        label.push(escaped);
                    }
                }
                c => label.push(c),
            }
        }
        labels.push(label);
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_types_give_signedness_binaryness_and_labels() {
        let c = catalog_column("n".into(), "int(10) unsigned", None, "int");
        assert!(c.unsigned && !c.binary && c.labels.is_empty());
        let c = catalog_column("b".into(), "varbinary(4)", None, "varbinary");
        assert!(c.binary && !c.unsigned);
        let c = catalog_column("t".into(), "varchar(4)", Some("utf8mb4".into()), "varchar");
        assert!(!c.binary);
        let c = catalog_column(
            "e".into(),
            "enum('small','it''s','a,b')",
            Some("utf8mb4".into()),
            "enum",
        );
        assert_eq!(c.labels, ["small", "it's", "a,b"]);
        let c = catalog_column("s".into(), "set('x','y')", Some("utf8mb4".into()), "set");
        assert_eq!(c.labels, ["x", "y"]);
    }

    #[test]
    fn only_a_json_valid_check_of_one_column_marks_it_json() {
        assert_eq!(
            json_valid_column("json_valid(`doc`)").as_deref(),
            Some("doc")
        );
        assert_eq!(
            json_valid_column("json_valid(`a``b`)").as_deref(),
            Some("a`b")
        );
        assert_eq!(json_valid_column("json_valid(`a`) and `b` > 0"), None);
        assert_eq!(json_valid_column("`a` > 0"), None);
        assert_eq!(
            json_valid_column("json_valid(`a`) or json_valid(`b`)"),
            None
        );
    }
}
