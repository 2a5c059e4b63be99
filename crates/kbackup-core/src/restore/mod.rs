//! The restore engine behind the source connector (and the CLI restore).
//!
//! It reads backed-up records partition by partition for the Java task, learns from the
//! acknowledgements which new offset each original offset received, and, once a partition is
//! fully restored and acknowledged, commits every captured consumer group's translated offset
//! (see [`crate::translate`]) to the target cluster.
//!
//! Everything needed to finish that job after a crash lives in the restore state
//! (default `<source_dir>/restore-state/<digest of the connector name>/`, in the backup's
//! directory or bucket; docs/restore.md): one small JSON object per partition, written whole, holding the backed-up position of each
//! group, the new offset its target record received (the FIRST one when the restore wrote a
//! record twice) and whether the group was committed. The same files are the restore status the
//! CLI shows. The connector name is stored inside `connector.json`, never used as a path.

/// Timeout of each Kafka call made by the restore.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);
/// How often progress (not translation data, which is saved at once) is written to a local
/// state directory.
const PROGRESS_SAVE_INTERVAL: Duration = Duration::from_secs(1);
/// The same in a bucket ([`StatePlace::save_interval`]).
const PROGRESS_SAVE_INTERVAL_STORE: Duration = Duration::from_secs(5);
/// Pause between checks whether the other partitions of a topic are done.
const TOPIC_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// Wait before retrying a group commit that failed for a retriable reason.
const COMMIT_RETRY_INTERVAL: Duration = Duration::from_secs(10);
/// How long a log-end group waits for the last transaction's commit marker to land.
const SETTLE: Duration = Duration::from_secs(30);
/// How long group commits may keep failing with transient errors before the task fails.
const COMMIT_GIVE_UP: Duration = Duration::from_secs(300);

use std::time::Duration;

mod commit;
mod config;
mod engine;
#[cfg(test)]
mod engine_tests;
mod plan;
pub mod props;
mod state;
mod target;
#[cfg(test)]
mod tests;
pub mod window;
#[cfg(test)]
mod window_tests;

pub use config::{validate, SourceConfig};
pub use engine::{AckQueue, Polled, RestoreSource, RestoreStatus};
pub use plan::{group_targets, plan, PartitionPlan};
pub use state::{
    read_status, CommitState, GroupTarget, PartitionState, StateDirStatus, StatePlace, TopicState,
};
pub use target::{prepare, prepare_on, CARRIED_CONFIGS};
