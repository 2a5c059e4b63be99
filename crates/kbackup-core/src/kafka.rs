//! The few cluster calls the core makes itself (topic metadata, configs, creation, watermarks).
//!
//! Record traffic goes through Kafka Connect or the CLI's own consumer/producer; this module
//! covers the admin side both need. Every failure becomes [`Error::Kafka`] with a message
//! naming the bootstrap servers, and connection problems are marked retriable so Connect tries
//! again instead of failing the task.

use crate::error::{Error, Result};
use crate::record::TopicPartition;
use futures_executor::block_on;
use rdkafka::admin::{
    AdminClient, AdminOptions, ConfigSource, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::ClientConfig;
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

/// The end of partition `topic`-`partition` once no transaction is open on it: the high
/// watermark read at a moment the last stable offset equals it, so it lies past the commit
/// marker of the last transaction. The transaction coordinator writes that marker after the
/// producer's commit has returned, so right after a transactional write the high watermark can
/// still be short of it. Waits up to `settle`; if a transaction is still open then (another
/// producer's), returns the high watermark as it is.
pub fn settled_log_end(
    cluster: &BTreeMap<String, String>,
    topic: &str,
    partition: i32,
    timeout: Duration,
    settle: Duration,
) -> Result<i64> {
    let what = format!("read the end offset of {topic}-{partition}");
    let client = |isolation: &str| -> Result<BaseConsumer> {
        let mut cfg = client_config(cluster);
        cfg.set("allow.auto.create.topics", "false");
        cfg.set("isolation.level", isolation);
        cfg.create().map_err(|e| {
            Error::Config(format!(
                "the cluster settings are not accepted by the Kafka client: {e}; fix the \
                 cluster.* / --config entries"
            ))
        })
    };
    let (committed, uncommitted) = (client("read_committed")?, client("read_uncommitted")?);
    let deadline = Instant::now() + settle;
    loop {
        let end = |c: &BaseConsumer| {
            c.fetch_watermarks(topic, partition, timeout)
                .map(|(_, high)| high)
                .map_err(|e| kafka_error(cluster, &what, &e))
        };
        let high = end(&uncommitted)?;
        let stable = end(&committed)?;
        if stable >= high {
            return Ok(high);
        }
        if Instant::now() >= deadline {
            log::warn!(
                "{topic}-{partition}: a transaction is still open at offset {stable} after \
                 {settle:?}; using the high watermark {high}"
            );
            return Ok(high);
        }
        std::thread::sleep(Duration::from_millis(50));
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
