//! The read-side verbs (`inspect`, `cat`, `verify`, `reindex`) run as the built binary on
//! backups written through kbackup-core.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use kbackup_core::layout;
use kbackup_core::record::BatchRecord;
use kbackup_core::record::{Header, Record, TimestampType, TopicPartition};
use kbackup_core::sink::{BackupSink, SinkConfig};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn kbackup(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kbackup"))
        .args(args)
        .output()
        .expect("run kbackup")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn records() -> Vec<Record> {
    vec![
        Record {
            offset: 3,
            timestamp: -1,
            timestamp_type: TimestampType::NoTimestamp,
            key: None,
            value: Some(vec![]),
            headers: vec![
                Header {
                    key: "h".into(),
                    value: None,
                },
                Header {
                    key: "h".into(),
                    value: Some(vec![0xFF, 0]),
                },
            ],
        },
        Record {
            offset: 9,
            timestamp: 1_700_000_000_000,
            timestamp_type: TimestampType::LogAppendTime,
            key: Some(vec![]),
            value: None,
            headers: vec![],
        },
        Record {
            offset: 10,
            timestamp: 1_700_000_000_001,
            timestamp_type: TimestampType::CreateTime,
            key: Some(b"k".to_vec()),
            value: Some(b"v".to_vec()),
            headers: vec![],
        },
    ]
}

/// A backup with topic `t`: partition 0 holds [`records`], partition 1 holds `n1` plain records.
fn write_backup(root: &Path, n1: i64) {
    let mut sink = BackupSink::open(SinkConfig::new(root)).unwrap();
    let mut batch: Vec<BatchRecord> = records()
        .into_iter()
        .map(|record| BatchRecord {
            topic: "t".into(),
            partition: 0,
            record,
        })
        .collect();
    batch.extend((0..n1).map(|o| BatchRecord {
        topic: "t".into(),
        partition: 1,
        record: Record {
            offset: o,
            timestamp: o,
            timestamp_type: TimestampType::CreateTime,
            key: None,
            value: Some(format!("value-{o}").into_bytes()),
            headers: vec![],
        },
    }));
    sink.put(&batch).unwrap();
    sink.close().unwrap();
}

fn b64(v: &Value) -> Option<Vec<u8>> {
    v.as_str().map(|s| STANDARD.decode(s).unwrap())
}

fn segment(root: &Path, p: i32) -> PathBuf {
    let dir = layout::partition_dir(root, &TopicPartition::new("t", p)).unwrap();
    layout::list_segments(&dir).unwrap().remove(0).1
}

#[test]
fn cat_jsonl_reproduces_every_field() {
    let d = tempfile::tempdir().unwrap();
    write_backup(d.path(), 0);
    let dir = d.path().to_str().unwrap();
    let o = kbackup(&[
        "cat",
        dir,
        "--topic",
        "t",
        "--partition",
        "0",
        "--format",
        "jsonl",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let want = records();
    assert_eq!(lines.len(), want.len());
    for (l, r) in lines.iter().zip(&want) {
        assert_eq!(l["topic"], "t");
        assert_eq!(l["partition"], 0);
        assert_eq!(l["offset"], r.offset);
        assert_eq!(l["timestamp"], r.timestamp);
        assert_eq!(l["timestamp_type"], r.timestamp_type.kafka_name());
        assert_eq!(b64(&l["key"]), r.key);
        assert_eq!(b64(&l["value"]), r.value);
        let headers: Vec<Header> = l["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| Header {
                key: h["key"].as_str().unwrap().into(),
                value: b64(&h["value"]),
            })
            .collect();
        assert_eq!(headers, r.headers);
    }
    // Null and empty are distinct in the output itself.
    assert!(lines[0]["key"].is_null() && lines[0]["value"] == "");
    assert!(lines[1]["key"] == "" && lines[1]["value"].is_null());
}

#[test]
fn cat_from_offset_and_all_partitions() {
    let d = tempfile::tempdir().unwrap();
    write_backup(d.path(), 5);
    let dir = d.path().to_str().unwrap();
    let o = kbackup(&["cat", dir, "--topic", "t", "--from-offset", "4"]);
    assert!(o.status.success());
    let got: Vec<(i64, i64)> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| {
            (
                v["partition"].as_i64().unwrap(),
                v["offset"].as_i64().unwrap(),
            )
        })
        .collect();
    // Offset 4 is a gap in partition 0: cat starts at the next record.
    assert_eq!(got, vec![(0, 9), (0, 10), (1, 4)]);
}

#[test]
fn inspect_shows_ranges_and_json_is_machine_readable() {
    let d = tempfile::tempdir().unwrap();
    write_backup(d.path(), 5);
    let dir = d.path().to_str().unwrap();
    let o = kbackup(&["inspect", dir, "--json"]);
    assert!(o.status.success());
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["records"], 8);
    let p0 = &v["topics"][0]["partitions"][0];
    assert_eq!(
        (p0["first_offset"].as_i64(), p0["last_offset"].as_i64()),
        (Some(3), Some(10))
    );
    assert_eq!(v["topics"][0]["manifest"]["partitions"], 2);
    let o = kbackup(&["inspect", dir]);
    let text = stdout(&o);
    assert!(text.contains("topic t: 8 records"), "{text}");
}

#[test]
fn verify_exits_4_on_corruption_and_names_file_and_position() {
    let d = tempfile::tempdir().unwrap();
    write_backup(d.path(), 50);
    let dir = d.path().to_str().unwrap();
    let o = kbackup(&["verify", dir]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).starts_with("OK"));

    let seg = segment(d.path(), 1);
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    std::fs::write(&seg, &bytes).unwrap();
    let o = kbackup(&["verify", dir]);
    assert_eq!(o.status.code(), Some(4));
    let text = stdout(&o);
    assert!(
        text.contains(&seg.display().to_string()) && text.contains("at byte"),
        "{text}"
    );
    let o = kbackup(&["verify", dir, "--json"]);
    assert_eq!(o.status.code(), Some(4));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["ok"], false);
    // Reading the damaged partition fails too, with exit 4 and the file in the message.
    let o = kbackup(&["cat", dir, "--topic", "t", "--partition", "1"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&o.stderr).contains(&seg.display().to_string()));
}

/// Defect 5: a bit flip in a partition's last record was a "torn tail" warning (exit 0) and
/// `cat` silently left the record out.
#[test]
fn defect5_verify_and_cat_refuse_a_bit_flip_in_the_last_record() {
    let d = tempfile::tempdir().unwrap();
    write_backup(d.path(), 50);
    let dir = d.path().to_str().unwrap();
    let seg = segment(d.path(), 1);
    let mut bytes = std::fs::read(&seg).unwrap();
    let scan = kbackup_core::segment::scan_file(&seg).unwrap();
    let mut last = scan.header.header_len as usize;
    while let kbackup_core::segment::Frame::Record { next, .. } =
        kbackup_core::segment::read_frame(&bytes, last)
    {
        if next == bytes.len() {
            break;
        }
        last = next;
    }
    let n = bytes.len();
    bytes[n - 4] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();

    let o = kbackup(&["verify", dir]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(4), "{text}");
    let want = format!("error: {} at byte {last}:", seg.display());
    assert!(text.contains(&want), "{text}");
    let o = kbackup(&["cat", dir, "--topic", "t", "--partition", "1"]);
    assert_eq!(o.status.code(), Some(4));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("{} at byte {last}", seg.display())),
        "{err}"
    );
    assert_eq!(stdout(&o).lines().count(), 49, "every record before it");
    // inspect reads every record too.
    let o = kbackup(&["inspect", dir]);
    assert_eq!(o.status.code(), Some(4));
}

#[test]
fn reindex_restores_a_deleted_index() {
    let d = tempfile::tempdir().unwrap();
    write_backup(d.path(), 300);
    let dir = d.path().to_str().unwrap();
    let idx = layout::offset_index_path(&segment(d.path(), 1));
    let before = std::fs::read(&idx).unwrap();
    std::fs::remove_file(&idx).unwrap();
    let o = kbackup(&["reindex", dir]);
    assert!(o.status.success());
    assert!(
        stdout(&o).contains("1 index pairs rebuilt"),
        "{}",
        stdout(&o)
    );
    assert_eq!(std::fs::read(&idx).unwrap(), before);
}

#[test]
fn wrong_directory_and_usage_errors_have_distinct_exit_codes() {
    let d = tempfile::tempdir().unwrap();
    let o = kbackup(&["inspect", d.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("not a kbackup backup") && err.lines().count() == 1,
        "{err}"
    );
    assert_eq!(kbackup(&["cat", "x"]).status.code(), Some(2)); // --topic missing
    assert_eq!(kbackup(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn closed_stdout_is_success() {
    let d = tempfile::tempdir().unwrap();
    write_backup(d.path(), 50_000);
    let mut child = Command::new(env!("CARGO_BIN_EXE_kbackup"))
        .args(["cat", d.path().to_str().unwrap(), "--topic", "t"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is dropped here, like `| head -1`.
    let out = child.wait_with_output().unwrap();
    assert!(first.contains("\"offset\""));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty());
}
