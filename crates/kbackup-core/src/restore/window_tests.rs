//! The point-in-time rules of the engine and the plan: window membership by each record's own
//! timestamp, the time-index seek, and where groups land (docs/restore.md, "Point-in-time
//! restore").

use super::engine_tests::{ack, engine_cfg, offsets, open_fake, FakeTarget};
use super::state::*;
use super::window::{self, PartitionWindow, RestoreWindow};
use super::*;
use crate::record::{BatchRecord, Record, TimestampType, TopicPartition};
use crate::sink::{BackupSink, SinkConfig};
use crate::translate::Target;
use crate::{layout, offsets_log};
use std::collections::BTreeMap;
use std::path::Path;

/// Backs up `t-0` with records `(offset, timestamp)`, in small segments with a sparse index so
/// the time index is really used.
fn write_timed(root: &Path, recs: &[(i64, i64)], segment_bytes: u64) {
    let mut cfg = SinkConfig::new(root);
    cfg.max_segment_size_bytes = segment_bytes;
    cfg.index_interval_bytes = 256;
    let mut sink = BackupSink::open(cfg).unwrap();
    sink.open_partitions(&[TopicPartition::new("t", 0)])
        .unwrap();
    for chunk in recs.chunks(7) {
        let batch: Vec<BatchRecord> = chunk
            .iter()
            .map(|&(o, ts)| BatchRecord {
                topic: "t".into(),
                partition: 0,
                record: Record {
                    offset: o,
                    timestamp: ts,
                    timestamp_type: TimestampType::CreateTime,
                    key: Some(o.to_be_bytes().to_vec()),
                    value: Some(vec![b'v'; 40]),
                    headers: vec![],
                },
            })
            .collect();
        sink.put(&batch).unwrap();
        sink.flush().unwrap();
    }
    sink.close().unwrap();
}

/// Timestamps rising by 10 ms per offset with every 5th record 500 ms late (out of order).
fn jittery(n: i64) -> Vec<(i64, i64)> {
    (0..n)
        .map(|o| (o, 10_000 + o * 10 - if o % 5 == 3 { 500 } else { 0 }))
        .collect()
}

fn entry(g: &str, at: i64, o: i64) -> offsets_log::GroupOffsetEntry {
    offsets_log::GroupOffsetEntry {
        capture_time_ms: at,
        group: g.into(),
        committed_offset: o,
        metadata: String::new(),
    }
}

#[test]
fn time_seek_finds_the_first_record_at_or_after_a_time_like_a_full_scan() {
    let dir = tempfile::tempdir().unwrap();
    let recs = jittery(400);
    write_timed(dir.path(), &recs, 4096);
    let backup = crate::reader::Backup::open(dir.path()).unwrap();
    let mut r = backup.partition("t", 0).unwrap();
    assert!(r.segments().len() >= 5, "several segments");
    for ts in (9_000..14_500).step_by(37) {
        for min in [0, 3, 150] {
            let want = recs
                .iter()
                .find(|(o, t)| *o >= min && *t >= ts)
                .map(|x| x.0);
            assert_eq!(r.seek_time(ts, min).unwrap(), want, "ts {ts} min {min}");
            let next = r.next_record().unwrap().map(|x| x.offset);
            assert_eq!(next, want, "the reader is left at that record");
        }
    }
}

#[test]
fn a_window_holds_exactly_the_records_whose_own_timestamp_is_inside() {
    let dir = tempfile::tempdir().unwrap();
    let recs = jittery(200);
    write_timed(dir.path(), &recs, 4096);
    let backup = crate::reader::Backup::open(dir.path()).unwrap();
    let mut r = backup.partition("t", 0).unwrap();
    for (from, to) in [
        (10_500, 11_000),
        (i64::MIN, 10_995),
        (11_980, i64::MAX),
        (5, 6),
    ] {
        let w = PartitionWindow {
            from_time: from,
            to_time: to,
            ..PartitionWindow::ALL
        };
        let want: Vec<i64> = recs
            .iter()
            .filter(|(_, t)| (from..=to).contains(t))
            .map(|x| x.0)
            .collect();
        let span = window::span(&mut r, &w).unwrap();
        assert_eq!(span.records, want.len() as u64);
        assert_eq!(
            (span.first, span.last),
            (want.first().copied(), want.last().copied())
        );
        window::seek_start(&mut r, &w).unwrap();
        let mut got = Vec::new();
        while let Some(rec) = window::next_in_window(&mut r, &w).unwrap() {
            got.push(rec.offset);
        }
        assert_eq!(got, want, "window {from}..={to}");
    }
    // Out-of-order CreateTime: a late record after the window's first one is left out, one
    // after the window's last in-order record but stamped inside it is kept.
    let w = PartitionWindow {
        from_time: 10_500,
        to_time: 11_000,
        ..PartitionWindow::ALL
    };
    let s = window::span(&mut r, &w).unwrap();
    assert_eq!(s.first, Some(50));
    assert_eq!(s.last, Some(148), "148 is stamped 10_980: late, but inside");
}

#[test]
fn the_time_seek_does_not_read_the_backup_before_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let recs = jittery(400);
    write_timed(dir.path(), &recs, 4096);
    let backup = crate::reader::Backup::open(dir.path()).unwrap();
    let seg0 = backup.partition("t", 0).unwrap().segments()[1].1.clone();
    // Damage a record in the middle of an early segment: a scan from the start would hit it.
    let mut data = std::fs::read(&seg0).unwrap();
    let mid = data.len() / 3;
    data[mid] ^= 0xff;
    std::fs::write(&seg0, &data).unwrap();
    let mut r = backup.partition("t", 0).unwrap();
    let w = PartitionWindow {
        from_time: 13_000,
        ..PartitionWindow::ALL
    };
    let span = window::span(&mut r, &w).unwrap();
    assert_eq!(span.first, Some(300));
    let whole = window::span(&mut r, &PartitionWindow::ALL);
    assert!(
        matches!(whole, Err(crate::Error::Corrupt { .. })),
        "a full scan does see the damage: {whole:?}"
    );
}

#[test]
fn groups_land_on_the_first_restored_record_at_or_after_their_position_as_of_the_window_end() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let recs = jittery(100); // 0..100, stamps 10_000.. (+10/offset), every 5th late
    write_timed(root, &recs, 1 << 20);
    let log = layout::group_offsets_log(root, &TopicPartition::new("t", 0));
    offsets_log::append(
        &log,
        &[
            entry("before", 10_100, 5),
            entry("inside", 10_200, 40),
            entry("inside", 10_700, 60),
            entry("at-late", 10_700, 43),
            entry("past", 10_700, 90),
            entry("inside", 10_801, 79), // captured after the window end: never used
            entry("late-only", 10_900, 50),
            entry("none", 10_000, -1),
        ],
        crate::perms::OWNER_ONLY,
    )
    .unwrap();
    let window = RestoreWindow {
        from_time_ms: Some(10_300),
        to_time_ms: Some(10_800),
        ..Default::default()
    };
    let planned = plan(
        &crate::reader::Backup::open(root).unwrap(),
        &["t".to_string()],
        &window,
    )
    .unwrap();
    let p = &planned[0];
    // In the window: offsets 30..=80 by their own stamps, minus the late ones below 10_300
    // (33 at 9_830, 38 at 9_880, ..., 78 at 10_280), plus late ones stamped inside (83..=98
    // step 5 at 10_330..10_480).
    let want: Vec<i64> = recs
        .iter()
        .filter(|(_, t)| (10_300..=10_800).contains(t))
        .map(|x| x.0)
        .collect();
    assert_eq!(p.span.records, want.len() as u64);
    assert_eq!(p.span.first, Some(30));
    assert_eq!(p.span.last, Some(98));
    let t: BTreeMap<_, _> = p
        .groups
        .iter()
        .map(|g| (g.group.as_str(), (g.target, g.backed_up_offset)))
        .collect();
    assert_eq!(
        t["before"],
        (Target::Record(30), 5),
        "before the window: its first record"
    );
    assert_eq!(
        t["inside"],
        (Target::Record(60), 60),
        "last capture at or before the end"
    );
    assert_eq!(
        t["at-late"],
        (Target::Record(44), 43),
        "43 is late (out of the window): next restored"
    );
    // 90 is past the last in-order record of the window but 93 and 98 are stamped inside it.
    assert_eq!(t["past"], (Target::Record(93), 90));
    assert!(!t.contains_key("none"));
    assert_eq!(p.groups_not_captured, vec!["late-only".to_string()]);

    // Past the window: a group at 99 resumes at the end.
    let w2 = RestoreWindow {
        to_offsets: window::parse_offsets("k", "t=70").unwrap(),
        ..Default::default()
    };
    let plan2 = plan(
        &crate::reader::Backup::open(root).unwrap(),
        &["t".to_string()],
        &w2,
    )
    .unwrap();
    let t: BTreeMap<_, _> = plan2[0]
        .groups
        .iter()
        .map(|g| (g.group.as_str(), g.target))
        .collect();
    assert_eq!(
        t["past"],
        Target::LogEnd,
        "90 > 70: the end of the restored partition"
    );
    assert_eq!(
        t["inside"],
        Target::LogEnd,
        "no end time: the latest capture (79) is past 70"
    );
    assert_eq!(
        t["at-late"],
        Target::Record(43),
        "no time bound: 43 is in this window"
    );
}

#[test]
fn the_engine_restores_only_the_window_and_maps_groups_into_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let recs = jittery(100);
    write_timed(root, &recs, 2048);
    let log = layout::group_offsets_log(root, &TopicPartition::new("t", 0));
    offsets_log::append(
        &log,
        &[
            entry("before", 10_100, 5),
            entry("inside", 10_700, 60),
            entry("past", 10_700, 99),
        ],
        crate::perms::OWNER_ONLY,
    )
    .unwrap();
    let mut cfg = engine_cfg(root, true);
    cfg.window = RestoreWindow {
        from_time_ms: Some(10_300),
        to_time_ms: Some(10_800),
        ..Default::default()
    };
    assert!(validate(&cfg)
        .iter()
        .all(|(k, _)| k == "cluster.bootstrap.servers"));
    let want: Vec<i64> = recs
        .iter()
        .filter(|(_, t)| (10_300..=10_800).contains(t))
        .map(|x| x.0)
        .collect();
    let mut target = FakeTarget::default();
    let mut src = open_fake(&cfg, -1, &mut target);
    let st = PartitionState::load(&cfg.state_place().unwrap(), "t", 0)
        .unwrap()
        .unwrap();
    assert_eq!(st.window_records, Some(want.len() as u64));
    assert_eq!((st.first_offset, st.last_offset), (Some(30), Some(98)));
    assert_eq!(
        st.resume_from(),
        Some(30),
        "reading starts at the window, not at offset 0"
    );
    let b = src.poll(&[], 1000).unwrap().into_records();
    assert_eq!(offsets(&b), want, "exactly the window, in original order");
    // Acknowledge, new offsets 0.. in order; a crash halfway then a resume sends the rest only.
    let acks: Vec<_> = want
        .iter()
        .enumerate()
        .map(|(n, &o)| ack(o, n as i64))
        .collect();
    let half = acks.len() / 2;
    src.ack(&acks[..half]).unwrap();
    drop(src);
    let mut src = open_fake(&cfg, -1, &mut target);
    let b = src.poll(&[], 1000).unwrap().into_records();
    assert_eq!(
        offsets(&b),
        want[half..].to_vec(),
        "resumed inside the window"
    );
    src.ack(&acks[half..]).unwrap();
    let st = PartitionState::load(&cfg.state_place().unwrap(), "t", 0)
        .unwrap()
        .unwrap();
    assert!(
        st.done,
        "done at the window's last record, not the partition's"
    );
    let new_of = |g: &str| {
        let g = st.groups.iter().find(|x| x.group == g).unwrap();
        match st.effective_target(g) {
            Target::Record(_) => g.mapped_new,
            Target::LogEnd => Some(st.new_log_end),
        }
    };
    assert_eq!(
        new_of("before"),
        Some(0),
        "before the window: the first restored record"
    );
    let at60 = want.iter().position(|&o| o == 60).unwrap() as i64;
    assert_eq!(new_of("inside"), Some(at60));
    assert_eq!(
        new_of("past"),
        Some(want.len() as i64),
        "past the window: the end"
    );

    // Another window on the same state directory is refused, naming the fix.
    let mut other = cfg.clone();
    other.window.to_time_ms = Some(10_900);
    let err = RestoreSource::open_with(
        other.clone(),
        &[crate::record::TopicPartitionOffset::new("t", 0, -1)],
        std::sync::Arc::new(crate::kafka::RdKafkaCluster::new(&other.cluster)),
        &mut target,
        true,
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(
        err.contains("restore.state.dir") && err.contains("window"),
        "{err}"
    );
}

#[test]
fn offset_windows_are_inclusive_per_partition() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_timed(root, &jittery(50), 1 << 20);
    let mut cfg = engine_cfg(root, false);
    cfg.window = RestoreWindow {
        from_offsets: window::parse_offsets("k", "t:0=10").unwrap(),
        to_offsets: window::parse_offsets("k", "t=20").unwrap(),
        ..Default::default()
    };
    let mut target = FakeTarget::default();
    let mut src = open_fake(&cfg, -1, &mut target);
    let b = src.poll(&[], 1000).unwrap().into_records();
    assert_eq!(offsets(&b), (10..=20).collect::<Vec<_>>());
}

/// Figures for docs/reliability.md ("Point-in-time restore"): how long finding a window's start takes with the time
/// index against reading the partition. `cargo test --release -p kbackup-core --lib
/// measure_time_seek -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_time_seek() {
    let dir = tempfile::tempdir().unwrap();
    let n: i64 = 400_000;
    let mut cfg = SinkConfig::new(dir.path());
    cfg.max_segment_size_bytes = 8 << 20;
    let mut sink = BackupSink::open(cfg).unwrap();
    sink.open_partitions(&[TopicPartition::new("t", 0)])
        .unwrap();
    let recs = jittery(n);
    for chunk in recs.chunks(10_000) {
        let batch: Vec<BatchRecord> = chunk
            .iter()
            .map(|&(o, ts)| BatchRecord {
                topic: "t".into(),
                partition: 0,
                record: Record {
                    offset: o,
                    timestamp: ts,
                    timestamp_type: TimestampType::CreateTime,
                    key: Some(o.to_be_bytes().to_vec()),
                    value: Some(vec![b'v'; 200]),
                    headers: vec![],
                },
            })
            .collect();
        sink.put(&batch).unwrap();
    }
    sink.flush().unwrap();
    sink.close().unwrap();
    let backup = crate::reader::Backup::open(dir.path()).unwrap();
    let mut r = backup.partition("t", 0).unwrap();
    let segs = r.segments().len();
    let target = recs[(n * 9 / 10) as usize].1;
    let t = std::time::Instant::now();
    let found = r.seek_time(target, 0).unwrap();
    let seek = t.elapsed();
    let t = std::time::Instant::now();
    let mut scanned = None;
    r.seek(0).unwrap();
    while let Some((o, ts)) = r.next_offset_timestamp().unwrap() {
        if ts >= target {
            scanned = Some(o);
            break;
        }
    }
    let scan = t.elapsed();
    assert_eq!(found, scanned);
    println!(
        "{n} records of 200 B in {segs} segments; start at 90%: time index {seek:?}, scan \
         {scan:?}, found offset {found:?}"
    );
}
