//! Unit tests of the engine against a fake target log and a refusing cluster.

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
use crate::codec::{FLAG_FINISHED, FLAG_WAITING_FOR_ACKS};
use crate::error::Result;
use crate::kafka::RdKafkaCluster;
use crate::reconcile::{self, TargetLog};
use crate::record::{Ack, BatchRecord};
use crate::record::{TopicPartition, TopicPartitionOffset};
use crate::translate::{NewOffsets, Target};
use crate::{layout, offsets_log};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

pub(super) fn write_backup(root: &Path, offsets: &[i64]) {
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

pub(super) fn engine_cfg(root: &Path, groups: bool) -> SourceConfig {
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
        window: Default::default(),
        storage: Default::default(),
    }
}

pub(super) fn ack(o: i64, n: i64) -> Ack {
    Ack {
        topic: "t".into(),
        partition: 0,
        original_offset: o,
        new_offset: n,
    }
}

pub(super) fn offsets(batch: &[BatchRecord]) -> Vec<i64> {
    batch.iter().map(|b| b.record.offset).collect()
}

/// The target partition t2-0 in memory: copies of `write_backup`'s records.
#[derive(Default)]
pub(super) struct FakeTarget {
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

pub(super) fn open_fake(
    cfg: &SourceConfig,
    committed: i64,
    target: &mut FakeTarget,
) -> RestoreSource {
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
    .save(&cfg.state_place().unwrap())
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
    let plan = plan(
        &crate::reader::Backup::open(root).unwrap(),
        &["t".to_string()],
        &Default::default(),
    )
    .unwrap();
    let targets: BTreeMap<_, _> = plan[0]
        .groups
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
    let st = PartitionState::load(&cfg.state_place().unwrap(), "t", 0)
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
    let status = read_status(&cfg.state_place().unwrap()).unwrap();
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
    let bytes: u64 = batch.iter().map(|r| r.record.payload_bytes()).sum();
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
    let st = PartitionState::load(&cfg.state_place().unwrap(), "t", 0)
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
    assert!(!read_status(&cfg.state_place().unwrap()).unwrap().finished);
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
fn poll_bounded_stops_at_the_byte_bound_but_hands_out_at_least_one_record() {
    let dir = tempfile::tempdir().unwrap();
    write_backup(dir.path(), &[3, 4, 8]); // one key byte each
    let cfg = engine_cfg(dir.path(), false);
    let mut src = open_fake(&cfg, -1, &mut FakeTarget::default());
    let batch = |p: Polled| match p {
        Polled::Records(r) => offsets(&r),
        other => panic!("expected records, got {other:?}"),
    };
    assert_eq!(batch(src.poll_bounded(&[], 10, 0).unwrap()), vec![3]);
    assert_eq!(batch(src.poll_bounded(&[], 10, 2).unwrap()), vec![4, 8]);
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
    let mut s = PartitionState::load(&cfg.state_place().unwrap(), "t", 0)
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
    s.save(&cfg.state_place().unwrap()).unwrap();
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
