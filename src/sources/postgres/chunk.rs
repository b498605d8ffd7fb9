//! How a table is cut into chunks for its copy, and the query that reads one.
//!
//! A table with a key (primary key, else replica identity index) is read in key order, each
//! chunk the next `chunk_rows` rows after the last key copied (keyset pagination:
//! `WHERE (k1, k2) > ('a', 'b') ORDER BY k1, k2 LIMIT n`, which the key's index serves). The
//! key values go back into the query as literals of their text form, which the server casts to
//! the columns' types. A table without a key is read in ranges of pages (`ctid` ranges, a TID
//! range scan); its chunk boundaries are page numbers. Either way a chunk's end is a position
//! the next chunk starts after, which is what [`TableProgress`] stores.
//!
//! A chunk is read as `COPY (<its query>) TO STDOUT` ([`copy_out`]): the server does a query's
//! work, and each row arrives as one line to split ([`super::copy_text`]).
//!
//! A range of a split table ([`split_points`]) adds its bounds on the first key column to
//! every chunk's query, and the publication's row filter, if it has one, its condition.
//!
//! [`TableProgress`]: crate::source::progress::TableProgress

use tokio_postgres::{Client, CopyOutStream};

use super::array;
use super::catalog;
use super::publication;
use super::value::TypeRegistry;

use super::config::{quote_ident, quote_literal};
use super::error::PostgresError;
use super::table::Relation;
use crate::envelope::Value;
use crate::source::progress::TableProgress;

/// Rows per page assumed to size the page ranges of a keyless table's chunks.
const ROWS_PER_PAGE: u32 = 64;

pub enum Chunking {
    /// In key order; the indexes are the key's columns in the relation.
    Key(Vec<usize>),
    /// In page ranges of this many pages.
    Pages(u64),
}

/// What a copy of table `oid` (`table_sql`, its quoted name) reads through `publication`: the
/// relation of the columns it publishes, and a reader of the rows it publishes in chunks of
/// `chunk_rows`.
pub async fn open(
    client: &Client,
    types: &mut TypeRegistry,
    publication: &str,
    (oid, table_sql): (u32, &str),
    chunk_rows: u32,
) -> Result<(Relation, ChunkReader), PostgresError> {
    let (relation, row_filter) = relation_to_copy(client, types, publication, oid).await?;
    let reader = ChunkReader::new(&relation, table_sql, chunk_rows, row_filter.as_deref());
    Ok((relation, reader))
}

/// The relation a copy of table `oid` reads (the columns `publication` publishes), and the
/// publication's row filter. A column list without the table's key is refused: the copy pages
/// by the key, and a key cut short would skip rows that share what is left of it.
pub async fn relation_to_copy(
    client: &Client,
    types: &mut TypeRegistry,
    publication: &str,
    oid: u32,
) -> Result<(Relation, Option<String>), PostgresError> {
    let published = publication::published(client, publication, oid).await?;
    let whole = catalog::relation(client, types, oid).await?;
    let Some(columns) = published.columns else {
        return Ok((whole, published.rows));
    };
    let unpublished: Vec<&str> = whole
        .key
        .iter()
        .map(|&i| &*whole.columns[i].name)
        .filter(|name| !columns.iter().any(|c| c == name))
        .collect();
    if !unpublished.is_empty() {
        return Err(PostgresError::KeyNotPublished {
            publication: publication.to_owned(),
            table: format!("{}.{}", whole.schema, whole.table),
            columns: unpublished.join(", "),
        });
    }
    Ok((whole.of_columns(&columns), published.rows))
}

/// Reads one table in chunks: the query of each and where the next one starts.
pub struct ChunkReader {
    select: String,
    /// The rows the publication publishes: an SQL condition.
    row_filter: Option<String>,
    pub chunking: Chunking,
    limit: u32,
}

impl ChunkReader {
    /// Chunks of `chunk_rows` of `relation`, whose SQL name is `table_sql`, of the rows
    /// `row_filter` lets through when given.
    pub fn new(
        relation: &Relation,
        table_sql: &str,
        chunk_rows: u32,
        row_filter: Option<&str>,
    ) -> Self {
        let columns: Vec<String> = relation
            .columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect();
        let select = format!("SELECT {} FROM {table_sql}", columns.join(", "));
        let chunking = if relation.key.is_empty() {
            Chunking::Pages(u64::from((chunk_rows / ROWS_PER_PAGE).max(1)))
        } else {
            Chunking::Key(relation.key.clone())
        };
        ChunkReader {
            select,
            row_filter: row_filter.map(|condition| format!("({condition})")),
            chunking,
            limit: chunk_rows,
        }
    }

    pub fn keyed(&self) -> bool {
        matches!(self.chunking, Chunking::Key(_))
    }

    /// The query of the chunk after `progress.after` (the previous chunk's end) within the
    /// progress's range, or `None` when a keyless table's pages (`pages` of them) are all read.
    pub fn query(
        &self,
        relation: &Relation,
        progress: &TableProgress,
        pages: u64,
    ) -> Option<String> {
        let after = progress.after.as_deref();
        match &self.chunking {
            Chunking::Key(key) => {
                let names: Vec<String> = key
                    .iter()
                    .map(|&i| quote_ident(&relation.columns[i].name))
                    .collect();
                let order = names.join(", ");
                let mut conditions: Vec<String> = self.row_filter.iter().cloned().collect();
                if let Some(values) = after {
                    let literals: Vec<String> = values.iter().map(|v| quote_literal(v)).collect();
                    conditions.push(format!("({order}) > ({})", literals.join(", ")));
                }
                if let Some(lower) = &progress.lower {
                    conditions.push(format!("{} >= {}", names[0], quote_literal(lower)));
                }
                if let Some(upper) = &progress.upper {
                    conditions.push(format!("{} < {}", names[0], quote_literal(upper)));
                }
                let filter = if conditions.is_empty() {
                    String::new()
                } else {
                    format!(" WHERE {}", conditions.join(" AND "))
                };
                Some(format!(
                    "{}{filter} ORDER BY {order} LIMIT {}",
                    self.select, self.limit
                ))
            }
            Chunking::Pages(per_chunk) => {
                let from = first_page(after);
                (from < pages).then(|| {
                    let filter = self
                        .row_filter
                        .as_ref()
                        .map(|condition| format!(" AND {condition}"))
                        .unwrap_or_default();
                    format!(
                        "{} WHERE ctid >= '({from},0)'::tid AND ctid < '({},0)'::tid{filter}",
                        self.select,
                        from + per_chunk
                    )
                })
            }
        }
    }

    /// Where the chunk read after `after` ends: the key of its last row (`last_row(i)`, the
    /// text of its column `i`; `None` when it had no row), or the page after its range. `None`
    /// for a keyed chunk without rows: the next one starts where it did.
    pub fn end_of_chunk<'v>(
        &self,
        after: Option<&[String]>,
        last_row: Option<impl Fn(usize) -> Option<&'v str>>,
    ) -> Option<Vec<String>> {
        match &self.chunking {
            Chunking::Key(key) => {
                let last_row = last_row?;
                Some(
                    key.iter()
                        .map(|&i| last_row(i).unwrap_or_default().to_owned())
                        .collect(),
                )
            }
            Chunking::Pages(per_chunk) => Some(vec![(first_page(after) + per_chunk).to_string()]),
        }
    }

    /// Whether the chunk read after `after`, which returned `rows` rows, was the table's last.
    pub fn was_last(&self, after: Option<&[String]>, rows: u64, pages: u64) -> bool {
        match &self.chunking {
            Chunking::Key(_) => rows < u64::from(self.limit),
            Chunking::Pages(per_chunk) => first_page(after) + per_chunk >= pages,
        }
    }
}

/// The rows of `query` (a chunk's SELECT) as the server copies them out: one line of COPY's
/// text format per row ([`CopyRow`](super::copy_text::CopyRow) reads them). The server's
/// work is a query's, and each row arrives as one piece of text to split, not as a result row
/// of separately framed values.
pub async fn copy_out(
    client: &Client,
    query: &str,
) -> Result<CopyOutStream, tokio_postgres::Error> {
    client.copy_out(&format!("COPY ({query}) TO STDOUT")).await
}

fn first_page(after: Option<&[String]>) -> u64 {
    after
        .and_then(|a| a.first())
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// Up to `parts - 1` values of the first key column of `relation` that cut the table into
/// ranges of about equal size, from the server's statistics (its histogram of that column);
/// none when it has no statistics (a table never analyzed) or `parts` is 1.
pub async fn split_points(
    client: &Client,
    relation: &Relation,
    parts: u32,
) -> Result<Vec<String>, PostgresError> {
    let Some(&first) = relation.key.first() else {
        return Ok(Vec::new());
    };
    if parts < 2 {
        return Ok(Vec::new());
    }
    let row = client
        .query_opt(
            "SELECT histogram_bounds::text FROM pg_stats WHERE schemaname = $1 AND tablename = $2 AND attname = $3",
            &[&&*relation.schema, &&*relation.table, &&*relation.columns[first].name],
        )
        .await
        .map_err(|e| PostgresError::sql("reading a key column's statistics", e))?;
    let Some(text) = row.and_then(|r| r.get::<_, Option<String>>(0)) else {
        return Ok(Vec::new());
    };
    let bounds: Vec<String> = match array::parse(&text, b',', &|e| Value::Text(e.to_owned())) {
        Some(Value::Array(values)) => values
            .into_iter()
            .filter_map(|v| match v {
                Value::Text(t) => Some(t),
                _ => None,
            })
            .collect(),
        _ => return Ok(Vec::new()),
    };
    let mut points: Vec<String> = (1..parts as usize)
        .filter_map(|i| bounds.get(i * bounds.len() / parts as usize).cloned())
        .collect();
    points.dedup();
    Ok(points)
}

/// The pages a keyless table's chunks cover: its largest partition's (or its own) size.
pub async fn table_pages(client: &Client, oid: u32) -> Result<u64, PostgresError> {
    let row = client
        .query_one(
            // pg_partition_tree lists nothing for a table that is not partitioned.
            "SELECT (greatest(pg_relation_size($1::oid), \
                     (SELECT coalesce(max(pg_relation_size(relid)), 0) FROM pg_partition_tree($1::oid))) \
                     / current_setting('block_size')::bigint)::bigint",
            &[&oid],
        )
        .await
        .map_err(|e| PostgresError::sql("sizing a keyless table's pages", e))?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::sources::postgres::table::{Column, DeclaredColumn};
    use crate::sources::postgres::value::Decoder;

    fn relation(key: &[&str]) -> Relation {
        let columns = ["id", "region", "note"]
            .iter()
            .map(|name| Column {
                name: Arc::from(*name),
                type_oid: 25,
                typmod: -1,
                decoder: Decoder::Text,
                identity: false,
            })
            .collect();
        let declared: Vec<DeclaredColumn> = ["id", "region", "note"]
            .iter()
            .map(|name| DeclaredColumn {
                name: (*name).into(),
                declared_type: "text".into(),
                not_null: true,
                primary_key: key.contains(name),
            })
            .collect();
        Relation::new(1, ("s".into(), "t".into()), columns, &declared)
    }

    #[test]
    fn keyed_chunks_continue_after_the_last_key_in_key_order() {
        let relation = relation(&["id", "region"]);
        let reader = ChunkReader::new(&relation, "\"s\".\"t\"", 500, None);
        let start = TableProgress::started(1);
        let select = "SELECT \"id\", \"region\", \"note\" FROM \"s\".\"t\"";
        assert_eq!(
            reader.query(&relation, &start, 0).unwrap(),
            format!("{select} ORDER BY \"id\", \"region\" LIMIT 500")
        );
        let last_row = [Some("7"), Some("o'neil"), None];
        let end = reader.end_of_chunk(None, Some(|i| last_row[i])).unwrap();
        assert_eq!(end, vec!["7".to_owned(), "o'neil".to_owned()]);
        assert_eq!(
            reader.query(&relation, &start.after_chunk(end.clone()), 0).unwrap(),
            format!("{select} WHERE (\"id\", \"region\") > ('7', 'o''neil') ORDER BY \"id\", \"region\" LIMIT 500")
        );
        let range = start.within(Some("5".into()), Some("9".into()));
        assert_eq!(
            reader.query(&relation, &range.after_chunk(end.clone()), 0).unwrap(),
            format!("{select} WHERE (\"id\", \"region\") > ('7', 'o''neil') AND \"id\" >= '5' AND \"id\" < '9' ORDER BY \"id\", \"region\" LIMIT 500")
        );
        assert!(!reader.was_last(Some(&end), 500, 0));
        assert!(reader.was_last(Some(&end), 499, 0));
    }

    #[test]
    fn keyless_chunks_are_page_ranges_up_to_the_tables_size() {
        let relation = relation(&[]);
        let reader = ChunkReader::new(&relation, "\"s\".\"t\"", 640, None);
        assert!(!reader.keyed());
        let start = TableProgress::started(1);
        assert!(reader
            .query(&relation, &start, 25)
            .unwrap()
            .ends_with("WHERE ctid >= '(0,0)'::tid AND ctid < '(10,0)'::tid"));
        let end = reader.end_of_chunk(None, Some(|_| None)).unwrap();
        assert_eq!(end, vec!["10".to_owned()]);
        assert!(!reader.was_last(None, 0, 25));
        let third = vec!["20".to_owned()];
        assert!(reader
            .query(&relation, &start.after_chunk(third.clone()), 25)
            .is_some());
        assert!(reader.was_last(Some(&third), 0, 25));
        assert!(reader
            .query(&relation, &start.after_chunk(vec!["30".into()]), 25)
            .is_none());
        assert!(
            reader.query(&relation, &start, 0).is_none(),
            "an empty table has no chunk"
        );
    }

    #[test]
    fn a_row_filter_is_a_condition_of_every_chunk() {
        let filter = Some("region = 'eu'::text");
        let keyed = relation(&["id"]);
        let reader = ChunkReader::new(&keyed, "\"s\".\"t\"", 500, filter);
        let start = TableProgress::started(1);
        assert!(reader
            .query(&keyed, &start, 0)
            .unwrap()
            .ends_with("WHERE (region = 'eu'::text) ORDER BY \"id\" LIMIT 500"));
        let next = start.after_chunk(vec!["7".into()]);
        assert!(reader.query(&keyed, &next, 0).unwrap().ends_with(
            "WHERE (region = 'eu'::text) AND (\"id\") > ('7') ORDER BY \"id\" LIMIT 500"
        ));
        let keyless = relation(&[]);
        let reader = ChunkReader::new(&keyless, "\"s\".\"t\"", 640, filter);
        assert!(reader
            .query(&keyless, &start, 25)
            .unwrap()
            .ends_with("ctid < '(10,0)'::tid AND (region = 'eu'::text)"));
    }
}
