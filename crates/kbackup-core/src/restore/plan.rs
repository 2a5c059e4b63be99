//! Planning: which record each captured group resumes at.

use super::state::*;
use crate::error::{Error, Result};
use crate::layout;
use crate::offsets_log;
use crate::reader::{Backup, PartitionReader};
use crate::reconcile::{self, TargetLog};
use crate::record::TopicPartition;
use crate::translate::{self};
use std::path::Path;

/// The captured groups of a backed-up partition and the record each resumes at.
///
/// Groups without a committed offset are left out; translation state is empty.
pub fn group_targets(
    root: &Path,
    tp: &TopicPartition,
    reader: Option<&mut PartitionReader>,
) -> Result<Vec<GroupTarget>> {
    let latest = offsets_log::latest_per_group(&layout::group_offsets_log(root, tp))?;
    let mut out = Vec::new();
    let mut reader = reader;
    for (group, e) in latest {
        // The first backed-up offset >= O, found with the reader (errors name file and
        // position); the rule itself stays in `translate`.
        let mut found: Vec<i64> = Vec::new();
        if let (Some(r), true) = (reader.as_deref_mut(), e.committed_offset >= 0) {
            r.seek(e.committed_offset)?;
            found.extend(r.next_record()?.map(|rec| rec.offset));
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
    Ok(out)
}

/// What `kbackup restore-plan` shows: per topic and partition, each group's target.
pub fn plan(root: &Path, topics: &[String]) -> Result<Vec<(TopicPartition, Vec<GroupTarget>)>> {
    let backup = Backup::open(root)?;
    let mut out = Vec::new();
    for topic in topics {
        for p in layout::list_partitions(root, topic)? {
            let tp = TopicPartition::new(topic.clone(), p);
            let mut reader = open_reader(&backup, topic, p)?;
            out.push((tp.clone(), group_targets(root, &tp, reader.as_mut())?));
        }
    }
    Ok(out)
}

/// Reads the target partition after the last record `state` knows and applies the copies
/// found there as acknowledgements; returns how many records it proved.
pub(super) fn reconcile_partition(
    state: &mut PartitionState,
    reader: Option<&mut PartitionReader>,
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
    reader.seek(state.last_acked_original.saturating_add(1).max(0))?;
    let (topic, p) = (state.target_topic.clone(), state.partition);
    let acks = reconcile::match_in_order(&mut || reader.next_record(), &mut |each| {
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
