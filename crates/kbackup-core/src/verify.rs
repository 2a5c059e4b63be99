//! Checking a backup (`kbackup verify`) and rebuilding its derived index files
//! (`kbackup reindex`).
//!
//! Verify reads every file with the same rules as the readers (docs/format.md) but never stops
//! at the first problem: it reports each with file, position and severity, so an operator sees
//! the whole damage at once. Indexes are derived data, rebuilt here from their segment.

use crate::error::{Error, Result};
use crate::index::{self, IndexState};
use crate::layout;
use crate::offsets_log;
use crate::reader::Backup;
use crate::segment::{self, SegmentScan};
use serde::Serialize;
use std::path::{Path, PathBuf};

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

impl Backup {
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
        let topics_dir = self.topics_at();
        if !self.is_dir_at(&topics_dir) {
            problem(
                &mut rep,
                Severity::Warning,
                &self.display_at(&topics_dir),
                None,
                "no topics directory: the backup holds no data yet".into(),
            );
        } else {
            for (name, path, is_dir) in self.entries_at(&topics_dir)? {
                if !is_dir || layout::validate_topic_name(&name).is_err() {
                    problem(&mut rep, Severity::Warning, &self.display_at(&path), None, "unexpected entry in topics/ (not a topic directory); remove it if it is not yours".into());
                    continue;
                }
                self.verify_topic(&name, &path, &mut rep, progress)?;
            }
        }
        rep.ok = rep.errors() == 0;
        Ok(rep)
    }

    fn verify_topic(
        &self,
        topic: &str,
        dir: &Path,
        rep: &mut VerifyReport,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let manifest_at = self.display_at(&dir.join(layout::TOPIC_MANIFEST));
        match self.manifest(topic) {
            Ok(Some(_)) => {}
            Ok(None) => problem(rep, Severity::Warning, &manifest_at, None,
                "topic manifest missing: a restore cannot re-create the topic with its partition count and configs; create the topic by hand or let the sink rewrite it".into()),
            Err(e) => problem(rep, Severity::Error, &manifest_at, None, e.to_string()),
        }
        for (name, path, is_dir) in self.entries_at(dir)? {
            if name == layout::TOPIC_MANIFEST {
                continue;
            }
            match layout::parse_partition_dir_name(&name) {
                Some(p) if is_dir => self.verify_partition(topic, p, &path, rep, progress)?,
                _ => problem(
                    rep,
                    Severity::Warning,
                    &self.display_at(&path),
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
        let entries = self.entries_at(dir)?;
        let segments: Vec<(i64, PathBuf)> = entries
            .iter()
            .filter_map(|(name, at, _)| Some((layout::parse_segment_file_name(name)?, at.clone())))
            .collect();
        for (name, path, _) in entries.iter() {
            let known = layout::parse_segment_file_name(name).is_some()
                || layout::offsets_log_part(name).is_some()
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
                problem(rep, Severity::Warning, &self.display_at(path), None, "unexpected file in a partition directory (not a segment, index or group-offsets log, or an index without its segment)".into());
            }
        }
        for (name, at, _) in &entries {
            if layout::offsets_log_part(name).is_some() {
                self.verify_offsets_log(at, rep);
            }
        }
        let mut prev_last: Option<(i64, PathBuf)> = None;
        for (i, (base, at)) in segments.iter().enumerate() {
            let is_last = i + 1 == segments.len();
            rep.segments += 1;
            let file = self.open_segment_at(at)?;
            let len = file.len();
            let path = &file.path().to_path_buf();
            rep.bytes += len;
            progress(len);
            let scan = match segment::scan_opened(file) {
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
            let read = |p: &Path| self.read_at(p, "read index");
            let shown = |p: &Path| self.display_at(p);
            match index::compare_with(at, &scan.index_files(), read, shown)? {
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
    fn verify_offsets_log(&self, at: &Path, rep: &mut VerifyReport) {
        let log = &self.display_at(at);
        let checked = self
            .read_at(at, "read group-offsets log")
            .and_then(|data| data.map(|d| offsets_log::scan(&d, log)).transpose());
        match checked {
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
                let segments = self.partition(&topic, p)?.segments().to_vec();
                let n = segments.len();
                for (i, (_, at)) in segments.into_iter().enumerate() {
                    rep.segments += 1;
                    let file = self.open_segment_at(&at)?;
                    let (path, len) = (file.path().to_path_buf(), file.len());
                    // A torn tail is only an interrupted write in the last segment; elsewhere
                    // records are missing, and an index of what is left would hide that.
                    let res = segment::scan_opened(file)
                        .and_then(|scan| {
                            scan.ok_or_else(|| {
                                Error::corrupt(
                                    &path,
                                    len,
                                    "segment is shorter than its header (torn while being \
                                     created)",
                                )
                            })
                        })
                        .and_then(|scan| match &scan.torn {
                            Some((pos, why)) if i + 1 < n => Err(Error::corrupt(
                                &path,
                                *pos,
                                format!("{why} in a segment that is not the partition's last"),
                            )),
                            _ => self.ensure_index_at(&at, &scan),
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

    /// [`ensure_index`] for the segment at a reader place (a path, or a key in a bucket).
    fn ensure_index_at(&self, at: &Path, scan: &SegmentScan) -> Result<bool> {
        let files = scan.index_files();
        let read = |p: &Path| self.read_at(p, "read index");
        let shown = |p: &Path| self.display_at(p);
        if index::compare_with(at, &files, read, shown)? == IndexState::Valid {
            return Ok(false);
        }
        self.write_index_at(at, &files)?;
        Ok(true)
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

/// Rebuilds both index files of a segment from the segment alone (atomic replace each).
/// A torn tail is not indexed; corruption in the middle is an error.
pub fn rebuild_index(segment_path: &Path) -> Result<()> {
    let scan = segment::scan_file(segment_path)?;
    index::write_files(segment_path, &scan.index_files())
}

/// Rewrites the index files of a scanned segment only when they are missing or disagree with
/// it; answers whether it rewrote them.
pub fn ensure_index(segment_path: &Path, scan: &SegmentScan) -> Result<bool> {
    let files = scan.index_files();
    if index::compare(segment_path, &files)? == IndexState::Valid {
        return Ok(false);
    }
    index::write_files(segment_path, &files)?;
    Ok(true)
}
