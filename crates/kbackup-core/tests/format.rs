//! Format tests through the public API: the sink writes, the readers read, damage is found.

mod common;

use kbackup_core::codec::encode_batch;
use kbackup_core::index;
use kbackup_core::layout;
use kbackup_core::reader::Backup;
use kbackup_core::record::BatchRecord;
use kbackup_core::record::{Header, Record, TimestampType, TopicPartition, TopicPartitionOffset};
use kbackup_core::sink::{BackupSink, SinkConfig};
use kbackup_core::verify::Severity;
use kbackup_core::Error;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

fn rec(offset: i64) -> Record {
    common::record(offset, 100)
}

fn batch(topic: &str, partition: i32, offsets: impl IntoIterator<Item = i64>) -> Vec<BatchRecord> {
    offsets
        .into_iter()
        .map(|o| BatchRecord {
            topic: topic.into(),
            partition,
            record: rec(o),
        })
        .collect()
}

/// Records exercising every field kind: nulls, empties, binary, duplicate and null headers.
fn odd_records() -> Vec<Record> {
    vec![
        Record {
            offset: 0,
            timestamp: -1,
            timestamp_type: TimestampType::NoTimestamp,
            key: None,
            value: None,
            headers: vec![],
        },
        Record {
            offset: 1,
            timestamp: 5,
            timestamp_type: TimestampType::CreateTime,
            key: Some(vec![]),
            value: Some(vec![]),
            headers: vec![
                Header {
                    key: "dup".into(),
                    value: Some(b"a".to_vec()),
                },
                Header {
                    key: "dup".into(),
                    value: None,
                },
                Header {
                    key: "dup".into(),
                    value: Some(vec![]),
                },
                Header {
                    key: "".into(),
                    value: Some(vec![0, 255, 128]),
                },
            ],
        },
        Record {
            offset: 7, // gap: compaction or transaction markers
            timestamp: 1_700_000_000_123,
            timestamp_type: TimestampType::LogAppendTime,
            key: Some((0..=255u8).collect()),
            value: Some(vec![0xAB; 1 << 20]),
            headers: vec![],
        },
    ]
}

fn config(dir: &Path) -> SinkConfig {
    let mut c = SinkConfig::new(dir);
    c.index_interval_bytes = 256;
    c
}

fn read_all(root: &Path, topic: &str, partition: i32) -> Vec<Record> {
    let b = Backup::open(root).unwrap();
    let mut r = b.partition(topic, partition).unwrap();
    let mut out = vec![];
    while let Some(rec) = r.next_record().unwrap() {
        out.push(rec);
    }
    out
}

fn segments(root: &Path, topic: &str, p: i32) -> Vec<PathBuf> {
    let dir = layout::partition_dir(root, &TopicPartition::new(topic, p)).unwrap();
    layout::list_segments(&dir)
        .unwrap()
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

#[test]
fn every_field_kind_round_trips_through_put_and_put_encoded() {
    let d = tempfile::tempdir().unwrap();
    let mut sink = BackupSink::open(config(d.path())).unwrap();
    let recs = odd_records();
    let owned: Vec<BatchRecord> = recs
        .iter()
        .map(|r| BatchRecord {
            topic: "a".into(),
            partition: 0,
            record: r.clone(),
        })
        .collect();
    sink.put(&owned).unwrap();
    let mut other = owned.clone();
    for r in &mut other {
        r.topic = "b".into();
        r.partition = 2;
    }
    sink.put_encoded(&encode_batch(0, &other)).unwrap();
    let durable = sink.flush().unwrap();
    assert_eq!(
        durable,
        vec![
            TopicPartitionOffset::new("a", 0, 8),
            TopicPartitionOffset::new("b", 2, 8)
        ]
    );
    sink.close().unwrap();
    assert_eq!(read_all(d.path(), "a", 0), recs);
    assert_eq!(read_all(d.path(), "b", 2), recs);

    let b = Backup::open(d.path()).unwrap();
    assert_eq!(b.topics().unwrap(), vec!["a", "b"]);
    assert_eq!(b.partitions("b").unwrap(), vec![2]);
    // No cluster configured: the manifest guesses the partition count from what it saw.
    let m = b.manifest("b").unwrap().unwrap();
    assert_eq!((m.partitions, m.described), (3, false));
    let s = b.summary().unwrap();
    assert_eq!(s.records, 6);
    let p = &s.topics[0].partitions[0];
    assert_eq!(
        (p.first_offset, p.last_offset, p.records, p.segments),
        (Some(0), Some(7), 3, 1)
    );
    let v = b.verify().unwrap();
    assert!(v.ok && v.problems.is_empty(), "{:?}", v.problems);
}

#[test]
fn redelivered_records_are_skipped_and_resume_offsets_come_from_the_files() {
    let d = tempfile::tempdir().unwrap();
    let mut sink = BackupSink::open(config(d.path())).unwrap();
    let tps = [TopicPartition::new("t", 0), TopicPartition::new("t", 1)];
    assert_eq!(
        sink.open_partitions(&tps).unwrap(),
        vec![
            TopicPartitionOffset::new("t", 0, -1),
            TopicPartitionOffset::new("t", 1, -1)
        ]
    );
    sink.put(&batch("t", 0, 0..10)).unwrap();
    sink.put(&batch("t", 0, 5..15)).unwrap(); // overlap: 5..10 re-delivered
    sink.put(&batch("t", 0, 0..3)).unwrap(); // pure re-delivery
    assert_eq!(
        sink.flush().unwrap(),
        vec![TopicPartitionOffset::new("t", 0, 15)]
    );
    sink.close().unwrap();
    sink.close().unwrap(); // idempotent
    assert!(matches!(
        sink.put(&batch("t", 0, 20..21)),
        Err(Error::State(_))
    ));

    let got: Vec<i64> = read_all(d.path(), "t", 0)
        .iter()
        .map(|r| r.offset)
        .collect();
    assert_eq!(got, (0..15).collect::<Vec<_>>());

    let mut sink = BackupSink::open(config(d.path())).unwrap();
    assert_eq!(
        sink.open_partitions(&tps).unwrap(),
        vec![
            TopicPartitionOffset::new("t", 0, 15),
            TopicPartitionOffset::new("t", 1, -1)
        ]
    );
    sink.put(&batch("t", 0, 10..20)).unwrap();
    sink.close().unwrap();
    let got: Vec<i64> = read_all(d.path(), "t", 0)
        .iter()
        .map(|r| r.offset)
        .collect();
    assert_eq!(got, (0..20).collect::<Vec<_>>());
}

#[test]
fn segments_roll_by_size_and_chain_is_verified() {
    let d = tempfile::tempdir().unwrap();
    let mut c = config(d.path());
    c.max_segment_size_bytes = 2000;
    let mut sink = BackupSink::open(c).unwrap();
    sink.put(&batch("t", 0, (0..100).map(|i| i * 3))).unwrap();
    sink.close().unwrap();
    let segs = segments(d.path(), "t", 0);
    assert!(segs.len() > 5, "{}", segs.len());
    for s in &segs {
        assert!(std::fs::metadata(s).unwrap().len() <= 2000);
    }
    let got: Vec<i64> = read_all(d.path(), "t", 0)
        .iter()
        .map(|r| r.offset)
        .collect();
    assert_eq!(got, (0..100).map(|i| i * 3).collect::<Vec<_>>());
    assert!(Backup::open(d.path()).unwrap().verify().unwrap().ok);

    // A segment missing from the middle of the chain is found.
    std::fs::remove_file(&segs[2]).unwrap();
    let v = Backup::open(d.path()).unwrap().verify().unwrap();
    assert!(!v.ok);
    assert!(
        v.problems.iter().any(|p| p.severity == Severity::Error
            && p.file == segs[3]
            && p.message.contains("missing")),
        "{:?}",
        v.problems
    );
}

#[test]
fn segments_roll_by_age_with_an_injected_clock() {
    let d = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(1_000_000));
    let clock = {
        let now = now.clone();
        Arc::new(move || now.load(Ordering::SeqCst))
    };
    let mut c = config(d.path());
    c.max_segment_age_ms = 60_000;
    let mut sink = BackupSink::open_with_clock(c, clock).unwrap();
    sink.put(&batch("t", 0, 0..5)).unwrap();
    now.fetch_add(59_999, Ordering::SeqCst);
    sink.put(&batch("t", 0, 5..10)).unwrap();
    assert_eq!(segments(d.path(), "t", 0).len(), 1);
    now.fetch_add(1, Ordering::SeqCst);
    sink.put(&batch("t", 0, 10..12)).unwrap();
    sink.close().unwrap();
    let segs = segments(d.path(), "t", 0);
    assert_eq!(segs.len(), 2);
    assert!(
        segs[1].ends_with("00000000000000000010.segment"),
        "{segs:?}"
    );
}

#[test]
fn torn_tail_is_hidden_by_the_reader_warned_by_verify_and_repaired_by_the_sink() {
    let d = tempfile::tempdir().unwrap();
    let mut sink = BackupSink::open(config(d.path())).unwrap();
    sink.put(&batch("t", 0, 0..10)).unwrap();
    sink.close().unwrap();
    let seg = segments(d.path(), "t", 0).pop().unwrap();
    let good_len = std::fs::metadata(&seg).unwrap().len();
    // Simulate a crash mid-append: half of an 11th record.
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[0, 0, 0, 200, 1, 2, 3, 4, 5, 6, 7]);
    std::fs::write(&seg, &bytes).unwrap();

    assert_eq!(read_all(d.path(), "t", 0).len(), 10);
    let v = Backup::open(d.path()).unwrap().verify().unwrap();
    assert!(v.ok, "{:?}", v.problems);
    let torn = v
        .problems
        .iter()
        .find(|p| p.file == seg && p.position == Some(good_len))
        .expect("torn tail reported");
    assert_eq!(torn.severity, Severity::Warning);

    let mut sink = BackupSink::open(config(d.path())).unwrap();
    let resume = sink
        .open_partitions(&[TopicPartition::new("t", 0)])
        .unwrap();
    assert_eq!(resume[0].offset, 10);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), good_len);
    sink.put(&batch("t", 0, 10..12)).unwrap();
    sink.close().unwrap();
    assert_eq!(read_all(d.path(), "t", 0).len(), 12);
    let v = Backup::open(d.path()).unwrap().verify().unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
}

#[test]
fn segment_with_only_a_header_is_removed_on_reopen() {
    let d = tempfile::tempdir().unwrap();
    let mut sink = BackupSink::open(config(d.path())).unwrap();
    sink.put(&batch("t", 0, 0..3)).unwrap();
    sink.close().unwrap();
    let seg = segments(d.path(), "t", 0).pop().unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    // A crash right after creating segment 3: a partial header only.
    let dir = seg.parent().unwrap();
    let next = layout::segment_path(dir, 3);
    std::fs::write(&next, &bytes[..10]).unwrap();
    assert_eq!(read_all(d.path(), "t", 0).len(), 3);
    let mut sink = BackupSink::open(config(d.path())).unwrap();
    let resume = sink
        .open_partitions(&[TopicPartition::new("t", 0)])
        .unwrap();
    assert_eq!(resume[0].offset, 3);
    assert!(!next.exists());
    sink.put(&batch("t", 0, 3..5)).unwrap();
    sink.close().unwrap();
    assert_eq!(read_all(d.path(), "t", 0).len(), 5);
}

#[test]
fn crc_mismatch_in_the_middle_is_an_error_with_file_and_position() {
    let d = tempfile::tempdir().unwrap();
    let mut sink = BackupSink::open(config(d.path())).unwrap();
    sink.put(&batch("t", 0, 0..10)).unwrap();
    sink.close().unwrap();
    let seg = segments(d.path(), "t", 0).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();

    let b = Backup::open(d.path()).unwrap();
    let mut r = b.partition("t", 0).unwrap();
    let err = loop {
        match r.next_record() {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("corruption was skipped silently"),
            Err(e) => break e,
        }
    };
    match err {
        Error::Corrupt { path, position, .. } => {
            assert_eq!(path, seg);
            assert!(position <= mid as u64 && position > 0);
        }
        e => panic!("{e}"),
    }
    let v = b.verify().unwrap();
    assert!(!v.ok);
    assert!(v
        .problems
        .iter()
        .any(|p| p.file == seg && p.position.is_some() && p.severity == Severity::Error));
    // The sink refuses to append behind damage instead of hiding it.
    let mut sink = BackupSink::open(config(d.path())).unwrap();
    assert!(matches!(
        sink.open_partitions(&[TopicPartition::new("t", 0)]),
        Err(Error::Corrupt { .. })
    ));
}

#[test]
fn index_rebuild_equals_the_written_index_and_stale_indexes_are_found() {
    let d = tempfile::tempdir().unwrap();
    let mut sink = BackupSink::open(config(d.path())).unwrap();
    sink.put(&batch("t", 0, (0..200).map(|i| i * 2))).unwrap();
    sink.close().unwrap();
    let seg = segments(d.path(), "t", 0).pop().unwrap();
    let oi = layout::offset_index_path(&seg);
    let ti = layout::time_index_path(&seg);
    let written = (std::fs::read(&oi).unwrap(), std::fs::read(&ti).unwrap());
    assert!(written.0.len() > index::INDEX_HEADER_LEN + 10 * index::INDEX_ENTRY_LEN);
    std::fs::remove_file(&oi).unwrap();
    std::fs::write(&ti, b"junk").unwrap();
    kbackup_core::verify::rebuild_index(&seg).unwrap();
    assert_eq!(
        (std::fs::read(&oi).unwrap(), std::fs::read(&ti).unwrap()),
        written
    );

    // A stale entry: verify flags it, seek still finds the right record, reindex fixes it.
    let mut stale = written.0.clone();
    let at = index::INDEX_HEADER_LEN + 3 * index::INDEX_ENTRY_LEN + 8;
    stale[at + 7] = stale[at + 7].wrapping_add(8);
    std::fs::write(&oi, &stale).unwrap();
    let b = Backup::open(d.path()).unwrap();
    assert!(!b.verify().unwrap().ok);
    let mut r = b.partition("t", 0).unwrap();
    for target in [0, 1, 77, 150, 398] {
        r.seek(target).unwrap();
        let got = r.next_record().unwrap().unwrap().offset;
        assert_eq!(got, target + (target % 2), "seek {target}");
    }
    let rep = b.reindex().unwrap();
    assert_eq!((rep.segments, rep.rebuilt), (1, 1));
    assert_eq!(std::fs::read(&oi).unwrap(), written.0);
    assert!(b.verify().unwrap().ok);
}

#[test]
fn seek_lands_on_first_record_at_or_after_target_across_segments() {
    let d = tempfile::tempdir().unwrap();
    let mut c = config(d.path());
    c.max_segment_size_bytes = 1500;
    let mut sink = BackupSink::open(c).unwrap();
    let offsets: Vec<i64> = (0..120).map(|i| 10 + i * 5).collect();
    sink.put(&batch("t", 0, offsets.clone())).unwrap();
    sink.close().unwrap();
    let b = Backup::open(d.path()).unwrap();
    let mut r = b.partition("t", 0).unwrap();
    assert!(r.segments().len() > 3);
    assert_eq!(r.first_offset().unwrap(), Some(10));
    assert_eq!(r.last_offset().unwrap(), Some(*offsets.last().unwrap()));
    assert_eq!(r.record_count().unwrap(), 120);
    for target in [-5, 0, 10, 11, 14, 15, 200, 333, 604, 605] {
        r.seek(target).unwrap();
        let want = offsets.iter().copied().find(|&o| o >= target);
        let got = r.next_record().unwrap().map(|x| x.offset);
        assert_eq!(got, want, "seek {target}");
        if let Some(w) = want {
            // Reading continues in order after a seek.
            let next = r.next_record().unwrap().map(|x| x.offset);
            assert_eq!(next, offsets.iter().copied().find(|&o| o > w));
        }
    }
    r.seek(10_000).unwrap();
    assert_eq!(r.next_record().unwrap(), None);
}

#[test]
fn wrong_directories_and_names_are_refused_clearly() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("notes.txt"), b"x").unwrap();
    let e = Backup::open(d.path()).unwrap_err().to_string();
    assert!(e.contains("not a kbackup backup"), "{e}");
    let e = BackupSink::open(SinkConfig::new(d.path()))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not empty"), "{e}");

    let d = tempfile::tempdir().unwrap();
    let mut sink = BackupSink::open(SinkConfig::new(d.path())).unwrap();
    let e = sink.put(&batch("../evil", 0, 0..1)).unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e}");
    assert!(sink.put(&batch("t", -1, 0..1)).is_err());
    assert!(!d.path().join("evil").exists());
    sink.close().unwrap();

    let b = Backup::open(d.path()).unwrap();
    assert!(matches!(b.partition("nope", 0), Err(Error::NotFound(_))));
}

#[test]
fn sink_config_json_of_jni_md_parses_with_defaults() {
    let c = SinkConfig::from_json(
        br#"{"target_dir": "/b", "cluster": {"bootstrap.servers": "h:9092"}}"#,
    )
    .unwrap();
    assert_eq!(c.max_segment_size_bytes, 1 << 30);
    assert_eq!(c.index_interval_bytes, 4096);
    assert_eq!(c.cluster["bootstrap.servers"], "h:9092");
    let full = br#"{"connector_name": "n", "task_id": "n-0", "target_dir": "/backups/x",
 "max_segment_size_bytes": 1073741824, "max_segment_age_ms": 3600000,
 "index_interval_bytes": 4096,
 "cluster": {"bootstrap.servers": "a", "security.protocol": "SSL"},
 "consumer_group_id": "connect-n",
 "offsets_sync_interval_ms": 5000, "groups_include": ".*", "groups_exclude": null}"#;
    let c = SinkConfig::from_json(full).unwrap();
    assert_eq!(c.task_id, "n-0");
    assert_eq!(c.groups_exclude, None);
    assert!(matches!(
        SinkConfig::from_json(b"{}"),
        Err(Error::Config(_))
    ));
}

#[cfg(unix)]
#[test]
fn unwritable_target_dir_fails_at_open_with_the_path() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let ro = d.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    // root ignores permissions; only assert when the directory really is read-only.
    if std::fs::write(ro.join("probe"), b"").is_err() {
        let e = BackupSink::open(SinkConfig::new(ro.join("b")))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(&ro.display().to_string()), "{e}");
    }
}

#[test]
fn unreachable_cluster_never_blocks_data_and_the_manifest_is_guessed() {
    let d = tempfile::tempdir().unwrap();
    let mut c = config(d.path());
    // Port 1 on loopback refuses connections: the describe fails after its timeout.
    c.cluster = [("bootstrap.servers".to_string(), "127.0.0.1:1".to_string())].into();
    let mut sink = BackupSink::open(c).unwrap();
    sink.put(&batch("t", 2, 0..3)).unwrap();
    // The retry is rate-limited, so this flush does not wait for the cluster again.
    let t = std::time::Instant::now();
    assert_eq!(
        sink.flush().unwrap(),
        vec![TopicPartitionOffset::new("t", 2, 3)]
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(2));
    sink.close().unwrap();
    let b = Backup::open(d.path()).unwrap();
    let m = b.manifest("t").unwrap().unwrap();
    assert_eq!((m.partitions, m.described), (3, false));
    assert_eq!(read_all(d.path(), "t", 2).len(), 3);
}

#[test]
fn sink_and_readers_can_move_between_threads() {
    // The JNI bridge keeps the sink behind Arc<Mutex<..>> and calls it from Connect's threads.
    fn assert_send<T: Send>() {}
    assert_send::<BackupSink>();
    assert_send::<kbackup_core::reader::PartitionReader>();
    assert_send::<Backup>();
}

#[test]
fn a_partition_has_one_writer_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = BackupSink::open(config(dir.path())).unwrap();
    first.put(&batch("t", 0, 0..3)).unwrap();
    first.flush().unwrap();
    // A second writer (a new task after a rebalance) waits until the first lets go ...
    let root = dir.path().to_path_buf();
    let second = std::thread::spawn(move || {
        let mut s = BackupSink::open(config(&root)).unwrap();
        let started = std::time::Instant::now();
        let resume = s.open_partitions(&[TopicPartition::new("t", 0)]).unwrap();
        (started.elapsed(), resume, s)
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    first
        .close_partitions(&[TopicPartition::new("t", 0)])
        .unwrap();
    let (waited, resume, mut s) = second.join().unwrap();
    assert!(
        waited >= std::time::Duration::from_millis(300),
        "second writer did not wait: {waited:?}"
    );
    // ... and then resumes exactly after what the first one wrote.
    assert_eq!(resume, vec![TopicPartitionOffset::new("t", 0, 3)]);
    s.put(&batch("t", 0, 3..5)).unwrap();
    s.close().unwrap();
    first.close().unwrap();
    let offsets: Vec<i64> = read_all(dir.path(), "t", 0)
        .iter()
        .map(|r| r.offset)
        .collect();
    assert_eq!(offsets, vec![0, 1, 2, 3, 4]);
    let report = Backup::open(dir.path()).unwrap().verify().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn listing_names_topics_and_partitions_without_reading_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = BackupSink::open(config(dir.path())).unwrap();
    sink.put(&batch("b", 2, 0..2)).unwrap();
    sink.put(&batch("a", 0, 0..1)).unwrap();
    sink.put(&batch("b", 0, 5..6)).unwrap();
    sink.close().unwrap();
    // Damage a record: the listing must not care (it reads directory names only).
    let seg = segments(dir.path(), "b", 2).remove(0);
    let mut data = std::fs::read(&seg).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(&seg, data).unwrap();
    let listing = Backup::open(dir.path()).unwrap().listing().unwrap();
    let got: Vec<(String, Vec<i32>)> = listing
        .topics
        .into_iter()
        .map(|t| (t.topic, t.partitions))
        .collect();
    assert_eq!(got, vec![("a".into(), vec![0]), ("b".into(), vec![0, 2])]);
}
