//! Planning: which record each captured group resumes at.

use super::state::*;
use super::window::{self, PartitionWindow, RestoreWindow, WindowSpan};
use crate::error::{Error, Result};
use crate::offsets_log;
use crate::reader::{Backup, PartitionReader};
use crate::reconcile::{self, TargetLog};
use crate::record::TopicPartition;
use crate::translate::{self};

/// The captured groups of a backed-up partition and the record each resumes at, inside the
/// window `w` whose records lie in `span`; also the groups left out because every capture of
/// theirs is later than the window's end time.
///
/// A group's position is its last capture at or before `window.to_time_ms` (the latest
/// capture without one). It resumes at the first record OF THE WINDOW at or after that
/// position ([`translate::target_original`] over the window's records): a position before the
/// window resumes at its first record, one past it at the end. Groups without a committed
/// offset are left out; translation state is empty.
pub fn group_targets(
    backup: &Backup,
    tp: &TopicPartition,
    reader: Option<&mut PartitionReader>,
    window: &RestoreWindow,
    span: &WindowSpan,
) -> Result<(Vec<GroupTarget>, Vec<String>)> {
    let (known, not_captured) = offsets_log::as_of(backup.group_offsets(tp)?, window.to_time_ms);
    let w = window.for_partition(tp);
    let mut out = Vec::new();
    let mut reader = reader;
    for (group, e) in known {
        // The first backed-up offset >= O in the window, found with the reader (errors name
        // file and position); the rule itself stays in `translate`.
        let mut found: Vec<i64> = Vec::new();
        if let (Some(r), true) = (reader.as_deref_mut(), e.committed_offset >= 0) {
            if w.is_all() {
                r.seek(e.committed_offset)?;
                found.extend(r.next_record()?.map(|rec| rec.offset));
            } else if let (Some(first), Some(last)) = (span.first, span.last) {
                if e.committed_offset <= last {
                    r.seek(e.committed_offset.max(first))?;
                    found.extend(window::next_in_window(r, &w)?.map(|rec| rec.offset));
                }
            }
        }
        let target = translate::target_original(&found, e.committed_offset);
        if let Some(target) = target {
            out.push(GroupTarget {
                group,
                backed_up_offset: e.committed_offset,
                capture_time_ms: e.capture_time_ms,
                metadata: e.metadata,
                target,
                mapped_original: None,
                mapped_new: None,
                commit: CommitState::Pending,
            });
        }
    }
    Ok((out, not_captured))
}

/// Where a window lies in a partition: its records and the groups' targets.
#[derive(Debug, Clone)]
pub struct PartitionPlan {
    /// The backed-up partition.
    pub tp: TopicPartition,
    /// First and last original offsets restored and how many records.
    pub span: WindowSpan,
    /// Each captured group and where it resumes.
    pub groups: Vec<GroupTarget>,
    /// Groups left out: captured only after the window's end time.
    pub groups_not_captured: Vec<String>,
}

/// Where a window lies in one partition of the backup (whole-partition restores use the
/// cheap first/last lookups and count nothing unless `count`).
pub(super) fn partition_span(
    reader: &mut PartitionReader,
    w: &PartitionWindow,
    count: bool,
) -> Result<WindowSpan> {
    if w.is_all() && !count {
        return Ok(WindowSpan {
            first: reader.first_offset()?,
            last: reader.last_offset()?,
            records: 0,
        });
    }
    window::span(reader, w)
}

/// What `kbackup restore-plan` shows: per topic and partition, the window's records and each
/// group's target.
pub fn plan(
    backup: &Backup,
    topics: &[String],
    window: &RestoreWindow,
) -> Result<Vec<PartitionPlan>> {
    let mut out = Vec::new();
    for topic in topics {
        for p in backup.partitions(topic)? {
            let tp = TopicPartition::new(topic.clone(), p);
            let mut reader = open_reader(backup, topic, p)?;
            let span = match reader.as_mut() {
                Some(r) => partition_span(r, &window.for_partition(&tp), true)?,
                None => WindowSpan::default(),
            };
            let (groups, groups_not_captured) =
                group_targets(backup, &tp, reader.as_mut(), window, &span)?;
            out.push(PartitionPlan {
                tp,
                span,
                groups,
                groups_not_captured,
            });
        }
    }
    Ok(out)
}

/// Reads the target partition after the last record `state` knows and applies the copies
/// found there as acknowledgements; returns how many records it proved.
pub(super) fn reconcile_partition(
    state: &mut PartitionState,
    reader: Option<&mut PartitionReader>,
    w: &PartitionWindow,
    target: &mut dyn TargetLog,
) -> Result<usize> {
    let from = if state.last_acked_new >= 0 {
        state.last_acked_new + 1
    } else {
        match state.target_start {
            Some(s) => s,
            None => return Ok(0), // state of an older version: where our records begin is unknown
        }
    };
    let Some(reader) = reader else {
        return Ok(0);
    };
    let Some(resume) = state.resume_from() else {
        return Ok(0);
    };
    reader.seek(resume)?;
    let (topic, p) = (state.target_topic.clone(), state.partition);
    // Only records of the window were written: match those, in order.
    let acks = reconcile::match_in_order(&mut || window::next_in_window(reader, w), &mut |each| {
        target.scan(&topic, p, from, each)
    })?;
    for (o, n) in &acks {
        state.advance(*o, *n);
    }
    Ok(acks.len())
}

pub(super) fn open_reader(backup: &Backup, topic: &str, p: i32) -> Result<Option<PartitionReader>> {
    match backup.partition(topic, p) {
        Ok(r) => Ok(Some(r)),
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}
