//! Binlog positions: `file:pos`, with the GTID state at that point when the server has one.
//!
//! The checkpoint token is `file:pos` or `file:pos;gtids=<state>`; resuming uses the GTID
//! state when there is one (and `resume_by = "gtid"`), else the file and offset. Checkpoints
//! are ordered by the file's sequence number, then the offset.

use super::gtid::GtidState;
use crate::checkpoint::Position;

const GTIDS: &str = ";gtids=";

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

    /// The checkpoint position: rank = (file sequence number, offset).
    pub fn checkpoint(&self) -> Position {
        let sequence: u64 = self
            .file
            .rsplit('.')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let mut rank = sequence.to_be_bytes().to_vec();
        rank.extend(self.pos.to_be_bytes());
        Position {
            token: self.token(),
            rank,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_across_rotation() {
        let a = BinlogPosition::parse("binlog.000009:123456").unwrap();
        let b = BinlogPosition::parse("binlog.000010:4").unwrap();
        assert!(a.checkpoint().rank < b.checkpoint().rank);
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
    fn a_start_that_looks_like_a_file_but_is_not_a_token_is_refused() {
        // `file:pos` shape, but `;gtids=` inside it makes it no checkpoint token.
        for text in ["a.b;gtids=x:5", "binlog.1;gtids=0-1-2:7"] {
            assert!(BinlogPosition::parse_start(text).is_err(), "{text}");
        }
    }
}
