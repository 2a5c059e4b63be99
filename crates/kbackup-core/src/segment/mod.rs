//! Segment files: the append-only record logs of a partition (docs/format.md, "Segment files").
//!
//! A segment starts with a self-describing header (magic, format version, topic, partition,
//! base offset, CRC) and holds length-prefixed, CRC-protected record frames. This module
//! writes segments (buffered, fsync only on request), and scans them: it tells a torn tail (an
//! incomplete last write, repaired by the sink) apart from corruption (reported with position).
//! The frame rules, the scanner and the record body are [`crate::format`]'s; reading a file
//! piecewise is [`SegmentFile`], writing is [`SegmentWriter`].

mod file;
#[cfg(test)]
mod tests;
mod writer;

pub use file::{Block, BlockAt, SegmentFile};
pub use writer::{remove_segment_files, truncate_segment, SegmentWriter};

use crate::error::{Error, Result};
use crate::format::body::{self, MIN_BODY};
use crate::format::bytes::{put_str16, Cursor, DecodeError};
use crate::format::frame;
use crate::format::{block, check_version, FileKind, SEGMENT_VERSION_BLOCKS};
use crate::index::{IndexBuilder, Indexes};
use crate::record::Record;
use std::ops::Range;
use std::path::Path;

/// Largest record body accepted (bytes); defined in [`crate::format::body`].
pub use crate::format::body::MAX_BODY_LEN;
/// Magic at the start of every segment file ("KBSG"); defined in [`crate::format`].
pub use crate::format::SEGMENT_MAGIC;
/// Bytes of the fixed part of a segment header (before the topic string).
pub const HEADER_FIXED_LEN: usize = 40;
/// Bytes of a record frame's prefix (length, length CRC, body CRC).
pub const FRAME_PREFIX_LEN: usize = frame::PREFIX_LEN;

/// The decoded header of a segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Format version the segment was written with.
    pub version: u16,
    /// Total header length in bytes (records start here).
    pub header_len: u16,
    /// Partition number.
    pub partition: i32,
    /// Offset of the first record (equal to the number in the file name).
    pub base_offset: i64,
    /// Offset of the last record of the previous segment when this one was created (-1: none).
    pub prev_last_offset: i64,
    /// Distance in bytes between offset index entries.
    pub index_interval_bytes: u32,
    /// When the segment was created (ms since the epoch, by the writer's clock).
    pub created_ms: i64,
    /// Topic name.
    pub topic: String,
}

impl SegmentHeader {
    /// Encodes the header including its trailing CRC.
    pub fn encode(&self) -> Vec<u8> {
        let len = HEADER_FIXED_LEN + 2 + self.topic.len() + 4;
        let mut h = Vec::with_capacity(len);
        h.extend_from_slice(&SEGMENT_MAGIC);
        h.extend_from_slice(&self.version.to_be_bytes());
        h.extend_from_slice(&(len as u16).to_be_bytes());
        h.extend_from_slice(&self.partition.to_be_bytes());
        h.extend_from_slice(&self.base_offset.to_be_bytes());
        h.extend_from_slice(&self.prev_last_offset.to_be_bytes());
        h.extend_from_slice(&self.index_interval_bytes.to_be_bytes());
        h.extend_from_slice(&self.created_ms.to_be_bytes());
        put_str16(&mut h, &self.topic);
        let crc = crc32fast::hash(&h);
        h.extend_from_slice(&crc.to_be_bytes());
        h
    }

    /// Decodes and checks a header at the start of `data`.
    ///
    /// Answers `Ok(None)` when `data` is a torn creation: shorter than the header, with what is
    /// there consistent with a header being written (the magic, and in a version 1 header a
    /// length that agrees with the topic length). Damage to the header is an error with
    /// position, never taken for a torn creation (the sink deletes those).
    pub fn decode(path: &Path, data: &[u8]) -> Result<Option<SegmentHeader>> {
        let have = data.len().min(4);
        if data[..have] != SEGMENT_MAGIC[..have] {
            return Err(Error::corrupt(
                path,
                0,
                "bad magic: not a kbackup segment file",
            ));
        }
        if data.len() < 8 {
            return Ok(None);
        }
        let version = u16::from_be_bytes([data[4], data[5]]);
        let header_len = u16::from_be_bytes([data[6], data[7]]) as usize;
        if header_len < HEADER_FIXED_LEN + 2 + 4 {
            return Err(Error::corrupt(
                path,
                6,
                format!("header length {header_len} too small"),
            ));
        }
        // A version 1 or 2 header is exactly as long as its topic says; a disagreement is a
        // damaged length (not a header still being written, nor a longer header of a newer
        // version).
        if (version == 1 || version == 2) && data.len() >= HEADER_FIXED_LEN + 2 {
            let topic_len =
                u16::from_be_bytes([data[HEADER_FIXED_LEN], data[HEADER_FIXED_LEN + 1]]);
            if header_len != HEADER_FIXED_LEN + 2 + topic_len as usize + 4 {
                return Err(Error::corrupt(
                    path,
                    6,
                    format!(
                        "header length {header_len} disagrees with the topic length {topic_len}"
                    ),
                ));
            }
        }
        if data.len() < header_len {
            check_version(FileKind::Segment, path, version)?;
            return Ok(None);
        }
        let h = &data[..header_len];
        let body_end = h.len() - 4;
        let crc = u32::from_be_bytes(h[body_end..].try_into().expect("4 bytes"));
        // The CRC sits at header_len - 4 in every version, so it is checked before the version:
        // a flipped version number is damage, not a file from a newer kbackup.
        if crc != crc32fast::hash(&h[..body_end]) {
            return Err(Error::corrupt(
                path,
                0,
                format!("segment header CRC mismatch (header bytes 0..{header_len})"),
            ));
        }
        check_version(FileKind::Segment, path, version)?;
        let header_len = header_len as u16;
        let mut c = Cursor::new(&h[8..body_end]);
        let parse = |c: &mut Cursor<'_>| -> std::result::Result<SegmentHeader, DecodeError> {
            Ok(SegmentHeader {
                version,
                header_len,
                partition: c.i32("partition")?,
                base_offset: c.i64("base offset")?,
                prev_last_offset: c.i64("previous last offset")?,
                index_interval_bytes: c.u32("index interval")?,
                created_ms: c.i64("creation time")?,
                topic: c.str16("topic")?.to_owned(),
            })
        };
        // Later versions may append fields before the CRC; this version's fields come first.
        parse(&mut c).map(Some).map_err(|e| e.into_corrupt(path, 8))
    }
}

/// What a reader finds at a position of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A valid record frame.
    Record {
        /// Record offset.
        offset: i64,
        /// Record timestamp.
        timestamp: i64,
        /// Byte range of the record body in the segment.
        body: Range<usize>,
        /// Position of the next frame.
        next: usize,
    },
    /// The end of the segment, exactly at a frame boundary.
    End,
    /// An incomplete last write: everything from the position on is discarded by the sink.
    Torn(String),
    /// Damage that is not an incomplete last write.
    Corrupt(String),
}

/// Reads the frame at `pos` of a segment's bytes.
///
/// Torn versus corrupt is decided by [`frame::check`], the one definition shared with the
/// group-offsets log (docs/format.md, "Torn tail versus corruption"): only a short frame or
/// zero fill is torn; a complete frame with a bad length or body CRC is corrupt, also as the
/// last frame of the file.
pub fn read_frame(data: &[u8], pos: usize) -> Frame {
    match frame::check(data, pos, MIN_BODY as u32, MAX_BODY_LEN) {
        frame::Check::Complete { body, next } => {
            let bytes = &data[body.clone()];
            record_frame(body, next, bytes)
        }
        frame::Check::End => Frame::End,
        frame::Check::Torn(why) => Frame::Torn(why),
        frame::Check::Corrupt(why) => corrupt_frame(&why),
    }
}

/// The [`Frame`] of a frame that fails the frame rules.
fn corrupt_frame(why: &str) -> Frame {
    Frame::Corrupt(format!("{CORRUPT_LABEL}{why}"))
}

/// Prefix of a corrupt block frame's detail in a version 2 segment.
const BLOCK_LABEL: &str = "block ";

/// Prefix of a corrupt frame's detail (`frame::scan` label).
const CORRUPT_LABEL: &str = "record ";

/// The [`Frame`] of a complete frame whose body (at `body`) holds `bytes`.
fn record_frame(body: Range<usize>, next: usize, bytes: &[u8]) -> Frame {
    match body::check(bytes) {
        Ok((offset, timestamp)) => Frame::Record {
            offset,
            timestamp,
            body,
            next,
        },
        Err(e) => Frame::Corrupt(malformed(&e)),
    }
}

fn malformed(e: &DecodeError) -> String {
    format!(
        "malformed record body at body byte {}: {}",
        e.position, e.detail
    )
}

/// Decodes a record body (as located by [`Frame::Record`]).
pub fn decode_body(path: &Path, data: &[u8], body: Range<usize>) -> Result<Record> {
    let start = body.start;
    let mut c = Cursor::new(&data[body]);
    body::decode(&mut c).map_err(|e| e.into_corrupt(path, start as u64))
}

/// Result of scanning a whole segment.
#[derive(Debug, Clone)]
pub struct SegmentScan {
    /// The header.
    pub header: SegmentHeader,
    /// Number of valid records.
    pub records: u64,
    /// Offset of the first valid record.
    pub first_offset: Option<i64>,
    /// Offset of the last valid record.
    pub last_offset: Option<i64>,
    /// Largest timestamp of the valid records.
    pub max_timestamp: Option<i64>,
    /// Bytes from the start of the file through the last valid record.
    pub valid_len: u64,
    /// Length of the file.
    pub file_len: u64,
    /// Set when the file ends in a torn write: (position, what).
    pub torn: Option<(u64, String)>,
    /// The index entries the valid records imply.
    pub indexes: Indexes,
    /// The index builder after the valid records, so a writer reopening the segment continues
    /// its index exactly where the files end.
    pub builder: IndexBuilder,
    /// Bytes of the valid records uncompressed (record frames; equal to `stored_bytes` in
    /// version 1).
    pub raw_bytes: u64,
    /// Bytes of the valid frames as stored (record frames or block frames, without header).
    pub stored_bytes: u64,
}

impl SegmentScan {
    /// The exact bytes of both index files that the scanned records imply.
    pub fn index_files(&self) -> (Vec<u8>, Vec<u8>) {
        crate::index::encode_files(
            self.header.base_offset,
            self.header.index_interval_bytes,
            &self.indexes,
        )
    }
}

/// Scans a segment file: every CRC, offsets strictly increasing and the first record at the
/// base offset. Corruption is an error with position; a torn tail is reported in the result.
/// A file shorter than its header (a torn creation) gives `Ok(None)`.
pub fn scan(path: &Path) -> Result<Option<SegmentScan>> {
    scan_opened(SegmentFile::open(path)?)
}

/// [`scan`] of a segment already opened, from a file or an object
/// ([`SegmentFile::open_object`]); errors name [`SegmentFile::path`].
pub fn scan_opened(mut file: SegmentFile) -> Result<Option<SegmentScan>> {
    let path_buf = file.path().to_path_buf();
    let path = path_buf.as_path();
    let Some(header) = file.header()? else {
        return Ok(None);
    };
    let mut builder = IndexBuilder::new(header.index_interval_bytes);
    let mut indexes = Indexes::default();
    let (mut records, mut first, mut last, mut max_ts) = (0u64, None, None::<i64>, None::<i64>);
    let (mut raw_bytes, mut stored_bytes) = (0u64, 0u64);
    let start = header.header_len as usize;
    // One record, found at `pos` (its frame, or in version 2 the block holding it).
    let mut record = |pos: usize, offset: i64, timestamp: i64| -> Result<()> {
        if first.is_none() && offset != header.base_offset {
            return Err(Error::corrupt(
                path,
                pos as u64,
                format!(
                    "first record has offset {offset}, the segment's base offset is {}",
                    header.base_offset
                ),
            ));
        }
        if let Some(prev) = last {
            if offset <= prev {
                return Err(Error::corrupt(
                    path,
                    pos as u64,
                    format!("record offset {offset} does not increase (previous {prev})"),
                ));
            }
        }
        if let Some((o, t)) = builder.observe(offset, timestamp, pos as u64) {
            indexes.offsets.push(o);
            indexes.times.extend(t);
        }
        first.get_or_insert(offset);
        last = Some(offset);
        max_ts = Some(max_ts.map_or(timestamp, |m: i64| m.max(timestamp)));
        records += 1;
        Ok(())
    };
    let blocks = header.version >= SEGMENT_VERSION_BLOCKS;
    let label = if blocks { BLOCK_LABEL } else { CORRUPT_LABEL };
    let scanned = frame::scan(&mut file, path, start, label, |pos, bytes| {
        stored_bytes += (FRAME_PREFIX_LEN + bytes.len()) as u64;
        if !blocks {
            raw_bytes += (FRAME_PREFIX_LEN + bytes.len()) as u64;
            let (offset, timestamp) =
                body::check(bytes).map_err(|e| Error::corrupt(path, pos as u64, malformed(&e)))?;
            return record(pos, offset, timestamp);
        }
        let records = block_records(path, pos, bytes)?;
        raw_bytes += records.raw_len as u64;
        for (offset, timestamp) in records.records {
            record(pos, offset, timestamp)?;
        }
        Ok(())
    })?;
    let file_len = file.len();
    let torn = scanned.torn;
    Ok(Some(SegmentScan {
        header,
        records,
        first_offset: first,
        last_offset: last,
        max_timestamp: max_ts,
        valid_len: torn.as_ref().map_or(file_len, |(p, _)| *p),
        file_len,
        torn,
        indexes,
        builder,
        raw_bytes,
        stored_bytes,
    }))
}

/// The records of a version 2 block frame (at `pos`, body `bytes`).
pub(crate) struct BlockRecords {
    /// Raw (decompressed) length of the block.
    pub raw_len: usize,
    /// (offset, timestamp) of each record.
    pub records: Vec<(i64, i64)>,
}

/// Decompresses and checks a block: its raw CRC, every record frame inside it (where nothing
/// may be torn, [`frame::check_in_block`]), and that its header's count and offsets agree with
/// the records. Errors name the block's position in the file.
pub(crate) fn block_records(path: &Path, pos: usize, bytes: &[u8]) -> Result<BlockRecords> {
    let raw = decode_block(path, pos, bytes)?;
    let mut out = Vec::new();
    each_in_block(path, pos, &raw.1, |_, offset, timestamp, _| {
        out.push((offset, timestamp));
        Ok(())
    })?;
    check_block_header(path, pos, &raw.0, &out)?;
    Ok(BlockRecords {
        raw_len: raw.1.len(),
        records: out,
    })
}

/// Decompresses a block frame body at `pos`, checking its raw CRC.
pub(crate) fn decode_block(
    path: &Path,
    pos: usize,
    bytes: &[u8],
) -> Result<(block::BlockHeader, Vec<u8>)> {
    block::decode(bytes).map_err(|why| Error::corrupt(path, pos as u64, format!("block {why}")))
}

/// Checks the header of the block at `pos` against its records' (offset, timestamp).
pub(crate) fn check_block_header(
    path: &Path,
    pos: usize,
    h: &block::BlockHeader,
    records: &[(i64, i64)],
) -> Result<()> {
    let (first, last) = (records.first().map(|r| r.0), records.last().map(|r| r.0));
    if records.len() != h.records as usize
        || first != Some(h.first_offset)
        || last != Some(h.last_offset)
    {
        return Err(Error::corrupt(
            path,
            pos as u64,
            format!(
                "block header says {} records, offsets {} to {}; the block holds {} records, \
                 offsets {first:?} to {last:?}",
                h.records,
                h.first_offset,
                h.last_offset,
                records.len()
            ),
        ));
    }
    Ok(())
}

/// Walks the record frames of a block's raw bytes: `visit(raw position, offset, timestamp,
/// body range)`. Errors are corruption at the block's file position `pos`, naming the record's
/// raw position inside the block.
pub(crate) fn each_in_block(
    path: &Path,
    pos: usize,
    raw: &[u8],
    mut visit: impl FnMut(usize, i64, i64, Range<usize>) -> Result<()>,
) -> Result<()> {
    let mut at = 0;
    loop {
        let why = match frame::check_in_block(raw, at, MIN_BODY as u32, MAX_BODY_LEN) {
            frame::Check::End => return Ok(()),
            frame::Check::Complete { body, next } => match body::check(&raw[body.clone()]) {
                Ok((offset, timestamp)) => {
                    visit(at, offset, timestamp, body)?;
                    at = next;
                    continue;
                }
                Err(e) => malformed(&e),
            },
            frame::Check::Torn(why) | frame::Check::Corrupt(why) => why,
        };
        return Err(Error::corrupt(
            path,
            pos as u64,
            format!("block: record at raw byte {at} of the block: {why}"),
        ));
    }
}

/// Scans a segment file; a file too short to hold its header is a torn creation and is reported
/// as a corrupt error here (the sink handles that case itself before calling this).
pub fn scan_file(path: &Path) -> Result<SegmentScan> {
    scan(path)?.ok_or_else(|| {
        let len = std::fs::metadata(path).map_or(0, |m| m.len());
        Error::corrupt(
            path,
            len,
            "segment is shorter than its header (torn while being created)",
        )
    })
}
