//! The engine's unit tests: state files, translation targets, a fake target log.

use super::engine::*;
use super::plan::*;
use super::state::*;
use super::*;

/// A poll as the (flags, records) pair of the JNI buffer (docs/jni.md), so these assertions
/// read like the contract the Java task sees.
trait PollFlags {
    fn poll_flags(&mut self, acks: &[Ack], max: usize) -> Result<(u8, Vec<BatchRecord>)>;
}

impl PollFlags for RestoreSource {
    fn poll_flags(&mut self, acks: &[Ack], max: usize) -> Result<(u8, Vec<BatchRecord>)> {
        Ok(match self.poll(acks, max)? {
            Polled::Records(r) => (0, r),
            Polled::Waiting => (FLAG_WAITING_FOR_ACKS, Vec::new()),
            Polled::Finished => (FLAG_FINISHED, Vec::new()),
        })
    }
}
use crate::cluster::testing::Refusing;
use crate::cluster::ClusterClient;
use crate::codec::{Ack, BatchRecord, FLAG_FINISHED, FLAG_WAITING_FOR_ACKS};
use crate::error::Result;
use crate::kafka::RdKafkaCluster;
use crate::reconcile::{self, TargetLog};
use crate::record::{TopicPartition, TopicPartitionOffset};
use crate::translate::{self, NewOffsets, Target};
use crate::{layout, offsets_log};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

fn target(group: &str, r: Option<i64>) -> GroupTarget {
    GroupTarget {
        group: group.into(),
        backed_up_offset: r.unwrap_or(1000),
        capture_time_ms: 1,
        metadata: String::new(),
        target: r.map_or(Target::LogEnd, Target::Record),
        mapped_original: None,
        mapped_new: None,
        commit: CommitState::Pending,
    }
}

fn state() -> PartitionState {
    // Backup holds 10..=25 with gaps; groups at record 15, record 24 and the end.
    PartitionState::new(
        "orders",
        "orders-restored",
        2,
        Some(10),
        Some(25),
        vec![
            target("a", Some(15)),
            target("b", Some(24)),
            target("c", None),
        ],
    )
}

#[test]
fn records_not_written_finish_the_partition_but_never_hold_a_group() {
    let mut s = state();
    assert!(!s.advance(10, 0));
    assert!(
        !s.advance(15, -1),
        "target filtered by a transform: no mapping yet"
    );
    assert_eq!(s.groups[0].mapped_new, None);
    assert!(s.advance(16, 1), "the next written record takes the group");
    assert_eq!(s.groups[0].mapped_original, Some(16));
    assert_eq!(s.groups[0].mapped_new, Some(1));
    assert!(s.advance(24, 2));
    assert!(
        s.advance(25, -1),
        "a filtered last record still finishes the partition"
    );
    assert!(s.done);
    assert_eq!(s.records_restored, 3);
    assert_eq!(translate::translate(Target::LogEnd, &s), Some(3));
}

#[test]
fn acks_map_targets_and_finish_on_last_record() {
    let mut s = state();
    assert!(!s.advance(10, 0));
    assert!(!s.advance(12, 1));
    assert!(s.advance(15, 2), "target record acknowledged: save at once");
    assert!(!s.advance(16, 3));
    assert!(!s.done);
    assert!(s.advance(24, 4));
    assert!(s.advance(25, 5), "last record: done");
    assert!(s.done);
    assert_eq!(s.new_offset_of(15), Some(2));
    assert_eq!(s.new_offset_of(24), Some(4));
    assert_eq!(translate::translate(Target::LogEnd, &s), Some(6));
    assert_eq!(s.records_restored, 6);
    assert_eq!((s.last_acked_original, s.last_acked_new), (25, 5));
}

#[test]
fn a_record_at_or_below_the_prefix_is_ignored() {
    let mut s = state();
    s.advance(15, 2);
    s.advance(16, 3);
    assert!(!s.advance(15, 7), "already in the prefix");
    assert_eq!(s.new_offset_of(15), Some(2));
    assert_eq!(s.records_restored, 2);
}

#[test]
fn resume_is_after_the_acknowledged_prefix() {
    let mut s = state();
    assert_eq!(s.resume_from(), Some(0));
    s.advance(11, 0);
    assert_eq!(s.resume_from(), Some(12));
    s.advance(25, 1);
    assert_eq!(s.resume_from(), None, "done: nothing left to send");
}

#[test]
fn defect1_committed_offset_at_or_past_the_last_record_means_done() {
    // The acks of 24 and 25 were in the Java buffers when the task stopped; Connect had
    // committed their source offsets. The partition is done, never waiting for acks.
    let mut s = state();
    s.advance(15, 2);
    assert!(s.skip_to(25));
    assert!(s.done);
    assert_eq!(s.resume_from(), None);
    assert_eq!(s.new_offset_of(15), Some(2));
    assert_eq!(
        s.new_offset_of(24),
        Some(3),
        "unknown copy: first offset after what is known (re-read, never skipped)"
    );
    let mut past = state();
    assert!(past.skip_to(40));
    assert!(past.done);
}

#[test]
fn defect1_group_target_in_the_lost_window_is_not_rewound_to() {
    // Connect committed past group b's target (24) but its ack was lost: before the fix
    // the restore rewound to 24 and wrote 24.. twice.
    let mut s = state();
    s.advance(15, 2);
    s.skip_to(24);
    assert_eq!(s.resume_from(), Some(25));
    assert_eq!(s.new_offset_of(24), Some(3));
}

#[test]
fn defect3_group_whose_target_and_later_records_were_dropped_resolves_to_log_end() {
    let mut s = state();
    s.advance(10, 0);
    s.advance(15, 1);
    s.advance(24, -1);
    s.advance(25, -1);
    assert!(s.done);
    let b = s.groups[1].clone();
    assert_eq!(b.mapped_new, None, "nothing at or after 24 was written");
    assert_eq!(s.effective_target(&b), Target::LogEnd);
    assert_eq!(translate::translate(s.effective_target(&b), &s), Some(2));
    let a = s.groups[0].clone();
    assert_eq!(s.effective_target(&a), Target::Record(15));
}

#[test]
fn state_survives_a_simulated_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state();
    s.advance(15, 2);
    s.save(dir.path()).unwrap();
    // Acks after the save are lost with the process.
    s.advance(24, 4);
    let mut back = PartitionState::load(dir.path(), "orders", 2)
        .unwrap()
        .unwrap();
    assert_eq!(back.new_offset_of(15), Some(2));
    assert_eq!(back.new_offset_of(24), None);
    assert_eq!(
        back.resume_from(),
        Some(16),
        "resumes after the saved prefix"
    );
    back.advance(24, 12);
    back.advance(25, 13);
    assert!(back.done);
    assert_eq!(back.new_offset_of(15), Some(2));
    assert_eq!(back.new_offset_of(24), Some(12));
    back.save(dir.path()).unwrap();
    let status = read_status(dir.path()).unwrap();
    assert_eq!(status.partitions.len(), 1);
    assert!(!status.finished, "group commits are still pending");
}

#[test]
fn ack_queue_moves_the_prefix_only_over_contiguous_acks() {
    let mut q = AckQueue::default();
    for o in [3, 4, 8] {
        q.handed_out(o);
    }
    assert!(q.ack(8, -1));
    assert!(q.take_prefix().is_empty(), "8 acknowledged before 3 and 4");
    assert!(q.ack(3, 0));
    assert_eq!(q.take_prefix(), vec![(3, 0)]);
    assert!(!q.ack(5, 9), "never handed out");
    assert!(q.ack(4, 1));
    assert_eq!(q.take_prefix(), vec![(4, 1), (8, -1)]);
    assert!(q.is_empty());
}

#[test]
fn status_is_finished_when_groups_are_settled() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state();
    s.advance(25, 0);
    for g in &mut s.groups {
        g.commit = CommitState::Committed { offset: 0 };
    }
    s.groups[1].commit = CommitState::Refused {
        offset: 0,
        reason: "active".into(),
    };
    s.save(dir.path()).unwrap();
    claim_state_dir(dir.path(), "restore / ü").unwrap();
    let st = read_status(dir.path()).unwrap();
    assert!(st.finished);
    assert_eq!(st.connector_name.as_deref(), Some("restore / ü"));
}

#[test]
fn empty_partition_is_done_at_once() {
    let s = PartitionState::new("t", "t", 0, None, None, vec![target("g", None)]);
    assert!(s.done);
    assert_eq!(s.resume_from(), None);
    assert!(!s.settled(), "its group still needs a commit");
}

#[test]
fn corrupt_state_file_names_the_file_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let p = PartitionState::path(dir.path(), "t", 0).unwrap();
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, b"{not json").unwrap();
    let m = PartitionState::load(dir.path(), "t", 0)
        .unwrap_err()
        .to_string();
    assert!(m.contains("0.json") && m.contains("delete it"), "{m}");
}

#[test]
fn state_dir_belongs_to_one_connector_and_its_name_is_not_a_path() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SourceConfig::from_json(
        format!(r#"{{"connector_name":"../evil name","task_id":"x-0","source_dir":{:?},"topics":["t"]}}"#, dir.path()).as_bytes(),
    )
    .unwrap();
    let sd = cfg.state_dir();
    assert!(sd.starts_with(dir.path().join("restore-state")));
    assert_eq!(sd.file_name().unwrap().len(), 16);
    assert!(cfg.restore_group_offsets && cfg.batch_size == 1000 && !cfg.allow_non_empty_topics);
    claim_state_dir(&sd, &cfg.connector_name).unwrap();
    claim_state_dir(&sd, &cfg.connector_name).unwrap();
    let err = claim_state_dir(&sd, "other").unwrap_err().to_string();
    assert!(err.contains("restore.state.dir"), "{err}");
}

#[test]
fn validate_names_keys_and_fixes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SourceConfig {
        connector_name: "r".into(),
        task_id: "r-0".into(),
        source_dir: dir.path().join("missing"),
        topics: vec!["a".into(), "b".into()],
        topics_rename: [
            ("a".to_string(), "bad name".to_string()),
            ("zz".to_string(), "ok".to_string()),
            ("b".to_string(), "a".to_string()),
        ]
        .into_iter()
        .collect(),
        batch_size: 0,
        cluster: BTreeMap::new(),
        restore_state_dir: None,
        allow_non_empty_topics: false,
        restore_group_offsets: true,
    };
    let problems = validate(&cfg);
    let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
    assert!(keys.contains(&"source.dir"), "{problems:?}");
    assert!(keys.contains(&"batch.size"));
    assert!(keys.contains(&"cluster.bootstrap.servers"));
    assert_eq!(
        keys.iter().filter(|k| **k == "topics.rename").count(),
        2,
        "{problems:?}"
    );
    assert!(problems
        .iter()
        .any(|(_, m)| m.contains("\"zz\"") && m.contains("not listed in topics")));
}

fn write_backup(root: &Path, offsets: &[i64]) {
    use crate::record::{Record, TimestampType};
    use crate::sink::{BackupSink, SinkConfig};
    let mut sink = BackupSink::open(SinkConfig::new(root)).unwrap();
    sink.open_partitions(&[TopicPartition::new("t", 0)])
        .unwrap();
    let recs: Vec<BatchRecord> = offsets
        .iter()
        .map(|&o| BatchRecord {
            topic: "t".into(),
            partition: 0,
            record: Record {
                offset: o,
                timestamp: 1000 + o,
                timestamp_type: TimestampType::CreateTime,
                key: Some(vec![o as u8]),
                value: None,
                headers: vec![],
            },
        })
        .collect();
    sink.put(&recs).unwrap();
    sink.flush().unwrap();
    sink.close().unwrap();
}

fn engine_cfg(root: &Path, groups: bool) -> SourceConfig {
    SourceConfig {
        connector_name: "restore".into(),
        task_id: "restore-0".into(),
        source_dir: root.to_path_buf(),
        topics: vec!["t".into()],
        topics_rename: [("t".to_string(), "t2".to_string())].into_iter().collect(),
        batch_size: 100,
        cluster: BTreeMap::new(),
        restore_state_dir: None,
        allow_non_empty_topics: false,
        restore_group_offsets: groups,
    }
}

fn ack(o: i64, n: i64) -> Ack {
    Ack {
        topic: "t".into(),
        partition: 0,
        original_offset: o,
        new_offset: n,
    }
}

fn offsets(batch: &[BatchRecord]) -> Vec<i64> {
    batch.iter().map(|b| b.record.offset).collect()
}

/// The target partition t2-0 in memory: copies of `write_backup`'s records.
#[derive(Default)]
struct FakeTarget {
    records: Vec<reconcile::TargetRecord>,
}

impl FakeTarget {
    /// Writes copies of backed-up records `(original, new offset)`.
    fn write(&mut self, copies: &[(i64, i64)]) {
        for &(o, n) in copies {
            self.records.push(reconcile::TargetRecord {
                offset: n,
                timestamp: 1000 + o,
                log_append_time: false,
                key: Some(vec![o as u8]),
                value: None,
                headers: vec![],
            });
        }
    }
}

impl TargetLog for FakeTarget {
    fn end_offset(&mut self, _: &str, _: i32) -> Result<i64> {
        Ok(self.records.last().map_or(0, |r| r.offset + 1))
    }
    fn scan(
        &mut self,
        topic: &str,
        _: i32,
        from: i64,
        each: &mut dyn FnMut(reconcile::TargetRecord) -> bool,
    ) -> Result<()> {
        assert_eq!(topic, "t2", "reads the TARGET topic");
        for r in self.records.iter().filter(|r| r.offset >= from) {
            if !each(r.clone()) {
                break;
            }
        }
        Ok(())
    }
}

fn open_fake(cfg: &SourceConfig, committed: i64, target: &mut FakeTarget) -> RestoreSource {
    open_fake_on(
        cfg,
        committed,
        target,
        Arc::new(RdKafkaCluster::new(&cfg.cluster)),
    )
}

fn open_fake_on(
    cfg: &SourceConfig,
    committed: i64,
    target: &mut FakeTarget,
    cluster: Arc<dyn ClusterClient>,
) -> RestoreSource {
    RestoreSource::open_with(
        cfg.clone(),
        &[TopicPartitionOffset::new("t", 0, committed)],
        cluster,
        target,
        true,
    )
    .unwrap()
}

fn held_t2(cfg: &SourceConfig) {
    TopicState {
        topic: "t".into(),
        target_topic: "t2".into(),
        created_by_restore: true,
        final_configs: [("retention.ms".to_string(), "1000".to_string())].into(),
        configs_restored: false,
    }
    .save(&cfg.state_dir())
    .unwrap();
}

#[test]
fn engine_plans_groups_and_resumes_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_backup(root, &[0, 1, 2, 5, 6, 9]);
    let log = layout::group_offsets_log(root, &TopicPartition::new("t", 0));
    let e = |g: &str, o: i64| offsets_log::GroupOffsetEntry {
        capture_time_ms: 7,
        group: g.into(),
        committed_offset: o,
        metadata: String::new(),
    };
    offsets_log::append(
        &log,
        &[e("gap", 3), e("ahead", 100), e("first", 0), e("gap", 4)],
        crate::perms::OWNER_ONLY,
    )
    .unwrap();
    let plan = plan(root, &["t".to_string()]).unwrap();
    let targets: BTreeMap<_, _> = plan[0]
        .1
        .iter()
        .map(|g| (g.group.clone(), g.target))
        .collect();
    assert_eq!(
        targets["gap"],
        Target::Record(5),
        "latest entry (4) used, gap skipped"
    );
    assert_eq!(targets["ahead"], Target::LogEnd);
    assert_eq!(targets["first"], Target::Record(0));

    let cfg = engine_cfg(root, true);
    let mut target = FakeTarget::default();
    let mut src = open_fake(&cfg, -1, &mut target);
    let (flags, b) = src.poll_flags(&[], 4).unwrap();
    assert_eq!((flags, offsets(&b)), (0, vec![0, 1, 2, 5]));
    assert_eq!(b[0].topic, "t", "batches carry the ORIGINAL topic");
    let (flags, b) = src
        .poll_flags(&[ack(0, 0), ack(1, 1), ack(2, 2)], 4)
        .unwrap();
    assert_eq!((flags, offsets(&b)), (0, vec![6, 9]));
    let (flags, b) = src.poll_flags(&[], 4).unwrap();
    assert_eq!((flags, b.len()), (FLAG_WAITING_FOR_ACKS, 0));
    // SIGKILL: 5 and 6 were written (new offsets 3 and 4), their acks never reached the
    // core; Connect committed up to 6.
    drop(src);
    target.write(&[(0, 0), (1, 1), (2, 2), (5, 3), (6, 4)]);
    let mut src = open_fake(&cfg, 6, &mut target);
    let (_, b) = src.poll_flags(&[], 10).unwrap();
    assert_eq!(
        offsets(&b),
        vec![9],
        "5 and 6 were found in the target: not sent again"
    );
    drop(src); // crash again
    let st = PartitionState::load(&cfg.state_dir(), "t", 0)
        .unwrap()
        .unwrap();
    assert_eq!(st.target_topic, "t2");
    assert_eq!(
        st.new_offset_of(5),
        Some(3),
        "group mapped to the copy found"
    );
    assert_eq!(st.new_offset_of(0), Some(0));
    assert_eq!(st.resume_from(), Some(7));
    let status = read_status(&cfg.state_dir()).unwrap();
    assert_eq!(status.connector_name.as_deref(), Some("restore"));
    assert!(!status.finished);
}

#[test]
fn reconcile_without_a_connect_offset_resumes_exactly_after_the_target() {
    // The CLI: no committed offset at all, the state saved nothing past 1, the target holds
    // 0..=6 (the transaction that wrote 2..6 committed before the kill).
    let dir = tempfile::tempdir().unwrap();
    write_backup(dir.path(), &[0, 1, 2, 5, 6, 9]);
    let cfg = engine_cfg(dir.path(), false);
    let mut target = FakeTarget::default();
    let mut src = open_fake(&cfg, -1, &mut target);
    src.poll_flags(&[], 10).unwrap();
    src.poll_flags(&[ack(0, 0), ack(1, 1)], 10).unwrap();
    drop(src);
    target.write(&[(0, 0), (1, 1), (2, 2), (5, 3), (6, 4)]);
    let mut src = open_fake(&cfg, -1, &mut target);
    let (_, b) = src.poll_flags(&[], 10).unwrap();
    assert_eq!(offsets(&b), vec![9]);
    let (flags, _) = src.poll_flags(&[ack(9, 5)], 10).unwrap();
    assert_eq!(flags, FLAG_FINISHED);
}

#[test]
fn defect2_partition_is_not_done_while_earlier_records_are_unacknowledged() {
    let dir = tempfile::tempdir().unwrap();
    write_backup(dir.path(), &[3, 4, 8]);
    let cfg = engine_cfg(dir.path(), false);
    let mut src = open_fake(&cfg, -1, &mut FakeTarget::default());
    src.poll_flags(&[], 10).unwrap();
    // The last record was dropped by a transform: acknowledged at once on the task
    // thread, before the producer callbacks of 3 and 4.
    let (flags, _) = src.poll_flags(&[ack(8, -1)], 10).unwrap();
    assert_eq!(
        flags, FLAG_WAITING_FOR_ACKS,
        "3 and 4 are not acknowledged yet"
    );
    assert!(!src.status().partitions[0].done);
    let (flags, _) = src.poll_flags(&[ack(4, 1)], 10).unwrap();
    assert_eq!(flags, FLAG_WAITING_FOR_ACKS);
    let (flags, _) = src.poll_flags(&[ack(3, 0)], 10).unwrap();
    assert_eq!(flags, FLAG_FINISHED);
    assert_eq!(src.status().partitions[0].new_log_end, 2);
}

#[test]
fn metrics_follow_acknowledgements_to_finished() {
    let dir = tempfile::tempdir().unwrap();
    write_backup(dir.path(), &[3, 4, 8]);
    let cfg = engine_cfg(dir.path(), false);
    let mut src = open_fake(&cfg, -1, &mut FakeTarget::default());
    let (_, batch) = src.poll_flags(&[], 10).unwrap();
    let m = src.metrics();
    assert_eq!((m.partitions, m.partitions_done, m.finished), (1, 0, 0));
    let bytes: u64 = batch.iter().map(|r| record_bytes(&r.record)).sum();
    assert!(bytes > 0 && m.bytes_restored == bytes, "{m:?}");
    assert_eq!(m.partition_metrics[0].remaining_offsets, 9, "{m:?}");
    src.poll_flags(&[ack(3, 0), ack(4, 1)], 10).unwrap();
    let p = &src.metrics().partition_metrics[0];
    assert_eq!(
        (p.records_restored, p.acked_offset, p.last_offset),
        (2, 4, 8)
    );
    assert_eq!(p.remaining_offsets, 4);
    src.poll_flags(&[ack(8, 2)], 10).unwrap();
    let m = src.metrics();
    assert_eq!(
        (m.records_restored, m.partitions_done, m.finished),
        (3, 1, 1)
    );
    assert_eq!(m.partition_metrics[0].remaining_offsets, 0);
}

#[test]
fn defect1_stop_hands_acks_to_the_core_and_restart_is_done() {
    let dir = tempfile::tempdir().unwrap();
    write_backup(dir.path(), &[3, 4, 8]);
    let cfg = engine_cfg(dir.path(), false);
    let mut src = open_fake(&cfg, -1, &mut FakeTarget::default());
    src.poll_flags(&[], 10).unwrap();
    // stop(): the acks still in the Java buffers are handed over before the close.
    src.ack(&[ack(3, 0), ack(4, 1), ack(8, 2)]).unwrap();
    src.close().unwrap();
    let st = PartitionState::load(&cfg.state_dir(), "t", 0)
        .unwrap()
        .unwrap();
    assert!(st.done && st.new_log_end == 3, "{st:?}");
    // And without them (a kill): Connect's committed offset at the last record is enough.
    let dir = tempfile::tempdir().unwrap();
    write_backup(dir.path(), &[3, 4, 8]);
    let cfg = engine_cfg(dir.path(), false);
    let mut src = open_fake(&cfg, -1, &mut FakeTarget::default());
    src.poll_flags(&[], 10).unwrap();
    drop(src);
    let mut src = open_fake(&cfg, 8, &mut FakeTarget::default());
    let (flags, b) = src.poll_flags(&[], 10).unwrap();
    assert_eq!(
        (flags, b.len()),
        (FLAG_FINISHED, 0),
        "done, not waiting for acks"
    );
}

#[test]
fn defect7_not_finished_before_held_topic_configs_are_restored() {
    let dir = tempfile::tempdir().unwrap();
    write_backup(dir.path(), &[3]);
    let cfg = engine_cfg(dir.path(), false);
    // The restore created t2 with retention held off; lifting it needs the cluster, which
    // is unreachable here (a transient error), so the configs stay held and it retries.
    held_t2(&cfg);
    let unreachable = Arc::new(Refusing::new(true, "AllBrokersDown"));
    let mut src = open_fake_on(&cfg, -1, &mut FakeTarget::default(), unreachable);
    src.poll_flags(&[], 10).unwrap();
    let (flags, _) = src.poll_flags(&[ack(3, 0)], 10).unwrap();
    assert_eq!(flags & FLAG_FINISHED, 0, "retention.ms is still held at -1");
    assert!(!src.status().finished);
    assert!(!read_status(&cfg.state_dir()).unwrap().finished);
}

#[test]
fn held_configs_refused_for_good_fail_the_task_naming_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    write_backup(dir.path(), &[3]);
    let cfg = engine_cfg(dir.path(), false);
    held_t2(&cfg);
    let refusing = Arc::new(Refusing::new(
        false,
        "TopicAuthorizationException: ALTER_CONFIGS",
    ));
    let mut src = open_fake_on(&cfg, -1, &mut FakeTarget::default(), refusing);
    src.poll_flags(&[], 10).unwrap();
    let err = src.poll_flags(&[ack(3, 0)], 10).unwrap_err();
    assert!(!err.is_retriable(), "{err}");
    assert!(err.to_string().contains("ALTER_CONFIGS"), "{err}");
    assert!(!src.status().finished);
}

#[test]
fn engine_finishes_once_everything_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    write_backup(dir.path(), &[3, 4, 8]);
    let cfg = engine_cfg(dir.path(), false);
    let mut src = open_fake(&cfg, -1, &mut FakeTarget::default());
    let (_, b) = src.poll_flags(&[], 0).unwrap();
    assert_eq!(
        offsets(&b),
        vec![3, 4, 8],
        "max_records 0 falls back to batch_size"
    );
    let (flags, _) = src.poll_flags(&[ack(3, 0), ack(4, 1)], 10).unwrap();
    assert_eq!(flags, FLAG_WAITING_FOR_ACKS);
    let (flags, b) = src.poll_flags(&[ack(8, 2)], 10).unwrap();
    assert_eq!((flags, b.len()), (FLAG_FINISHED, 0));
    assert!(src.status().finished);
    src.close().unwrap();
    src.close().unwrap();
    assert!(
        src.poll_flags(&[], 1).is_err(),
        "poll after close is refused"
    );
    // A restart after the end sends nothing, even if Connect's offsets lag.
    let mut again = open_fake(&cfg, 4, &mut FakeTarget::default());
    let (flags, b) = again.poll_flags(&[], 10).unwrap();
    assert_eq!((flags, b.len()), (FLAG_FINISHED, 0));
}

#[test]
fn restore_state_is_owner_only_under_a_permissive_umask() {
    use crate::perms::tests::{not_owner_only, with_open_umask};
    with_open_umask(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("b");
        write_backup(&root, &[3, 4]);
        let cfg = engine_cfg(&root, false);
        let mut src = open_fake(&cfg, -1, &mut FakeTarget::default());
        src.poll_flags(&[], 10).unwrap();
        src.poll_flags(&[ack(3, 0), ack(4, 1)], 10).unwrap();
        src.close().unwrap();
        assert!(cfg.state_dir().join("connector.json").exists());
        assert_eq!(not_owner_only(&root), Vec::<String>::new());
    });
}

#[test]
fn a_failed_group_commit_is_tried_again_when_the_restore_is_opened_again() {
    let dir = tempfile::tempdir().unwrap();
    write_backup(dir.path(), &[3, 4]);
    let e = |g: &str| offsets_log::GroupOffsetEntry {
        capture_time_ms: 1,
        group: g.into(),
        committed_offset: 4,
        metadata: String::new(),
    };
    let log = layout::group_offsets_log(dir.path(), &TopicPartition::new("t", 0));
    offsets_log::append(&log, &[e("failed"), e("refused")], crate::perms::OWNER_ONLY).unwrap();
    let cfg = engine_cfg(dir.path(), true);
    open_fake(&cfg, -1, &mut FakeTarget::default())
        .close()
        .unwrap();
    let mut s = PartitionState::load(&cfg.state_dir(), "t", 0)
        .unwrap()
        .unwrap();
    for g in s.groups.iter_mut() {
        g.commit = if g.group == "failed" {
            CommitState::Failed {
                reason: "GroupAuthorizationFailed".into(),
            }
        } else {
            CommitState::Refused {
                offset: 1,
                reason: "members".into(),
            }
        };
    }
    s.save(&cfg.state_dir()).unwrap();
    let again = open_fake(&cfg, -1, &mut FakeTarget::default());
    let commits: BTreeMap<String, CommitState> = again.status().partitions[0]
        .groups
        .iter()
        .map(|g| (g.group.clone(), g.commit.clone()))
        .collect();
    assert_eq!(
        commits["failed"],
        CommitState::Pending,
        "its cause may be fixed"
    );
    assert!(matches!(commits["refused"], CommitState::Refused { .. }));
}
