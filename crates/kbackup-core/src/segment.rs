//! Segment files: the append-only record logs of a partition (docs/format.md, "Segment files").
//!
//! A segment starts with a self-describing header (magic, format version, topic, partition,
//! base offset, CRC) and holds length-prefixed, CRC-protected record frames. This module
//! writes segments (buffered, fsync only on request), and scans them: it tells a torn tail (an
//! incomplete last write, repaired by the sink) apart from corruption (reported with position).

use crate::codec::{self, Cursor, MIN_BODY};
use crate::error::{Error, Result};
use crate::frame;
use crate::index::{self, IndexBuilder, Indexes};
use crate::layout;
use crate::manifest::FORMAT_VERSION;
use crate::perms::Perms;
use crate::record::Record;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Magic at the start of every segment file ("KBSG").
pub const SEGMENT_MAGIC: [u8; 4] = *b"KBSG";
/// Bytes of the fixed part of a segment header (before the topic string).
pub const HEADER_FIXED_LEN: usize = 40;
/// Bytes of a record frame's prefix (length, length CRC, body CRC).
pub const FRAME_PREFIX_LEN: usize = frame::PREFIX_LEN;
/// Largest record body accepted (bytes).
pub const MAX_BODY_LEN: u32 = i32::MAX as u32;

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
        h.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        h.extend_from_slice(&(len as u16).to_be_bytes());
        h.extend_from_slice(&self.partition.to_be_bytes());
        h.extend_from_slice(&self.base_offset.to_be_bytes());
        h.extend_from_slice(&self.prev_last_offset.to_be_bytes());
        h.extend_from_slice(&self.index_interval_bytes.to_be_bytes());
        h.extend_from_slice(&self.created_ms.to_be_bytes());
        codec::put_str16(&mut h, &self.topic);
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
        // A version 1 header is exactly as long as its topic says; a disagreement is a damaged
        // length (not a header still being written, nor a longer header of a newer version).
        if version == 1 && data.len() >= HEADER_FIXED_LEN + 2 {
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
            crate::manifest::check_version(path, version)?;
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
        crate::manifest::check_version(path, version)?;
        let header_len = header_len as u16;
        let mut c = Cursor::new(&h[8..body_end]);
        let parse = |c: &mut Cursor<'_>| -> std::result::Result<SegmentHeader, codec::DecodeError> {
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
        parse(&mut c)
            .map(Some)
            .map_err(|e| Error::corrupt(path, 8 + e.position as u64, e.detail))
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

/// CRC-32 of a frame's length field, stored beside it so a damaged length is never mistaken
/// for an incomplete last write.
pub fn length_crc(len: u32) -> u32 {
    frame::length_crc(len)
}

/// Reads the frame at `pos` of a segment's bytes.
///
/// Torn versus corrupt is decided by [`frame::check`], the one definition shared with the
/// group-offsets log (docs/format.md, "Torn tail versus corruption"): only a short frame or
/// zero fill is torn; a complete frame with a bad length or body CRC is corrupt, also as the
/// last frame of the file.
pub fn read_frame(data: &[u8], pos: usize) -> Frame {
    let rest = &data[pos.min(data.len())..];
    let check = frame::check_at(
        rest,
        || rest.iter().all(|&b| b == 0),
        MIN_BODY as u32,
        MAX_BODY_LEN,
    );
    record_frame(rest, pos, check)
}

/// Turns a frame check at `pos` (ranges relative to `rest`, which starts at `pos`) into a
/// [`Frame`], parsing the record body of a complete frame.
fn record_frame(rest: &[u8], pos: usize, check: frame::Check) -> Frame {
    let (range, next) = match check {
        frame::Check::Complete { body, next } => (body, next),
        frame::Check::End => return Frame::End,
        frame::Check::Torn(why) => return Frame::Torn(why),
        frame::Check::Corrupt(why) => return Frame::Corrupt(format!("record {why}")),
    };
    let mut c = Cursor::new(&rest[range.clone()]);
    match codec::skip_record_body(&mut c).and_then(|r| c.finish("record body").map(|_| r)) {
        Ok((offset, timestamp)) => Frame::Record {
            offset,
            timestamp,
            body: pos + range.start..pos + range.end,
            next: pos + next,
        },
        Err(e) => Frame::Corrupt(format!(
            "malformed record body at body byte {}: {}",
            e.position, e.detail
        )),
    }
}

/// Decodes a record body (as located by [`Frame::Record`]).
pub fn decode_body(path: &Path, data: &[u8], body: Range<usize>) -> Result<Record> {
    let start = body.start;
    let mut c = Cursor::new(&data[body]);
    codec::get_record_body(&mut c)
        .map_err(|e| Error::corrupt(path, (start + e.position) as u64, e.detail))
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
}

/// Scans a segment file: every CRC, offsets strictly increasing and the first record at the
/// base offset. Corruption is an error with position; a torn tail is reported in the result.
/// A file shorter than its header (a torn creation) gives `Ok(None)`.
pub fn scan(path: &Path) -> Result<Option<SegmentScan>> {
    let mut file = SegmentFile::open(path)?;
    let Some(header) = file.header()? else {
        return Ok(None);
    };
    let mut builder = IndexBuilder::new(header.index_interval_bytes);
    let mut indexes = Indexes::default();
    let mut pos = header.header_len as usize;
    let (mut records, mut first, mut last, mut max_ts) = (0u64, None, None::<i64>, None::<i64>);
    let torn = loop {
        match file.read_frame(pos)? {
            Frame::End => break None,
            Frame::Torn(why) => break Some((pos as u64, why)),
            Frame::Corrupt(why) => return Err(Error::corrupt(path, pos as u64, why)),
            Frame::Record {
                offset,
                timestamp,
                next,
                ..
            } => {
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
                pos = next;
            }
        }
    };
    let file_len = file.len();
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
    }))
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

/// Bytes read at once; a frame larger than this is read whole.
const READ_CHUNK: usize = 256 * 1024;
/// The longest possible segment header (`header_len` is a u16).
const HEADER_MAX: usize = u16::MAX as usize;

/// A segment opened for reading with positioned reads (`pread`) into a buffer.
///
/// Never memory-mapped: a file that shrinks while it is read (the sink cutting a torn tail,
/// an operator, a broken volume) must not kill the process with SIGBUS, least of all a
/// Connect worker. A shorter file simply ends earlier, and the frame rules turn that into a
/// clean end, a torn tail or an error. Bytes appended after [`SegmentFile::open`] are not
/// read, as with a mapping taken at open.
pub struct SegmentFile {
    path: PathBuf,
    file: File,
    /// End of the readable bytes: the length at open, lowered if a read finds the file shorter.
    len: u64,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    buf_pos: u64,
}

impl SegmentFile {
    /// Opens a segment for reading.
    pub fn open(path: &Path) -> Result<SegmentFile> {
        let file = File::open(path).map_err(|e| Error::io(e, "open segment", path))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(e, "stat segment", path))?
            .len();
        Ok(SegmentFile {
            path: path.to_path_buf(),
            file,
            len,
            buf: Vec::new(),
            buf_pos: 0,
        })
    }

    /// The segment's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes readable: the length at open, or less if the file was found shorter since.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the file holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Up to `n` bytes from `pos`, fewer only at the end of the file. Valid until the next call.
    fn window(&mut self, pos: u64, n: usize) -> Result<&[u8]> {
        let end = self.len.min(pos.saturating_add(n as u64));
        if pos >= end {
            return Ok(&[]);
        }
        let buf_end = self.buf_pos + self.buf.len() as u64;
        if pos < self.buf_pos || end > buf_end {
            let size = ((end - pos) as usize)
                .max(READ_CHUNK)
                .min((self.len - pos) as usize);
            if self.buf.capacity() > 4 * READ_CHUNK && size <= READ_CHUNK {
                self.buf = Vec::new(); // after a huge record, give the memory back
            }
            self.buf.resize(size, 0);
            let got = read_full_at(&self.file, &mut self.buf, pos)
                .map_err(|e| Error::io(e, "read segment", &self.path))?;
            self.buf.truncate(got);
            self.buf_pos = pos;
            if got < size {
                // The file shrank since it was opened: it now ends here.
                log::debug!(
                    "{}: file shrank to {} bytes while being read",
                    self.path.display(),
                    pos + got as u64
                );
                self.len = pos + got as u64;
            }
        }
        let end = end.min(self.len);
        let from = (pos - self.buf_pos) as usize;
        let to = ((end - self.buf_pos) as usize).max(from);
        Ok(&self.buf[from..to])
    }

    /// Whether every byte from `pos` to the end of the file is zero.
    fn zero_to_end(&mut self, mut pos: u64) -> Result<bool> {
        loop {
            let w = self.window(pos, READ_CHUNK)?;
            if w.is_empty() {
                return Ok(true);
            }
            if w.iter().any(|&b| b != 0) {
                return Ok(false);
            }
            pos += w.len() as u64;
        }
    }

    /// Decodes and checks the header (`Ok(None)`: a torn creation, see
    /// [`SegmentHeader::decode`]).
    pub fn header(&mut self) -> Result<Option<SegmentHeader>> {
        let path = self.path.clone();
        SegmentHeader::decode(&path, self.window(0, HEADER_MAX)?)
    }

    /// Reads the frame at `pos`, with exactly the rules of [`read_frame`].
    pub fn read_frame(&mut self, pos: usize) -> Result<Frame> {
        let at = pos as u64;
        let prefix = self.window(at, FRAME_PREFIX_LEN)?;
        let zero_prefix = prefix.iter().all(|&b| b == 0);
        let want = frame::wanted_len(prefix, MAX_BODY_LEN);
        let zero_to_end = if zero_prefix && !prefix.is_empty() {
            self.zero_to_end(at)?
        } else {
            false
        };
        let rest = self.window(at, want)?;
        let check = frame::check_at(rest, || zero_to_end, MIN_BODY as u32, MAX_BODY_LEN);
        Ok(record_frame(rest, pos, check))
    }

    /// Decodes the body of a record located by [`SegmentFile::read_frame`].
    pub fn decode_body(&mut self, body: Range<usize>) -> Result<Record> {
        let start = body.start;
        let path = self.path.clone();
        let data = self.window(start as u64, body.len())?;
        if data.len() < body.len() {
            return Err(Error::corrupt(
                &path,
                start as u64,
                "record body vanished: the file was truncated while being read",
            ));
        }
        let mut c = Cursor::new(data);
        codec::get_record_body(&mut c)
            .map_err(|e| Error::corrupt(&path, (start + e.position) as u64, e.detail))
    }
}

/// Reads until `buf` is full or the file ends; answers the bytes read.
fn read_full_at(file: &File, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], pos + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Appends records to one segment and its two index files.
///
/// Writes go through `BufWriter`s; nothing is durable until [`SegmentWriter::flush`]. Finish a
/// writer explicitly with [`SegmentWriter::finish`]; dropping it only flushes what the OS may
/// or may not persist.
pub struct SegmentWriter {
    path: PathBuf,
    out: BufWriter<SegFile>,
    oidx: BufWriter<SegFile>,
    tidx: BufWriter<SegFile>,
    header: SegmentHeader,
    builder: IndexBuilder,
    len: u64,
    records: u64,
    last_offset: Option<i64>,
    dirty: bool,
}

/// A file the writer appends to; its writes and fsyncs pass the fault-injection hooks.
struct SegFile {
    file: File,
    path: PathBuf,
}

impl SegFile {
    fn sync(&self) -> std::io::Result<()> {
        crate::faults::fsync(&self.path, || self.file.sync_data())
    }
}

impl Write for SegFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let f = &mut self.file;
        crate::faults::write(&self.path, buf, |b| f.write(b))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn open_append(path: &Path, op: &'static str) -> Result<SegFile> {
    let file = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| Error::io(e, op, path))?;
    Ok(SegFile {
        file,
        path: path.to_path_buf(),
    })
}

/// Removes a segment and its index files; a missing file is fine.
pub fn remove_segment_files(path: &Path) -> Result<()> {
    for p in [
        path.to_path_buf(),
        layout::offset_index_path(path),
        layout::time_index_path(path),
    ] {
        match std::fs::remove_file(&p) {
            Ok(()) => crate::faults::removed(&p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(e, "remove segment file", p)),
        }
    }
    Ok(())
}

/// Cuts a segment back to `len` bytes and fsyncs it (its indexes are rebuilt on reopen).
pub fn truncate_segment(path: &Path, len: u64) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io(e, "open segment to truncate", path))?;
    f.set_len(len)
        .map_err(|e| Error::io(e, "truncate segment", path))?;
    crate::faults::truncated(path, len);
    crate::faults::fsync(path, || f.sync_all()).map_err(|e| Error::io(e, "fsync segment", path))
}

impl SegmentWriter {
    /// Creates a new segment (and its indexes) in `partition_dir`; fails if it already exists.
    /// The caller fsyncs the directory before reporting the segment's records durable. The
    /// files get `perms`.
    pub fn create(
        partition_dir: &Path,
        header: SegmentHeader,
        perms: Perms,
    ) -> Result<SegmentWriter> {
        let path = layout::segment_path(partition_dir, header.base_offset);
        let f = perms
            .create_new(&path)
            .map_err(|e| Error::io(e, "create segment", &path))?;
        // A half-created segment must not stay behind: its name may not match what comes next.
        SegmentWriter::create_files(path.clone(), f, header, perms).inspect_err(|_| {
            let _ = remove_segment_files(&path);
        })
    }

    fn create_files(
        path: PathBuf,
        f: File,
        header: SegmentHeader,
        perms: Perms,
    ) -> Result<SegmentWriter> {
        let bytes = header.encode();
        let mut out = SegFile {
            file: f,
            path: path.clone(),
        };
        out.write_all(&bytes)
            .map_err(|e| Error::io(e, "write segment header", &path))?;
        let mut idx_files = Vec::new();
        for (ipath, magic) in [
            (layout::offset_index_path(&path), index::OFFSET_INDEX_MAGIC),
            (layout::time_index_path(&path), index::TIME_INDEX_MAGIC),
        ] {
            let f = perms
                .create(&ipath)
                .map_err(|e| Error::io(e, "create index", &ipath))?;
            let mut f = SegFile {
                file: f,
                path: ipath.clone(),
            };
            f.write_all(&index::encode_header(
                magic,
                header.base_offset,
                header.index_interval_bytes,
            ))
            .map_err(|e| Error::io(e, "write index header", &ipath))?;
            idx_files.push(f);
        }
        let tidx = idx_files.pop().expect("two files");
        let oidx = idx_files.pop().expect("two files");
        Ok(SegmentWriter {
            path,
            out: BufWriter::with_capacity(256 * 1024, out),
            oidx: BufWriter::new(oidx),
            tidx: BufWriter::new(tidx),
            builder: IndexBuilder::new(header.index_interval_bytes),
            len: bytes.len() as u64,
            header,
            records: 0,
            last_offset: None,
            dirty: true,
        })
    }

    /// Reopens an existing segment for appending after a scan: truncates a torn tail (with a
    /// warning naming file and position) and rewrites index files that disagree with it.
    pub fn reopen(path: &Path, scan: SegmentScan) -> Result<SegmentWriter> {
        if let Some((pos, why)) = &scan.torn {
            log::warn!(
                "{}: torn write at byte {pos} ({why}); truncating {} bytes, the records will be \
                 fetched again from Kafka",
                path.display(),
                scan.file_len - pos
            );
            truncate_segment(path, *pos)?;
        }
        let files = index::encode_files(
            scan.header.base_offset,
            scan.header.index_interval_bytes,
            &scan.indexes,
        );
        if index::compare(path, &files)? != index::IndexState::Valid {
            log::info!(
                "{}: rebuilding index files from the segment",
                path.display()
            );
            index::write_files(path, &files)?;
        }
        // Continue the index where the files end (the scan saw every valid record).
        let builder = scan.builder.clone();
        Ok(SegmentWriter {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(256 * 1024, open_append(path, "open segment")?),
            oidx: BufWriter::new(open_append(
                &layout::offset_index_path(path),
                "open offset index",
            )?),
            tidx: BufWriter::new(open_append(
                &layout::time_index_path(path),
                "open time index",
            )?),
            builder,
            len: scan.valid_len,
            header: scan.header,
            records: scan.records,
            last_offset: scan.last_offset,
            // A previous writer may have died before its fsync: sync once before reporting.
            dirty: true,
        })
    }

    /// Appends one record given its encoded body (docs/format.md "record body").
    pub fn append(&mut self, offset: i64, timestamp: i64, body: &[u8]) -> Result<()> {
        if body.len() > MAX_BODY_LEN as usize {
            return Err(Error::State(format!(
                "record at offset {offset} is {} bytes, larger than the 2 GiB a segment frame holds",
                body.len()
            )));
        }
        let pos = self.len;
        let mut prefix = [0u8; FRAME_PREFIX_LEN];
        let len = body.len() as u32;
        prefix[0..4].copy_from_slice(&len.to_be_bytes());
        prefix[4..8].copy_from_slice(&length_crc(len).to_be_bytes());
        prefix[8..12].copy_from_slice(&crc32fast::hash(body).to_be_bytes());
        self.out
            .write_all(&prefix)
            .and_then(|_| self.out.write_all(body))
            .map_err(|e| Error::io(e, "append to segment", &self.path))?;
        if let Some((o, t)) = self.builder.observe(offset, timestamp, pos) {
            self.oidx
                .write_all(&index::encode_entry(o.offset, o.position as i64))
                .map_err(|e| Error::io(e, "append to offset index", &self.path))?;
            if let Some(t) = t {
                self.tidx
                    .write_all(&index::encode_entry(t.timestamp, t.offset))
                    .map_err(|e| Error::io(e, "append to time index", &self.path))?;
            }
        }
        self.len += (FRAME_PREFIX_LEN + body.len()) as u64;
        self.records += 1;
        self.last_offset = Some(offset);
        self.dirty = true;
        Ok(())
    }

    /// Writes buffered bytes and fsyncs the segment and both indexes.
    pub fn flush(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        for w in [&mut self.out, &mut self.oidx, &mut self.tidx] {
            w.flush()
                .map_err(|e| Error::io(e, "write buffered data to", &w.get_ref().path))?;
            w.get_ref()
                .sync()
                .map_err(|e| Error::io(e, "fsync", &w.get_ref().path))?;
        }
        self.dirty = false;
        Ok(())
    }

    /// Flushes and closes the segment. On failure the buffers are dropped unwritten: the
    /// caller must cut the file back to what it last saw durable (see [`Self::abandon`]).
    pub fn finish(mut self) -> Result<()> {
        let res = self.flush();
        if res.is_err() {
            self.abandon();
        }
        res
    }

    /// Drops the writer after an I/O error without writing its buffers (dropping a
    /// `BufWriter` would write them, after the error, behind a possibly partial frame).
    pub fn abandon(self) {
        for w in [self.out, self.oidx, self.tidx] {
            let _ = w.into_parts();
        }
    }

    /// Path of the segment file.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The segment's header.
    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }
    /// Bytes written so far (header included, buffered bytes included).
    pub fn len(&self) -> u64 {
        self.len
    }
    /// True when the segment holds no record.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }
    /// Number of records.
    pub fn record_count(&self) -> u64 {
        self.records
    }
    /// Offset of the last record appended.
    pub fn last_offset(&self) -> Option<i64> {
        self.last_offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Header, TimestampType};

    fn header(base: i64) -> SegmentHeader {
        SegmentHeader {
            version: FORMAT_VERSION,
            header_len: 0,
            partition: 2,
            base_offset: base,
            prev_last_offset: -1,
            index_interval_bytes: 64,
            created_ms: 123,
            topic: "t".into(),
        }
    }

    fn body(offset: i64) -> Vec<u8> {
        let r = Record {
            offset,
            timestamp: offset * 10,
            timestamp_type: TimestampType::CreateTime,
            key: Some(vec![1; 5]),
            value: Some(vec![2; 20]),
            headers: vec![Header {
                key: "h".into(),
                value: None,
            }],
        };
        let mut b = Vec::new();
        codec::put_record_body(&mut b, &r);
        b
    }

    fn write(dir: &Path, offsets: &[i64]) -> PathBuf {
        let mut w = SegmentWriter::create(dir, header(offsets[0]), Perms::default()).unwrap();
        for &o in offsets {
            w.append(o, o * 10, &body(o)).unwrap();
        }
        let p = w.path().to_path_buf();
        w.finish().unwrap();
        p
    }

    #[test]
    fn header_round_trips_and_crc_is_checked() {
        let h = header(7);
        let bytes = h.encode();
        let back = SegmentHeader::decode(Path::new("x"), &bytes)
            .unwrap()
            .unwrap();
        assert_eq!(back.base_offset, 7);
        assert_eq!(back.topic, "t");
        assert_eq!(back.header_len as usize, bytes.len());
        assert_eq!(
            SegmentHeader::decode(Path::new("x"), &bytes[..10]).unwrap(),
            None
        );
        let mut bad = bytes.clone();
        bad[12] ^= 0x40;
        let e = SegmentHeader::decode(Path::new("x"), &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("CRC"), "{e}");
    }

    #[test]
    fn damaged_header_is_corruption_never_a_torn_creation() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), &[0, 1, 2]);
        let good = std::fs::read(&p).unwrap();
        let hl = header(0).encode().len();
        // Every bit of every header byte: magic, version, length, fields, topic, CRC.
        for at in 0..hl {
            for bit in 0..8 {
                let mut data = good.clone();
                data[at] ^= 1 << bit;
                match SegmentHeader::decode(&p, &data) {
                    Err(Error::Corrupt { position, .. }) => {
                        assert!(position < hl as u64, "byte {at} bit {bit}: at {position}")
                    }
                    other => panic!("byte {at} bit {bit}: {other:?}"),
                }
            }
        }
        // A torn creation (any prefix of the header) holds no record.
        for n in 0..hl {
            assert_eq!(SegmentHeader::decode(&p, &good[..n]).unwrap(), None, "{n}");
        }
    }

    #[test]
    fn scan_finds_records_and_index_matches_writer() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), &[10, 11, 15, 20, 21, 22, 40]);
        let s = scan_file(&p).unwrap();
        assert_eq!(s.records, 7);
        assert_eq!((s.first_offset, s.last_offset), (Some(10), Some(40)));
        assert!(s.torn.is_none());
        assert!(
            s.indexes.offsets.len() > 1,
            "interval 64 must give several entries"
        );
        let written = (
            std::fs::read(layout::offset_index_path(&p)).unwrap(),
            std::fs::read(layout::time_index_path(&p)).unwrap(),
        );
        index::rebuild(&p).unwrap();
        let rebuilt = (
            std::fs::read(layout::offset_index_path(&p)).unwrap(),
            std::fs::read(layout::time_index_path(&p)).unwrap(),
        );
        assert_eq!(written, rebuilt);
    }

    #[test]
    fn torn_tail_is_reported_and_truncated_on_reopen() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), &[0, 1, 2]);
        let full = std::fs::metadata(&p).unwrap().len();
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(full - 5).unwrap();
        let s = scan_file(&p).unwrap();
        assert_eq!(s.records, 2);
        let (pos, _) = s.torn.clone().unwrap();
        let mut w = SegmentWriter::reopen(&p, s).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), pos);
        assert_eq!(w.last_offset(), Some(1));
        w.append(2, 20, &body(2)).unwrap();
        w.finish().unwrap();
        let s = scan_file(&p).unwrap();
        assert_eq!((s.records, s.torn.is_none()), (3, true));
        assert_eq!(std::fs::metadata(&p).unwrap().len(), full);
        assert_eq!(
            index::compare(&p, &index::encode_files(0, 64, &s.indexes)).unwrap(),
            index::IndexState::Valid
        );
    }

    #[test]
    fn crc_mismatch_in_the_middle_is_corruption_with_position() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), &[0, 1, 2]);
        let mut data = std::fs::read(&p).unwrap();
        let hl = header(0).encode().len();
        let second = hl + FRAME_PREFIX_LEN + body(0).len();
        data[second + FRAME_PREFIX_LEN + 30] ^= 0x01;
        std::fs::write(&p, &data).unwrap();
        match scan_file(&p).unwrap_err() {
            Error::Corrupt {
                position, detail, ..
            } => {
                assert_eq!(position, second as u64);
                assert!(detail.contains("CRC"), "{detail}");
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn damaged_length_field_in_the_middle_is_corruption_not_a_torn_tail() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), &[0, 1, 2]);
        let mut data = std::fs::read(&p).unwrap();
        let hl = header(0).encode().len();
        let second = hl + FRAME_PREFIX_LEN + body(0).len();
        // A larger length would reach past the end of the file and look like a torn write.
        data[second + 1] ^= 0x10;
        std::fs::write(&p, &data).unwrap();
        match scan_file(&p).unwrap_err() {
            Error::Corrupt { position, .. } => assert_eq!(position, second as u64),
            e => panic!("{e}"),
        }
    }

    /// Defect 5: a complete last frame with a bad CRC was taken for a torn write and cut off.
    #[test]
    fn defect5_bit_flip_in_the_last_record_is_corruption_not_a_torn_tail() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), &[0, 1, 2]);
        let good = std::fs::read(&p).unwrap();
        let hl = header(0).encode().len();
        let last = hl + 2 * (FRAME_PREFIX_LEN + body(0).len());
        // Body, body CRC, length CRC and length of the last frame.
        for at in [
            good.len() - 3,
            last + 9,
            last + 5,
            last + 3,
            last + FRAME_PREFIX_LEN,
        ] {
            let mut data = good.clone();
            data[at] ^= 0x04;
            std::fs::write(&p, &data).unwrap();
            match scan_file(&p) {
                Err(Error::Corrupt { position, .. }) => {
                    assert_eq!(position, last as u64, "flip at byte {at}")
                }
                other => panic!("flip at byte {at}: expected corruption, got {other:?}"),
            }
        }
    }

    #[test]
    fn torn_tail_is_a_short_frame_or_zero_fill_only() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), &[0, 1, 2]);
        let good = std::fs::read(&p).unwrap();
        let hl = header(0).encode().len();
        let last = hl + 2 * (FRAME_PREFIX_LEN + body(0).len());
        // Every cut inside the last frame leaves a torn tail at its start.
        for cut in 1..good.len() - last {
            std::fs::write(&p, &good[..good.len() - cut]).unwrap();
            let s = scan_file(&p).unwrap();
            assert_eq!(s.torn.map(|t| t.0), Some(last as u64), "cut {cut}");
            assert_eq!(s.records, 2);
        }
        // A short frame whose bytes are followed by zero fill is still torn.
        let mut data = good[..good.len() - 10].to_vec();
        data.extend_from_slice(&[0; 5]);
        std::fs::write(&p, &data).unwrap();
        assert_eq!(scan_file(&p).unwrap().torn.map(|t| t.0), Some(last as u64));
        // Zero fill from a frame boundary to the end (space allocated, never written).
        let mut data = good[..last].to_vec();
        data.extend_from_slice(&[0; 100]);
        std::fs::write(&p, &data).unwrap();
        assert_eq!(scan_file(&p).unwrap().torn.map(|t| t.0), Some(last as u64));
    }

    #[test]
    fn zero_filled_tail_is_torn_not_corrupt() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), &[0, 1]);
        let mut data = std::fs::read(&p).unwrap();
        let len = data.len();
        data.extend_from_slice(&[0u8; 4096]);
        std::fs::write(&p, &data).unwrap();
        let s = scan_file(&p).unwrap();
        assert_eq!(s.torn.unwrap().0, len as u64);
        assert_eq!(s.records, 2);
    }
}
