//! Reading a segment piecewise with positioned reads (docs/format.md, "Torn tail versus
//! corruption": why never a memory mapping).

use super::{corrupt_frame, record_frame, Frame, SegmentHeader, BLOCK_LABEL, FRAME_PREFIX_LEN};
use crate::error::{Error, Result};
use crate::format::block::BlockHeader;
use crate::format::body::{self, MAX_BODY_LEN, MIN_BODY};
use crate::format::bytes::Cursor;
use crate::format::frame::{self, Check, FrameSource};
use crate::record::Record;
use crate::storage::Store;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes read at once from a file; a frame larger than this is read whole.
const READ_CHUNK: usize = 256 * 1024;
/// Bytes read at once from an object store: one ranged GET costs a round trip, so a larger
/// read-ahead keeps a scan from being latency bound while memory stays bounded by it.
const OBJECT_READ_CHUNK: usize = 8 * 1024 * 1024;
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
    file: Source,
    /// Bytes read at once (the read-ahead).
    chunk: usize,
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
            file: Source::File(file),
            chunk: READ_CHUNK,
            len,
            buf: Vec::new(),
            buf_pos: 0,
        })
    }

    /// Opens a segment stored as the object `key` of `store`, read with ranged reads of up to
    /// 8 MiB (a local store reads its file the same way as [`SegmentFile::open`]). Messages
    /// name the object by [`Store::describe`]. A missing object is [`Error::NotFound`].
    pub fn open_object(store: Arc<dyn Store>, key: &str) -> Result<SegmentFile> {
        let path = PathBuf::from(store.describe(key));
        let meta = store
            .head(key)?
            .ok_or_else(|| Error::NotFound(format!("segment {} does not exist", path.display())))?;
        Ok(SegmentFile {
            path,
            file: Source::Object {
                store,
                key: key.to_string(),
                size: meta.size,
                ahead: None,
            },
            chunk: OBJECT_READ_CHUNK,
            len: meta.size,
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
            // A sequential read running past the buffer keeps the buffer's unread tail and
            // appends the bytes that follow, so the source is read contiguously (an object
            // store's read-ahead of the next range is then exactly what is asked for next);
            // any other read starts afresh at `pos`.
            let keep = if pos >= self.buf_pos && pos <= buf_end {
                self.buf.drain(..(pos - self.buf_pos) as usize);
                self.buf.len()
            } else {
                self.buf.clear();
                0
            };
            let from = pos + keep as u64;
            let want = ((end - from) as usize)
                .max(self.chunk)
                .min((self.len - from) as usize);
            if self.buf.capacity() > 4 * self.chunk && keep + want <= 2 * self.chunk {
                self.buf.shrink_to(2 * self.chunk); // after a huge record, give the memory back
            }
            self.buf.resize(keep + want, 0);
            let got = self
                .file
                .read_full_at(&mut self.buf[keep..], from, &self.path)?;
            self.buf.truncate(keep + got);
            self.buf_pos = pos;
            if got < want {
                // The file shrank since it was opened: it now ends here.
                log::debug!(
                    "{}: file shrank to {} bytes while being read",
                    self.path.display(),
                    from + got as u64
                );
                self.len = from + got as u64;
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

    /// Reads the frame at `pos`, with exactly the rules of [`super::read_frame`].
    pub fn read_frame(&mut self, pos: usize) -> Result<Frame> {
        match self.check_frame(pos)? {
            Check::Complete { body, next } => {
                let bytes = self.body(body.clone())?;
                Ok(record_frame(body, next, bytes))
            }
            Check::End => Ok(Frame::End),
            Check::Torn(why) => Ok(Frame::Torn(why)),
            Check::Corrupt(why) => Ok(corrupt_frame(&why)),
        }
    }

    /// Reads the version 2 block frame at `pos`: decompressed, its raw CRC, record frames and
    /// header checked (the rules of [`super::scan`]). A damaged block is `Frame::Corrupt`-like:
    /// [`BlockAt::Corrupt`] with what is wrong, to be reported at `pos`.
    pub fn read_block(&mut self, pos: usize) -> Result<BlockAt> {
        Ok(match self.check_frame(pos)? {
            Check::End => BlockAt::End,
            Check::Torn(why) => BlockAt::Torn(why),
            Check::Corrupt(why) => BlockAt::Corrupt(format!("{BLOCK_LABEL}{why}")),
            Check::Complete { body, next } => {
                let path = self.path.clone();
                let bytes = self.body(body)?;
                let decoded = super::decode_block(&path, pos, bytes).and_then(|(h, raw)| {
                    let mut records = Vec::with_capacity(h.records as usize);
                    super::each_in_block(&path, pos, &raw, |_, o, t, body| {
                        records.push((o, t, body));
                        Ok(())
                    })?;
                    let ot: Vec<(i64, i64)> = records.iter().map(|r| (r.0, r.1)).collect();
                    super::check_block_header(&path, pos, &h, &ot)?;
                    Ok((h, raw, records))
                });
                match decoded {
                    Ok((header, raw, records)) => BlockAt::Block(Block {
                        header,
                        raw,
                        records,
                        next,
                    }),
                    Err(Error::Corrupt { detail, .. }) => BlockAt::Corrupt(detail),
                    Err(e) => return Err(e),
                }
            }
        })
    }

    /// Reads only the header of the version 2 block frame at `pos`, without decompressing it:
    /// the frame rules and CRC are checked as by [`SegmentFile::read_block`] (so a damaged
    /// stored byte is found), the raw CRC and the records inside are not. Answers the header
    /// and the position of the next frame, or what is there instead (never `BlockAt::Block`).
    pub fn read_block_header(
        &mut self,
        pos: usize,
    ) -> Result<std::result::Result<(BlockHeader, usize), BlockAt>> {
        Ok(match self.check_frame(pos)? {
            Check::End => Err(BlockAt::End),
            Check::Torn(why) => Err(BlockAt::Torn(why)),
            Check::Corrupt(why) => Err(BlockAt::Corrupt(format!("{BLOCK_LABEL}{why}"))),
            Check::Complete { body, next } => {
                match crate::format::block::header(self.body(body)?) {
                    Ok(h) => Ok((h, next)),
                    Err(why) => Err(BlockAt::Corrupt(format!("{BLOCK_LABEL}{why}"))),
                }
            }
        })
    }

    /// Decodes the body of a record located by [`SegmentFile::read_frame`].
    pub fn decode_body(&mut self, range: Range<usize>) -> Result<Record> {
        let start = range.start as u64;
        let path = self.path.clone();
        let data = self.body(range)?;
        body::decode(&mut Cursor::new(data)).map_err(|e| e.into_corrupt(&path, start))
    }
}

/// A decompressed, checked block of a version 2 segment.
#[derive(Debug, Clone)]
pub struct Block {
    /// Its header.
    pub header: BlockHeader,
    /// The raw record frames.
    pub raw: Vec<u8>,
    /// (offset, timestamp, body range in `raw`) of each record.
    pub records: Vec<(i64, i64, Range<usize>)>,
    /// File position of the next frame.
    pub next: usize,
}

/// What [`SegmentFile::read_block`] finds at a position.
#[derive(Debug, Clone)]
pub enum BlockAt {
    /// A valid block.
    Block(Block),
    /// The end of the segment at a frame boundary.
    End,
    /// An incomplete last write.
    Torn(String),
    /// Damage, to be reported at the block's position.
    Corrupt(String),
}

impl FrameSource for SegmentFile {
    /// Reads only the frame prefix, then the frame (or, for a zero prefix, checks for zero fill
    /// to the end of the file).
    fn check_frame(&mut self, pos: usize) -> Result<Check> {
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
        Ok(
            match frame::check_at(rest, || zero_to_end, MIN_BODY as u32, MAX_BODY_LEN) {
                Check::Complete { body, next } => Check::Complete {
                    body: pos + body.start..pos + body.end,
                    next: pos + next,
                },
                other => other,
            },
        )
    }

    fn body(&mut self, range: Range<usize>) -> Result<&[u8]> {
        let (start, n) = (range.start, range.len());
        let path = self.path.clone();
        let data = self.window(start as u64, n)?;
        if data.len() < n {
            return Err(Error::corrupt(
                &path,
                start as u64,
                "record body vanished: the file was truncated while being read",
            ));
        }
        Ok(data)
    }
}

/// Where a [`SegmentFile`]'s bytes come from.
enum Source {
    File(File),
    Object {
        store: Arc<dyn Store>,
        key: String,
        /// The object's size at open.
        size: u64,
        /// The next range, being fetched in the background while the current one is read.
        ahead: Option<ReadAhead>,
    },
}

/// A ranged GET running on its own thread (never on the store's runtime: the store blocks).
struct ReadAhead {
    from: u64,
    len: u64,
    bytes: std::thread::JoinHandle<Result<Vec<u8>>>,
}

impl Source {
    /// Fills `buf` from `pos`, fewer bytes only at the end; answers the bytes read.
    ///
    /// From an object store, each read also starts fetching the next [`OBJECT_READ_CHUNK`]
    /// bytes in the background, so a sequential scan waits for one round trip per segment,
    /// not one per chunk; memory per open segment stays bounded by the buffer plus one chunk.
    /// A read elsewhere (a seek) drops the read-ahead; a failed read-ahead is read again in
    /// the foreground, where its error counts.
    fn read_full_at(&mut self, buf: &mut [u8], pos: u64, path: &Path) -> Result<usize> {
        match self {
            Source::File(file) => {
                read_full_at(file, buf, pos).map_err(|e| Error::io(e, "read segment", path))
            }
            Source::Object {
                store,
                key,
                size,
                ahead,
            } => {
                let mut got = 0;
                let mut ended = false;
                if let Some(a) = ahead.take().filter(|a| a.from == pos) {
                    if let Ok(Ok(data)) = a.bytes.join() {
                        got = data.len().min(buf.len());
                        buf[..got].copy_from_slice(&data[..got]);
                        ended = (data.len() as u64) < a.len;
                    }
                }
                if got < buf.len() && !ended {
                    let from = pos + got as u64;
                    let more = store.get_range(key, from..pos + buf.len() as u64)?;
                    let n = more.len().min(buf.len() - got);
                    buf[got..got + n].copy_from_slice(&more[..n]);
                    got += n;
                    ended = got < buf.len();
                }
                let next = pos + got as u64;
                if !ended && next < *size {
                    let len = (OBJECT_READ_CHUNK as u64).min(*size - next);
                    let (store, key) = (store.clone(), key.clone());
                    let bytes = std::thread::Builder::new()
                        .name("kbackup-read-ahead".into())
                        .spawn(move || store.get_range(&key, next..next + len))
                        .map_err(|e| Error::io(e, "start a read-ahead thread for", path))?;
                    *ahead = Some(ReadAhead {
                        from: next,
                        len,
                        bytes,
                    });
                }
                Ok(got)
            }
        }
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
