//! Transaction boundaries in the binlog, and the rows of prepared XA transactions.
//!
//! Which event ends a transaction depends on how its group began:
//! - MariaDB says it in the GTID event's flags: a standalone group (DDL, or another statement
//!   logged on its own) ends with its Query event; an XA group (`XA START`, flag PREPARED_XA)
//!   ends with the XA_PREPARE event; any other group is a transaction (MariaDB writes no BEGIN)
//!   that an XID event, or a COMMIT / ROLLBACK query for non-transactional tables, ends.
//! - MySQL's GTID event says nothing: a BEGIN or `XA START` query opens the group, and a
//!   statement outside one is a group of its own.
//!
//! A Query event inside a transaction (SAVEPOINT, `XA END`, a statement logged as a statement
//! with binlog_format MIXED or STATEMENT) never ends it, so no checkpoint falls inside one.
//!
//! XA: the rows of `XA START … XA PREPARE` are held under their xid (as [`Held`] changes, so
//! they count against the pipeline's memory budget) until a later group `XA COMMIT xid` emits
//! them or `XA ROLLBACK xid` drops them; an XA_PREPARE event with the one-phase flag (MySQL's
//! `XA COMMIT … ONE PHASE`; MariaDB logs that as an ordinary transaction) emits them at once.
//! While any prepared transaction is held, the source emits no checkpoint: the stored one stays
//! before its XA PREPARE group, so a restart reads that group again and can still deliver the
//! rows when the commit comes. The stream's own reading is not affected.

use std::fmt;

use crate::source::Held;

/// MariaDB GTID event flags (`flags2`).
pub const FL_STANDALONE: u8 = 0x01;
pub const FL_GROUP_COMMIT_ID: u8 = 0x02;
pub const FL_PREPARED_XA: u8 = 0x40;
pub const FL_COMPLETED_XA: u8 = 0x80;

/// An XA transaction id: format id, global transaction id and branch qualifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xid {
    pub format_id: u32,
    pub gtrid: Vec<u8>,
    pub bqual: Vec<u8>,
}

impl fmt::Display for Xid {
    /// As the server logs it: `X'6331',X'',1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        write!(
            f,
            "X'{}',X'{}',{}",
            hex(&self.gtrid),
            hex(&self.bqual),
            self.format_id
        )
    }
}

/// The kind of the event group being read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Group {
    /// Between groups (MySQL: after a GTID event, before its BEGIN).
    Outside,
    /// A statement on its own: the next Query event ends it.
    Standalone,
    /// BEGIN … XID / COMMIT / ROLLBACK.
    Transaction,
    /// XA START … XA PREPARE.
    Xa(Xid),
}

/// What a Query event means for the group.
#[derive(Debug)]
pub enum QueryOutcome {
    /// Inside the group: nothing ends.
    Inside,
    /// A statement of its own (DDL, TRUNCATE, …) ended the group.
    Statement,
    /// COMMIT or ROLLBACK ended the transaction.
    End,
    /// `XA COMMIT` ended the group: emit these held rows (`None`: the transaction was
    /// prepared before the stream's start, its rows are not known).
    XaCommit(Xid, Option<Vec<Held>>),
    /// `XA ROLLBACK` ended the group; its held rows (if any) are dropped.
    XaRollback,
}

/// The group being read and the XA transactions prepared but not yet resolved.
pub struct Transactions {
    group: Group,
    /// Rows of the XA group being read.
    open_xa: Vec<Held>,
    /// Prepared XA transactions, oldest first, with their rows.
    prepared: Vec<(Xid, Vec<Held>)>,
}

impl Default for Transactions {
    fn default() -> Self {
        Transactions {
            group: Group::Outside,
            open_xa: Vec::new(),
            prepared: Vec::new(),
        }
    }
}

impl Transactions {
    /// A MariaDB GTID event with `flags` (and the xid of an XA group) starts a group.
    pub fn begin_mariadb(&mut self, flags: u8, xid: Option<Xid>) -> Result<(), String> {
        self.reset_group();
        self.group = if flags & FL_PREPARED_XA != 0 {
            Group::Xa(xid.ok_or("an XA GTID event without its xid")?)
        } else if flags & FL_STANDALONE != 0 {
            Group::Standalone
        } else {
            Group::Transaction
        };
        Ok(())
    }

    /// A MySQL GTID event starts a group; its first Query event says what kind.
    pub fn begin_mysql(&mut self) {
        self.reset_group();
    }

    /// Whether the rows read now belong to an XA transaction (to hold, not emit).
    pub fn in_xa(&self) -> bool {
        matches!(self.group, Group::Xa(_))
    }

    /// The xid of the XA transaction being read, for messages.
    pub fn open_xid(&self) -> String {
        match &self.group {
            Group::Xa(xid) => xid.to_string(),
            _ => String::new(),
        }
    }

    /// Holds a row of the XA transaction being read.
    pub fn hold(&mut self, row: Held) {
        self.open_xa.push(row);
    }

    /// Whether a prepared XA transaction is held: no checkpoint may be emitted then.
    pub fn holds_prepared(&self) -> bool {
        !self.prepared.is_empty()
    }

    /// A Query event.
    pub fn query(&mut self, text: &str) -> Result<QueryOutcome, String> {
        let statement = Statement::parse(text)?;
        let outcome = match (statement, &self.group) {
            (Statement::Begin, _) => {
                self.group = Group::Transaction;
                return Ok(QueryOutcome::Inside);
            }
            (Statement::XaStart(xid), _) => {
                self.group = Group::Xa(xid);
                return Ok(QueryOutcome::Inside);
            }
            (Statement::Other, Group::Outside | Group::Standalone) => QueryOutcome::Statement,
            (Statement::Savepoint | Statement::XaEnd | Statement::Other, _) => {
                return Ok(QueryOutcome::Inside)
            }
            (Statement::Commit | Statement::Rollback, _) => QueryOutcome::End,
            (Statement::XaCommit(xid), _) => {
                let rows = self.take_prepared(&xid);
                QueryOutcome::XaCommit(xid, rows)
            }
            (Statement::XaRollback(xid), _) => {
                self.take_prepared(&xid);
                QueryOutcome::XaRollback
            }
        };
        self.reset_group();
        Ok(outcome)
    }

    /// An XA_PREPARE event for `xid` ends the XA group. One phase: its rows, to emit now;
    /// else they are held until the transaction is resolved.
    pub fn prepare(&mut self, xid: Xid, one_phase: bool) -> Result<Vec<Held>, String> {
        match &self.group {
            Group::Xa(open) if *open == xid => {}
            Group::Xa(open) => {
                return Err(format!("XA PREPARE of {xid} inside XA transaction {open}"))
            }
            _ => return Err(format!("XA PREPARE of {xid} outside an XA transaction")),
        }
        if !one_phase && self.prepared.iter().any(|(held, _)| *held == xid) {
            return Err(format!("XA transaction {xid} prepared twice"));
        }
        let rows = std::mem::take(&mut self.open_xa);
        self.reset_group();
        if one_phase {
            return Ok(rows);
        }
        self.prepared.push((xid, rows));
        Ok(Vec::new())
    }

    /// An XID event ends the transaction.
    pub fn commit(&mut self) -> Result<(), String> {
        if let Group::Xa(xid) = &self.group {
            return Err(format!("XID event inside XA transaction {xid}"));
        }
        self.reset_group();
        Ok(())
    }

    /// Leaves the group; rows of an unfinished XA group are dropped.
    fn reset_group(&mut self) {
        self.group = Group::Outside;
        self.open_xa.clear();
    }

    fn take_prepared(&mut self, xid: &Xid) -> Option<Vec<Held>> {
        let i = self.prepared.iter().position(|(held, _)| held == xid)?;
        Some(self.prepared.remove(i).1)
    }
}

/// The statements that matter for transaction boundaries.
#[derive(Debug, PartialEq, Eq)]
enum Statement {
    Begin,
    Commit,
    Rollback,
    Savepoint,
    XaStart(Xid),
    XaEnd,
    XaCommit(Xid),
    XaRollback(Xid),
    Other,
}

impl Statement {
    fn parse(text: &str) -> Result<Statement, String> {
        let mut words = text.split_whitespace();
        let first = words.next().unwrap_or_default().trim_end_matches(';');
        let second = words.next().unwrap_or_default().trim_end_matches(';');
        let is = |word: &str, expected: &str| word.eq_ignore_ascii_case(expected);
        Ok(if is(first, "BEGIN") {
            Statement::Begin
        } else if is(first, "COMMIT") {
            Statement::Commit
        } else if is(first, "SAVEPOINT") || is(first, "RELEASE") {
            Statement::Savepoint
        } else if is(first, "ROLLBACK") {
            // ROLLBACK [WORK] TO [SAVEPOINT] name stays inside the transaction.
            let to = [second, words.next().unwrap_or_default()]
                .iter()
                .any(|w| is(w, "TO"));
            if to {
                Statement::Savepoint
            } else {
                Statement::Rollback
            }
        } else if is(first, "XA") {
            let xid = || parse_xid(after_words(text, 2)).map_err(|e| format!("{e} in {text:?}"));
            match second.to_ascii_uppercase().as_str() {
                "START" | "BEGIN" => Statement::XaStart(xid()?),
                "END" | "PREPARE" => Statement::XaEnd,
                "COMMIT" => Statement::XaCommit(xid()?),
                "ROLLBACK" => Statement::XaRollback(xid()?),
                _ => Statement::Other,
            }
        } else {
            Statement::Other
        })
    }
}

/// `text` without its first `n` words.
fn after_words(text: &str, n: usize) -> &str {
    let mut rest = text;
    for _ in 0..n {
        rest = rest.trim_start();
        rest = &rest[rest.find(char::is_whitespace).unwrap_or(rest.len())..];
    }
    rest.trim()
}

/// An xid as SQL writes it: `gtrid [, bqual [, format_id]]`, each string `'text'` or `X'hex'`.
fn parse_xid(text: &str) -> Result<Xid, String> {
    let mut rest = text;
    let string = |rest: &mut &str| -> Result<Option<Vec<u8>>, String> {
        let s = rest.trim_start();
        let (hex, s) = match s.strip_prefix(['X', 'x']) {
            Some(after) if after.starts_with('\'') => (true, after),
            _ => (false, s),
        };
        let Some(body) = s.strip_prefix('\'') else {
            return Ok(None);
        };
        let end = body.find('\'').ok_or("an unterminated xid string")?;
        let (value, after) = (&body[..end], &body[end + 1..]);
        *rest = after;
        if !hex {
            return Ok(Some(value.as_bytes().to_vec()));
        }
        if value.len() % 2 != 0 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("X'{value}' is not hex"));
        }
        (0..value.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&value[i..i + 2], 16).map_err(|e| e.to_string()))
            .collect::<Result<Vec<u8>, String>>()
            .map(Some)
    };
    let gtrid = string(&mut rest)?.ok_or("no xid")?;
    let mut bqual = Vec::new();
    let mut format_id = 1;
    if let Some(after) = rest.trim_start().strip_prefix(',') {
        rest = after;
        bqual = string(&mut rest)?.ok_or("no branch qualifier after ','")?;
        if let Some(after) = rest.trim_start().strip_prefix(',') {
            let digits: String = after
                .trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            format_id = digits
                .parse()
                .map_err(|_| format!("no format id in {text:?}"))?;
        }
    }
    Ok(Xid {
        format_id,
        gtrid,
        bqual,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xid(gtrid: &str) -> Xid {
        Xid {
            format_id: 1,
            gtrid: gtrid.as_bytes().to_vec(),
            bqual: Vec::new(),
        }
    }

    #[test]
    fn statements_are_classified() {
        let p = |s| Statement::parse(s).unwrap();
        assert_eq!(p("BEGIN"), Statement::Begin);
        assert_eq!(p("COMMIT"), Statement::Commit);
        assert_eq!(p("ROLLBACK"), Statement::Rollback);
        assert_eq!(p("ROLLBACK TO `s1`"), Statement::Savepoint);
        assert_eq!(p("rollback work to savepoint s1"), Statement::Savepoint);
        assert_eq!(p("SAVEPOINT `s1`"), Statement::Savepoint);
        assert_eq!(p("XA END X'7831',X'',1"), Statement::XaEnd);
        assert_eq!(p("XA START X'7831',X'',1"), Statement::XaStart(xid("x1")));
        assert_eq!(p("XA COMMIT X'7831',X'',1"), Statement::XaCommit(xid("x1")));
        assert_eq!(
            p("xa rollback 'ab', 'c', 7"),
            Statement::XaRollback(Xid {
                format_id: 7,
                gtrid: b"ab".to_vec(),
                bqual: b"c".to_vec()
            })
        );
        assert_eq!(p("INSERT INTO t VALUES (1)"), Statement::Other);
        assert_eq!(p("ALTER TABLE t ADD c INT"), Statement::Other);
        assert!(Statement::parse("XA COMMIT X'7'").is_err());
        assert!(Statement::parse("XA COMMIT X'zz'").is_err());
        assert!(Statement::parse("XA COMMIT 'open").is_err());
        assert!(Statement::parse("XA COMMIT").is_err());
    }

    #[test]
    fn xids_print_as_the_server_logs_them() {
        assert_eq!(xid("x1").to_string(), "X'7831',X'',1");
    }

    #[test]
    fn a_statement_inside_a_transaction_does_not_end_it() {
        let mut tx = Transactions::default();
        tx.begin_mariadb(0x0c, None).unwrap();
        assert!(matches!(
            tx.query("INSERT INTO side VALUES (1)"),
            Ok(QueryOutcome::Inside)
        ));
        assert!(matches!(tx.query("SAVEPOINT a"), Ok(QueryOutcome::Inside)));
        tx.commit().unwrap();
        // MySQL: BEGIN opens the transaction; a DDL outside one is a group of its own.
        tx.begin_mysql();
        assert!(matches!(tx.query("BEGIN"), Ok(QueryOutcome::Inside)));
        assert!(matches!(
            tx.query("UPDATE t SET a = 1"),
            Ok(QueryOutcome::Inside)
        ));
        assert!(matches!(tx.query("COMMIT"), Ok(QueryOutcome::End)));
        tx.begin_mysql();
        assert!(matches!(
            tx.query("CREATE TABLE t (a INT)"),
            Ok(QueryOutcome::Statement)
        ));
        // MariaDB: a standalone group ends with its statement.
        tx.begin_mariadb(FL_STANDALONE | 0x20, None).unwrap();
        assert!(matches!(
            tx.query("TRUNCATE t"),
            Ok(QueryOutcome::Statement)
        ));
        assert!(!tx.holds_prepared());
    }

    #[test]
    fn xa_groups_end_at_prepare_and_are_resolved_later() {
        let mut tx = Transactions::default();
        tx.begin_mariadb(0x4c, Some(xid("x1"))).unwrap();
        assert!(tx.in_xa());
        assert!(matches!(
            tx.query("XA END X'7831',X'',1"),
            Ok(QueryOutcome::Inside)
        ));
        assert!(tx.prepare(xid("x1"), false).unwrap().is_empty());
        assert!(tx.holds_prepared());
        assert!(!tx.in_xa());
        // Another transaction in between: it ends, the prepared one stays held.
        tx.begin_mariadb(0x0c, None).unwrap();
        tx.commit().unwrap();
        assert!(tx.holds_prepared());
        tx.begin_mariadb(FL_COMPLETED_XA | FL_STANDALONE | 0x0c, Some(xid("x1")))
            .unwrap();
        match tx.query("XA COMMIT X'7831',X'',1") {
            Ok(QueryOutcome::XaCommit(x, Some(rows))) => {
                assert_eq!(x, xid("x1"));
                assert!(rows.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert!(!tx.holds_prepared());
        // Rolled back: dropped. Unknown: nothing held.
        tx.begin_mariadb(0x4c, Some(xid("x2"))).unwrap();
        tx.prepare(xid("x2"), false).unwrap();
        assert!(matches!(
            tx.query("XA ROLLBACK X'7832',X'',1"),
            Ok(QueryOutcome::XaRollback)
        ));
        assert!(!tx.holds_prepared());
        assert!(matches!(
            tx.query("XA COMMIT X'7839',X'',1"),
            Ok(QueryOutcome::XaCommit(_, None))
        ));
        // MySQL: XA START as a query, one-phase commit at XA_PREPARE.
        tx.begin_mysql();
        tx.query("XA START X'7833',X'',1").unwrap();
        assert!(tx.in_xa());
        tx.query("XA END X'7833',X'',1").unwrap();
        assert!(tx.prepare(xid("x3"), true).unwrap().is_empty());
        assert!(!tx.holds_prepared());
    }

    #[test]
    fn unexpected_xa_events_are_errors() {
        let mut tx = Transactions::default();
        assert!(tx.prepare(xid("x1"), false).is_err());
        assert!(tx.begin_mariadb(FL_PREPARED_XA, None).is_err());
        tx.begin_mariadb(FL_PREPARED_XA, Some(xid("x1"))).unwrap();
        assert!(tx.prepare(xid("x2"), false).is_err());
        tx.begin_mariadb(FL_PREPARED_XA, Some(xid("x1"))).unwrap();
        assert!(tx.commit().is_err());
        tx.begin_mariadb(FL_PREPARED_XA, Some(xid("x1"))).unwrap();
        tx.prepare(xid("x1"), false).unwrap();
        tx.begin_mariadb(FL_PREPARED_XA, Some(xid("x1"))).unwrap();
        assert!(tx.prepare(xid("x1"), false).is_err());
    }
}
