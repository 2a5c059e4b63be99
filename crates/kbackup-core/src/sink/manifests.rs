//! Topic manifests: kept up to date without ever letting a manifest problem block data.

use super::*;
use crate::manifest::{self, TopicManifest};
use std::collections::BTreeMap;

/// Per-topic manifest bookkeeping.
pub(super) struct TopicState {
    pub(super) manifest: Option<TopicManifest>,
    pub(super) max_partition: i32,
    /// A manifest write or refresh is still owed.
    pub(super) pending: bool,
    pub(super) next_attempt_ms: i64,
}

impl BackupSink {
    /// Records that a partition of `topic` exists and writes or refreshes the manifest if due.
    pub(super) fn note_topic(&mut self, topic: &str, partition: i32) {
        let root = self.config.target_dir.clone();
        let store = self.store.clone();
        let ts = self.topics.entry(topic.to_string()).or_insert_with(|| {
            let read = match &store {
                Some(s) => manifest::read_store_topic_manifest(s.as_ref(), topic),
                None => manifest::read_topic_manifest(&root, topic),
            };
            let manifest = read.unwrap_or_else(|e| {
                log::warn!("{e}; it will be rewritten");
                None
            });
            TopicState {
                manifest,
                max_partition: -1,
                pending: true,
                next_attempt_ms: i64::MIN,
            }
        });
        if partition > ts.max_partition {
            ts.max_partition = partition;
            if ts
                .manifest
                .as_ref()
                .is_none_or(|m| m.partitions <= partition)
            {
                ts.pending = true;
            }
        }
        if ts.pending {
            self.write_manifest(topic);
        }
    }

    pub(super) fn write_pending_manifests(&mut self) {
        let pending: Vec<String> = self
            .topics
            .iter()
            .filter(|(_, t)| t.pending)
            .map(|(n, _)| n.clone())
            .collect();
        for t in pending {
            self.write_manifest(&t);
        }
    }

    /// Writes the manifest of `topic`; failures are logged, never returned: data comes first.
    pub(super) fn write_manifest(&mut self, topic: &str) {
        let now = (self.clock)();
        let root = self.config.target_dir.clone();
        let has_cluster = self.config.cluster.contains_key("bootstrap.servers");
        let Some(ts) = self.topics.get_mut(topic) else {
            return;
        };
        let described = if has_cluster && now >= ts.next_attempt_ms {
            match self.cluster.describe_topic(topic, DESCRIBE_TIMEOUT) {
                Ok(Some(d)) => Some(d),
                Ok(None) => {
                    log::warn!(
                        "topic {topic} is not known to the cluster at {}; its manifest keeps \
                         the partition count seen so far",
                        self.config.cluster["bootstrap.servers"]
                    );
                    ts.next_attempt_ms = now + DESCRIBE_RETRY_MS;
                    None
                }
                Err(e) => {
                    log::warn!(
                        "topic {topic}: could not read partition count and configs for the \
                         manifest ({e}); backing up anyway and retrying later"
                    );
                    ts.next_attempt_ms = now + DESCRIBE_RETRY_MS;
                    None
                }
            }
        } else {
            None
        };
        let seen = ts.max_partition + 1;
        let old = ts.manifest.clone();
        let (partitions, configs, is_described) = match (&described, &old) {
            (Some(d), _) => (d.partitions.max(seen), d.configs.clone(), true),
            (None, Some(m)) => (m.partitions.max(seen), m.configs.clone(), m.described),
            (None, None) => (seen, BTreeMap::new(), false),
        };
        let m = TopicManifest {
            topic: topic.to_string(),
            partitions,
            configs,
            described: is_described,
            created_ms: old.as_ref().map_or(now, |m| m.created_ms),
            updated_ms: now,
        };
        let unchanged = old.as_ref().is_some_and(|o| {
            o.partitions == m.partitions && o.configs == m.configs && o.described == m.described
        });
        if !unchanged {
            let written = match &self.store {
                Some(s) => manifest::write_store_topic_manifest(s.as_ref(), &m),
                None => manifest::write_topic_manifest(&root, &m, self.perms),
            };
            if let Err(e) = written {
                log::warn!(
                    "topic {topic}: could not write its manifest ({e}); retrying at the next flush"
                );
                return;
            }
            ts.manifest = Some(m);
        }
        // Still owed: a description from a cluster that was configured but not reachable.
        ts.pending = has_cluster && described.is_none();
    }
}
