//! Binlog positions: `file:pos`, ordered by the file's sequence number, then the offset.

use crate::checkpoint::Position;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinlogPosition {
    pub file: String,
    pub pos: u64,
}

impl BinlogPosition {
    pub fn parse(token: &str) -> Option<Self> {
        let (file, pos) = token.rsplit_once(':')?;
        Some(BinlogPosition {
            file: file.to_owned(),
            pos: pos.parse().ok()?,
        })
    }

    pub fn token(&self) -> String {
        format!("{}:{}", self.file, self.pos)
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
}
