//! The sink's monitoring figures (see [`crate::metrics`]).

use super::*;
use crate::cluster::ClusterClient;
use crate::groups::GroupOffsetCapture;
use crate::metrics::{self, SinkMetrics, SinkPartitionMetrics};
use crate::record::TopicPartition;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Monitoring (see [`crate::metrics`]): nothing here touches the files or the write path.
impl BackupSink {
    /// The cluster and open partitions whose end offsets are due for a refresh: none without
    /// a cluster, or when they were asked less than `max_age_ms` ago. The caller reads them
    /// ([`ClusterClient::watermarks`]) without holding the sink, then hands them to
    /// [`BackupSink::note_end_offsets`]: a slow cluster never stalls `put`.
    pub fn end_offsets_due(
        &mut self,
        now_ms: i64,
        max_age_ms: i64,
    ) -> Option<(Arc<dyn ClusterClient>, Vec<TopicPartition>)> {
        if !self.config.cluster.contains_key("bootstrap.servers")
            || now_ms.saturating_sub(self.ends_asked_ms) < max_age_ms
        {
            return None;
        }
        let mut tps: Vec<TopicPartition> = self
            .parts
            .iter()
            .flat_map(|(t, m)| m.keys().map(|p| TopicPartition::new(t.clone(), *p)))
            .collect();
        if tps.is_empty() {
            return None;
        }
        tps.sort();
        // Asked now, answered or not: a cluster that does not answer is asked again later.
        self.ends_asked_ms = now_ms;
        Some((Arc::clone(&self.cluster), tps))
    }

    /// Records log start and end offsets read from the cluster at `now_ms`.
    pub fn note_end_offsets(&mut self, marks: &BTreeMap<TopicPartition, (i64, i64)>, now_ms: i64) {
        for (tp, &(start, end)) in marks {
            self.ends.insert(
                tp.clone(),
                EndOffset {
                    start,
                    end,
                    read_ms: now_ms,
                },
            );
        }
    }

    /// A snapshot of the counters and the backup lag of every open partition.
    pub fn metrics(&self, now_ms: i64) -> SinkMetrics {
        let t = &self.totals;
        let mut parts = Vec::new();
        for (topic, m) in &self.parts {
            for (p, st) in m {
                let c = &st.counters;
                let durable = st.last_durable.unwrap_or(-1);
                let known = self.ends.get(&TopicPartition::new(topic.clone(), *p));
                let (end, read_ms, next) = match known {
                    Some(e) => (e.end, e.read_ms, st.last_durable.map_or(e.start, |d| d + 1)),
                    None => (-1, -1, -1),
                };
                let (lag_records, lag_ms) =
                    metrics::partition_lag(end, next, c.max_ts_durable, now_ms);
                parts.push(SinkPartitionMetrics {
                    topic: topic.clone(),
                    partition: *p,
                    records_written: c.records,
                    bytes_written: c.bytes,
                    segments_rolled: c.rolled,
                    errors: c.errors,
                    durable_offset: durable,
                    end_offset: end,
                    end_offset_read_ms: read_ms,
                    lag_records,
                    lag_ms,
                    newest_durable_timestamp_ms: c.max_ts_durable,
                });
            }
        }
        parts.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let known: Vec<&SinkPartitionMetrics> =
            parts.iter().filter(|p| p.lag_records >= 0).collect();
        let lag_records = if known.is_empty() {
            -1
        } else {
            known.iter().map(|p| p.lag_records).sum()
        };
        let lag_ms = known.iter().map(|p| p.lag_ms).max().unwrap_or(-1);
        let cap = self
            .capture
            .as_ref()
            .map(GroupOffsetCapture::stats)
            .unwrap_or_default();
        SinkMetrics {
            records_written: t.records,
            bytes_written: t.bytes,
            segments_rolled: t.rolled,
            errors: t.errors,
            flushes: t.flushes,
            fsync_last_ms: t.flush_last_ms,
            fsync_avg_ms: if t.flushes == 0 {
                0.0
            } else {
                t.flush_total_ms / t.flushes as f64
            },
            fsync_time_ms_total: t.flush_total_ms,
            partitions: parts.len() as u64,
            lag_records,
            lag_ms,
            group_captures: cap.captures,
            group_capture_errors: cap.errors,
            group_capture_last_success_ms: cap.last_success_ms,
            groups_captured: cap.groups,
            partition_metrics: parts,
        }
    }
}
