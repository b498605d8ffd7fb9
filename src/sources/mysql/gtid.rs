//! Global transaction ids, in both flavors, and the replication state built from them.
//!
//! - MariaDB: a GTID is `domain-server-sequence`; the state is the last GTID per replication
//!   domain (`0-1-57,1-2-9`), the form `@slave_connect_state` takes to resume.
//! - MySQL: a GTID is `uuid:number` (MySQL 8.4 adds an optional tag: `uuid:tag:number`); the
//!   state is the set of every executed transaction, as intervals per uuid and tag
//!   (`3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7,...`), the form `COM_BINLOG_DUMP_GTID` takes.
//!
//! Parsing errors are plain messages; the caller names the config field or checkpoint.

use std::collections::BTreeMap;
use std::fmt;

/// The last transaction number MySQL gives (its GNO_END, 2^63 - 1, is never used): numbers
/// beyond it are malformed, and interval ends stay clear of overflow.
const MAX_NUMBER: u64 = i64::MAX as u64 - 1;

/// One transaction's id, as read from its GTID event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gtid {
    Mariadb {
        domain: u32,
        server: u32,
        sequence: u64,
    },
    Mysql {
        uuid: [u8; 16],
        tag: Option<String>,
        number: u64,
    },
}

impl Gtid {
    /// The GTID of a MySQL GTID event (tagged or not); a number outside 1..=2^63 - 2 is
    /// malformed.
    pub fn from_mysql(event: &mysql_common::binlog::events::GtidEvent) -> Result<Gtid, String> {
        let number = event.gno();
        if !(1..=MAX_NUMBER).contains(&number) {
            return Err(format!(
                "GTID number {number} is outside MySQL's range 1-{MAX_NUMBER}"
            ));
        }
        Ok(Gtid::Mysql {
            uuid: event.sid(),
            tag: event.tag().map(|t| t.as_str().to_owned()),
            number,
        })
    }
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gtid::Mariadb {
                domain,
                server,
                sequence,
            } => write!(f, "{domain}-{server}-{sequence}"),
            Gtid::Mysql { uuid, tag, number } => {
                write!(f, "{}", format_uuid(uuid))?;
                if let Some(tag) = tag {
                    write!(f, ":{tag}")?;
                }
                write!(f, ":{number}")
            }
        }
    }
}

/// How far a stream is against a position's GTID state ([`GtidState::reached`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    Behind,
    At,
    Past,
}

/// The replication state: every transaction up to here, in the server's flavor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GtidState {
    Mariadb(MariadbState),
    Mysql(GtidSet),
}

impl GtidState {
    /// Parses either flavor: MySQL sets name uuids (they hold `:`), MariaDB lists do not.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.contains(':') {
            GtidSet::parse(text).map(GtidState::Mysql)
        } else {
            MariadbState::parse(text).map(GtidState::Mariadb)
        }
    }

    /// Adds a committed transaction. A GTID of the other flavor is ignored (cannot happen
    /// with one server).
    pub fn commit(&mut self, gtid: &Gtid) {
        match (self, gtid) {
            (
                GtidState::Mariadb(state),
                Gtid::Mariadb {
                    domain,
                    server,
                    sequence,
                },
            ) => {
                state.0.insert(*domain, (*server, *sequence));
            }
            (GtidState::Mysql(set), Gtid::Mysql { uuid, tag, number }) => {
                set.add(&format_uuid(uuid), tag.as_deref(), *number)
            }
            _ => {}
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            GtidState::Mariadb(state) => state.0.is_empty(),
            GtidState::Mysql(set) => set.0.is_empty(),
        }
    }

    /// Where a stream whose committed transactions are this state is against `target`, a
    /// MariaDB state at one binlog position: not there yet, exactly there, or past it (a
    /// transaction of some domain after it). MySQL sets are never `At` (MySQL copies do not
    /// resume while streaming).
    pub fn reached(&self, target: &GtidState) -> Reached {
        let (GtidState::Mariadb(mine), GtidState::Mariadb(there)) = (self, target) else {
            return Reached::Behind;
        };
        let past = mine
            .0
            .iter()
            .any(|(domain, &(_, here))| there.0.get(domain).is_none_or(|&(_, seq)| here > seq));
        if past {
            return Reached::Past;
        }
        if self.includes(target) {
            Reached::At
        } else {
            Reached::Behind
        }
    }

    /// Whether a stream whose committed transactions are this state has read every
    /// transaction of `target` (a MariaDB state at one binlog position), in every domain.
    pub fn includes(&self, target: &GtidState) -> bool {
        let (GtidState::Mariadb(mine), GtidState::Mariadb(target)) = (self, target) else {
            return false;
        };
        target
            .0
            .iter()
            .all(|(domain, &(_, seq))| mine.0.get(domain).is_some_and(|&(_, here)| here >= seq))
    }

    /// How far replication is, as one number every commit raises: the sum of the sequence
    /// numbers (MariaDB: each domain's only rise, on every server, with gtid_strict_mode) or
    /// the number of transactions (MySQL). The same on every server of one topology.
    pub fn progress(&self) -> u128 {
        match self {
            GtidState::Mariadb(state) => state.0.values().map(|&(_, seq)| u128::from(seq)).sum(),
            GtidState::Mysql(set) => set
                .0
                .values()
                .flatten()
                .map(|&(start, end)| u128::from(end.saturating_sub(start)))
                .sum(),
        }
    }
}

impl fmt::Display for GtidState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GtidState::Mariadb(state) => state.fmt(f),
            GtidState::Mysql(set) => set.fmt(f),
        }
    }
}

/// MariaDB: the last GTID of each replication domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MariadbState(BTreeMap<u32, (u32, u64)>);

impl MariadbState {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut state = BTreeMap::new();
        for gtid in text.split(',').map(str::trim).filter(|g| !g.is_empty()) {
            let parts: Vec<&str> = gtid.split('-').collect();
            let [domain, server, sequence] = parts[..] else {
                return Err(format!(
                    "{gtid:?} is not a MariaDB GTID (domain-server-sequence)"
                ));
            };
            let number = |part: &str| {
                part.parse::<u64>()
                    .map_err(|_| format!("{gtid:?} is not a MariaDB GTID (domain-server-sequence)"))
            };
            let domain = u32::try_from(number(domain)?).map_err(|e| e.to_string())?;
            let server = u32::try_from(number(server)?).map_err(|e| e.to_string())?;
            if state.insert(domain, (server, number(sequence)?)).is_some() {
                return Err(format!("domain {domain} appears twice in {text:?}"));
            }
        }
        Ok(MariadbState(state))
    }
}

impl fmt::Display for MariadbState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (domain, (server, sequence)) in &self.0 {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{domain}-{server}-{sequence}")?;
        }
        Ok(())
    }
}

/// A server uuid and its optional MySQL 8.4 tag.
type Source = (String, Option<String>);

/// MySQL: executed transactions as sorted, disjoint, half-open intervals per (uuid, tag).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidSet(BTreeMap<Source, Vec<(u64, u64)>>);

impl GtidSet {
    /// Parses `uuid[:tag]:a-b:c,uuid...` (whitespace and newlines, as SHOW MASTER STATUS
    /// prints them, are ignored). In MySQL 8.4 a tag applies to the intervals after it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut set = GtidSet::default();
        let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        for member in text.split(',').filter(|m| !m.is_empty()) {
            let mut parts = member.split(':');
            let uuid = parts.next().unwrap_or_default().to_ascii_lowercase();
            if parse_uuid(&uuid).is_none() {
                return Err(format!("{member:?} does not start with a server uuid"));
            }
            let mut tag: Option<String> = None;
            let mut intervals = 0;
            for part in parts {
                if part.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
                    tag = Some(part.to_owned());
                    continue;
                }
                let (start, end) = part.split_once('-').unwrap_or((part, part));
                let (Ok(start), Ok(end)) = (start.parse::<u64>(), end.parse::<u64>()) else {
                    return Err(format!(
                        "{part:?} in {member:?} is not a number or a-b range"
                    ));
                };
                if start == 0 || end < start || end > MAX_NUMBER {
                    return Err(format!("{part:?} in {member:?} is not a valid range"));
                }
                set.insert(&uuid, tag.as_deref(), start, end + 1);
                intervals += 1;
            }
            if intervals == 0 {
                return Err(format!("{member:?} lists no transactions"));
            }
        }
        Ok(set)
    }

    /// Adds one transaction number (at most 2^63 - 2, as [`Gtid::from_mysql`] ensures).
    pub fn add(&mut self, uuid: &str, tag: Option<&str>, number: u64) {
        self.insert(uuid, tag, number, number + 1);
    }

    /// Adds `start..end`, merging it with the intervals it touches.
    fn insert(&mut self, uuid: &str, tag: Option<&str>, start: u64, end: u64) {
        let intervals = self
            .0
            .entry((uuid.to_owned(), tag.map(str::to_owned)))
            .or_default();
        intervals.push((start, end));
        intervals.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(intervals.len());
        for &(s, e) in intervals.iter() {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        *intervals = merged;
    }

    /// The set as the `Sid`s of a GTID dump request.
    pub fn to_sids(&self) -> Result<Vec<mysql_common::packets::Sid<'static>>, String> {
        self.members()
            .map(|member| member.parse().map_err(|e| format!("{member}: {e}")))
            .collect()
    }

    /// One `uuid[:tag]:intervals` text per (uuid, tag).
    fn members(&self) -> impl Iterator<Item = String> + '_ {
        self.0.iter().map(|((uuid, tag), intervals)| {
            let mut text = uuid.clone();
            if let Some(tag) = tag {
                text.push(':');
                text.push_str(tag);
            }
            for &(start, end) in intervals {
                if end == start + 1 {
                    text.push_str(&format!(":{start}"));
                } else {
                    text.push_str(&format!(":{start}-{}", end - 1));
                }
            }
            text
        })
    }
}

impl fmt::Display for GtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.members().collect::<Vec<_>>().join(","))
    }
}

/// `8-4-4-4-12` lowercase hex.
pub fn format_uuid(bytes: &[u8; 16]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|&c| c != '-').collect();
    if hex.len() != 32 || text.len() != 36 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    const B: &str = "b9b4712a-df64-11e3-b391-60672090eb04";

    #[test]
    fn mariadb_state_keeps_the_last_gtid_per_domain() {
        let mut state = GtidState::parse("0-1-57, 2-3-9").unwrap();
        state.commit(&Gtid::Mariadb {
            domain: 0,
            server: 2,
            sequence: 58,
        });
        state.commit(&Gtid::Mariadb {
            domain: 1,
            server: 1,
            sequence: 1,
        });
        assert_eq!(state.to_string(), "0-2-58,1-1-1,2-3-9");
        assert_eq!(GtidState::parse(&state.to_string()).unwrap(), state);
        assert!(GtidState::parse("").unwrap().is_empty());
        assert!(MariadbState::parse("0-1").is_err());
        assert!(MariadbState::parse("0-1-x").is_err());
        assert!(MariadbState::parse("0-1-5,0-2-6").is_err());
    }

    #[test]
    fn progress_is_the_sum_of_sequences_or_the_number_of_transactions() {
        assert_eq!(GtidState::parse("0-1-57,2-3-9").unwrap().progress(), 66);
        let set = GtidState::parse(&format!("{A}:1-10:12,{B}:1-3:5")).unwrap();
        assert_eq!(set.progress(), 15);
        let top = GtidState::parse(&format!("0-1-{},1-1-{}", u64::MAX, u64::MAX)).unwrap();
        assert_eq!(top.progress(), 2 * u128::from(u64::MAX));
    }

    #[test]
    fn mysql_sets_merge_intervals_and_round_trip() {
        let text = format!("{B}:1-3:5,\n{A}:1-10:12");
        let mut state = GtidState::parse(&text).unwrap();
        assert_eq!(state.to_string(), format!("{A}:1-10:12,{B}:1-3:5"));
        let uuid_a = parse_uuid(A).unwrap();
        let uuid_b = parse_uuid(B).unwrap();
        for number in [11, 13] {
            state.commit(&Gtid::Mysql {
                uuid: uuid_a,
                tag: None,
                number,
            });
        }
        state.commit(&Gtid::Mysql {
            uuid: uuid_b,
            tag: None,
            number: 4,
        });
        // 11 fills the gap before 12 and 13 extends the run; 4 joins 1-3 and 5.
        assert_eq!(state.to_string(), format!("{A}:1-13,{B}:1-5"));
        assert_eq!(GtidState::parse(&state.to_string()).unwrap(), state);
    }

    #[test]
    fn mysql_tagged_gtids_are_kept_apart() {
        let mut set = GtidSet::parse(&format!("{A}:1-2:etl:1-4:6")).unwrap();
        set.add(A, Some("etl"), 5);
        set.add(A, None, 3);
        assert_eq!(set.to_string(), format!("{A}:1-3,{A}:etl:1-6"));
        let gtid = Gtid::Mysql {
            uuid: parse_uuid(A).unwrap(),
            tag: Some("etl".into()),
            number: 7,
        };
        assert_eq!(gtid.to_string(), format!("{A}:etl:7"));
    }

    #[test]
    fn mysql_sets_become_the_sids_of_a_dump_request() {
        let set = GtidSet::parse(&format!("{A}:1-10:12,{B}:7")).unwrap();
        let sids = set.to_sids().unwrap();
        assert_eq!(sids.len(), 2);
        assert_eq!(sids[0].uuid(), parse_uuid(A).unwrap());
        // Sid intervals are half-open, as on the wire.
        let intervals: Vec<(u64, u64)> = sids[0]
            .intervals()
            .iter()
            .map(|i| (i.start(), i.end()))
            .collect();
        assert_eq!(intervals, [(1, 11), (12, 13)]);
        assert_eq!(sids[1].to_string(), format!("{B}:7"));
    }

    #[test]
    fn malformed_mysql_sets_are_refused() {
        for bad in [
            "not-a-uuid:1-5".to_owned(),
            A.to_string(),
            format!("{A}:0"),
            format!("{A}:5-3"),
            format!("{A}:x"),
        ] {
            assert!(GtidSet::parse(&bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn numbers_beyond_mysqls_range_are_refused_not_overflowed() {
        // MySQL numbers transactions 1 to 2^63 - 2; a set naming more is malformed.
        assert!(GtidSet::parse(&format!("{A}:{}", u64::MAX)).is_err());
        assert!(GtidSet::parse(&format!("{A}:5-{}", u64::MAX)).is_err());
        assert!(GtidSet::parse(&format!("{A}:{}", i64::MAX)).is_err());
        let last = i64::MAX as u64 - 1;
        let set = GtidSet::parse(&format!("{A}:{last}")).unwrap();
        assert_eq!(set.to_string(), format!("{A}:{last}"));
        let uuid = parse_uuid(A).unwrap();
        for number in [0, i64::MAX as u64, u64::MAX] {
            let event = mysql_common::binlog::events::GtidEvent::new(uuid, number);
            assert!(Gtid::from_mysql(&event).is_err(), "{number}");
        }
        let event = mysql_common::binlog::events::GtidEvent::new(uuid, last);
        assert_eq!(
            Gtid::from_mysql(&event).unwrap().to_string(),
            format!("{A}:{last}")
        );
    }

    #[test]
    fn a_stream_is_behind_at_or_past_a_positions_state() {
        let state = |text: &str| GtidState::parse(text).unwrap();
        let reached = |stream: &str, target: &str| state(stream).reached(&state(target));
        assert_eq!(reached("0-1-10,1-2-5", "0-1-10,1-2-5"), Reached::At);
        assert_eq!(reached("0-1-10,1-2-5", "0-1-10,1-2-6"), Reached::Behind);
        assert_eq!(
            reached("0-1-10", "0-1-10,1-2-1"),
            Reached::Behind,
            "a domain not seen yet"
        );
        assert_eq!(reached("0-1-11,1-2-5", "0-1-10,1-2-6"), Reached::Past);
        assert_eq!(
            reached("0-1-10,1-2-1", "0-1-10"),
            Reached::Past,
            "a domain after it"
        );
    }

    #[test]
    fn a_state_includes_a_target_only_when_every_domain_is_there() {
        let state = |text: &str| GtidState::parse(text).unwrap();
        let includes = |stream: &str, target: &str| state(stream).includes(&state(target));
        assert!(includes("0-1-10,1-2-5", "0-1-10,1-2-5"));
        assert!(includes("0-1-11,1-2-5", "0-1-10,1-2-5"));
        assert!(
            !includes("0-1-11,1-2-4", "0-1-10,1-2-5"),
            "one domain ahead does not make up for another behind"
        );
        assert!(!includes("0-1-10", "0-1-10,1-2-1"), "a domain not seen yet");
        assert!(includes("0-1-10,1-2-1", "0-1-10"));
    }
}
