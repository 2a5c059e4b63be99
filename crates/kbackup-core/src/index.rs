//! Sparse offset and time indexes beside each segment (docs/format.md, "Index files").
//!
//! The indexes let a reader jump close to an offset or a time without scanning a whole segment.
//! They are derived data: the entries follow from the segment alone (its records and the index
//! interval stored in its header), so a missing or stale index is rebuilt, never trusted over
//! the segment. This module only encodes, reads and compares index files; rebuilding them from
//! a segment is `verify::rebuild_index` (so the segment module depends on this one, not the
//! reverse).

use crate::error::{Error, Result};
use crate::format::{check_version, FileKind, INDEX_FORMAT_VERSION};
use crate::layout;
use std::path::{Path, PathBuf};

/// Magic of an offset index file ("KBOI"); defined in [`crate::format`].
pub use crate::format::OFFSET_INDEX_MAGIC;
/// Magic of a time index file ("KBTI"); defined in [`crate::format`].
pub use crate::format::TIME_INDEX_MAGIC;
/// Bytes of an index file header.
pub const INDEX_HEADER_LEN: usize = 24;
/// Bytes of one index entry.
pub const INDEX_ENTRY_LEN: usize = 16;
/// Default distance in bytes between offset index entries.
pub const DEFAULT_INDEX_INTERVAL_BYTES: u32 = 4096;

/// An offset index entry: the record with `offset` starts at byte `position` of the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    /// Record offset.
    pub offset: i64,
    /// Byte position of the record's frame in the segment file.
    pub position: u64,
}

/// A time index entry: every record up to and including `offset` has a timestamp <= `timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    /// Largest timestamp of the segment's records up to `offset`.
    pub timestamp: i64,
    /// Offset of an indexed record (also present in the offset index).
    pub offset: i64,
}

/// Decides which records get index entries; shared by the writer and [`crate::verify::rebuild_index`] so both
/// produce identical files.
#[derive(Debug, Clone)]
pub struct IndexBuilder {
    interval: u64,
    last_indexed_pos: Option<u64>,
    max_ts: i64,
    last_time_ts: Option<i64>,
}

impl IndexBuilder {
    /// A builder that indexes the first record and then one record every `interval` bytes.
    pub fn new(interval_bytes: u32) -> IndexBuilder {
        IndexBuilder {
            interval: u64::from(interval_bytes.max(1)),
            last_indexed_pos: None,
            max_ts: i64::MIN,
            last_time_ts: None,
        }
    }

    /// Feeds one record (in file order); answers the entries to append, if any.
    pub fn observe(
        &mut self,
        offset: i64,
        timestamp: i64,
        position: u64,
    ) -> Option<(OffsetEntry, Option<TimeEntry>)> {
        self.max_ts = self.max_ts.max(timestamp);
        let due = match self.last_indexed_pos {
            None => true,
            Some(last) => position - last >= self.interval,
        };
        if !due {
            return None;
        }
        self.last_indexed_pos = Some(position);
        let time = if self.last_time_ts.is_none_or(|t| self.max_ts > t) {
            self.last_time_ts = Some(self.max_ts);
            Some(TimeEntry {
                timestamp: self.max_ts,
                offset,
            })
        } else {
            None
        };
        Some((OffsetEntry { offset, position }, time))
    }
}

/// Index entries of one segment, in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Indexes {
    /// Offset index entries, increasing in offset and position.
    pub offsets: Vec<OffsetEntry>,
    /// Time index entries, increasing in timestamp and offset.
    pub times: Vec<TimeEntry>,
}

/// The 24-byte header of an index file.
pub fn encode_header(magic: [u8; 4], base_offset: i64, interval: u32) -> [u8; INDEX_HEADER_LEN] {
    let mut h = [0u8; INDEX_HEADER_LEN];
    h[0..4].copy_from_slice(&magic);
    h[4..6].copy_from_slice(&INDEX_FORMAT_VERSION.to_be_bytes());
    // 6..8 reserved, zero.
    h[8..16].copy_from_slice(&base_offset.to_be_bytes());
    h[16..20].copy_from_slice(&interval.to_be_bytes());
    let crc = crc32fast::hash(&h[0..20]);
    h[20..24].copy_from_slice(&crc.to_be_bytes());
    h
}

/// Encodes one 16-byte entry (two big-endian i64).
pub fn encode_entry(a: i64, b: i64) -> [u8; INDEX_ENTRY_LEN] {
    let mut e = [0u8; INDEX_ENTRY_LEN];
    e[0..8].copy_from_slice(&a.to_be_bytes());
    e[8..16].copy_from_slice(&b.to_be_bytes());
    e
}

/// The complete bytes of both index files for a segment.
pub fn encode_files(base_offset: i64, interval: u32, idx: &Indexes) -> (Vec<u8>, Vec<u8>) {
    let mut o = Vec::with_capacity(INDEX_HEADER_LEN + idx.offsets.len() * INDEX_ENTRY_LEN);
    o.extend_from_slice(&encode_header(OFFSET_INDEX_MAGIC, base_offset, interval));
    for e in &idx.offsets {
        o.extend_from_slice(&encode_entry(e.offset, e.position as i64));
    }
    let mut t = Vec::with_capacity(INDEX_HEADER_LEN + idx.times.len() * INDEX_ENTRY_LEN);
    t.extend_from_slice(&encode_header(TIME_INDEX_MAGIC, base_offset, interval));
    for e in &idx.times {
        t.extend_from_slice(&encode_entry(e.timestamp, e.offset));
    }
    (o, t)
}

fn check_header(path: &Path, data: &[u8], magic: [u8; 4], base_offset: i64) -> Result<()> {
    if data.len() < INDEX_HEADER_LEN {
        return Err(Error::corrupt(
            path,
            0,
            "index file shorter than its 24-byte header",
        ));
    }
    if data[0..4] != magic {
        return Err(Error::corrupt(
            path,
            0,
            "bad magic: not a kbackup index file",
        ));
    }
    let crc = u32::from_be_bytes(data[20..24].try_into().expect("4 bytes"));
    if crc != crc32fast::hash(&data[0..20]) {
        return Err(Error::corrupt(path, 20, "index header CRC mismatch"));
    }
    let version = u16::from_be_bytes([data[4], data[5]]);
    let kind = if magic == OFFSET_INDEX_MAGIC {
        FileKind::OffsetIndex
    } else {
        FileKind::TimeIndex
    };
    check_version(kind, path, version)?;
    let base = i64::from_be_bytes(data[8..16].try_into().expect("8 bytes"));
    if base != base_offset {
        return Err(Error::corrupt(
            path,
            8,
            format!("index is for base offset {base}, its segment starts at {base_offset}"),
        ));
    }
    if !(data.len() - INDEX_HEADER_LEN).is_multiple_of(INDEX_ENTRY_LEN) {
        return Err(Error::corrupt(
            path,
            data.len() as u64,
            "index length is not a whole number of 16-byte entries",
        ));
    }
    Ok(())
}

fn entries(data: &[u8]) -> impl Iterator<Item = (i64, i64)> + '_ {
    data[INDEX_HEADER_LEN..]
        .chunks_exact(INDEX_ENTRY_LEN)
        .map(|c| {
            (
                i64::from_be_bytes(c[0..8].try_into().expect("8 bytes")),
                i64::from_be_bytes(c[8..16].try_into().expect("8 bytes")),
            )
        })
}

/// Reads an offset index file and checks its structure (header, ordering, positions within
/// `segment_len`). It does not prove each entry points at the right record; readers check the
/// record they land on.
pub fn read_offset_index(
    path: &Path,
    base_offset: i64,
    segment_len: u64,
) -> Result<Vec<OffsetEntry>> {
    let data = std::fs::read(path).map_err(|e| Error::io(e, "read offset index", path))?;
    parse_offset_index(&data, path, base_offset, segment_len)
}

/// [`read_offset_index`] over bytes already read from `path` (a file or an object, for
/// messages).
pub fn parse_offset_index(
    data: &[u8],
    path: &Path,
    base_offset: i64,
    segment_len: u64,
) -> Result<Vec<OffsetEntry>> {
    check_header(path, data, OFFSET_INDEX_MAGIC, base_offset)?;
    let mut out: Vec<OffsetEntry> = Vec::with_capacity((data.len() - INDEX_HEADER_LEN) / 16);
    for (i, (offset, position)) in entries(data).enumerate() {
        let at = (INDEX_HEADER_LEN + i * INDEX_ENTRY_LEN) as u64;
        let bad_order = out
            .last()
            .is_some_and(|p| offset <= p.offset || position as u64 <= p.position);
        if position < 0 || position as u64 >= segment_len || offset < base_offset || bad_order {
            return Err(Error::corrupt(
                path,
                at,
                format!("index entry (offset {offset}, position {position}) is out of order or beyond the segment"),
            ));
        }
        out.push(OffsetEntry {
            offset,
            position: position as u64,
        });
    }
    Ok(out)
}

/// Reads a time index file and checks its header and ordering.
pub fn read_time_index(path: &Path, base_offset: i64) -> Result<Vec<TimeEntry>> {
    let data = std::fs::read(path).map_err(|e| Error::io(e, "read time index", path))?;
    parse_time_index(&data, path, base_offset)
}

/// [`read_time_index`] over bytes already read from `path` (a file or an object).
pub fn parse_time_index(data: &[u8], path: &Path, base_offset: i64) -> Result<Vec<TimeEntry>> {
    check_header(path, data, TIME_INDEX_MAGIC, base_offset)?;
    let mut out: Vec<TimeEntry> = Vec::new();
    for (i, (timestamp, offset)) in entries(data).enumerate() {
        let at = (INDEX_HEADER_LEN + i * INDEX_ENTRY_LEN) as u64;
        if out
            .last()
            .is_some_and(|p| timestamp <= p.timestamp || offset <= p.offset)
        {
            return Err(Error::corrupt(path, at, "time index entries out of order"));
        }
        out.push(TimeEntry { timestamp, offset });
    }
    Ok(out)
}

/// An offset `X` of the segment at `segment_path` such that every record of it with an offset
/// below `X` has a timestamp below `timestamp`, found with its index files alone (the segment's
/// base offset when they say nothing). The time index holds the largest timestamp SO FAR, so
/// out-of-order timestamps never make this skip a record at or after `timestamp`; a point-in-
/// time restore scans at most one index interval from `X`.
pub fn skip_before_time(segment_path: &Path, base_offset: i64, timestamp: i64) -> i64 {
    skip_before_time_with(
        read_time_index(&layout::time_index_path(segment_path), base_offset),
        || {
            let len = std::fs::metadata(segment_path).map_or(0, |m| m.len());
            read_offset_index(&layout::offset_index_path(segment_path), base_offset, len).ok()
        },
        base_offset,
        timestamp,
    )
}

/// [`skip_before_time`] over a time index already read and a way to read the offset index
/// (only called when no time entry reaches `timestamp`), for segments in object storage.
pub fn skip_before_time_with(
    times: Result<Vec<TimeEntry>>,
    offsets: impl FnOnce() -> Option<Vec<OffsetEntry>>,
    base_offset: i64,
    timestamp: i64,
) -> i64 {
    let times = match times {
        Ok(t) => t,
        Err(e) => {
            log::warn!("{e}; scanning the segment for the time instead (run `kbackup reindex`)");
            return base_offset;
        }
    };
    let k = times.partition_point(|e| e.timestamp < timestamp);
    if k == 0 {
        return base_offset;
    }
    if k < times.len() {
        return times[k - 1].offset;
    }
    // No entry reaches `timestamp`: the maximum never rose after the last time entry, so every
    // record up to the last OFFSET index entry is older too.
    offsets()
        .and_then(|o| o.last().map(|e| e.offset))
        .unwrap_or(times[k - 1].offset)
        .max(times[k - 1].offset)
}

/// Outcome of comparing a segment's index files with what its records imply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexState {
    /// Both files exist and hold exactly the expected bytes.
    Valid,
    /// A file is missing.
    Missing(String),
    /// A file exists but differs from what the segment implies, first at byte `position`.
    Stale {
        /// The index file.
        file: String,
        /// First byte that differs (the expected length when one file is a prefix of the other).
        position: u64,
    },
}

/// Compares the index files of `segment_path` with the expected contents.
pub fn compare(segment_path: &Path, expected: &(Vec<u8>, Vec<u8>)) -> Result<IndexState> {
    compare_with(
        segment_path,
        expected,
        |path| match std::fs::read(path) {
            Ok(have) => Ok(Some(have)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(e, "read index", path)),
        },
        Path::to_path_buf,
    )
}

/// [`compare`] for a segment at `segment_at` read by `read` (`None`: no such index), naming
/// the index files by `display` (an object's URL in a bucket).
pub fn compare_with(
    segment_at: &Path,
    expected: &(Vec<u8>, Vec<u8>),
    read: impl Fn(&Path) -> Result<Option<Vec<u8>>>,
    display: impl Fn(&Path) -> PathBuf,
) -> Result<IndexState> {
    let pairs = [
        (layout::offset_index_path(segment_at), &expected.0),
        (layout::time_index_path(segment_at), &expected.1),
    ];
    for (path, want) in pairs {
        match read(&path)? {
            Some(have) if &have == want => {}
            Some(have) => {
                let position = have
                    .iter()
                    .zip(want.iter())
                    .position(|(a, b)| a != b)
                    .unwrap_or(have.len().min(want.len()));
                return Ok(IndexState::Stale {
                    file: display(&path).display().to_string(),
                    position: position as u64,
                });
            }
            None => return Ok(IndexState::Missing(display(&path).display().to_string())),
        }
    }
    Ok(IndexState::Valid)
}

/// Replaces both index files; a new index gets the mode of its segment (derived data is as
/// readable as the data it derives from, no more).
pub fn write_files(segment_path: &Path, files: &(Vec<u8>, Vec<u8>)) -> Result<()> {
    let perms = crate::perms::Perms::of_file(segment_path)?;
    layout::write_atomic(&layout::offset_index_path(segment_path), &files.0, perms)?;
    layout::write_atomic(&layout::time_index_path(segment_path), &files.1, perms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_indexes_first_record_then_every_interval() {
        let mut b = IndexBuilder::new(100);
        let mut got = vec![];
        // Records of 40 bytes starting after a 50-byte header.
        for i in 0..10i64 {
            let pos = 50 + 40 * i as u64;
            if let Some((o, t)) = b.observe(i * 2, 1000 - i, pos) {
                got.push((o, t));
            }
        }
        let offsets: Vec<i64> = got.iter().map(|(o, _)| o.offset).collect();
        // positions 50, 170 (>=150), 290, 410: every third record.
        assert_eq!(offsets, vec![0, 6, 12, 18]);
        // Timestamps decrease, so only the first entry gets a time entry.
        assert_eq!(got.iter().filter(|(_, t)| t.is_some()).count(), 1);
        assert_eq!(got[0].1.unwrap().timestamp, 1000);
    }

    #[test]
    fn index_header_is_checked() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.offset-index");
        let (o, _) = encode_files(
            5,
            4096,
            &Indexes {
                offsets: vec![OffsetEntry {
                    offset: 5,
                    position: 60,
                }],
                times: vec![],
            },
        );
        std::fs::write(&p, &o).unwrap();
        assert_eq!(read_offset_index(&p, 5, 100).unwrap().len(), 1);
        assert!(read_offset_index(&p, 6, 100).is_err()); // wrong base
        assert!(read_offset_index(&p, 5, 50).is_err()); // entry beyond segment
        let mut bad = o.clone();
        bad[9] ^= 1;
        std::fs::write(&p, &bad).unwrap();
        let e = read_offset_index(&p, 5, 100).unwrap_err().to_string();
        assert!(e.contains("CRC"), "{e}");
    }
}
