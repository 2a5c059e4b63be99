//! The per-partition group-offsets log: an append-only file of consumer-group positions.
//!
//! The capture thread appends one entry each time a group's committed offset on a backed-up
//! partition changes; the restore reads the latest entry per group to translate it. Group ids
//! are arbitrary text, so they live INSIDE the file as data, never in a file name.
//!
//! Layout (all integers big-endian; specified in docs/format.md, "Group offsets log"):
//!
//! ```text
//! file      := header frame*
//! header v1 := "KBGO" , u16 version (=1) , u16 reserved (=0)
//! header v2 := "KBGO" , u16 version (=2) , u16 reserved (=0) , u32 crc32(bytes 0..8)
//! frame v1  := u32 body_len , u32 crc32(body) , body
//! frame v2  := u32 body_len , u32 crc32(body_len) , u32 crc32(body) , body   (crate::frame)
//! body      := i64 capture_time_ms , i64 committed_offset ,
//!              u16 group_len , group (UTF-8) , u32 metadata_len , metadata (UTF-8)
//! ```
//!
//! Version 1 had no CRC on the length, so one damaged length made every later entry look like
//! a torn tail that the next append cut off. Version 2 frames entries like segments, so torn
//! versus corrupt is decided by [`crate::frame::check`] for both file kinds. Version 1 files
//! stay readable forever; the first append to one rewrites it as version 2 (atomically, after
//! a scan that refuses damage). Appends take an exclusive `flock` on `group-offsets.lock`
//! beside the log, so one writer at a time reads, extends and fsyncs it.

use crate::error::{Error, Result};
use crate::frame;
use crate::perms::Perms;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Magic bytes at the start of every group-offsets log.
pub const MAGIC: [u8; 4] = *b"KBGO";
/// Format version written by this code.
pub const FORMAT_VERSION: u16 = 2;
/// Oldest format version this code reads.
pub const OLDEST_SUPPORTED: u16 = 1;
/// Name of the lock file beside each log; its appender holds an exclusive `flock` on it.
pub const LOCK_FILE: &str = "group-offsets.lock";
/// Bytes of a body besides the group id and the metadata.
const BODY_FIXED: usize = 8 + 8 + 2 + 4;
/// Upper bound on a frame body; anything larger is damage, not data (group ids are < 64 KiB and
/// Kafka caps offset metadata far below this).
const MAX_BODY_LEN: usize = 4 * 1024 * 1024;
/// How long an append waits for another writer of the same log (a capture of an old owner
/// after a rebalance, a second capture loop) before it fails with a retriable error.
const LOCK_WAIT: Duration = Duration::from_secs(30);

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

/// What differs between the versions of the file: every version check is here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    /// 8-byte header; frames `len , crc(body) , body` (no CRC on the length).
    V1,
    /// 12-byte header with a CRC; frames as segments (`crate::frame`).
    V2,
}

impl Version {
    fn header_len(self) -> usize {
        match self {
            Version::V1 => 8,
            Version::V2 => 12,
        }
    }

    fn number(self) -> u16 {
        match self {
            Version::V1 => 1,
            Version::V2 => 2,
        }
    }

    /// The version of a file from its bytes 4..6; anything else is refused with a message that
    /// covers both causes (a newer kbackup, or damage).
    fn of(path: &Path, number: u16) -> Result<Version> {
        match number {
            1 => Ok(Version::V1),
            2 => Ok(Version::V2),
            n => Err(Error::corrupt(
                path,
                4,
                format!(
                    "group-offsets log format version {n} is not supported (this kbackup reads \
                     {OLDEST_SUPPORTED} to {FORMAT_VERSION}): the file was written by a newer \
                     kbackup (use a newer kbackup) or its header is damaged"
                ),
            )),
        }
    }
}

fn encode_header() -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
    let crc = crc32fast::hash(&h[0..8]);
    h[8..12].copy_from_slice(&crc.to_be_bytes());
    h
}

/// Encodes one entry as a complete frame of the current version.
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
    let body_len = BODY_FIXED + group.len() + meta.len();
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
    let mut frame = Vec::with_capacity(frame::PREFIX_LEN + body.len());
    frame.extend_from_slice(&frame::prefix(&body));
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// The bytes of a complete current-version log holding `entries` (what [`append`] writes into
/// an empty file; the golden fixture test compares with it).
pub fn encode(path: &Path, entries: &[GroupOffsetEntry]) -> Result<Vec<u8>> {
    let mut out = encode_header().to_vec();
    for e in entries {
        out.extend_from_slice(&encode_frame(e, path)?);
    }
    Ok(out)
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

/// What a scan of a log found (see [`check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogScan {
    /// Format version of the file (`None`: no complete header, so no entries).
    pub version: Option<u16>,
    /// The entries, in append order.
    pub entries: Vec<GroupOffsetEntry>,
    /// Bytes from the start of the file through the last valid entry (0 without a header).
    pub valid_len: u64,
    /// Length of the file.
    pub file_len: u64,
    /// Set when the file ends in an interrupted append: (position, what).
    pub torn: Option<(u64, String)>,
}

/// Whether a version 1 frame could start at `pos`: its length is consistent with its own
/// group and metadata lengths and its CRC matches. Finding one after a length that runs past
/// the end of the file proves that length damaged (version 1 cannot detect it otherwise).
fn v1_frame_at(data: &[u8], pos: usize) -> bool {
    let Some(rest) = data.get(pos..) else {
        return false;
    };
    let u32_at = |i: usize| {
        rest.get(i..i + 4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
    };
    let (Some(len), Some(crc)) = (u32_at(0), u32_at(4)) else {
        return false;
    };
    if !(BODY_FIXED..=MAX_BODY_LEN).contains(&len) || 8 + len > rest.len() {
        return false;
    }
    let body = &rest[8..8 + len];
    let glen = u16::from_be_bytes([body[16], body[17]]) as usize;
    let mlen = body
        .get(18 + glen..22 + glen)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize);
    mlen == Some(len - BODY_FIXED - glen) && crc32fast::hash(body) == crc as u32
}

/// The frame at `pos` of a version 1 file, with the same torn/corrupt rules as
/// [`frame::check`] as far as version 1 allows: its length has no CRC, so a length that runs
/// past the end of the file is torn unless a valid frame starts later in the file.
fn check_v1(data: &[u8], pos: usize) -> frame::Check {
    let rest = &data[pos.min(data.len())..];
    if rest.is_empty() {
        return frame::Check::End;
    }
    if rest.iter().all(|&b| b == 0) {
        return frame::Check::Torn(format!("zero-filled tail ({} bytes)", rest.len()));
    }
    if rest.len() < 8 {
        return frame::Check::Torn(format!("incomplete frame header ({} bytes)", rest.len()));
    }
    let len = u32::from_be_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_be_bytes(rest[4..8].try_into().expect("4 bytes"));
    if !(BODY_FIXED..=MAX_BODY_LEN).contains(&len) {
        return frame::Check::Corrupt(format!("impossible length {len}"));
    }
    if 8 + len > rest.len() {
        if (pos + 8 + BODY_FIXED..data.len()).any(|p| v1_frame_at(data, p)) {
            return frame::Check::Corrupt(format!(
                "damaged length field ({len} bytes announced, valid entries follow)"
            ));
        }
        return frame::Check::Torn(format!(
            "incomplete frame: {len} bytes announced, {} present",
            rest.len() - 8
        ));
    }
    if crc32fast::hash(&rest[8..8 + len]) != crc {
        return frame::Check::Corrupt("CRC mismatch: the body is damaged".into());
    }
    frame::Check::Complete {
        body: pos + 8..pos + 8 + len,
        next: pos + 8 + len,
    }
}

/// Parses a whole log image; reports a torn last append, fails on damage anywhere.
fn scan(data: &[u8], path: &Path) -> Result<LogScan> {
    let empty = |torn: Option<(u64, String)>| LogScan {
        version: None,
        entries: Vec::new(),
        valid_len: 0,
        file_len: data.len() as u64,
        torn,
    };
    let have = data.len().min(4);
    if data[..have] != MAGIC[..have] {
        return Err(Error::corrupt(
            path,
            0,
            "file does not start with the group-offsets magic \"KBGO\"",
        ));
    }
    if data.len() < 6 {
        // A crash while creating the file: nothing was ever committed to it.
        return Ok(empty(
            (!data.is_empty()).then(|| (0, "incomplete file header".to_string())),
        ));
    }
    let version = Version::of(path, u16::from_be_bytes([data[4], data[5]]))?;
    let header_len = version.header_len();
    if data.len() < header_len {
        return Ok(empty(Some((0, "incomplete file header".into()))));
    }
    if version == Version::V2 {
        let crc = u32::from_be_bytes(data[8..12].try_into().expect("4 bytes"));
        if crc != crc32fast::hash(&data[0..8]) {
            return Err(Error::corrupt(
                path,
                0,
                "group-offsets log header (bytes 0..12) fails its CRC check",
            ));
        }
    }
    let mut entries = Vec::new();
    let mut pos = header_len;
    let torn = loop {
        let check = match version {
            Version::V1 => check_v1(data, pos),
            Version::V2 => frame::check(data, pos, BODY_FIXED as u32, MAX_BODY_LEN as u32),
        };
        match check {
            frame::Check::End => break None,
            frame::Check::Torn(why) => break Some((pos as u64, why)),
            frame::Check::Corrupt(why) => {
                return Err(Error::corrupt(
                    path,
                    pos as u64,
                    format!("group-offsets entry: {why}"),
                ))
            }
            frame::Check::Complete { body, next } => {
                entries.push(decode_body(&data[body], path, pos as u64)?);
                pos = next;
            }
        }
    };
    Ok(LogScan {
        version: Some(version.number()),
        entries,
        valid_len: pos as u64,
        file_len: data.len() as u64,
        torn,
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

/// Scans a log as `kbackup verify` does: every entry, the version and a torn tail; damage is
/// an [`Error::Corrupt`] with the byte position. A missing file gives `None`.
pub fn check(path: &Path) -> Result<Option<LogScan>> {
    read_image(path)?.map(|data| scan(&data, path)).transpose()
}

/// Every entry of the log, in append order; a missing file has none.
pub fn read_all(path: &Path) -> Result<Vec<GroupOffsetEntry>> {
    Ok(check(path)?.map(|s| s.entries).unwrap_or_default())
}

/// The last entry of each group, keyed by group id.
pub fn latest_per_group(path: &Path) -> Result<BTreeMap<String, GroupOffsetEntry>> {
    let mut latest = BTreeMap::new();
    for e in read_all(path)? {
        latest.insert(e.group.clone(), e);
    }
    Ok(latest)
}

/// The lock file of the log at `path`.
pub fn lock_path(path: &Path) -> PathBuf {
    path.with_file_name(LOCK_FILE)
}

/// Takes the exclusive append lock of a log, waiting up to [`LOCK_WAIT`] for another writer.
/// The kernel drops the lock when its holder exits, so a crash never leaves it stale.
fn lock(path: &Path, perms: Perms) -> Result<File> {
    let lpath = lock_path(path);
    let file = perms
        .open_write(&lpath)
        .map_err(|e| Error::io(e, "open the group-offsets lock file", &lpath))?;
    let started = std::time::Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(fs::TryLockError::WouldBlock) if started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(Error::Io {
                    path: lpath,
                    op: "lock group-offsets log for appending",
                    source: std::io::Error::new(
                        std::io::ErrorKind::WouldBlock,
                        format!(
                            "{} has been locked by another writer for more than {}s; a capture \
                             holds it only while it appends, so look for a hung kbackup process \
                             on this backup",
                            path.display(),
                            LOCK_WAIT.as_secs()
                        ),
                    ),
                })
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(Error::io(e, "lock group-offsets log for appending", &lpath))
            }
        }
    }
}

/// Appends entries durably (fsync), creating the file and its directory if needed; answers how
/// many were appended. A new file or directory gets `perms`.
///
/// One writer at a time: the append holds the log's lock while it reads, extends and fsyncs
/// it. Entries that add nothing to what the file already holds are dropped: the same offset and
/// metadata as the group's last entry (another capture wrote it), or an older capture time than
/// that entry (a stale capture that lost the race must not become the group's last entry).
/// A torn tail left by an earlier crash is cut off first; damage anywhere is an error and
/// nothing is written. A version 1 file is rewritten as the current version (temporary file,
/// fsync, rename, directory fsync) with the new entries.
pub fn append(path: &Path, entries: &[GroupOffsetEntry], perms: Perms) -> Result<usize> {
    if entries.is_empty() {
        return Ok(0);
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        perms
            .create_dir_all(dir)
            .map_err(|e| Error::io(e, "create directory", dir))?;
    }
    let _lock = lock(path, perms)?;
    let existing = read_image(path)?;
    let scan = existing.as_deref().map(|d| scan(d, path)).transpose()?;
    let mut latest: BTreeMap<&str, &GroupOffsetEntry> = BTreeMap::new();
    for e in scan.iter().flat_map(|s| &s.entries) {
        latest.insert(&e.group, e);
    }
    let mut fresh = Vec::new();
    for e in entries {
        let adds = latest.get(e.group.as_str()).is_none_or(|l| {
            e.capture_time_ms >= l.capture_time_ms
                && (e.committed_offset, &e.metadata) != (l.committed_offset, &l.metadata)
        });
        if adds {
            latest.insert(&e.group, e);
            fresh.push(e);
        } else {
            log::debug!(
                "{}: not appending group {:?} offset {} captured at {}: the log already holds \
                 it or a later capture",
                path.display(),
                e.group,
                e.committed_offset,
                e.capture_time_ms
            );
        }
    }
    if fresh.is_empty() {
        return Ok(0);
    }
    let mut out = Vec::new();
    for e in &fresh {
        out.extend_from_slice(&encode_frame(e, path)?);
    }
    let old_version = scan.as_ref().and_then(|s| s.version);
    if old_version.is_some_and(|v| v != FORMAT_VERSION) {
        let mut all: Vec<GroupOffsetEntry> = scan.map(|s| s.entries).unwrap_or_default();
        all.extend(fresh.iter().map(|e| (*e).clone()));
        log::info!(
            "{}: rewriting the group-offsets log from format version {} to {FORMAT_VERSION}",
            path.display(),
            old_version.unwrap_or_default()
        );
        crate::layout::write_atomic(path, &encode(path, &all)?, perms)?;
        return Ok(fresh.len());
    }
    let valid_len = scan.as_ref().map_or(0, |s| s.valid_len);
    let created = existing.is_none();
    let mut f = perms
        .open_write(path)
        .map_err(|e| Error::io(e, "open group-offsets log for writing", path))?;
    if let Some((pos, why)) = scan.as_ref().and_then(|s| s.torn.as_ref()) {
        log::warn!(
            "{}: torn append at byte {pos} ({why}); cutting it off before appending",
            path.display()
        );
    }
    if existing.as_ref().map(|d| d.len() as u64) != Some(valid_len) {
        f.set_len(valid_len)
            .map_err(|e| Error::io(e, "cut the torn tail of group-offsets log", path))?;
    }
    let mut buf = Vec::with_capacity(12 + out.len());
    if valid_len == 0 {
        buf.extend_from_slice(&encode_header());
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
    Ok(fresh.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perms::OWNER_ONLY;

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

    /// A version 1 file as kbackup 0.1 wrote it (8-byte header, frames without length CRC).
    fn v1_image(entries: &[GroupOffsetEntry]) -> Vec<u8> {
        let mut out = b"KBGO\0\x01\0\0".to_vec();
        for e in entries {
            let framed = encode_frame(e, Path::new("x")).unwrap();
            let body = &framed[frame::PREFIX_LEN..];
            out.extend_from_slice(&(body.len() as u32).to_be_bytes());
            out.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
            out.extend_from_slice(body);
        }
        out
    }

    /// Positions of the frames of a current-version log.
    fn frame_positions(data: &[u8]) -> Vec<usize> {
        let mut out = vec![];
        let mut pos = 12;
        while let frame::Check::Complete { next, .. } =
            frame::check(data, pos, BODY_FIXED as u32, MAX_BODY_LEN as u32)
        {
            out.push(pos);
            pos = next;
        }
        out
    }

    fn corrupt_at(r: Result<Vec<GroupOffsetEntry>>) -> u64 {
        match r {
            Err(Error::Corrupt { position, .. }) => position,
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn round_trips_and_keeps_append_order() {
        let d = dir();
        let p = d.path().join("sub").join("group-offsets.log");
        append(&p, &[entry("a", 1), entry("b", 2)], OWNER_ONLY).unwrap();
        append(&p, &[entry("a", 5)], OWNER_ONLY).unwrap();
        assert_eq!(
            read_all(&p).unwrap(),
            vec![entry("a", 1), entry("b", 2), entry("a", 5)]
        );
        let latest = latest_per_group(&p).unwrap();
        assert_eq!(latest["a"].committed_offset, 5);
        assert_eq!(latest["b"].committed_offset, 2);
        let data = std::fs::read(&p).unwrap();
        assert_eq!(&data[..6], b"KBGO\0\x02");
        assert_eq!(data, encode(&p, &read_all(&p).unwrap()).unwrap());
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
        append(&p, &entries, OWNER_ONLY).unwrap();
        assert_eq!(read_all(&p).unwrap(), entries);
        // Nothing but the log and its lock file was created.
        let mut names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec![LOCK_FILE.to_string(), "log".to_string()]);
    }

    #[test]
    fn torn_tail_is_ignored_on_read_and_cut_on_append() {
        let d = dir();
        let p = d.path().join("log");
        append(&p, &[entry("g", 1), entry("g", 2)], OWNER_ONLY).unwrap();
        let full = std::fs::read(&p).unwrap();
        let last = *frame_positions(&full).last().unwrap();
        for cut in 1..full.len() - last {
            // Every partial last frame (prefix or body) is a torn tail.
            std::fs::write(&p, &full[..full.len() - cut]).unwrap();
            assert_eq!(read_all(&p).unwrap(), vec![entry("g", 1)], "cut {cut}");
            let s = check(&p).unwrap().unwrap();
            assert_eq!(s.torn.unwrap().0, last as u64);
        }
        append(&p, &[entry("g", 3)], OWNER_ONLY).unwrap();
        assert_eq!(read_all(&p).unwrap(), vec![entry("g", 1), entry("g", 3)]);
    }

    #[test]
    fn zero_fill_after_the_last_entry_is_a_torn_tail() {
        let d = dir();
        let p = d.path().join("log");
        append(&p, &[entry("g", 1)], OWNER_ONLY).unwrap();
        let mut data = std::fs::read(&p).unwrap();
        let end = data.len() as u64;
        data.extend_from_slice(&[0; 300]);
        std::fs::write(&p, &data).unwrap();
        assert_eq!(check(&p).unwrap().unwrap().torn.unwrap().0, end);
        append(&p, &[entry("g", 2)], OWNER_ONLY).unwrap();
        assert_eq!(read_all(&p).unwrap(), vec![entry("g", 1), entry("g", 2)]);
    }

    /// Defect 5 for the offsets log: a complete last entry with a damaged body was a torn tail.
    #[test]
    fn bit_flip_in_the_last_entry_is_corruption_not_a_torn_tail() {
        let d = dir();
        let p = d.path().join("log");
        append(&p, &[entry("g", 1), entry("g", 2)], OWNER_ONLY).unwrap();
        let mut data = std::fs::read(&p).unwrap();
        let last = *frame_positions(&data).last().unwrap();
        let n = data.len();
        data[n - 3] ^= 0x01;
        std::fs::write(&p, &data).unwrap();
        assert_eq!(corrupt_at(read_all(&p)), last as u64);
        assert!(matches!(
            append(&p, &[entry("g", 3)], OWNER_ONLY),
            Err(Error::Corrupt { .. })
        ));
        assert_eq!(
            std::fs::read(&p).unwrap(),
            data,
            "nothing cut, nothing added"
        );
    }

    #[test]
    fn torn_header_of_new_file_reads_empty_and_is_rewritten() {
        let d = dir();
        let p = d.path().join("log");
        std::fs::write(&p, b"KB").unwrap();
        assert!(read_all(&p).unwrap().is_empty());
        append(&p, &[entry("g", 9)], OWNER_ONLY).unwrap();
        assert_eq!(read_all(&p).unwrap(), vec![entry("g", 9)]);
    }

    #[test]
    fn bit_flip_in_the_middle_is_corruption_with_position() {
        let d = dir();
        let p = d.path().join("log");
        append(&p, &[entry("g", 1), entry("g", 2)], OWNER_ONLY).unwrap();
        let mut data = std::fs::read(&p).unwrap();
        data[12 + frame::PREFIX_LEN + 3] ^= 0x10; // inside the first body
        std::fs::write(&p, &data).unwrap();
        let err = read_all(&p).unwrap_err();
        match &err {
            Error::Corrupt {
                path,
                position,
                detail,
            } => {
                assert_eq!(path, &p);
                assert_eq!(*position, 12);
                assert!(detail.contains("CRC"), "{detail}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        // Appending to a damaged log refuses instead of burying the damage.
        assert!(matches!(
            append(&p, &[entry("g", 3)], OWNER_ONLY),
            Err(Error::Corrupt { .. })
        ));
    }

    /// Defect 8 (b): a damaged length of a middle entry made every later entry a "torn tail"
    /// that the next append cut off. Version 2 detects it, at every bit of the length field.
    #[test]
    fn defect8_damaged_length_is_detected_and_never_truncates_later_entries() {
        let d = dir();
        let p = d.path().join("log");
        append(
            &p,
            &[entry("a", 1), entry("b", 2), entry("c", 3)],
            OWNER_ONLY,
        )
        .unwrap();
        let good = std::fs::read(&p).unwrap();
        let second = frame_positions(&good)[1];
        for at in second..second + 8 {
            for bit in 0..8 {
                let mut data = good.clone();
                data[at] ^= 1 << bit;
                std::fs::write(&p, &data).unwrap();
                assert_eq!(
                    corrupt_at(read_all(&p)),
                    second as u64,
                    "byte {at} bit {bit}"
                );
                assert!(append(&p, &[entry("d", 4)], OWNER_ONLY).is_err());
                assert_eq!(std::fs::read(&p).unwrap(), data, "byte {at} bit {bit}");
            }
        }
    }

    /// Defect 8 (b) in files written before version 2: a length that runs past the end of the
    /// file while valid entries follow is damage, not a torn tail, so nothing is cut.
    #[test]
    fn defect8_damaged_length_in_a_version_1_file_is_detected() {
        let d = dir();
        let p = d.path().join("log");
        let entries = [entry("a", 1), entry("b", 2), entry("c", 3)];
        let good = v1_image(&entries);
        std::fs::write(&p, &good).unwrap();
        assert_eq!(read_all(&p).unwrap(), entries);
        let second = 8 + (good.len() - 8) / 3;
        // The length grows by 256 (past the end of the file, below the 4 MiB limit), or is
        // impossible.
        for (at, mask) in [(second + 2, 0x01), (second + 3, 0x80), (second, 0x40)] {
            let mut data = good.clone();
            data[at] ^= mask;
            std::fs::write(&p, &data).unwrap();
            assert_eq!(corrupt_at(read_all(&p)), second as u64, "byte {at}");
            assert!(append(&p, &[entry("d", 4)], OWNER_ONLY).is_err());
            assert_eq!(std::fs::read(&p).unwrap(), data);
        }
        // A really torn last append of a version 1 file is still cut, and the file becomes v2.
        std::fs::write(&p, &good[..good.len() - 5]).unwrap();
        assert_eq!(read_all(&p).unwrap(), entries[..2]);
        assert_eq!(append(&p, &[entry("d", 4)], OWNER_ONLY).unwrap(), 1);
        let after = std::fs::read(&p).unwrap();
        assert_eq!(&after[4..6], &[0, 2]);
        assert_eq!(
            read_all(&p).unwrap(),
            vec![entries[0].clone(), entries[1].clone(), entry("d", 4)]
        );
    }

    #[test]
    fn first_append_to_a_version_1_file_rewrites_it_as_version_2() {
        let d = dir();
        let p = d.path().join("log");
        let old = [entry("a", 1), entry("b", 2)];
        std::fs::write(&p, v1_image(&old)).unwrap();
        assert_eq!(append(&p, &[entry("a", 7)], OWNER_ONLY).unwrap(), 1);
        let want = [old[0].clone(), old[1].clone(), entry("a", 7)];
        assert_eq!(std::fs::read(&p).unwrap(), encode(&p, &want).unwrap());
        assert_eq!(check(&p).unwrap().unwrap().version, Some(2));
    }

    #[test]
    fn header_damage_and_unknown_versions_are_corruption() {
        let d = dir();
        let p = d.path().join("log");
        append(&p, &[entry("g", 1)], OWNER_ONLY).unwrap();
        let good = std::fs::read(&p).unwrap();
        for at in 0..12 {
            for bit in 0..8 {
                let mut data = good.clone();
                data[at] ^= 1 << bit;
                std::fs::write(&p, &data).unwrap();
                let pos = corrupt_at(read_all(&p));
                assert!(pos == 0 || pos == 4, "byte {at} bit {bit}: {pos}");
            }
        }
        std::fs::write(&p, b"NOPE\0\x01\0\0").unwrap();
        assert_eq!(corrupt_at(read_all(&p)), 0);
        std::fs::write(&p, b"KBGO\0\x09\0\0\0\0\0\0").unwrap();
        let m = read_all(&p).unwrap_err().to_string();
        assert!(
            m.contains("version 9") && m.contains("newer kbackup"),
            "{m}"
        );
    }

    /// Defect 8 (a): appends were not locked; two writers (two capture loops, an old owner's
    /// capture after a rebalance) could interleave or cut each other's frames.
    #[test]
    fn defect8_concurrent_appenders_never_lose_or_tear_an_entry() {
        let d = dir();
        let p = d.path().join("log");
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let p = p.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let g = format!("group-{w}");
                        append(&p, &[entry(&g, i)], OWNER_ONLY).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let all = read_all(&p).unwrap();
        assert_eq!(all.len(), 200);
        for w in 0..4 {
            let mine: Vec<i64> = all
                .iter()
                .filter(|e| e.group == format!("group-{w}"))
                .map(|e| e.committed_offset)
                .collect();
            assert_eq!(mine, (0..50).collect::<Vec<_>>());
        }
        assert!(check(&p).unwrap().unwrap().torn.is_none());
    }

    #[test]
    fn a_second_writer_waits_for_the_lock() {
        let d = dir();
        let p = d.path().join("log");
        append(&p, &[entry("g", 1)], OWNER_ONLY).unwrap();
        let held = lock(&p, OWNER_ONLY).unwrap();
        let p2 = p.clone();
        let started = std::time::Instant::now();
        let t = std::thread::spawn(move || append(&p2, &[entry("g", 2)], OWNER_ONLY).unwrap());
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            read_all(&p).unwrap().len(),
            1,
            "appended under another writer's lock"
        );
        drop(held);
        assert_eq!(t.join().unwrap(), 1);
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(read_all(&p).unwrap().len(), 2);
    }

    #[test]
    fn stale_and_repeated_captures_are_not_appended() {
        let d = dir();
        let p = d.path().join("log");
        append(&p, &[entry("g", 10)], OWNER_ONLY).unwrap();
        // Another capture of the same position, and an older capture losing the race.
        let same = GroupOffsetEntry {
            capture_time_ms: entry("g", 10).capture_time_ms + 5,
            ..entry("g", 10)
        };
        let stale = GroupOffsetEntry {
            capture_time_ms: entry("g", 10).capture_time_ms - 1,
            ..entry("g", 9)
        };
        assert_eq!(append(&p, &[same, stale], OWNER_ONLY).unwrap(), 0);
        assert_eq!(read_all(&p).unwrap(), vec![entry("g", 10)]);
        assert_eq!(append(&p, &[entry("g", 11)], OWNER_ONLY).unwrap(), 1);
    }
}
