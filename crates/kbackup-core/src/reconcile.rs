//! Reconciling a restore's state with what the target partition really holds.
//!
//! Acknowledgements can be lost: a SIGKILL takes those not yet saved, and with exactly-once
//! Connect commits a transaction (records and source offsets together) before the task hears
//! of it. Resuming from the saved state alone would write those records twice. So when a
//! partition is opened, the records of the target partition after the last one the state knows
//! are read (read_committed) and matched, in order, against the backed-up records after the
//! acknowledged prefix; each match is an acknowledgement. The restore then resumes after what
//! is proven written.
//!
//! Matching is conservative: a target record equals a backed-up one when key, value, headers
//! and timestamp are equal (the timestamp is not compared when the target stamps its own or the
//! backup has none); backed-up records skipped over to reach a match were dropped (a transform
//! or `errors.tolerance`); the first target record that matches nothing ends the
//! reconciliation, and everything after it is left to the ordinary resume rules.

use crate::cluster::ClusterClient;
use crate::error::{Error, Result};
use crate::record::Record;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Most backed-up records skipped as "dropped" to find the match of one target record; past
/// it the target record counts as unmatched (and reconciliation stops there).
pub const MAX_SKIPPED: usize = 100_000;
/// How long reading the target to its end may take before the reconciliation stops early.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A record read back from the target partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRecord {
    /// Its offset in the target partition.
    pub offset: i64,
    /// Its timestamp.
    pub timestamp: i64,
    /// The broker stamped it (`LogAppendTime`): its timestamp says nothing about the original.
    pub log_append_time: bool,
    /// Key (`None`: null).
    pub key: Option<Vec<u8>>,
    /// Value (`None`: null).
    pub value: Option<Vec<u8>>,
    /// Headers in order (`None` value: null).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl TargetRecord {
    /// Whether this target record is a copy of the backed-up record `b`.
    pub fn is_copy_of(&self, b: &Record) -> bool {
        let ts_free = self.log_append_time
            || b.timestamp < 0
            || b.timestamp_type == crate::record::TimestampType::NoTimestamp;
        self.key == b.key
            && self.value == b.value
            && (ts_free || self.timestamp == b.timestamp)
            && self.headers.len() == b.headers.len()
            && self
                .headers
                .iter()
                .zip(&b.headers)
                .all(|((k, v), h)| *k == h.key && *v == h.value)
    }
}

/// Read access to the target partitions (Kafka in production, a fake in unit tests).
pub trait TargetLog {
    /// The end offset (high watermark) of a target partition.
    fn end_offset(&mut self, topic: &str, partition: i32) -> Result<i64>;
    /// Calls `each` with every committed record of the partition from offset `from` to its end
    /// (as of the call), in order, until `each` returns false.
    fn scan(
        &mut self,
        topic: &str,
        partition: i32,
        from: i64,
        each: &mut dyn FnMut(TargetRecord) -> bool,
    ) -> Result<()>;
}

/// Called with each target record in order; false stops the reading.
pub type Visitor<'a> = dyn FnMut(TargetRecord) -> bool + 'a;

/// Matches target records (in order) against backed-up records (in order, starting right
/// after the acknowledged prefix). Returns the acknowledgements proven, in original order:
/// `(original, new)`, `new = -1` for a record dropped before a matched one.
pub fn match_in_order(
    next_backed_up: &mut dyn FnMut() -> Result<Option<Record>>,
    target: &mut dyn FnMut(&mut Visitor<'_>) -> Result<()>,
) -> Result<Vec<(i64, i64)>> {
    let mut acks = Vec::new();
    let mut failure: Option<Error> = None;
    // Backed-up records read past the last match: dropped if a later record matches.
    let mut skipped: Vec<i64> = Vec::new();
    target(&mut |t: TargetRecord| {
        skipped.clear();
        loop {
            match next_backed_up() {
                Ok(Some(b)) if t.is_copy_of(&b) => {
                    acks.extend(skipped.drain(..).map(|o| (o, -1)));
                    acks.push((b.offset, t.offset));
                    return true;
                }
                Ok(Some(b)) if skipped.len() < MAX_SKIPPED => skipped.push(b.offset),
                Ok(_) => return false, // matches nothing: stop, conservatively
                Err(e) => {
                    failure = Some(e);
                    return false;
                }
            }
        }
    })?;
    match failure {
        Some(e) => Err(e),
        None => Ok(acks),
    }
}

/// [`TargetLog`] over the target cluster, through the [`ClusterClient`] (read_committed).
pub struct KafkaTargetLog {
    cluster: Arc<dyn ClusterClient>,
    timeout: Duration,
    /// End offsets per topic, read once per topic: a task opening many partitions of a topic
    /// asks the cluster once, not once per partition.
    ends: BTreeMap<String, BTreeMap<i32, (i64, i64)>>,
}

impl KafkaTargetLog {
    /// A reader of the target cluster; `timeout` bounds each metadata call.
    pub fn new(cluster: Arc<dyn ClusterClient>, timeout: Duration) -> KafkaTargetLog {
        KafkaTargetLog {
            cluster,
            timeout,
            ends: BTreeMap::new(),
        }
    }
}

impl TargetLog for KafkaTargetLog {
    fn end_offset(&mut self, topic: &str, partition: i32) -> Result<i64> {
        if !self.ends.contains_key(topic) {
            let ends = self.cluster.end_offsets(topic, self.timeout)?;
            self.ends.insert(topic.to_string(), ends);
        }
        self.ends[topic]
            .get(&partition)
            .map(|(_, high)| *high)
            .ok_or_else(|| {
                Error::NotFound(format!(
                "partition {topic}-{partition} on the target cluster: the target topic has fewer \
                 partitions than the backup; restore into a topic with at least {} partitions",
                partition + 1
            ))
            })
    }

    fn scan(
        &mut self,
        topic: &str,
        partition: i32,
        from: i64,
        each: &mut dyn FnMut(TargetRecord) -> bool,
    ) -> Result<()> {
        // Ends cached at the open: the restore writes nothing before every partition is open,
        // and reading runs to the real end anyway.
        if self.end_offset(topic, partition)? <= from {
            return Ok(());
        }
        self.cluster
            .scan(topic, partition, from, READ_TIMEOUT, each)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Header, TimestampType};

    pub(crate) fn rec(o: i64, v: &str) -> Record {
        Record {
            offset: o,
            timestamp: 1000 + o,
            timestamp_type: TimestampType::CreateTime,
            key: Some(b"k".to_vec()),
            value: Some(v.as_bytes().to_vec()),
            headers: vec![Header {
                key: "h".into(),
                value: None,
            }],
        }
    }

    pub(crate) fn copy(new: i64, b: &Record) -> TargetRecord {
        TargetRecord {
            offset: new,
            timestamp: b.timestamp,
            log_append_time: false,
            key: b.key.clone(),
            value: b.value.clone(),
            headers: b
                .headers
                .iter()
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect(),
        }
    }

    fn run(backed: &[Record], target: &[TargetRecord]) -> Vec<(i64, i64)> {
        let mut it = backed.iter().cloned();
        match_in_order(&mut || Ok(it.next()), &mut |each| {
            for t in target {
                if !each(t.clone()) {
                    break;
                }
            }
            Ok(())
        })
        .unwrap()
    }

    #[test]
    fn copies_match_in_order_and_skipped_records_were_dropped() {
        let b: Vec<Record> = (10..16).map(|o| rec(o, &format!("v{o}"))).collect();
        // 12 was filtered by a transform; 13 and 14 written, 15 not yet.
        let t = vec![
            copy(0, &b[0]),
            copy(1, &b[1]),
            copy(2, &b[3]),
            copy(3, &b[4]),
        ];
        assert_eq!(
            run(&b, &t),
            vec![(10, 0), (11, 1), (12, -1), (13, 2), (14, 3)]
        );
    }

    #[test]
    fn an_unmatched_target_record_stops_reconciliation() {
        let b: Vec<Record> = (0..4).map(|o| rec(o, &format!("v{o}"))).collect();
        let mut foreign = copy(1, &b[1]);
        foreign.value = Some(b"changed by a transform".to_vec());
        let t = vec![copy(0, &b[0]), foreign, copy(2, &b[2])];
        assert_eq!(
            run(&b, &t),
            vec![(0, 0)],
            "nothing after the unknown record"
        );
    }

    #[test]
    fn equal_fields_decide_and_broker_timestamps_are_ignored() {
        let b = rec(5, "x");
        let mut t = copy(0, &b);
        assert!(t.is_copy_of(&b));
        t.timestamp += 1;
        assert!(!t.is_copy_of(&b), "another timestamp is another record");
        t.log_append_time = true;
        assert!(
            t.is_copy_of(&b),
            "the target stamped it: timestamp not comparable"
        );
        t.headers[0].1 = Some(vec![]);
        assert!(!t.is_copy_of(&b), "null header value differs from empty");
    }
}
