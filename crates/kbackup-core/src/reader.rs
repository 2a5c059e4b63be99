//! Reading a backup: the restore path, `inspect`, `cat`, `verify` and `reindex`.
//!
//! Segments are read with positioned reads into a buffer ([`segment::SegmentFile`]), never
//! memory-mapped, so a file truncated while it is read cannot crash the process (a Connect
//! worker above all). A reader never skips damage: corruption anywhere in a segment, its last
//! record included, is an error naming file and position. The only bytes it leaves out
//! silently are a torn tail at the very end of a partition's last segment (an interrupted write
//! the sink repairs when it next opens the partition); `verify` reports those as warnings.

use crate::error::{Error, Result};
use crate::index::{self, IndexState};
use crate::layout;
use crate::manifest::{self, RootMarker, TopicManifest};
use crate::offsets_log;
use crate::record::{Record, TopicPartition};
use crate::segment::{self, Frame, SegmentFile};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// An opened backup directory.
#[derive(Debug, Clone)]
pub struct Backup {
    root: PathBuf,
    marker: RootMarker,
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
    /// Bytes of segment files.
    pub bytes: u64,
    /// Number of segment files.
    pub segments: usize,
    /// Smallest record timestamp (null when empty).
    pub min_timestamp: Option<i64>,
    /// Largest record timestamp (null when empty).
    pub max_timestamp: Option<i64>,
}

/// Per-topic figures of [`BackupSummary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
}

/// How bad a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Data is damaged or missing; a restore would be wrong.
    Error,
    /// Worth knowing, no data lost (a torn tail the sink will repair, a stray file).
    Warning,
}

/// One finding of [`Backup::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// The file concerned.
    pub file: PathBuf,
    /// Byte position in the file, when it applies.
    pub position: Option<u64>,
    /// What is wrong and what to do.
    pub message: String,
}

/// Result of [`Backup::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// True when no problem of severity error was found.
    pub ok: bool,
    /// Segments checked.
    pub segments: u64,
    /// Records checked (every CRC).
    pub records: u64,
    /// Segment bytes checked.
    pub bytes: u64,
    /// Every finding, in directory order.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Number of problems of severity error.
    pub fn errors(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .count()
    }
    /// Number of problems of severity warning.
    pub fn warnings(&self) -> usize {
        self.problems.len() - self.errors()
    }
}

/// Result of [`Backup::reindex`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReindexReport {
    /// Segments looked at.
    pub segments: u64,
    /// Segments whose index files were rewritten.
    pub rebuilt: u64,
    /// Segments that could not be indexed (damaged), with the reason.
    pub failed: Vec<(PathBuf, String)>,
}

fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>> {
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
        Ok(Backup { root, marker })
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
        layout::list_topics(&self.root)
    }

    fn topic_dir(&self, topic: &str) -> Result<PathBuf> {
        let dir = layout::topic_dir(&self.root, topic)?;
        if !dir.is_dir() {
            return Err(Error::NotFound(format!(
                "topic {topic} is not in the backup at {}; `kbackup inspect` lists the topics it holds",
                self.root.display()
            )));
        }
        Ok(dir)
    }

    /// The manifest of `topic` (`None` when the sink has not written one yet).
    pub fn manifest(&self, topic: &str) -> Result<Option<TopicManifest>> {
        self.topic_dir(topic)?;
        manifest::read_topic_manifest(&self.root, topic)
    }

    /// Backed-up partition numbers of `topic`, sorted.
    pub fn partitions(&self, topic: &str) -> Result<Vec<i32>> {
        self.topic_dir(topic)?;
        layout::list_partitions(&self.root, topic)
    }

    /// A reader over one partition, positioned at its first record.
    pub fn partition(&self, topic: &str, partition: i32) -> Result<PartitionReader> {
        self.topic_dir(topic)?;
        let tp = TopicPartition::new(topic, partition);
        let dir = layout::partition_dir(&self.root, &tp)?;
        if !dir.is_dir() {
            return Err(Error::NotFound(format!(
                "partition {partition} of topic {topic} is not in the backup at {}",
                self.root.display()
            )));
        }
        let segments = layout::list_segments(&dir)?;
        Ok(PartitionReader {
            tp,
            segments,
            cur: 0,
            seg: None,
            last_returned: None,
            chain: None,
        })
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
                let bytes = r
                    .segments
                    .iter()
                    .map(|(_, path)| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0))
                    .sum();
                let mut s = PartitionSummary {
                    partition: p,
                    first_offset: None,
                    last_offset: None,
                    records: 0,
                    bytes,
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
                parts.push(s);
            }
            topics.push(TopicSummary {
                manifest: manifest::read_topic_manifest(&self.root, &topic)?,
                records: parts.iter().map(|p| p.records).sum(),
                bytes: parts.iter().map(|p| p.bytes).sum(),
                topic,
                partitions: parts,
            });
        }
        Ok(BackupSummary {
            root: self.root.clone(),
            format_version: self.marker.version,
            records: topics.iter().map(|t| t.records).sum(),
            bytes: topics.iter().map(|t| t.bytes).sum(),
            topics,
        })
    }

    /// Checks every file: CRCs, headers, names, index agreement, the segment chain.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.verify_with_progress(&mut |_| {})
    }

    /// [`Backup::verify`], calling `progress` with the size of each segment file once it is
    /// checked (for progress bars; [`Backup::segment_bytes`] gives the total).
    pub fn verify_with_progress(&self, progress: &mut dyn FnMut(u64)) -> Result<VerifyReport> {
        let mut rep = VerifyReport {
            ok: true,
            segments: 0,
            records: 0,
            bytes: 0,
            problems: Vec::new(),
        };
        let topics_dir = layout::topics_dir(&self.root);
        if !topics_dir.is_dir() {
            problem(
                &mut rep,
                Severity::Warning,
                &topics_dir,
                None,
                "no topics directory: the backup holds no data yet".into(),
            );
        } else {
            for (name, path, is_dir) in list_dir(&topics_dir)? {
                if !is_dir || layout::validate_topic_name(&name).is_err() {
                    problem(&mut rep, Severity::Warning, &path, None, "unexpected entry in topics/ (not a topic directory); remove it if it is not yours".into());
                    continue;
                }
                self.verify_topic(&name, &path, &mut rep, progress)?;
            }
        }
        rep.ok = rep.errors() == 0;
        Ok(rep)
    }

    /// Total size of every segment file of the backup: what [`Backup::verify`] reads.
    pub fn segment_bytes(&self) -> Result<u64> {
        let mut total = 0;
        for topic in self.topics()? {
            for p in self.partitions(&topic)? {
                let dir =
                    layout::partition_dir(&self.root, &TopicPartition::new(topic.clone(), p))?;
                for (_, path) in layout::list_segments(&dir)? {
                    total += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                }
            }
        }
        Ok(total)
    }

    fn verify_topic(
        &self,
        topic: &str,
        dir: &Path,
        rep: &mut VerifyReport,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        match manifest::read_topic_manifest(&self.root, topic) {
            Ok(Some(_)) => {}
            Ok(None) => problem(rep, Severity::Warning, &dir.join(layout::TOPIC_MANIFEST), None,
                "topic manifest missing: a restore cannot re-create the topic with its partition count and configs; create the topic by hand or let the sink rewrite it".into()),
            Err(e) => problem(rep, Severity::Error, &dir.join(layout::TOPIC_MANIFEST), None, e.to_string()),
        }
        for (name, path, is_dir) in list_dir(dir)? {
            if name == layout::TOPIC_MANIFEST {
                continue;
            }
            match layout::parse_partition_dir_name(&name) {
                Some(p) if is_dir => self.verify_partition(topic, p, &path, rep, progress)?,
                _ => problem(
                    rep,
                    Severity::Warning,
                    &path,
                    None,
                    "unexpected entry in a topic directory; remove it if it is not yours".into(),
                ),
            }
        }
        Ok(())
    }

    fn verify_partition(
        &self,
        topic: &str,
        partition: i32,
        dir: &Path,
        rep: &mut VerifyReport,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let segments = layout::list_segments(dir)?;
        for (name, path, _) in list_dir(dir)? {
            let known = layout::parse_segment_file_name(&name).is_some()
                || name == layout::GROUP_OFFSETS_LOG
                || name == layout::WRITER_LOCK
                || name == offsets_log::LOCK_FILE
                || [layout::OFFSET_INDEX_EXT, layout::TIME_INDEX_EXT]
                    .iter()
                    .any(|ext| {
                        name.strip_suffix(ext)
                            .and_then(|s| s.strip_suffix('.'))
                            .and_then(|base| {
                                layout::parse_segment_file_name(&format!("{base}.segment"))
                            })
                            .is_some_and(|b| segments.iter().any(|(s, _)| *s == b))
                    });
            if !known {
                problem(rep, Severity::Warning, &path, None, "unexpected file in a partition directory (not a segment, index or group-offsets log, or an index without its segment)".into());
            }
        }
        self.verify_offsets_log(&dir.join(layout::GROUP_OFFSETS_LOG), rep);
        let mut prev_last: Option<(i64, PathBuf)> = None;
        for (i, (base, path)) in segments.iter().enumerate() {
            let is_last = i + 1 == segments.len();
            rep.segments += 1;
            let len = std::fs::metadata(path)
                .map_err(|e| Error::io(e, "stat segment", path))?
                .len();
            rep.bytes += len;
            progress(len);
            let scan = match segment::scan(path) {
                Ok(Some(s)) => s,
                Ok(None) => {
                    let sev = if is_last {
                        Severity::Warning
                    } else {
                        Severity::Error
                    };
                    problem(rep, sev, path, Some(len), "segment shorter than its header (interrupted while being created); the sink removes it when it reopens the partition".into());
                    continue;
                }
                Err(Error::Corrupt {
                    path,
                    position,
                    detail,
                }) => {
                    problem(
                        rep,
                        Severity::Error,
                        &path,
                        Some(position),
                        format!(
                            "{detail}; the records from here on cannot be restored from this file"
                        ),
                    );
                    prev_last = None;
                    continue;
                }
                Err(e) => {
                    problem(rep, Severity::Error, path, None, e.to_string());
                    prev_last = None;
                    continue;
                }
            };
            let h = &scan.header;
            if h.topic != topic || h.partition != partition || h.base_offset != *base {
                problem(rep, Severity::Error, path, Some(0), format!(
                    "header says {}-{} base offset {}, but the file is {topic}-{partition} base offset {base}",
                    h.topic, h.partition, h.base_offset));
            }
            rep.records += scan.records;
            if let Some((pos, why)) = &scan.torn {
                if is_last {
                    problem(rep, Severity::Warning, path, Some(*pos), format!("torn write at the end of the partition ({why}); not restored, the sink truncates it and fetches the records again when it reopens the partition"));
                } else {
                    problem(rep, Severity::Error, path, Some(*pos), format!("damaged end of a segment that is not the last one ({why}); records after this position are lost from this file"));
                }
            }
            if let Some((last, prev_path)) = &prev_last {
                if h.prev_last_offset != *last {
                    problem(rep, Severity::Error, path, Some(20), format!(
                        "segment chain broken: this segment follows offset {} but the previous file {} ends at offset {last}; a segment is missing between them",
                        h.prev_last_offset, prev_path.display()));
                }
                if *base <= *last {
                    problem(
                        rep,
                        Severity::Error,
                        path,
                        Some(0),
                        format!("segment overlaps the previous one (base offset {base} <= {last})"),
                    );
                }
            }
            let files = index::encode_files(h.base_offset, h.index_interval_bytes, &scan.indexes);
            match index::compare(path, &files)? {
                IndexState::Valid => {}
                IndexState::Missing(f) => problem(
                    rep,
                    Severity::Warning,
                    Path::new(&f),
                    None,
                    "index file missing; run `kbackup reindex` to rebuild it".into(),
                ),
                IndexState::Stale { file, position } if scan.torn.is_some() && is_last => problem(
                    rep,
                    Severity::Warning,
                    Path::new(&file),
                    Some(position),
                    "index covers a torn tail; the sink rebuilds it when it reopens the partition"
                        .into(),
                ),
                IndexState::Stale { file, position } => problem(
                    rep,
                    Severity::Error,
                    Path::new(&file),
                    Some(position),
                    "index disagrees with its segment (damaged or stale); indexes are derived \
                     data, so no record is lost: run `kbackup reindex` to rebuild it from the \
                     segment"
                        .into(),
                ),
            }
            prev_last = scan.last_offset.map(|l| (l, path.clone()));
        }
        Ok(())
    }

    /// Checks a partition's group-offsets log: every entry's CRC, the header and version.
    fn verify_offsets_log(&self, log: &Path, rep: &mut VerifyReport) {
        match offsets_log::check(log) {
            Ok(None) => {}
            Ok(Some(scan)) => {
                if let Some((pos, why)) = scan.torn {
                    problem(rep, Severity::Warning, log, Some(pos), format!("torn append at the end of the group-offsets log ({why}); ignored by readers, cut off by the next capture"));
                }
            }
            Err(Error::Corrupt {
                path,
                position,
                detail,
            }) => problem(rep, Severity::Error, &path, Some(position), format!("{detail}; the consumer-group positions of this partition cannot be restored from this file")),
            Err(e) => problem(rep, Severity::Error, log, None, e.to_string()),
        }
    }

    /// Rebuilds every index file that is missing or disagrees with its segment.
    pub fn reindex(&self) -> Result<ReindexReport> {
        let mut rep = ReindexReport {
            segments: 0,
            rebuilt: 0,
            failed: Vec::new(),
        };
        for topic in self.topics()? {
            for p in self.partitions(&topic)? {
                let dir =
                    layout::partition_dir(&self.root, &TopicPartition::new(topic.clone(), p))?;
                let segments = layout::list_segments(&dir)?;
                let n = segments.len();
                for (i, (_, path)) in segments.into_iter().enumerate() {
                    rep.segments += 1;
                    // A torn tail is only an interrupted write in the last segment; elsewhere
                    // records are missing, and an index of what is left would hide that.
                    let res = segment::scan_file(&path).and_then(|scan| match &scan.torn {
                        Some((pos, why)) if i + 1 < n => Err(Error::corrupt(
                            &path,
                            *pos,
                            format!("{why} in a segment that is not the partition's last"),
                        )),
                        _ => index::ensure_scanned(&path, &scan),
                    });
                    match res {
                        Ok(true) => rep.rebuilt += 1,
                        Ok(false) => {}
                        Err(e) => rep.failed.push((path, e.to_string())),
                    }
                }
            }
        }
        Ok(rep)
    }
}

fn problem(
    rep: &mut VerifyReport,
    severity: Severity,
    file: &Path,
    position: Option<u64>,
    message: String,
) {
    rep.problems.push(Problem {
        severity,
        file: file.to_path_buf(),
        position,
        message,
    });
}

/// The currently open segment of a [`PartitionReader`].
struct OpenSegment {
    path: PathBuf,
    base: i64,
    /// The header's offset of the last record of the previous segment (-1: none).
    prev_last: i64,
    file: SegmentFile,
    header_len: usize,
    pos: usize,
    is_last: bool,
}

/// Reads one partition's records in offset order across its segments.
pub struct PartitionReader {
    tp: TopicPartition,
    segments: Vec<(i64, PathBuf)>,
    cur: usize,
    seg: Option<OpenSegment>,
    last_returned: Option<i64>,
    /// Last offset of the previous segment when it was read to its end: the next segment's
    /// header must name it, or a segment is missing or was cut short.
    chain: Option<(i64, PathBuf)>,
}

impl PartitionReader {
    /// The partition being read.
    pub fn topic_partition(&self) -> &TopicPartition {
        &self.tp
    }

    /// The partition's segments as (base offset, path), in order.
    pub fn segments(&self) -> &[(i64, PathBuf)] {
        &self.segments
    }

    fn load(&self, i: usize) -> Result<Option<OpenSegment>> {
        let (base, path) = &self.segments[i];
        let is_last = i + 1 == self.segments.len();
        let mut file = SegmentFile::open(path)?;
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
        }))
    }

    /// The frame at the current position, moving across segments; `None` at the end.
    /// Answers (offset, timestamp, body range) and leaves the position after the frame.
    fn advance(&mut self) -> Result<Option<(i64, i64, std::ops::Range<usize>)>> {
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
            match s.file.read_frame(s.pos)? {
                Frame::Record {
                    offset,
                    timestamp,
                    body,
                    next,
                } => {
                    if s.pos == s.header_len && offset != s.base {
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
                    s.pos = next;
                    self.last_returned = Some(offset);
                    return Ok(Some((offset, timestamp, body)));
                }
                Frame::End => {
                    self.chain = self.last_returned.map(|l| (l, s.path.clone()));
                }
                Frame::Torn(why) if s.is_last => {
                    log::debug!(
                        "{}: ignoring torn tail at byte {} ({why})",
                        s.path.display(),
                        s.pos
                    );
                    s.pos = s.file.len() as usize;
                }
                Frame::Torn(why) | Frame::Corrupt(why) => {
                    return Err(Error::corrupt(&s.path, s.pos as u64, why));
                }
            }
            self.seg = None;
            self.cur += 1;
        }
    }

    fn next_position(&mut self) -> Result<Option<(i64, i64)>> {
        Ok(self.advance()?.map(|(o, t, _)| (o, t)))
    }

    /// The next record, or `None` at the end of the partition.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        let Some((_, _, body)) = self.advance()? else {
            return Ok(None);
        };
        let s = self
            .seg
            .as_mut()
            .expect("advance leaves the segment loaded");
        s.file.decode_body(body).map(Some)
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
        let ipath = layout::offset_index_path(&s.path);
        match index::read_offset_index(&ipath, s.base, s.file.len()) {
            Ok(entries) => {
                let i = entries.partition_point(|e| e.offset <= offset);
                if i > 0 {
                    let e = entries[i - 1];
                    match s.file.read_frame(e.position as usize)? {
                        Frame::Record { offset: o, .. } if o == e.offset => s.pos = e.position as usize,
                        _ => log::warn!("{}: index entry for offset {} does not point at that record; scanning the segment instead (run `kbackup reindex`)", ipath.display(), e.offset),
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
            match s.file.read_frame(s.pos)? {
                Frame::Record {
                    offset: o, next, ..
                } if o < offset => {
                    s.pos = next;
                    self.last_returned = Some(o);
                }
                Frame::Record { .. } => return Ok(()),
                Frame::End => {
                    self.chain = self.last_returned.map(|l| (l, s.path.clone()));
                    self.seg = None;
                    self.cur += 1;
                    return Ok(());
                }
                // Let next_record report (or ignore) it with the right rules.
                Frame::Torn(_) | Frame::Corrupt(_) => return Ok(()),
            }
        }
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

    /// Number of records in the partition (reads every frame).
    pub fn record_count(&self) -> Result<u64> {
        let mut r = self.fresh();
        let mut n = 0;
        while r.next_position()?.is_some() {
            n += 1;
        }
        Ok(n)
    }

    fn fresh(&self) -> PartitionReader {
        PartitionReader {
            tp: self.tp.clone(),
            segments: self.segments.clone(),
            cur: 0,
            seg: None,
            last_returned: None,
            chain: None,
        }
    }
}
