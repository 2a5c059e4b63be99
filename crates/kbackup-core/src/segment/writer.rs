//! Appending to a segment and its index files: buffered, durable only on flush.

use super::{SegmentHeader, SegmentScan, FRAME_PREFIX_LEN, MAX_BODY_LEN};
use crate::error::{Error, Result};
use crate::format::block::{self, Codec, Compression};
use crate::format::{frame, BLOCK_RAW_TARGET, SEGMENT_VERSION_BLOCKS};
use crate::index::{self, IndexBuilder};
use crate::layout;
use crate::perms::Perms;
use crate::storage::{PartWriter, Store};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Write buffer of a version 1 segment, whose record frames are written one by one.
const RECORD_WRITE_BUFFER: usize = 64 * 1024;
/// Write buffer of a version 2 segment: a block is written whole (its frame prefix goes
/// through the buffer, the body past it), so the open block is the real buffer.
const BLOCK_WRITE_BUFFER: usize = 8 * 1024;

/// Capacity of a segment's write buffer, by its format version.
fn write_buffer(version: u16) -> usize {
    if version >= SEGMENT_VERSION_BLOCKS {
        BLOCK_WRITE_BUFFER
    } else {
        RECORD_WRITE_BUFFER
    }
}

/// Appends records to one segment and its two index files.
///
/// In a directory, writes go through `BufWriter`s; nothing is durable until
/// [`SegmentWriter::flush`]. Finish a writer explicitly with [`SegmentWriter::finish`];
/// dropping it only flushes what the OS may or may not persist.
///
/// In an object store ([`SegmentWriter::create_object`]) the segment is streamed in parts and
/// the indexes are kept in memory: nothing is durable (or visible) until
/// [`SegmentWriter::finish`] completes the segment object, only if no other writer created it
/// first, and then puts its index objects. `flush` only hands the bytes on.
pub struct SegmentWriter {
    /// The segment's file, or its key in the store.
    path: PathBuf,
    out: BufWriter<Out>,
    oidx: BufWriter<Out>,
    tidx: BufWriter<Out>,
    /// The store of a segment streamed to an object store.
    store: Option<Arc<dyn Store>>,
    header: SegmentHeader,
    builder: IndexBuilder,
    len: u64,
    records: u64,
    last_offset: Option<i64>,
    dirty: bool,
    /// Version 2: the codec of the blocks this writer closes.
    compression: Compression,
    /// Version 2: record frames of the open block, not yet written.
    block: Vec<u8>,
    /// Version 2: (offset, timestamp) of the records of the open block.
    block_records: Vec<(i64, i64)>,
    /// Version 2: blocks still to store raw without trying the codec, after blocks the codec
    /// did not make at least a sixteenth smaller (values compressed or encrypted by the
    /// producers).
    skip_codec: u32,
    /// Version 2: blocks in a row the codec did not make a sixteenth smaller (at most
    /// [`MAX_CODEC_BACKOFF`]).
    codec_misses: u32,
}

/// After `n` blocks in a row that did not compress (by a sixteenth), the next 2^n (at most
/// 2^6 = 64) blocks are stored raw without trying: a topic of incompressible values costs one compression attempt
/// per 64 blocks instead of one per block, and a topic whose values turn compressible is
/// compressed again within 64 blocks.
const MAX_CODEC_BACKOFF: u32 = 6;

/// Bytes written to a file between two requests to start their write-back
/// ([`SegFile::start_writeback`]).
const WRITEBACK_CHUNK: u64 = 1024 * 1024;

/// A file the writer appends to; its writes and fsyncs pass the fault-injection hooks.
struct SegFile {
    file: File,
    path: PathBuf,
    /// Length of the file (where the next write lands: files are only appended to).
    pos: u64,
    /// Where the write-back not yet requested starts.
    kicked: u64,
}

impl SegFile {
    /// A file appended to from `pos` (its length).
    fn new(file: File, path: PathBuf, pos: u64) -> SegFile {
        SegFile {
            file,
            path,
            pos,
            kicked: pos,
        }
    }

    fn sync(&self) -> std::io::Result<()> {
        crate::faults::fsync(&self.path, || self.file.sync_data())
    }

    /// Asks the kernel to start writing the bytes appended since the last request to the
    /// disk, without waiting (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`), once a
    /// [`WRITEBACK_CHUNK`] has gathered. The disk then writes while the records that follow
    /// are encoded, and the fsync of a flush waits for the last chunk instead of every byte
    /// since the previous flush (64 MiB flushes of the in-process bench, 2 s to 60 s of a
    /// busy partition on Connect). Durability is unchanged: only [`Self::sync`] reports bytes
    /// durable, and a write-back error is reported by it (the kernel keeps it for the fsync).
    fn start_writeback(&mut self) {
        if self.pos - self.kicked < WRITEBACK_CHUNK {
            return;
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: a plain syscall on an open descriptor this struct owns; no memory is
            // passed. Its result is advisory (the fsync reports what matters), so it is ignored.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.kicked as _,
                    (self.pos - self.kicked) as _,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        self.kicked = self.pos;
    }
}

impl Write for SegFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let f = &mut self.file;
        let n = crate::faults::write(&self.path, buf, |b| f.write(b))?;
        self.pos += n as u64;
        self.start_writeback();
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Where a segment writer's bytes go: a file, an object streamed in parts, or memory (the
/// index files of a streamed segment, put whole once the segment is complete).
enum Out {
    File(SegFile),
    Object(Box<dyn PartWriter>),
    Memory(Vec<u8>),
}

impl Out {
    /// Path of a file, for messages.
    fn path(&self) -> Option<&Path> {
        match self {
            Out::File(f) => Some(&f.path),
            _ => None,
        }
    }
}

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Out::File(f) => f.write(buf),
            Out::Object(w) => {
                w.write(buf)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                Ok(buf.len())
            }
            Out::Memory(v) => {
                v.extend_from_slice(buf);
                Ok(buf.len())
            }
        }
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
    let len = file.metadata().map_err(|e| Error::io(e, op, path))?.len();
    Ok(SegFile::new(file, path.to_path_buf(), len))
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
        let mut out = SegFile::new(f, path.clone(), 0);
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
            let mut f = SegFile::new(f, ipath.clone(), 0);
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
        let outs = [Out::File(out), Out::File(oidx), Out::File(tidx)];
        Ok(SegmentWriter::started(
            path,
            outs,
            None,
            header,
            bytes.len(),
        ))
    }

    /// A writer of a new segment whose header (`header_len` bytes) and index headers are
    /// written to `outs` (segment, offset index, time index).
    fn started(
        path: PathBuf,
        outs: [Out; 3],
        store: Option<Arc<dyn Store>>,
        header: SegmentHeader,
        header_len: usize,
    ) -> SegmentWriter {
        let [out, oidx, tidx] = outs;
        SegmentWriter {
            path,
            out: BufWriter::with_capacity(write_buffer(header.version), out),
            oidx: BufWriter::new(oidx),
            tidx: BufWriter::new(tidx),
            store,
            builder: IndexBuilder::new(header.index_interval_bytes),
            len: header_len as u64,
            header,
            records: 0,
            last_offset: None,
            dirty: true,
            compression: Compression::default(),
            block: Vec::new(),
            block_records: Vec::new(),
            skip_codec: 0,
            codec_misses: 0,
        }
    }

    /// Starts a new segment streamed to `store` under `key` (its index objects beside it, see
    /// [`layout::offset_index_path`]). Nothing is visible until [`Self::finish`].
    pub fn create_object(
        store: Arc<dyn Store>,
        key: &str,
        header: SegmentHeader,
    ) -> Result<SegmentWriter> {
        let path = PathBuf::from(key);
        let mut out = Out::Object(store.writer_new(key)?);
        let bytes = header.encode();
        out.write_all(&bytes)
            .map_err(|e| Error::io(e, "write segment header", store.describe(key)))?;
        let index = |magic| {
            Out::Memory(
                index::encode_header(magic, header.base_offset, header.index_interval_bytes)
                    .to_vec(),
            )
        };
        let outs = [
            out,
            index(index::OFFSET_INDEX_MAGIC),
            index(index::TIME_INDEX_MAGIC),
        ];
        Ok(SegmentWriter::started(
            path,
            outs,
            Some(store),
            header,
            bytes.len(),
        ))
    }

    /// True for a segment streamed to an object store.
    pub fn is_object(&self) -> bool {
        self.store.is_some()
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
        let files = scan.index_files();
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
            out: BufWriter::with_capacity(
                write_buffer(scan.header.version),
                Out::File(open_append(path, "open segment")?),
            ),
            oidx: BufWriter::new(Out::File(open_append(
                &layout::offset_index_path(path),
                "open offset index",
            )?)),
            tidx: BufWriter::new(Out::File(open_append(
                &layout::time_index_path(path),
                "open time index",
            )?)),
            store: None,
            builder,
            len: scan.valid_len,
            header: scan.header,
            records: scan.records,
            last_offset: scan.last_offset,
            // A previous writer may have died before its fsync: sync once before reporting.
            dirty: true,
            compression: Compression::default(),
            block: Vec::new(),
            block_records: Vec::new(),
            skip_codec: 0,
            codec_misses: 0,
        })
    }

    /// Sets the codec of the blocks this writer closes from now on (version 2 segments; a
    /// version 1 segment always holds plain record frames).
    pub fn set_compression(&mut self, c: Compression) {
        self.compression = c;
    }

    /// Memory held for the open block (version 2): its capacity, which a written block keeps
    /// for the next one, so this is what the partition costs even between blocks.
    pub fn buffered(&self) -> usize {
        self.block.capacity()
    }

    /// Writes the open block now, however small, and gives its memory back: how the sink keeps
    /// the blocks of all its partitions within `buffer.memory.bytes`. Nothing becomes durable
    /// (that is [`Self::flush`]); an error leaves the segment as an append error does.
    pub fn release_block(&mut self) -> Result<()> {
        self.close_block()?;
        self.block = Vec::new();
        Ok(())
    }

    /// Appends one record given its encoded body (docs/format.md "record body").
    pub fn append(&mut self, offset: i64, timestamp: i64, body: &[u8]) -> Result<()> {
        if body.len() > MAX_BODY_LEN as usize {
            return Err(Error::State(format!(
                "record at offset {offset} is {} bytes, larger than the 2 GiB a segment frame holds",
                body.len()
            )));
        }
        let prefix = frame::prefix(body);
        if self.header.version >= SEGMENT_VERSION_BLOCKS {
            // Into the open block; it is compressed and written when full or at a flush.
            self.block.extend_from_slice(&prefix);
            self.block.extend_from_slice(body);
            self.block_records.push((offset, timestamp));
            if self.block.len() >= BLOCK_RAW_TARGET {
                self.close_block()?;
            }
        } else {
            let pos = self.len;
            self.out
                .write_all(&prefix)
                .and_then(|_| self.out.write_all(body))
                .map_err(|e| Error::io(e, "append to segment", &self.path))?;
            self.index(offset, timestamp, pos)?;
            self.len += (FRAME_PREFIX_LEN + body.len()) as u64;
        }
        self.records += 1;
        self.last_offset = Some(offset);
        self.dirty = true;
        Ok(())
    }

    /// Feeds one record at frame position `pos` to the index builder, writing its entries.
    fn index(&mut self, offset: i64, timestamp: i64, pos: u64) -> Result<()> {
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
        Ok(())
    }

    /// Compresses the open block and writes it as one frame; its records are indexed at the
    /// block's position (docs/format.md, "Blocks").
    fn close_block(&mut self) -> Result<()> {
        let (Some(&(first, _)), Some(&(last, _))) =
            (self.block_records.first(), self.block_records.last())
        else {
            return Ok(());
        };
        let tried = self.compression.codec != Codec::None && self.skip_codec == 0;
        let compression = if tried {
            self.compression
        } else {
            self.skip_codec = self.skip_codec.saturating_sub(1);
            Compression {
                codec: Codec::None,
                ..self.compression
            }
        };
        let enc = block::encode_parts(
            compression,
            &self.block,
            self.block_records.len() as u32,
            first,
            last,
        )?;
        if tried {
            // A miss: the codec saved less than a sixteenth (a block stays compressed if it
            // got smaller at all, but random values with compressible record headers saved
            // 2.7 % for more CPU than the rest of the write: not worth trying every block).
            let saved = self.block.len().saturating_sub(enc.body_len);
            if saved.saturating_mul(16) < self.block.len() {
                self.codec_misses = (self.codec_misses + 1).min(MAX_CODEC_BACKOFF);
                self.skip_codec = 1 << self.codec_misses;
            } else {
                self.codec_misses = 0;
            }
        }
        if enc.body_len > MAX_BODY_LEN as usize {
            return Err(Error::State(format!(
                "block of records {first} to {last} is {} bytes, larger than a segment frame holds",
                enc.body_len
            )));
        }
        let pos = self.len;
        let raw: &[u8] = if enc.raw_follows { &self.block } else { &[] };
        self.out
            .write_all(&frame::prefix_of(enc.body_len as u32, enc.body_crc))
            .and_then(|_| self.out.write_all(&enc.head))
            .and_then(|_| self.out.write_all(raw))
            .map_err(|e| Error::io(e, "append to segment", &self.path))?;
        for (offset, timestamp) in std::mem::take(&mut self.block_records) {
            self.index(offset, timestamp, pos)?;
        }
        self.len += (FRAME_PREFIX_LEN + enc.body_len) as u64;
        self.block.clear();
        if self.block.capacity() > 2 * BLOCK_RAW_TARGET {
            self.block = Vec::new(); // after a huge record, give the memory back
        }
        Ok(())
    }

    /// Writes buffered bytes and fsyncs the segment and both indexes. A segment streamed to an
    /// object store only hands its bytes on (full parts are uploaded): it becomes durable
    /// when [`Self::finish`] completes it.
    pub fn flush(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.close_block()?;
        let what = |w: &BufWriter<Out>| {
            w.get_ref()
                .path()
                .map_or_else(|| self.path.clone(), Path::to_path_buf)
        };
        for w in [&mut self.out, &mut self.oidx, &mut self.tidx] {
            w.flush()
                .map_err(|e| Error::io(e, "write buffered data to", what(w)))?;
            if let Out::File(f) = w.get_ref() {
                f.sync().map_err(|e| Error::io(e, "fsync", &f.path))?;
            }
        }
        self.dirty = self.store.is_some();
        Ok(())
    }

    /// Flushes and closes the segment. On failure the buffers are dropped unwritten: the
    /// caller must cut the file back to what it last saw durable (see [`Self::abandon`]).
    ///
    /// A segment streamed to an object store is completed (only if no other writer created
    /// it: a lost race is the conflict error of [`crate::storage::is_conflict`]) and then its
    /// index objects are put. On failure nothing of the segment stays visible, except when
    /// only the index puts failed: the segment is then complete and its indexes are rebuilt
    /// by the next writer or `kbackup reindex`.
    pub fn finish(mut self) -> Result<()> {
        let res = self.flush();
        if res.is_err() {
            self.abandon();
            return res;
        }
        let Some(store) = self.store.take() else {
            return res;
        };
        let key = self.path.to_string_lossy().into_owned();
        let (out, _) = self.out.into_parts();
        let Out::Object(w) = out else {
            unreachable!("a segment with a store streams to it")
        };
        w.complete()?;
        for (b, ipath) in [
            (self.oidx, layout::offset_index_path(&self.path)),
            (self.tidx, layout::time_index_path(&self.path)),
        ] {
            let (Out::Memory(data), _) = b.into_parts() else {
                unreachable!("the indexes of a streamed segment are kept in memory")
            };
            store.put(&ipath.to_string_lossy(), &data).map_err(|e| {
                log::warn!(
                    "{}: complete, but its index could not be stored ({e}); it is rebuilt \
                     from the segment by the next writer of the partition",
                    store.describe(&key)
                );
                e
            })?;
        }
        Ok(())
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
    /// Bytes written so far (header included, buffered bytes included; the open block of a
    /// version 2 segment counts uncompressed, an upper bound of what it will take).
    pub fn len(&self) -> u64 {
        self.len + self.block.len() as u64
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
mod writeback_tests {
    use super::*;

    #[test]
    fn write_back_is_requested_per_chunk_from_where_an_appended_file_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        std::fs::write(&path, [7u8; 100]).unwrap();
        let mut f = open_append(&path, "open").unwrap();
        assert_eq!((f.pos, f.kicked), (100, 100));
        let chunk = vec![1u8; WRITEBACK_CHUNK as usize / 4];
        for _ in 0..3 {
            f.write_all(&chunk).unwrap();
        }
        assert_eq!(
            f.kicked, 100,
            "less than a chunk written: nothing requested yet"
        );
        f.write_all(&chunk).unwrap();
        f.write_all(&[2u8; 10]).unwrap();
        assert_eq!(
            f.kicked,
            100 + WRITEBACK_CHUNK,
            "requested up to the end of the chunk"
        );
        assert_eq!(f.pos, 110 + WRITEBACK_CHUNK);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), f.pos);
        f.sync().unwrap();
    }
}
