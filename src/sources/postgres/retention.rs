//! What the server keeps for our slot, measured for the pipeline's probe: WAL written past the
//! slot's confirmed position (the pipeline's lag in bytes), WAL retained from its restart
//! position, and `wal_status` (reserved, extended, unreserved, lost: a slot heading for
//! `lost` is about to be invalidated by `max_slot_wal_keep_size`).
//!
//! A task of its own, on a connection of its own, so that it keeps measuring while a snapshot
//! holds the catalog connection in its transaction or the stream waits on backpressure; it
//! ends when the source's run does. A failed measurement never fails the pipeline: it is
//! logged at debug and tried again at the next tick.

use std::sync::Arc;
use std::time::Duration;

use super::catalog;
use super::config::PostgresConfig;
use super::error::PostgresError;
use crate::telemetry::{Measuring, PipelineProbe};

/// How often the slot is measured.
const INTERVAL: Duration = Duration::from_secs(2);

/// On a standby the WAL position is the last one replayed.
const SLOT_QUERY: &str = "SELECT \
    (w.lsn - s.confirmed_flush_lsn)::bigint, (w.lsn - s.restart_lsn)::bigint, s.wal_status::text \
    FROM pg_replication_slots s, \
    (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END AS lsn) w \
    WHERE s.slot_name = $1";

/// Measures the slot until the returned task is aborted (dropped with the returned guard).
pub fn measure(config: &PostgresConfig, probe: Arc<PipelineProbe>) -> Measuring {
    let config = config.clone();
    Measuring::spawn(async move {
        let mut client = None;
        let mut tick = tokio::time::interval(INTERVAL);
        loop {
            tick.tick().await;
            if client.is_none() {
                client = catalog::connect(&config)
                    .await
                    .map_err(|err| tracing::debug!(error = %crate::error::report(&err), "slot measurement: cannot connect"))
                    .ok();
            }
            let Some(sql) = &client else { continue };
            match measure_once(sql, &config.slot).await {
                Ok(Some((lag, retained, status))) => {
                    probe.source_retention(lag, retained, status.as_deref());
                }
                Ok(None) => {} // not created yet
                Err(err) => {
                    tracing::debug!(error = %crate::error::report(&err), "slot measurement failed");
                    client = None;
                }
            }
        }
    })
}

type Measurement = (i64, i64, Option<String>);

async fn measure_once(
    sql: &tokio_postgres::Client,
    slot: &str,
) -> Result<Option<Measurement>, PostgresError> {
    let row = sql
        .query_opt(SLOT_QUERY, &[&slot])
        .await
        .map_err(|e| PostgresError::sql("measuring the replication slot", e))?;
    Ok(row.map(|row| {
        let lag: Option<i64> = row.get(0);
        let retained: Option<i64> = row.get(1);
        (lag.unwrap_or(0), retained.unwrap_or(0), row.get(2))
    }))
}
