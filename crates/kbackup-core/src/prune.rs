//! Deleting old data from a backup by age (`kbackup prune`).
//!
//! A backup that runs for months grows without bound; users keep only a time window. Pruning
//! drops WHOLE segments (with their two index files) and nothing else, so what remains is still
//! a valid backup that `verify` accepts and a restore reads:
//!
//! * per partition, only a PREFIX of the segments goes: the oldest segments, up to (not
//!   including) the first one that still holds a record newer than the cutoff. A hole in the
//!   middle of a partition would look exactly like a lost segment, so none is ever made;
//! * the last segment of a partition is never dropped: the sink may be appending to it, and it
//!   tells the sink where to resume;
//! * a segment's age is the timestamp of its newest record; for records without a timestamp
//!   (-1) the file's modification time stands in, which is never older than its last record;
//! * the group-offsets log is kept as is: the translation rule ([`crate::translate`]) maps a
//!   group offset below the first remaining record to that first restored record, so a group
//!   that had not consumed the pruned records resumes at the oldest data that is left.
//!
//! Deletion order keeps a crash harmless: the index files go first (derived data, rebuilt by
//! `reindex` if a crash leaves the segment without them), then the segment, then the directory
//! is fsynced.

use crate::error::{Error, Result};
use crate::layout;
use crate::reader::Backup;
use crate::record::TopicPartition;
use crate::segment;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One segment that prune removed (or, in a dry run, would remove).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrunedSegment {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// The segment file (its URL in a bucket).
    pub path: PathBuf,
    /// Where the reader finds it: the path, or the key in a bucket.
    #[serde(skip)]
    place: PathBuf,
    /// Base offset (the first original offset in the segment).
    pub base_offset: i64,
    /// Last original offset in the segment (`None` for a segment without records).
    pub last_offset: Option<i64>,
    /// Number of records in the segment.
    pub records: u64,
    /// The time the age decision was based on (ms since the epoch).
    pub newest_ms: i64,
    /// Bytes freed: the segment plus its index files.
    pub bytes: u64,
}

/// What one prune run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Segments whose newest record is older than this (ms since the epoch) were removed.
    pub cutoff_ms: i64,
    /// True when nothing was deleted (the report says what would have been).
    pub dry_run: bool,
    /// The removed segments, by topic, partition and base offset.
    pub removed: Vec<PrunedSegment>,
    /// Segments that remain.
    pub kept_segments: u64,
    /// Partitions looked at.
    pub partitions: u64,
}

impl PruneReport {
    /// Total bytes freed (or that would be freed).
    pub fn bytes(&self) -> u64 {
        self.removed.iter().map(|s| s.bytes).sum()
    }

    /// Total records removed (or that would be removed).
    pub fn records(&self) -> u64 {
        self.removed.iter().map(|s| s.records).sum()
    }
}

/// Removes from the backup at `root` every segment that [the module rules](self) allow and
/// whose newest record is older than `cutoff_ms`; with `dry_run` only reports them.
///
/// Fails before deleting anything in a partition when one of its candidate segments is
/// damaged (the error names the file and position): prune never guesses an age.
pub fn prune(root: &Path, cutoff_ms: i64, dry_run: bool) -> Result<PruneReport> {
    prune_backup(&Backup::open(root)?, cutoff_ms, dry_run)
}

/// [`prune`] of an opened backup: a directory or a bucket (where objects are deleted, and a
/// segment without a record timestamp is aged by its object's last write).
pub fn prune_backup(backup: &Backup, cutoff_ms: i64, dry_run: bool) -> Result<PruneReport> {
    let mut report = PruneReport {
        cutoff_ms,
        dry_run,
        removed: Vec::new(),
        kept_segments: 0,
        partitions: 0,
    };
    let mut partitions = Vec::new();
    for topic in backup.topics()? {
        for p in backup.partitions(&topic)? {
            partitions.push(TopicPartition::new(topic.clone(), p));
        }
    }
    for tp in partitions {
        report.partitions += 1;
        let segments = backup
            .partition(&tp.topic, tp.partition)?
            .segments()
            .to_vec();
        let mut doomed = Vec::new();
        // The last segment is the active one: never a candidate.
        for (base, at) in segments.iter().take(segments.len().saturating_sub(1)) {
            let file = backup.open_segment_at(at)?;
            let path = file.path().to_path_buf();
            let len = file.len();
            let scan = segment::scan_opened(file)?.ok_or_else(|| {
                Error::corrupt(
                    &path,
                    len,
                    "segment is shorter than its header (torn while being created)",
                )
            })?;
            let newest_ms = match scan.max_timestamp {
                Some(ts) if ts >= 0 => ts,
                _ => backup.modified_ms_at(at)?,
            };
            if newest_ms >= cutoff_ms {
                break; // only a prefix goes: a hole would look like a lost segment
            }
            let bytes = backup.size_of(at)
                + backup.size_of(&layout::offset_index_path(at))
                + backup.size_of(&layout::time_index_path(at));
            doomed.push(PrunedSegment {
                topic: tp.topic.clone(),
                partition: tp.partition,
                place: at.clone(),
                path,
                base_offset: *base,
                last_offset: scan.last_offset,
                records: scan.records,
                newest_ms,
                bytes,
            });
        }
        report.kept_segments += (segments.len() - doomed.len()) as u64;
        if !dry_run && !doomed.is_empty() {
            for s in &doomed {
                remove_segment(backup, &s.place)?;
                log::info!(
                    "pruned {} ({} records, newest at {} ms)",
                    s.path.display(),
                    s.records,
                    s.newest_ms
                );
            }
            backup.sync_partition(&tp)?;
        }
        report.removed.extend(doomed);
    }
    Ok(report)
}

/// Index files first (derived data), then the segment itself.
fn remove_segment(backup: &Backup, at: &Path) -> Result<()> {
    for p in [
        layout::offset_index_path(at),
        layout::time_index_path(at),
        at.to_path_buf(),
    ] {
        backup.delete_at(&p)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Record, TimestampType, TopicPartition};
    use crate::segment::{SegmentHeader, SegmentWriter};

    /// Writes one segment per entry of `segments`: each a list of (offset, timestamp).
    fn write_partition(
        root: &Path,
        topic: &str,
        partition: i32,
        segments: &[&[(i64, i64)]],
    ) -> PathBuf {
        let dir = layout::partition_dir(root, &TopicPartition::new(topic, partition)).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        let mut prev = -1;
        for recs in segments {
            let mut w = SegmentWriter::create(
                &dir,
                SegmentHeader {
                    version: crate::format::SEGMENT_VERSION_RECORDS,
                    header_len: 0,
                    partition,
                    base_offset: recs[0].0,
                    prev_last_offset: prev,
                    index_interval_bytes: 64,
                    created_ms: 0,
                    topic: topic.into(),
                },
                crate::perms::OWNER_ONLY,
            )
            .unwrap();
            for &(offset, timestamp) in recs.iter() {
                let r = Record {
                    offset,
                    timestamp,
                    timestamp_type: TimestampType::CreateTime,
                    key: Some(b"k".to_vec()),
                    value: Some(vec![7; 100]),
                    headers: vec![],
                };
                let mut body = Vec::new();
                crate::format::body::encode(&mut body, &r);
                w.append(offset, timestamp, &body).unwrap();
            }
            prev = recs.last().unwrap().0;
            w.finish().unwrap();
        }
        dir
    }

    fn bases(dir: &Path) -> Vec<i64> {
        layout::list_segments(dir)
            .unwrap()
            .into_iter()
            .map(|(b, _)| b)
            .collect()
    }

    #[test]
    fn drops_only_an_old_prefix_and_never_the_last_segment() {
        let d = tempfile::tempdir().unwrap();
        crate::manifest::init_root(d.path(), crate::perms::OWNER_ONLY).unwrap();
        // Segment 2 is old again but follows a new one: it must stay (no holes).
        let dir = write_partition(
            d.path(),
            "t",
            0,
            &[
                &[(0, 100), (1, 200)],
                &[(2, 300)],
                &[(5, 900)],
                &[(6, 100)],
                &[(7, 100)],
            ],
        );
        let dry = prune(d.path(), 500, true).unwrap();
        assert_eq!(
            dry.removed
                .iter()
                .map(|s| s.base_offset)
                .collect::<Vec<_>>(),
            vec![0, 2]
        );
        assert_eq!(dry.records(), 3);
        assert_eq!(
            bases(&dir),
            vec![0, 2, 5, 6, 7],
            "dry run deleted something"
        );

        let r = prune(d.path(), 500, false).unwrap();
        assert_eq!(r.removed.len(), 2);
        assert_eq!(r.kept_segments, 3);
        assert_eq!(bases(&dir), vec![5, 6, 7]);
        // Index files went with their segments.
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n.starts_with("00000000000000000000")),
            "{names:?}"
        );
        assert!(
            !names.iter().any(|n| n.starts_with("00000000000000000002")),
            "{names:?}"
        );

        // Everything old: still the last segment stays.
        let r = prune(d.path(), i64::MAX, false).unwrap();
        assert_eq!(r.removed.len(), 2);
        assert_eq!(bases(&dir), vec![7]);
        // The remaining segment is intact.
        let scan = segment::scan_file(&layout::segment_path(&dir, 7)).unwrap();
        assert_eq!(scan.records, 1);
        assert!(scan.torn.is_none());
    }

    #[test]
    fn nothing_newer_than_the_cutoff_is_touched() {
        let d = tempfile::tempdir().unwrap();
        crate::manifest::init_root(d.path(), crate::perms::OWNER_ONLY).unwrap();
        let dir = write_partition(d.path(), "t", 3, &[&[(10, 1000)], &[(11, 1001)]]);
        let r = prune(d.path(), 1000, false).unwrap();
        assert!(r.removed.is_empty());
        assert_eq!(bases(&dir), vec![10, 11]);
        assert_eq!(r.partitions, 1);
    }

    #[test]
    fn a_damaged_candidate_stops_prune_with_file_and_position() {
        let d = tempfile::tempdir().unwrap();
        crate::manifest::init_root(d.path(), crate::perms::OWNER_ONLY).unwrap();
        let dir = write_partition(d.path(), "t", 0, &[&[(0, 1), (1, 2)], &[(2, 3)]]);
        let seg = layout::segment_path(&dir, 0);
        let mut bytes = std::fs::read(&seg).unwrap();
        let n = bytes.len();
        bytes[n - 150] ^= 0xff; // inside the first record, not the torn-tail case
        std::fs::write(&seg, &bytes).unwrap();
        let e = prune(d.path(), i64::MAX, false).unwrap_err().to_string();
        assert!(e.contains("00000000000000000000.segment"), "{e}");
        assert_eq!(bases(&dir), vec![0, 2]);
    }

    #[test]
    fn refuses_a_directory_that_is_not_a_backup() {
        let d = tempfile::tempdir().unwrap();
        let e = prune(&d.path().join("missing"), 0, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
    }
}
