//! Segment header, frame and scan rules, write and reopen.

use super::*;
use crate::format::body;
use crate::format::SEGMENT_VERSION_RECORDS;
use crate::index;
use crate::layout;
use crate::perms::Perms;
use crate::record::{Header, TimestampType};
use std::fs::OpenOptions;
use std::path::PathBuf;

fn header(base: i64) -> SegmentHeader {
    SegmentHeader {
        version: SEGMENT_VERSION_RECORDS,
        header_len: 0,
        partition: 2,
        base_offset: base,
        prev_last_offset: -1,
        index_interval_bytes: 64,
        created_ms: 123,
        topic: "t".into(),
    }
}

fn body(offset: i64) -> Vec<u8> {
    let r = Record {
        offset,
        timestamp: offset * 10,
        timestamp_type: TimestampType::CreateTime,
        key: Some(vec![1; 5]),
        value: Some(vec![2; 20]),
        headers: vec![Header {
            key: "h".into(),
            value: None,
        }],
    };
    let mut b = Vec::new();
    body::encode(&mut b, &r);
    b
}

fn write(dir: &Path, offsets: &[i64]) -> PathBuf {
    let mut w = SegmentWriter::create(dir, header(offsets[0]), Perms::default()).unwrap();
    for &o in offsets {
        w.append(o, o * 10, &body(o)).unwrap();
    }
    let p = w.path().to_path_buf();
    w.finish().unwrap();
    p
}

#[test]
fn header_round_trips_and_crc_is_checked() {
    let h = header(7);
    let bytes = h.encode();
    let back = SegmentHeader::decode(Path::new("x"), &bytes)
        .unwrap()
        .unwrap();
    assert_eq!(back.base_offset, 7);
    assert_eq!(back.topic, "t");
    assert_eq!(back.header_len as usize, bytes.len());
    assert_eq!(
        SegmentHeader::decode(Path::new("x"), &bytes[..10]).unwrap(),
        None
    );
    let mut bad = bytes.clone();
    bad[12] ^= 0x40;
    let e = SegmentHeader::decode(Path::new("x"), &bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("CRC"), "{e}");
}

#[test]
fn damaged_header_is_corruption_never_a_torn_creation() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), &[0, 1, 2]);
    let good = std::fs::read(&p).unwrap();
    let hl = header(0).encode().len();
    // Every bit of every header byte: magic, version, length, fields, topic, CRC.
    for at in 0..hl {
        for bit in 0..8 {
            let mut data = good.clone();
            data[at] ^= 1 << bit;
            match SegmentHeader::decode(&p, &data) {
                Err(Error::Corrupt { position, .. }) => {
                    assert!(position < hl as u64, "byte {at} bit {bit}: at {position}")
                }
                other => panic!("byte {at} bit {bit}: {other:?}"),
            }
        }
    }
    // A torn creation (any prefix of the header) holds no record.
    for n in 0..hl {
        assert_eq!(SegmentHeader::decode(&p, &good[..n]).unwrap(), None, "{n}");
    }
}

#[test]
fn scan_finds_records_and_index_matches_writer() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), &[10, 11, 15, 20, 21, 22, 40]);
    let s = scan_file(&p).unwrap();
    assert_eq!(s.records, 7);
    assert_eq!((s.first_offset, s.last_offset), (Some(10), Some(40)));
    assert!(s.torn.is_none());
    assert!(
        s.indexes.offsets.len() > 1,
        "interval 64 must give several entries"
    );
    let written = (
        std::fs::read(layout::offset_index_path(&p)).unwrap(),
        std::fs::read(layout::time_index_path(&p)).unwrap(),
    );
    crate::verify::rebuild_index(&p).unwrap();
    let rebuilt = (
        std::fs::read(layout::offset_index_path(&p)).unwrap(),
        std::fs::read(layout::time_index_path(&p)).unwrap(),
    );
    assert_eq!(written, rebuilt);
}

#[test]
fn torn_tail_is_reported_and_truncated_on_reopen() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), &[0, 1, 2]);
    let full = std::fs::metadata(&p).unwrap().len();
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(full - 5).unwrap();
    let s = scan_file(&p).unwrap();
    assert_eq!(s.records, 2);
    let (pos, _) = s.torn.clone().unwrap();
    let mut w = SegmentWriter::reopen(&p, s).unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().len(), pos);
    assert_eq!(w.last_offset(), Some(1));
    w.append(2, 20, &body(2)).unwrap();
    w.finish().unwrap();
    let s = scan_file(&p).unwrap();
    assert_eq!((s.records, s.torn.is_none()), (3, true));
    assert_eq!(std::fs::metadata(&p).unwrap().len(), full);
    assert_eq!(
        index::compare(&p, &index::encode_files(0, 64, &s.indexes)).unwrap(),
        index::IndexState::Valid
    );
}

#[test]
fn crc_mismatch_in_the_middle_is_corruption_with_position() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), &[0, 1, 2]);
    let mut data = std::fs::read(&p).unwrap();
    let hl = header(0).encode().len();
    let second = hl + FRAME_PREFIX_LEN + body(0).len();
    data[second + FRAME_PREFIX_LEN + 30] ^= 0x01;
    std::fs::write(&p, &data).unwrap();
    match scan_file(&p).unwrap_err() {
        Error::Corrupt {
            position, detail, ..
        } => {
            assert_eq!(position, second as u64);
            assert!(detail.contains("CRC"), "{detail}");
        }
        e => panic!("{e}"),
    }
}

#[test]
fn damaged_length_field_in_the_middle_is_corruption_not_a_torn_tail() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), &[0, 1, 2]);
    let mut data = std::fs::read(&p).unwrap();
    let hl = header(0).encode().len();
    let second = hl + FRAME_PREFIX_LEN + body(0).len();
    // A larger length would reach past the end of the file and look like a torn write.
    data[second + 1] ^= 0x10;
    std::fs::write(&p, &data).unwrap();
    match scan_file(&p).unwrap_err() {
        Error::Corrupt { position, .. } => assert_eq!(position, second as u64),
        e => panic!("{e}"),
    }
}

/// Defect 5: a complete last frame with a bad CRC was taken for a torn write and cut off.
#[test]
fn defect5_bit_flip_in_the_last_record_is_corruption_not_a_torn_tail() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), &[0, 1, 2]);
    let good = std::fs::read(&p).unwrap();
    let hl = header(0).encode().len();
    let last = hl + 2 * (FRAME_PREFIX_LEN + body(0).len());
    // Body, body CRC, length CRC and length of the last frame.
    for at in [
        good.len() - 3,
        last + 9,
        last + 5,
        last + 3,
        last + FRAME_PREFIX_LEN,
    ] {
        let mut data = good.clone();
        data[at] ^= 0x04;
        std::fs::write(&p, &data).unwrap();
        match scan_file(&p) {
            Err(Error::Corrupt { position, .. }) => {
                assert_eq!(position, last as u64, "flip at byte {at}")
            }
            other => panic!("flip at byte {at}: expected corruption, got {other:?}"),
        }
    }
}

#[test]
fn torn_tail_is_a_short_frame_or_zero_fill_only() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), &[0, 1, 2]);
    let good = std::fs::read(&p).unwrap();
    let hl = header(0).encode().len();
    let last = hl + 2 * (FRAME_PREFIX_LEN + body(0).len());
    // Every cut inside the last frame leaves a torn tail at its start.
    for cut in 1..good.len() - last {
        std::fs::write(&p, &good[..good.len() - cut]).unwrap();
        let s = scan_file(&p).unwrap();
        assert_eq!(s.torn.map(|t| t.0), Some(last as u64), "cut {cut}");
        assert_eq!(s.records, 2);
    }
    // A short frame whose bytes are followed by zero fill is still torn.
    let mut data = good[..good.len() - 10].to_vec();
    data.extend_from_slice(&[0; 5]);
    std::fs::write(&p, &data).unwrap();
    assert_eq!(scan_file(&p).unwrap().torn.map(|t| t.0), Some(last as u64));
    // Zero fill from a frame boundary to the end (space allocated, never written).
    let mut data = good[..last].to_vec();
    data.extend_from_slice(&[0; 100]);
    std::fs::write(&p, &data).unwrap();
    assert_eq!(scan_file(&p).unwrap().torn.map(|t| t.0), Some(last as u64));
}

#[test]
fn zero_filled_tail_is_torn_not_corrupt() {
    let d = tempfile::tempdir().unwrap();
    let p = write(d.path(), &[0, 1]);
    let mut data = std::fs::read(&p).unwrap();
    let len = data.len();
    data.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&p, &data).unwrap();
    let s = scan_file(&p).unwrap();
    assert_eq!(s.torn.unwrap().0, len as u64);
    assert_eq!(s.records, 2);
}
