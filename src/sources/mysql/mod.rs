//! The `mysql` source: row changes from the MySQL or MariaDB binlog (row-based replication).
//!
//! Flow: connect -> check the server's binlog settings (ROW format, FULL row image and
//! metadata, no compression) -> register as a replica and stream from the stored position (or
//! the current one on a first start) -> TABLE_MAP events give each table's shape ([`shape`]),
//! WRITE / UPDATE / DELETE row events (v1 and v2) become insert / update / delete events with
//! full before and after rows ([`value`] maps the values) -> a checkpoint mark at each
//! transaction's end (XID, or a statement outside a transaction), never inside one. ROTATE
//! events move to the next file. `source.position` is `file:pos` of the row event's end.
//!
//! The initial snapshot ([`snapshot`]) copies the tables as of one binlog position first.
//!
//! Every event's CRC32 is verified (the library does not); a mismatch is fatal.
//!
//! Not yet: GTID positions, TLS, and the information_schema
//! fallback for servers without FULL metadata; each is refused or reported, never skipped.
//!
//! Errors ([`MysqlError`]): lost connections are transient (restart from the checkpoint);
//! wrong server settings, a purged binlog and compressed events are fatal with the fix; a row
//! that cannot be decoded is a data error naming the table and position.

mod config;
mod error;
mod position;
mod shape;
mod snapshot;
mod value;

use async_trait::async_trait;
use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn, Opts, Row as MyRow};
use mysql_common::binlog::events::{EventData, RowsEventData};

pub use config::{MysqlConfig, SnapshotMode, TableFilter};
pub use error::MysqlError;
pub use position::BinlogPosition;

use crate::check::Finding;
use crate::envelope::{now_ms, ChangeEvent, Op, Row, SourceInfo, SourceKind};
use crate::error::BoxError;
use crate::source::{Mark, Source, SourceContext};
use shape::TableShape;

/// The source's single partition (one binlog).
const PARTITION: &str = "";
/// Compressed event types (MariaDB log_bin_compress): 166-171.
const COMPRESSED_EVENTS: std::ops::RangeInclusive<u8> = 166..=171;

pub struct MysqlSource {
    config: MysqlConfig,
    filter: TableFilter,
}

impl MysqlSource {
    pub fn new(config: MysqlConfig, filter: TableFilter) -> Self {
        MysqlSource { config, filter }
    }
}

async fn connect(config: &MysqlConfig) -> Result<Conn, MysqlError> {
    let opts = Opts::from_url(config.url.expose()).map_err(|e| MysqlError::Connect(e.into()))?;
    Conn::new(opts)
        .await
        .map_err(|e| match sql("logging in")(e) {
            denied @ MysqlError::Denied { .. } => denied,
            MysqlError::Sql { source, .. } => MysqlError::Connect(source),
            other => other,
        })
}

/// Server error codes that mean the user lacks a privilege or cannot log in.
const ACCESS_DENIED: [u16; 5] = [1044, 1045, 1142, 1227, 1370];

fn sql(context: &str) -> impl FnOnce(mysql_async::Error) -> MysqlError + '_ {
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

/// The settings the binlog source needs, checked; the first wrong one is the error.
async fn check_settings(conn: &mut Conn) -> Result<(), MysqlError> {
    let row: MyRow = conn
        .query_first("SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@binlog_row_metadata")
        .await
        .map_err(sql("reading the binlog settings"))?
        .expect("a SELECT of variables returns a row");
    let get = |i: usize| {
        row.get::<Option<String>, _>(i)
            .flatten()
            .unwrap_or_default()
    };
    if get(0) != "1" && !get(0).eq_ignore_ascii_case("ON") {
        return Err(MysqlError::NoBinlog);
    }
    for (i, setting, needed) in [
        (1, "binlog_format", "ROW"),
        (2, "binlog_row_image", "FULL"),
        (3, "binlog_row_metadata", "FULL"),
    ] {
        let found = get(i);
        if !found.eq_ignore_ascii_case(needed) {
            return Err(MysqlError::Setting {
                setting,
                found,
                needed,
            });
        }
    }
    let compressed: Option<MyRow> = conn
        .query_first("SHOW VARIABLES LIKE 'log_bin_compress'")
        .await
        .map_err(sql("reading log_bin_compress"))?;
    if compressed
        .and_then(|r| r.get::<String, _>(1))
        .is_some_and(|v| v.eq_ignore_ascii_case("ON"))
    {
        return Err(MysqlError::Compressed);
    }
    Ok(())
}

async fn current_position(conn: &mut Conn) -> Result<BinlogPosition, MysqlError> {
    let row: MyRow = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .map_err(sql("SHOW MASTER STATUS"))?
        .ok_or(MysqlError::NoBinlog)?;
    Ok(BinlogPosition {
        file: row.get::<String, _>(0).unwrap_or_default(),
        pos: row.get::<u64, _>(1).unwrap_or(4),
    })
}

#[async_trait]
impl Source for MysqlSource {
    async fn run(self: Box<Self>, mut ctx: SourceContext) -> Result<(), BoxError> {
        let mut conn = connect(&self.config).await?;
        check_settings(&mut conn).await?;
        let start = match ctx.resume.get(PARTITION) {
            Some(stored) => BinlogPosition::parse(&stored.token)
                .ok_or_else(|| MysqlError::BadCheckpoint(stored.token.clone()))?,
            None => {
                let position = match self.config.snapshot {
                    SnapshotMode::Never => current_position(&mut conn).await?,
                    SnapshotMode::Initial | SnapshotMode::InitialOnly => {
                        match snapshot::copy(&self.config, &self.filter, &ctx).await? {
                            Ok(position) => position,
                            Err(_stopped) => return Ok(()),
                        }
                    }
                };
                // The snapshot's end (or the start position): a restart streams from here.
                let mark = Mark {
                    partition: PARTITION.into(),
                    position: position.checkpoint(),
                };
                if ctx.emit.checkpoint(mark).await.is_err()
                    || self.config.snapshot == SnapshotMode::InitialOnly
                {
                    return Ok(());
                }
                position
            }
        };
        tracing::info!(position = %start.token(), "streaming the binlog");
        // MariaDB: send its own GTID events as they are (not rewritten as queries).
        conn.query_drop("SET @mariadb_slave_capability = 4")
            .await
            .map_err(sql("setting the replica capability"))?;
        // A heartbeat every second when idle keeps the connection checked.
        conn.query_drop("SET @master_heartbeat_period = 1000000000")
            .await
            .map_err(sql("setting the heartbeat"))?;
        let request = BinlogStreamRequest::new(self.config.server_id)
            .with_filename(start.file.as_bytes())
            .with_pos(start.pos);
        let mut stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(|e| purged_or(e, &start))?;
        let mut file = start.file.clone();
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                _ = ctx.shutdown.requested() => return Ok(()),
            };
            let event = match event {
                Some(Ok(event)) => event,
                Some(Err(e)) => return Err(purged_or(e, &BinlogPosition { file, pos: 0 }).into()),
                None => return Err(MysqlError::StreamEnded.into()),
            };
            let raw_type = event.header().event_type_raw();
            if COMPRESSED_EVENTS.contains(&raw_type) {
                return Err(MysqlError::Compressed.into());
            }
            let end = u64::from(event.header().log_pos());
            if !checksum_ok(&event) {
                return Err(MysqlError::Checksum {
                    position: format!("{file}:{end}"),
                }
                .into());
            }
            let data = event.read_data().map_err(|e| MysqlError::Decode {
                table: String::new(),
                position: format!("{file}:{end}"),
                reason: e.to_string(),
            })?;
            let here = BinlogPosition {
                file: file.clone(),
                pos: end,
            };
            let sent = match data {
                Some(EventData::RotateEvent(rotate)) => {
                    // The first ROTATE after connecting is made up (log_pos 0): keep the file asked for.
                    if end != 0 {
                        file = rotate.name().into_owned();
                    }
                    Ok(())
                }
                Some(EventData::RowsEvent(rows)) => {
                    let Some(tme) = stream.get_tme(rows.table_id()) else {
                        return Err(MysqlError::Decode {
                            table: String::new(),
                            position: here.token(),
                            reason: format!("rows for unknown table id {}", rows.table_id()),
                        }
                        .into());
                    };
                    if !self.filter.matches(&tme.database_name(), &tme.table_name()) {
                        continue;
                    }
                    let table = shape::shape(tme).map_err(|reason| MysqlError::Decode {
                        table: format!("{}.{}", tme.database_name(), tme.table_name()),
                        position: here.token(),
                        reason,
                    })?;
                    let events = row_events(&ctx, &table, &rows, tme, &here)?;
                    let mut result = Ok(());
                    for event in events {
                        result = ctx.emit.event(event).await;
                        if result.is_err() {
                            break;
                        }
                    }
                    result
                }
                Some(EventData::XidEvent(_)) => {
                    ctx.emit
                        .checkpoint(Mark {
                            partition: PARTITION.into(),
                            position: here.checkpoint(),
                        })
                        .await
                }
                Some(EventData::QueryEvent(query)) => {
                    let text = query.query();
                    let statement = text.trim_start().to_ascii_uppercase();
                    if statement.starts_with("BEGIN")
                        || statement.starts_with("SAVEPOINT")
                        || statement.starts_with("ROLLBACK TO")
                    {
                        Ok(())
                    } else {
                        // COMMIT of a non-transactional change, or DDL: its own transaction.
                        // (Column changes need nothing here: every TABLE_MAP carries the shape.)
                        let truncated = truncated_table(&text, &query.schema())
                            .filter(|(db, table)| self.filter.matches(db, table));
                        let mut sent = Ok(());
                        if let Some((db, table)) = truncated {
                            sent = ctx
                                .emit
                                .event(truncate_event(&ctx, &db, &table, &here))
                                .await;
                        }
                        if sent.is_ok() {
                            sent = ctx
                                .emit
                                .checkpoint(Mark {
                                    partition: PARTITION.into(),
                                    position: here.checkpoint(),
                                })
                                .await;
                        }
                        sent
                    }
                }
                _ => Ok(()),
            };
            if sent.is_err() {
                return Ok(());
            }
        }
    }
}

/// The events of one rows event, in order.
fn row_events(
    ctx: &SourceContext,
    table: &TableShape,
    rows: &RowsEventData<'_>,
    tme: &mysql_common::binlog::events::TableMapEvent<'_>,
    here: &BinlogPosition,
) -> Result<Vec<ChangeEvent>, MysqlError> {
    let op = match rows {
        RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => Op::Insert,
        RowsEventData::UpdateRowsEvent(_)
        | RowsEventData::UpdateRowsEventV1(_)
        | RowsEventData::PartialUpdateRowsEvent(_) => Op::Update,
        RowsEventData::DeleteRowsEvent(_) | RowsEventData::DeleteRowsEventV1(_) => Op::Delete,
    };
    let decode_error = |reason: String| MysqlError::Decode {
        table: format!("{}.{}", table.database, table.table),
        position: here.token(),
        reason,
    };
    let to_row = |row: &mysql_common::binlog::row::BinlogRow| -> Result<Row, MysqlError> {
        table
            .columns
            .iter()
            .enumerate()
            .map(|(i, column)| {
                Ok((
                    column.name.clone(),
                    value::value(column, row.as_ref(i))
                        .map_err(|e| decode_error(format!("column {}: {e}", column.name)))?,
                ))
            })
            .collect()
    };
    let mut events = Vec::new();
    for pair in rows.rows(tme) {
        let (before, after) = pair.map_err(|e| decode_error(e.to_string()))?;
        let before = before.as_ref().map(to_row).transpose()?;
        let after = after.as_ref().map(to_row).transpose()?;
        let image = after
            .as_ref()
            .or(before.as_ref())
            .expect("a row event has an image");
        let key = key_of(image, &table.key);
        events.push(ChangeEvent {
            op,
            source: source_info(
                ctx,
                table.database.as_str().into(),
                table.table.as_str().into(),
                here,
                false,
            ),
            key,
            before,
            after,
            unchanged: Vec::new(),
            ts_ms: now_ms(),
        });
    }
    Ok(events)
}

/// The envelope's `source` for a change of `database.table` at `position`.
fn source_info(
    ctx: &SourceContext,
    database: std::sync::Arc<str>,
    table: std::sync::Arc<str>,
    position: &BinlogPosition,
    snapshot: bool,
) -> SourceInfo {
    SourceInfo {
        connector: SourceKind::Mysql,
        pipeline: ctx.pipeline.clone(),
        database,
        schema: None,
        table,
        position: position.token(),
        txid: None,
        commit_ts_ms: None,
        snapshot,
        ttl_expired: false,
    }
}

/// The primary-key columns of `row`, by their indexes.
fn key_of(row: &Row, key: &[usize]) -> Row {
    key.iter()
        .filter_map(|&i| row.iter().nth(i).map(|(n, v)| (n.clone(), v.clone())))
        .collect()
}

/// Whether the event's CRC32 (when the binlog has checksums) matches its bytes. The library
/// strips the checksum without checking it. Artificial events (position 0, heartbeats) are
/// made by the server on the fly and not checked.
fn checksum_ok(event: &mysql_common::binlog::events::Event) -> bool {
    use mysql_common::binlog::consts::BinlogChecksumAlg;
    const HEARTBEAT: u8 = 27;
    let header = event.header();
    if header.log_pos() == 0 || header.event_type_raw() == HEARTBEAT {
        return true;
    }
    match (event.checksum(), event.footer().get_checksum_alg()) {
        (Some(sum), Ok(Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32))) => {
            event.calc_checksum(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32)
                == u32::from_le_bytes(sum)
        }
        _ => true,
    }
}

/// The table a `TRUNCATE [TABLE] [db.]name` statement empties, with its database.
fn truncated_table(statement: &str, default_db: &str) -> Option<(String, String)> {
    let mut words = statement.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("TRUNCATE") {
        return None;
    }
    let mut name = words.next()?;
    if name.eq_ignore_ascii_case("TABLE") {
        name = words.next()?;
    }
    let unquote = |part: &str| part.trim_matches('`').replace("``", "`");
    let name = name.trim_end_matches(';');
    Some(
        match name.split_once("`.`").or_else(|| name.split_once('.')) {
            Some((db, table)) => (unquote(db), unquote(table)),
            None => (default_db.to_owned(), unquote(name)),
        },
    )
}

fn truncate_event(
    ctx: &SourceContext,
    database: &str,
    table: &str,
    here: &BinlogPosition,
) -> ChangeEvent {
    ChangeEvent {
        op: Op::Truncate,
        source: source_info(ctx, database.into(), table.into(), here, false),
        key: Row::new(),
        before: None,
        after: None,
        unchanged: Vec::new(),
        ts_ms: now_ms(),
    }
}

/// Error 1236 means the binlog asked for is gone from the server.
fn purged_or(err: mysql_async::Error, position: &BinlogPosition) -> MysqlError {
    match &err {
        mysql_async::Error::Server(server) if server.code == 1236 => MysqlError::Purged {
            position: position.token(),
        },
        _ => MysqlError::Sql {
            context: "reading the binlog".into(),
            source: err,
        },
    }
}

/// `cdc-bridge check` for this source: connection, binlog settings, privileges.
pub async fn check(config: &MysqlConfig) -> Vec<Finding> {
    let mut conn = match connect(config).await {
        Ok(conn) => conn,
        Err(err) => return vec![Finding::fail(crate::error::report(&err))],
    };
    let mut findings = Vec::new();
    let version: Option<String> = conn.query_first("SELECT VERSION()").await.ok().flatten();
    findings.push(Finding::ok(format!(
        "connected to {}",
        version.unwrap_or_default()
    )));
    findings.push(match check_settings(&mut conn).await {
        Ok(()) => Finding::ok("binlog: ROW format, FULL row image and metadata, not compressed"),
        Err(err) => Finding::fail(err.to_string()),
    });
    let grants: Vec<String> = conn.query("SHOW GRANTS").await.unwrap_or_default();
    let all = grants.join(" ").to_ascii_uppercase();
    for (privilege, alternatives) in [
        (
            "REPLICATION SLAVE",
            &["REPLICATION SLAVE", "ALL PRIVILEGES ON *.*"][..],
        ),
        (
            "REPLICATION CLIENT or BINLOG MONITOR",
            &[
                "REPLICATION CLIENT",
                "BINLOG MONITOR",
                "ALL PRIVILEGES ON *.*",
            ][..],
        ),
        ("SELECT", &["SELECT", "ALL PRIVILEGES"][..]),
    ] {
        findings.push(if alternatives.iter().any(|a| all.contains(a)) {
            Finding::ok(format!("privilege {privilege} granted"))
        } else {
            Finding::fail(format!("privilege {privilege} missing: GRANT it to the user (see migrations/mysql/001_prepare_database.sql)"))
        });
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::truncated_table;

    #[test]
    fn truncate_statements_name_their_table() {
        let t = |s| truncated_table(s, "app");
        assert_eq!(
            t("TRUNCATE TABLE orders"),
            Some(("app".into(), "orders".into()))
        );
        assert_eq!(
            t("truncate `shop`.`or``ders`"),
            Some(("shop".into(), "or`ders".into()))
        );
        assert_eq!(
            t("TRUNCATE shop.orders"),
            Some(("shop".into(), "orders".into()))
        );
        assert_eq!(t("ALTER TABLE orders ADD c INT"), None);
    }
}
