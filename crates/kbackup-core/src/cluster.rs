//! The cluster port: every Kafka call the core makes goes through [`ClusterClient`].
//!
//! The core keeps the rules (when to capture group offsets, what a manifest holds, which topics
//! to create, where a group lands, what to commit) and leaves the talking to Kafka to whoever
//! runs it:
//! - the CLI uses [`crate::kafka::RdKafkaCluster`], librdkafka with librdkafka settings;
//! - on the Connect path the JNI bridge passes a client that calls back into the Java shim,
//!   which runs Kafka's own Java clients with the connector's Java client properties. So every
//!   authentication a Connect worker supports (JAAS, JKS stores, OAuth and IAM callback
//!   handlers, Kerberos, config providers) works for the core's calls too, and no secret ever
//!   reaches the core.
//!
//! One call per cluster operation, never per record.

use crate::error::Result;
use crate::kafka::TopicDescription;
use crate::reconcile::TargetRecord;
use crate::record::TopicPartition;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// One group offset to commit: target topic, partition, offset, commit metadata.
pub type GroupCommit = (String, i32, i64, String);

/// Outcome of committing one group's offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Committed.
    Done,
    /// Not committed: the group has active members (kbackup never moves a live group).
    ActiveMembers(String),
    /// A transient failure (coordinator moving, broker unreachable): try again later.
    Retry(String),
    /// A permanent failure (authorization): retrying does not help.
    Failed(String),
}

/// The Kafka operations of the core, against one cluster.
///
/// Offsets of "end" are the last stable offset (what a read_committed consumer sees), except
/// in [`ClusterClient::log_end`] with `read_committed` false.
pub trait ClusterClient: Send + Sync {
    /// The bootstrap servers, for messages.
    fn servers(&self) -> String;

    /// Partition count and non-default configs of `topic`; `Ok(None)` when it does not exist.
    fn describe_topic(&self, topic: &str, timeout: Duration) -> Result<Option<TopicDescription>>;

    /// Log start and end offset of every partition of `topic`; `Error::NotFound` without it.
    fn end_offsets(&self, topic: &str, timeout: Duration) -> Result<BTreeMap<i32, (i64, i64)>>;

    /// Log start and end offset of each partition in `tps`.
    fn watermarks(
        &self,
        tps: &[TopicPartition],
        timeout: Duration,
    ) -> Result<BTreeMap<TopicPartition, (i64, i64)>>;

    /// The end of one partition: the last stable offset with `read_committed`, else the high
    /// watermark.
    fn log_end(
        &self,
        topic: &str,
        partition: i32,
        read_committed: bool,
        timeout: Duration,
    ) -> Result<i64>;

    /// Creates `topic` with the broker's default replication factor and `configs`.
    fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        configs: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<()>;

    /// Sets `configs` on `topic` (incrementally: other configs stay as they are).
    fn alter_topic_configs(
        &self,
        topic: &str,
        configs: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<()>;

    /// Ids of the consumer groups the principal may describe (not Connect's worker groups).
    fn consumer_groups(&self, timeout: Duration) -> Result<Vec<String>>;

    /// `group`'s committed offset and metadata on each partition of `tps` that has one.
    fn group_offsets(
        &self,
        group: &str,
        tps: &[TopicPartition],
        timeout: Duration,
    ) -> Result<BTreeMap<TopicPartition, (i64, String)>>;

    /// Commits `offsets` for `group` as a non-member (never joins the group).
    fn commit_group(
        &self,
        group: &str,
        offsets: &[GroupCommit],
        timeout: Duration,
    ) -> CommitOutcome;

    /// Calls `each` with every committed record of the partition from offset `from` to its
    /// end (as of the call), in order, until `each` returns false.
    fn scan(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        timeout: Duration,
        each: &mut dyn FnMut(TargetRecord) -> bool,
    ) -> Result<()>;
}

/// The end of partition `topic`-`partition` once no transaction is open on it: the high
/// watermark read at a moment the last stable offset equals it, so it lies past the commit
/// marker of the last transaction. The transaction coordinator writes that marker after the
/// producer's commit has returned, so right after a transactional write the high watermark can
/// still be short of it. Waits up to `settle`; if a transaction is still open then (another
/// producer's), returns the high watermark as it is.
pub fn settled_log_end(
    cluster: &dyn ClusterClient,
    topic: &str,
    partition: i32,
    timeout: Duration,
    settle: Duration,
) -> Result<i64> {
    let deadline = std::time::Instant::now() + settle;
    loop {
        // Stable end first: both only grow, so equal values read in this order mean no
        // transaction was open at the moment between the two reads.
        let stable = cluster.log_end(topic, partition, true, timeout)?;
        let high = cluster.log_end(topic, partition, false, timeout)?;
        if stable == high {
            return Ok(high);
        }
        if std::time::Instant::now() >= deadline {
            log::warn!(
                "{topic}-{partition}: a transaction is still open at offset {stable} after \
                 {settle:?}; using the high watermark {high}"
            );
            return Ok(high);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl fmt::Debug for dyn ClusterClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterClient({})", self.servers())
    }
}

/// Test doubles of the cluster port, for the rules that decide what a failed call means.
#[cfg(test)]
pub mod testing {
    use super::*;
    use crate::error::Error;

    /// A cluster port whose every call fails with `err` (no Kafka involved: this checks the
    /// rule deciding when failed captures fail the task).
    pub struct Refusing(Error);

    impl ClusterClient for Refusing {
        fn servers(&self) -> String {
            "test:9092".into()
        }
        fn describe_topic(&self, _: &str, _: Duration) -> Result<Option<TopicDescription>> {
            Err(self.err())
        }
        fn end_offsets(&self, _: &str, _: Duration) -> Result<BTreeMap<i32, (i64, i64)>> {
            Err(self.err())
        }
        fn watermarks(
            &self,
            _: &[TopicPartition],
            _: Duration,
        ) -> Result<BTreeMap<TopicPartition, (i64, i64)>> {
            Err(self.err())
        }
        fn log_end(&self, _: &str, _: i32, _: bool, _: Duration) -> Result<i64> {
            Err(self.err())
        }
        fn create_topic(
            &self,
            _: &str,
            _: i32,
            _: &BTreeMap<String, String>,
            _: Duration,
        ) -> Result<()> {
            Err(self.err())
        }
        fn alter_topic_configs(
            &self,
            _: &str,
            _: &BTreeMap<String, String>,
            _: Duration,
        ) -> Result<()> {
            Err(self.err())
        }
        fn consumer_groups(&self, _: Duration) -> Result<Vec<String>> {
            Err(self.err())
        }
        fn group_offsets(
            &self,
            _: &str,
            _: &[TopicPartition],
            _: Duration,
        ) -> Result<BTreeMap<TopicPartition, (i64, String)>> {
            Err(self.err())
        }
        fn commit_group(&self, _: &str, _: &[GroupCommit], _: Duration) -> CommitOutcome {
            CommitOutcome::Failed(self.err().to_string())
        }
        fn scan(
            &self,
            _: &str,
            _: i32,
            _: i64,
            _: Duration,
            _: &mut dyn FnMut(TargetRecord) -> bool,
        ) -> Result<()> {
            Err(self.err())
        }
    }

    impl Refusing {
        /// Every call fails with an `Error::Kafka` carrying `detail`.
        pub fn new(retriable: bool, detail: &str) -> Refusing {
            Refusing(Error::Kafka {
                what: "a cluster call".into(),
                retriable,
                detail: detail.into(),
            })
        }

        fn err(&self) -> Error {
            match &self.0 {
                Error::Kafka {
                    what,
                    retriable,
                    detail,
                } => Error::Kafka {
                    what: what.clone(),
                    retriable: *retriable,
                    detail: detail.clone(),
                },
                other => Error::State(other.to_string()),
            }
        }
    }
}
