//! Talking to the server: connecting (TLS by the URL's `ssl-mode`, [`super::tls`]) with a
//! session that waits for a stalled pipeline, the binlog settings the source needs, the
//! server's flavor, and binlog positions with their GTID state.
//!
//! Errors: a refused login or missing privilege is [`MysqlError::Denied`] (by the server's
//! error code), a rejected certificate [`MysqlError::Certificate`], a lost connection
//! [`MysqlError::Connect`]; any other failed statement is [`MysqlError::Sql`] with its context.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row as MyRow};

use super::config::MysqlConfig;
use super::error::MysqlError;
use super::gtid;
use super::position::BinlogPosition;
use super::tls;

/// Longest wait for a blocked write the server accepts (a year), in seconds.
const MAX_NET_WRITE_TIMEOUT: u32 = 31_536_000;

pub(super) async fn connect(config: &MysqlConfig) -> Result<Conn, MysqlError> {
    let opts = tls::opts(config.url.expose()).map_err(MysqlError::Url)?;
    let mut conn = Conn::new(opts)
        .await
        .map_err(|e| match sql("logging in")(e) {
            denied @ MysqlError::Denied { .. } => denied,
            MysqlError::Sql { source, .. } if rejected_certificate(&source) => {
                MysqlError::Certificate(crate::error::report(&source))
            }
            MysqlError::Sql { source, .. } => MysqlError::Connect(source),
            other => other,
        })?;
    // Backpressure: while the pipeline's buffer is full, the binlog stream (or a snapshot's
    // rows) is not read, and the server's write to this connection blocks. The server ends
    // the connection when a write stays blocked for the session's net_write_timeout (60 s by
    // default): a stalled sink would cost the binlog dump and restart the pipeline.
    conn.query_drop(format!(
        "SET SESSION net_write_timeout = {MAX_NET_WRITE_TIMEOUT}"
    ))
    .await
    .map_err(sql("setting net_write_timeout"))?;
    Ok(conn)
}

/// Whether connecting failed because the server's certificate was not accepted (a setting
/// to fix, not a network fault to retry).
fn rejected_certificate(err: &mysql_async::Error) -> bool {
    let mut cause: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = cause {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return matches!(tls, rustls::Error::InvalidCertificate(_));
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(tls) = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                return matches!(tls, rustls::Error::InvalidCertificate(_));
            }
        }
        cause = e.source();
    }
    false
}

/// Server error codes that mean the user lacks a privilege or cannot log in.
const ACCESS_DENIED: [u16; 5] = [1044, 1045, 1142, 1227, 1370];

pub(super) fn sql(context: &str) -> impl FnOnce(mysql_async::Error) -> MysqlError + '_ {
    move |source| match &source {
        mysql_async::Error::Server(server) if ACCESS_DENIED.contains(&server.code) => {
            MysqlError::Denied {
                context: context.to_owned(),
                message: server.message.clone(),
            }
        }
        _ => MysqlError::Sql {
            context: context.to_owned(),
            source,
        },
    }
}

/// The settings the binlog source needs, checked; the first wrong one is the error. Returns
/// `binlog_row_metadata` when it is not FULL (shapes then come from information_schema).
pub(super) async fn check_settings(conn: &mut Conn) -> Result<Option<String>, MysqlError> {
    let row: MyRow = conn
        .query_first("SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@binlog_row_metadata")
        .await
        .map_err(sql("reading the binlog settings"))?
        .ok_or(MysqlError::NoAnswer(
            "SELECT @@log_bin, @@binlog_format, ...",
        ))?;
    let get = |i: usize| {
        row.get::<Option<String>, _>(i)
            .flatten()
            .unwrap_or_default()
    };
    if get(0) != "1" && !get(0).eq_ignore_ascii_case("ON") {
        return Err(MysqlError::NoBinlog);
    }
    for (i, setting, needed) in [(1, "binlog_format", "ROW"), (2, "binlog_row_image", "FULL")] {
        let found = get(i);
        if !found.eq_ignore_ascii_case(needed) {
            return Err(MysqlError::Setting {
                setting,
                found,
                needed,
            });
        }
    }
    // MariaDB's log_bin_compress, MySQL's binlog_transaction_compression.
    let compression: Vec<(String, String)> = conn
        .query(
            "SHOW VARIABLES WHERE Variable_name IN \
             ('log_bin_compress', 'binlog_transaction_compression')",
        )
        .await
        .map_err(sql("reading the binlog compression settings"))?;
    for (name, value) in compression {
        if value.eq_ignore_ascii_case("ON") {
            return Err(MysqlError::Compressed {
                setting: if name == "log_bin_compress" {
                    "log_bin_compress"
                } else {
                    "binlog_transaction_compression"
                },
            });
        }
    }
    let metadata = get(3);
    Ok((!metadata.eq_ignore_ascii_case("FULL")).then_some(metadata))
}

/// What a binlog without FULL metadata costs, for the log and `check`.
pub(super) fn partial_metadata_note(metadata: &str) -> String {
    format!("binlog_row_metadata is {metadata:?}: column names, signedness and ENUM/SET labels are read from information_schema, which describes each table as it is now; an event written before a later column change is refused. Set binlog_row_metadata = FULL to read each event's own shape")
}

/// The server's flavor: their GTIDs and snapshot positions differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Mariadb,
    Mysql,
}

impl std::fmt::Display for Flavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Flavor::Mariadb => "MariaDB",
            Flavor::Mysql => "MySQL",
        })
    }
}

impl Flavor {
    pub(super) async fn detect(conn: &mut Conn) -> Result<Flavor, MysqlError> {
        let version: String = conn
            .query_first("SELECT VERSION()")
            .await
            .map_err(sql("SELECT VERSION()"))?
            .unwrap_or_default();
        Ok(if version.contains("MariaDB") {
            Flavor::Mariadb
        } else {
            Flavor::Mysql
        })
    }
}

/// MariaDB: adds the GTID state at `position` (`BINLOG_GTID_POS`) when it is not known yet.
/// MySQL has no such lookup: its set is known only from SHOW MASTER STATUS or a GTID start.
pub(super) async fn with_gtids(
    conn: &mut Conn,
    flavor: Flavor,
    mut position: BinlogPosition,
) -> Result<BinlogPosition, MysqlError> {
    if flavor != Flavor::Mariadb || position.gtids.is_some() || position.file.is_empty() {
        return Ok(position);
    }
    let state: Option<Option<String>> = conn
        .exec_first(
            "SELECT BINLOG_GTID_POS(?, ?)",
            (position.file.as_str(), position.pos),
        )
        .await
        .map_err(sql("reading the GTID state at the start position"))?;
    if let Some(state) = state.flatten() {
        let state = gtid::GtidState::parse(&state).map_err(|reason| {
            MysqlError::BadCheckpoint(format!("{}: {reason}", position.token()))
        })?;
        position.gtids = Some(state);
    }
    Ok(position)
}

/// The server's binlog status: file, position, `Binlog_Do_DB`, `Binlog_Ignore_DB` and (MySQL)
/// the executed GTID set. MySQL 8.4 renamed SHOW MASTER STATUS to SHOW BINARY LOG STATUS.
async fn binlog_status(conn: &mut Conn) -> Result<MyRow, MysqlError> {
    let row: Option<MyRow> = match conn.query_first("SHOW BINARY LOG STATUS").await {
        Ok(row) => row,
        Err(mysql_async::Error::Server(e)) if e.code == 1064 => conn
            .query_first("SHOW MASTER STATUS")
            .await
            .map_err(sql("SHOW MASTER STATUS"))?,
        Err(e) => return Err(sql("SHOW BINARY LOG STATUS")(e)),
    };
    row.ok_or(MysqlError::NoBinlog)
}

/// Fails when the server's binlog filters (`binlog-do-db`, `binlog-ignore-db`) keep any of
/// `databases` out of the binlog: a snapshot would copy their tables and no change would
/// follow. Row events are filtered by the database of the changed table. Statements (TRUNCATE,
/// DDL) go by the session's default database instead, so with any filter set a TRUNCATE of a
/// captured table may still be left out: that is returned as a warning.
pub(super) async fn require_logged(
    conn: &mut Conn,
    databases: &[&str],
) -> Result<Option<String>, MysqlError> {
    let row = binlog_status(conn).await?;
    let text = |i: usize| {
        row.get::<Option<String>, _>(i)
            .flatten()
            .unwrap_or_default()
    };
    let (do_db, ignore_db) = (text(2), text(3));
    let left_out = unlogged(&do_db, &ignore_db, databases);
    if !left_out.is_empty() {
        return Err(MysqlError::BinlogFiltered {
            databases: left_out.join(", "),
            do_db,
            ignore_db,
        });
    }
    Ok((!do_db.is_empty() || !ignore_db.is_empty()).then(|| {
        format!("the server filters its binlog (binlog_do_db = {do_db:?}, binlog_ignore_db = {ignore_db:?}): row changes of the captured databases are logged, but a statement such as TRUNCATE is filtered by the session's default database (USE), so a TRUNCATE of a captured table run from a filtered-out database is never streamed. Remove the filters to capture every TRUNCATE")
    }))
}

/// The `databases` that `binlog_do_db` and `binlog_ignore_db` (comma-separated lists, as
/// SHOW MASTER STATUS gives them) keep out of the binlog's row events.
fn unlogged<'a>(do_db: &str, ignore_db: &str, databases: &[&'a str]) -> Vec<&'a str> {
    let list = |text: &str| -> Vec<String> {
        text.split(',')
            .map(str::trim)
            .filter(|db| !db.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let (only, ignored) = (list(do_db), list(ignore_db));
    databases
        .iter()
        .copied()
        .filter(|db| {
            let named = |list: &[String]| list.iter().any(|d| d == db);
            // With binlog-do-db set the server does not consult binlog-ignore-db.
            if only.is_empty() {
                named(&ignored)
            } else {
                !named(&only)
            }
        })
        .collect()
}

/// The server's current binlog position, with its executed GTID set (MySQL, when GTIDs are
/// on).
pub(super) async fn current_position(conn: &mut Conn) -> Result<BinlogPosition, MysqlError> {
    let row = binlog_status(conn).await?;
    let mut position = BinlogPosition::new(
        row.get::<String, _>(0).unwrap_or_default(),
        row.get::<u64, _>(1).unwrap_or(4),
    );
    let executed: Option<String> = row.get::<Option<String>, _>(4).flatten();
    if let Some(set) = executed.filter(|s| !s.trim().is_empty()) {
        let set = gtid::GtidSet::parse(&set)
            .map_err(|reason| MysqlError::BadCheckpoint(format!("Executed_Gtid_Set: {reason}")))?;
        position.gtids = Some(gtid::GtidState::Mysql(set));
    }
    Ok(position)
}

#[cfg(test)]
mod tests {
    use super::unlogged;

    #[test]
    fn binlog_filters_leave_out_ignored_databases_and_those_outside_do_db() {
        let captured = ["shop", "crm"];
        assert!(unlogged("", "", &captured).is_empty(), "no filter");
        assert_eq!(unlogged("", "mysql,crm", &captured), ["crm"]);
        assert_eq!(unlogged("shop", "", &captured), ["crm"]);
        assert!(unlogged("shop, crm", "", &captured).is_empty());
        assert_eq!(
            unlogged("shop", "shop", &captured),
            ["crm"],
            "binlog-do-db prevails over binlog-ignore-db"
        );
    }
}
