//! The sink's monitoring counters count what the files hold, and its lag follows the end
//! offsets it is told about.

mod common;

use kbackup_core::record::BatchRecord;
use kbackup_core::record::TopicPartition;
use kbackup_core::segment::FRAME_PREFIX_LEN;
use kbackup_core::sink::{BackupSink, SinkConfig};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

fn batch(partition: i32, offsets: std::ops::Range<i64>) -> Vec<BatchRecord> {
    offsets
        .map(|o| BatchRecord {
            topic: "t".into(),
            partition,
            record: common::record(o, 10),
        })
        .collect()
}

#[test]
fn sink_metrics_count_records_bytes_rolls_and_lag() {
    let d = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(1_700_000_100_000));
    let clock = {
        let now = now.clone();
        Arc::new(move || now.load(Ordering::SeqCst))
    };
    let mut c = SinkConfig::new(d.path());
    c.max_segment_age_ms = 60_000;
    let mut sink = BackupSink::open_with_clock(c, clock).unwrap();
    sink.put(&batch(0, 0..5)).unwrap();
    sink.put(&batch(1, 0..3)).unwrap();
    // re-delivered records are not counted again
    sink.put(&batch(0, 3..5)).unwrap();
    now.fetch_add(60_000, Ordering::SeqCst);
    sink.put(&batch(0, 5..7)).unwrap();

    let m = sink.metrics(now.load(Ordering::SeqCst));
    assert_eq!(m.records_written, 10);
    assert_eq!(m.segments_rolled, 1);
    assert_eq!(m.partitions, 2);
    let p0 = &m.partition_metrics[0];
    assert_eq!((p0.records_written, p0.segments_rolled), (7, 1));
    assert_eq!(p0.durable_offset, -1, "nothing flushed yet");
    assert_eq!(p0.lag_records, -1, "no end offset known");
    let body: u64 = m.partition_metrics.iter().map(|p| p.bytes_written).sum();
    assert_eq!(m.bytes_written, body);
    assert!(m.bytes_written > 10 * (FRAME_PREFIX_LEN as u64 + 10));

    sink.flush().unwrap();
    let m = sink.metrics(now.load(Ordering::SeqCst));
    assert_eq!(m.flushes, 1);
    assert_eq!(m.partition_metrics[0].durable_offset, 6);
    assert_eq!(
        m.partition_metrics[0].newest_durable_timestamp_ms,
        common::record(6, 0).timestamp
    );

    let ends: BTreeMap<TopicPartition, (i64, i64)> = [
        (TopicPartition::new("t", 0), (0, 7)),
        (TopicPartition::new("t", 1), (0, 9)),
    ]
    .into();
    let at = now.load(Ordering::SeqCst);
    sink.note_end_offsets(&ends, at);
    let m = sink.metrics(at);
    let lags: Vec<(i64, i64)> = m
        .partition_metrics
        .iter()
        .map(|p| (p.lag_records, p.lag_ms))
        .collect();
    let ts2 = common::record(2, 0).timestamp;
    assert_eq!(lags, vec![(0, 0), (6, at - ts2)]);
    assert_eq!((m.lag_records, m.lag_ms), (6, at - ts2));
    sink.close().unwrap();
}

#[test]
fn end_offsets_are_due_only_with_a_cluster_and_after_the_interval() {
    let d = tempfile::tempdir().unwrap();
    let mut sink = BackupSink::open(SinkConfig::new(d.path())).unwrap();
    sink.put(&batch(0, 0..1)).unwrap();
    assert!(
        sink.end_offsets_due(1_000_000, 5_000).is_none(),
        "no cluster"
    );
    sink.close().unwrap();
}
