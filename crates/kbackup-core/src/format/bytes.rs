//! Byte primitives of every kbackup encoding: a bounds-checked big-endian reader and the
//! `str16`/`bytes32` writers (docs/format.md, "Conventions"; docs/jni.md uses the same).
//!
//! Decoding is defensive because the bytes come from a file or another program: truncation,
//! negative lengths and bad UTF-8 are a `DecodeError` with its position, never a panic.

use crate::error::Error;
use std::path::Path;

/// A decoding failure: where in the buffer and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeError {
    /// Position in the decoded bytes.
    pub position: usize,
    /// What was wrong.
    pub detail: String,
}

impl DecodeError {
    /// The failure as corruption of `path`, whose decoded bytes start at file position `base`.
    pub fn into_corrupt(self, path: &Path, base: u64) -> Error {
        Error::corrupt(path, base + self.position as u64, self.detail)
    }
}

pub(crate) type DResult<T> = std::result::Result<T, DecodeError>;

/// A bounds-checked big-endian reader over a byte slice.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Cursor<'a> {
        Cursor { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn err<T>(&self, detail: impl Into<String>) -> DResult<T> {
        Err(DecodeError {
            position: self.pos,
            detail: detail.into(),
        })
    }

    pub fn take(&mut self, n: usize, what: &str) -> DResult<&'a [u8]> {
        if self.remaining() < n {
            return self.err(format!(
                "truncated: {what} needs {n} bytes, only {} left",
                self.remaining()
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> DResult<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub fn u8(&mut self, what: &str) -> DResult<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    pub fn i8(&mut self, what: &str) -> DResult<i8> {
        Ok(self.u8(what)? as i8)
    }
    pub fn u16(&mut self, what: &str) -> DResult<u16> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }
    pub fn i16(&mut self, what: &str) -> DResult<i16> {
        Ok(i16::from_be_bytes(self.array(what)?))
    }
    pub fn i32(&mut self, what: &str) -> DResult<i32> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }
    pub fn u32(&mut self, what: &str) -> DResult<u32> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }
    pub fn i64(&mut self, what: &str) -> DResult<i64> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    /// `str16`: i16 length (0..=32767) then UTF-8.
    pub fn str16(&mut self, what: &str) -> DResult<&'a str> {
        let start = self.pos;
        let len = self.i16(what)?;
        if len < 0 {
            self.pos = start;
            return self.err(format!("{what}: negative string length {len}"));
        }
        self.utf8(start, len as usize, what)
    }

    /// `len` bytes of UTF-8 text whose field starts at `start` (where an error points).
    pub fn utf8(&mut self, start: usize, len: usize, what: &str) -> DResult<&'a str> {
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes).map_err(|e| DecodeError {
            position: start,
            detail: format!("{what}: invalid UTF-8 ({e})"),
        })
    }

    /// `bytes32`: i32 length (-1 = null) then the bytes.
    pub fn bytes32(&mut self, what: &str) -> DResult<Option<&'a [u8]>> {
        let start = self.pos;
        let len = self.i32(what)?;
        if len == -1 {
            return Ok(None);
        }
        if len < 0 {
            self.pos = start;
            return self.err(format!("{what}: invalid length {len} (only -1 means null)"));
        }
        Ok(Some(self.take(len as usize, what)?))
    }

    /// A count that must be >= 0 and plausible for the bytes left (each item >= `min_item` bytes).
    pub fn count(&mut self, what: &str, min_item: usize) -> DResult<usize> {
        let start = self.pos;
        let n = self.i32(what)?;
        if n < 0 {
            self.pos = start;
            return self.err(format!("{what}: negative count {n}"));
        }
        let n = n as usize;
        if n.saturating_mul(min_item) > self.remaining() {
            self.pos = start;
            return self.err(format!(
                "{what}: count {n} cannot fit in the {} bytes left",
                self.remaining()
            ));
        }
        Ok(n)
    }

    pub fn finish(&self, what: &str) -> DResult<()> {
        if self.remaining() != 0 {
            return self.err(format!(
                "{} trailing bytes after the {what}",
                self.remaining()
            ));
        }
        Ok(())
    }
}

pub(crate) fn put_str16(buf: &mut Vec<u8>, s: &str) {
    // Topic names and header keys are far below 32767 bytes; clamp rather than corrupt.
    let bytes = s.as_bytes();
    let len = bytes.len().min(i16::MAX as usize);
    buf.extend_from_slice(&(len as i16).to_be_bytes());
    buf.extend_from_slice(&bytes[..len]);
}

pub(crate) fn put_bytes32(buf: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => buf.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(b) => {
            buf.extend_from_slice(&(b.len() as i32).to_be_bytes());
            buf.extend_from_slice(b);
        }
    }
}
