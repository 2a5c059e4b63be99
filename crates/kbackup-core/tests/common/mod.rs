//! Helpers shared by the core's integration test binaries.

use kbackup_core::layout;
use kbackup_core::record::{BatchRecord, Record, TimestampType, TopicPartition};
use kbackup_core::sink::{BackupSink, SinkConfig};
use std::path::{Path, PathBuf};

/// A CreateTime record at `offset` with key `key-<offset>` and a `value_len`-byte value
/// derived from the offset, so each record's bytes are predictable.
pub fn record(offset: i64, value_len: usize) -> Record {
    Record {
        offset,
        timestamp: 1_700_000_000_000 + offset,
        timestamp_type: TimestampType::CreateTime,
        key: Some(format!("key-{offset}").into_bytes()),
        value: Some(vec![(offset % 251) as u8; value_len]),
        headers: vec![],
    }
}

/// The sink config of the corruption tests: index entries every 256 bytes, so a segment of a
/// few records has several.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn sink_config(dir: &Path) -> SinkConfig {
    let mut c = SinkConfig::new(dir);
    c.index_interval_bytes = 256;
    c
}

/// Backs up records 0..`n` of topic `t` partition 0 (values of `value_len` bytes) with `cfg`;
/// answers the last segment file.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn backup_t0(cfg: SinkConfig, n: i64, value_len: usize) -> PathBuf {
    let root = cfg.target_dir.clone();
    let mut sink = BackupSink::open(cfg).unwrap();
    let batch: Vec<BatchRecord> = (0..n)
        .map(|o| BatchRecord {
            topic: "t".into(),
            partition: 0,
            record: record(o, value_len),
        })
        .collect();
    sink.put(&batch).unwrap();
    sink.close().unwrap();
    let dir = layout::partition_dir(&root, &TopicPartition::new("t", 0)).unwrap();
    layout::list_segments(&dir).unwrap().pop().unwrap().1
}
