//! The admin calls: topic metadata and configs, creation, watermarks, log ends, the topic list.

use super::client::{admin_client, consumer, QuietContext};
use super::errors::{
    code_is_retriable, explain_auth_failure, is_authorization, kafka_error, map_code, servers,
};
use super::TopicDescription;
use crate::error::{Error, Result};
use crate::record::TopicPartition;
use futures_executor::block_on;
use rdkafka::admin::{
    AdminClient, AdminOptions, ConfigSource, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::consumer::Consumer;
use rdkafka::error::RDKafkaErrorCode;
use std::collections::BTreeMap;
use std::time::Duration;

/// How long a metadata request may take before the cluster counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Partition count and non-default configs of `topic`; `Ok(None)` when the topic does not exist.
pub fn describe_topic(
    cluster: &BTreeMap<String, String>,
    topic: &str,
    timeout: Duration,
) -> Result<Option<TopicDescription>> {
    let what = format!("describe topic {topic}");
    let admin = admin_client(cluster, &what)?;
    let md = admin
        .inner()
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| kafka_error(cluster, &what, &e))?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    if let Some(err) = t.error() {
        let code: RDKafkaErrorCode = err.into();
        if is_unknown_topic(code) {
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
    let admin = admin_client(cluster, &what)?;
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
    wait_visible(&admin, topic, partitions, timeout);
    Ok(())
}

/// Waits (up to `timeout`) until the broker's metadata shows `topic` with `partitions`
/// partitions, each with a leader: CreateTopics answers once the controller committed the
/// topic, and the broker's metadata follows a moment later, so the next call (the end
/// offsets) could find no topic yet. Returns early when the topic shows an error other
/// than "unknown" (no DESCRIBE, say): the next call reports it.
fn wait_visible(
    admin: &AdminClient<QuietContext>,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        let Ok(md) = admin.inner().fetch_metadata(Some(topic), timeout) else {
            return;
        };
        match md.topics().iter().find(|t| t.name() == topic) {
            Some(t)
                if t.error().is_none()
                    && t.partitions().len() as i32 >= partitions
                    && t.partitions()
                        .iter()
                        .all(|p| p.leader() >= 0 && p.error().is_none()) =>
            {
                return;
            }
            Some(t) if t.error().is_some_and(|e| !is_unknown_topic(e.into())) => return,
            Some(_) | None => {}
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True for the metadata errors that mean "no such topic (yet)".
fn is_unknown_topic(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic
    )
}

/// Low and high watermark of every partition of `topic`, by partition number.
pub fn end_offsets(
    cluster: &BTreeMap<String, String>,
    topic: &str,
    timeout: Duration,
) -> Result<BTreeMap<i32, (i64, i64)>> {
    let what = format!("read end offsets of topic {topic}");
    let admin = admin_client(cluster, &what)?;
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
        let wm = watermarks_retrying(timeout, || {
            admin
                .inner()
                .fetch_watermarks(topic, p.id(), timeout)
                .map_err(|e| kafka_error(cluster, &what, &e))
        })?;
        out.insert(p.id(), wm);
    }
    Ok(out)
}

/// Runs a watermark request again while it fails with a retriable error, up to `timeout` in
/// all: right after a topic is created its partitions briefly answer "not leader" or "leader
/// not available" (seen by `make bench`: a restore exited 3 on NotLeaderForPartition a
/// moment after creating its topic).
fn watermarks_retrying(
    timeout: Duration,
    mut fetch: impl FnMut() -> Result<(i64, i64)>,
) -> Result<(i64, i64)> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match fetch() {
            Err(e) if e.is_retriable() && std::time::Instant::now() < deadline => {
                log::debug!("{e}; asking again");
                std::thread::sleep(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// Low and high watermark (log start and log end offset) of each partition in `tps`.
pub fn partition_watermarks(
    cluster: &BTreeMap<String, String>,
    tps: &[TopicPartition],
    timeout: Duration,
) -> Result<BTreeMap<TopicPartition, (i64, i64)>> {
    let what = "read log start and end offsets";
    let admin = admin_client(cluster, what)?;
    let mut out = BTreeMap::new();
    for tp in tps {
        let wm = watermarks_retrying(timeout, || {
            admin
                .inner()
                .fetch_watermarks(&tp.topic, tp.partition, timeout)
                .map_err(|e| kafka_error(cluster, &format!("{what} of {tp}"), &e))
        })?;
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
    let isolation = if read_committed {
        "read_committed"
    } else {
        "read_uncommitted"
    };
    consumer(cluster, &what, &[("isolation.level", isolation)])?
        .fetch_watermarks(topic, partition, timeout)
        .map(|(_, high)| high)
        .map_err(|e| kafka_error(cluster, &what, &e))
}

/// Every topic on the cluster with its partition count; fails within [`CONNECT_TIMEOUT`] with
/// a retriable [`Error::Kafka`] when no broker answers.
pub fn list_topics(cluster: &BTreeMap<String, String>) -> Result<BTreeMap<String, i32>> {
    let what = "connect to the cluster";
    let client = consumer(cluster, what, &[])?;
    let md = client.fetch_metadata(None, CONNECT_TIMEOUT).map_err(|e| {
        // The reason (a failed authentication, say) waits in the client's queue: serve it.
        let _ = client.poll(Duration::from_millis(200));
        explain_auth_failure(kafka_error(cluster, what, &e))
    })?;
    Ok(md
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name().to_string(), t.partitions().len() as i32))
        .collect())
}

/// A topic the principal may not DESCRIBE is left out of the full topic list, exactly like a
/// missing one; asked for by name, the broker says which it is.
pub fn check_topic_authorized(cluster: &BTreeMap<String, String>, topic: &str) -> Result<()> {
    let Ok(client) = consumer(cluster, "describe a topic", &[]) else {
        return Ok(());
    };
    let Ok(md) = client.fetch_metadata(Some(topic), CONNECT_TIMEOUT) else {
        return Ok(());
    };
    let denied = md.topics().iter().any(|t| {
        t.name() == topic
            && t.error().is_some_and(|e| {
                RDKafkaErrorCode::from(e) == RDKafkaErrorCode::TopicAuthorizationFailed
            })
    });
    if denied {
        return Err(Error::Kafka {
            what: format!("read topic {topic}"),
            retriable: false,
            detail: format!(
                "TopicAuthorizationFailed: the principal may not see topic {topic}: grant it READ \
                 and DESCRIBE_CONFIGS on topic {topic} (docs/security.md)"
            ),
        });
    }
    Ok(())
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
        let c = super::super::client_config(&cluster);
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

    #[test]
    fn watermarks_are_asked_again_while_the_error_is_retriable() {
        let kafka = |retriable| Error::Kafka {
            what: "read end offsets of topic t".into(),
            retriable,
            detail: "NotLeaderForPartition".into(),
        };
        let mut calls = 0;
        let got = watermarks_retrying(Duration::from_secs(5), || {
            calls += 1;
            if calls < 3 {
                Err(kafka(true))
            } else {
                Ok((0, 42))
            }
        });
        assert_eq!((got.unwrap(), calls), ((0, 42), 3));
        let mut calls = 0;
        let got = watermarks_retrying(Duration::from_secs(5), || {
            calls += 1;
            Err(kafka(false))
        });
        assert!(got.is_err() && calls == 1, "a refusal is not asked again");
        let started = std::time::Instant::now();
        let got = watermarks_retrying(Duration::from_millis(300), || Err(kafka(true)));
        assert!(
            got.is_err() && started.elapsed() < Duration::from_secs(2),
            "bounded"
        );
    }
}
