//! Issue 8, "Corruption": damage at every structural position of every file kind is reported
//! with file and byte position by verify and every reader, refused by the writers, and never
//! restored silently (docs/format.md, "Torn tail versus corruption"). Split from corruption.rs,
//! which holds the defect 5 regression tests.

mod common;

use kbackup_core::layout;
use kbackup_core::reader::Backup;
use kbackup_core::record::{Record, TopicPartition};
use kbackup_core::sink::{BackupSink, SinkConfig};
use kbackup_core::verify::Severity;
use kbackup_core::Error;
use std::path::{Path, PathBuf};

fn rec(offset: i64) -> Record {
    common::record(offset, 100)
}

fn config(dir: &Path) -> SinkConfig {
    common::sink_config(dir)
}

use kbackup_core::format::frame;
use kbackup_core::offsets_log::{self, GroupOffsetEntry};
use kbackup_core::restore;
use kbackup_core::segment::{read_frame, Frame};

/// The fixture: `t`-0 in two segments of 10 records (a sealed one and the last one, each with
/// several index entries) and a group-offsets log of three entries.
struct Fixture {
    root: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let root = tempfile::tempdir().unwrap();
        let mut c = config(root.path());
        c.max_segment_size_bytes = 1600;
        common::backup_t0(c, 20, 100);
        let f = Fixture { root };
        assert_eq!(
            f.segments().len(),
            2,
            "the fixture needs a sealed and a last segment"
        );
        let entries: Vec<GroupOffsetEntry> = [("g1", 3), ("g2", 12), ("g3", 20)]
            .iter()
            .map(|(g, o)| GroupOffsetEntry {
                capture_time_ms: 1_700_000_000_000,
                group: g.to_string(),
                committed_offset: *o,
                metadata: String::new(),
            })
            .collect();
        offsets_log::append(&f.log(), &entries, kbackup_core::perms::OWNER_ONLY).unwrap();
        f
    }

    fn dir(&self) -> PathBuf {
        layout::partition_dir(self.root.path(), &TopicPartition::new("t", 0)).unwrap()
    }
    fn segments(&self) -> Vec<PathBuf> {
        layout::list_segments(&self.dir())
            .unwrap()
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    }
    fn log(&self) -> PathBuf {
        layout::group_offsets_log(self.root.path(), &TopicPartition::new("t", 0))
    }
}

/// Frame positions of a segment.
fn segment_frames(seg: &Path) -> Vec<usize> {
    let data = std::fs::read(seg).unwrap();
    let mut pos = u16::from_be_bytes([data[6], data[7]]) as usize;
    let mut out = vec![];
    while let Frame::Record { next, .. } = read_frame(&data, pos) {
        out.push(pos);
        pos = next;
    }
    out
}

/// Frame positions of a version 2 group-offsets log.
fn log_frames(log: &Path) -> Vec<usize> {
    let data = std::fs::read(log).unwrap();
    let mut pos = 12;
    let mut out = vec![];
    while let frame::Check::Complete { next, .. } = frame::check(&data, pos, 22, 1 << 22) {
        out.push(pos);
        pos = next;
    }
    out
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    Flip(usize),
    Truncate(usize),
}

#[derive(Debug, Clone)]
enum Expect {
    /// Segment damage: every reader and verify report `file` at `pos`; the sink refuses a
    /// damaged last segment; nothing is modified.
    Corrupt { file: PathBuf, pos: u64 },
    /// A truncated last segment is a torn tail: verify warns at `pos`, readers stop there, the
    /// sink cuts there and resumes at offset `resume`.
    Torn { pos: u64, resume: i64 },
    /// Index damage: verify reports it, the records read the same, reindex repairs it.
    Index { pos: u64 },
    /// Group-offsets log damage: verify and the restore's group planning report it, appends
    /// refuse it.
    Log { pos: u64 },
    /// A truncated group-offsets log is a torn append: verify warns at `pos`.
    LogTorn { pos: u64 },
}

fn damage(file: &Path, d: Damage) {
    let mut bytes = std::fs::read(file).unwrap();
    match d {
        Damage::Flip(at) => bytes[at] ^= 0x10,
        Damage::Truncate(len) => bytes.truncate(len),
    }
    std::fs::write(file, &bytes).unwrap();
}

fn all_records(root: &Path) -> kbackup_core::Result<Vec<Record>> {
    let b = Backup::open(root)?;
    let mut r = b.partition("t", 0)?;
    let mut out = vec![];
    while let Some(rec) = r.next_record()? {
        out.push(rec);
    }
    Ok(out)
}

fn verify_has(root: &Path, sev: Severity, file: &Path, pos: u64) -> Result<(), String> {
    let v = Backup::open(root).unwrap().verify().unwrap();
    let found = v
        .problems
        .iter()
        .any(|p| p.severity == sev && p.file == file && p.position == Some(pos));
    if found && v.ok == (sev == Severity::Warning) {
        Ok(())
    } else {
        Err(format!(
            "verify: want {sev:?} {} at {pos}, got ok={} {:?}",
            file.display(),
            v.ok,
            v.problems
        ))
    }
}

fn is_corrupt_at(r: &kbackup_core::Error, file: &Path, pos: u64) -> bool {
    matches!(r, Error::Corrupt { path, position, .. } if path == file && *position == pos)
}

fn check_case(f: &Fixture, file: &Path, expect: &Expect) -> Result<(), String> {
    let root = f.root.path();
    let segs = f.segments();
    let last_seg = segs.last().unwrap().clone();
    let before: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(f.dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x != "lock"))
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    let unchanged = |what: &str| -> Result<(), String> {
        for (p, b) in &before {
            if std::fs::read(p).ok().as_ref() != Some(b) {
                return Err(format!("{what} modified {}", p.display()));
            }
        }
        Ok(())
    };
    match expect {
        Expect::Corrupt { file: at, pos } => {
            verify_has(root, Severity::Error, at, *pos)?;
            match all_records(root) {
                Err(e) if is_corrupt_at(&e, at, *pos) => {}
                other => return Err(format!("reader: {:?}", other.map(|r| r.len()))),
            }
            let b = Backup::open(root).unwrap();
            match b.summary() {
                Err(e) if is_corrupt_at(&e, at, *pos) => {}
                other => return Err(format!("summary: {:?}", other.map(|s| s.records))),
            }
            // The sink scans (and refuses) the segment it appends to, the last one.
            let mut sink = BackupSink::open(config(root)).unwrap();
            let opened = sink.open_partitions(&[TopicPartition::new("t", 0)]);
            sink.close().unwrap();
            if file == last_seg {
                match opened {
                    Err(e) if is_corrupt_at(&e, at, *pos) => {}
                    other => return Err(format!("sink open: {other:?}")),
                }
            }
            unchanged("the sink")?;
            // reindex refuses a damaged segment and leaves its index alone. (A sealed segment
            // cut at a record boundary is whole by itself: only the chain link shows the loss.)
            if at == file {
                let rep = b.reindex().unwrap();
                unchanged("reindex")?;
                if !rep.failed.iter().any(|(p, _)| p == file) {
                    return Err(format!("reindex indexed the damaged segment: {rep:?}"));
                }
            }
        }
        Expect::Torn { pos, resume } => {
            verify_has(root, Severity::Warning, &last_seg, *pos)?;
            let got = all_records(root).map_err(|e| format!("reader: {e}"))?;
            if got != (0..*resume).map(rec).collect::<Vec<_>>() {
                return Err(format!("reader: {} records", got.len()));
            }
            let mut sink = BackupSink::open(config(root)).unwrap();
            let r = sink
                .open_partitions(&[TopicPartition::new("t", 0)])
                .map_err(|e| format!("sink open: {e}"))?;
            sink.close().unwrap();
            if r[0].offset != *resume {
                return Err(format!("sink resumes at {}", r[0].offset));
            }
            let v = Backup::open(root).unwrap().verify().unwrap();
            if !v.problems.is_empty() {
                return Err(format!("after the sink's repair: {:?}", v.problems));
            }
        }
        Expect::Index { pos } => {
            verify_has(root, Severity::Error, file, *pos)?;
            let got = all_records(root).map_err(|e| format!("reader: {e}"))?;
            if got != (0..20).map(rec).collect::<Vec<_>>() {
                return Err(format!("reader: {} records", got.len()));
            }
            let b = Backup::open(root).unwrap();
            for target in [0, 4, 9, 10, 15, 19] {
                let mut r = b.partition("t", 0).unwrap();
                r.seek(target).map_err(|e| format!("seek {target}: {e}"))?;
                let o = r
                    .next_record()
                    .map_err(|e| e.to_string())?
                    .map(|r| r.offset);
                if o != Some(target) {
                    return Err(format!("seek {target} found {o:?}"));
                }
            }
            b.reindex().unwrap();
            let v = b.verify().unwrap();
            if !v.problems.is_empty() {
                return Err(format!("after reindex: {:?}", v.problems));
            }
        }
        Expect::Log { pos } => {
            verify_has(root, Severity::Error, file, *pos)?;
            match offsets_log::latest_per_group(file) {
                Err(e) if is_corrupt_at(&e, file, *pos) => {}
                other => return Err(format!("latest_per_group: {other:?}")),
            }
            match restore::plan(
                &Backup::open(root).map_err(|e| e.to_string())?,
                &["t".to_string()],
                &Default::default(),
            ) {
                Err(e) if is_corrupt_at(&e, file, *pos) => {}
                other => return Err(format!("restore plan: {:?}", other.map(|p| p.len()))),
            }
            let e = GroupOffsetEntry {
                capture_time_ms: 1_800_000_000_000,
                group: "g9".into(),
                committed_offset: 5,
                metadata: String::new(),
            };
            if offsets_log::append(file, &[e], kbackup_core::perms::OWNER_ONLY).is_ok() {
                return Err("append to a damaged log succeeded".into());
            }
            unchanged("append")?;
        }
        Expect::LogTorn { pos } => {
            verify_has(root, Severity::Warning, file, *pos)?;
            restore::plan(
                &Backup::open(root).map_err(|e| e.to_string())?,
                &["t".to_string()],
                &Default::default(),
            )
            .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Issue 8, "Corruption": bit flips and truncations at every structural position of a segment
/// (sealed and last), an offset and a time index and a group-offsets log.
#[test]
fn corruption_at_every_structural_position_is_reported_with_file_and_position() {
    let probe = Fixture::new();
    let segs = probe.segments();
    let (s0, s1) = (segs[0].clone(), segs[1].clone());
    let (f0, f1) = (segment_frames(&s0), segment_frames(&s1));
    assert_eq!((f0.len(), f1.len()), (10, 10));
    let hl = f0[0];
    let len = |p: &Path| std::fs::metadata(p).unwrap().len() as usize;
    let log = probe.log();
    let lf = log_frames(&log);
    let oidx = |s: &Path| layout::offset_index_path(s);
    let tidx = |s: &Path| layout::time_index_path(s);
    let corrupt = |file: &Path, pos: usize| Expect::Corrupt {
        file: file.to_path_buf(),
        pos: pos as u64,
    };

    let mut cases: Vec<(String, PathBuf, Damage, Expect)> = vec![];
    for (label, seg, fr) in [("sealed", &s0, &f0), ("last", &s1, &f1)] {
        let (mid, last) = (fr[5], fr[9]);
        let mut add = |what: &str, d: Damage, e: Expect| {
            cases.push((format!("{label} segment: {what}"), seg.clone(), d, e))
        };
        add("header magic", Damage::Flip(1), corrupt(seg, 0));
        add("header version", Damage::Flip(5), corrupt(seg, 0));
        add("header length", Damage::Flip(7), corrupt(seg, 6));
        add("header base offset", Damage::Flip(19), corrupt(seg, 0));
        add("header topic", Damage::Flip(42), corrupt(seg, 0));
        add("header CRC", Damage::Flip(hl - 1), corrupt(seg, 0));
        add(
            "first record body",
            Damage::Flip(fr[0] + 30),
            corrupt(seg, fr[0]),
        );
        add(
            "middle record length",
            Damage::Flip(mid + 2),
            corrupt(seg, mid),
        );
        add(
            "middle record length CRC",
            Damage::Flip(mid + 5),
            corrupt(seg, mid),
        );
        add(
            "middle record body CRC",
            Damage::Flip(mid + 9),
            corrupt(seg, mid),
        );
        add(
            "middle record body",
            Damage::Flip(mid + 40),
            corrupt(seg, mid),
        );
        add(
            "last record length",
            Damage::Flip(last + 3),
            corrupt(seg, last),
        );
        add(
            "last record length CRC",
            Damage::Flip(last + 6),
            corrupt(seg, last),
        );
        add(
            "last record body CRC",
            Damage::Flip(last + 10),
            corrupt(seg, last),
        );
        add(
            "last record body",
            Damage::Flip(len(seg) - 5),
            corrupt(seg, last),
        );
    }
    let sealed_cut = |what: &str, d: Damage, e: Expect| {
        (
            format!("sealed segment: truncated {what}"),
            s0.clone(),
            d,
            e,
        )
    };
    cases.push(sealed_cut(
        "inside the header",
        Damage::Truncate(10),
        corrupt(&s0, 10),
    ));
    cases.push(sealed_cut(
        "in the middle record",
        Damage::Truncate(f0[5] + 30),
        corrupt(&s0, f0[5]),
    ));
    cases.push(sealed_cut(
        "in the last record",
        Damage::Truncate(f0[9] + 5),
        corrupt(&s0, f0[9]),
    ));
    // Whole records cut off at a frame boundary: the next segment's chain link catches it.
    cases.push(sealed_cut(
        "at a record boundary",
        Damage::Truncate(f0[9]),
        corrupt(&s1, 20),
    ));
    let last_cut = |what: &str, d: Damage, pos: usize, resume: i64| {
        let e = Expect::Torn {
            pos: pos as u64,
            resume,
        };
        (format!("last segment: truncated {what}"), s1.clone(), d, e)
    };
    cases.push(last_cut("inside the header", Damage::Truncate(10), 10, 10));
    cases.push(last_cut(
        "in the middle record",
        Damage::Truncate(f1[5] + 30),
        f1[5],
        15,
    ));
    cases.push(last_cut(
        "in the last record's prefix",
        Damage::Truncate(f1[9] + 5),
        f1[9],
        19,
    ));
    cases.push(last_cut(
        "in the last record's body",
        Damage::Truncate(len(&s1) - 1),
        f1[9],
        19,
    ));
    for (label, idx) in [
        ("sealed offset index", oidx(&s0)),
        ("last offset index", oidx(&s1)),
        ("sealed time index", tidx(&s0)),
        ("last time index", tidx(&s1)),
    ] {
        let mut add = |what: &str, d: Damage, pos: usize| {
            cases.push((
                format!("{label}: {what}"),
                idx.clone(),
                d,
                Expect::Index { pos: pos as u64 },
            ))
        };
        add("header magic", Damage::Flip(2), 2);
        add("header base offset", Damage::Flip(15), 15);
        add("header CRC", Damage::Flip(22), 22);
        add("first entry, first field", Damage::Flip(24 + 7), 31);
        add("first entry, second field", Damage::Flip(24 + 15), 39);
        add("last entry", Damage::Flip(len(&idx) - 1), len(&idx) - 1);
        add(
            "truncated inside an entry",
            Damage::Truncate(len(&idx) - 3),
            len(&idx) - 3,
        );
        add("truncated inside the header", Damage::Truncate(10), 10);
    }
    let log_case = |what: &str, d: Damage, e: Expect| {
        (format!("group-offsets log: {what}"), log.clone(), d, e)
    };
    let lp = |pos: usize| Expect::Log { pos: pos as u64 };
    let (lmid, llast) = (lf[1], lf[2]);
    cases.push(log_case("header magic", Damage::Flip(0), lp(0)));
    cases.push(log_case("header version", Damage::Flip(5), lp(4)));
    cases.push(log_case("header CRC", Damage::Flip(9), lp(0)));
    cases.push(log_case(
        "first entry length",
        Damage::Flip(lf[0] + 3),
        lp(lf[0]),
    ));
    cases.push(log_case(
        "middle entry length",
        Damage::Flip(lmid + 2),
        lp(lmid),
    ));
    cases.push(log_case(
        "middle entry length CRC",
        Damage::Flip(lmid + 5),
        lp(lmid),
    ));
    cases.push(log_case(
        "middle entry body CRC",
        Damage::Flip(lmid + 9),
        lp(lmid),
    ));
    cases.push(log_case(
        "middle entry body",
        Damage::Flip(lmid + 20),
        lp(lmid),
    ));
    cases.push(log_case(
        "last entry length",
        Damage::Flip(llast + 3),
        lp(llast),
    ));
    cases.push(log_case(
        "last entry body",
        Damage::Flip(len(&log) - 2),
        lp(llast),
    ));
    let torn = |pos: usize| Expect::LogTorn { pos: pos as u64 };
    cases.push(log_case(
        "truncated in the last entry",
        Damage::Truncate(len(&log) - 4),
        torn(llast),
    ));
    cases.push(log_case(
        "truncated in the header",
        Damage::Truncate(6),
        torn(0),
    ));

    let mut failures = vec![];
    for (name, file, d, expect) in &cases {
        let f = Fixture::new();
        // The fixture is rebuilt per case; its files have the same names and bytes.
        let file = f
            .root
            .path()
            .join(file.strip_prefix(probe.root.path()).unwrap());
        let expect = match expect.clone() {
            Expect::Corrupt { file: e, pos } => Expect::Corrupt {
                file: f
                    .root
                    .path()
                    .join(e.strip_prefix(probe.root.path()).unwrap()),
                pos,
            },
            e => e,
        };
        damage(&file, *d);
        if let Err(why) = check_case(&f, &file, &expect) {
            failures.push(format!("{name} ({d:?}): {why}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!("{} damage cases checked", cases.len());
}
