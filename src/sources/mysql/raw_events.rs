//! Events the library leaves undecoded, read from their bytes.
//!
//! - MariaDB's own GTID event (type 162; with `@mariadb_slave_capability = 4` the server sends
//!   it as it is): sequence number (u64 LE), replication domain (u32 LE), flags (u8); the
//!   server id is the event header's. With FL_GROUP_COMMIT_ID a commit id (u64) follows; with
//!   FL_PREPARED_XA or FL_COMPLETED_XA the xid: format id (u32 LE), gtrid and bqual lengths
//!   (u8 each), their bytes.
//! - XA_PREPARE (type 38, both flavors): one-phase flag (u8), format id (u32 LE), gtrid and
//!   bqual lengths (u32 LE each), their bytes.
//! - The ROTATE event the server makes up when a dump starts (position 0): it comes before the
//!   format description, so the library cannot know the server sends checksums and leaves
//!   the 4 CRC32 bytes at the end of the file name.

use mysql_common::binlog::events::Event;
use mysql_common::proto::MySerialize;

use super::gtid::Gtid;
use super::transaction::{Xid, FL_COMPLETED_XA, FL_GROUP_COMMIT_ID, FL_PREPARED_XA};

pub const MARIADB_GTID: u8 = 162;

/// A MariaDB GTID event: the GTID, its flags, and the xid of an XA group.
#[derive(Debug, PartialEq, Eq)]
pub struct MariadbGtid {
    pub gtid: Gtid,
    pub flags: u8,
    pub xid: Option<Xid>,
}

/// The MariaDB GTID event `event`, or why it cannot be read.
pub fn mariadb_gtid(event: &Event) -> Result<MariadbGtid, String> {
    let data = event.data();
    let short = || format!("a GTID event of {} bytes is too short", data.len());
    let sequence = u64::from_le_bytes(le(data, 0).ok_or_else(short)?);
    let domain = u32::from_le_bytes(le(data, 8).ok_or_else(short)?);
    let flags = *data.get(12).ok_or_else(short)?;
    let mut xid = None;
    if flags & (FL_PREPARED_XA | FL_COMPLETED_XA) != 0 {
        let at = if flags & FL_GROUP_COMMIT_ID != 0 {
            21
        } else {
            13
        };
        let format_id = u32::from_le_bytes(le(data, at).ok_or_else(short)?);
        let gtrid_len = usize::from(*data.get(at + 4).ok_or_else(short)?);
        let bqual_len = usize::from(*data.get(at + 5).ok_or_else(short)?);
        xid = Some(xid_at(data, at + 6, format_id, gtrid_len, bqual_len).ok_or_else(short)?);
    }
    Ok(MariadbGtid {
        gtid: Gtid::Mariadb {
            domain,
            server: event.header().server_id(),
            sequence,
        },
        flags,
        xid,
    })
}

/// An XA_PREPARE event's xid and one-phase flag, or why it cannot be read.
pub fn xa_prepare(data: &[u8]) -> Result<(Xid, bool), String> {
    let short = || format!("an XA_PREPARE event of {} bytes is too short", data.len());
    let one_phase = *data.first().ok_or_else(short)? != 0;
    let format_id = u32::from_le_bytes(le(data, 1).ok_or_else(short)?);
    let length = |at| {
        le(data, at)
            .map(u32::from_le_bytes)
            .and_then(|n| usize::try_from(n).ok())
    };
    let gtrid_len = length(5).ok_or_else(short)?;
    let bqual_len = length(9).ok_or_else(short)?;
    let xid = xid_at(data, 13, format_id, gtrid_len, bqual_len).ok_or_else(short)?;
    Ok((xid, one_phase))
}

/// `N` bytes of `data` at `at`, if there.
fn le<const N: usize>(data: &[u8], at: usize) -> Option<[u8; N]> {
    data.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn xid_at(data: &[u8], at: usize, format_id: u32, gtrid: usize, bqual: usize) -> Option<Xid> {
    let split = at.checked_add(gtrid)?;
    let end = split.checked_add(bqual)?;
    Some(Xid {
        format_id,
        gtrid: data.get(at..split)?.to_vec(),
        bqual: data.get(split..end)?.to_vec(),
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
        assert_eq!(gtid.gtid.to_string(), "3-11-57");
        assert_eq!((gtid.flags, gtid.xid), (0x01, None));
        assert!(mariadb_gtid(&event(MARIADB_GTID, 11, 1234, &body[..6], false)).is_err());
    }

    /// The bytes MariaDB 10.11 writes for `XA START 'x1'` (GTID 0-1-8) and its XA PREPARE.
    #[test]
    fn xa_events_give_their_xid() {
        let body = [
            8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x4c, 1, 0, 0, 0, 2, 0, b'x', b'1', 1, 0xff,
        ];
        let gtid = mariadb_gtid(&event(MARIADB_GTID, 1, 425, &body, false)).unwrap();
        let x1 = Xid {
            format_id: 1,
            gtrid: b"x1".to_vec(),
            bqual: Vec::new(),
        };
        assert_eq!(gtid.gtid.to_string(), "0-1-8");
        assert_eq!(gtid.xid.as_ref(), Some(&x1));
        let prepare = [0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, b'x', b'1'];
        assert_eq!(xa_prepare(&prepare).unwrap(), (x1, false));
        // Lengths beyond the event: errors, not panics.
        let mut long = prepare;
        long[5] = 0xff;
        long[8] = 0xff;
        assert!(xa_prepare(&long).is_err());
        assert!(xa_prepare(&prepare[..7]).is_err());
        assert!(xa_prepare(&[]).is_err());
        let mut cut = body.to_vec();
        cut[17] = 200;
        assert!(mariadb_gtid(&event(MARIADB_GTID, 1, 425, &cut, false)).is_err());
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
