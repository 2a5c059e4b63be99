//! The engine: reads batches for the task, takes acknowledgements, tracks progress.

use super::window::{self, PartitionWindow, WindowSpan};
use super::*;
use super::{config::*, plan::*, state::*};
use crate::cluster::ClusterClient;
use crate::error::{Error, Result};
use crate::kafka::RdKafkaCluster;
use crate::metrics::{SourceMetrics, SourcePartitionMetrics};
use crate::reader::PartitionReader;
use crate::reconcile::{KafkaTargetLog, TargetLog};
use crate::record::{Ack, BatchRecord};
use crate::record::{TopicPartition, TopicPartitionOffset};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

/// The records of one partition handed out and not yet part of the acknowledged prefix.
///
/// Acknowledgements arrive out of order (a record dropped by a transform is acknowledged on the
/// task thread before the producer callbacks of earlier records), but the records were handed
/// out in order, so the prefix only moves over records that are all acknowledged.
#[derive(Debug, Default)]
pub struct AckQueue {
    /// (original offset, new offset once acknowledged; -1 = not written), in original order.
    items: std::collections::VecDeque<(i64, Option<i64>)>,
}

impl AckQueue {
    /// A record was handed out (in increasing original order).
    pub fn handed_out(&mut self, original: i64) {
        self.items.push_back((original, None));
    }

    /// Records an acknowledgement; false if the record was not handed out by this queue.
    pub fn ack(&mut self, original: i64, new: i64) -> bool {
        let (a, b) = self.items.as_slices();
        let found = match a.binary_search_by_key(&original, |x| x.0) {
            Ok(i) => Some(i),
            Err(_) => b
                .binary_search_by_key(&original, |x| x.0)
                .ok()
                .map(|i| i + a.len()),
        };
        match found.and_then(|i| self.items.get_mut(i)) {
            Some(item) => {
                item.1 = Some(new);
                true
            }
            None => false,
        }
    }

    /// Takes the acknowledged records at the front, in order: the prefix can move over them.
    pub fn take_prefix(&mut self) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        while let Some(&(o, Some(n))) = self.items.front() {
            out.push((o, n));
            self.items.pop_front();
        }
        out
    }

    /// Records handed out and not yet in the prefix.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

pub(super) struct PartitionRun {
    pub(super) state: PartitionState,
    pub(super) reader: Option<PartitionReader>,
    /// Handed-out records waiting to join the acknowledged prefix.
    pub(super) queue: AckQueue,
    /// Original offset to read next; `None` once everything has been sent.
    pub(super) next: Option<i64>,
    /// The part of the partition restored.
    pub(super) window: PartitionWindow,
    pub(super) dirty: bool,
    pub(super) commit_retry_at: Option<Instant>,
}

/// What one [`RestoreSource::poll`] yields (the JNI bridge turns it into the flags of
/// docs/jni.md; the CLI's pump matches on it).
#[derive(Debug)]
pub enum Polled {
    /// The next records to write, in original order per partition.
    Records(Vec<BatchRecord>),
    /// Nothing to hand out now: records wait for acknowledgements, or group commits for a retry.
    Waiting,
    /// Every assigned partition is restored, acknowledged and settled, and the final configs
    /// of its topics are applied.
    Finished,
}

impl Polled {
    /// The records handed out (none when waiting or finished).
    pub fn into_records(self) -> Vec<BatchRecord> {
        match self {
            Polled::Records(r) => r,
            Polled::Waiting | Polled::Finished => Vec::new(),
        }
    }
}

/// Status of one task's restore, returned by `sourceStatus` as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreStatus {
    /// Connector name.
    pub connector_name: String,
    /// Task id.
    pub task_id: String,
    /// Where the restore keeps its progress (a directory or a bucket URL).
    pub state_dir: String,
    /// Every assigned partition is restored, acknowledged and its groups settled, and the
    /// final configs of their topics are applied.
    pub finished: bool,
    /// Per assigned partition.
    pub partitions: Vec<PartitionState>,
}

/// One task's restore: reads batches, takes acknowledgements, commits group offsets.
pub struct RestoreSource {
    pub(super) cfg: SourceConfig,
    /// Every Kafka call of the engine goes through here.
    pub(super) cluster: Arc<dyn ClusterClient>,
    pub(super) state: StatePlace,
    pub(super) runs: BTreeMap<TopicPartition, PartitionRun>,
    /// Every backed-up partition of each topic to restore, listed once at open (a topic is
    /// finished when all of them are, the other tasks' ones included).
    pub(super) backup_partitions: BTreeMap<String, Vec<i32>>,
    /// Round-robin position so every partition makes progress.
    pub(super) cursor: usize,
    pub(super) last_save: Instant,
    pub(super) finished_logged: bool,
    /// Topics whose final configs are applied (or not ours to apply).
    pub(super) topics_finished: BTreeSet<String>,
    /// Earliest time to look at other tasks' partitions of done topics again.
    pub(super) topic_check_at: Option<Instant>,
    /// Partitions of this task done at the last topic check: one more done is checked at
    /// once (a topic whose partitions are all here finishes without waiting).
    pub(super) topic_check_done: usize,
    /// Since when group commits fail with transient errors (`None`: the last one worked).
    pub(super) commit_failing_since: Option<Instant>,
    pub(super) closed: bool,
    /// Monitoring: key, value and header bytes of the records handed out.
    pub(super) bytes_handed_out: u64,
}

impl RestoreSource {
    /// Opens the assigned partitions; `offset` of each is the last original offset Connect
    /// committed (-1: none).
    /// Kafka calls go through librdkafka with `cfg.cluster`.
    pub fn open(cfg: SourceConfig, assignment: &[TopicPartitionOffset]) -> Result<RestoreSource> {
        let cluster: Arc<dyn ClusterClient> = Arc::new(RdKafkaCluster::new(&cfg.cluster));
        Self::open_on(cfg, assignment, cluster)
    }

    /// Like [`RestoreSource::open`], with every Kafka call going through `cluster` (the
    /// Connect path: Java clients).
    pub fn open_on(
        cfg: SourceConfig,
        assignment: &[TopicPartitionOffset],
        cluster: Arc<dyn ClusterClient>,
    ) -> Result<RestoreSource> {
        let mut target = KafkaTargetLog::new(Arc::clone(&cluster), KAFKA_TIMEOUT);
        Self::open_with(cfg, assignment, cluster, &mut target, false)
    }

    /// [`RestoreSource::open`] reading the target partitions through `target`.
    ///
    /// Per partition: the saved state is the truth (Connect's committed offset can lag it);
    /// the target partition is then read after the last record the state knows, and the
    /// copies found there count as acknowledged ([`crate::reconcile`]); a committed offset
    /// still further on is taken as acknowledged too ([`PartitionState::skip_to`]). Reading
    /// resumes after all that, so no record proven written is written again. With `strict`
    /// (the CLI, whose only record of progress is the state and the target) a failure to read
    /// the target fails the open instead of resuming from the state alone.
    pub fn open_with(
        cfg: SourceConfig,
        assignment: &[TopicPartitionOffset],
        cluster: Arc<dyn ClusterClient>,
        target_log: &mut dyn TargetLog,
        strict: bool,
    ) -> Result<RestoreSource> {
        let place = cfg.state_place()?;
        claim_state_dir(&place, &cfg.connector_name)?;
        let backup = cfg.open_backup()?;
        let mut backup_partitions = BTreeMap::new();
        for t in &cfg.topics {
            // a topic that cannot be listed now is listed again when it finishes
            if let Ok(ps) = backup.partitions(t) {
                backup_partitions.insert(t.clone(), ps);
            }
        }
        let mut runs = BTreeMap::new();
        for a in assignment {
            if !cfg.topics.contains(&a.topic) {
                return Err(Error::Config(format!(
                    "task {} was assigned {}-{}, which is not in topics; restart the connector so \
                     Connect recomputes the assignment",
                    cfg.task_id, a.topic, a.partition
                )));
            }
            let tp = a.topic_partition();
            let pw = cfg.window.for_partition(&tp);
            let window_text = cfg.window.describe();
            let target = cfg.target_topic(&a.topic).to_string();
            let mut reader = open_reader(&backup, &a.topic, a.partition)?;
            let saved = PartitionState::load(&place, &a.topic, a.partition)?;
            let mut state = match saved {
                Some(mut s) => {
                    window::same_window(&s.window, &window_text, &place.location())?;
                    // A failed group commit (a missing ACL, say) is tried again by the next
                    // run: its cause may be fixed. Refused ones are not (the group has members).
                    for g in s.groups.iter_mut() {
                        if matches!(g.commit, CommitState::Failed { .. }) {
                            g.commit = CommitState::Pending;
                        }
                    }
                    if a.offset < 0 && s.last_acked_original >= 0 && !s.done {
                        log::info!(
                            "{}: Connect has no committed offset for {tp} but the restore state in \
                             {} has progress up to original offset {}: resuming from it (delete \
                             that directory to restore the partition again from the start)",
                            cfg.task_id,
                            place.location(),
                            s.last_acked_original
                        );
                    }
                    s
                }
                None => {
                    let span = match reader.as_mut() {
                        Some(r) => partition_span(r, &pw, false)?,
                        None => WindowSpan::default(),
                    };
                    let (groups, not_captured) = if cfg.restore_group_offsets {
                        group_targets(&backup, &tp, reader.as_mut(), &cfg.window, &span)?
                    } else {
                        (Vec::new(), Vec::new())
                    };
                    if !not_captured.is_empty() {
                        log::warn!(
                            "{}: groups {not_captured:?} have no position captured on {tp} at or                              before the window's end time: their offsets are not restored (they                              will start by auto.offset.reset); restore a later end time to include                              them",
                            cfg.task_id
                        );
                    }
                    let mut s = PartitionState::new(
                        &a.topic,
                        &target,
                        a.partition,
                        span.first,
                        span.last,
                        groups,
                    );
                    s.window = window_text.clone();
                    s.groups_not_captured = not_captured;
                    if !pw.is_all() {
                        s.window_records = Some(span.records);
                    }
                    if !cfg.restore_group_offsets {
                        s.groups
                            .iter_mut()
                            .for_each(|g| g.commit = CommitState::Skipped);
                    }
                    if !s.done {
                        match target_log.end_offset(&target, a.partition) {
                            Ok(end) => s.target_start = Some(end),
                            Err(e) if strict => return Err(e),
                            Err(e) => log::warn!(
                                "{}: {e}; a crash before the first acknowledgement of {tp} will \
                                 restore what was written again",
                                cfg.task_id
                            ),
                        }
                    }
                    s.save(&place)?;
                    s
                }
            };
            if !state.done {
                let before = state.last_acked_original;
                match reconcile_partition(&mut state, reader.as_mut(), &pw, target_log) {
                    Ok(0) => {}
                    Ok(n) => log::info!(
                        "{}: {n} records of {tp} after original offset {before} were found \
                         in {target} (their acknowledgements were lost): not restored again",
                        cfg.task_id
                    ),
                    Err(e) if strict => return Err(e),
                    Err(e) => log::warn!(
                        "{}: could not read back {target}-{} to reconcile ({e}); resuming \
                         from the saved state and Connect's committed offset",
                        cfg.task_id,
                        a.partition
                    ),
                }
                if a.offset > state.last_acked_original {
                    log::info!(
                        "{}: Connect committed {tp} up to original offset {} while the restore \
                         state proves {}: taking the records between as written",
                        cfg.task_id,
                        a.offset,
                        state.last_acked_original
                    );
                    state.skip_to(a.offset);
                    if state.done {
                        if let Ok(end) = target_log.end_offset(&target, a.partition) {
                            state.new_log_end = state.new_log_end.max(end);
                        }
                    }
                }
                state.save(&place)?;
            }
            let next = state.resume_from();
            if let (Some(n), Some(r)) = (next, reader.as_mut()) {
                r.seek(n)?;
            }
            log::info!(
                "{}: restoring {tp} into {target} from original offset {} (window: {window_text})",
                cfg.task_id,
                next.map_or("(done)".to_string(), |n| n.to_string())
            );
            runs.insert(
                tp,
                PartitionRun {
                    state,
                    reader,
                    queue: AckQueue::default(),
                    next,
                    window: pw,
                    dirty: false,
                    commit_retry_at: None,
                },
            );
        }
        Ok(RestoreSource {
            cfg,
            cluster,
            state: place,
            runs,
            backup_partitions,
            cursor: 0,
            last_save: Instant::now(),
            finished_logged: false,
            topics_finished: BTreeSet::new(),
            topic_check_at: None,
            topic_check_done: 0,
            commit_failing_since: None,
            closed: false,
            bytes_handed_out: 0,
        })
    }

    /// Takes acknowledgements, commits finished partitions' groups, returns the next batch.
    pub fn poll(&mut self, acks: &[Ack], max_records: usize) -> Result<Polled> {
        self.poll_bounded(acks, max_records, u64::MAX)
    }

    /// [`RestoreSource::poll`] whose batch also stops once it holds `max_bytes` of keys,
    /// values and headers (always at least one record): the Connect path, where one batch of
    /// `batch.size` large records would be copied whole into the worker's heap, twice.
    pub fn poll_bounded(
        &mut self,
        acks: &[Ack],
        max_records: usize,
        max_bytes: u64,
    ) -> Result<Polled> {
        if self.closed {
            return Err(Error::State(
                "poll after close: the task was already stopped".into(),
            ));
        }
        self.apply_acks(acks)?;
        self.commit_finished()?;
        self.save(false)?;

        let max = if max_records == 0 {
            self.cfg.batch_size.max(1)
        } else {
            max_records
        };
        let mut out = Vec::new();
        let mut bytes = 0u64;
        let keys: Vec<TopicPartition> = self.runs.keys().cloned().collect();
        let n = keys.len();
        for i in 0..n {
            let full = |out: &Vec<BatchRecord>, bytes: u64| {
                out.len() >= max || (!out.is_empty() && bytes >= max_bytes)
            };
            if full(&out, bytes) {
                break;
            }
            let tp = &keys[(self.cursor + i) % n];
            let Some(run) = self.runs.get_mut(tp) else {
                continue;
            };
            let (Some(_), Some(reader)) = (run.next, run.reader.as_mut()) else {
                continue;
            };
            while !full(&out, bytes) {
                match window::next_in_window(reader, &run.window)? {
                    Some(record) => {
                        run.next = Some(record.offset + 1);
                        run.queue.handed_out(record.offset);
                        let b = record.payload_bytes();
                        bytes += b;
                        self.bytes_handed_out += b;
                        out.push(BatchRecord {
                            topic: tp.topic.clone(),
                            partition: tp.partition,
                            record,
                        });
                    }
                    None => {
                        run.next = None;
                        break;
                    }
                }
            }
        }
        if n > 0 {
            self.cursor = (self.cursor + 1) % n;
        }
        if self.finished() {
            if !self.finished_logged {
                log::info!(
                    "{}: restore finished: every assigned partition is restored and acknowledged, \
                     its groups settled and its topics' configs restored; state in {}",
                    self.cfg.task_id,
                    self.state.location()
                );
                self.finished_logged = true;
            }
            return Ok(Polled::Finished);
        }
        Ok(if out.is_empty() {
            Polled::Waiting
        } else {
            Polled::Records(out)
        })
    }

    pub(super) fn apply_acks(&mut self, acks: &[Ack]) -> Result<()> {
        let mut urgent = false;
        // Acks come partition by partition: look each partition up once per run, not per ack.
        for same in acks.chunk_by(|x, y| x.partition == y.partition && x.topic == y.topic) {
            let tp = TopicPartition::new(same[0].topic.clone(), same[0].partition);
            let Some(run) = self.runs.get_mut(&tp) else {
                log::debug!("ignoring acknowledgement for {tp}, not assigned to this task");
                continue;
            };
            for a in same {
                if !run.queue.ack(a.original_offset, a.new_offset) {
                    log::debug!(
                        "ignoring acknowledgement of {tp}@{}: not handed out by this task",
                        a.original_offset
                    );
                }
            }
            for (o, n) in run.queue.take_prefix() {
                if run.state.advance(o, n) {
                    urgent = true;
                }
            }
            run.dirty = true;
        }
        if urgent {
            self.save(true)?;
        }
        Ok(())
    }

    /// Writes dirty partition states: at once when `force`, else at most once per interval.
    pub(super) fn save(&mut self, force: bool) -> Result<()> {
        if !force && self.last_save.elapsed() < self.state.save_interval() {
            return Ok(());
        }
        for run in self.runs.values_mut() {
            if run.dirty {
                run.state.save(&self.state)?;
                run.dirty = false;
            }
        }
        self.last_save = Instant::now();
        Ok(())
    }

    /// The task's progress (also in the state directory, see [`read_status`]).
    pub fn status(&self) -> RestoreStatus {
        RestoreStatus {
            connector_name: self.cfg.connector_name.clone(),
            task_id: self.cfg.task_id.clone(),
            state_dir: self.state.location(),
            finished: self.finished(),
            partitions: self.runs.values().map(|r| r.state.clone()).collect(),
        }
    }

    /// A snapshot of the task's progress for monitoring (see [`crate::metrics`]).
    pub fn metrics(&self) -> SourceMetrics {
        let mut m = SourceMetrics {
            bytes_restored: self.bytes_handed_out,
            finished: u64::from(self.finished()),
            ..SourceMetrics::default()
        };
        for run in self.runs.values() {
            let s = &run.state;
            let count = |f: fn(&CommitState) -> bool| {
                s.groups.iter().filter(|g| f(&g.commit)).count() as u64
            };
            let last = s.last_offset.unwrap_or(-1);
            let p = SourcePartitionMetrics {
                topic: s.topic.clone(),
                partition: s.partition,
                records_restored: s.records_restored,
                acked_offset: s.last_acked_original,
                last_offset: last,
                remaining_offsets: if s.done {
                    0
                } else {
                    (last - s.last_acked_original).max(0)
                },
                done: u64::from(s.done),
                groups_committed: count(|c| matches!(c, CommitState::Committed { .. })),
                groups_pending: count(|c| matches!(c, CommitState::Pending)),
                groups_refused: count(|c| matches!(c, CommitState::Refused { .. })),
                groups_failed: count(|c| matches!(c, CommitState::Failed { .. })),
            };
            m.records_restored += p.records_restored;
            m.partitions += 1;
            m.partitions_done += p.done;
            m.groups_committed += p.groups_committed;
            m.groups_pending += p.groups_pending;
            m.groups_refused += p.groups_refused;
            m.groups_failed += p.groups_failed;
            m.partition_metrics.push(p);
        }
        m
    }

    /// Finished as `restore-status` means it: every assigned partition settled AND the final
    /// configs of their topics applied (until then a created topic's retention is held off).
    pub(super) fn finished(&self) -> bool {
        self.runs
            .values()
            .all(|r| r.state.settled() && self.topics_finished.contains(&r.state.topic))
    }

    /// Applies acknowledgements and saves the state at once (a task handing over its last
    /// acknowledgements before it stops).
    pub fn ack(&mut self, acks: &[Ack]) -> Result<()> {
        if self.closed {
            return Err(Error::State(
                "acknowledgements after close: the task was already stopped".into(),
            ));
        }
        self.apply_acks(acks)?;
        self.save(true)
    }

    /// Saves progress and releases the readers; safe to call twice.
    pub fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let result = self.save(true);
        self.runs.clear();
        result
    }
}
