//! The initial snapshot: every table copied inside the snapshot exported by the slot's
//! creation, so that streaming from the slot's consistent point continues exactly where the
//! copy ends (nothing lost or doubled at the seam).
//!
//! Rows are read through a cursor, `snapshot_chunk_rows` per round trip, and become `snapshot`
//! events positioned at the consistent point. A round's rows are streamed, not collected: each
//! row is decoded from the connection only once the previous one was handed to the emitter,
//! which waits while the pipeline's byte budget (`buffer.max_bytes`) is spent. While it waits,
//! the connection stops reading and TCP holds the server back, so the rows read and not yet
//! acknowledged stay within the budget whatever their width. Progress (rows per table against
//! the server's estimate) goes to the pipeline's probe, which logs it every few seconds and
//! serves it on `/status` and `/metrics`. A snapshot interrupted before its end leaves no checkpoint; the next run drops the
//! slot and takes a new one (at-least-once: rows copied before are delivered again).

use futures_util::StreamExt;
use tokio_postgres::{Client, SimpleQueryMessage};

use super::catalog;
use super::config::{PostgresConfig, TableName};
use super::error::PostgresError;
use super::lsn::Lsn;
use super::relation::ChangeContext;
use super::stream::Failure;
use super::types::TypeRegistry;
use crate::envelope::PostgresPosition;
use crate::source::SourceContext;

/// Copies `tables` as of the exported snapshot `snapshot_name`; emits one event per row.
#[allow(clippy::too_many_arguments)] // each is a distinct input of the copy; a struct would only rename them
pub async fn copy_tables(
    client: &Client,
    config: &PostgresConfig,
    types: &mut TypeRegistry,
    tables: &[(TableName, u32)],
    snapshot_name: &str,
    consistent_point: Lsn,
    database: &std::sync::Arc<str>,
    ctx: &SourceContext,
) -> Result<(), Failure> {
    let sql_err = |what: &'static str| move |e| PostgresError::sql(what, e);
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(sql_err("starting the snapshot transaction"))?;
    client
        .batch_execute(&format!(
            "SET TRANSACTION SNAPSHOT {}",
            super::config::quote_literal(snapshot_name)
        ))
        .await
        .map_err(sql_err("importing the exported snapshot"))?;
    let context = ChangeContext {
        pipeline: ctx.pipeline.clone(),
        database: database.clone(),
        position: PostgresPosition {
            lsn: consistent_point.0,
            txid: None,
        },
        commit_ts_ms: None,
    };
    let mut estimates = Vec::with_capacity(tables.len());
    for (table, oid) in tables {
        // reltuples is 0 (or -1) for a table never vacuumed or analyzed: unknown, not empty.
        let estimate = catalog::estimated_rows(client, *oid).await?;
        estimates.push((
            table.to_string(),
            u64::try_from(estimate).ok().filter(|n| *n > 0),
        ));
    }
    ctx.probe.snapshot_started(&estimates);
    for ((table, oid), (label, estimate)) in tables.iter().zip(&estimates) {
        let relation = catalog::relation(client, types, *oid).await?;
        let columns: Vec<String> = relation
            .columns
            .iter()
            .map(|c| super::config::quote_ident(&c.name))
            .collect();
        let select = if columns.is_empty() {
            "SELECT".to_owned()
        } else {
            format!("SELECT {}", columns.join(", "))
        };
        client
            .batch_execute(&format!(
                "DECLARE cdc_bridge_snapshot NO SCROLL CURSOR FOR {select} FROM {}",
                table.quoted()
            ))
            .await
            .map_err(sql_err("opening the snapshot cursor"))?;
        tracing::info!(pipeline = %ctx.pipeline, table = %table, estimated_rows = ?estimate, "snapshot of table started");
        let fetch = format!(
            "FETCH {} FROM cdc_bridge_snapshot",
            config.snapshot_chunk_rows
        );
        let mut copied = 0u64;
        loop {
            let messages = client
                .simple_query_raw(&fetch)
                .await
                .map_err(sql_err("reading a snapshot chunk"))?;
            let mut messages = std::pin::pin!(messages);
            let mut rows_in_chunk = 0;
            while let Some(message) = messages.next().await {
                let message = message.map_err(sql_err("reading a snapshot chunk"))?;
                if let SimpleQueryMessage::Row(row) = message {
                    let values: Vec<Option<&str>> = (0..row.len()).map(|i| row.get(i)).collect();
                    ctx.emit
                        .event(relation.snapshot_event(&context, &values))
                        .await?;
                    rows_in_chunk += 1;
                }
            }
            copied += rows_in_chunk;
            if rows_in_chunk == 0 {
                break;
            }
            ctx.probe.snapshot_rows(label, rows_in_chunk);
        }
        client
            .batch_execute("CLOSE cdc_bridge_snapshot")
            .await
            .map_err(sql_err("closing the snapshot cursor"))?;
        ctx.probe.snapshot_table_done(label);
        tracing::info!(pipeline = %ctx.pipeline, table = %table, rows = copied, "snapshot of table done");
    }
    client
        .batch_execute("COMMIT")
        .await
        .map_err(sql_err("ending the snapshot transaction"))?;
    Ok(())
}
