//! The cluster port over librdkafka (the CLI).

use super::admin::{create_topic, describe_topic, end_offsets, log_end, partition_watermarks};
use super::client::{admin_client, consumer, QuietContext};
use super::errors::{is_authorization, kafka_error, servers};
use super::TopicDescription;
use crate::cluster::{ClusterClient, CommitOutcome, GroupCommit};
use crate::error::{Error, Result};
use crate::reconcile::TargetRecord;
use crate::record::TopicPartition;
use futures_executor::block_on;
use rdkafka::admin::{AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// The cluster port over librdkafka (the CLI)

/// [`ClusterClient`] over librdkafka, configured with librdkafka settings (`cluster`).
#[derive(Debug, Clone)]
pub struct RdKafkaCluster {
    cluster: BTreeMap<String, String>,
}

impl RdKafkaCluster {
    /// A client for the cluster that `cluster` (librdkafka settings) describes.
    pub fn new(cluster: &BTreeMap<String, String>) -> RdKafkaCluster {
        RdKafkaCluster {
            cluster: cluster.clone(),
        }
    }

    /// A consumer that never subscribes and never commits unless told to.
    fn consumer(&self, what: &str, set: &[(&str, &str)]) -> Result<BaseConsumer<QuietContext>> {
        consumer(&self.cluster, what, set)
    }
}

fn is_active_member_error(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::UnknownMemberId
            | RDKafkaErrorCode::RebalanceInProgress
            | RDKafkaErrorCode::IllegalGeneration
            | RDKafkaErrorCode::FencedInstanceId
            | RDKafkaErrorCode::StaleMemberEpoch
    )
}

impl ClusterClient for RdKafkaCluster {
    fn servers(&self) -> String {
        servers(&self.cluster).to_string()
    }

    fn describe_topic(&self, topic: &str, timeout: Duration) -> Result<Option<TopicDescription>> {
        describe_topic(&self.cluster, topic, timeout)
    }

    fn end_offsets(&self, topic: &str, timeout: Duration) -> Result<BTreeMap<i32, (i64, i64)>> {
        end_offsets(&self.cluster, topic, timeout)
    }

    fn watermarks(
        &self,
        tps: &[TopicPartition],
        timeout: Duration,
    ) -> Result<BTreeMap<TopicPartition, (i64, i64)>> {
        partition_watermarks(&self.cluster, tps, timeout)
    }

    fn log_end(
        &self,
        topic: &str,
        partition: i32,
        read_committed: bool,
        timeout: Duration,
    ) -> Result<i64> {
        log_end(&self.cluster, topic, partition, read_committed, timeout)
    }

    fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        configs: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<()> {
        create_topic(&self.cluster, topic, partitions, configs, timeout)
    }

    fn alter_topic_configs(
        &self,
        topic: &str,
        configs: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<()> {
        let what = format!("alter configs of topic {topic}");
        let admin = admin_client(&self.cluster, &what)?;
        let mut ac = AlterConfig::new(ResourceSpecifier::Topic(topic));
        for (k, v) in configs {
            ac = ac.set(k, v);
        }
        let opts = AdminOptions::new().operation_timeout(Some(timeout));
        let results = block_on(admin.alter_configs([&ac], &opts))
            .map_err(|e| kafka_error(&self.cluster, &what, &e))?;
        let by_hand = format!(
            "set them by hand: kafka-configs --alter --entity-type topics --entity-name {topic} \
             --add-config {}",
            configs
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        for r in results {
            if let Err((_, code)) = r {
                return Err(Error::Kafka {
                    what,
                    retriable: false,
                    detail: format!("broker refused with {code:?}; {by_hand}"),
                });
            }
        }
        // rdkafka 0.39 drops the per-topic error of AlterConfigs (a missing ALTER_CONFIGS ACL,
        // say) and reports success: read the configs back (the broker's view may lag a moment).
        let mut last = String::new();
        for _ in 0..10 {
            match describe_topic(&self.cluster, topic, timeout) {
                Ok(Some(d)) if configs.iter().all(|(k, v)| d.configs.get(k) == Some(v)) => {
                    return Ok(())
                }
                Ok(d) => last = format!("the topic's configs are {:?}", d.map(|d| d.configs)),
                Err(e) if e.is_retriable() => last = e.to_string(),
                Err(_) => last = "its configs cannot be read back either".into(),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Err(Error::Kafka {
            what,
            retriable: false,
            detail: format!(
                "the broker did not apply {configs:?} ({last}); the usual cause is a missing \
                 ACL: grant ALTER_CONFIGS on topic {topic} (docs/security.md), or {by_hand}"
            ),
        })
    }

    fn consumer_groups(&self, timeout: Duration) -> Result<Vec<String>> {
        let what = "list consumer groups";
        let lister = self.consumer(what, &[])?;
        let list = lister
            .fetch_group_list(None, timeout)
            .map_err(|e| kafka_error(&self.cluster, what, &e))?;
        Ok(list
            .groups()
            .iter()
            // Connect workers' own coordination groups hold no offsets.
            .filter(|g| g.protocol_type() != "connect")
            .map(|g| g.name().to_string())
            .collect())
    }

    fn group_offsets(
        &self,
        group: &str,
        tps: &[TopicPartition],
        timeout: Duration,
    ) -> Result<BTreeMap<TopicPartition, (i64, String)>> {
        // A consumer carrying the group's id that never subscribes: it reads the offsets as
        // an outsider, never joining the group or disturbing its members.
        let what = format!("read committed offsets of group {group:?}");
        let consumer = self.consumer(&what, &[("group.id", group)])?;
        let mut tpl = TopicPartitionList::new();
        for tp in tps {
            tpl.add_partition(&tp.topic, tp.partition);
        }
        let committed = consumer
            .committed_offsets(tpl, timeout)
            .map_err(|e| kafka_error(&self.cluster, &what, &e))?;
        let mut out = BTreeMap::new();
        for el in committed.elements() {
            if let Offset::Offset(offset) = el.offset() {
                out.insert(
                    TopicPartition::new(el.topic(), el.partition()),
                    (offset, el.metadata().to_string()),
                );
            }
        }
        Ok(out)
    }

    fn commit_group(
        &self,
        group: &str,
        offsets: &[GroupCommit],
        timeout: Duration,
    ) -> CommitOutcome {
        let consumer = match self.consumer("commit group offsets", &[("group.id", group)]) {
            Ok(c) => c,
            Err(e) => {
                return CommitOutcome::Failed(format!(
                    "cannot create a client for group {group:?}: {e}"
                ))
            }
        };
        // Kafka refuses offset commits from non-members while a group has members, but checking
        // first gives a clearer message than the protocol error.
        match consumer.fetch_group_list(Some(group), timeout) {
            Ok(list) => {
                if let Some(g) = list.groups().iter().find(|g| g.name() == group) {
                    if !g.members().is_empty() {
                        return CommitOutcome::ActiveMembers(format!(
                            "group has {} active member(s) (state {})",
                            g.members().len(),
                            g.state()
                        ));
                    }
                }
            }
            // Best effort: the broker refuses the commit itself if the group has members.
            Err(e) => log::debug!("cannot describe group {group:?} before committing: {e}"),
        }
        let mut tpl = TopicPartitionList::new();
        for (topic, p, offset, metadata) in offsets {
            if tpl
                .add_partition_offset(topic, *p, Offset::Offset(*offset))
                .is_ok()
            {
                if let Some(mut el) = tpl.find_partition(topic, *p) {
                    el.set_metadata(metadata.as_str());
                }
            }
        }
        let topics: std::collections::BTreeSet<&str> =
            offsets.iter().map(|o| o.0.as_str()).collect();
        let outcome = |e: KafkaError| match e.rdkafka_error_code() {
            Some(c) if is_active_member_error(c) => {
                CommitOutcome::ActiveMembers(format!("the broker refused the commit with {c:?}"))
            }
            Some(c) if is_authorization(c) => CommitOutcome::Failed(format!(
                "{e}: grant the principal READ on group {group:?} and on topic {}",
                topics.iter().copied().collect::<Vec<_>>().join(", ")
            )),
            _ => CommitOutcome::Retry(e.to_string()),
        };
        // A consumer without READ on the group is refused its coordinator, and a synchronous
        // commit then waits for one forever (a hang): an offset fetch bounded in time goes
        // first, and the refusal is waiting in the consumer's queue when it times out.
        if let Err(e) = consumer.committed_offsets(tpl.clone(), timeout.min(Duration::from_secs(5)))
        {
            let refused = std::iter::from_fn(|| consumer.poll(Duration::ZERO))
                .take(100)
                .filter_map(|m| m.err())
                .find(|e| e.rdkafka_error_code().is_some_and(is_authorization));
            return outcome(refused.unwrap_or(e));
        }
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => CommitOutcome::Done,
            Err(e) => outcome(e),
        }
    }

    fn scan(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        timeout: Duration,
        each: &mut dyn FnMut(TargetRecord) -> bool,
    ) -> Result<()> {
        let what = format!("read back {topic}-{partition} from offset {from} to reconcile");
        let consumer = self.consumer(
            &what,
            &[
                ("group.id", "kbackup-restore-reconcile"),
                ("enable.partition.eof", "true"),
                ("isolation.level", "read_committed"),
                ("auto.offset.reset", "earliest"),
            ],
        )?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(from))
            .map_err(|e| kafka_error(&self.cluster, &what, &e))?;
        consumer
            .assign(&tpl)
            .map_err(|e| kafka_error(&self.cluster, &what, &e))?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(_))) => return Ok(()),
                Some(Err(e)) => return Err(kafka_error(&self.cluster, &what, &e)),
                Some(Ok(m)) => {
                    let (timestamp, log_append_time) = match m.timestamp() {
                        rdkafka::Timestamp::CreateTime(t) => (t, false),
                        rdkafka::Timestamp::LogAppendTime(t) => (t, true),
                        rdkafka::Timestamp::NotAvailable => (-1, false),
                    };
                    let headers = m
                        .headers()
                        .map(|hs| {
                            hs.iter()
                                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                                .collect()
                        })
                        .unwrap_or_default();
                    let t = TargetRecord {
                        offset: m.offset(),
                        timestamp,
                        log_append_time,
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec),
                        headers,
                    };
                    if !each(t) {
                        return Ok(());
                    }
                }
            }
        }
        log::warn!(
            "{what}: not at the end after {timeout:?}; reconciling only what was read \
             (the rest is restored again)"
        );
        Ok(())
    }
}
