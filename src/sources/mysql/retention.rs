//! How far the server's binlog runs past the pipeline's stored position, in bytes, measured
//! for the pipeline's probe from `SHOW BINARY LOGS` (REPLICATION CLIENT / BINLOG MONITOR, which
//! the source needs anyway): the rest of the stored position's file plus every later file.
//!
//! A task of its own, on a connection of its own, ending with the source's run. Nothing is
//! measured before a position is stored, or for a position the server no longer lists
//! (purged); a failed measurement is logged at debug and tried again at the next tick.

use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tokio::sync::watch;

use super::config::MysqlConfig;
use super::position::BinlogPosition;
use super::{connect, PARTITION};
use crate::checkpoint::Checkpoints;
use crate::telemetry::{Measuring, PipelineProbe};

/// How often the binlog is measured.
const INTERVAL: Duration = Duration::from_secs(2);

/// Measures until the returned guard is dropped.
pub fn measure(
    config: &MysqlConfig,
    stored: watch::Receiver<Checkpoints>,
    probe: Arc<PipelineProbe>,
) -> Measuring {
    let config = config.clone();
    Measuring::spawn(async move {
        let mut conn: Option<Conn> = None;
        let mut tick = tokio::time::interval(INTERVAL);
        loop {
            tick.tick().await;
            let position = stored
                .borrow()
                .get(PARTITION)
                .and_then(|p| BinlogPosition::parse(&p.token))
                .filter(|p| !p.file.is_empty());
            let Some(position) = position else { continue };
            if conn.is_none() {
                conn = connect(&config)
                    .await
                    .map_err(|err| tracing::debug!(error = %crate::error::report(&err), "binlog measurement: cannot connect"))
                    .ok();
            }
            let Some(sql) = conn.as_mut() else { continue };
            // MySQL 8 adds a third column (Encrypted): name and size are the first two.
            match sql.query::<mysql_async::Row, _>("SHOW BINARY LOGS").await {
                Ok(rows) => {
                    let files: Vec<(String, u64)> = rows
                        .iter()
                        .filter_map(|row| Some((row.get(0)?, row.get(1)?)))
                        .collect();
                    if let Some(lag) = bytes_after(&files, &position) {
                        probe.source_lag(lag);
                    }
                }
                Err(err) => {
                    tracing::debug!(error = %err, "binlog measurement failed");
                    conn = None;
                }
            }
        }
    })
}

/// Bytes of the binlog after `position`, from the server's list of files and their sizes;
/// `None` when its file is not listed.
pub fn bytes_after(files: &[(String, u64)], position: &BinlogPosition) -> Option<i64> {
    let at = files.iter().position(|(name, _)| *name == position.file)?;
    let rest_of_file = files[at].1.saturating_sub(position.pos);
    let later: u64 = files[at + 1..].iter().map(|(_, size)| size).sum();
    i64::try_from(rest_of_file + later).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_rest_of_the_file_and_every_later_one() {
        let files = vec![
            ("bin.000001".to_owned(), 1000),
            ("bin.000002".to_owned(), 500),
            ("bin.000003".to_owned(), 300),
        ];
        let at = |file: &str, pos| BinlogPosition::new(file.into(), pos);
        assert_eq!(bytes_after(&files, &at("bin.000002", 200)), Some(300 + 300));
        assert_eq!(bytes_after(&files, &at("bin.000003", 300)), Some(0));
        assert_eq!(bytes_after(&files, &at("bin.000001", 4)), Some(996 + 800));
        assert_eq!(bytes_after(&files, &at("bin.000000", 4)), None, "purged");
    }
}
