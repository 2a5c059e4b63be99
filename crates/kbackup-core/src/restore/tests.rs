//! Unit tests of the state files, translation targets and validation.

use super::engine::*;
use super::state::*;
use super::*;

use crate::translate::{self, NewOffsets, Target};
use std::collections::BTreeMap;

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
    s.save(&place(&dir)).unwrap();
    // Acks after the save are lost with the process.
    s.advance(24, 4);
    let mut back = PartitionState::load(&place(&dir), "orders", 2)
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
    back.save(&place(&dir)).unwrap();
    let status = read_status(&place(&dir)).unwrap();
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
    s.save(&place(&dir)).unwrap();
    claim_state_dir(&place(&dir), "restore / ü").unwrap();
    let st = read_status(&place(&dir)).unwrap();
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
    let p = dir.path().join("partitions/t/0.json");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, b"{not json").unwrap();
    let m = PartitionState::load(&place(&dir), "t", 0)
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
    let place = cfg.state_place().unwrap();
    claim_state_dir(&place, &cfg.connector_name).unwrap();
    claim_state_dir(&place, &cfg.connector_name).unwrap();
    assert!(sd.join("connector.json").is_file());
    let err = claim_state_dir(&place, "other").unwrap_err().to_string();
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
        window: Default::default(),
        storage: Default::default(),
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

#[test]
fn a_state_place_that_cannot_be_written_is_a_problem_of_restore_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SourceConfig::from_json(
        format!(r#"{{"connector_name":"r","task_id":"r-0","source_dir":{:?},"topics":["t"],"cluster":{{"bootstrap.servers":"b:9092"}}}}"#, dir.path()).as_bytes(),
    )
    .unwrap();
    let state_problems = |cfg: &SourceConfig| -> Vec<String> {
        validate(cfg)
            .into_iter()
            .filter(|(k, _)| k == "restore.state.dir")
            .map(|(_, m)| m)
            .collect()
    };
    assert!(
        state_problems(&cfg).is_empty(),
        "a directory is checked at start"
    );
    cfg.restore_state_dir = Some("ftp://host/state".into());
    let p = state_problems(&cfg);
    assert!(
        p.len() == 1 && p[0].contains("ftp://host/state") && p[0].contains("s3://"),
        "{p:?}"
    );
    // a bucket that does not answer: named, with the fix
    cfg.restore_state_dir = Some("s3://bucket/state".into());
    let props: BTreeMap<String, String> = [
        ("storage.endpoint", "http://127.0.0.1:9"),
        ("storage.allow.http", "true"),
        ("storage.region", "us-east-1"),
        ("storage.access.key.id", "k"),
        ("storage.secret.access.key", "s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    cfg.storage = crate::storage::StorageSettings::from_props(&props);
    let p = state_problems(&cfg);
    assert!(
        p.len() == 1 && p[0].contains("s3://bucket/state") && p[0].contains("writable"),
        "{p:?}"
    );
}

fn place(dir: &tempfile::TempDir) -> StatePlace {
    StatePlace::open(dir.path(), &Default::default()).unwrap()
}
