//! Compressed blocks of record frames: the frame bodies of a version 2 segment
//! (docs/format.md, "Blocks").
//!
//! A block's raw bytes are version 1 record frames back to back; it is stored with a codec
//! behind a 33-byte header. The segment frame around it (`format::frame`) carries the CRC of
//! what is on disk; the header carries the CRC of the raw bytes, checked after decompressing,
//! so a damaged block is found at its position whichever layer is hit.

use super::{CODEC_LZ4, CODEC_NONE, CODEC_ZSTD, ZSTD_DEFAULT_LEVEL};
use crate::error::{Error, Result};

/// Bytes of a block header: codec, record count, first and last offset, raw and stored
/// length, raw CRC.
pub const HEADER_LEN: usize = 1 + 4 + 8 + 8 + 4 + 4 + 4;
/// Largest raw block accepted when reading (a block holds at least one record of up to 2 GiB).
pub const MAX_RAW_LEN: u32 = u32::MAX;

/// A block codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Stored as is.
    None,
    /// zstd.
    Zstd,
    /// LZ4 (block format).
    Lz4,
}

impl Codec {
    /// The codec's id in a block header.
    pub fn id(self) -> u8 {
        match self {
            Codec::None => CODEC_NONE,
            Codec::Zstd => CODEC_ZSTD,
            Codec::Lz4 => CODEC_LZ4,
        }
    }

    /// The codec of a block header's id.
    pub fn from_id(id: u8) -> Option<Codec> {
        match id {
            CODEC_NONE => Some(Codec::None),
            CODEC_ZSTD => Some(Codec::Zstd),
            CODEC_LZ4 => Some(Codec::Lz4),
            _ => None,
        }
    }

    /// The name used in settings (`compression.type`, `--compression`).
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Zstd => "zstd",
            Codec::Lz4 => "lz4",
        }
    }
}

/// What a writer compresses with: a codec and, for zstd, a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    /// The codec.
    pub codec: Codec,
    /// zstd level (1..=22; ignored by the other codecs).
    pub level: i32,
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            codec: Codec::None,
            level: ZSTD_DEFAULT_LEVEL,
        }
    }
}

impl Compression {
    /// Parses `compression.type` / `compression.level` (`setting` names the codec setting in
    /// errors: `compression.type` or `--compression`; the level's is named after it).
    pub fn parse(codec: &str, level: Option<i32>, setting: &str) -> Result<Compression> {
        let level_setting = if setting.starts_with("--") {
            format!("{setting}-level")
        } else {
            "compression.level".to_string()
        };
        let codec = match codec.trim().to_ascii_lowercase().as_str() {
            "none" => Codec::None,
            "zstd" => Codec::Zstd,
            "lz4" => Codec::Lz4,
            other => {
                return Err(Error::Config(format!(
                    "{setting} is \"{other}\"; set it to one of none, zstd, lz4"
                )))
            }
        };
        let level = level.unwrap_or(ZSTD_DEFAULT_LEVEL);
        let range = zstd::compression_level_range();
        if codec == Codec::Zstd && !range.contains(&level) {
            return Err(Error::Config(format!(
                "{level_setting} {level} is out of range for zstd; set it to {} to {} \
                 (default {ZSTD_DEFAULT_LEVEL})",
                range.start(),
                range.end()
            )));
        }
        Ok(Compression { codec, level })
    }

    /// The segment version this compression writes: record frames for `none`, blocks else.
    pub fn segment_version(self) -> u16 {
        match self.codec {
            Codec::None => super::SEGMENT_VERSION_RECORDS,
            _ => super::SEGMENT_VERSION_BLOCKS,
        }
    }
}

/// The header of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeader {
    /// Codec of the stored bytes.
    pub codec: Codec,
    /// Records in the block (at least 1).
    pub records: u32,
    /// Offset of the first record.
    pub first_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// Length of the raw (decompressed) bytes.
    pub raw_len: u32,
    /// Length of the stored bytes that follow the header.
    pub stored_len: u32,
    /// CRC of the raw bytes.
    pub raw_crc: u32,
}

/// A block ready to be written as a frame body: its header, then either its compressed bytes
/// (in `head`) or the raw bytes as they are, written from the caller's buffer without a copy.
#[derive(Debug)]
pub struct Encoded {
    /// The header, followed by the compressed bytes when the codec was kept.
    pub head: Vec<u8>,
    /// True when the raw bytes follow `head` unchanged (codec `none`).
    pub raw_follows: bool,
    /// Length of the whole frame body.
    pub body_len: usize,
    /// CRC-32 of the whole frame body, for the frame prefix: for a block stored raw it is
    /// derived from the raw CRC the header carries, so the raw bytes are read once, not twice.
    pub body_crc: u32,
}

/// Encodes a block holding `raw` (record frames) as a segment frame body. Falls back to codec
/// `none` when compressing does not make the block smaller (already compressed values).
pub fn encode_parts(
    c: Compression,
    raw: &[u8],
    records: u32,
    first: i64,
    last: i64,
) -> Result<Encoded> {
    let compressed = match c.codec {
        Codec::None => None,
        Codec::Zstd => Some(
            zstd_compress(raw, c.level)
                .map_err(|e| Error::State(format!("zstd compression failed: {e}")))?,
        ),
        Codec::Lz4 => Some(lz4_flex::block::compress(raw)),
    };
    let kept = compressed.filter(|z| z.len() < raw.len());
    let (codec, stored_len) = match &kept {
        Some(z) => (c.codec, z.len()),
        None => (Codec::None, raw.len()),
    };
    let raw_crc = crc32fast::hash(raw);
    let mut head = Vec::with_capacity(HEADER_LEN + kept.as_ref().map_or(0, Vec::len));
    head.push(codec.id());
    head.extend_from_slice(&records.to_be_bytes());
    head.extend_from_slice(&first.to_be_bytes());
    head.extend_from_slice(&last.to_be_bytes());
    head.extend_from_slice(&(raw.len() as u32).to_be_bytes());
    head.extend_from_slice(&(stored_len as u32).to_be_bytes());
    head.extend_from_slice(&raw_crc.to_be_bytes());
    let raw_follows = kept.is_none();
    let body_crc = match kept {
        Some(z) => {
            head.extend_from_slice(&z);
            crc32fast::hash(&head)
        }
        None => {
            let mut h = crc32fast::Hasher::new();
            h.update(&head);
            h.combine(&crc32fast::Hasher::new_with_initial_len(
                raw_crc,
                raw.len() as u64,
            ));
            h.finalize()
        }
    };
    Ok(Encoded {
        body_len: HEADER_LEN + stored_len,
        head,
        raw_follows,
        body_crc,
    })
}

/// [`encode_parts`] as one frame body.
pub fn encode(c: Compression, raw: &[u8], records: u32, first: i64, last: i64) -> Result<Vec<u8>> {
    let e = encode_parts(c, raw, records, first, last)?;
    let mut body = e.head;
    if e.raw_follows {
        body.extend_from_slice(raw);
    }
    Ok(body)
}

thread_local! {
    // One zstd context per thread and level, reused across blocks: creating one per 256 KiB
    // block costs allocations and table setup on every block.
    static ZSTD_C: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    static ZSTD_D: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn zstd_compress(raw: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    ZSTD_C.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        c.as_mut().expect("set above").1.compress(raw)
    })
}

fn zstd_decompress(stored: &[u8], raw_len: usize) -> std::io::Result<Vec<u8>> {
    ZSTD_D.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        d.as_mut().expect("set above").decompress(stored, raw_len)
    })
}

/// Reads a block header from a frame body; the message of an error says what is wrong.
pub fn header(body: &[u8]) -> std::result::Result<BlockHeader, String> {
    if body.len() < HEADER_LEN {
        return Err(format!(
            "block body of {} bytes is shorter than a block header ({HEADER_LEN})",
            body.len()
        ));
    }
    let u32_at = |i: usize| u32::from_be_bytes(body[i..i + 4].try_into().expect("4 bytes"));
    let i64_at = |i: usize| i64::from_be_bytes(body[i..i + 8].try_into().expect("8 bytes"));
    let codec = Codec::from_id(body[0]).ok_or_else(|| {
        format!(
            "unknown block codec id {} (a newer kbackup, or damage)",
            body[0]
        )
    })?;
    let h = BlockHeader {
        codec,
        records: u32_at(1),
        first_offset: i64_at(5),
        last_offset: i64_at(13),
        raw_len: u32_at(21),
        stored_len: u32_at(25),
        raw_crc: u32_at(29),
    };
    if h.stored_len as usize != body.len() - HEADER_LEN {
        return Err(format!(
            "block stored length {} disagrees with its frame ({} bytes after the block header)",
            h.stored_len,
            body.len() - HEADER_LEN
        ));
    }
    if h.records == 0 || h.first_offset > h.last_offset {
        return Err(format!(
            "block header is inconsistent: {} records, offsets {} to {}",
            h.records, h.first_offset, h.last_offset
        ));
    }
    Ok(h)
}

/// Decompresses a block (a frame body that passed its CRC) and checks the raw CRC. Answers the
/// header and the raw record frames.
pub fn decode(body: &[u8]) -> std::result::Result<(BlockHeader, Vec<u8>), String> {
    let h = header(body)?;
    let stored = &body[HEADER_LEN..];
    let raw_len = h.raw_len as usize;
    let raw = match h.codec {
        Codec::None => stored.to_vec(),
        Codec::Zstd => zstd_decompress(stored, raw_len)
            .map_err(|e| format!("zstd block does not decompress: {e}"))?,
        Codec::Lz4 => {
            let mut out = vec![0u8; raw_len];
            let n = lz4_flex::block::decompress_into(stored, &mut out)
                .map_err(|e| format!("lz4 block does not decompress: {e}"))?;
            out.truncate(n);
            out
        }
    };
    if raw.len() != raw_len {
        return Err(format!(
            "{} block decompresses to {} bytes, its header says {raw_len}",
            h.codec.name(),
            raw.len()
        ));
    }
    if crc32fast::hash(&raw) != h.raw_crc {
        return Err(format!(
            "raw CRC mismatch: the {} block decompresses to damaged bytes",
            h.codec.name()
        ));
    }
    Ok((h, raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `len` bytes no codec shrinks (xorshift64 from `seed`).
    fn noise(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 32) as u8
            })
            .collect()
    }

    #[test]
    fn every_codec_round_trips_and_incompressible_blocks_are_stored_raw() {
        let raw: Vec<u8> = (0..10_000u32)
            .flat_map(|i| (i % 97).to_be_bytes())
            .collect();
        for codec in [Codec::None, Codec::Zstd, Codec::Lz4] {
            let c = Compression { codec, level: 3 };
            let body = encode(c, &raw, 7, 10, 20).unwrap();
            let (h, back) = decode(&body).unwrap();
            assert_eq!(back, raw);
            assert_eq!((h.codec, h.records, h.first_offset), (codec, 7, 10));
            assert!(
                codec == Codec::None || body.len() < raw.len() / 2,
                "{codec:?} {}",
                body.len()
            );
        }
        let noise = noise(4096, 0x2545_f491_4f6c_dd1d);
        let c = Compression {
            codec: Codec::Zstd,
            level: 3,
        };
        let body = encode(c, &noise, 1, 0, 0).unwrap();
        assert_eq!(header(&body).unwrap().codec, Codec::None);
    }

    #[test]
    fn the_frame_crc_of_a_block_is_the_crc_of_its_body_whether_compressed_or_raw() {
        let text: Vec<u8> = (0..20_000u32).flat_map(|i| (i % 7).to_be_bytes()).collect();
        let noise = noise(70_000, 0x9e37_79b9_7f4a_7c15);
        for raw in [&text, &noise] {
            for codec in [Codec::None, Codec::Zstd, Codec::Lz4] {
                let c = Compression { codec, level: 1 };
                let e = encode_parts(c, raw, 3, 5, 9).unwrap();
                let body = encode(c, raw, 3, 5, 9).unwrap();
                assert_eq!(e.raw_follows, header(&body).unwrap().codec == Codec::None);
                assert_eq!(e.body_len, body.len(), "{codec:?}");
                assert_eq!(e.body_crc, crc32fast::hash(&body), "{codec:?}");
            }
        }
    }

    #[test]
    fn bad_settings_name_the_fix() {
        let e = Compression::parse("gzip", None, "compression.type").unwrap_err();
        assert!(e.to_string().contains("none, zstd, lz4"), "{e}");
        let e = Compression::parse("zstd", Some(99), "compression.type").unwrap_err();
        assert!(e.to_string().contains("set it to"), "{e}");
        assert_eq!(
            Compression::parse("LZ4", None, "x").unwrap().codec,
            Codec::Lz4
        );
    }
}
