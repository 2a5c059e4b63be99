//! Damage is corruption, reported with file and byte position by every reader and refused by
//! the writer; only an interrupted last write (a short frame or zero fill) is a torn tail.
//! docs/format.md, "Torn tail versus corruption"; docs/reliability.md lists these tests.

mod common;

use kbackup_core::reader::Backup;
use kbackup_core::record::TopicPartition;
use kbackup_core::sink::{BackupSink, SinkConfig};
use kbackup_core::verify::Severity;
use kbackup_core::Error;
use std::path::{Path, PathBuf};

fn config(dir: &Path) -> SinkConfig {
    common::sink_config(dir)
}

/// A backup of topic `t` partition 0 with `n` records in one segment; answers the segment.
fn backup(root: &Path, n: i64) -> PathBuf {
    common::backup_t0(config(root), n, 100)
}

/// Byte position of the frame holding record `offset` (records of [`rec`] are equal-sized).
fn frame_pos(seg: &Path, offset: i64) -> u64 {
    let scan = kbackup_core::segment::scan_file(seg).unwrap();
    let frame = (scan.valid_len - scan.header.header_len as u64) / scan.records;
    scan.header.header_len as u64 + offset as u64 * frame
}

/// Reads the whole partition as a restore does; answers the error.
fn read_error(root: &Path) -> Error {
    let b = Backup::open(root).unwrap();
    let mut r = b.partition("t", 0).unwrap();
    loop {
        match r.next_record() {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("damage was skipped silently"),
            Err(e) => return e,
        }
    }
}

fn assert_corrupt_at(e: &Error, file: &Path, pos: u64) {
    match e {
        Error::Corrupt { path, position, .. } => {
            assert_eq!((path.as_path(), *position), (file, pos), "{e}")
        }
        e => panic!(
            "expected corruption of {} at {pos}, got {e}",
            file.display()
        ),
    }
}

/// Defect 5: a bit flip in a partition's LAST record was taken for a torn write: readers
/// dropped the record silently and the sink cut an already committed record off.
#[test]
fn defect5_bit_flip_in_the_last_record_is_refused_by_every_reader_and_the_sink() {
    let d = tempfile::tempdir().unwrap();
    let seg = backup(d.path(), 10);
    let last = frame_pos(&seg, 9);
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 20] ^= 0x08; // inside record 9's value
    std::fs::write(&seg, &bytes).unwrap();

    // The restore's reader, first/last offset and count, inspect's summary.
    assert_corrupt_at(&read_error(d.path()), &seg, last);
    let b = Backup::open(d.path()).unwrap();
    let r = b.partition("t", 0).unwrap();
    assert_corrupt_at(&r.last_offset().unwrap_err(), &seg, last);
    assert_corrupt_at(&r.record_count().unwrap_err(), &seg, last);
    assert_corrupt_at(&b.summary().unwrap_err(), &seg, last);
    let mut r = b.partition("t", 0).unwrap();
    r.seek(9).unwrap();
    assert_corrupt_at(&r.next_record().unwrap_err(), &seg, last);

    // verify: an error (not a torn-tail warning) with file and position.
    let v = b.verify().unwrap();
    assert!(!v.ok, "{:?}", v.problems);
    assert!(
        v.problems
            .iter()
            .any(|p| p.severity == Severity::Error && p.file == seg && p.position == Some(last)),
        "{:?}",
        v.problems
    );

    // reindex cannot index it, and says which file.
    let rep = b.reindex().unwrap();
    assert!(rep.failed.iter().any(|(f, _)| f == &seg), "{rep:?}");

    // The sink refuses to open the partition and leaves the committed record alone.
    let mut sink = BackupSink::open(config(d.path())).unwrap();
    assert_corrupt_at(
        &sink
            .open_partitions(&[TopicPartition::new("t", 0)])
            .unwrap_err(),
        &seg,
        last,
    );
    sink.close().unwrap();
    assert_eq!(std::fs::read(&seg).unwrap(), bytes);
}

/// The other side of defect 5: what an interrupted write really leaves is still repaired.
#[test]
fn defect5_short_last_frame_and_zero_fill_stay_torn_tails() {
    for tail in ["short frame", "zero fill"] {
        let d = tempfile::tempdir().unwrap();
        let seg = backup(d.path(), 10);
        let good = std::fs::read(&seg).unwrap();
        let last = frame_pos(&seg, 9);
        let mut bytes = good.clone();
        match tail {
            "short frame" => bytes.truncate(bytes.len() - 7),
            _ => bytes.extend_from_slice(&[0; 4096]),
        }
        std::fs::write(&seg, &bytes).unwrap();
        let keep = if tail == "short frame" { 9 } else { 10 };
        let torn_at = if tail == "short frame" {
            last
        } else {
            good.len() as u64
        };
        let b = Backup::open(d.path()).unwrap();
        assert_eq!(b.partition("t", 0).unwrap().record_count().unwrap(), keep);
        let v = b.verify().unwrap();
        assert!(v.ok, "{tail}: {:?}", v.problems);
        assert!(v.problems.iter().any(|p| p.severity == Severity::Warning
            && p.file == seg
            && p.position == Some(torn_at)));
        let mut sink = BackupSink::open(config(d.path())).unwrap();
        let resume = sink
            .open_partitions(&[TopicPartition::new("t", 0)])
            .unwrap();
        assert_eq!(resume[0].offset, keep as i64, "{tail}");
        sink.close().unwrap();
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), torn_at, "{tail}");
    }
}

// ---------------------------------------------------------------------------------------------
// Every structural position of every file kind
