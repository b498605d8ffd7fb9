//! Errors of the MySQL/MariaDB source, each with its disposition and the fix.

use crate::error::{ConnectorError, Disposition};

#[derive(Debug, thiserror::Error)]
pub enum MysqlError {
    #[error("url: {0}")]
    Url(String),
    #[error("the server's TLS certificate is not accepted ({0}): give the CA that signed it in the url's ssl-ca, or use ssl-mode=VERIFY_CA when the host name differs")]
    Certificate(String),
    #[error("cannot connect to MySQL/MariaDB")]
    Connect(#[source] mysql_async::Error),
    #[error("MySQL/MariaDB: {context}")]
    Sql {
        context: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("{context}: {message} (grant the privilege, or fix the user and password in `url`; see migrations/mysql/001_prepare_database.sql)")]
    Denied { context: String, message: String },
    #[error("{setting} is {found:?} but the binlog source needs {needed}: set {setting} = {needed} in the server configuration (see migrations/mysql/)")]
    Setting {
        setting: &'static str,
        found: String,
        needed: &'static str,
    },
    #[error("binary logging is off: start the server with log_bin (see migrations/mysql/)")]
    NoBinlog,
    #[error("the binlog holds compressed events ({setting} = ON), which cdc-bridge cannot read: set {setting} = OFF; changes written compressed cannot be captured")]
    Compressed { setting: &'static str },
    #[error("the server's binlog filters (binlog_do_db = {do_db:?}, binlog_ignore_db = {ignore_db:?}) keep database(s) {databases} out of the binlog: their changes would never be streamed. Remove the filter from the server's configuration (binlog-ignore-db, binlog-do-db) and restart the server, or stop capturing those databases")]
    BinlogFiltered {
        databases: String,
        do_db: String,
        ignore_db: String,
    },
    #[error("the server no longer has the binlog for {position} (purged: {message}): the changes since the checkpoint are lost; reset this pipeline's checkpoints to start from the current position")]
    Purged { position: String, message: String },
    #[error("stored checkpoint {0:?} is not a binlog position (file:pos, optionally ;gtids=STATE) for this server; reset this pipeline's checkpoints")]
    BadCheckpoint(String),
    /// A snapshot request that cannot be served, with the reason and the fix.
    #[error("{0}")]
    SnapshotRequest(String),
    #[error("position {position} holds GTIDs in the other server flavor's notation, but the server is {server}: fix start_position, or reset this pipeline's checkpoints if the server was replaced")]
    GtidFlavor {
        position: String,
        server: super::Flavor,
    },
    #[error("cannot resume by file at {position}: the offset is past 4 GiB and a binlog dump request carries 32 bits; set resume_by = \"gtid\" (with a GTID state in the checkpoint), or reset this pipeline's checkpoints")]
    OffsetAbove4Gib { position: String },
    #[error("cannot decode a row of {table} at {position}: {reason}")]
    Decode {
        table: String,
        position: String,
        reason: String,
    },
    #[error("binlog event at {position} cannot be read: {reason}")]
    BadEvent { position: String, reason: String },
    #[error("the rows of prepared XA transactions, held until their XA COMMIT, exceed buffer.max_bytes ({budget} bytes) at XA transaction {xid} ({position}): raise buffer.max_bytes, or resolve the prepared transactions (XA RECOVER lists them)")]
    XaTooLarge {
        xid: String,
        position: String,
        budget: u32,
    },
    #[error("binlog event at {position} fails its CRC32 checksum: the binlog or the connection corrupted it; nothing after it is read")]
    Checksum { position: String },
    #[error("the binlog stream ended")]
    StreamEnded,
    #[error("the server returned no row for {0}")]
    NoAnswer(&'static str),
}

impl ConnectorError for MysqlError {
    fn disposition(&self) -> Disposition {
        match self {
            MysqlError::Connect(_)
            | MysqlError::Sql { .. }
            | MysqlError::StreamEnded
            | MysqlError::NoAnswer(_) => Disposition::Transient,
            MysqlError::Decode { .. } | MysqlError::BadEvent { .. } => Disposition::Data,
            _ => Disposition::Fatal,
        }
    }
}

impl From<MysqlError> for crate::source::Halt<MysqlError> {
    fn from(err: MysqlError) -> Self {
        crate::source::Halt::Failed(err)
    }
}
