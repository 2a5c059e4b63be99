//! Segment format version 2: compressed blocks (docs/format.md, "Blocks"). Every codec reads
//! back byte-exact, seeks through the indexes into a block, a torn block is cut and re-fetched,
//! a damaged block is corruption at its position for every reader, and a partition upgraded
//! from version 1 to version 2 mid-backup reads across both.

mod common;

use common::record;
use kbackup_core::error::Error;
use kbackup_core::format::{frame, SEGMENT_VERSION_BLOCKS, SEGMENT_VERSION_RECORDS};
use kbackup_core::layout;
use kbackup_core::reader::Backup;
use kbackup_core::record::{BatchRecord, Record, TopicPartition};
use kbackup_core::segment::{self, SegmentFile};
use kbackup_core::sink::{BackupSink, SinkConfig};
use std::path::{Path, PathBuf};

fn config(dir: &Path, codec: &str) -> SinkConfig {
    let mut c = SinkConfig::new(dir);
    c.index_interval_bytes = 256;
    c.compression_type = Some(codec.into());
    c
}

/// Records with text-like values (compressible), every 7th with a 300 KiB value so blocks
/// of one big record and blocks of many small ones both occur.
fn rec(offset: i64) -> Record {
    let mut r = record(offset, 0);
    let len = if offset % 7 == 3 { 300 * 1024 } else { 200 };
    r.value = Some(
        format!("value-{offset:08}-")
            .into_bytes()
            .into_iter()
            .cycle()
            .take(len)
            .collect(),
    );
    r
}

/// Backs up `offsets` of t-0 with `cfg`, flushing every `flush_every` records.
fn backup(cfg: SinkConfig, offsets: std::ops::Range<i64>, flush_every: i64) {
    let mut sink = BackupSink::open(cfg).unwrap();
    let all: Vec<i64> = offsets.collect();
    for chunk in all.chunks(flush_every as usize) {
        let batch: Vec<BatchRecord> = chunk
            .iter()
            .map(|&o| BatchRecord {
                topic: "t".into(),
                partition: 0,
                record: rec(o),
            })
            .collect();
        sink.put(&batch).unwrap();
        sink.flush().unwrap();
    }
    sink.close().unwrap();
}

fn segments(root: &Path) -> Vec<PathBuf> {
    let dir = layout::partition_dir(root, &TopicPartition::new("t", 0)).unwrap();
    layout::list_segments(&dir)
        .unwrap()
        .into_iter()
        .map(|s| s.1)
        .collect()
}

fn read_all(root: &Path) -> kbackup_core::error::Result<Vec<Record>> {
    let mut r = Backup::open(root)?.partition("t", 0)?;
    let mut out = Vec::new();
    while let Some(rec) = r.next_record()? {
        out.push(rec);
    }
    Ok(out)
}

/// Positions of the frames (blocks) of a segment.
fn frames(seg: &Path) -> Vec<usize> {
    let data = std::fs::read(seg).unwrap();
    let mut pos = u16::from_be_bytes([data[6], data[7]]) as usize;
    let mut out = Vec::new();
    while let frame::Check::Complete { next, .. } = frame::check(&data, pos, 1, u32::MAX >> 1) {
        out.push(pos);
        pos = next;
    }
    out
}

#[test]
fn zstd_and_lz4_blocks_read_back_byte_exact_and_seek_through_the_index() {
    for codec in ["zstd", "lz4"] {
        let d = tempfile::tempdir().unwrap();
        backup(config(d.path(), codec), 0..400, 50);
        let segs = segments(d.path());
        let mut f = SegmentFile::open(&segs[0]).unwrap();
        assert_eq!(f.header().unwrap().unwrap().version, SEGMENT_VERSION_BLOCKS);
        let got = read_all(d.path()).unwrap();
        assert_eq!(got, (0..400).map(rec).collect::<Vec<_>>(), "{codec}");
        let scan = segment::scan_file(&segs[0]).unwrap();
        assert!(
            scan.stored_bytes * 4 < scan.raw_bytes,
            "{codec}: stored {} raw {}",
            scan.stored_bytes,
            scan.raw_bytes
        );
        // Blocks close at a flush and at 256 KiB: 8 flushes, big records force more.
        assert!(frames(&segs[0]).len() > 8, "{codec}");
        // A seek decompresses the block holding the target and skips to it.
        let b = Backup::open(d.path()).unwrap();
        for target in [0, 1, 3, 49, 50, 51, 217, 399] {
            let mut r = b.partition("t", 0).unwrap();
            r.seek(target).unwrap();
            assert_eq!(r.next_record().unwrap().unwrap(), rec(target), "{codec}");
        }
        assert_eq!(
            b.partition("t", 0).unwrap().last_offset().unwrap(),
            Some(399)
        );
        let rep = b.verify().unwrap();
        assert!(rep.ok, "{codec}: {:?}", rep.problems);
        assert_eq!(rep.records, 400);
    }
}

#[test]
fn a_bit_flip_in_a_compressed_block_is_corruption_at_the_block_for_every_reader() {
    let d = tempfile::tempdir().unwrap();
    backup(config(d.path(), "zstd"), 0..200, 40);
    let seg = segments(d.path()).pop().unwrap();
    let blocks = frames(&seg);
    let (victim, next) = (blocks[2], blocks[3]);
    let good = std::fs::read(&seg).unwrap();
    // Stored bytes, block header fields, the last block: every flip is found at its block.
    for (at, block) in [
        ((victim + next) / 2, victim),
        (victim + frame::PREFIX_LEN + 3, victim),
        (good.len() - 10, *blocks.last().unwrap()),
    ] {
        let mut data = good.clone();
        data[at] ^= 0x10;
        std::fs::write(&seg, &data).unwrap();
        match segment::scan_file(&seg) {
            Err(Error::Corrupt { position, .. }) => assert_eq!(position, block as u64),
            other => panic!("flip at {at}: {other:?}"),
        }
        match read_all(d.path()) {
            Err(Error::Corrupt { position, .. }) => assert_eq!(position, block as u64),
            other => panic!("flip at {at}: {:?}", other.map(|r| r.len())),
        }
        // The count (a restore's total) reads block headers only, but checks each frame's CRC.
        match Backup::open(d.path())
            .unwrap()
            .partition("t", 0)
            .unwrap()
            .record_count()
        {
            Err(Error::Corrupt { position, .. }) => assert_eq!(position, block as u64),
            other => panic!("flip at {at}: {other:?}"),
        }
        let rep = Backup::open(d.path()).unwrap().verify().unwrap();
        assert!(!rep.ok);
        assert!(
            rep.problems
                .iter()
                .any(|p| p.file == seg && p.position == Some(block as u64)),
            "{:?}",
            rep.problems
        );
    }
}

/// A restore's total counts every record of the partition before the first is sent: from the
/// block headers, so a large backup is not decompressed twice. A block that decompresses to
/// other bytes behind a valid frame CRC (which only the restore itself can find) is counted
/// by its header; across segments, versions and a torn tail the count is what the reader
/// reads.
#[test]
fn the_record_count_reads_block_headers_without_decompressing() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = config(d.path(), "zstd");
    cfg.max_segment_size_bytes = 4 * 1024;
    backup(cfg, 0..200, 40);
    let segs = segments(d.path());
    assert!(segs.len() > 2, "{segs:?}");
    let count = || -> kbackup_core::error::Result<u64> {
        Backup::open(d.path())?.partition("t", 0)?.record_count()
    };
    assert_eq!(count().unwrap(), 200);

    // Torn last block: counted as read, without it.
    let last = segs.last().unwrap();
    let whole = std::fs::read(last).unwrap();
    let cut = *frames(last).last().unwrap() + 7;
    std::fs::write(last, &whole[..cut]).unwrap();
    let readable = read_all(d.path()).unwrap().len() as u64;
    assert!(readable < 200);
    assert_eq!(count().unwrap(), readable);
    std::fs::write(last, &whole).unwrap();

    // A valid frame around a block whose compressed bytes are garbage: the count is the
    // header's (it did not decompress), the restore's read finds the damage.
    let seg = &segs[1];
    let mut data = std::fs::read(seg).unwrap();
    let (pos, end) = (frames(seg)[0], frames(seg)[1]);
    let body_start = pos + frame::PREFIX_LEN;
    let mut body = data[body_start..end].to_vec();
    let h = kbackup_core::format::block::header(&body).unwrap();
    for b in &mut body[kbackup_core::format::block::HEADER_LEN..] {
        *b = 0xA5;
    }
    data.splice(
        pos..end,
        frame::prefix(&body).into_iter().chain(body.clone()),
    );
    std::fs::write(seg, &data).unwrap();
    assert!(h.records > 0);
    assert_eq!(count().unwrap(), 200);
    assert!(matches!(read_all(d.path()), Err(Error::Corrupt { .. })));
}

/// The raw CRC: damage that the stored CRC cannot see (the frame CRC recomputed over a
/// changed block, as a buggy codec or a rewritten frame would leave) is still found.
#[test]
fn a_block_that_decompresses_to_other_bytes_fails_its_raw_crc() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = config(d.path(), "lz4");
    cfg.index_interval_bytes = 1 << 20;
    backup(cfg, 0..20, 20);
    let seg = segments(d.path()).pop().unwrap();
    let mut data = std::fs::read(&seg).unwrap();
    let (pos, end) = (frames(&seg)[0], frames(&seg)[1]);
    let body_start = pos + frame::PREFIX_LEN;
    // Rewrite the block with codec none holding raw bytes with one byte changed.
    let body = data[body_start..end].to_vec();
    let (h, mut raw) = kbackup_core::format::block::decode(&body).unwrap();
    raw[100] ^= 0x01;
    let mut new = kbackup_core::format::block::encode(
        Default::default(),
        &raw,
        h.records,
        h.first_offset,
        h.last_offset,
    )
    .unwrap();
    new[29..33].copy_from_slice(&h.raw_crc.to_be_bytes()); // keep the original raw CRC
    data.truncate(pos);
    data.extend_from_slice(&frame::prefix(&new));
    data.extend_from_slice(&new);
    std::fs::write(&seg, &data).unwrap();
    match segment::scan_file(&seg) {
        Err(Error::Corrupt {
            position, detail, ..
        }) => {
            assert_eq!(position, pos as u64);
            assert!(detail.contains("raw CRC"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_torn_block_loses_only_the_unflushed_block_and_is_cut_on_reopen() {
    let d = tempfile::tempdir().unwrap();
    backup(config(d.path(), "zstd"), 0..100, 25);
    let seg = segments(d.path()).pop().unwrap();
    let blocks = frames(&seg);
    let last = *blocks.last().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len() as usize;
    let data = std::fs::read(&seg).unwrap();
    for cut in [last + 5, (last + len) / 2, len - 1] {
        std::fs::write(&seg, &data[..cut]).unwrap();
        let scan = segment::scan_file(&seg).unwrap();
        assert_eq!(scan.torn.as_ref().map(|t| t.0), Some(last as u64));
        let got = read_all(d.path()).unwrap();
        let first_lost = got.len() as i64;
        assert!((75..100).contains(&first_lost), "{first_lost}");
        assert_eq!(got, (0..first_lost).map(rec).collect::<Vec<_>>());
    }
    // The writer cuts the torn block and the records are appended again.
    let mut sink = BackupSink::open(config(d.path(), "zstd")).unwrap();
    let resume = sink
        .open_partitions(&[TopicPartition::new("t", 0)])
        .unwrap();
    let from = resume[0].offset;
    let batch: Vec<BatchRecord> = (from..100)
        .map(|o| BatchRecord {
            topic: "t".into(),
            partition: 0,
            record: rec(o),
        })
        .collect();
    sink.put(&batch).unwrap();
    sink.close().unwrap();
    assert_eq!(
        read_all(d.path()).unwrap(),
        (0..100).map(rec).collect::<Vec<_>>()
    );
    assert!(Backup::open(d.path()).unwrap().verify().unwrap().ok);
}

/// An upgrade mid-backup: a partition backed up uncompressed (version 1), then by a writer
/// configured for zstd. The open version 1 segment goes on with record frames, the next
/// segment is version 2, and every reader reads across both.
#[test]
fn a_partition_of_version_1_then_version_2_segments_reads_seamlessly() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = config(d.path(), "none");
    cfg.max_segment_size_bytes = 400 * 1024;
    backup(cfg.clone(), 0..30, 10);
    cfg.compression_type = Some("zstd".into());
    backup(cfg, 30..120, 10);
    let versions: Vec<u16> = segments(d.path())
        .iter()
        .map(|p| {
            SegmentFile::open(p)
                .unwrap()
                .header()
                .unwrap()
                .unwrap()
                .version
        })
        .collect();
    assert!(versions.contains(&SEGMENT_VERSION_RECORDS), "{versions:?}");
    assert!(versions.contains(&SEGMENT_VERSION_BLOCKS), "{versions:?}");
    assert_eq!(
        read_all(d.path()).unwrap(),
        (0..120).map(rec).collect::<Vec<_>>()
    );
    let b = Backup::open(d.path()).unwrap();
    assert!(b.verify().unwrap().ok);
    for target in [0, 29, 30, 31, 77, 119] {
        let mut r = b.partition("t", 0).unwrap();
        r.seek(target).unwrap();
        assert_eq!(r.next_record().unwrap().unwrap(), rec(target));
    }
}

#[test]
fn an_unknown_codec_is_refused_with_the_fix() {
    let d = tempfile::tempdir().unwrap();
    let msg = match BackupSink::open(config(d.path(), "snappy")) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted"),
    };
    assert!(msg.contains("none, zstd, lz4"), "{msg}");
}

/// Rule 9 of "Torn tail versus corruption": a complete block is written whole, so a record
/// frame cut short inside it (with every CRC of the block consistent, as a writer bug would
/// leave it) is corruption, never a torn tail the writer would cut off.
#[test]
fn a_complete_last_block_whose_records_end_short_is_corruption_not_a_torn_tail() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = config(d.path(), "zstd");
    cfg.index_interval_bytes = 1 << 20;
    backup(cfg, 0..20, 20);
    let seg = segments(d.path()).pop().unwrap();
    let mut data = std::fs::read(&seg).unwrap();
    let pos = *frames(&seg).last().unwrap();
    let body = data[pos + frame::PREFIX_LEN..].to_vec();
    let (h, raw) = kbackup_core::format::block::decode(&body).unwrap();
    let short = &raw[..raw.len() - 7];
    let new = kbackup_core::format::block::encode(
        Default::default(),
        short,
        h.records,
        h.first_offset,
        h.last_offset,
    )
    .unwrap();
    data.truncate(pos);
    data.extend_from_slice(&frame::prefix(&new));
    data.extend_from_slice(&new);
    std::fs::write(&seg, &data).unwrap();
    match segment::scan_file(&seg) {
        Err(Error::Corrupt {
            position, detail, ..
        }) => {
            assert_eq!(position, pos as u64);
            assert!(detail.contains("inside a complete block"), "{detail}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    match read_all(d.path()) {
        Err(Error::Corrupt { position, .. }) => assert_eq!(position, pos as u64),
        other => panic!("{:?}", other.map(|r| r.len())),
    }
}

/// `buffer.memory.bytes` bounds the open blocks of ALL partitions: 600 partitions that each
/// fill slowly would otherwise hold a block each (600 x 256 KiB). After every `put` the sink
/// holds at most the budget, and every record still reads back in order from its partition.
#[test]
fn open_blocks_of_many_partitions_stay_within_buffer_memory_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("b");
    let mut cfg = config(&root, "zstd");
    cfg.buffer_memory_bytes = 1024 * 1024;
    let budget = cfg.buffer_memory_bytes;
    let parts = 600;
    let mut sink = BackupSink::open(cfg).unwrap();
    let (mut peak, mut max_seen) = (0u64, 0u64);
    for round in 0..12i64 {
        // one 2 KiB record per partition per put: no block reaches 256 KiB by itself
        let batch: Vec<BatchRecord> = (0..parts)
            .map(|p| {
                let mut r = record(round, 0);
                r.value = Some(format!("p{p}-r{round}-").repeat(200).into_bytes());
                BatchRecord {
                    topic: "t".into(),
                    partition: p,
                    record: r,
                }
            })
            .collect();
        let before: u64 = batch
            .iter()
            .map(|b| b.record.value.as_ref().unwrap().len() as u64)
            .sum();
        sink.put(&batch).unwrap();
        peak = peak.max(sink.buffered_bytes());
        max_seen = max_seen.max(before);
    }
    assert!(
        peak <= budget,
        "{peak} bytes held in open blocks, budget {budget}"
    );
    assert!(
        12 * max_seen > 4 * budget,
        "the data is larger than the budget, so it was enforced"
    );
    sink.flush().unwrap();
    sink.close().unwrap();
    let b = Backup::open(&root).unwrap();
    for p in [0, 299, 599] {
        let mut r = b.partition("t", p).unwrap();
        let mut got = Vec::new();
        while let Some(rec) = r.next_record().unwrap() {
            got.push(rec.offset);
        }
        assert_eq!(got, (0..12).collect::<Vec<_>>(), "partition {p}");
    }
}

/// Blocks that do not get smaller are stored raw, and the writer stops trying for a while:
/// after the first incompressible block the next two are stored raw without an attempt (even
/// though they would compress), then it tries again; back-to-back misses double the pause.
#[test]
fn after_an_incompressible_block_the_writer_pauses_the_codec_then_tries_again() {
    let d = tempfile::tempdir().unwrap();
    let mut sink = BackupSink::open(config(d.path(), "zstd")).unwrap();
    // xorshift bytes: no match for zstd to find
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    // Each flush closes one block: noise, then six compressible blocks.
    let mut values: Vec<Vec<u8>> = vec![noise(4096)];
    values.extend((0..6).map(|i| format!("text-{i}-").repeat(400).into_bytes()));
    for (o, v) in values.iter().enumerate() {
        let mut r = record(o as i64, 0);
        r.value = Some(v.clone());
        sink.put(&[BatchRecord {
            topic: "t".into(),
            partition: 0,
            record: r,
        }])
        .unwrap();
        sink.flush().unwrap();
    }
    sink.close().unwrap();
    let seg = segments(d.path()).pop().unwrap();
    let data = std::fs::read(&seg).unwrap();
    let codecs: Vec<u8> = frames(&seg)
        .iter()
        .map(|&p| data[p + frame::PREFIX_LEN])
        .collect();
    // 0 = none, 1 = zstd: the miss, two blocks without an attempt, then compressed again
    assert_eq!(codecs, vec![0, 0, 0, 1, 1, 1, 1]);
    let got = read_all(d.path()).unwrap();
    assert_eq!(
        got.iter()
            .map(|r| r.value.clone().unwrap())
            .collect::<Vec<_>>(),
        values
    );
}
