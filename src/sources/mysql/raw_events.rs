//! Events the library leaves undecoded, read from their bytes.
//!
//! - MariaDB's own GTID event (type 162; with `@mariadb_slave_capability = 4` the server sends
//!   it as it is): sequence number (u64 LE), replication domain (u32 LE), flags; the server id
//!   is the event header's.
//! - The ROTATE event the server makes up when a dump starts (position 0): it comes before the
//!   format description, so the library cannot know the server sends checksums and leaves
//!   the 4 CRC32 bytes at the end of the file name.

use mysql_common::binlog::events::Event;
use mysql_common::proto::MySerialize;

use super::gtid::Gtid;

pub const MARIADB_GTID: u8 = 162;

/// The GTID a MariaDB GTID event starts, or `None` when the event is too short.
pub fn mariadb_gtid(event: &Event) -> Option<Gtid> {
    let data = event.data();
    let sequence = u64::from_le_bytes(data.get(..8)?.try_into().ok()?);
    let domain = u32::from_le_bytes(data.get(8..12)?.try_into().ok()?);
    Some(Gtid::Mariadb {
        domain,
        server: event.header().server_id(),
        sequence,
    })
}

/// The file name of a made-up ROTATE event (`data` is the position, then the name), without
/// the checksum bytes when the name ends in the event's own CRC32.
pub fn fake_rotate_name(event: &Event) -> String {
    let name = event.data().get(8..).unwrap_or_default();
    let name = match name.len().checked_sub(4) {
        Some(cut) if ends_in_own_crc(event, cut) => &name[..cut],
        _ => name,
    };
    String::from_utf8_lossy(name).into_owned()
}

/// Whether the last 4 bytes of the event are the CRC32 of the header and the bytes before.
fn ends_in_own_crc(event: &Event, name_len: usize) -> bool {
    let data = event.data();
    let body_len = 8 + name_len;
    let mut header = Vec::new();
    event.header().serialize(&mut header);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header);
    hasher.update(&data[..body_len]);
    hasher.finalize().to_le_bytes() == data[body_len..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_common::binlog::consts::BinlogVersion;
    use mysql_common::binlog::events::{BinlogEventHeader, FormatDescriptionEvent};

    /// An event as the server sends it, read with a format description without checksums
    /// (the state of the reader before the server's own description arrives).
    fn event(type_code: u8, server_id: u32, log_pos: u32, body: &[u8], crc: bool) -> Event {
        let size = (BinlogEventHeader::LEN + body.len() + if crc { 4 } else { 0 }) as u32;
        let mut bytes = 1_700_000_000u32.to_le_bytes().to_vec();
        bytes.push(type_code);
        bytes.extend(server_id.to_le_bytes());
        bytes.extend(size.to_le_bytes());
        bytes.extend(log_pos.to_le_bytes());
        bytes.extend(0u16.to_le_bytes());
        bytes.extend_from_slice(body);
        if crc {
            let sum = crc32fast::hash(&bytes);
            bytes.extend_from_slice(&sum.to_le_bytes());
        }
        let fde = FormatDescriptionEvent::new(BinlogVersion::Version4);
        Event::read(&fde, &bytes[..]).expect("a well-formed event")
    }

    #[test]
    fn mariadb_gtid_event_gives_domain_server_sequence() {
        let mut body = 57u64.to_le_bytes().to_vec();
        body.extend(3u32.to_le_bytes());
        body.push(0x01); // FL_STANDALONE
        let gtid = mariadb_gtid(&event(MARIADB_GTID, 11, 1234, &body, false)).unwrap();
        assert_eq!(gtid.to_string(), "3-11-57");
        assert_eq!(
            mariadb_gtid(&event(MARIADB_GTID, 11, 1234, &body[..6], false)),
            None
        );
    }

    #[test]
    fn fake_rotate_names_lose_their_checksum_bytes() {
        const ROTATE: u8 = 4;
        let mut body = 4u64.to_le_bytes().to_vec();
        body.extend_from_slice(b"mariadb-bin.000007");
        assert_eq!(
            fake_rotate_name(&event(ROTATE, 1, 0, &body, true)),
            "mariadb-bin.000007"
        );
        assert_eq!(
            fake_rotate_name(&event(ROTATE, 1, 0, &body, false)),
            "mariadb-bin.000007"
        );
    }
}
