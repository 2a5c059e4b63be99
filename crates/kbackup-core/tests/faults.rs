//! The backup writer under injected write and fsync errors (feature `fault-injection`).
//!
//! A small driver plays Connect: it puts batches, flushes, commits what the flush reports,
//! rewinds to the last commit after a failed flush, retries a failed put once and otherwise
//! restarts the task (a new sink reopened from the files). After every reported flush the
//! disk model of `kbackup_core::faults` (what a crash would leave, with the pages of a failed
//! fsync lost) must hold every offset reported durable; at the end the files hold every
//! record exactly once and verify clean. The fault state is global: tests run one at a time.

use kbackup_core::faults::{self, Op};
use kbackup_core::layout;
use kbackup_core::record::BatchRecord;
use kbackup_core::record::{Record, TimestampType, TopicPartition};
use kbackup_core::segment::{self, Frame};
use kbackup_core::sink::{BackupSink, SinkConfig};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::new(());

const EIO: i32 = 5;
const TOPIC: &str = "t";

fn records(n: i64, value_len: usize) -> Vec<BatchRecord> {
    (0..n)
        .map(|o| BatchRecord {
            topic: TOPIC.into(),
            partition: 0,
            record: Record {
                offset: o,
                timestamp: 1_700_000_000_000 + o,
                timestamp_type: TimestampType::CreateTime,
                key: Some(format!("k{o}").into_bytes()),
                value: Some(vec![(o % 251) as u8; value_len]),
                headers: vec![],
            },
        })
        .collect()
}

/// Offsets a crash right now would leave on disk, by the fault model.
fn offsets_on_disk(dir: &Path) -> Vec<i64> {
    let mut out = Vec::new();
    for (_, path) in layout::list_segments(dir).unwrap_or_default() {
        let Some(img) = faults::disk_image(&path) else {
            continue;
        };
        let Ok(Some(h)) = segment::SegmentHeader::decode(&path, &img) else {
            continue;
        };
        let mut pos = h.header_len as usize;
        while let Frame::Record { offset, next, .. } = segment::read_frame(&img, pos) {
            out.push(offset);
            pos = next;
        }
    }
    out
}

/// Offsets the files hold now (every segment scanned strictly: corruption fails the test).
fn offsets_in_files(dir: &Path) -> Vec<i64> {
    let mut out = Vec::new();
    for (_, path) in layout::list_segments(dir).unwrap() {
        let scan = segment::scan_file(&path).unwrap();
        assert!(
            scan.torn.is_none(),
            "{}: torn tail {:?}",
            path.display(),
            scan.torn
        );
        let data = std::fs::read(&path).unwrap();
        let mut pos = scan.header.header_len as usize;
        while let Frame::Record { offset, next, .. } = segment::read_frame(&data, pos) {
            out.push(offset);
            pos = next;
        }
    }
    out
}

struct Driver {
    root: PathBuf,
    config: SinkConfig,
    records: Vec<BatchRecord>,
    sink: Option<BackupSink>,
    /// Next offset Connect would deliver.
    pos: i64,
    /// Last offset committed (what flush reported), exclusive.
    committed: i64,
    batch: usize,
    flush_every: usize,
    restarts: u32,
    rewinds: u32,
    /// Arms a new random fault whenever the last one fired, up to this many.
    chaos: Option<(u64, u32)>,
}

impl Driver {
    fn new(max_segment: u64, records: Vec<BatchRecord>, batch: usize, flush_every: usize) -> Self {
        let root = tempfile::tempdir().unwrap().keep();
        let mut config = SinkConfig::new(root.join("backup"));
        config.max_segment_size_bytes = max_segment;
        let mut d = Driver {
            root,
            config,
            records,
            sink: None,
            pos: 0,
            committed: 0,
            batch,
            flush_every,
            restarts: 0,
            rewinds: 0,
            chaos: None,
        };
        d.start();
        d
    }

    fn part_dir(&self) -> PathBuf {
        layout::partition_dir(&self.config.target_dir, &TopicPartition::new(TOPIC, 0)).unwrap()
    }

    /// A task (re)start: a new sink, resuming where the files end (Connect's `open`).
    fn start(&mut self) {
        if let Some(mut old) = self.sink.take() {
            let _ = old.close();
        }
        let mut sink = BackupSink::open(self.config.clone()).unwrap();
        let resume = sink
            .open_partitions(&[TopicPartition::new(TOPIC, 0)])
            .unwrap();
        self.pos = if resume[0].offset >= 0 {
            resume[0].offset
        } else {
            0
        };
        self.sink = Some(sink);
    }

    fn sink(&mut self) -> &mut BackupSink {
        self.sink.as_mut().unwrap()
    }

    fn flush(&mut self) {
        match self.sink().flush() {
            Ok(offs) => {
                let reported = offs.first().map_or(0, |o| o.offset);
                assert!(reported >= self.committed, "durable offset went back");
                self.committed = reported;
                let on_disk = offsets_on_disk(&self.part_dir());
                for o in 0..self.committed {
                    assert!(
                        on_disk.binary_search(&o).is_ok(),
                        "offset {o} was reported durable (committed {}) but a crash now would \
                         lose it; on disk: {:?}",
                        self.committed,
                        on_disk
                    );
                }
            }
            Err(e) => {
                // Connect logs the failed preCommit and seeks back to its last commit.
                eprintln!("flush failed: {e}");
                self.pos = self.committed;
                self.rewinds += 1;
            }
        }
    }

    fn run(&mut self) {
        let n = self.records.len() as i64;
        let mut puts = 0;
        for _ in 0..100_000 {
            if let Some((seed, left)) = self.chaos.as_mut() {
                if *left > 0 && !faults::pending() {
                    *left -= 1;
                    let mut next = || {
                        *seed = seed
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        (*seed >> 33) as u32
                    };
                    let (op, path) = match next() % 4 {
                        0 => (Op::Write, ".segment"),
                        1 => (Op::Fsync, ".segment"),
                        2 => (Op::Fsync, "index"),
                        _ => (Op::DirFsync, "topics"),
                    };
                    faults::arm(op, path, next() % 12, (next() % 300) as usize, EIO);
                }
            }
            if self.committed >= n {
                break;
            }
            if self.pos < n {
                let end = (self.pos as usize + self.batch).min(n as usize);
                let batch: Vec<BatchRecord> = self.records[self.pos as usize..end].to_vec();
                let mut ok = self.sink().put(&batch).is_ok();
                if !ok {
                    // A retriable error: Connect hands the same batch again.
                    ok = self.sink().put(&batch).is_ok();
                }
                if ok {
                    self.pos = end as i64;
                } else {
                    self.restarts += 1;
                    self.start();
                }
                puts += 1;
            }
            if puts % self.flush_every == 0 || self.pos >= n {
                self.flush();
            }
        }
        assert_eq!(self.committed, n, "the backup never completed");
        if let Some(mut s) = self.sink.take() {
            s.close().unwrap();
        }
        let got = offsets_in_files(&self.part_dir());
        assert_eq!(
            got,
            (0..n).collect::<Vec<_>>(),
            "every record exactly once, in order"
        );
        assert!(faults::injected() > 0, "the fault never fired");
        eprintln!(
            "{} records, {} faults injected, {} rewinds, {} restarts",
            n,
            faults::injected(),
            self.rewinds,
            self.restarts
        );
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    let g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    faults::reset();
    g
}

fn seg_name(base: i64) -> String {
    layout::segment_file_name(base)
}

#[test]
fn fsync_eio_then_retry_never_reports_lost_pages_durable() {
    let _g = serial();
    let mut d = Driver::new(1 << 30, records(300, 100), 20, 3);
    // The second fsync of the segment fails: its dirty pages are gone, the next fsync passes.
    faults::arm(Op::Fsync, &seg_name(0), 1, 0, EIO);
    d.run();
}

#[test]
fn fsync_eio_on_an_index_poisons_too() {
    let _g = serial();
    let mut d = Driver::new(1 << 30, records(300, 100), 20, 3);
    faults::arm(Op::Fsync, "offset-index", 2, 0, EIO);
    d.run();
}

#[test]
fn frame_prefix_without_body_is_cut_back_not_continued() {
    let _g = serial();
    // Bodies above the 256 KiB buffer go straight to the file after the buffered prefix:
    // the fault lets the prefix through and fails the body.
    let mut d = Driver::new(1 << 30, records(12, 300 * 1024), 2, 2);
    faults::arm(Op::Write, &seg_name(0), 4, 0, EIO);
    d.run();
}

#[test]
fn partial_write_mid_frame_is_cut_back() {
    let _g = serial();
    let mut d = Driver::new(1 << 30, records(12, 300 * 1024), 2, 2);
    faults::arm(Op::Write, &seg_name(0), 5, 1000, EIO);
    d.run();
}

#[test]
fn failed_finish_during_roll_does_not_count_its_records() {
    let _g = serial();
    // ~30 records per segment, 100 per put, one flush per 2 puts: the first roll's finish()
    // fsyncs segment 0 for the first time, and that fsync fails.
    let mut d = Driver::new(4096, records(400, 100), 100, 2);
    faults::arm(Op::Fsync, &seg_name(0), 0, 0, EIO);
    d.run();
}

#[test]
fn first_append_failure_still_fsyncs_the_directory() {
    let _g = serial();
    // Three 300 KiB records per 1 MiB segment; the first append to the second segment fails
    // (header written, body not), and the same batch is then handed again.
    let mut d = Driver::new(1 << 20, records(12, 300 * 1024), 1, 1);
    let second = 3;
    faults::arm(Op::Write, &seg_name(second), 1, 0, EIO);
    d.run();
}

#[test]
fn directory_fsync_failure_poisons_the_new_segment() {
    let _g = serial();
    let mut d = Driver::new(1 << 20, records(12, 300 * 1024), 1, 1);
    // Partition dir synced at the first flush; the next sync of it (after a roll) fails.
    faults::arm(Op::DirFsync, &format!("topics/{TOPIC}/0"), 1, 0, EIO);
    d.run();
}

#[test]
fn random_faults_never_report_a_lost_record_durable() {
    let _g = serial();
    // Up to 100 random faults (write, partial write, segment/index/directory fsync) over
    // 8000 records in small segments; the check after every flush is the one that matters.
    let mut d = Driver::new(8 * 1024, records(8000, 200), 25, 2);
    d.chaos = Some((8, 100));
    d.run();
    let fired = faults::injected();
    assert!(fired >= 50, "only {fired} faults fired");
}
