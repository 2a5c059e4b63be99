//! Helpers shared by the core's integration test binaries.

use kbackup_core::record::{Record, TimestampType};
use kbackup_core::sink::SinkConfig;
use std::path::Path;

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
