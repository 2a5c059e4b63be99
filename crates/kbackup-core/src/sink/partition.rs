//! One partition's writer state: opening and resuming from the files, redelivery checks,
//! poisoning after an I/O error, and the writer lock.

use super::*;
use crate::error::{Error, Result};
use crate::layout;
use crate::perms::Perms;
use crate::reader::PartitionReader;
use crate::record::TopicPartition;
use crate::segment::{self, SegmentFile, SegmentWriter};
use crate::storage::Store;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Per-partition writer state.
pub(super) struct PartitionState {
    /// The partition's directory, or its key prefix in an object store.
    pub(super) dir: PathBuf,
    /// Holds the partition's exclusive writer lock until the state is dropped (a directory;
    /// in an object store the conditional completion of each segment fences other writers).
    pub(super) _lock: Option<std::fs::File>,
    /// The object store the partition is written to (`None`: a local directory).
    pub(super) store: Option<Arc<dyn Store>>,
    pub(super) seg: Option<SegmentWriter>,
    /// Last offset appended (maybe still buffered).
    pub(super) last_written: Option<i64>,
    /// Last offset known to be on stable storage.
    pub(super) last_durable: Option<i64>,
    /// Last offset of the last finished segment (goes into the next segment header).
    pub(super) prev_segment_last: Option<i64>,
    /// The segment and its length as of the last flush that succeeded: what may be reported.
    pub(super) checkpoint: Option<(PathBuf, u64)>,
    /// Segments created since that flush (their data or directory entry may not be durable).
    pub(super) unreported: Vec<PathBuf>,
    /// Set by an I/O error: nothing more is written or reported until the partition is
    /// reopened from its files, cut back to the checkpoint.
    pub(super) poisoned: Option<String>,
    /// First offset this sink appended to the partition.
    pub(super) first_appended: Option<i64>,
    /// After a reopen from a poisoned state: the next record delivered must be at or below
    /// this offset, or records would be missing (Connect rewinds to its last commit after a
    /// failed `preCommit`, but hands a failed `put`'s batch again as it was).
    pub(super) rewind_to: Option<i64>,
    /// The last record handed was a re-delivery (skipped).
    pub(super) skipping: bool,
    /// Monitoring counters; carried over when the partition is reopened after an error.
    pub(super) counters: PartitionCounters,
}

/// Per-partition monitoring counters (see [`crate::metrics`]).
#[derive(Debug, Clone)]
pub(super) struct PartitionCounters {
    pub(super) records: u64,
    pub(super) bytes: u64,
    pub(super) rolled: u64,
    pub(super) errors: u64,
    /// Highest timestamp appended, and the same as of the last successful flush (-1: none).
    pub(super) max_ts_written: i64,
    pub(super) max_ts_durable: i64,
}

impl Default for PartitionCounters {
    fn default() -> PartitionCounters {
        PartitionCounters {
            records: 0,
            bytes: 0,
            rolled: 0,
            errors: 0,
            max_ts_written: -1,
            max_ts_durable: -1,
        }
    }
}

/// Task-wide monitoring counters (records and bytes are also per partition).
#[derive(Debug, Default)]
pub(super) struct SinkTotals {
    pub(super) records: u64,
    pub(super) bytes: u64,
    pub(super) rolled: u64,
    pub(super) errors: u64,
    pub(super) flushes: u64,
    pub(super) flush_last_ms: f64,
    pub(super) flush_total_ms: f64,
}

/// A partition's log start and end offsets on the cluster and when they were read (ms).
#[derive(Debug, Clone, Copy)]
pub(super) struct EndOffset {
    pub(super) start: i64,
    pub(super) end: i64,
    pub(super) read_ms: i64,
}

impl PartitionState {
    /// The state of a partition opened to write after `last` (the last offset it holds), with
    /// no open segment yet.
    fn resumed(
        dir: PathBuf,
        lock: Option<std::fs::File>,
        store: Option<Arc<dyn Store>>,
        last: Option<i64>,
    ) -> PartitionState {
        PartitionState {
            dir,
            _lock: lock,
            store,
            seg: None,
            last_written: last,
            last_durable: last,
            prev_segment_last: last,
            checkpoint: None,
            unreported: Vec::new(),
            poisoned: None,
            first_appended: None,
            rewind_to: None,
            skipping: false,
            counters: PartitionCounters::default(),
        }
    }

    /// Poisons the partition after `err`: drops the writer without writing its buffers and
    /// cuts the files back to the last successful flush, so pages a failed fsync dropped can
    /// never be read back as data and reported durable later.
    pub(super) fn poison(&mut self, tp: &str, err: &Error) {
        if self.store.is_some() {
            // Nothing of an unfinished segment is visible: aborting its upload is the cut.
            log::error!(
                "{tp}: error writing to the object store, the partition stops writing until it \
                 is reopened from what the store lists (what was not durable is fetched again \
                 from Kafka): {err}"
            );
            if let Some(seg) = self.seg.take() {
                seg.abandon();
            }
            self.counters.errors += 1;
            self.poisoned = Some(err.to_string());
            return;
        }
        log::error!(
            "{tp}: I/O error, the partition stops writing until it is reopened from its files \
             (what was not durable is fetched again from Kafka): {err}"
        );
        if let Some(seg) = self.seg.take() {
            seg.abandon();
        }
        self.counters.errors += 1;
        let mut cut = Ok(());
        for p in self.unreported.drain(..) {
            cut = cut.and(segment::remove_segment_files(&p));
        }
        if let Some((p, len)) = &self.checkpoint {
            cut = cut.and(segment::truncate_segment(p, *len));
        }
        cut = cut.and(sync_dir(&self.dir));
        if let Err(e) = cut {
            log::error!("{tp}: could not cut the files back to the last flush: {e}");
        }
        self.poisoned = Some(err.to_string());
    }
}

impl BackupSink {
    /// Log start and end offsets of `tps` on the cluster; `None` without a configured cluster,
    /// an empty map (with a warning) when it cannot be reached.
    pub(super) fn watermarks(
        &self,
        tps: &[TopicPartition],
    ) -> Option<BTreeMap<TopicPartition, (i64, i64)>> {
        if !self.config.cluster.contains_key("bootstrap.servers") || tps.is_empty() {
            return None;
        }
        match self.cluster.watermarks(tps, WATERMARK_TIMEOUT) {
            Ok(m) => Some(m),
            Err(e) => {
                log::warn!(
                    "could not read log start and end offsets ({e}); a re-created topic cannot \
                     be detected at this open"
                );
                Some(BTreeMap::new())
            }
        }
    }

    pub(super) fn recreated_error(&self, tp: &TopicPartition, last: i64, end: i64) -> Error {
        Error::State(format!(
            "{tp}: the backup in {} holds records up to offset {last}, but the partition on \
             the cluster at {} now ends at offset {end}: the topic was deleted and re-created, \
             or another cluster answers at that address. Writing on would skip every record up \
             to offset {last} as already backed up. Back the new topic up into a new target \
             directory (or move the old backup away) and start again",
            self.config.target_dir.display(),
            self.config
                .cluster
                .get("bootstrap.servers")
                .map_or("?", String::as_str),
        ))
    }

    /// At the start of a run of re-delivered records: fails when the cluster's log for the
    /// partition ends at or below the files' last offset (the records are not the backed-up
    /// ones). Rewinds are rare, so this costs one request per rewind.
    pub(super) fn check_redelivery(&self, tp: &TopicPartition, last: i64) -> Result<()> {
        if !self.config.cluster.contains_key("bootstrap.servers") {
            return Ok(());
        }
        match self
            .cluster
            .watermarks(std::slice::from_ref(tp), WATERMARK_TIMEOUT)
        {
            Ok(m) => match m.get(tp) {
                Some(&(_, end)) if end <= last => Err(self.recreated_error(tp, last, end)),
                _ => Ok(()),
            },
            Err(e) => {
                log::warn!("{tp}: could not check the log end offset for a re-delivery ({e})");
                Ok(())
            }
        }
    }

    /// Drops a partition's state (and its writer lock) without writing anything.
    pub(super) fn forget(&mut self, tp: &TopicPartition) {
        if let Some(m) = self.parts.get_mut(&tp.topic) {
            m.remove(&tp.partition);
            if m.is_empty() {
                self.parts.remove(&tp.topic);
            }
        }
        self.update_capture_partitions();
    }

    /// Reopens a poisoned partition from its files (cut back to the last flush at poisoning).
    pub(super) fn reopen_if_poisoned(&mut self, topic: &str, partition: i32) -> Result<()> {
        // Runs for every record: look, and take the state out only when it is poisoned (a
        // remove and re-insert each time cost a String and two moves of the state per record).
        let poisoned = self
            .parts
            .get(topic)
            .and_then(|m| m.get(&partition))
            .is_some_and(|st| st.poisoned.is_some());
        if !poisoned {
            return Ok(());
        }
        let Some(old) = self.parts.get_mut(topic).and_then(|m| m.remove(&partition)) else {
            return Ok(());
        };
        let why = old.poisoned.clone().unwrap_or_default();
        let first_appended = old.first_appended;
        let counters = old.counters.clone();
        drop(old); // releases the writer lock
        let tp = TopicPartition::new(topic, partition);
        match self.open_partition(&tp) {
            Ok(mut st) => {
                log::warn!(
                    "{tp}: reopened from its files after an I/O error ({why}); resuming after \
                     offset {:?}",
                    st.last_written
                );
                st.rewind_to = st.last_written.map(|l| l + 1).or(first_appended);
                st.first_appended = first_appended;
                st.counters = counters;
                self.parts
                    .entry(topic.to_string())
                    .or_default()
                    .insert(partition, st);
                Ok(())
            }
            Err(e) => Err(Error::State(format!(
                "{tp} stopped writing after an I/O error ({why}) and cannot be reopened from its \
                 files: {e}; fix the storage, then restart the task"
            ))),
        }
    }

    /// The state of a partition, opening it (and noting its topic) on first use.
    pub(super) fn partition(&mut self, topic: &str, partition: i32) -> Result<&mut PartitionState> {
        let known = self
            .parts
            .get(topic)
            .is_some_and(|m| m.contains_key(&partition));
        if !known {
            let tp = TopicPartition::new(topic, partition);
            let st = self.open_partition(&tp)?;
            self.parts
                .entry(topic.to_string())
                .or_default()
                .insert(partition, st);
            self.note_topic(topic, partition);
            self.update_capture_partitions();
        }
        Ok(self
            .parts
            .get_mut(topic)
            .and_then(|m| m.get_mut(&partition))
            .expect("inserted above"))
    }

    pub(super) fn open_partition(&mut self, tp: &TopicPartition) -> Result<PartitionState> {
        if let Some(store) = self.store.clone() {
            return open_in_store(store, tp);
        }
        let root = self.config.target_dir.clone();
        let dir = layout::partition_dir(&root, tp)?;
        if !dir.is_dir() {
            self.perms
                .create_dir_all(&dir)
                .map_err(|e| Error::io(e, "create partition directory", &dir))?;
            self.dirs_to_sync.insert(layout::topics_dir(&root));
            self.dirs_to_sync
                .insert(layout::topic_dir(&root, &tp.topic)?);
            self.dirs_to_sync.insert(dir.clone());
        }
        let lock = lock_partition(&dir, tp, self.perms)?;
        let mut segments = layout::list_segments(&dir)?;
        let mut seg = None;
        let mut prev_segment_last = None;
        while let Some((base, path)) = segments.pop() {
            let scan = match segment::scan(&path)? {
                Some(s) if s.records > 0 => s,
                _ => {
                    // Created but no complete record: the name may not match what comes next.
                    log::warn!(
                        "{}: segment holds no complete record (interrupted while being created); removing it",
                        path.display()
                    );
                    remove_segment(&path)?;
                    self.dirs_to_sync.insert(dir.clone());
                    continue;
                }
            };
            if scan.header.topic != tp.topic
                || scan.header.partition != tp.partition
                || scan.header.base_offset != base
            {
                return Err(Error::corrupt(
                    &path,
                    0,
                    format!(
                        "segment header says {}-{} base offset {}, but the file belongs to {tp} base offset {base}",
                        scan.header.topic, scan.header.partition, scan.header.base_offset
                    ),
                ));
            }
            let mut w = SegmentWriter::reopen(&path, scan)?;
            // A version 1 segment goes on with record frames; the next segment is written
            // with the configured compression (an upgrade mid-backup mixes versions).
            w.set_compression(self.compression);
            prev_segment_last = w.last_offset();
            seg = Some(w);
            break;
        }
        let last = seg.as_ref().and_then(SegmentWriter::last_offset);
        if let Some(l) = last {
            log::info!("{tp}: resuming after offset {l}");
        }
        let mut st = PartitionState::resumed(dir, Some(lock), None, last);
        st.checkpoint = seg.as_ref().map(|s| (s.path().to_path_buf(), s.len()));
        st.prev_segment_last = prev_segment_last;
        st.seg = seg;
        Ok(st)
    }
}

/// Opens a partition written to an object store from what the store lists: aborts the uploads
/// a crashed or stale writer left, rebuilds the index objects of the last segment if its
/// writer died between completing it and putting them, and resumes after its last record.
/// Segments are never appended to: the next record starts a new segment.
fn open_in_store(store: Arc<dyn Store>, tp: &TopicPartition) -> Result<PartitionState> {
    layout::validate_topic_name(&tp.topic)?;
    layout::validate_partition(tp.partition)?;
    let prefix = layout::partition_key(tp, "");
    let aborted = store.abort_orphans(&prefix)?;
    if aborted > 0 {
        log::warn!("{tp}: aborted {aborted} upload(s) left by an earlier writer");
    }
    let listed = store.list(&prefix)?;
    let keys: BTreeSet<&str> = listed.iter().map(|m| m.key.as_str()).collect();
    let segments: Vec<(i64, PathBuf)> = listed
        .iter()
        .filter_map(|m| match layout::classify_key(&m.key) {
            layout::KeyKind::Segment { base, .. } => Some((base, PathBuf::from(&m.key))),
            _ => None,
        })
        .collect();
    if let Some((_, seg)) = segments.last() {
        let indexes = [layout::offset_index_path(seg), layout::time_index_path(seg)];
        if indexes
            .iter()
            .any(|i| !keys.contains(&*i.to_string_lossy()))
        {
            let key = seg.to_string_lossy().into_owned();
            let scan = segment::scan_opened(SegmentFile::open_object(store.clone(), &key)?)?
                .ok_or_else(|| {
                    Error::corrupt(
                        Path::new(&store.describe(&key)),
                        0,
                        "a complete segment object shorter than its header",
                    )
                })?;
            let (o, t) = scan.index_files();
            store.put(&indexes[0].to_string_lossy(), &o)?;
            store.put(&indexes[1].to_string_lossy(), &t)?;
            log::warn!(
                "{}: rebuilt its index objects (its writer stopped before storing them)",
                store.describe(&key)
            );
        }
    }
    let reader = PartitionReader::in_store(store.clone(), tp.clone(), segments);
    let last = reader.last_offset()?;
    if let Some(l) = last {
        log::info!(
            "{tp}: resuming after offset {l} (from {})",
            store.location()
        );
    }
    let dir = PathBuf::from(prefix.trim_end_matches('/'));
    Ok(PartitionState::resumed(dir, None, Some(store), last))
}

/// The error of a writer that lost the race for a segment key: another writer (the new owner
/// after a rebalance, or a second backup of the same location) completed it first.
pub(super) fn lost_race(tp: &TopicPartition, location: &str, e: &Error) -> Error {
    Error::State(format!(
        "{tp}: another writer stored a segment this writer was completing in {location} ({e}). \
         This task no longer owns the partition (a rebalance gave it to another task) or a \
         second backup writes to the same location; it stops writing the partition so it can \
         never overwrite the other writer's data. Run one backup per location; a restarted task \
         resumes from what the store holds"
    ))
}

/// How long a new writer waits for the previous one to release a partition: after a Connect
/// rebalance the old task closes its partitions within moments.
pub(super) const LOCK_WAIT: Duration = Duration::from_secs(30);

/// Takes the exclusive writer lock of a partition directory, waiting up to [`LOCK_WAIT`].
/// The kernel drops the lock when its holder exits, so a crash never leaves it stale.
pub(super) fn lock_partition(
    dir: &Path,
    tp: &TopicPartition,
    perms: Perms,
) -> Result<std::fs::File> {
    let path = dir.join(layout::WRITER_LOCK);
    let file = perms
        .open_write(&path)
        .map_err(|e| Error::io(e, "open the partition lock file", &path))?;
    let started = std::time::Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Io {
                    path,
                    op: "lock partition for writing",
                    source: std::io::Error::new(
                        std::io::ErrorKind::WouldBlock,
                        format!(
                            "{tp} is being written by another kbackup writer (another task, \
                             connector or `kbackup backup` on the same target directory) for \
                             more than {}s; run one writer per backup directory",
                            LOCK_WAIT.as_secs()
                        ),
                    ),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io(e, "lock partition for writing", &path))
            }
        }
    }
}

pub(super) fn remove_segment(path: &Path) -> Result<()> {
    segment::remove_segment_files(path)
}

/// Fsyncs a directory through the fault-injection hook.
pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    let f = std::fs::File::open(dir).map_err(|e| Error::io(e, "open directory for fsync", dir))?;
    crate::faults::dir_fsync(dir, || f.sync_all()).map_err(|e| Error::io(e, "fsync directory", dir))
}
