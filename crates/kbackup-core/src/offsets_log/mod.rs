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
//! frame v2  := u32 body_len , u32 crc32(body_len) , u32 crc32(body) , body   (format::frame)
//! body      := i64 capture_time_ms , i64 committed_offset ,
//!              u16 group_len , group (UTF-8) , u32 metadata_len , metadata (UTF-8)
//! ```
//!
//! Version 1 had no CRC on the length, so one damaged length made every later entry look like
//! a torn tail that the next append cut off. Version 2 frames entries like segments, so torn
//! versus corrupt is decided by [`crate::format::frame::check`] and the frames are walked by
//! [`crate::format::frame::scan`] for both file kinds. Version 1 files stay readable forever; the first append to one rewrites it as version 2 (atomically, after
//! a scan that refuses damage). Appends take an exclusive `flock` on `group-offsets.lock`
//! beside the log, so one writer at a time reads, extends and fsyncs it.

#[cfg(test)]
mod tests;
mod v1;

use crate::error::{Error, Result};
use crate::format::bytes::{Cursor, DResult};
use crate::format::frame::{self, InMemory};
use crate::format::{check_version, FileKind};
use crate::layout;
use crate::perms::Perms;
use crate::storage::Store;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Format version written by this code; defined in [`crate::format`].
pub use crate::format::GROUP_OFFSETS_FORMAT_VERSION as FORMAT_VERSION;
/// Magic bytes at the start of every group-offsets log; defined in [`crate::format`].
pub use crate::format::GROUP_OFFSETS_MAGIC as MAGIC;
/// Oldest format version this code reads; defined in [`crate::format`].
pub use crate::format::GROUP_OFFSETS_OLDEST_SUPPORTED as OLDEST_SUPPORTED;
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

/// What differs between the versions of the file (which versions are read is decided by
/// [`crate::format::check_version`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    /// 8-byte header; frames `len , crc(body) , body` (no CRC on the length).
    V1,
    /// 12-byte header with a CRC; frames as segments ([`crate::format::frame`]).
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

    /// The version of a file from its bytes 4..6, after THE version check
    /// ([`crate::format::check_version`]).
    fn of(path: &Path, number: u16) -> Result<Version> {
        check_version(FileKind::GroupOffsetsLog, path, number)?;
        Ok(if number == 1 {
            Version::V1
        } else {
            Version::V2
        })
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
    let parse = |c: &mut Cursor<'_>| -> DResult<GroupOffsetEntry> {
        let capture_time_ms = c.i64("capture time")?;
        let committed_offset = c.i64("committed offset")?;
        let at = c.position();
        let glen = c.u16("group id length")?;
        let group = c.utf8(at, glen.into(), "group id")?.to_owned();
        let at = c.position();
        let mlen = c.u32("metadata length")?;
        let metadata = c.utf8(at, mlen as usize, "metadata")?.to_owned();
        c.finish("metadata")?;
        Ok(GroupOffsetEntry {
            capture_time_ms,
            group,
            committed_offset,
            metadata,
        })
    };
    parse(&mut Cursor::new(body)).map_err(|e| {
        Error::corrupt(
            path,
            pos,
            format!(
                "{CORRUPT_LABEL}malformed body at body byte {}: {}",
                e.position, e.detail
            ),
        )
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

/// Parses a whole log image read from `path` (a file or an object, for messages): reports a
/// torn last append, fails on damage anywhere ([`check`] of bytes already read).
pub fn scan(data: &[u8], path: &Path) -> Result<LogScan> {
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
    let mut visit = |pos: usize, body: &[u8]| -> Result<()> {
        entries.push(decode_body(body, path, pos as u64)?);
        Ok(())
    };
    let scanned = match version {
        Version::V1 => frame::scan(
            &mut InMemory {
                data,
                check: v1::check,
            },
            path,
            header_len,
            CORRUPT_LABEL,
            &mut visit,
        )?,
        Version::V2 => frame::scan(
            &mut InMemory {
                data,
                check: |d: &[u8], p| frame::check(d, p, BODY_FIXED as u32, MAX_BODY_LEN as u32),
            },
            path,
            header_len,
            CORRUPT_LABEL,
            &mut visit,
        )?,
    };
    Ok(LogScan {
        version: Some(version.number()),
        entries,
        valid_len: scanned.end as u64,
        file_len: data.len() as u64,
        torn: scanned.torn,
    })
}

/// Prefix of a corrupt entry's detail.
const CORRUPT_LABEL: &str = "group-offsets entry: ";

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

/// The parts of a partition's group-offsets log in an object store among `keys` (any keys;
/// only the partition's log and its chunks count), in log order: `group-offsets.log` first,
/// then the chunks by sequence ([`layout::group_offsets_chunk_name`]). Each comes with its
/// place in that order ([`layout::offsets_log_part`]).
pub fn store_parts<'a>(keys: impl IntoIterator<Item = &'a str>) -> Vec<(u64, String)> {
    let mut parts: Vec<(u64, String)> = keys
        .into_iter()
        .filter_map(|k| {
            let name = k.rsplit('/').next()?;
            Some((layout::offsets_log_part(name)?, k.to_string()))
        })
        .collect();
    parts.sort();
    parts
}

/// Every entry of a log stored as `parts` ([`store_parts`]), in log order. Damage in any part
/// is an [`Error::Corrupt`] naming the object; a torn last entry of a part is left out.
pub fn read_store_parts(
    store: &dyn Store,
    parts: &[(u64, String)],
) -> Result<Vec<GroupOffsetEntry>> {
    let mut out = Vec::new();
    for (_, key) in parts {
        let data = store.get(key)?;
        out.extend(scan(&data, Path::new(&store.describe(key)))?.entries);
    }
    Ok(out)
}

/// Appends `entries` to the log of the partition under `prefix` (`topics/<t>/<p>/`) in an
/// object store as a new chunk, created only if absent: `next_part` is the place after the
/// last part known ([`store_parts`]) and moves past the chunk written. A chunk another writer
/// created first is never overwritten: the next sequence number is tried.
pub fn append_store(
    store: &dyn Store,
    prefix: &str,
    next_part: &mut u64,
    entries: &[GroupOffsetEntry],
) -> Result<usize> {
    if entries.is_empty() {
        return Ok(0);
    }
    let seq = (*next_part).max(1) - 1;
    for attempt in 0..16u64 {
        let key = format!(
            "{prefix}{}",
            layout::group_offsets_chunk_name(seq + attempt)
        );
        let data = encode(Path::new(&store.describe(&key)), entries)?;
        match store.put_if_absent(&key, &data) {
            Ok(()) => {
                *next_part = seq + attempt + 2;
                return Ok(entries.len());
            }
            Err(e) if crate::storage::is_conflict(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::State(format!(
        "{}: 16 group-offsets chunks in a row were created by another writer while this one \
         tried to append; more than one capture writes this partition",
        store.describe(prefix.trim_end_matches('/'))
    )))
}

/// The last entry of each group, keyed by group id.
pub fn latest_per_group(path: &Path) -> Result<BTreeMap<String, GroupOffsetEntry>> {
    Ok(latest(read_all(path)?))
}

/// [`latest_per_group`] over entries already read (in append order), from a file or an object.
pub fn latest(entries: Vec<GroupOffsetEntry>) -> BTreeMap<String, GroupOffsetEntry> {
    let mut latest = BTreeMap::new();
    for e in entries {
        latest.insert(e.group.clone(), e);
    }
    latest
}

/// Each group's position as of `at` (ms since the epoch): its last entry captured AT OR BEFORE
/// `at`, never a later one. Also answers the groups whose every capture is later (their
/// position at `at` is unknown). With `at = None`, [`latest_per_group`].
pub fn per_group_as_of(
    path: &Path,
    at: Option<i64>,
) -> Result<(BTreeMap<String, GroupOffsetEntry>, Vec<String>)> {
    Ok(as_of(read_all(path)?, at))
}

/// [`per_group_as_of`] over entries already read (in append order), from a file or an object.
pub fn as_of(
    entries: Vec<GroupOffsetEntry>,
    at: Option<i64>,
) -> (BTreeMap<String, GroupOffsetEntry>, Vec<String>) {
    let mut known = BTreeMap::new();
    let mut later = std::collections::BTreeSet::new();
    for e in entries {
        if at.is_none_or(|t| e.capture_time_ms <= t) {
            later.remove(&e.group);
            // The latest capture wins; appends by two writers may interleave their times.
            let newer = known.get(&e.group).is_none_or(|k: &GroupOffsetEntry| {
                at.is_none() || e.capture_time_ms >= k.capture_time_ms
            });
            if newer {
                known.insert(e.group.clone(), e);
            }
        } else if !known.contains_key(&e.group) {
            later.insert(e.group);
        }
    }
    (known, later.into_iter().collect())
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
