//! Copying a backup between stores (`kbackup copy SRC DST`): a local directory to a bucket,
//! a bucket to a directory, or any store to another, so an operator can seed, migrate or take
//! an offline copy.
//!
//! Nothing is copied blind. Every segment is scanned at the source with the readers' rules
//! (every CRC, offsets increasing, docs/format.md) before a byte is written, streamed to the
//! destination in parts (memory bounded by the part size and the read-ahead, not by the
//! segment), then read back from the destination and scanned again: the copy must hold the
//! same records with the same index entries, or the destination's object is deleted and the
//! copy fails. A torn tail (a segment the sink is still writing, or was writing when it
//! crashed) is copied up to its last whole record and reported. Indexes are derived data:
//! the destination gets the index files its segments imply. Group-offset logs and topic
//! manifests are checked the same way. The root marker is written last, so a copy that stopped
//! half way is never taken for a whole backup; running the copy again resumes it, skipping
//! what the destination already holds intact.

use crate::error::{Error, Result};
use crate::layout::{self, KeyKind};
use crate::manifest;
use crate::offsets_log;
use crate::segment::{self, SegmentFile, SegmentScan};
use crate::storage::Store;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

/// Bytes read from the source per request while streaming a segment.
const COPY_CHUNK: u64 = 8 * 1024 * 1024;

/// An object of the source that was not copied, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// Its key in the source.
    pub key: String,
    /// Why it was left behind.
    pub why: String,
}

/// A segment or log whose torn tail was left behind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TornTail {
    /// Its key.
    pub key: String,
    /// Bytes copied (through the last whole record or entry).
    pub copied: u64,
    /// Length at the source.
    pub source_len: u64,
    /// What was torn.
    pub why: String,
}

/// Result of [`copy`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    /// The source's location.
    pub source: String,
    /// The destination's location.
    pub destination: String,
    /// Objects written to the destination (segments, indexes, logs, manifests, the marker).
    pub written: u64,
    /// Objects the destination already held intact (a resumed or repeated copy).
    pub unchanged: u64,
    /// Segments checked at both ends.
    pub segments: u64,
    /// Records in them.
    pub records: u64,
    /// Segment bytes written to the destination.
    pub bytes: u64,
    /// Source objects left behind with the reason (restore progress, stray files).
    pub skipped: Vec<Skipped>,
    /// Torn tails cut off.
    pub torn: Vec<TornTail>,
    /// Objects under `topics/` at the destination that the source no longer holds (segments
    /// pruned since an earlier copy); left in place, never deleted by a copy.
    pub only_in_destination: Vec<String>,
}

impl CopyReport {
    /// Notes a torn tail (`torn` as the scans report it) cut at `copied` of `source_len` bytes.
    fn note_torn(&mut self, key: &str, torn: &Option<(u64, String)>, copied: u64, source_len: u64) {
        if let Some((_, why)) = torn {
            self.torn.push(TornTail {
                key: key.into(),
                copied,
                source_len,
                why: why.clone(),
            });
        }
    }
}

/// Copies the backup in `src` to `dst`. `progress` is called with the size of each segment
/// once it is copied and checked ([`crate::reader::Backup::segment_bytes`]-like totals come
/// from listing the source).
///
/// `dst` must be empty, a copy of this same backup (its root marker equal to the source's:
/// the copy is refreshed), or an interrupted copy of it (objects under `topics/` and no root
/// marker). Anything else is refused before a byte is written.
pub fn copy(
    src: Arc<dyn Store>,
    dst: Arc<dyn Store>,
    progress: &mut dyn FnMut(u64),
) -> Result<CopyReport> {
    let (_, marker) = manifest::read_store_marker(src.as_ref())?;
    check_destination(dst.as_ref(), &marker)?;
    let mut rep = CopyReport {
        source: src.location(),
        destination: dst.location(),
        written: 0,
        unchanged: 0,
        segments: 0,
        records: 0,
        bytes: 0,
        skipped: Vec::new(),
        torn: Vec::new(),
        only_in_destination: Vec::new(),
    };
    let objects = src.list("")?;
    let mut copied = BTreeSet::new();
    let segments: BTreeSet<&str> = objects
        .iter()
        .filter(|o| o.key.ends_with(&format!(".{}", layout::SEGMENT_EXT)))
        .map(|o| o.key.as_str())
        .collect();
    for o in &objects {
        let key = o.key.as_str();
        if key == layout::ROOT_MARKER {
            continue;
        }
        let kind = layout::classify_key(key);
        match &kind {
            KeyKind::Manifest(topic) => {
                let data = src.get(key)?;
                manifest::parse_topic_manifest(&data, &describe(&src, key), topic)?;
                put_checked(dst.as_ref(), key, &data, &mut rep)?;
            }
            KeyKind::Segment { .. } => {
                let bytes = copy_segment(&src, &dst, key, &mut rep)?;
                progress(bytes);
            }
            KeyKind::Index(segment_key) => {
                if !segments.contains(segment_key.as_str()) {
                    rep.skipped.push(Skipped {
                        key: key.into(),
                        why: "an index without its segment (derived data; nothing to index)".into(),
                    });
                }
                // the destination gets the indexes its copied segments imply (copy_segment)
                continue;
            }
            KeyKind::OffsetsLog { .. } => copy_log(src.as_ref(), dst.as_ref(), key, &mut rep)?,
            KeyKind::Lock => continue,
            KeyKind::RestoreState => {
                rep.skipped.push(Skipped {
                    key: key.into(),
                    why: "restore progress of a restore into a cluster; a copy starts without \
                          it"
                    .into(),
                });
                continue;
            }
            KeyKind::Other => {
                rep.skipped.push(Skipped {
                    key: key.into(),
                    why: "not part of the backup format (docs/format.md)".into(),
                });
                continue;
            }
        }
        copied.insert(key.to_string());
        if let KeyKind::Segment { .. } = kind {
            let seg = PathBuf::from(key);
            for ix in [
                layout::offset_index_path(&seg),
                layout::time_index_path(&seg),
            ] {
                copied.insert(ix.to_string_lossy().into_owned());
            }
        }
    }
    let marker_key = layout::ROOT_MARKER;
    put_checked(dst.as_ref(), marker_key, &marker, &mut rep)?;
    rep.only_in_destination = dst
        .list(layout::TOPICS_DIR)?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| !copied.contains(k) && !k.ends_with(layout::WRITER_LOCK))
        .collect();
    Ok(rep)
}

fn describe(store: &Arc<dyn Store>, key: &str) -> PathBuf {
    PathBuf::from(store.describe(key))
}

/// Refuses a destination that holds something other than this backup.
fn check_destination(dst: &dyn Store, marker: &[u8]) -> Result<()> {
    match dst.get(layout::ROOT_MARKER) {
        Ok(existing) if existing == marker => return Ok(()),
        Ok(_) => {
            return Err(Error::Config(format!(
                "{} already holds another backup (its {} differs from the source's); copy into \
                 an empty directory or bucket prefix, or remove that backup first",
                dst.location(),
                layout::ROOT_MARKER
            )))
        }
        Err(Error::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    let foreign: Vec<String> = dst
        .list("")?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| !k.starts_with(&format!("{}/", layout::TOPICS_DIR)))
        .take(3)
        .collect();
    if !foreign.is_empty() {
        return Err(Error::Config(format!(
            "{} is not empty and is not a copy of this backup (it holds {}); copy into an \
             empty directory or bucket prefix",
            dst.location(),
            foreign.join(", ")
        )));
    }
    Ok(())
}

/// Writes a small object unless the destination holds exactly these bytes; reads it back.
fn put_checked(dst: &dyn Store, key: &str, data: &[u8], rep: &mut CopyReport) -> Result<()> {
    if matches!(dst.get(key), Ok(d) if d == data) {
        rep.unchanged += 1;
        return Ok(());
    }
    dst.put(key, data)?;
    let back = dst.get(key)?;
    if back != data {
        return Err(Error::corrupt(
            PathBuf::from(dst.describe(key)),
            0,
            format!(
                "read back {} bytes that differ from the {} written; the destination store \
                 does not keep what it is given, check it before trusting any copy there",
                back.len(),
                data.len()
            ),
        ));
    }
    rep.written += 1;
    Ok(())
}

/// Copies one group-offsets log: checked, cut at a torn last append.
fn copy_log(src: &dyn Store, dst: &dyn Store, key: &str, rep: &mut CopyReport) -> Result<()> {
    let data = src.get(key)?;
    let scan = offsets_log::scan(&data, &PathBuf::from(src.describe(key)))?;
    if scan.valid_len == 0 {
        rep.skipped.push(Skipped {
            key: key.into(),
            why: "a group-offsets log torn while being created (holds no entry)".into(),
        });
        return Ok(());
    }
    rep.note_torn(key, &scan.torn, scan.valid_len, scan.file_len);
    put_checked(dst, key, &data[..scan.valid_len as usize], rep)
}

/// Copies one segment: scanned at the source, streamed, scanned again at the destination;
/// then its index files. Answers the segment bytes copied.
fn copy_segment(
    src: &Arc<dyn Store>,
    dst: &Arc<dyn Store>,
    key: &str,
    rep: &mut CopyReport,
) -> Result<u64> {
    let Some(scan) = segment::scan_opened(SegmentFile::open_object(src.clone(), key)?)? else {
        rep.skipped.push(Skipped {
            key: key.into(),
            why: "a segment torn while being created (shorter than its header, no record)".into(),
        });
        return Ok(0);
    };
    rep.note_torn(key, &scan.torn, scan.valid_len, scan.file_len);
    let intact = match dst.head(key)? {
        Some(m) if m.size == scan.valid_len => matches!(read_back(dst, key, &scan), Ok(())),
        _ => false,
    };
    if intact {
        rep.unchanged += 1;
    } else {
        stream(src.as_ref(), dst.as_ref(), key, scan.valid_len)?;
        if let Err(e) = read_back(dst, key, &scan) {
            let _ = dst.delete(key);
            return Err(e);
        }
        rep.written += 1;
        rep.bytes += scan.valid_len;
    }
    let (offsets, times) = scan.index_files();
    let seg = PathBuf::from(key);
    for (path, data) in [
        (layout::offset_index_path(&seg), offsets),
        (layout::time_index_path(&seg), times),
    ] {
        put_checked(dst.as_ref(), &path.to_string_lossy(), &data, rep)?;
    }
    rep.segments += 1;
    rep.records += scan.records;
    Ok(scan.valid_len)
}

/// Streams bytes `0..len` of `key` from `src` to `dst` in parts; nothing is visible at the
/// destination until the whole object is complete.
fn stream(src: &dyn Store, dst: &dyn Store, key: &str, len: u64) -> Result<()> {
    let mut w = dst.writer(key)?;
    let mut pos = 0;
    while pos < len {
        let end = (pos + COPY_CHUNK).min(len);
        let chunk = src.get_range(key, pos..end)?;
        if chunk.len() as u64 != end - pos {
            let _ = w.abort();
            return Err(Error::corrupt(
                PathBuf::from(src.describe(key)),
                pos + chunk.len() as u64,
                format!(
                    "the segment ended at byte {} while being copied, though it was checked to \
                     {len} bytes; something else is changing the backup, stop it and copy again",
                    pos + chunk.len() as u64
                ),
            ));
        }
        if let Err(e) = w.write(&chunk) {
            let _ = w.abort();
            return Err(e);
        }
        pos = end;
    }
    w.complete()?;
    Ok(())
}

/// Scans the destination's copy and compares it with the source's scan.
fn read_back(dst: &Arc<dyn Store>, key: &str, want: &SegmentScan) -> Result<()> {
    let at = describe(dst, key);
    let got = segment::scan_opened(SegmentFile::open_object(dst.clone(), key)?)?;
    let same = got.as_ref().is_some_and(|g| {
        g.torn.is_none()
            && g.valid_len == want.valid_len
            && g.records == want.records
            && g.first_offset == want.first_offset
            && g.last_offset == want.last_offset
            && g.header == want.header
            && g.index_files() == want.index_files()
    });
    if same {
        return Ok(());
    }
    Err(Error::corrupt(
        at,
        0,
        format!(
            "the copy read back differs from the source: {} records to offset {:?} in {} bytes \
             were written, {} records to offset {:?} in {} of {} bytes were read back{}; the \
             copy was deleted; check the destination store and copy again",
            want.records,
            want.last_offset,
            want.valid_len,
            got.as_ref().map_or(0, |g| g.records),
            got.as_ref().and_then(|g| g.last_offset),
            got.as_ref().map_or(0, |g| g.valid_len),
            got.as_ref().map_or(0, |g| g.file_len),
            match got.as_ref().and_then(|g| g.torn.as_ref()) {
                Some((pos, why)) => format!(", ending in a torn write at byte {pos} ({why})"),
                None => String::new(),
            },
        ),
    ))
}
