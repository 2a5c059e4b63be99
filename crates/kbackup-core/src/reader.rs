//! Reading a backup: the restore path, `inspect` and `cat` (`verify` and `reindex` are in
//! [`crate::verify`]).
//!
//! Segments are read with positioned reads into a buffer ([`crate::segment::SegmentFile`]), never
//! memory-mapped, so a file truncated while it is read cannot crash the process (a Connect
//! worker above all). A reader never skips damage: corruption anywhere in a segment, its last
//! record included, is an error naming file and position. The only bytes it leaves out
//! silently are a torn tail at the very end of a partition's last segment (an interrupted write
//! the sink repairs when it next opens the partition); `verify` reports those as warnings.
//!
//! A backup in object storage ([`Backup::open_location`] with an `s3://`, `gs://` or `az://`
//! URL) is read with the same rules: it is listed once when opened, its segments are read with
//! ranged reads of up to 8 MiB ([`SegmentFile::open_object`]) and its indexes and logs whole.

use crate::error::{Error, Result};
use crate::format::{body as record_body, bytes::Cursor, SEGMENT_VERSION_BLOCKS};
use crate::index;
use crate::layout;
use crate::layout::KeyKind;
use crate::manifest::{self, RootMarker, TopicManifest};
use crate::offsets_log::{self, GroupOffsetEntry};
use crate::record::{Record, TopicPartition};
use crate::segment::{Block, BlockAt, Frame, SegmentFile, FRAME_PREFIX_LEN};
use crate::storage::{self, ObjectMeta, Store, StoreOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
// The verify types moved to `verify`; these keep the old `reader::` paths working.
use serde::Serialize;
use std::path::{Path, PathBuf};

/// An opened backup: a local directory, or a prefix of an object store.
#[derive(Debug, Clone)]
pub struct Backup {
    /// The directory, or the URL for a backup in object storage (for messages and reports).
    root: PathBuf,
    marker: RootMarker,
    /// Set for a backup in object storage.
    objects: Option<Objects>,
}

/// A backup in object storage: its store and what was under `topics/` when it was opened.
#[derive(Debug, Clone)]
struct Objects {
    store: Arc<dyn Store>,
    /// Every object under `topics/` with its kind, sorted by key.
    listing: Vec<(ObjectMeta, KeyKind)>,
}

impl Objects {
    fn has_topic(&self, topic: &str) -> bool {
        self.listing.iter().any(|(_, k)| match k {
            KeyKind::Manifest(t) => t == topic,
            KeyKind::Segment { topic: t, .. } | KeyKind::OffsetsLog { topic: t, .. } => t == topic,
            _ => false,
        })
    }

    /// The partitions of `topic` holding a segment or a group-offsets log.
    fn partitions(&self, topic: &str) -> Vec<i32> {
        let set: BTreeSet<i32> = self
            .listing
            .iter()
            .filter_map(|(_, k)| match k {
                KeyKind::Segment {
                    topic: t,
                    partition,
                    ..
                }
                | KeyKind::OffsetsLog {
                    topic: t,
                    partition,
                } if t == topic => Some(*partition),
                _ => None,
            })
            .collect();
        set.into_iter().collect()
    }

    /// A partition's segments as (base offset, key as a path), sorted by base offset.
    fn segments(&self, tp: &TopicPartition) -> Vec<(i64, PathBuf)> {
        let mut out: Vec<(i64, PathBuf)> = self
            .listing
            .iter()
            .filter_map(|(o, k)| match k {
                KeyKind::Segment {
                    topic,
                    partition,
                    base,
                } if *topic == tp.topic && *partition == tp.partition => {
                    Some((*base, PathBuf::from(&o.key)))
                }
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    /// The parts of a partition's group-offsets log, in log order.
    fn log_parts(&self, tp: &TopicPartition) -> Vec<(u64, String)> {
        offsets_log::store_parts(self.listing.iter().filter_map(|(o, k)| match k {
            KeyKind::OffsetsLog { topic, partition }
                if *topic == tp.topic && *partition == tp.partition =>
            {
                Some(o.key.as_str())
            }
            _ => None,
        }))
    }

    fn size(&self, key: &str) -> Option<u64> {
        self.listing
            .binary_search_by(|(o, _)| o.key.as_str().cmp(key))
            .ok()
            .map(|i| self.listing[i].0.size)
    }
}

/// Per-partition figures of [`BackupSummary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionSummary {
    /// Partition number.
    pub partition: i32,
    /// First backed-up offset (null when empty).
    pub first_offset: Option<i64>,
    /// Last backed-up offset (null when empty).
    pub last_offset: Option<i64>,
    /// Number of records.
    pub records: u64,
    /// Bytes of segment files (as stored: compressed blocks in format version 2).
    pub bytes: u64,
    /// Bytes of the records uncompressed (their version 1 record frames): `bytes / raw_bytes`
    /// is the compression ratio.
    pub raw_bytes: u64,
    /// Number of segment files.
    pub segments: usize,
    /// Smallest record timestamp (null when empty).
    pub min_timestamp: Option<i64>,
    /// Largest record timestamp (null when empty).
    pub max_timestamp: Option<i64>,
}

/// Per-topic figures of [`BackupSummary`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopicSummary {
    /// Topic name.
    pub topic: String,
    /// The topic manifest, when present.
    pub manifest: Option<TopicManifest>,
    /// Backed-up partitions.
    pub partitions: Vec<PartitionSummary>,
    /// Records over all partitions.
    pub records: u64,
    /// Segment bytes over all partitions.
    pub bytes: u64,
    /// Record bytes uncompressed over all partitions.
    pub raw_bytes: u64,
    /// `bytes / raw_bytes` (null when no record): 1.0 uncompressed, 0.25 for a backup a
    /// quarter of its records' size.
    pub ratio: Option<f64>,
}

/// The topics and partitions of a backup (`Native.listPartitions` returns it as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupListing {
    /// Topics in name order.
    pub topics: Vec<TopicListing>,
}

/// One topic of a [`BackupListing`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicListing {
    /// Topic name.
    pub topic: String,
    /// Partition numbers, ascending.
    pub partitions: Vec<i32>,
}

/// What `kbackup inspect` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupSummary {
    /// Backup root directory.
    pub root: PathBuf,
    /// Format version from the root marker.
    pub format_version: u16,
    /// Topics, sorted by name.
    pub topics: Vec<TopicSummary>,
    /// Records over all topics.
    pub records: u64,
    /// Segment bytes over all topics.
    pub bytes: u64,
    /// Record bytes uncompressed over all topics.
    pub raw_bytes: u64,
    /// `bytes / raw_bytes` (null when no record).
    pub ratio: Option<f64>,
}

/// Stored over raw bytes, rounded to 3 decimals; `None` without records.
fn ratio(stored: u64, raw: u64) -> Option<f64> {
    (raw > 0).then(|| (stored as f64 / raw as f64 * 1000.0).round() / 1000.0)
}

pub(crate) fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(e, "list directory", dir))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(e, "list directory", dir))?;
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        out.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
            is_dir,
        ));
    }
    out.sort();
    Ok(out)
}

impl Backup {
    /// Opens a backup; fails clearly when `root` is not a kbackup backup directory.
    pub fn open(root: impl AsRef<Path>) -> Result<Backup> {
        let root = root.as_ref().to_path_buf();
        let marker = manifest::read_root_marker(&root)?;
        Ok(Backup {
            root,
            marker,
            objects: None,
        })
    }

    /// Opens the backup at a location: a directory or `file://` URL as [`Backup::open`]; an
    /// object-store URL (`s3://bucket/prefix`, `gs://`, `az://`) through the store `options`
    /// and the environment configure. The store is listed once, here: objects written later
    /// are not seen by this `Backup`.
    pub fn open_location(location: &str, options: &StoreOptions) -> Result<Backup> {
        if let Ok(dir) = storage::local_dir(location) {
            return Backup::open(dir);
        }
        let store: Arc<dyn Store> = Arc::from(storage::open_store(location, options)?);
        let (marker, _) = manifest::read_store_marker(store.as_ref())?;
        let listing = store
            .list(&format!("{}/", layout::TOPICS_DIR))?
            .into_iter()
            .map(|o| {
                let kind = layout::classify_key(&o.key);
                (o, kind)
            })
            .collect();
        Ok(Backup {
            root: PathBuf::from(store.location()),
            marker,
            objects: Some(Objects { store, listing }),
        })
    }

    /// Whether the backup is in object storage (then only the reading verbs work on it).
    pub fn is_object_store(&self) -> bool {
        self.objects.is_some()
    }

    /// The restore states kept beside the backup (`restore-state/*`, the default place of a
    /// restore's progress), sorted, as directories or URLs.
    pub fn restore_states(&self) -> Result<Vec<PathBuf>> {
        let Some(objects) = &self.objects else {
            return layout::list_restore_states(&self.root);
        };
        let prefix = format!("{}/", layout::RESTORE_STATE_DIR);
        let names: BTreeSet<String> = objects
            .store
            .list(&prefix)?
            .into_iter()
            .filter_map(|o| o.key[prefix.len()..].split('/').next().map(String::from))
            .collect();
        let root = objects.store.location();
        Ok(names
            .into_iter()
            .map(|n| PathBuf::from(format!("{}/{prefix}{n}", root.trim_end_matches('/'))))
            .collect())
    }

    /// The backup root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The root marker.
    pub fn marker(&self) -> &RootMarker {
        &self.marker
    }

    /// Backed-up topics, sorted by name.
    pub fn topics(&self) -> Result<Vec<String>> {
        let Some(objects) = &self.objects else {
            return layout::list_topics(&self.root);
        };
        let set: BTreeSet<&str> = objects
            .listing
            .iter()
            .filter_map(|(_, k)| match k {
                KeyKind::Manifest(t)
                | KeyKind::Segment { topic: t, .. }
                | KeyKind::OffsetsLog { topic: t, .. } => Some(t.as_str()),
                _ => None,
            })
            .collect();
        Ok(set.into_iter().map(String::from).collect())
    }

    fn check_topic(&self, topic: &str) -> Result<()> {
        let found = match &self.objects {
            None => layout::topic_dir(&self.root, topic)?.is_dir(),
            Some(o) => {
                layout::validate_topic_name(topic)?;
                o.has_topic(topic)
            }
        };
        if !found {
            return Err(Error::NotFound(format!(
                "topic {topic} is not in the backup at {}; `kbackup inspect` lists the topics it holds",
                self.root.display()
            )));
        }
        Ok(())
    }

    /// The manifest of `topic` (`None` when the sink has not written one yet).
    pub fn manifest(&self, topic: &str) -> Result<Option<TopicManifest>> {
        self.check_topic(topic)?;
        let Some(o) = &self.objects else {
            return manifest::read_topic_manifest(&self.root, topic);
        };
        let key = layout::topic_manifest_key(topic);
        if o.size(&key).is_none() {
            return Ok(None);
        }
        let path = PathBuf::from(o.store.describe(&key));
        manifest::parse_topic_manifest(&o.store.get(&key)?, &path, topic).map(Some)
    }

    /// Backed-up partition numbers of `topic`, sorted.
    pub fn partitions(&self, topic: &str) -> Result<Vec<i32>> {
        self.check_topic(topic)?;
        match &self.objects {
            None => layout::list_partitions(&self.root, topic),
            Some(o) => Ok(o.partitions(topic)),
        }
    }

    /// Every captured consumer-group position of a partition, in append order (none when the
    /// partition has no group-offsets log). Damage is an [`Error::Corrupt`]; a torn last
    /// entry is left out (`verify` reports it).
    pub fn group_offsets(&self, tp: &TopicPartition) -> Result<Vec<GroupOffsetEntry>> {
        let Some(o) = &self.objects else {
            // group-offsets.log, then any chunks (a backup copied here from a bucket)
            let dir = layout::partition_dir(&self.root, tp)?;
            if !dir.is_dir() {
                return Ok(Vec::new());
            }
            let mut parts: Vec<(u64, PathBuf)> = list_dir(&dir)?
                .into_iter()
                .filter_map(|(name, path, _)| Some((layout::offsets_log_part(&name)?, path)))
                .collect();
            parts.sort();
            let mut out = Vec::new();
            for (_, path) in parts {
                out.extend(offsets_log::read_all(&path)?);
            }
            return Ok(out);
        };
        let parts = o.log_parts(tp);
        offsets_log::read_store_parts(o.store.as_ref(), &parts)
    }

    /// Each group's latest captured position on a partition ([`offsets_log::latest`]).
    pub fn latest_group_offsets(
        &self,
        tp: &TopicPartition,
    ) -> Result<BTreeMap<String, GroupOffsetEntry>> {
        Ok(offsets_log::latest(self.group_offsets(tp)?))
    }

    /// A reader over one partition, positioned at its first record.
    pub fn partition(&self, topic: &str, partition: i32) -> Result<PartitionReader> {
        self.check_topic(topic)?;
        let tp = TopicPartition::new(topic, partition);
        let not_found = || {
            Error::NotFound(format!(
                "partition {partition} of topic {topic} is not in the backup at {}",
                self.root.display()
            ))
        };
        let segments = match &self.objects {
            None => {
                let dir = layout::partition_dir(&self.root, &tp)?;
                if !dir.is_dir() {
                    return Err(not_found());
                }
                layout::list_segments(&dir)?
            }
            Some(o) => {
                layout::validate_partition(partition)?;
                let segments = o.segments(&tp);
                let has_log = || !o.log_parts(&tp).is_empty();
                if segments.is_empty() && !has_log() {
                    return Err(not_found());
                }
                segments
            }
        };
        Ok(PartitionReader::over(
            self.objects.as_ref().map(|o| o.store.clone()),
            tp,
            segments,
        ))
    }

    /// Topics and their partitions, from the directory names alone (no record is read), so it
    /// answers at once on a backup of any size: what the connector needs to validate a restore
    /// and to spread partitions over tasks.
    pub fn listing(&self) -> Result<BackupListing> {
        let mut topics = Vec::new();
        for topic in self.topics()? {
            let partitions = self.partitions(&topic)?;
            topics.push(TopicListing { topic, partitions });
        }
        Ok(BackupListing { topics })
    }

    /// Figures per topic and partition (reads every record once).
    pub fn summary(&self) -> Result<BackupSummary> {
        let mut topics = Vec::new();
        for topic in self.topics()? {
            let mut parts = Vec::new();
            for p in self.partitions(&topic)? {
                let mut r = self.partition(&topic, p)?;
                let bytes = r.segments.iter().map(|(_, path)| self.size_of(path)).sum();
                let mut s = PartitionSummary {
                    partition: p,
                    first_offset: None,
                    last_offset: None,
                    records: 0,
                    bytes,
                    raw_bytes: 0,
                    segments: r.segments.len(),
                    min_timestamp: None,
                    max_timestamp: None,
                };
                while let Some((offset, ts)) = r.next_position()? {
                    s.first_offset.get_or_insert(offset);
                    s.last_offset = Some(offset);
                    s.records += 1;
                    s.min_timestamp = Some(s.min_timestamp.map_or(ts, |m| m.min(ts)));
                    s.max_timestamp = Some(s.max_timestamp.map_or(ts, |m| m.max(ts)));
                }
                s.raw_bytes = r.raw_bytes;
                parts.push(s);
            }
            let (bytes, raw_bytes) = (
                parts.iter().map(|p| p.bytes).sum(),
                parts.iter().map(|p| p.raw_bytes).sum(),
            );
            topics.push(TopicSummary {
                manifest: self.manifest(&topic)?,
                records: parts.iter().map(|p| p.records).sum(),
                bytes,
                raw_bytes,
                ratio: ratio(bytes, raw_bytes),
                topic,
                partitions: parts,
            });
        }
        Ok(BackupSummary {
            root: self.root.clone(),
            format_version: self.marker.version,
            records: topics.iter().map(|t| t.records).sum(),
            bytes: topics.iter().map(|t| t.bytes).sum(),
            raw_bytes: topics.iter().map(|t| t.raw_bytes).sum(),
            ratio: ratio(
                topics.iter().map(|t| t.bytes).sum(),
                topics.iter().map(|t| t.raw_bytes).sum(),
            ),
            topics,
        })
    }

    /// Total size of every segment file of the backup: what [`Backup::verify`] reads.
    pub fn segment_bytes(&self) -> Result<u64> {
        let mut total = 0;
        for topic in self.topics()? {
            for p in self.partitions(&topic)? {
                for (_, path) in self.partition(&topic, p)?.segments() {
                    total += self.size_of(path);
                }
            }
        }
        Ok(total)
    }

    // Where verify walks: a place in the backup is a real path for a directory and a key (as
    // a path) for a bucket; these answer the same questions for both.

    /// The `topics/` directory, or the `topics` key prefix.
    pub(crate) fn topics_at(&self) -> PathBuf {
        match &self.objects {
            None => layout::topics_dir(&self.root),
            Some(_) => PathBuf::from(layout::TOPICS_DIR),
        }
    }

    /// Whether `at` is a directory (a bucket: whether any object lies under it).
    pub(crate) fn is_dir_at(&self, at: &Path) -> bool {
        match &self.objects {
            None => at.is_dir(),
            Some(o) => {
                let prefix = format!("{}/", at.to_string_lossy());
                o.listing.iter().any(|(m, _)| m.key.starts_with(&prefix))
            }
        }
    }

    /// The entries of the directory `at` as (name, place, is a directory), sorted by name; in
    /// a bucket the "directories" are the key prefixes one level below `at`.
    pub(crate) fn entries_at(&self, at: &Path) -> Result<Vec<(String, PathBuf, bool)>> {
        let Some(o) = &self.objects else {
            return list_dir(at);
        };
        let prefix = format!("{}/", at.to_string_lossy());
        let mut seen: BTreeMap<String, bool> = BTreeMap::new();
        for (m, _) in &o.listing {
            if let Some(rest) = m.key.strip_prefix(&prefix) {
                let (name, is_dir) = match rest.split_once('/') {
                    Some((dir, _)) => (dir, true),
                    None => (rest, false),
                };
                *seen.entry(name.to_string()).or_default() |= is_dir;
            }
        }
        Ok(seen
            .into_iter()
            .map(|(name, is_dir)| {
                let place = at.join(&name);
                (name, place, is_dir)
            })
            .collect())
    }

    /// The path or URL of a place, for reports.
    pub(crate) fn display_at(&self, at: &Path) -> PathBuf {
        match &self.objects {
            None => at.to_path_buf(),
            Some(o) => PathBuf::from(o.store.describe(&at.to_string_lossy())),
        }
    }

    /// The bytes of the file or object at `at`; `None` if there is none.
    pub(crate) fn read_at(&self, at: &Path, what: &'static str) -> Result<Option<Vec<u8>>> {
        match &self.objects {
            None => match std::fs::read(at) {
                Ok(d) => Ok(Some(d)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::io(e, what, at)),
            },
            Some(o) => {
                let key = at.to_string_lossy();
                if o.size(&key).is_none() {
                    return Ok(None);
                }
                match o.store.get(&key) {
                    Ok(d) => Ok(Some(d)),
                    Err(Error::NotFound(_)) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Opens the segment at `at` for reading.
    pub(crate) fn open_segment_at(&self, at: &Path) -> Result<SegmentFile> {
        match &self.objects {
            None => SegmentFile::open(at),
            Some(o) => SegmentFile::open_object(o.store.clone(), &at.to_string_lossy()),
        }
    }

    /// When the file or object at `at` was last written (ms since the epoch).
    pub(crate) fn modified_ms_at(&self, at: &Path) -> Result<i64> {
        let t = match &self.objects {
            None => std::fs::metadata(at)
                .and_then(|m| m.modified())
                .map_err(|e| Error::io(e, "read modification time of", at))?,
            Some(o) => {
                let key = at.to_string_lossy();
                let i = o
                    .listing
                    .binary_search_by(|(m, _)| m.key.as_str().cmp(&key))
                    .map_err(|_| Error::NotFound(format!("{} vanished", o.store.describe(&key))))?;
                o.listing[i].0.modified
            }
        };
        Ok(t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0))
    }

    /// Deletes the file or object at `at`; an absent one is no error.
    pub(crate) fn delete_at(&self, at: &Path) -> Result<()> {
        match &self.objects {
            None => match std::fs::remove_file(at) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io(e, "delete", at)),
            },
            Some(o) => o.store.delete(&at.to_string_lossy()),
        }
    }

    /// Replaces both index files (objects) of the segment at `at`.
    pub(crate) fn write_index_at(&self, at: &Path, files: &(Vec<u8>, Vec<u8>)) -> Result<()> {
        let Some(o) = &self.objects else {
            return index::write_files(at, files);
        };
        for (key, data) in [
            (layout::offset_index_path(at), &files.0),
            (layout::time_index_path(at), &files.1),
        ] {
            o.store.put(&key.to_string_lossy(), data)?;
        }
        Ok(())
    }

    /// Makes deletions in the partition directory of `tp` durable (a bucket's are at once).
    pub(crate) fn sync_partition(&self, tp: &TopicPartition) -> Result<()> {
        match &self.objects {
            None => layout::fsync_dir(&layout::partition_dir(&self.root, tp)?),
            Some(_) => Ok(()),
        }
    }

    /// Size of a segment as [`PartitionReader::segments`] names it (0 if it vanished).
    pub(crate) fn size_of(&self, path: &Path) -> u64 {
        match &self.objects {
            None => std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
            Some(o) => o.size(&path.to_string_lossy()).unwrap_or(0),
        }
    }
}

/// The currently open segment of a [`PartitionReader`].
struct OpenSegment {
    path: PathBuf,
    base: i64,
    /// The header's offset of the last record of the previous segment (-1: none).
    prev_last: i64,
    file: SegmentFile,
    header_len: usize,
    /// Position of the current frame: a record frame (version 1) or a block (version 2).
    pos: usize,
    is_last: bool,
    /// Version 2: records stored in compressed blocks.
    blocks: bool,
    /// Version 2: the block at `pos`, decompressed, and the index of the current record in it.
    block: Option<(Block, usize)>,
    /// Version 1: the record frame last answered by `peek` (its position, body, next frame),
    /// so consuming or decoding it does not check its CRC again.
    peeked: Option<(usize, std::ops::Range<usize>, usize)>,
    /// Version 2, counting only: `peek` answers a whole block from its header, without
    /// decompressing it, and this holds the position of the frame after it.
    headers_only: Option<Option<usize>>,
}

/// A record (or what stands instead) at an [`OpenSegment`]'s position.
enum At {
    Record {
        offset: i64,
        timestamp: i64,
        /// The first record of the segment.
        first: bool,
        /// Bytes of its record frame uncompressed.
        raw_len: usize,
        /// Records answered at once: 1, or a whole block's when counting from headers (then
        /// `offset` is its first record's, `last` its last record's and `timestamp` -1).
        records: u32,
        last: i64,
    },
    End,
    Torn(String),
    Corrupt(String),
}

impl OpenSegment {
    /// What is at the current position, without moving past it (version 2: decompresses the
    /// block holding it, once).
    fn peek(&mut self) -> Result<At> {
        if !self.blocks {
            return Ok(match self.file.read_frame(self.pos)? {
                Frame::Record {
                    offset,
                    timestamp,
                    body,
                    next,
                } => {
                    let raw_len = FRAME_PREFIX_LEN + body.len();
                    self.peeked = Some((self.pos, body, next));
                    At::Record {
                        offset,
                        timestamp,
                        first: self.pos == self.header_len,
                        raw_len,
                        records: 1,
                        last: offset,
                    }
                }
                Frame::End => At::End,
                Frame::Torn(why) => At::Torn(why),
                Frame::Corrupt(why) => At::Corrupt(why),
            });
        }
        if let Some(next) = self.headers_only.as_mut() {
            return Ok(match self.file.read_block_header(self.pos)? {
                Ok((h, after)) => {
                    *next = Some(after);
                    At::Record {
                        offset: h.first_offset,
                        timestamp: -1,
                        first: self.pos == self.header_len,
                        raw_len: h.raw_len as usize,
                        records: h.records,
                        last: h.last_offset,
                    }
                }
                Err(BlockAt::Torn(why)) => At::Torn(why),
                Err(BlockAt::Corrupt(why)) => At::Corrupt(why),
                Err(_) => At::End,
            });
        }
        loop {
            if let Some((b, i)) = &self.block {
                if let Some((offset, timestamp, body)) = b.records.get(*i) {
                    return Ok(At::Record {
                        offset: *offset,
                        timestamp: *timestamp,
                        first: self.pos == self.header_len && *i == 0,
                        raw_len: FRAME_PREFIX_LEN + body.len(),
                        records: 1,
                        last: *offset,
                    });
                }
                self.pos = b.next;
                self.block = None;
            }
            match self.file.read_block(self.pos)? {
                BlockAt::Block(b) => self.block = Some((b, 0)),
                BlockAt::End => return Ok(At::End),
                BlockAt::Torn(why) => return Ok(At::Torn(why)),
                BlockAt::Corrupt(why) => return Ok(At::Corrupt(why)),
            }
        }
    }

    /// Moves past the record [`OpenSegment::peek`] answered.
    fn consume(&mut self) -> Result<()> {
        if let Some(next) = self.headers_only.as_mut().and_then(Option::take) {
            self.pos = next;
            return Ok(());
        }
        match &mut self.block {
            Some((_, i)) => *i += 1,
            None => match self.peeked.take() {
                Some((pos, _, next)) if pos == self.pos => self.pos = next,
                _ => {
                    if let Frame::Record { next, .. } = self.file.read_frame(self.pos)? {
                        self.pos = next;
                    }
                }
            },
        }
        Ok(())
    }

    /// Decodes the record [`OpenSegment::peek`] answered.
    fn record(&mut self) -> Result<Record> {
        match &self.block {
            Some((b, i)) => {
                let body = b.records[*i].2.clone();
                record_body::decode(&mut Cursor::new(&b.raw[body]))
                    .map_err(|e| e.into_corrupt(&self.path, self.pos as u64))
            }
            None => match &self.peeked {
                Some((pos, body, _)) if *pos == self.pos => self.file.decode_body(body.clone()),
                _ => match self.file.read_frame(self.pos)? {
                    Frame::Record { body, .. } => self.file.decode_body(body),
                    _ => Err(Error::corrupt(
                        &self.path,
                        self.pos as u64,
                        "record vanished while being read",
                    )),
                },
            },
        }
    }

    /// Whether an offset index entry (offset, position) points at its record: a record frame
    /// with that offset (version 1) or a block whose first record has it (version 2).
    fn points_at(&mut self, position: usize, offset: i64) -> Result<bool> {
        if self.blocks {
            return Ok(match self.file.read_block(position)? {
                BlockAt::Block(b) if b.header.first_offset == offset => {
                    self.pos = position;
                    self.block = Some((b, 0));
                    true
                }
                _ => false,
            });
        }
        Ok(match self.file.read_frame(position)? {
            Frame::Record { offset: o, .. } if o == offset => {
                self.pos = position;
                true
            }
            _ => false,
        })
    }
}

/// Reads one partition's records in offset order across its segments.
pub struct PartitionReader {
    /// The store of a backup in object storage (`segments` then holds keys).
    store: Option<Arc<dyn Store>>,
    tp: TopicPartition,
    segments: Vec<(i64, PathBuf)>,
    cur: usize,
    seg: Option<OpenSegment>,
    last_returned: Option<i64>,
    /// Last offset of the previous segment when it was read to its end: the next segment's
    /// header must name it, or a segment is missing or was cut short.
    chain: Option<(i64, PathBuf)>,
    /// Uncompressed bytes (record frames) of the records returned so far.
    raw_bytes: u64,
    /// Counting only ([`PartitionReader::record_count`]): a version 2 block is answered whole
    /// from its header, not decompressed.
    headers_only: bool,
    /// Records the last advance moved over (more than 1 only with `headers_only`).
    last_records: u32,
}

impl PartitionReader {
    /// A reader over the segments of one partition in `store` (keys, by base offset), for a
    /// writer resuming from a bucket without listing the whole backup.
    pub(crate) fn in_store(
        store: Arc<dyn Store>,
        tp: TopicPartition,
        segments: Vec<(i64, PathBuf)>,
    ) -> PartitionReader {
        PartitionReader::over(Some(store), tp, segments)
    }

    /// A reader at the start of `segments` (paths, or keys in `store`).
    fn over(
        store: Option<Arc<dyn Store>>,
        tp: TopicPartition,
        segments: Vec<(i64, PathBuf)>,
    ) -> PartitionReader {
        PartitionReader {
            store,
            tp,
            segments,
            cur: 0,
            seg: None,
            last_returned: None,
            chain: None,
            raw_bytes: 0,
            headers_only: false,
            last_records: 0,
        }
    }

    /// The partition being read.
    pub fn topic_partition(&self) -> &TopicPartition {
        &self.tp
    }

    /// The partition's segments as (base offset, path), in order; for a backup in object
    /// storage the path is the object's key.
    pub fn segments(&self) -> &[(i64, PathBuf)] {
        &self.segments
    }

    fn load(&self, i: usize) -> Result<Option<OpenSegment>> {
        let (base, at) = &self.segments[i];
        let is_last = i + 1 == self.segments.len();
        let mut file = match &self.store {
            None => SegmentFile::open(at)?,
            Some(store) => SegmentFile::open_object(store.clone(), &at.to_string_lossy())?,
        };
        let path = &file.path().to_path_buf();
        let Some(h) = file.header()? else {
            if is_last {
                return Ok(None); // created but never written: nothing to read
            }
            return Err(Error::corrupt(
                path,
                file.len(),
                "segment shorter than its header",
            ));
        };
        if h.topic != self.tp.topic || h.partition != self.tp.partition || h.base_offset != *base {
            return Err(Error::corrupt(
                path,
                0,
                format!(
                    "header says {}-{} base offset {}, but the file is {} base offset {base}",
                    h.topic, h.partition, h.base_offset, self.tp
                ),
            ));
        }
        Ok(Some(OpenSegment {
            path: path.clone(),
            base: *base,
            prev_last: h.prev_last_offset,
            header_len: h.header_len as usize,
            pos: h.header_len as usize,
            file,
            is_last,
            blocks: h.version >= SEGMENT_VERSION_BLOCKS,
            block: None,
            peeked: None,
            headers_only: (self.headers_only && h.version >= SEGMENT_VERSION_BLOCKS)
                .then_some(None),
        }))
    }

    /// The record at the current position, moving across segments; `None` at the end.
    /// Answers (offset, timestamp) and leaves the segment AT the record (`OpenSegment::peek`):
    /// the caller decodes it, then moves past it with `OpenSegment::consume`.
    fn advance(&mut self) -> Result<Option<(i64, i64)>> {
        loop {
            if self.seg.is_none() {
                if self.cur >= self.segments.len() {
                    return Ok(None);
                }
                match self.load(self.cur)? {
                    Some(s) => {
                        if let Some((last, prev)) = self.chain.take() {
                            if s.prev_last != last {
                                return Err(Error::corrupt(
                                    &s.path,
                                    20,
                                    format!(
                                        "segment chain broken: this segment follows offset {} but \
                                         the previous segment {} ends at offset {last}; a segment \
                                         is missing or was cut short",
                                        s.prev_last,
                                        prev.display()
                                    ),
                                ));
                            }
                        }
                        self.seg = Some(s)
                    }
                    None => {
                        self.cur += 1;
                        continue;
                    }
                }
            }
            let s = self.seg.as_mut().expect("loaded");
            match s.peek()? {
                At::Record {
                    offset,
                    timestamp,
                    first,
                    raw_len,
                    records,
                    last,
                } => {
                    if first && offset != s.base {
                        return Err(Error::corrupt(
                            &s.path,
                            s.pos as u64,
                            format!(
                                "first record has offset {offset}, the segment's base offset is {}",
                                s.base
                            ),
                        ));
                    }
                    if self.last_returned.is_some_and(|l| offset <= l) {
                        return Err(Error::corrupt(
                            &s.path,
                            s.pos as u64,
                            format!(
                                "record offset {offset} does not increase (previous {})",
                                self.last_returned.unwrap_or_default()
                            ),
                        ));
                    }
                    self.last_returned = Some(last);
                    self.raw_bytes += raw_len as u64;
                    self.last_records = records;
                    return Ok(Some((offset, timestamp)));
                }
                At::End => {
                    self.chain = self.last_returned.map(|l| (l, s.path.clone()));
                }
                At::Torn(why) if s.is_last => {
                    log::debug!(
                        "{}: ignoring torn tail at byte {} ({why})",
                        s.path.display(),
                        s.pos
                    );
                    s.pos = s.file.len() as usize;
                    s.block = None;
                }
                At::Torn(why) | At::Corrupt(why) => {
                    return Err(Error::corrupt(&s.path, s.pos as u64, why));
                }
            }
            self.seg = None;
            self.cur += 1;
        }
    }

    fn next_position(&mut self) -> Result<Option<(i64, i64)>> {
        let Some(at) = self.advance()? else {
            return Ok(None);
        };
        self.seg
            .as_mut()
            .expect("advance leaves the segment loaded")
            .consume()?;
        Ok(Some(at))
    }

    /// The next record, or `None` at the end of the partition.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        if self.advance()?.is_none() {
            return Ok(None);
        }
        let s = self
            .seg
            .as_mut()
            .expect("advance leaves the segment loaded");
        let r = s.record()?;
        s.consume()?;
        Ok(Some(r))
    }

    /// Positions the reader at the first record with offset >= `offset`.
    pub fn seek(&mut self, offset: i64) -> Result<()> {
        let i = self
            .segments
            .iter()
            .rposition(|(b, _)| *b <= offset)
            .unwrap_or(0);
        self.seek_in(i, offset)
    }

    /// Positions the reader in segment `i` at its first record >= `offset` (or past its end).
    fn seek_in(&mut self, i: usize, offset: i64) -> Result<()> {
        self.last_returned = None;
        self.chain = None;
        self.seg = None;
        self.cur = i;
        if i >= self.segments.len() {
            return Ok(());
        }
        let Some(mut s) = self.load(i)? else {
            self.cur += 1;
            return Ok(());
        };
        // Jump with the sparse index; fall back to a scan from the start when it is unusable.
        let ipath = layout::offset_index_path(&self.segments[i].1);
        let entries = match &self.store {
            None => index::read_offset_index(&ipath, s.base, s.file.len()),
            Some(store) => {
                let key = ipath.to_string_lossy();
                let ipath = PathBuf::from(store.describe(&key));
                store
                    .get(&key)
                    .and_then(|data| index::parse_offset_index(&data, &ipath, s.base, s.file.len()))
            }
        };
        match entries {
            Ok(entries) => {
                let i = entries.partition_point(|e| e.offset <= offset);
                if i > 0 {
                    let e = entries[i - 1];
                    if !s.points_at(e.position as usize, e.offset)? {
                        log::warn!("{}: index entry for offset {} does not point at that record; scanning the segment instead (run `kbackup reindex`)", ipath.display(), e.offset);
                    }
                }
            }
            Err(e) => log::warn!("{e}; scanning the segment instead"),
        }
        self.seg = Some(s);
        // Skip records below the target; stop at the first one >= target without consuming it.
        loop {
            let Some(s) = self.seg.as_mut() else {
                return Ok(());
            };
            match s.peek()? {
                At::Record { offset: o, .. } if o < offset => {
                    s.consume()?;
                    self.last_returned = Some(o);
                }
                At::Record { .. } => return Ok(()),
                At::End => {
                    self.chain = self.last_returned.map(|l| (l, s.path.clone()));
                    self.seg = None;
                    self.cur += 1;
                    return Ok(());
                }
                // Let next_record report (or ignore) it with the right rules.
                At::Torn(_) | At::Corrupt(_) => return Ok(()),
            }
        }
    }

    /// The offset and timestamp of the next record without decoding it (`None` at the end).
    pub fn next_offset_timestamp(&mut self) -> Result<Option<(i64, i64)>> {
        self.next_position()
    }

    /// Positions the reader at the first record with offset >= `min_offset` whose OWN
    /// timestamp is >= `timestamp`, and answers its offset (`None`: there is none; the reader
    /// is then at the end). Each segment from `min_offset` on is entered through its time
    /// index ([`index::skip_before_time`]), so it reads at most about one index interval of
    /// records per segment, never the whole partition.
    pub fn seek_time(&mut self, timestamp: i64, min_offset: i64) -> Result<Option<i64>> {
        let first = self
            .segments
            .iter()
            .rposition(|(b, _)| *b <= min_offset)
            .unwrap_or(0);
        for i in first..self.segments.len() {
            let (base, path) = self.segments[i].clone();
            let end = self.segments.get(i + 1).map_or(i64::MAX, |s| s.0);
            let from = self
                .skip_before_time(&path, base, timestamp)
                .max(min_offset);
            if from >= end {
                continue;
            }
            self.seek_in(i, from)?;
            while let Some((o, ts)) = self.next_position()? {
                if o >= end {
                    break;
                }
                if ts >= timestamp {
                    self.seek(o)?;
                    return Ok(Some(o));
                }
            }
        }
        self.seek(i64::MAX)?;
        Ok(None)
    }

    /// Offset of the first record of the partition (`None` when empty). Does not move the
    /// reader.
    pub fn first_offset(&self) -> Result<Option<i64>> {
        self.fresh().next_position().map(|o| o.map(|(o, _)| o))
    }

    /// Offset of the last record of the partition (`None` when empty). Does not move the
    /// reader.
    pub fn last_offset(&self) -> Result<Option<i64>> {
        // Only the last non-empty segment matters; the index jumps close to its end.
        for i in (0..self.segments.len()).rev() {
            let mut r = self.fresh();
            r.seek_in(i, i64::MAX)?;
            let mut last = r.last_returned;
            while let Some((o, _)) = r.next_position()? {
                last = Some(o);
            }
            if last.is_some() {
                return Ok(last);
            }
        }
        Ok(None)
    }

    /// Number of records in the partition. Reads every frame and checks its CRC, but counts
    /// a version 2 block from its header without decompressing it: a restore's total of a
    /// large backup costs a read of the stored bytes, not a second restore's worth of CPU.
    pub fn record_count(&self) -> Result<u64> {
        let mut r = self.fresh();
        r.headers_only = true;
        let mut n = 0;
        while r.next_position()?.is_some() {
            n += u64::from(r.last_records);
        }
        Ok(n)
    }

    /// [`index::skip_before_time`] for the segment at `at` (a path, or a key in the store).
    fn skip_before_time(&self, at: &Path, base: i64, timestamp: i64) -> i64 {
        let Some(store) = &self.store else {
            return index::skip_before_time(at, base, timestamp);
        };
        let get = |p: PathBuf| {
            let key = p.to_string_lossy().into_owned();
            store
                .get(&key)
                .map(|d| (d, PathBuf::from(store.describe(&key))))
        };
        let times = get(layout::time_index_path(at))
            .and_then(|(data, path)| index::parse_time_index(&data, &path, base));
        let offsets = || {
            let len = store.head(&at.to_string_lossy()).ok()??.size;
            let (data, path) = get(layout::offset_index_path(at)).ok()?;
            index::parse_offset_index(&data, &path, base, len).ok()
        };
        index::skip_before_time_with(times, offsets, base, timestamp)
    }

    fn fresh(&self) -> PartitionReader {
        PartitionReader {
            store: self.store.clone(),
            tp: self.tp.clone(),
            segments: self.segments.clone(),
            cur: 0,
            seg: None,
            last_returned: None,
            chain: None,
            raw_bytes: 0,
            headers_only: false,
            last_records: 0,
        }
    }
}
