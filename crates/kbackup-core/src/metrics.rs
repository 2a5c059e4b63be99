//! Monitoring snapshots of a running backup or restore.
//!
//! The writer and the reader bump plain integers where the work happens (no locks, no
//! allocation per record); a snapshot is assembled only when someone asks. Both front ends
//! export the same snapshot: the Connect shim as KIP-877 plugin metrics (JMX), the CLI as
//! Prometheus text. Field names are the metric names (snake case here, kebab case in JMX,
//! `kbackup_..._total` / `_seconds` in Prometheus); docs/operations.md lists every one.

use serde::Serialize;

/// One backed-up partition, as seen by the task writing it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SinkPartitionMetrics {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Records appended by this task (re-deliveries skipped are not counted).
    pub records_written: u64,
    /// Bytes appended to segment files by this task (frames: prefix and record body).
    pub bytes_written: u64,
    /// Segments finished because of size or age.
    pub segments_rolled: u64,
    /// I/O errors that stopped the partition until it was reopened from its files.
    pub errors: u64,
    /// Last offset on stable storage (-1: none).
    pub durable_offset: i64,
    /// The partition's end offset on the cluster at the last read (-1: unknown).
    pub end_offset: i64,
    /// When `end_offset` was read, ms since the epoch (-1: never).
    pub end_offset_read_ms: i64,
    /// Offsets on the cluster not durable in the backup: `end_offset - (durable_offset + 1)`
    /// (-1: unknown). Counts offsets, so transaction markers count too.
    pub lag_records: i64,
    /// 0 when `lag_records` is 0, else now minus the timestamp of the newest durable record
    /// (-1: unknown).
    pub lag_ms: i64,
    /// Highest record timestamp among the durable records this task wrote (-1: none).
    pub newest_durable_timestamp_ms: i64,
}

/// One sink task (or one `kbackup backup` run).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SinkMetrics {
    /// Sum of the partitions' `records_written` since the task started.
    pub records_written: u64,
    /// Sum of the partitions' `bytes_written`.
    pub bytes_written: u64,
    /// Segments finished because of size or age.
    pub segments_rolled: u64,
    /// Writes and flushes that failed.
    pub errors: u64,
    /// Flushes (fsync rounds) done.
    pub flushes: u64,
    /// Duration of the last flush, ms.
    pub fsync_last_ms: f64,
    /// Mean duration of a flush since the task started, ms.
    pub fsync_avg_ms: f64,
    /// Total time spent flushing, ms.
    pub fsync_time_ms_total: f64,
    /// Partitions open in this task.
    pub partitions: u64,
    /// Sum of the known partitions' `lag_records` (-1: none known).
    pub lag_records: i64,
    /// Largest known `lag_ms` of the partitions (-1: none known).
    pub lag_ms: i64,
    /// Group-offset captures that succeeded.
    pub group_captures: u64,
    /// Group-offset captures that failed.
    pub group_capture_errors: u64,
    /// End of the last successful capture, ms since the epoch (-1: none).
    pub group_capture_last_success_ms: i64,
    /// Groups read in the last successful capture.
    pub groups_captured: u64,
    /// Per open partition, sorted.
    pub partition_metrics: Vec<SinkPartitionMetrics>,
}

/// Counters of the consumer-group offset capture (see [`crate::groups`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureStats {
    /// Captures that succeeded.
    pub captures: u64,
    /// Captures that failed.
    pub errors: u64,
    /// End of the last successful capture, ms since the epoch (-1: none).
    pub last_success_ms: i64,
    /// Groups read in the last successful capture.
    pub groups: u64,
}

impl CaptureStats {
    /// No capture yet.
    pub fn new() -> CaptureStats {
        CaptureStats {
            captures: 0,
            errors: 0,
            last_success_ms: -1,
            groups: 0,
        }
    }
}

impl Default for CaptureStats {
    fn default() -> CaptureStats {
        CaptureStats::new()
    }
}

/// Backup lag of one partition from its end offset, the next offset the backup needs (last
/// durable + 1, or the log start when nothing is durable) and the newest durable timestamp
/// (-1 when unknown): `(lag_records, lag_ms)`.
pub fn partition_lag(end: i64, next: i64, newest_ts: i64, now_ms: i64) -> (i64, i64) {
    if end < 0 || next < 0 {
        return (-1, -1);
    }
    let lag = (end - next).max(0);
    let ms = if lag == 0 {
        0
    } else if newest_ts >= 0 {
        (now_ms - newest_ts).max(0)
    } else {
        -1
    };
    (lag, ms)
}

/// One restored partition, as seen by the task restoring it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SourcePartitionMetrics {
    /// Original (backed-up) topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Records known to be written to the target.
    pub records_restored: u64,
    /// Every backed-up record up to this original offset is acknowledged (-1: none).
    pub acked_offset: i64,
    /// Last backed-up original offset (-1: the backup holds no record).
    pub last_offset: i64,
    /// `last_offset - acked_offset` (0 when done).
    pub remaining_offsets: i64,
    /// 1 once every backed-up record is acknowledged.
    pub done: u64,
    /// Groups committed on the target.
    pub groups_committed: u64,
    /// Groups waiting for the partition (or a retry).
    pub groups_pending: u64,
    /// Groups not committed because they have active members.
    pub groups_refused: u64,
    /// Groups not committed because of an error.
    pub groups_failed: u64,
}

/// One source task (or one `kbackup restore` run).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SourceMetrics {
    /// Sum of the partitions' `records_restored`.
    pub records_restored: u64,
    /// Key, value and header bytes of the records handed out for writing by this task.
    pub bytes_restored: u64,
    /// Partitions assigned.
    pub partitions: u64,
    /// Partitions whose every record is acknowledged.
    pub partitions_done: u64,
    /// Sum of the partitions' group counts by state.
    pub groups_committed: u64,
    /// See [`SourcePartitionMetrics::groups_pending`].
    pub groups_pending: u64,
    /// See [`SourcePartitionMetrics::groups_refused`].
    pub groups_refused: u64,
    /// See [`SourcePartitionMetrics::groups_failed`].
    pub groups_failed: u64,
    /// 1 once the task's restore is finished (as `restore-status` means it).
    pub finished: u64,
    /// Per assigned partition, sorted.
    pub partition_metrics: Vec<SourcePartitionMetrics>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_zero_when_caught_up_and_unknown_without_an_end() {
        assert_eq!(partition_lag(10, 10, 1_000, 5_000), (0, 0));
        assert_eq!(partition_lag(15, 10, 1_000, 5_000), (5, 4_000));
        assert_eq!(partition_lag(15, 3, -1, 5_000), (12, -1));
        assert_eq!(partition_lag(-1, 10, 1_000, 5_000), (-1, -1));
        assert_eq!(partition_lag(15, -1, 1_000, 5_000), (-1, -1));
        // a backup ahead of a stale end offset is not negative lag
        assert_eq!(partition_lag(5, 10, 1_000, 5_000), (0, 0));
    }
}
