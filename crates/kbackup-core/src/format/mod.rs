//! The on-disk format's shared rules, each written once (docs/format.md).
//!
//! Every file kind of a backup names itself (a magic) and its format version; both live here,
//! with the one version check every reader runs ([`check_version`]), the one CRC frame rule and
//! scanner used by both framed logs (segments and the group-offsets log, [`frame`]), the byte
//! primitives ([`bytes`]) and the record body layout ([`body`]) that segments share with the
//! JNI batch buffer. The modules for each file kind (`segment`, `index`, `offsets_log`,
//! `manifest`) hold only what is particular to that kind.

pub mod block;
pub mod body;
pub mod bytes;
pub mod frame;

use crate::error::{Error, Result};
use std::path::Path;

/// Value of `format` in the root marker `kbackup.json` (the marker's magic).
pub const FORMAT_NAME: &str = "kbackup";
/// Magic at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 4] = *b"KBSG";
/// Magic at the start of every offset index file.
pub const OFFSET_INDEX_MAGIC: [u8; 4] = *b"KBOI";
/// Magic at the start of every time index file.
pub const TIME_INDEX_MAGIC: [u8; 4] = *b"KBTI";
/// Magic at the start of every group-offsets log.
pub const GROUP_OFFSETS_MAGIC: [u8; 4] = *b"KBGO";

/// Version of the backup format written by this code: the root marker of a new backup, and the
/// newest segment version ([`SEGMENT_VERSION_BLOCKS`]).
pub const FORMAT_VERSION: u16 = 2;
/// Oldest backup format version this code still reads.
pub const OLDEST_SUPPORTED: u16 = 1;
/// Segment version 1: one record per frame. Still written with compression `none` (no block
/// frame, byte for byte what older releases write and read).
pub const SEGMENT_VERSION_RECORDS: u16 = 1;
/// Segment version 2: frames hold compressed blocks of record frames (docs/format.md,
/// "Blocks"). Written for every codec but `none`.
pub const SEGMENT_VERSION_BLOCKS: u16 = 2;
/// Version of the index files (unchanged by segment version 2: an entry's position is the
/// frame holding the record, a record frame in version 1 and a block in version 2).
pub const INDEX_FORMAT_VERSION: u16 = 1;
/// Block codec ids (docs/format.md, "Blocks"): stored bytes are the raw bytes.
pub const CODEC_NONE: u8 = 0;
/// Block codec id: a zstd frame (RFC 8878).
pub const CODEC_ZSTD: u8 = 1;
/// Block codec id: an LZ4 block (no frame, no size prefix), as lz4_flex::block writes it.
pub const CODEC_LZ4: u8 = 2;
/// A block is closed once its raw record frames reach this many bytes (or at a flush).
pub const BLOCK_RAW_TARGET: usize = 256 * 1024;
/// zstd level when none is configured. Level 1, not zstd's usual 3: on 256 KiB blocks level 1
/// stored JSON events 2.5 % larger for a tenth less CPU, and high-entropy values (random
/// letters) in the same size at 1.6 times the backup speed, where level 3's match search
/// found little and cost most of the writer's CPU (docs/benchmarks.md, "Compression").
pub const ZSTD_DEFAULT_LEVEL: i32 = 1;
/// Version of the group-offsets log written by this code (numbered apart from the backup
/// format: the log changed without the segments changing).
pub const GROUP_OFFSETS_FORMAT_VERSION: u16 = 2;
/// Oldest group-offsets log version this code still reads.
pub const GROUP_OFFSETS_OLDEST_SUPPORTED: u16 = 1;

/// The versioned file kinds of a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `kbackup.json`.
    RootMarker,
    /// A `.segment` file.
    Segment,
    /// An `.offset-index` file.
    OffsetIndex,
    /// A `.time-index` file.
    TimeIndex,
    /// A partition's `group-offsets.log`.
    GroupOffsetsLog,
}

impl FileKind {
    /// What the kind is called in messages.
    pub fn name(self) -> &'static str {
        match self {
            FileKind::RootMarker => "backup marker",
            FileKind::Segment => "segment",
            FileKind::OffsetIndex => "offset index",
            FileKind::TimeIndex => "time index",
            FileKind::GroupOffsetsLog => "group-offsets log",
        }
    }

    /// The versions this code reads: `oldest..=current`; it writes `current`.
    pub fn versions(self) -> std::ops::RangeInclusive<u16> {
        match self {
            FileKind::GroupOffsetsLog => {
                GROUP_OFFSETS_OLDEST_SUPPORTED..=GROUP_OFFSETS_FORMAT_VERSION
            }
            FileKind::OffsetIndex | FileKind::TimeIndex => {
                INDEX_FORMAT_VERSION..=INDEX_FORMAT_VERSION
            }
            _ => OLDEST_SUPPORTED..=FORMAT_VERSION,
        }
    }

    /// The version this code writes.
    pub fn current_version(self) -> u16 {
        *self.versions().end()
    }

    /// Byte position of the version in a file of this kind (binary headers: after the magic).
    fn version_position(self) -> u64 {
        match self {
            FileKind::RootMarker => 0,
            _ => 4,
        }
    }
}

/// THE version check of every file kind: a version outside what this code reads is an
/// [`Error::Corrupt`] at the version's position, whose message names both causes (a file from
/// another kbackup release, or damage) and the fix for each.
///
/// Where a header has a CRC over its version, callers check the CRC first, so a damaged version
/// is reported as a CRC failure instead (docs/format.md, "Versions").
pub fn check_version(kind: FileKind, path: &Path, version: u16) -> Result<()> {
    let range = kind.versions();
    if range.contains(&version) {
        return Ok(());
    }
    let (oldest, current) = (*range.start(), *range.end());
    let cause = if version > current {
        "if a newer kbackup wrote it, upgrade kbackup; otherwise the header is damaged"
    } else {
        "if an older kbackup wrote it, read it with an older kbackup release; otherwise the \
         header is damaged"
    };
    Err(Error::corrupt(
        path,
        kind.version_position(),
        format!(
            "{} format version {version} is not supported (this kbackup reads versions \
             {oldest} to {current}): {cause}",
            kind.name()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_version_check_for_every_kind() {
        let p = Path::new("f");
        for kind in [
            FileKind::RootMarker,
            FileKind::Segment,
            FileKind::OffsetIndex,
            FileKind::TimeIndex,
            FileKind::GroupOffsetsLog,
        ] {
            for v in kind.versions() {
                check_version(kind, p, v).unwrap();
            }
            let newer = kind.current_version() + 1;
            match check_version(kind, p, newer) {
                Err(Error::Corrupt { detail, .. }) => {
                    assert!(detail.contains(&format!("version {newer}")), "{detail}");
                    assert!(detail.contains("upgrade kbackup"), "{detail}");
                }
                other => panic!("{kind:?}: {other:?}"),
            }
            match check_version(kind, p, 0) {
                Err(Error::Corrupt { detail, .. }) => {
                    assert!(detail.contains("older kbackup"), "{detail}")
                }
                other => panic!("{kind:?}: {other:?}"),
            }
        }
    }
}
