//! Binlog positions: `file:pos`, with the GTID state at that point when the server has one.
//!
//! The checkpoint token is `file:pos` or `file:pos;gtids=<state>`; resuming uses the GTID
//! state when there is one (and `resume_by = "gtid"`), else the file and offset.
//!
//! Checkpoints are ranked ([`RankBy`]) the way the pipeline resumes: by the GTID state's
//! progress when it resumes by GTID, since file names and offsets are each server's own and
//! start lower on a server failed over to; by the file's sequence number, then the offset,
//! when it resumes by file. Offsets are 64-bit: the 32-bit `log_pos` of an event header wraps
//! in a binlog file over 4 GiB, and [`unwrap_offset`] restores it.

use super::config::ResumeBy;
use super::gtid::GtidState;
use crate::checkpoint::Position;

const GTIDS: &str = ";gtids=";

/// The first byte of a GTID rank. A file rank starts with the top byte of its file's sequence
/// number, 0 for any real binlog, so a pipeline that ranked by file (an older version, or a
/// first run on a server without GTIDs yet) moves on to GTID ranks without a regression.
const GTID_RANK: u8 = 1;

/// How a run ranks its checkpoints; fixed when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankBy {
    /// (file sequence number, offset): positions of one server.
    File,
    /// The GTID state's progress ([`GtidState::progress`]): the same on every server of a
    /// replication topology.
    Gtid,
}

/// The 64-bit offset an event's 32-bit `log_pos` stands for, given the end of the previous
/// event of the file (`last`): the candidate nearest to it. Events are far smaller than 2 GiB,
/// so after a wrap past 4 GiB the nearest is the next 4 GiB block.
pub fn unwrap_offset(last: u64, log_pos: u32) -> u64 {
    let block = last >> 32;
    [block.checked_sub(1), Some(block), block.checked_add(1)]
        .into_iter()
        .flatten()
        .map(|b| (b << 32) | u64::from(log_pos))
        .min_by_key(|candidate| candidate.abs_diff(last))
        .unwrap_or(u64::from(log_pos))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinlogPosition {
    /// Empty when only the GTID state is known (a GTID start before the server names its file).
    pub file: String,
    pub pos: u64,
    pub gtids: Option<GtidState>,
}

impl BinlogPosition {
    pub fn new(file: String, pos: u64) -> Self {
        BinlogPosition {
            file,
            pos,
            gtids: None,
        }
    }

    /// Parses a checkpoint token.
    pub fn parse(token: &str) -> Option<Self> {
        let (file_pos, gtids) = match token.split_once(GTIDS) {
            Some((file_pos, gtids)) => (file_pos, Some(GtidState::parse(gtids).ok()?)),
            None => (token, None),
        };
        let (file, pos) = file_pos.rsplit_once(':')?;
        Some(BinlogPosition {
            file: file.to_owned(),
            pos: pos.parse().ok()?,
            gtids,
        })
    }

    /// Parses a configured start: `file:pos`, a MariaDB GTID list or a MySQL GTID set.
    pub fn parse_start(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let looks_like_file = text
            .rsplit_once(':')
            .is_some_and(|(file, pos)| file.contains('.') && pos.parse::<u64>().is_ok());
        // A `;gtids=` inside makes it no checkpoint token: then it is read as a GTID state.
        if let Some(position) = Self::parse(text).filter(|_| looks_like_file) {
            return Ok(position);
        }
        let gtids = GtidState::parse(text).map_err(|e| {
            format!("{e}; write file:pos (binlog.000003:4), a MariaDB GTID list (0-1-57) or a MySQL GTID set (uuid:1-57)")
        })?;
        if gtids.is_empty() {
            return Err("is empty".into());
        }
        Ok(BinlogPosition {
            file: String::new(),
            pos: 4,
            gtids: Some(gtids),
        })
    }

    /// `file:pos`, as events show it.
    pub fn file_pos(&self) -> String {
        format!("{}:{}", self.file, self.pos)
    }

    /// The checkpoint token (with the GTID state when known).
    pub fn token(&self) -> String {
        match &self.gtids {
            Some(gtids) => format!("{}{GTIDS}{gtids}", self.file_pos()),
            None => self.file_pos(),
        }
    }

    /// Whether streaming from here asks for the GTID state rather than the file and offset.
    pub fn streams_by_gtid(&self, resume_by: ResumeBy) -> bool {
        let gtids = self.gtids.as_ref().is_some_and(|g| !g.is_empty());
        self.file.is_empty() || (resume_by == ResumeBy::Gtid && gtids)
    }

    /// How a run starting here ranks its checkpoints: by GTID when the pipeline resumes by
    /// GTID, or when its stored checkpoint is ranked so (a later `resume_by = "file"` must not
    /// rank below it); else by file and offset.
    pub fn rank_by(&self, resume_by: ResumeBy, stored: Option<&Position>) -> RankBy {
        let stored_by_gtid = stored.is_some_and(|p| p.rank.first() == Some(&GTID_RANK));
        if self.gtids.is_some() && (resume_by == ResumeBy::Gtid || stored_by_gtid) {
            RankBy::Gtid
        } else {
            RankBy::File
        }
    }

    /// The checkpoint position, ranked `by` GTID progress (when the GTID state is known) or
    /// by (file sequence number, offset).
    pub fn checkpoint(&self, by: RankBy) -> Position {
        let rank = match (by, &self.gtids) {
            (RankBy::Gtid, Some(gtids)) => {
                let mut rank = vec![GTID_RANK];
                rank.extend(gtids.progress().to_be_bytes());
                rank
            }
            _ => {
                let sequence: u64 = self
                    .file
                    .rsplit('.')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let mut rank = sequence.to_be_bytes().to_vec();
                rank.extend(self.pos.to_be_bytes());
                rank
            }
        };
        Position {
            token: self.token(),
            rank,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rank(token: &str, by: RankBy) -> Vec<u8> {
        BinlogPosition::parse(token).unwrap().checkpoint(by).rank
    }

    #[test]
    fn positions_order_across_rotation() {
        let a = BinlogPosition::parse("binlog.000009:123456").unwrap();
        let b = BinlogPosition::parse("binlog.000010:4").unwrap();
        assert!(a.checkpoint(RankBy::File).rank < b.checkpoint(RankBy::File).rank);
        assert_eq!(b.token(), "binlog.000010:4");
        assert_eq!(BinlogPosition::parse("nonsense"), None);
    }

    #[test]
    fn tokens_carry_the_gtid_state() {
        let mariadb = BinlogPosition::parse("mariadb-bin.000002:1234;gtids=0-1-57,1-1-3").unwrap();
        assert_eq!(mariadb.file_pos(), "mariadb-bin.000002:1234");
        assert_eq!(
            mariadb.token(),
            "mariadb-bin.000002:1234;gtids=0-1-57,1-1-3"
        );
        let set = "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7";
        let mysql = BinlogPosition::parse(&format!("binlog.000001:99;gtids={set}")).unwrap();
        assert!(matches!(mysql.gtids, Some(GtidState::Mysql(_))));
        assert_eq!(mysql.token(), format!("binlog.000001:99;gtids={set}"));
        assert_eq!(BinlogPosition::parse("binlog.000001:99;gtids=0-1"), None);
    }

    #[test]
    fn configured_starts_in_every_notation() {
        let file = BinlogPosition::parse_start("binlog.000003:4").unwrap();
        assert_eq!(
            (file.file.as_str(), file.pos, file.gtids),
            ("binlog.000003", 4, None)
        );
        let mariadb = BinlogPosition::parse_start("0-1-57").unwrap();
        assert_eq!(mariadb.gtids.unwrap().to_string(), "0-1-57");
        let mysql = BinlogPosition::parse_start("3E11FA47-71CA-11E1-9E33-C80AA9429562:23").unwrap();
        assert_eq!(
            mysql.gtids.unwrap().to_string(),
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:23"
        );
        assert!(BinlogPosition::parse_start("yesterday")
            .unwrap_err()
            .contains("file:pos"));
        assert!(BinlogPosition::parse_start("").is_err());
    }

    #[test]
    fn gtid_ranks_follow_the_state_across_lower_numbered_files() {
        // A failover: the new primary's binlog files are numbered below the old one's.
        let old = "binlog.000006:9000;gtids=0-11-30";
        let new = "binlog.000001:700;gtids=0-12-31";
        assert!(rank(old, RankBy::Gtid) < rank(new, RankBy::Gtid));
        assert!(rank(old, RankBy::File) > rank(new, RankBy::File));
        // Several domains: one commit in any domain ranks higher.
        assert!(
            rank("b.000009:1;gtids=0-1-30,1-2-7", RankBy::Gtid)
                < rank("b.000002:1;gtids=0-1-30,1-3-8", RankBy::Gtid)
        );
        // MySQL: the executed set grows by one transaction per commit, on any server.
        let a = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let b = "b9b4712a-df64-11e3-b391-60672090eb04";
        assert!(
            rank(&format!("binlog.000040:9;gtids={a}:1-100"), RankBy::Gtid)
                < rank(
                    &format!("binlog.000003:9;gtids={a}:1-100,{b}:1"),
                    RankBy::Gtid
                )
        );
        // A GTID rank is above every file rank: a pipeline ranked by file moves on to GTID.
        let file = rank("binlog.999999:123456789", RankBy::File);
        assert!(file < rank("binlog.000001:4;gtids=", RankBy::Gtid));
        // Without a GTID state there is nothing to rank by but the file.
        assert_eq!(
            rank("binlog.000002:4", RankBy::Gtid),
            rank("binlog.000002:4", RankBy::File)
        );
    }

    #[test]
    fn a_pipeline_ranks_by_gtid_when_it_resumes_by_gtid_and_keeps_doing_so() {
        let with_state = BinlogPosition::parse("binlog.000002:4;gtids=0-1-5").unwrap();
        let file_only = BinlogPosition::parse("binlog.000002:4").unwrap();
        assert_eq!(with_state.rank_by(ResumeBy::Gtid, None), RankBy::Gtid);
        assert_eq!(with_state.rank_by(ResumeBy::File, None), RankBy::File);
        assert_eq!(file_only.rank_by(ResumeBy::Gtid, None), RankBy::File);
        // resume_by changed to "file" after GTID-ranked checkpoints: still by GTID.
        let stored = with_state.checkpoint(RankBy::Gtid);
        assert_eq!(
            with_state.rank_by(ResumeBy::File, Some(&stored)),
            RankBy::Gtid
        );
        let stored = with_state.checkpoint(RankBy::File);
        assert_eq!(
            with_state.rank_by(ResumeBy::File, Some(&stored)),
            RankBy::File
        );
    }

    #[test]
    fn offsets_above_4_gib_keep_rising_where_log_pos_wraps() {
        const GIB: u64 = 1 << 30;
        // Events of ~300 MiB through a 5 GiB file: log_pos is the offset modulo 2^32.
        let mut last = 4;
        let mut ranks = Vec::new();
        for end in (1..=17).map(|i| 4 + i * 300 * (1 << 20)) {
            let log_pos = (end % (1 << 32)) as u32;
            last = unwrap_offset(last, log_pos);
            assert_eq!(last, end, "log_pos {log_pos}");
            ranks.push(
                BinlogPosition::new("binlog.000007".into(), last)
                    .checkpoint(RankBy::File)
                    .rank,
            );
        }
        assert!(last > 4 * GIB);
        assert!(ranks.windows(2).all(|w| w[0] < w[1]));
        // An offset past 4 GiB round-trips through the token and outranks one below 4 GiB.
        let high = BinlogPosition::parse("binlog.000007:5368709120").unwrap();
        assert_eq!(high.pos, 5 * GIB);
        let low = BinlogPosition::new("binlog.000007".into(), 4 * GIB - 1);
        assert!(low.checkpoint(RankBy::File).rank < high.checkpoint(RankBy::File).rank);
        // Small offsets, and a step back (an event describing the file's start), are as read.
        assert_eq!(unwrap_offset(4, 256), 256);
        assert_eq!(unwrap_offset(9000, 256), 256);
    }

    #[test]
    fn a_start_that_looks_like_a_file_but_is_not_a_token_is_refused() {
        // `file:pos` shape, but `;gtids=` inside it makes it no checkpoint token.
        for text in ["a.b;gtids=x:5", "binlog.1;gtids=0-1-2:7"] {
            assert!(BinlogPosition::parse_start(text).is_err(), "{text}");
        }
    }
}
