//! The spool of one streamed (in-progress) transaction.
//!
//! With `streaming 'on'`, PostgreSQL sends a large transaction in blocks before it commits.
//! Its changes are kept here as the raw pgoutput messages (with their LSN and the relation
//! versions they refer to) until Stream Commit replays them or Stream Abort discards them. Up
//! to a memory threshold they stay in memory; beyond it everything moves to an anonymous
//! temporary file, so memory stays bounded whatever the size of the transaction. A
//! subtransaction abort cuts the spool back to where that subtransaction began.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use super::error::PostgresError;
use super::lsn::Lsn;
use super::table::Relation;

/// One spooled change.
pub struct Entry {
    pub lsn: Lsn,
    /// Indexes into the spool's relation list.
    pub relations: Vec<u32>,
    pub raw: Bytes,
}

enum Storage {
    Memory(Vec<Entry>),
    Disk { writer: BufWriter<File> },
}

pub struct Spool {
    storage: Storage,
    count: usize,
    bytes: usize,
    /// Bytes written to disk so far (the file length once flushed).
    disk_len: u64,
    /// Where each (sub)transaction's first change sits: (entry count, disk offset).
    starts: HashMap<u32, (usize, u64)>,
    relations: Vec<Arc<Relation>>,
    memory_limit: usize,
    spill_dir: Option<PathBuf>,
}

impl Spool {
    pub fn new(memory_limit: usize, spill_dir: Option<PathBuf>) -> Self {
        Spool {
            storage: Storage::Memory(Vec::new()),
            count: 0,
            bytes: 0,
            disk_len: 0,
            starts: HashMap::new(),
            relations: Vec::new(),
            memory_limit,
            spill_dir,
        }
    }

    #[cfg(test)]
    pub fn is_on_disk(&self) -> bool {
        matches!(self.storage, Storage::Disk { .. })
    }

    /// Index of `relation` in this spool's relation list (added when new).
    pub fn relation_index(&mut self, relation: &Arc<Relation>) -> u32 {
        match self.relations.iter().position(|r| Arc::ptr_eq(r, relation)) {
            Some(i) => i as u32,
            None => {
                self.relations.push(relation.clone());
                (self.relations.len() - 1) as u32
            }
        }
    }

    /// Adds a change of (sub)transaction `xid`.
    pub fn push(&mut self, xid: u32, entry: Entry) -> Result<(), PostgresError> {
        self.starts
            .entry(xid)
            .or_insert((self.count, self.disk_len));
        self.count += 1;
        self.bytes += entry.raw.len() + 32;
        match &mut self.storage {
            Storage::Memory(entries) => {
                entries.push(entry);
                if self.bytes > self.memory_limit {
                    self.spill()?;
                }
            }
            Storage::Disk { writer } => {
                self.disk_len += write_entry(writer, &entry).map_err(PostgresError::Spill)?
            }
        }
        Ok(())
    }

    fn spill(&mut self) -> Result<(), PostgresError> {
        let file = match &self.spill_dir {
            Some(dir) => tempfile::tempfile_in(dir),
            None => tempfile::tempfile(),
        }
        .map_err(PostgresError::Spill)?;
        let mut writer = BufWriter::with_capacity(1 << 20, file);
        let Storage::Memory(entries) =
            std::mem::replace(&mut self.storage, Storage::Memory(Vec::new()))
        else {
            return Ok(());
        };
        // Offsets of subtransaction starts were recorded as 0 while in memory: recompute.
        let mut offsets = Vec::with_capacity(entries.len());
        let mut offset = 0u64;
        for entry in &entries {
            offsets.push(offset);
            offset += write_entry(&mut writer, entry).map_err(PostgresError::Spill)?;
        }
        for start in self.starts.values_mut() {
            start.1 = offsets.get(start.0).copied().unwrap_or(offset);
        }
        self.disk_len = offset;
        self.storage = Storage::Disk { writer };
        tracing::debug!(
            entries = self.count,
            bytes = offset,
            "streamed transaction spilled to disk"
        );
        Ok(())
    }

    /// Drops the changes of subtransaction `subxid` and everything after them.
    pub fn abort_subtransaction(&mut self, subxid: u32) -> Result<(), PostgresError> {
        let Some((index, offset)) = self.starts.get(&subxid).copied() else {
            return Ok(());
        };
        self.starts.retain(|_, start| start.0 < index);
        self.count = index;
        match &mut self.storage {
            Storage::Memory(entries) => {
                entries.truncate(index);
                self.bytes = entries.iter().map(|e| e.raw.len() + 32).sum();
            }
            Storage::Disk { writer } => {
                writer.flush().map_err(PostgresError::Spill)?;
                let file = writer.get_mut();
                file.set_len(offset).map_err(PostgresError::Spill)?;
                file.seek(SeekFrom::Start(offset))
                    .map_err(PostgresError::Spill)?;
                self.disk_len = offset;
            }
        }
        Ok(())
    }

    /// Every change in order, for replay at Stream Commit.
    pub fn into_entries(self) -> Result<(Vec<Arc<Relation>>, Entries), PostgresError> {
        let entries = match self.storage {
            Storage::Memory(entries) => Entries::Memory(entries.into_iter()),
            Storage::Disk { writer } => {
                let mut file = writer
                    .into_inner()
                    .map_err(|e| PostgresError::Spill(e.into_error()))?;
                file.seek(SeekFrom::Start(0))
                    .map_err(PostgresError::Spill)?;
                Entries::Disk {
                    reader: BufReader::with_capacity(1 << 20, file),
                    remaining: self.count,
                }
            }
        };
        Ok((self.relations, entries))
    }
}

/// The changes of a spool, read back in order.
pub enum Entries {
    Memory(std::vec::IntoIter<Entry>),
    Disk {
        reader: BufReader<File>,
        remaining: usize,
    },
}

impl Entries {
    pub fn next_entry(&mut self) -> Result<Option<Entry>, PostgresError> {
        match self {
            Entries::Memory(iter) => Ok(iter.next()),
            Entries::Disk { reader, remaining } => {
                if *remaining == 0 {
                    return Ok(None);
                }
                *remaining -= 1;
                read_entry(reader).map(Some).map_err(PostgresError::Spill)
            }
        }
    }
}

/// `[lsn u64][relation count u32][relations u32...][raw len u32][raw]`; returns bytes written.
fn write_entry(out: &mut impl Write, entry: &Entry) -> std::io::Result<u64> {
    out.write_all(&entry.lsn.0.to_le_bytes())?;
    out.write_all(&(entry.relations.len() as u32).to_le_bytes())?;
    for r in &entry.relations {
        out.write_all(&r.to_le_bytes())?;
    }
    out.write_all(&(entry.raw.len() as u32).to_le_bytes())?;
    out.write_all(&entry.raw)?;
    Ok((8 + 4 + 4 * entry.relations.len() + 4 + entry.raw.len()) as u64)
}

/// Reads one entry; a damaged count or length fails at the end of the file instead of being
/// allocated up front.
pub(super) fn read_entry(input: &mut impl Read) -> std::io::Result<Entry> {
    let mut u64_buf = [0u8; 8];
    let mut u32_buf = [0u8; 4];
    input.read_exact(&mut u64_buf)?;
    let lsn = Lsn(u64::from_le_bytes(u64_buf));
    input.read_exact(&mut u32_buf)?;
    let count = u32::from_le_bytes(u32_buf);
    let mut relations = Vec::with_capacity((count as usize).min(1024));
    for _ in 0..count {
        input.read_exact(&mut u32_buf)?;
        relations.push(u32::from_le_bytes(u32_buf));
    }
    input.read_exact(&mut u32_buf)?;
    let len = u64::from(u32::from_le_bytes(u32_buf));
    let mut raw = Vec::new();
    if input.take(len).read_to_end(&mut raw)? as u64 != len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Entry {
        lsn,
        relations,
        raw: Bytes::from(raw),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64) -> Entry {
        Entry {
            lsn: Lsn(n),
            relations: vec![0],
            raw: Bytes::from(vec![n as u8; 100]),
        }
    }

    fn drain(spool: Spool) -> Vec<u64> {
        let (_, mut entries) = spool.into_entries().unwrap();
        let mut out = Vec::new();
        while let Some(e) = entries.next_entry().unwrap() {
            assert_eq!(e.raw.len(), 100);
            out.push(e.lsn.0);
        }
        out
    }

    #[test]
    fn small_transactions_stay_in_memory() {
        let mut spool = Spool::new(1 << 20, None);
        for n in 0..10 {
            spool.push(1, entry(n)).unwrap();
        }
        assert!(!spool.is_on_disk());
        assert_eq!(drain(spool), (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn large_transactions_spill_and_replay_in_order() {
        let mut spool = Spool::new(1000, None);
        for n in 0..500 {
            spool.push(1, entry(n)).unwrap();
        }
        assert!(spool.is_on_disk());
        assert_eq!(drain(spool), (0..500).collect::<Vec<_>>());
    }

    #[test]
    fn subtransaction_abort_cuts_back_in_memory_and_on_disk() {
        for limit in [1 << 20, 1000] {
            let mut spool = Spool::new(limit, None);
            for n in 0..20 {
                spool.push(1, entry(n)).unwrap();
            }
            for n in 20..30 {
                spool.push(2, entry(n)).unwrap();
            }
            spool.abort_subtransaction(2).unwrap();
            for n in 30..35 {
                spool.push(3, entry(n)).unwrap();
            }
            let expected: Vec<u64> = (0..20).chain(30..35).collect();
            assert_eq!(drain(spool), expected, "limit {limit}");
        }
    }

    /// A reader that remembers the largest buffer it was asked to fill.
    struct Probe<'a> {
        data: &'a [u8],
        largest: usize,
    }

    impl Read for Probe<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.largest = self.largest.max(buf.len());
            self.data.read(buf)
        }
    }

    #[test]
    fn damaged_entries_allocate_only_what_is_there() {
        // A length of 4 GiB over 3 bytes: a read error, without a 4 GiB buffer to read into.
        let mut huge_len = 7u64.to_le_bytes().to_vec();
        huge_len.extend(0u32.to_le_bytes());
        huge_len.extend(u32::MAX.to_le_bytes());
        huge_len.extend(b"abc");
        let mut probe = Probe {
            data: &huge_len,
            largest: 0,
        };
        assert!(read_entry(&mut probe).is_err());
        assert!(probe.largest < 1 << 20, "a {} byte buffer", probe.largest);
        // A count of 4 G relations: the same.
        let mut huge_count = 7u64.to_le_bytes().to_vec();
        huge_count.extend(u32::MAX.to_le_bytes());
        huge_count.extend([1, 0, 0, 0]);
        assert!(read_entry(&mut &huge_count[..]).is_err());
        let mut whole = Vec::new();
        write_entry(&mut whole, &entry(3)).unwrap();
        let back = read_entry(&mut &whole[..]).unwrap();
        assert_eq!(
            (back.lsn, back.relations, back.raw.len()),
            (Lsn(3), vec![0], 100)
        );
    }
}
