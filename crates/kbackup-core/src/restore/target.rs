//! The target cluster: topic creation, held configs, refusals (connector start).

use super::*;
use super::{config::*, state::*};
use crate::cluster::ClusterClient;
use crate::error::{Error, Result};
use crate::kafka::RdKafkaCluster;
use std::collections::BTreeMap;

/// Topic configs carried from the backup to a topic the restore creates.
///
/// These decide what the topic means to its consumers (deletion vs compaction, how long data
/// lives, record size, timestamps, compression). Physical layout (`segment.*`, index settings),
/// replica placement (`min.insync.replicas`, unclean election) and tiered storage depend on the
/// target cluster and are left to its defaults.
pub const CARRIED_CONFIGS: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "delete.retention.ms",
    "max.compaction.lag.ms",
    "max.message.bytes",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.type",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "retention.bytes",
    "retention.ms",
];

/// Configs held at these values while the restore writes, so the broker neither deletes the
/// old-timestamped restored records nor rewrites or rejects their timestamps.
pub(super) const HELD_CONFIGS: &[(&str, &str)] = &[
    ("retention.ms", "-1"),
    ("retention.bytes", "-1"),
    ("message.timestamp.type", "CreateTime"),
];

/// Creates, checks and prepares the target topics (connector start): see docs/restore.md.
///
/// Per topic: a missing target topic is created with the backed-up partition count and the
/// [`CARRIED_CONFIGS`], with retention and timestamp checks held off until its restore
/// finishes; an existing one with fewer partitions is refused; one holding records is refused
/// unless `allow_non_empty_topics` (or this restore created it).
pub fn prepare(cfg: &SourceConfig) -> Result<()> {
    prepare_on(cfg, &RdKafkaCluster::new(&cfg.cluster))
}

/// [`prepare`] with every Kafka call going through `cluster`.
pub fn prepare_on(cfg: &SourceConfig, cluster: &dyn ClusterClient) -> Result<()> {
    let problems = validate(cfg);
    if let Some((key, msg)) = problems.first() {
        return Err(Error::Config(format!("{key}: {msg}")));
    }
    let place = cfg.state_place()?;
    claim_state_dir(&place, &cfg.connector_name)?;
    let backup = cfg.open_backup()?;
    for topic in &cfg.topics {
        let target = cfg.target_topic(topic);
        let m = backup.manifest(topic)?;
        let have = backup.partitions(topic)?;
        let needed = m
            .as_ref()
            .map(|m| m.partitions)
            .unwrap_or(0)
            .max(have.last().map_or(0, |p| p + 1))
            .max(1);
        let final_configs: BTreeMap<String, String> = m
            .map(|m| {
                m.configs
                    .into_iter()
                    .filter(|(k, _)| CARRIED_CONFIGS.contains(&k.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        let known = TopicState::load(&place, topic)?;
        match cluster
            .describe_topic(target, KAFKA_TIMEOUT)?
            .map(|d| d.partitions)
        {
            Some(n) if n < needed => {
                return Err(Error::Config(format!(
                    "target topic {target} has {n} partitions but the backup of {topic} has {needed}: \
                     records must go to the same partition numbers; delete the topic, increase its \
                     partitions (kafka-topics --alter --partitions {needed}) or restore into another \
                     name with topics.rename"
                )));
            }
            Some(_) => {
                let ours = known.as_ref().is_some_and(|k| k.target_topic == target);
                if !ours && !cfg.allow_non_empty_topics {
                    if let Some(p) = first_non_empty_partition(cluster, target)? {
                        return Err(Error::Config(format!(
                            "target topic {target} already holds records (partition {p}): restoring \
                             into it would mix old and restored records and group offsets would point \
                             between them; delete the topic, restore into another name with \
                             topics.rename, or set allow.non.empty.topics=true to append anyway"
                        )));
                    }
                }
                if known.is_none() {
                    TopicState {
                        topic: topic.clone(),
                        target_topic: target.to_string(),
                        created_by_restore: false,
                        final_configs,
                        configs_restored: true,
                    }
                    .save(&place)?;
                }
            }
            None => {
                let mut held = final_configs.clone();
                for (k, v) in HELD_CONFIGS {
                    held.insert(k.to_string(), v.to_string());
                }
                for k in [
                    "message.timestamp.before.max.ms",
                    "message.timestamp.after.max.ms",
                ] {
                    if held.contains_key(k) {
                        held.insert(k.to_string(), i64::MAX.to_string());
                    }
                }
                // Record the intent first: a crash after creation still restores the configs.
                TopicState {
                    topic: topic.clone(),
                    target_topic: target.to_string(),
                    created_by_restore: true,
                    final_configs,
                    configs_restored: false,
                }
                .save(&place)?;
                cluster.create_topic(target, needed, &held, KAFKA_TIMEOUT)?;
                log::info!(
                    "created topic {target} with {needed} partitions for the restore of {topic}"
                );
            }
        }
    }
    Ok(())
}

pub(super) fn first_non_empty_partition(
    cluster: &dyn ClusterClient,
    topic: &str,
) -> Result<Option<i32>> {
    let ends = cluster.end_offsets(topic, KAFKA_TIMEOUT)?;
    Ok(ends
        .into_iter()
        .find(|(_, (low, high))| high > low)
        .map(|(p, _)| p))
}
