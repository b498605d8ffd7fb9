//! The initial snapshot: every captured table's rows as of the stream's start, then streaming
//! continues from exactly that position.
//!
//! Each worker (`snapshot_parallelism`) reads on a connection of its own, in a transaction
//! WITH CONSISTENT SNAPSHOT, with the session in UTC so TIMESTAMP values match the binlog's.
//! Rows are streamed from the server (nothing is held in memory) and become `snapshot` events
//! at their snapshot's position. Where the snapshots are:
//! - MySQL: every worker starts its snapshot under one short global read lock (FLUSH TABLES
//!   WITH READ LOCK, start the transactions, read the position, UNLOCK): one position.
//! - MariaDB: a consistent snapshot reports its binlog position (`binlog_snapshot_file` /
//!   `binlog_snapshot_position`) without any lock. The workers start theirs together, again
//!   while a commit came between them ([`ALIGN_ATTEMPTS`]). At one position, a large table is
//!   split into one range of its integer first key column per worker. Otherwise each worker
//!   copies whole tables at its own position: the stream starts at the earliest, and a table
//!   copied at a later one stores that position (`read_at`), so that the stream skips the
//!   table's changes up to it, which the copy holds already ([`CopiedAhead`]).
//!
//! Tables are read in chunks of `snapshot_chunk_rows` in primary-key order ([`super::chunk`]),
//! and each table's (or range's) progress is stored after every chunk ([`TableProgress`], its
//! own checkpoint partition). On MariaDB, when every table has a key, the stream's start is
//! stored before the copy begins: an interrupted copy then resumes while streaming, each
//! remaining chunk read in a consistent snapshot of its own and emitted where the stream
//! reaches that snapshot's position ([`super::backfill`]). On MySQL (whose consistent snapshots
//! do not report their position without a global lock), or with a keyless table, an
//! interrupted snapshot starts over: its end is the first checkpoint stored.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};

use super::catalog::columns_of;
use super::chunk::{read_chunk, Target};
use super::config::{MysqlConfig, TableFilter};
use super::error::MysqlError;
use super::gtid::GtidState;
use super::position::{BinlogPosition, RankBy};
use super::{connect, sql, Flavor, PARTITION};
use crate::source::progress::TableProgress;
use crate::source::{Halt, Mark, SourceContext, Stopped};

/// How often the MariaDB workers start their snapshots together before each keeps its own.
const ALIGN_ATTEMPTS: usize = 10;

/// A captured table (or one range of it) to copy, and how far an earlier run got.
#[derive(Debug, Clone)]
pub struct TableCopy {
    pub database: String,
    pub table: String,
    /// The range's number, for one range of a split table.
    pub range: Option<u32>,
    pub progress: TableProgress,
}

impl TableCopy {
    /// `database.table`.
    pub fn label(&self) -> String {
        format!("{}.{}", self.database, self.table)
    }

    /// The mark that stores `progress` for this table or range.
    pub fn mark(&self, progress: &TableProgress) -> Mark {
        Mark {
            partition: TableProgress::partition(&self.label(), self.range),
            position: progress.position(),
        }
    }
}

/// Tables copied at a snapshot later than the stream's start (a MariaDB worker's own): until
/// the stream has read every transaction that snapshot saw, the table's changes are in the
/// copy already, and are skipped. Each entry goes once the stream is there.
#[derive(Debug, Default)]
pub struct CopiedAhead(Vec<(String, String, GtidState)>);

impl CopiedAhead {
    /// From the stored progress of the copies (`read_at`).
    pub fn of(copies: &[TableCopy]) -> Result<Self, MysqlError> {
        let mut ahead = Vec::new();
        for copy in copies {
            if let Some(text) = &copy.progress.read_at {
                let state = GtidState::parse(text).map_err(|reason| {
                    MysqlError::BadCheckpoint(format!(
                        "{}: read_at {text:?}: {reason}",
                        copy.label()
                    ))
                })?;
                ahead.push((copy.database.clone(), copy.table.clone(), state));
            }
        }
        Ok(CopiedAhead(ahead))
    }

    /// Forgets the tables whose snapshot a stream at `streamed` has passed (at its start, and
    /// after each transaction).
    pub fn passed(&mut self, streamed: Option<&GtidState>) {
        if let Some(streamed) = streamed.filter(|_| !self.0.is_empty()) {
            self.0.retain(|(_, _, read_at)| !streamed.includes(read_at));
        }
    }

    /// Whether a change of `database.table`, in the transaction after `streamed`, is in the
    /// table's copy already.
    pub fn holds(&mut self, database: &str, table: &str, streamed: Option<&GtidState>) -> bool {
        let Some(at) = self
            .0
            .iter()
            .position(|(d, t, _)| d == database && t == table)
        else {
            return false;
        };
        // Without the stream's GTID state nothing is known to be in the copy: deliver it.
        if streamed.is_none_or(|s| s.includes(&self.0[at].2)) {
            self.0.swap_remove(at);
            return false;
        }
        true
    }
}

/// How a snapshot ended: the position to stream from, and whether it is stored already.
pub struct Copied {
    pub position: BinlogPosition,
    pub stored: bool,
    /// The copy's generation: a copy requested later takes a higher one.
    pub generation: u64,
    /// Tables copied at a later position than `position`.
    pub ahead: CopiedAhead,
}

/// The workers' connections, each in its snapshot, and where those are.
struct Snapshots {
    conns: Vec<Conn>,
    positions: Vec<BinlogPosition>,
}

impl Snapshots {
    /// Whether every worker reads at the same position.
    fn aligned(&self) -> bool {
        self.positions
            .windows(2)
            .all(|w| w[0].file_pos() == w[1].file_pos())
    }

    /// The earliest worker's position: where the stream starts.
    fn earliest(&self) -> &BinlogPosition {
        self.positions
            .iter()
            .min_by_key(|p| p.checkpoint(RankBy::File).rank)
            .expect("one worker at least")
    }
}

/// Copies the captured tables; returns the binlog position to stream from.
/// `resumable`: the copy may store its position before it ends (it streams on after).
pub async fn copy(
    config: &MysqlConfig,
    filter: &TableFilter,
    ctx: &SourceContext,
    resumable: bool,
) -> Result<Copied, Halt<MysqlError>> {
    let mut conn = session(config).await?;
    let flavor = Flavor::detect(&mut conn).await?;
    let workers = (config.snapshot_parallelism.get() as usize).max(1);
    let mut snapshots = open_snapshots(config, flavor, conn, workers).await?;
    // Listed inside the snapshot: a table created before it is copied.
    let tables = captured_tables(&mut snapshots.conns[0], filter).await?;
    for position in &mut snapshots.positions {
        *position = super::with_gtids(&mut snapshots.conns[0], flavor, position.clone()).await?;
    }
    let position = snapshots.earliest().clone();
    let aligned = snapshots.aligned();
    tracing::info!(position = %position.token(), workers, aligned, "snapshot started");
    ctx.probe.snapshotting();
    let stored_progress = TableProgress::stored(&ctx.resume).map_err(MysqlError::BadCheckpoint)?;
    let generation = TableProgress::next_generation(&stored_progress);
    let chunk_rows = u64::from(config.snapshot_chunk_rows.get());
    let plan = plan(&mut snapshots, &tables, generation, chunk_rows).await?;
    let marks = async {
        for (table, range) in stored_progress.keys() {
            let replaced = plan
                .units
                .iter()
                .any(|c| c.label() == *table && c.range == *range);
            if !replaced {
                ctx.emit
                    .forget(TableProgress::partition(table, *range))
                    .await?;
            }
        }
        for copy in &plan.units {
            ctx.emit.checkpoint(copy.mark(&copy.progress)).await?;
        }
        Ok::<_, Stopped>(())
    };
    marks.await?;
    // MariaDB with keys everywhere: from here on an interrupted copy resumes while streaming.
    let stored = resumable && flavor == Flavor::Mariadb && plan.keyed;
    if stored {
        let mark = Mark {
            partition: PARTITION.into(),
            position: position.checkpoint(position.rank_by(config.resume_by, None)),
        };
        ctx.emit.checkpoint(mark).await?;
    }
    ctx.probe.snapshot_started(&plan.estimates);
    let ahead = CopiedAhead::of(&plan.units)?;
    let run = CopyRun {
        ctx,
        limit: config.snapshot_chunk_rows.get(),
        queues: plan.queues(workers),
        unfinished: Mutex::new(plan.ranges_per_table),
    };
    let workers = snapshots
        .conns
        .iter_mut()
        .zip(&snapshots.positions)
        .enumerate()
        .map(|(worker, (conn, at))| run.work(worker, conn, at));
    futures_util::future::try_join_all(workers).await?;
    tracing::info!(position = %position.token(), "snapshot done; streaming from its position");
    Ok(Copied {
        position,
        stored,
        generation,
        ahead,
    })
}

/// Opens `workers` connections (the first is `first`), each in a consistent snapshot.
async fn open_snapshots(
    config: &MysqlConfig,
    flavor: Flavor,
    first: Conn,
    workers: usize,
) -> Result<Snapshots, MysqlError> {
    let mut conns = vec![first];
    while conns.len() < workers {
        conns.push(session(config).await?);
    }
    if flavor == Flavor::Mysql {
        let position = mysql_snapshots_under_lock(&mut conns).await?;
        let positions = vec![position; conns.len()];
        return Ok(Snapshots { conns, positions });
    }
    if let Some(pause) = staggered_for_tests() {
        let mut positions = Vec::with_capacity(conns.len());
        for conn in &mut conns {
            positions.push(start_consistent_snapshot(conn).await?);
            tokio::time::sleep(pause).await;
        }
        return Ok(Snapshots { conns, positions });
    }
    let mut attempt = 1;
    loop {
        let positions =
            futures_util::future::try_join_all(conns.iter_mut().map(start_consistent_snapshot))
                .await?;
        let snapshots = Snapshots { conns, positions };
        if snapshots.aligned() || attempt == ALIGN_ATTEMPTS {
            return Ok(snapshots);
        }
        conns = snapshots.conns;
        for conn in &mut conns {
            conn.query_drop("COMMIT")
                .await
                .map_err(sql("ending a snapshot to start it again"))?;
        }
        attempt += 1;
        // A moment apart from the commit that came between, which may be one of a burst.
        tokio::time::sleep(std::time::Duration::from_millis(attempt as u64)).await;
    }
}

/// Debug builds only: `CDC_BRIDGE_TEST_SNAPSHOT_STAGGER_MS` starts the workers' snapshots one
/// after another with that pause, once, so that a test's concurrent writes put them at
/// different positions.
fn staggered_for_tests() -> Option<std::time::Duration> {
    if !cfg!(debug_assertions) {
        return None;
    }
    let ms = std::env::var("CDC_BRIDGE_TEST_SNAPSHOT_STAGGER_MS").ok()?;
    ms.parse().ok().map(std::time::Duration::from_millis)
}

/// What the workers copy, and how.
struct Plan {
    units: Vec<TableCopy>,
    /// Each unit's worker, when each worker reads at its own position; `None`: any worker
    /// takes the next unit.
    worker_of: Option<Vec<usize>>,
    /// Per table: its units not copied yet.
    ranges_per_table: HashMap<String, usize>,
    estimates: Vec<(String, Option<u64>)>,
    /// Every table has a primary key.
    keyed: bool,
}

impl Plan {
    /// The units, in one queue every worker takes from or in one queue per worker.
    fn queues(&self, workers: usize) -> Vec<Mutex<VecDeque<TableCopy>>> {
        let Some(worker_of) = &self.worker_of else {
            return vec![Mutex::new(self.units.iter().cloned().collect())];
        };
        let mut queues: Vec<VecDeque<TableCopy>> = vec![VecDeque::new(); workers];
        for (unit, &worker) in self.units.iter().zip(worker_of) {
            queues[worker].push_back(unit.clone());
        }
        queues.into_iter().map(Mutex::new).collect()
    }
}

/// Plans the copy. Snapshots at one position: a table of more than two chunks whose first key
/// column is an integer is split into one range per worker, and each worker takes the next
/// unit as it goes. Snapshots at different positions: whole tables go to the workers, the
/// largest first to the least loaded, each read at its worker's position (stored as the
/// table's `read_at` when later than the stream's start).
async fn plan(
    snapshots: &mut Snapshots,
    tables: &[(String, String)],
    generation: u64,
    chunk_rows: u64,
) -> Result<Plan, MysqlError> {
    let workers = snapshots.conns.len();
    let aligned = snapshots.aligned();
    let conn = &mut snapshots.conns[0];
    let mut estimates = Vec::with_capacity(tables.len());
    let mut units = Vec::new();
    let mut keyed = true;
    for (database, table) in tables {
        let rows: Option<u64> = conn
            .exec_first(
                "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (database, table),
            )
            .await
            .map_err(sql("estimating a table's rows"))?
            .flatten();
        let rows = rows.filter(|n| *n > 0);
        estimates.push((format!("{database}.{table}"), rows));
        let (columns, key) = columns_of(conn, database, table).await?;
        keyed &= !key.is_empty();
        let split = aligned && workers > 1 && !key.is_empty() && rows.unwrap_or(0) > 2 * chunk_rows;
        let ranges = match split {
            true => integer_ranges(conn, (database, table), &columns[key[0]].name, workers).await?,
            false => vec![(None, None)],
        };
        let numbered = ranges.len() > 1;
        for (n, (lower, upper)) in ranges.into_iter().enumerate() {
            units.push(TableCopy {
                database: database.clone(),
                table: table.clone(),
                range: numbered.then_some(n as u32),
                progress: TableProgress::started(generation).within(lower, upper),
            });
        }
    }
    let mut ranges_per_table = HashMap::new();
    for unit in &units {
        *ranges_per_table.entry(unit.label()).or_insert(0) += 1;
    }
    let worker_of = (!aligned).then(|| assign(snapshots, &mut units, &estimates));
    Ok(Plan {
        units,
        worker_of,
        ranges_per_table,
        estimates,
        keyed,
    })
}

/// Whole tables to workers at different positions: the largest first to the least loaded.
/// A table read later than the stream's start stores where (`read_at`); when a position's
/// GTID state is unknown, every table goes to the earliest worker.
fn assign(
    snapshots: &Snapshots,
    units: &mut [TableCopy],
    estimates: &[(String, Option<u64>)],
) -> Vec<usize> {
    let start = snapshots.earliest();
    let earliest = snapshots
        .positions
        .iter()
        .position(|p| p == start)
        .expect("among them");
    let mut worker_of = vec![earliest; units.len()];
    if snapshots.positions.iter().any(|p| p.gtids.is_none()) {
        return worker_of;
    }
    let size = |unit: &TableCopy| {
        estimates
            .iter()
            .find(|(label, _)| *label == unit.label())
            .and_then(|(_, rows)| *rows)
            .unwrap_or(0)
    };
    let mut order: Vec<usize> = (0..units.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(size(&units[i])));
    let mut load = vec![0u64; snapshots.positions.len()];
    for i in order {
        let worker = (0..load.len())
            .min_by_key(|&w| load[w])
            .expect("one worker");
        load[worker] += size(&units[i]).max(1);
        worker_of[i] = worker;
        let at = &snapshots.positions[worker];
        if at.file_pos() != start.file_pos() {
            units[i].progress.read_at = at.gtids.as_ref().map(ToString::to_string);
        }
    }
    worker_of
}

/// One range per worker of `column` (the first key column) when it is an integer: bounds
/// cut evenly between its smallest and largest value. Otherwise the whole table.
async fn integer_ranges(
    conn: &mut Conn,
    (database, table): (&str, &str),
    column: &str,
    workers: usize,
) -> Result<Vec<(Option<String>, Option<String>)>, MysqlError> {
    let query = format!(
        "SELECT MIN({c}), MAX({c}) FROM {}.{}",
        quote(database),
        quote(table),
        c = quote(column)
    );
    let bounds: Option<(Value, Value)> = conn
        .exec_first(query, ())
        .await
        .map_err(sql("reading a key's smallest and largest value"))?;
    let (low, high) = match bounds {
        Some((Value::Int(low), Value::Int(high))) => (i128::from(low), i128::from(high)),
        Some((Value::UInt(low), Value::UInt(high))) => (i128::from(low), i128::from(high)),
        _ => return Ok(vec![(None, None)]),
    };
    let n = workers as i128;
    let span = high - low + 1;
    if span < n * 2 {
        return Ok(vec![(None, None)]);
    }
    let cuts: Vec<Option<String>> = (1..n)
        .map(|i| Some((low + span * i / n).to_string()))
        .collect();
    let lowers = std::iter::once(None).chain(cuts.iter().cloned());
    let uppers = cuts.iter().cloned().chain(std::iter::once(None));
    Ok(lowers.zip(uppers).collect())
}

/// The shared state of one copy's workers.
struct CopyRun<'a> {
    ctx: &'a SourceContext,
    limit: u32,
    queues: Vec<Mutex<VecDeque<TableCopy>>>,
    /// Per table: its units not copied yet.
    unfinished: Mutex<HashMap<String, usize>>,
}

impl CopyRun<'_> {
    /// One worker: copies the next unit of its queue, chunk by chunk, at its snapshot's
    /// position `at`, storing progress after each chunk, until none is left.
    async fn work(
        &self,
        worker: usize,
        conn: &mut Conn,
        at: &BinlogPosition,
    ) -> Result<(), Halt<MysqlError>> {
        let queue = &self.queues[worker.min(self.queues.len() - 1)];
        loop {
            let Some(copy) = queue.lock().expect("not poisoned").pop_front() else {
                // Ended now, not after the others: an open snapshot holds back the server's
                // purge, and an idle session may time out. Its rows are all read.
                if let Err(err) = conn.query_drop("COMMIT").await {
                    tracing::warn!(error = %crate::error::report(&err), "ending a worker's snapshot failed; its rows were all read");
                }
                return Ok(());
            };
            let mut progress = copy.progress.clone();
            loop {
                let chunk = read_chunk(
                    conn,
                    self.ctx,
                    &copy,
                    &progress,
                    at,
                    self.limit,
                    Target::Emit,
                )
                .await?;
                progress = chunk.next;
                let stored = if chunk.last {
                    progress.finished()
                } else {
                    progress.clone()
                };
                self.ctx.emit.checkpoint(copy.mark(&stored)).await?;
                if chunk.last {
                    break;
                }
            }
            let label = copy.label();
            let left = {
                let mut unfinished = self.unfinished.lock().expect("not poisoned");
                let left = unfinished.entry(label.clone()).or_insert(1);
                *left = left.saturating_sub(1);
                *left
            };
            if left == 0 {
                self.ctx.probe.snapshot_table_done(&label);
                tracing::info!(table = %label, "table copied");
            }
        }
    }
}

/// A connection for reading snapshots: UTC, REPEATABLE READ.
pub async fn session(config: &MysqlConfig) -> Result<Conn, MysqlError> {
    let mut conn = connect(config).await?;
    conn.query_drop("SET SESSION time_zone = '+00:00'")
        .await
        .map_err(sql("setting the session time zone"))?;
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .map_err(sql("setting the isolation level"))?;
    Ok(conn)
}

/// MariaDB: a transaction WITH CONSISTENT SNAPSHOT and the binlog position it sees, without a
/// lock.
pub async fn start_consistent_snapshot(conn: &mut Conn) -> Result<BinlogPosition, MysqlError> {
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await
        .map_err(sql("starting the snapshot"))?;
    let status: Vec<(String, String)> = conn
        .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
        .await
        .map_err(sql("reading the snapshot's binlog position"))?;
    let get = |name: &str| {
        status
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    Ok(BinlogPosition::new(
        get("binlog_snapshot_file").unwrap_or_default(),
        get("binlog_snapshot_position")
            .and_then(|p| p.parse().ok())
            .unwrap_or(4),
    ))
}

/// MySQL: every connection's snapshot started under the shortest global read lock, and the
/// position there.
async fn mysql_snapshots_under_lock(conns: &mut [Conn]) -> Result<BinlogPosition, MysqlError> {
    let (first, others) = conns.split_first_mut().expect("one worker at least");
    first
        .query_drop("FLUSH TABLES WITH READ LOCK")
        .await
        .map_err(sql("FLUSH TABLES WITH READ LOCK (needs RELOAD)"))?;
    let result = async {
        for conn in others.iter_mut().chain(std::iter::once(&mut *first)) {
            conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                .await
                .map_err(sql("starting the snapshot"))?;
        }
        super::current_position(first).await
    }
    .await;
    first
        .query_drop("UNLOCK TABLES")
        .await
        .map_err(sql("UNLOCK TABLES"))?;
    result
}

async fn captured_tables(
    conn: &mut Conn,
    filter: &TableFilter,
) -> Result<Vec<(String, String)>, MysqlError> {
    let tables: Vec<(String, String)> = conn
        .query(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_SCHEMA, TABLE_NAME",
        )
        .await
        .map_err(sql("listing tables"))?;
    Ok(tables
        .into_iter()
        .filter(|(db, t)| filter.matches(db, t))
        .collect())
}

pub(super) fn quote(identifier: &str) -> String {
    format!("`{}`", identifier.replace('`', "``"))
}
