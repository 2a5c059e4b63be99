//! Defect 11: segments were memory-mapped, so a file truncated while a restore or `cat` read it
//! (the sink cutting a torn tail of a live backup) killed the process with SIGBUS, a Connect
//! worker included. Readers now use positioned reads: a shrinking file ends earlier, which
//! gives a clean end or an error, never a signal.
//!
//! Its own test binary: before the fix a failure here is a signal that kills the binary.

mod common;

use kbackup_core::reader::Backup;
use kbackup_core::record::Record;
use kbackup_core::sink::SinkConfig;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RECORDS: i64 = 4000;

fn rec(offset: i64) -> Record {
    common::record(offset, 4000)
}

/// A backup of `t`-0 with [`RECORDS`] records (16 MB) in one segment; answers the segment.
fn backup(root: &Path) -> PathBuf {
    common::backup_t0(SinkConfig::new(root), RECORDS, 4000)
}

fn truncate(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn defect11_a_segment_truncated_under_an_open_reader_ends_or_errs_never_a_signal() {
    let d = tempfile::tempdir().unwrap();
    let seg = backup(d.path());
    let full = std::fs::read(&seg).unwrap();
    for cut in [full.len() as u64 / 2 + 7, 100, 0] {
        std::fs::write(&seg, &full).unwrap();
        let b = Backup::open(d.path()).unwrap();
        let mut r = b.partition("t", 0).unwrap();
        // The segment is open and its first records read ...
        for o in 0..10 {
            assert_eq!(r.next_record().unwrap().unwrap(), rec(o));
        }
        // ... when the file shrinks under the reader.
        truncate(&seg, cut);
        let mut next = 10;
        let end = loop {
            match r.next_record() {
                Ok(Some(got)) => {
                    assert_eq!(got, rec(next), "cut {cut}");
                    next += 1;
                }
                other => break other,
            }
        };
        assert!(
            next < RECORDS,
            "cut {cut}: every record read from a shrunk file"
        );
        match end {
            Ok(None) => {}
            Err(e) => assert!(e.to_string().contains(&seg.display().to_string()), "{e}"),
            Ok(Some(_)) => unreachable!(),
        }
    }
}

#[test]
fn defect11_readers_racing_a_truncating_writer_never_crash() {
    let d = tempfile::tempdir().unwrap();
    let seg = backup(d.path());
    let full = std::fs::read(&seg).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // The "sink": cuts the file at ever-changing places and writes it back, as fast as it can.
    let writer = {
        let (seg, full, stop) = (seg.clone(), full.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                i = i
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                truncate(&seg, (i >> 33) % full.len() as u64);
                std::thread::sleep(Duration::from_millis(2));
                std::fs::write(&seg, &full).unwrap();
            }
        })
    };
    let started = Instant::now();
    let (mut reads, mut verifies) = (0, 0);
    while started.elapsed() < Duration::from_secs(3) {
        let b = Backup::open(d.path()).unwrap();
        let mut r = b.partition("t", 0).unwrap();
        let mut next = 0;
        while let Ok(Some(got)) = r.next_record() {
            assert_eq!(got, rec(next));
            next += 1;
        }
        reads += 1;
        let _ = b.verify(); // any answer but a crash
        let _ = b.partition("t", 0).unwrap().last_offset();
        verifies += 1;
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(reads > 0 && verifies > 0);
}
