//! Helpers shared by the core's integration test binaries.

use kbackup_core::record::{Record, TimestampType};

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
