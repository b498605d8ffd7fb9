//! Entry points for fuzzing the decoders of bytes from the server or a checkpoint (see `fuzz/`
//! and `tests/fuzz_corpus.rs`). Each takes arbitrary bytes and runs them through the same
//! functions the source uses; any panic is a bug. Not part of the supported API.

use mysql_common::binlog::consts::BinlogVersion;
use mysql_common::binlog::events::{EventData, RowsEventData, TableMapEvent};
use mysql_common::binlog::EventStreamReader;
use mysql_common::constants::ColumnType;

use super::decode::TableRows;
use super::gtid::{Gtid, GtidState};
use super::position::{BinlogPosition, RankBy};
use super::table::{self, CatalogColumn};
use super::{raw_events, stream, value};

const EVENT_HEADER: usize = 19;
const CHECKSUM: usize = 4;
const MAX_ROWS: usize = 16;

/// Binlog events one after the other, as the server sends them (one event per packet), read
/// by the library's event reader as the stream reads them, then mapped the way the stream
/// maps them: GTIDs into a state, TABLE_MAPs into shapes (from the event's metadata, or a
/// stand-in catalog when it has no column names) and row decoders, row images into values.
pub fn binlog_events(data: &[u8]) {
    let mut reader = EventStreamReader::new(BinlogVersion::Version4);
    let mut gtids = GtidState::parse("").expect("the empty state");
    let mut rest = data;
    while let Some(size) = rest.get(9..13) {
        let size = u32::from_le_bytes(size.try_into().expect("4 bytes")) as usize;
        // The event reader panics on an event shorter than its header says, and on one with
        // less than a checksum's 4 bytes of body when checksums are on (mysql_common 0.37):
        // the stream turns such a panic into an error (see `stream::next_event`).
        if size > rest.len() {
            break;
        }
        if size < EVENT_HEADER + CHECKSUM {
            rest = &rest[size.max(1)..];
            continue;
        }
        let (packet, tail) = rest.split_at(size);
        rest = tail;
        let Ok(Some(event)) = reader.read(packet) else {
            continue;
        };
        stream::checksum_ok(&event);
        if event.header().event_type_raw() == raw_events::MARIADB_GTID {
            if let Ok(gtid) = raw_events::mariadb_gtid(&event) {
                commit(&mut gtids, &gtid.gtid);
            }
            continue;
        }
        let Ok(Some(data)) = stream::event_data(&event) else {
            continue;
        };
        match data {
            EventData::RotateEvent(rotate) => {
                if event.header().log_pos() == 0 {
                    raw_events::fake_rotate_name(&event);
                } else {
                    rotate.name();
                }
            }
            EventData::GtidEvent(event) => {
                if let Ok(gtid) = Gtid::from_mysql(&event) {
                    if !matches!(gtids, GtidState::Mysql(_)) {
                        gtids = GtidState::parse(&format!("{gtid}")).unwrap_or(gtids);
                    }
                    commit(&mut gtids, &gtid);
                }
            }
            EventData::RowsEvent(rows) => {
                let Some(tme) = reader.get_tme(rows.table_id()) else {
                    continue;
                };
                let table = match table::shape(tme) {
                    Ok(Some(table)) => table,
                    Ok(None) => match table::shape_from_catalog(tme, &catalog(tme), &[0]) {
                        Ok(table) => table,
                        Err(_) => continue,
                    },
                    Err(_) => continue,
                };
                // Rows are decoded as the stream decodes them: by the decoder built from the
                // TABLE_MAP, and a partial JSON update by the library's reader (which reads
                // the TABLE_MAP's optional metadata again for every row, so a hostile event's
                // cost is rows x metadata x columns: a few rows suffice).
                if matches!(rows, RowsEventData::PartialUpdateRowsEvent(_)) {
                    for pair in rows.rows(tme).take(MAX_ROWS) {
                        let Ok((before, after)) = pair else {
                            break;
                        };
                        for row in [before, after].iter().flatten() {
                            for (i, column) in table.columns.iter().enumerate() {
                                let _ = value::value(column, row.as_ref(i));
                            }
                        }
                    }
                } else {
                    let _ = TableRows::new(table, tme).decode(&rows);
                }
            }
            EventData::QueryEvent(query) => {
                stream::truncated_table(&query.query(), &query.schema());
            }
            _ => {}
        }
    }
}

/// Commits `gtid` and checks that the state's text (a checkpoint token's part) reads back as
/// the same state.
fn commit(state: &mut GtidState, gtid: &Gtid) {
    state.commit(gtid);
    let text = state.to_string();
    let again = GtidState::parse(&text);
    assert_eq!(again.as_ref(), Ok(&*state), "{text}");
}

/// A catalog that fits the event's column types (names and flags made up).
fn catalog(tme: &TableMapEvent<'_>) -> Vec<CatalogColumn> {
    (0..tme.columns_count() as usize)
        .map(|i| {
            let kind = tme.get_column_type(i).ok().flatten();
            let labelled = matches!(
                kind,
                Some(ColumnType::MYSQL_TYPE_ENUM | ColumnType::MYSQL_TYPE_SET)
            );
            CatalogColumn {
                name: format!("c{i}"),
                unsigned: i % 2 == 1,
                binary: i % 3 == 2,
                latin1: i % 5 == 4,
                labels: if labelled {
                    vec!["a".into(), "b".into(), "c".into()]
                } else {
                    Vec::new()
                },
                // Text in a BLOB-typed column is also tried as a document.
                json: i % 7 == 6,
            }
        })
        .collect()
}

/// Text as a checkpoint token, a configured start position and a GTID state: whatever
/// parses must print as text that parses back to the same thing.
pub fn positions(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(position) = BinlogPosition::parse(text) {
        let token = position.token();
        assert_eq!(
            BinlogPosition::parse(&token),
            Some(position.clone()),
            "{token}"
        );
        position.checkpoint(RankBy::File);
        position.checkpoint(RankBy::Gtid);
    }
    if let Ok(position) = BinlogPosition::parse_start(text) {
        position.checkpoint(RankBy::File);
        position.checkpoint(RankBy::Gtid);
        let token = position.token();
        if !position.file.is_empty() {
            assert_eq!(BinlogPosition::parse(&token), Some(position), "{token}");
        }
    }
    if let Ok(state) = GtidState::parse(text) {
        let printed = state.to_string();
        assert_eq!(GtidState::parse(&printed).as_ref(), Ok(&state), "{printed}");
        if let GtidState::Mysql(set) = &state {
            let _ = set.to_sids();
        }
    }
}
