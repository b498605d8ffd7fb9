//! The publication the slot decodes through: created for the configured tables when missing,
//! and checked before every run, because what it leaves out is never streamed.
//!
//! A table of `tables` the publication does not publish under its own name would be copied by
//! the snapshot and then never streamed: its changes would be lost without a word. Two cases:
//! - the table is not in the publication at all;
//! - the table is partitioned and the publication publishes each partition's changes under the
//!   partition's name (`publish_via_partition_root = false`, PostgreSQL's default), while the
//!   copy reads the table under its own: a consumer would keep copied rows the stream never
//!   updates or deletes.
//!
//! Both stop the pipeline with the statement that fixes them ([`PostgresError::Unpublished`],
//! [`PostgresError::PartitionsPublished`]). An operation the publication leaves out (`publish =
//! 'insert'`, for example) is the operator's choice and only warned about. A publication
//! created here publishes partitions under their root's name.
//!
//! What the publication publishes of a table is also what its copies read ([`published`]):
//! since PostgreSQL 15 a publication may publish some columns only, and only the rows its
//! filter lets through. A copy of every column and row would hand the consumer what the
//! operator chose to keep from it (a column of personal data, another tenant's rows).

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::config::{quote_ident, TableName};
use super::error::PostgresError;

/// What a publication does with the configured tables.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Tables it does not publish at all.
    pub missing: Vec<TableName>,
    /// Partitioned tables whose partitions it publishes under their own names.
    pub by_partition: Vec<TableName>,
    /// Row operations it does not publish (`insert`, `update`, `delete`, `truncate`).
    pub skipped: Vec<&'static str>,
}

impl Coverage {
    /// The error that stops a pipeline reading through `publication`, if any.
    pub fn require(&self, publication: &str) -> Result<(), PostgresError> {
        let names = |tables: &[TableName]| {
            tables
                .iter()
                .map(TableName::quoted)
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.missing.is_empty() {
            return Err(PostgresError::Unpublished {
                publication: quote_ident(publication),
                tables: names(&self.missing),
            });
        }
        if !self.by_partition.is_empty() {
            return Err(PostgresError::PartitionsPublished {
                publication: quote_ident(publication),
                tables: names(&self.by_partition),
            });
        }
        Ok(())
    }

    /// The warning about left-out operations, if any.
    pub fn skipped_warning(&self, publication: &str) -> Option<String> {
        (!self.skipped.is_empty()).then(|| {
            format!(
                "publication {publication} does not publish {}: those changes are not streamed (ALTER PUBLICATION {} SET (publish = 'insert, update, delete, truncate') to stream them)",
                self.skipped.join(", "),
                quote_ident(publication)
            )
        })
    }
}

/// What a publication publishes of one table; a copy reads the same.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// The published columns; `None`: every column.
    pub columns: Option<Vec<String>>,
    /// The row filter: an SQL condition on the table's columns.
    pub rows: Option<String>,
}

/// What publication `name` publishes of table `oid`: everything before PostgreSQL 15, which
/// has neither column lists nor row filters. The view's row is read whole as JSON, so the one
/// query works on every version: naming PostgreSQL 15's columns would fail on 14 and abort the
/// copy's transaction.
pub async fn published(client: &Client, name: &str, oid: u32) -> Result<Published, PostgresError> {
    let row = client
        .query_opt(
            "SELECT row_to_json(p)::text FROM pg_publication_tables p \
             JOIN pg_namespace n ON n.nspname = p.schemaname \
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename \
             WHERE p.pubname = $1 AND c.oid = $2::oid",
            &[&name, &oid],
        )
        .await
        .map_err(|e| PostgresError::sql("looking up what the publication publishes", e))?;
    let Some(row) = row else {
        return Ok(Published::default());
    };
    let text: String = row.get(0);
    let view: PublishedRow = serde_json::from_str(&text).map_err(|e| {
        PostgresError::Protocol(format!(
            "unexpected pg_publication_tables row {text:?}: {e}"
        ))
    })?;
    Ok(Published {
        columns: view.attnames,
        rows: view.rowfilter,
    })
}

/// The columns of a `pg_publication_tables` row that say what it publishes (absent before
/// PostgreSQL 15).
#[derive(serde::Deserialize)]
struct PublishedRow {
    #[serde(default)]
    attnames: Option<Vec<String>>,
    #[serde(default)]
    rowfilter: Option<String>,
}

/// Creates the publication for `tables` unless it exists (an existing one is used as it is,
/// then checked by [`coverage`]). Partitions publish under their root's name.
pub async fn ensure(
    client: &Client,
    name: &str,
    tables: &[TableName],
) -> Result<(), PostgresError> {
    let exists = client
        .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])
        .await
        .map_err(|e| PostgresError::sql("looking up the publication", e))?
        .is_some();
    if exists {
        return Ok(());
    }
    let list: Vec<_> = tables.iter().map(TableName::quoted).collect();
    let sql = format!(
        "CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true)",
        quote_ident(name),
        list.join(", ")
    );
    match client.batch_execute(&sql).await {
        Ok(()) => {
            tracing::info!(publication = name, tables = %list.join(", "), "created publication");
            Ok(())
        }
        // Another pipeline sharing the publication created it since the lookup: use it.
        Err(e)
            if e.code() == Some(&SqlState::UNIQUE_VIOLATION)
                || e.code() == Some(&SqlState::DUPLICATE_OBJECT) =>
        {
            Ok(())
        }
        Err(e) => Err(PostgresError::sql(format!("creating publication {name} (the role must own the tables; or create it as their owner, see migrations/postgres/)"), e)),
    }
}

/// What publication `name` publishes of `tables` (which exist); `None` when it does not exist.
pub async fn coverage(
    client: &Client,
    name: &str,
    tables: &[TableName],
) -> Result<Option<Coverage>, PostgresError> {
    let sql_err = |e| PostgresError::sql("looking up the publication's tables", e);
    let Some(flags) = client
        .query_opt(
            "SELECT pubinsert, pubupdate, pubdelete, pubtruncate, pubviaroot FROM pg_publication WHERE pubname = $1",
            &[&name],
        )
        .await
        .map_err(sql_err)?
    else {
        return Ok(None);
    };
    let via_root: bool = flags.get(4);
    let mut coverage = Coverage::default();
    for (index, operation) in ["insert", "update", "delete", "truncate"]
        .into_iter()
        .enumerate()
    {
        if !flags.get::<_, bool>(index) {
            coverage.skipped.push(operation);
        }
    }
    for table in tables {
        let row = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_publication_tables \
                                 WHERE pubname = $1 AND schemaname = $2 AND tablename = $3), \
                        EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                                 WHERE n.nspname = $2 AND c.relname = $3 AND c.relkind = 'p')",
                &[&name, &table.schema, &table.table],
            )
            .await
            .map_err(sql_err)?;
        let (published, partitioned): (bool, bool) = (row.get(0), row.get(1));
        if published {
            continue;
        }
        // Without publish_via_partition_root a partitioned table is never listed under its
        // own name, whatever the publication holds: that setting is the fix to name first.
        if partitioned && !via_root {
            coverage.by_partition.push(table.clone());
        } else {
            coverage.missing.push(table.clone());
        }
    }
    Ok(Some(coverage))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str) -> TableName {
        TableName {
            schema: "app".into(),
            table: name.into(),
        }
    }

    #[test]
    fn a_missing_table_comes_before_partitions_and_names_the_statement_to_run() {
        let coverage = Coverage {
            missing: vec![table("a")],
            by_partition: vec![table("p")],
            skipped: vec![],
        };
        let err = coverage.require("pub").unwrap_err().to_string();
        assert!(err.contains("\"app\".\"a\""), "{err}");
        assert!(
            err.contains("ALTER PUBLICATION \"pub\" ADD TABLE \"app\".\"a\""),
            "{err}"
        );

        let partitions = Coverage {
            by_partition: vec![table("p")],
            ..Coverage::default()
        };
        let err = partitions.require("pub").unwrap_err().to_string();
        assert!(
            err.contains("ALTER PUBLICATION \"pub\" SET (publish_via_partition_root = true)"),
            "{err}"
        );
        assert!(Coverage::default().require("pub").is_ok());
    }

    #[test]
    fn skipped_operations_are_a_warning_only() {
        let coverage = Coverage {
            skipped: vec!["update", "delete"],
            ..Coverage::default()
        };
        assert!(coverage.require("pub").is_ok());
        let warning = coverage.skipped_warning("pub").unwrap();
        assert!(
            warning.contains("does not publish update, delete"),
            "{warning}"
        );
        assert_eq!(Coverage::default().skipped_warning("pub"), None);
    }

    /// PostgreSQL 14's view has no `attnames` or `rowfilter`: everything is published.
    #[test]
    fn a_view_row_without_column_lists_publishes_everything() {
        let v14: PublishedRow =
            serde_json::from_str(r#"{"pubname":"p","schemaname":"s","tablename":"t"}"#).unwrap();
        assert_eq!((v14.attnames, v14.rowfilter), (None, None));
        let v15: PublishedRow = serde_json::from_str(
            r#"{"pubname":"p","schemaname":"s","tablename":"t","attnames":["id","v"],"rowfilter":"(v > 1)"}"#,
        )
        .unwrap();
        assert_eq!(v15.attnames, Some(vec!["id".to_owned(), "v".to_owned()]));
        assert_eq!(v15.rowfilter.as_deref(), Some("(v > 1)"));
    }
}
