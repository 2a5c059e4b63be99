//! The few cluster calls the core makes itself (topic metadata, configs, creation, watermarks).
//!
//! Record traffic goes through Kafka Connect or the CLI's own consumer/producer; this module
//! covers the admin side both need. Every failure becomes [`Error::Kafka`] with a message
//! naming the bootstrap servers, and connection problems are marked retriable so Connect tries
//! again instead of failing the task.

use crate::cluster::{ClusterClient, CommitOutcome, GroupCommit};
use crate::error::{Error, Result};
use crate::reconcile::TargetRecord;
use crate::record::TopicPartition;
use futures_executor::block_on;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::ClientConfig;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What the backup records about a topic so a restore can re-create it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    /// Partition count.
    pub partitions: i32,
    /// Topic configs not at their default (set on the topic itself).
    pub configs: BTreeMap<String, String>,
}

/// An rdkafka client config holding every `cluster` entry as given (librdkafka names).
pub fn client_config(cluster: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in cluster {
        c.set(k, v);
    }
    c
}

fn servers(cluster: &BTreeMap<String, String>) -> &str {
    cluster
        .get("bootstrap.servers")
        .map(String::as_str)
        .unwrap_or("(no bootstrap.servers configured)")
}

/// True for error codes that mean "could not reach or hear back from the cluster".
fn code_is_retriable(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        BrokerTransportFailure
            | AllBrokersDown
            | OperationTimedOut
            | RequestTimedOut
            | NetworkException
            | LeaderNotAvailable
            | NotController
            | Resolve
            | BrokerNotAvailable
            | CoordinatorNotAvailable
            | NotCoordinator
    )
}

/// Maps an rdkafka error to [`Error::Kafka`] with the bootstrap servers and a fix.
pub fn kafka_error(cluster: &BTreeMap<String, String>, what: &str, e: &KafkaError) -> Error {
    let retriable = e.rdkafka_error_code().is_some_and(code_is_retriable);
    map_code(cluster, what, retriable, e.to_string())
}

/// True for the errors a broker answers when the principal lacks an ACL.
pub fn is_authorization(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        TopicAuthorizationFailed
            | GroupAuthorizationFailed
            | ClusterAuthorizationFailed
            | TransactionalIdAuthorizationFailed
            | DelegationTokenAuthorizationFailed
    )
}

/// Like [`kafka_error`], but an authorization failure gets `fix` (the ACL to grant) instead of
/// the generic pointer to docs/security.md.
pub fn acl_error(
    cluster: &BTreeMap<String, String>,
    what: &str,
    e: &KafkaError,
    fix: &str,
) -> Error {
    let auth = e.rdkafka_error_code().is_some_and(is_authorization)
        || e.to_string().contains("uthorization failed");
    if !auth {
        return kafka_error(cluster, what, e);
    }
    Error::Kafka {
        what: what.to_string(),
        retriable: false,
        detail: format!(
            "{e}: {fix} (cluster {}; docs/security.md)",
            servers(cluster)
        ),
    }
}

fn map_code(cluster: &BTreeMap<String, String>, what: &str, retriable: bool, err: String) -> Error {
    let detail = if retriable {
        format!(
            "{err}; could not reach the cluster at {}: check bootstrap.servers, that the \
             brokers are up and reachable from this host, and the security settings",
            servers(cluster)
        )
    } else if err.contains("uthorization failed") || err.contains("AuthorizationFailed") {
        format!(
            "{err}: the principal lacks an ACL for this; docs/security.md lists the ACLs each \
             operation needs (cluster {})",
            servers(cluster)
        )
    } else {
        format!("{err} (cluster {})", servers(cluster))
    };
    Error::Kafka {
        what: what.to_string(),
        retriable,
        detail,
    }
}

fn admin(
    cluster: &BTreeMap<String, String>,
    what: &str,
) -> Result<AdminClient<DefaultClientContext>> {
    if !cluster.contains_key("bootstrap.servers") {
        return Err(Error::Config(format!(
            "{what} needs a Kafka cluster, but no bootstrap.servers is configured; set \
             cluster.bootstrap.servers (connector) or --bootstrap-server (CLI)"
        )));
    }
    let mut cfg = client_config(cluster);
    // A metadata request must never create the topic it asks about.
    cfg.set("allow.auto.create.topics", "false");
    cfg.create().map_err(|e| {
        Error::Config(format!(
            "the cluster settings are not accepted by the Kafka client: {e}; fix the \
             cluster.* / --config entries"
        ))
    })
}

/// Partition count and non-default configs of `topic`; `Ok(None)` when the topic does not exist.
pub fn describe_topic(
    cluster: &BTreeMap<String, String>,
    topic: &str,
    timeout: Duration,
) -> Result<Option<TopicDescription>> {
    let what = format!("describe topic {topic}");
    let admin = admin(cluster, &what)?;
    let md = admin
        .inner()
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| kafka_error(cluster, &what, &e))?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    if let Some(err) = t.error() {
        let code: RDKafkaErrorCode = err.into();
        if matches!(
            code,
            RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic
        ) {
            return Ok(None);
        }
        return Err(map_code(
            cluster,
            &what,
            code_is_retriable(code),
            code.to_string(),
        ));
    }
    let partitions = t.partitions().len() as i32;
    let opts = AdminOptions::new().request_timeout(Some(timeout));
    let res = block_on(admin.describe_configs([&ResourceSpecifier::Topic(topic)], &opts))
        .map_err(|e| kafka_error(cluster, &what, &e))?;
    let mut configs = BTreeMap::new();
    for r in res {
        let r =
            r.map_err(|code| map_code(cluster, &what, code_is_retriable(code), code.to_string()))?;
        // A described topic lists every config, defaults included. rdkafka 0.39 drops the
        // per-topic error (a missing DESCRIBE_CONFIGS ACL, say) and answers no entries: taking
        // that for "no configs" would restore a compacted topic as a deleting one.
        if r.entries.is_empty() {
            return Err(Error::Kafka {
                what,
                retriable: false,
                detail: format!(
                    "the broker returned no configs for topic {topic} (TopicAuthorizationFailed \
                     is the usual cause): grant DESCRIBE_CONFIGS on topic {topic} (cluster {}; \
                     docs/security.md)",
                    servers(cluster)
                ),
            });
        }
        for e in r.entries {
            if e.source == ConfigSource::DynamicTopic && !e.is_sensitive {
                if let Some(v) = e.value {
                    configs.insert(e.name, v);
                }
            }
        }
    }
    Ok(Some(TopicDescription {
        partitions,
        configs,
    }))
}

/// Creates `topic` with `partitions` partitions, the cluster's default replication and `configs`.
pub fn create_topic(
    cluster: &BTreeMap<String, String>,
    topic: &str,
    partitions: i32,
    configs: &BTreeMap<String, String>,
    timeout: Duration,
) -> Result<()> {
    let what = format!("create topic {topic}");
    let admin = admin(cluster, &what)?;
    // -1: the broker's default.replication.factor.
    let mut nt = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    for (k, v) in configs {
        nt = nt.set(k, v);
    }
    let opts = AdminOptions::new()
        .request_timeout(Some(timeout))
        .operation_timeout(Some(timeout));
    let res =
        block_on(admin.create_topics([&nt], &opts)).map_err(|e| kafka_error(cluster, &what, &e))?;
    for r in res {
        if let Err((name, code)) = r {
            let err = if code == RDKafkaErrorCode::TopicAlreadyExists {
                format!("topic {name} already exists")
            } else if is_authorization(code) {
                return Err(Error::Kafka {
                    what,
                    retriable: false,
                    detail: format!(
                        "{code}: grant CREATE on topic {name} (or create it before the restore) \
                         (cluster {}; docs/security.md)",
                        servers(cluster)
                    ),
                });
            } else {
                format!("{name}: {code}")
            };
            return Err(map_code(cluster, &what, code_is_retriable(code), err));
        }
    }
    Ok(())
}

/// Low and high watermark of every partition of `topic`, by partition number.
pub fn end_offsets(
    cluster: &BTreeMap<String, String>,
    topic: &str,
    timeout: Duration,
) -> Result<BTreeMap<i32, (i64, i64)>> {
    let what = format!("read end offsets of topic {topic}");
    let admin = admin(cluster, &what)?;
    let md = admin
        .inner()
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| kafka_error(cluster, &what, &e))?;
    let t = md.topics().iter().find(|t| t.name() == topic);
    let Some(t) = t.filter(|t| t.error().is_none()) else {
        return Err(Error::NotFound(format!(
            "topic {topic} does not exist on the cluster at {}; check the topic name",
            servers(cluster)
        )));
    };
    let mut out = BTreeMap::new();
    for p in t.partitions() {
        let wm = admin
            .inner()
            .fetch_watermarks(topic, p.id(), timeout)
            .map_err(|e| kafka_error(cluster, &what, &e))?;
        out.insert(p.id(), wm);
    }
    Ok(out)
}

/// Low and high watermark (log start and log end offset) of each partition in `tps`.
pub fn partition_watermarks(
    cluster: &BTreeMap<String, String>,
    tps: &[TopicPartition],
    timeout: Duration,
) -> Result<BTreeMap<TopicPartition, (i64, i64)>> {
    let what = "read log start and end offsets";
    let admin = admin(cluster, what)?;
    let mut out = BTreeMap::new();
    for tp in tps {
        let wm = admin
            .inner()
            .fetch_watermarks(&tp.topic, tp.partition, timeout)
            .map_err(|e| kafka_error(cluster, &format!("{what} of {tp}"), &e))?;
        out.insert(tp.clone(), wm);
    }
    Ok(out)
}

/// The end of partition `topic`-`partition`: the last stable offset with `read_committed`,
/// else the high watermark.
pub fn log_end(
    cluster: &BTreeMap<String, String>,
    topic: &str,
    partition: i32,
    read_committed: bool,
    timeout: Duration,
) -> Result<i64> {
    let what = format!("read the end offset of {topic}-{partition}");
    let mut cfg = client_config(cluster);
    cfg.set("allow.auto.create.topics", "false");
    let isolation = if read_committed {
        "read_committed"
    } else {
        "read_uncommitted"
    };
    cfg.set("isolation.level", isolation);
    let consumer: BaseConsumer = cfg.create().map_err(|e| {
        Error::Config(format!(
            "the cluster settings are not accepted by the Kafka client: {e}; fix the \
             cluster.* / --config entries"
        ))
    })?;
    consumer
        .fetch_watermarks(topic, partition, timeout)
        .map(|(_, high)| high)
        .map_err(|e| kafka_error(cluster, &what, &e))
}

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
    fn consumer(&self, what: &str, set: &[(&str, &str)]) -> Result<BaseConsumer> {
        let mut cfg = client_config(&self.cluster);
        cfg.set("allow.auto.create.topics", "false")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        for (k, v) in set {
            cfg.set(*k, *v);
        }
        cfg.create()
            .map_err(|e| kafka_error(&self.cluster, what, &e))
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
        let admin = admin(&self.cluster, &what)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_config_passes_every_key_through() {
        let cluster: BTreeMap<String, String> = [
            ("bootstrap.servers", "h:1"),
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "PLAIN"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let c = client_config(&cluster);
        for (k, v) in &cluster {
            assert_eq!(c.get(k), Some(v.as_str()));
        }
    }

    #[test]
    fn missing_bootstrap_is_a_config_error() {
        let e = describe_topic(&BTreeMap::new(), "t", Duration::from_millis(10)).unwrap_err();
        assert!(
            matches!(e, Error::Config(ref m) if m.contains("bootstrap.servers")),
            "{e}"
        );
    }

    #[test]
    fn unreachable_cluster_is_retriable_and_names_servers() {
        // Port 1 on loopback refuses connections at once.
        let cluster: BTreeMap<String, String> =
            [("bootstrap.servers".to_string(), "127.0.0.1:1".to_string())].into();
        let e = describe_topic(&cluster, "t", Duration::from_millis(1500)).unwrap_err();
        assert!(e.is_retriable(), "{e}");
        let m = e.to_string();
        assert!(
            m.contains("127.0.0.1:1") && m.contains("bootstrap.servers"),
            "{m}"
        );
    }
}
