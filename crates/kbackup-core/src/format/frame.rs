//! CRC-framed entries, and the one definition of a torn tail versus corruption.
//!
//! Segments and the group-offsets log (version 2) store entries as `u32 body_len ,
//! u32 crc(body_len) , u32 crc(body) , body` (docs/format.md, "Record frame"). Every reader and
//! writer decides "interrupted last write, safe to cut" versus "damage, report and refuse" here,
//! so verify, cat, the restore, reindex and the writers' open can never disagree; and
//! [`scan`] is the one loop that walks a framed log for both file kinds.

use crate::error::{Error, Result};
use std::ops::Range;
use std::path::Path;

/// Bytes before each body: length, length CRC, body CRC.
pub const PREFIX_LEN: usize = 12;

/// CRC-32 of a length field, stored beside it so a damaged length is detected as damage instead
/// of being taken for an interrupted last write.
pub fn length_crc(len: u32) -> u32 {
    crc32fast::hash(&len.to_be_bytes())
}

/// The 12-byte prefix of a frame holding `body`.
pub fn prefix(body: &[u8]) -> [u8; PREFIX_LEN] {
    prefix_of(body.len() as u32, crc32fast::hash(body))
}

/// The 12-byte prefix of a frame whose body is `len` bytes with CRC-32 `crc`.
pub fn prefix_of(len: u32, crc: u32) -> [u8; PREFIX_LEN] {
    let mut p = [0u8; PREFIX_LEN];
    p[0..4].copy_from_slice(&len.to_be_bytes());
    p[4..8].copy_from_slice(&length_crc(len).to_be_bytes());
    p[8..12].copy_from_slice(&crc.to_be_bytes());
    p
}

/// What is at a position of a framed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// A complete frame whose length and body pass their CRCs.
    Complete {
        /// Byte range of the body.
        body: Range<usize>,
        /// Position of the next frame.
        next: usize,
    },
    /// The end of the data, exactly at a frame boundary.
    End,
    /// An interrupted last write: a frame shorter than its prefix or than its length says, or
    /// zero bytes to the end. Safe to cut (it was never flushed whole).
    Torn(String),
    /// Damage: a complete frame (or a length) that fails its CRC, or an impossible length.
    Corrupt(String),
}

/// Checks the frame at `pos` of `data`, whose bodies are `min_body..=max_body` bytes long.
///
/// A flushed frame is always complete, so only an incomplete frame (or zero fill, space the
/// file system allocated but never wrote) can be an interrupted write. A complete frame that
/// fails a CRC is corruption even when it is the last one in the file: cutting it would
/// throw away a record that was reported durable.
pub fn check(data: &[u8], pos: usize, min_body: u32, max_body: u32) -> Check {
    let rest = &data[pos.min(data.len())..];
    match check_at(rest, || rest.iter().all(|&b| b == 0), min_body, max_body) {
        Check::Complete { body, next } => Check::Complete {
            body: pos + body.start..pos + body.end,
            next: pos + next,
        },
        other => other,
    }
}

/// [`check`] for the record frames inside a block's decompressed bytes (segment version 2).
///
/// A block is only opened once its own frame is complete and passed its CRCs and its raw CRC,
/// so nothing inside it can be an interrupted write: what [`check`] calls torn (a short frame,
/// zero fill) is corruption here. This is rule 9 of "Torn tail versus corruption"; the only
/// torn tail of a version 2 segment is an incomplete block frame, decided by [`check`].
pub fn check_in_block(raw: &[u8], pos: usize, min_body: u32, max_body: u32) -> Check {
    match check(raw, pos, min_body, max_body) {
        Check::Torn(why) => Check::Corrupt(format!("inside a complete block: {why}")),
        other => other,
    }
}

/// [`check`] for a reader that holds only part of the file. `rest` starts at the frame and
/// runs to the end of the frame or to the end of the file, whichever comes first (more is
/// allowed); `zero_to_end` answers whether every byte from the frame to the end of the FILE is
/// zero, and is asked only when the bytes of the frame prefix are all zero. Ranges in the
/// answer are relative to `rest`.
pub fn check_at(
    rest: &[u8],
    zero_to_end: impl FnOnce() -> bool,
    min_body: u32,
    max_body: u32,
) -> Check {
    if rest.is_empty() {
        return Check::End;
    }
    // A real frame starts with a non-zero length, so the end of the file is rarely read here.
    let prefix = &rest[..rest.len().min(PREFIX_LEN)];
    if prefix.iter().all(|&b| b == 0) && zero_to_end() {
        return Check::Torn("zero-filled tail".into());
    }
    if rest.len() < PREFIX_LEN {
        return Check::Torn(format!("incomplete frame header ({} bytes)", rest.len()));
    }
    let word = |i: usize| u32::from_be_bytes(rest[i..i + 4].try_into().expect("4 bytes"));
    let (len, len_crc, crc) = (word(0), word(4), word(8));
    if len_crc != length_crc(len) {
        return Check::Corrupt(format!("length field ({len}) fails its CRC check"));
    }
    if len < min_body || len > max_body {
        return Check::Corrupt(format!(
            "impossible length {len} (a body is {min_body} to {max_body} bytes)"
        ));
    }
    let end = PREFIX_LEN + len as usize;
    if rest.len() < end {
        return Check::Torn(format!(
            "incomplete frame: {len} bytes announced, {} present",
            rest.len() - PREFIX_LEN
        ));
    }
    if crc32fast::hash(&rest[PREFIX_LEN..end]) != crc {
        return Check::Corrupt("CRC mismatch: the body is damaged".into());
    }
    Check::Complete {
        body: PREFIX_LEN..end,
        next: end,
    }
}

/// How many bytes from a frame's position [`check_at`] needs to see, given its first
/// [`PREFIX_LEN`] bytes: the whole frame when its length is plausible, else just the prefix.
pub fn wanted_len(prefix: &[u8], max_body: u32) -> usize {
    if prefix.len() < PREFIX_LEN {
        return prefix.len();
    }
    let len = u32::from_be_bytes(prefix[0..4].try_into().expect("4 bytes"));
    let len_crc = u32::from_be_bytes(prefix[4..8].try_into().expect("4 bytes"));
    if len_crc == length_crc(len) && len <= max_body {
        PREFIX_LEN + len as usize
    } else {
        PREFIX_LEN
    }
}

/// Where [`scan`] reads frames from: a file's bytes in memory ([`InMemory`]) or a file read
/// piece by piece (`segment::SegmentFile`).
pub trait FrameSource {
    /// What is at `pos`, with the torn/corrupt rules of [`check`]; ranges are file positions.
    fn check_frame(&mut self, pos: usize) -> Result<Check>;
    /// The bytes of a body that [`FrameSource::check_frame`] found complete.
    fn body(&mut self, range: Range<usize>) -> Result<&[u8]>;
}

/// A file's bytes in memory, with the frame check of its version (`check(data, pos)`).
pub struct InMemory<'a, F> {
    /// The whole file.
    pub data: &'a [u8],
    /// The frame rule: [`check`] with the kind's body limits, or a legacy rule.
    pub check: F,
}

impl<F: FnMut(&[u8], usize) -> Check> FrameSource for InMemory<'_, F> {
    fn check_frame(&mut self, pos: usize) -> Result<Check> {
        Ok((self.check)(self.data, pos))
    }
    fn body(&mut self, range: Range<usize>) -> Result<&[u8]> {
        Ok(&self.data[range])
    }
}

/// Where a [`scan`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    /// Position after the last complete frame: the valid length of the file.
    pub end: usize,
    /// Set when the file ends in an interrupted write: (position, what).
    pub torn: Option<(u64, String)>,
}

/// THE frame scanner of every framed log (segments, group-offsets log): walks the frames from
/// `start` and hands each body to `visit` with its frame's position. It stops at the end or at
/// a torn tail (reported in the answer); a corrupt frame is an [`Error::Corrupt`] at its
/// position, its detail prefixed with `label`. `visit` rejects a body by returning an error.
pub fn scan<S: FrameSource + ?Sized>(
    src: &mut S,
    path: &Path,
    start: usize,
    label: &str,
    mut visit: impl FnMut(usize, &[u8]) -> Result<()>,
) -> Result<Scanned> {
    let mut pos = start;
    let torn = loop {
        match src.check_frame(pos)? {
            Check::End => break None,
            Check::Torn(why) => break Some((pos as u64, why)),
            Check::Corrupt(why) => {
                return Err(Error::corrupt(path, pos as u64, format!("{label}{why}")))
            }
            Check::Complete { body, next } => {
                visit(pos, src.body(body)?)?;
                pos = next;
            }
        }
    };
    Ok(Scanned { end: pos, torn })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(bodies: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for b in bodies {
            out.extend_from_slice(&prefix(b));
            out.extend_from_slice(b);
        }
        out
    }

    #[test]
    fn every_cut_is_torn_and_every_bit_flip_is_corrupt() {
        let data = frames(&[b"first body", b"second body!"]);
        let last = PREFIX_LEN + 10;
        assert!(matches!(check(&data, 0, 1, 100), Check::Complete { next, .. } if next == last));
        assert_eq!(
            check(&data, last, 1, 100),
            Check::Complete {
                body: last + PREFIX_LEN..data.len(),
                next: data.len()
            }
        );
        assert_eq!(check(&data, data.len(), 1, 100), Check::End);
        for cut in last + 1..data.len() {
            assert!(
                matches!(check(&data[..cut], last, 1, 100), Check::Torn(_)),
                "cut at {cut}"
            );
        }
        for at in last..data.len() {
            for bit in 0..8 {
                let mut d = data.clone();
                d[at] ^= 1 << bit;
                match check(&d, last, 1, 100) {
                    Check::Corrupt(_) => {}
                    other => panic!("flip at {at} bit {bit}: {other:?}"),
                }
            }
        }
        let mut zeros = data[..last].to_vec();
        zeros.extend_from_slice(&[0; 64]);
        assert!(matches!(check(&zeros, last, 1, 100), Check::Torn(_)));
    }
}
