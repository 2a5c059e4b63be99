//! The per-partition group-offsets log: an append-only file of consumer-group positions.
//!
//! The capture thread appends one entry each time a group's committed offset on a backed-up
//! partition changes; the restore reads the latest entry per group to translate it. Group ids
//! are arbitrary text, so they live INSIDE the file as data, never in a file name.
//!
//! Layout (all integers big-endian; specified in docs/offsets.md and docs/format.md):
//!
//! ```text
//! file   := header frame*
//! header := "KBGO" , u16 version (=1) , u16 reserved (=0)
//! frame  := u32 body_len , u32 crc32(body) , body
//! body   := i64 capture_time_ms , i64 committed_offset ,
//!           u16 group_len , group (UTF-8) , u32 metadata_len , metadata (UTF-8)
//! ```
//!
//! A crash during an append can leave a torn last frame: readers ignore a last frame that runs
//! past the end of the file or fails its CRC, and [`append`] cuts it off before writing. Damage
//! anywhere else is reported as [`Error::Corrupt`] with the file and byte position.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

/// Magic bytes at the start of every group-offsets log.
pub const MAGIC: [u8; 4] = *b"KBGO";
/// Format version written by this code.
pub const FORMAT_VERSION: u16 = 1;
/// Oldest format version this code reads.
pub const OLDEST_SUPPORTED: u16 = 1;
/// Bytes in the file header.
pub const HEADER_LEN: u64 = 8;
/// Bytes before each frame body (length + CRC).
const FRAME_OVERHEAD: usize = 8;
/// Upper bound on a frame body; anything larger is damage, not data (group ids are < 64 KiB and
/// Kafka caps offset metadata far below this).
const MAX_BODY_LEN: usize = 4 * 1024 * 1024;

/// One captured position of one consumer group on one partition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupOffsetEntry {
    /// When the offset was read from the cluster, ms since the epoch.
    pub capture_time_ms: i64,
    /// The consumer group id (any text).
    pub group: String,
    /// The committed offset: the next offset the group would read.
    pub committed_offset: i64,
    /// The commit's metadata string ("" when none).
    pub metadata: String,
}

/// Encodes one entry as a complete frame.
fn encode_frame(e: &GroupOffsetEntry, path: &Path) -> Result<Vec<u8>> {
    let group = e.group.as_bytes();
    let meta = e.metadata.as_bytes();
    if group.len() > u16::MAX as usize {
        return Err(Error::Config(format!(
            "consumer group id of {} bytes cannot be stored in {}: Kafka group ids are far shorter; \
             exclude this group with groups.exclude",
            group.len(),
            path.display()
        )));
    }
    let body_len = 8 + 8 + 2 + group.len() + 4 + meta.len();
    if body_len > MAX_BODY_LEN {
        return Err(Error::Config(format!(
            "offset metadata of group {:?} is {} bytes, more than the {} kbackup stores; \
             exclude this group with groups.exclude",
            e.group,
            meta.len(),
            MAX_BODY_LEN
        )));
    }
    let mut body = Vec::with_capacity(body_len);
    body.extend_from_slice(&e.capture_time_ms.to_be_bytes());
    body.extend_from_slice(&e.committed_offset.to_be_bytes());
    body.extend_from_slice(&(group.len() as u16).to_be_bytes());
    body.extend_from_slice(group);
    body.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    body.extend_from_slice(meta);
    let mut frame = Vec::with_capacity(FRAME_OVERHEAD + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Decodes a frame body whose CRC already matched; `pos` is the frame's position in the file.
fn decode_body(body: &[u8], path: &Path, pos: u64) -> Result<GroupOffsetEntry> {
    let bad = |what: &str| Error::corrupt(path, pos, format!("group-offsets entry {what}"));
    let take = |at: usize, n: usize| body.get(at..at + n).ok_or_else(|| bad("is truncated"));
    let i64_at = |at: usize| -> Result<i64> {
        Ok(i64::from_be_bytes(
            take(at, 8)?.try_into().unwrap_or_default(),
        ))
    };
    let capture_time_ms = i64_at(0)?;
    let committed_offset = i64_at(8)?;
    let glen = u16::from_be_bytes(take(16, 2)?.try_into().unwrap_or_default()) as usize;
    let group = String::from_utf8(take(18, glen)?.to_vec())
        .map_err(|_| bad("has a group id that is not UTF-8"))?;
    let mlen_at = 18 + glen;
    let mlen = u32::from_be_bytes(take(mlen_at, 4)?.try_into().unwrap_or_default()) as usize;
    let metadata = String::from_utf8(take(mlen_at + 4, mlen)?.to_vec())
        .map_err(|_| bad("has metadata that is not UTF-8"))?;
    if mlen_at + 4 + mlen != body.len() {
        return Err(bad("has trailing bytes after its metadata"));
    }
    Ok(GroupOffsetEntry {
        capture_time_ms,
        group,
        committed_offset,
        metadata,
    })
}

/// The entries of a log image plus the length of its valid prefix (anything after is torn).
struct Scan {
    entries: Vec<GroupOffsetEntry>,
    valid_len: u64,
}

/// Parses a whole log image; tolerates a torn last frame, fails on damage elsewhere.
fn scan(data: &[u8], path: &Path) -> Result<Scan> {
    if (data.len() as u64) < HEADER_LEN {
        // A crash while creating the file: nothing was ever committed to it.
        if !MAGIC.starts_with(&data[..data.len().min(4)]) {
            return Err(Error::corrupt(
                path,
                0,
                "file is too short and does not start with the group-offsets magic \"KBGO\"",
            ));
        }
        return Ok(Scan {
            entries: Vec::new(),
            valid_len: 0,
        });
    }
    if data[..4] != MAGIC {
        return Err(Error::corrupt(
            path,
            0,
            "file does not start with the group-offsets magic \"KBGO\"",
        ));
    }
    let version = u16::from_be_bytes([data[4], data[5]]);
    if !(OLDEST_SUPPORTED..=FORMAT_VERSION).contains(&version) {
        return Err(Error::corrupt(
            path,
            4,
            format!(
                "group-offsets log format version {version} is not supported (this kbackup reads \
                 {OLDEST_SUPPORTED} to {FORMAT_VERSION}); use a newer kbackup"
            ),
        ));
    }
    let mut entries = Vec::new();
    let mut pos = HEADER_LEN as usize;
    while pos < data.len() {
        let rest = &data[pos..];
        if rest.len() < FRAME_OVERHEAD {
            break; // torn frame header at the tail
        }
        let len = u32::from_be_bytes(rest[0..4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_be_bytes(rest[4..8].try_into().unwrap_or_default());
        let end = FRAME_OVERHEAD.saturating_add(len);
        if end > rest.len() {
            break; // torn body at the tail
        }
        let body = &rest[FRAME_OVERHEAD..end];
        let is_last = end == rest.len();
        if len > MAX_BODY_LEN || crc32fast::hash(body) != crc {
            if is_last {
                break; // a torn write whose length landed but whose body did not
            }
            let what = if len > MAX_BODY_LEN {
                "has an impossible length"
            } else {
                "fails its CRC-32 check"
            };
            return Err(Error::corrupt(
                path,
                pos as u64,
                format!("group-offsets entry {what}"),
            ));
        }
        entries.push(decode_body(body, path, pos as u64)?);
        pos += end;
    }
    Ok(Scan {
        entries,
        valid_len: pos as u64,
    })
}

fn read_image(path: &Path) -> Result<Option<Vec<u8>>> {
    match File::open(path) {
        Ok(mut f) => {
            let mut data = Vec::new();
            f.read_to_end(&mut data)
                .map_err(|e| Error::io(e, "read group-offsets log", path))?;
            Ok(Some(data))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(e, "open group-offsets log", path)),
    }
}

/// Every entry of the log, in append order; a missing file has none.
pub fn read_all(path: &Path) -> Result<Vec<GroupOffsetEntry>> {
    match read_image(path)? {
        Some(data) => Ok(scan(&data, path)?.entries),
        None => Ok(Vec::new()),
    }
}

/// The last entry of each group, keyed by group id.
pub fn latest_per_group(path: &Path) -> Result<BTreeMap<String, GroupOffsetEntry>> {
    let mut latest = BTreeMap::new();
    for e in read_all(path)? {
        latest.insert(e.group.clone(), e);
    }
    Ok(latest)
}

/// Appends entries durably (fsync), creating the file and its directory if needed.
///
/// A torn tail left by an earlier crash is cut off first, so new frames always follow a valid
/// one. Damage in the middle of the file is an error and nothing is written.
pub fn append(path: &Path, entries: &[GroupOffsetEntry]) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(&encode_frame(e, path)?);
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        fs::create_dir_all(dir).map_err(|e| Error::io(e, "create directory", dir))?;
    }
    let existing = read_image(path)?;
    let created = existing.is_none();
    let valid_len = match &existing {
        Some(data) => scan(data, path)?.valid_len,
        None => 0,
    };
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(e, "open group-offsets log for writing", path))?;
    if existing.as_ref().map(|d| d.len() as u64) != Some(valid_len) {
        f.set_len(valid_len)
            .map_err(|e| Error::io(e, "cut the torn tail of group-offsets log", path))?;
    }
    let mut buf = Vec::with_capacity(HEADER_LEN as usize + out.len());
    if valid_len == 0 {
        buf.extend_from_slice(&MAGIC);
        buf.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        buf.extend_from_slice(&0u16.to_be_bytes());
    }
    buf.extend_from_slice(&out);
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(valid_len))
        .map_err(|e| Error::io(e, "seek in group-offsets log", path))?;
    f.write_all(&buf)
        .map_err(|e| Error::io(e, "append to group-offsets log", path))?;
    f.sync_all()
        .map_err(|e| Error::io(e, "fsync group-offsets log", path))?;
    if created {
        if let Some(dir) = dir {
            crate::layout::fsync_dir(dir)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(group: &str, offset: i64) -> GroupOffsetEntry {
        GroupOffsetEntry {
            capture_time_ms: 1_700_000_000_000 + offset,
            group: group.to_string(),
            committed_offset: offset,
            metadata: format!("meta-{offset}"),
        }
    }

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().expect("temp dir")
    }

    #[test]
    fn round_trips_and_keeps_append_order() {
        let d = dir();
        let p = d.path().join("sub").join("group-offsets.log");
        append(&p, &[entry("a", 1), entry("b", 2)]).unwrap();
        append(&p, &[entry("a", 5)]).unwrap();
        assert_eq!(
            read_all(&p).unwrap(),
            vec![entry("a", 1), entry("b", 2), entry("a", 5)]
        );
        let latest = latest_per_group(&p).unwrap();
        assert_eq!(latest["a"].committed_offset, 5);
        assert_eq!(latest["b"].committed_offset, 2);
        assert_eq!(&std::fs::read(&p).unwrap()[..4], b"KBGO");
    }

    #[test]
    fn missing_file_reads_as_empty() {
        let d = dir();
        assert!(read_all(&d.path().join("nope")).unwrap().is_empty());
    }

    #[test]
    fn odd_group_ids_are_data_not_paths() {
        let d = dir();
        let p = d.path().join("log");
        let odd = [
            "with space",
            "../../etc/passwd",
            "a/b\\c",
            "ünïcødé ✓ 組",
            "",
            "nul\0byte",
            "\n",
        ];
        let entries: Vec<_> = odd
            .iter()
            .enumerate()
            .map(|(i, g)| entry(g, i as i64))
            .collect();
        append(&p, &entries).unwrap();
        assert_eq!(read_all(&p).unwrap(), entries);
        // Nothing but the log itself was created.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn torn_tail_is_ignored_on_read_and_cut_on_append() {
        let d = dir();
        let p = d.path().join("log");
        append(&p, &[entry("g", 1), entry("g", 2)]).unwrap();
        let full = std::fs::read(&p).unwrap();
        for cut in 1..=7 {
            // Every partial last frame (header or body) is a torn tail.
            std::fs::write(&p, &full[..full.len() - cut]).unwrap();
            assert_eq!(read_all(&p).unwrap(), vec![entry("g", 1)], "cut {cut}");
        }
        append(&p, &[entry("g", 3)]).unwrap();
        assert_eq!(read_all(&p).unwrap(), vec![entry("g", 1), entry("g", 3)]);
    }

    #[test]
    fn torn_last_frame_with_garbage_body_is_a_torn_tail() {
        let d = dir();
        let p = d.path().join("log");
        append(&p, &[entry("g", 1), entry("g", 2)]).unwrap();
        let mut data = std::fs::read(&p).unwrap();
        let n = data.len();
        data[n - 3..].fill(0); // length landed, body did not
        std::fs::write(&p, &data).unwrap();
        assert_eq!(read_all(&p).unwrap(), vec![entry("g", 1)]);
    }

    #[test]
    fn torn_header_of_new_file_reads_empty_and_is_rewritten() {
        let d = dir();
        let p = d.path().join("log");
        std::fs::write(&p, b"KB").unwrap();
        assert!(read_all(&p).unwrap().is_empty());
        append(&p, &[entry("g", 9)]).unwrap();
        assert_eq!(read_all(&p).unwrap(), vec![entry("g", 9)]);
    }

    #[test]
    fn bit_flip_in_the_middle_is_corruption_with_position() {
        let d = dir();
        let p = d.path().join("log");
        append(&p, &[entry("g", 1), entry("g", 2)]).unwrap();
        let mut data = std::fs::read(&p).unwrap();
        let flip = HEADER_LEN as usize + FRAME_OVERHEAD + 3; // inside the first body
        data[flip] ^= 0x10;
        std::fs::write(&p, &data).unwrap();
        let err = read_all(&p).unwrap_err();
        match &err {
            Error::Corrupt {
                path,
                position,
                detail,
            } => {
                assert_eq!(path, &p);
                assert_eq!(*position, HEADER_LEN);
                assert!(detail.contains("CRC"), "{detail}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        // Appending to a damaged log refuses instead of burying the damage.
        assert!(matches!(
            append(&p, &[entry("g", 3)]),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn wrong_magic_and_future_version_are_rejected() {
        let d = dir();
        let p = d.path().join("log");
        std::fs::write(&p, b"NOPE\0\x01\0\0").unwrap();
        assert!(matches!(
            read_all(&p),
            Err(Error::Corrupt { position: 0, .. })
        ));
        std::fs::write(&p, b"KBGO\0\x09\0\0").unwrap();
        let m = read_all(&p).unwrap_err().to_string();
        assert!(
            m.contains("version 9") && m.contains("newer kbackup"),
            "{m}"
        );
    }
}
