//! Binlog events built byte by byte for unit tests: a v4 header (timestamp, type, server id,
//! size, end position, flags) in front of `body`, read back through the library as the stream
//! reads events (no checksum).

use mysql_common::binlog::consts::BinlogVersion;
use mysql_common::binlog::events::{Event, FormatDescriptionEvent};

/// The event of `type_code` whose body is `body`.
pub fn event(type_code: u8, body: &[u8]) -> Event {
    let size = (19 + body.len()) as u32;
    let mut bytes = 1_700_000_000u32.to_le_bytes().to_vec();
    bytes.push(type_code);
    bytes.extend(1u32.to_le_bytes()); // server id
    bytes.extend(size.to_le_bytes());
    bytes.extend(4096u32.to_le_bytes()); // end position
    bytes.extend(0u16.to_le_bytes());
    bytes.extend_from_slice(body);
    let fde = FormatDescriptionEvent::new(BinlogVersion::Version4);
    Event::read(&fde, &bytes[..]).expect("a well-formed event")
}
