//! How far a backup is behind its cluster: the check behind `kbackup status`.
//!
//! A backup that silently stopped is worse than none, and the files alone cannot tell "nothing
//! was written" from "the writer died". So this compares, per partition, what the backup holds
//! with what the live cluster holds: how many committed records are not backed up yet and how
//! old the oldest of them is (the recovery point), partitions the backup lacks, and consumer
//! groups whose position on the cluster moved since their last capture. Without a cluster it
//! reports what the files know: the newest backed-up record and the last group capture.
//!
//! Records behind are COUNTED with a read_committed consumer from the backup's end, never
//! estimated from offsets: transaction markers and aborted records have offsets too, and a
//! partition whose log ends with a commit marker is caught up although its end offset is not.
//! The count stops at a caller-given cap so a far-behind backup costs bounded reading.

use crate::error::{Error, Result};
use crate::kafka;
use crate::reader::Backup;
use crate::record::TopicPartition;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Timeout of each cluster call, and of counting one partition's missing records.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(15);

/// What the backup holds of one partition.
#[derive(Debug, Clone, Serialize)]
pub struct BackedUp {
    /// Offset after the last backed-up record (`None`: the partition holds no record).
    pub next_offset: Option<i64>,
    /// Timestamp of the last backed-up record, ms since the epoch.
    pub newest_timestamp_ms: Option<i64>,
    /// Latest group capture time on this partition, ms since the epoch.
    pub last_capture_ms: Option<i64>,
}

/// What the cluster holds beyond the backup, for one partition.
#[derive(Debug, Clone, Serialize)]
pub struct Behind {
    /// First offset still on the cluster.
    pub log_start: i64,
    /// The partition's end offset (high watermark).
    pub log_end: i64,
    /// Committed records on the cluster not in the backup (at most the cap).
    pub records: u64,
    /// False when counting stopped at the cap: at least `records` are missing.
    pub exact: bool,
    /// Timestamp of the oldest record not backed up (`None` when caught up).
    pub oldest_missing_timestamp_ms: Option<i64>,
    /// The backup ends before the cluster's log start: records in between are gone for good.
    pub gap: bool,
}

/// A consumer group whose position on the cluster differs from its last capture.
#[derive(Debug, Clone, Serialize)]
pub struct GroupMoved {
    /// The group id.
    pub group: String,
    /// Its last captured committed offset.
    pub captured_offset: i64,
    /// When that capture was taken, ms since the epoch.
    pub capture_time_ms: i64,
    /// Its committed offset on the cluster now (`None`: no longer committed there).
    pub cluster_offset: Option<i64>,
}

/// Freshness of one partition.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionFreshness {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// What the backup holds (`None`: the cluster has this partition, the backup does not).
    pub backup: Option<BackedUp>,
    /// Compared with the cluster (`None` without a cluster).
    pub behind: Option<Behind>,
    /// Captured groups whose position on the cluster moved since the capture.
    pub groups_moved: Vec<GroupMoved>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Freshness {
    /// When the check ran, ms since the epoch.
    pub checked_at_ms: i64,
    /// One entry per partition of each checked topic.
    pub partitions: Vec<PartitionFreshness>,
    /// Requested topics the backup does not hold at all.
    pub topics_not_backed_up: Vec<String>,
}

/// What to compare and how far to read.
#[derive(Debug, Clone, Default)]
pub struct FreshnessOptions {
    /// Topics to check (empty: every topic in the backup).
    pub topics: Vec<String>,
    /// Client settings of the backed-up cluster; empty: report from the files alone.
    pub cluster: BTreeMap<String, String>,
    /// Stop counting a partition's missing records after this many.
    pub count_cap: u64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Compares the backup at `backup` with the cluster in `opts` (or with nothing).
pub fn check(backup: &Backup, opts: &FreshnessOptions) -> Result<Freshness> {
    let in_backup = backup.topics()?;
    let (topics, missing): (Vec<String>, Vec<String>) = if opts.topics.is_empty() {
        (in_backup.clone(), Vec::new())
    } else {
        opts.topics
            .iter()
            .cloned()
            .partition(|t| in_backup.contains(t))
    };
    let with_cluster = !opts.cluster.is_empty();
    let mut partitions = Vec::new();
    for topic in topics.iter().chain(missing.iter()) {
        let backed: BTreeMap<i32, BackedUp> = if in_backup.contains(topic) {
            backup
                .partitions(topic)?
                .into_iter()
                .map(|p| Ok((p, backed_up(backup, topic, p)?)))
                .collect::<Result<_>>()?
        } else {
            BTreeMap::new()
        };
        let cluster_parts = if with_cluster {
            Some(kafka::end_offsets(&opts.cluster, topic, KAFKA_TIMEOUT)?)
        } else {
            None
        };
        let mut numbers: Vec<i32> = backed.keys().copied().collect();
        if let Some(c) = &cluster_parts {
            numbers.extend(c.keys().filter(|p| !backed.contains_key(p)));
            numbers.sort_unstable();
        }
        for p in numbers {
            let tp = TopicPartition::new(topic.clone(), p);
            let b = backed.get(&p).cloned();
            let mut behind = None;
            let mut groups_moved = Vec::new();
            if let Some(&(low, high)) = cluster_parts.as_ref().and_then(|c| c.get(&p)) {
                let next = b.as_ref().and_then(|b| b.next_offset);
                behind = Some(count_behind(opts, &tp, next, low, high)?);
                if b.is_some() {
                    groups_moved = moved_groups(backup, &opts.cluster, &tp)?;
                }
            }
            partitions.push(PartitionFreshness {
                topic: topic.clone(),
                partition: p,
                backup: b,
                behind,
                groups_moved,
            });
        }
    }
    Ok(Freshness {
        checked_at_ms: now_ms(),
        partitions,
        topics_not_backed_up: missing,
    })
}

fn backed_up(backup: &Backup, topic: &str, p: i32) -> Result<BackedUp> {
    let mut reader = backup.partition(topic, p)?;
    let last = reader.last_offset()?;
    let mut newest = None;
    if let Some(last) = last {
        reader.seek(last)?;
        newest = reader.next_record()?.map(|r| r.timestamp);
    }
    let tp = TopicPartition::new(topic, p);
    let entries = backup.group_offsets(&tp)?;
    Ok(BackedUp {
        next_offset: last.map(|o| o + 1),
        newest_timestamp_ms: newest,
        last_capture_ms: entries.iter().map(|e| e.capture_time_ms).max(),
    })
}

/// Counts committed records from the backup's end `next` (read_committed), up to the cap.
fn count_behind(
    opts: &FreshnessOptions,
    tp: &TopicPartition,
    next: Option<i64>,
    low: i64,
    high: i64,
) -> Result<Behind> {
    // A gap needs records on both sides: an empty backup of a trimmed log misses nothing yet.
    let gap = next.is_some_and(|n| n < low);
    let start = next.unwrap_or(0).max(low);
    let mut out = Behind {
        log_start: low,
        log_end: high,
        records: 0,
        exact: true,
        oldest_missing_timestamp_ms: None,
        gap,
    };
    if start >= high {
        return Ok(out);
    }
    let what = format!("count records of {tp} not backed up");
    let consumer = kafka::consumer(
        &opts.cluster,
        &what,
        &[
            ("group.id", "kbackup-status"),
            ("isolation.level", "read_committed"),
            ("enable.partition.eof", "true"),
        ],
    )?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(start))
        .map_err(|e| kafka::kafka_error(&opts.cluster, &what, &e))?;
    consumer
        .assign(&tpl)
        .map_err(|e| kafka::kafka_error(&opts.cluster, &what, &e))?;
    let deadline = Instant::now() + KAFKA_TIMEOUT;
    loop {
        if out.records >= opts.count_cap.max(1) {
            out.exact = false;
            return Ok(out);
        }
        if Instant::now() > deadline {
            return Err(Error::Kafka {
                what,
                retriable: true,
                detail: format!(
                    "no end of partition reached within {KAFKA_TIMEOUT:?} after {} records; \
                     check that the cluster is reachable, or lower --count-cap",
                    out.records
                ),
            });
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return Ok(out),
            Some(Err(e)) => return Err(kafka::kafka_error(&opts.cluster, &what, &e)),
            Some(Ok(m)) => {
                if out.oldest_missing_timestamp_ms.is_none() {
                    out.oldest_missing_timestamp_ms = m.timestamp().to_millis();
                }
                out.records += 1;
                if m.offset() + 1 >= high {
                    return Ok(out);
                }
            }
        }
    }
}

/// Captured groups whose committed offset on the cluster is no longer the captured one.
fn moved_groups(
    backup: &Backup,
    cluster: &BTreeMap<String, String>,
    tp: &TopicPartition,
) -> Result<Vec<GroupMoved>> {
    let latest = backup.latest_group_offsets(tp)?;
    let mut out = Vec::new();
    for (group, e) in latest {
        let what = format!("read committed offset of group {group:?} on {tp}");
        let consumer = kafka::consumer(cluster, &what, &[("group.id", &group)])?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&tp.topic, tp.partition);
        let committed = consumer
            .committed_offsets(tpl, KAFKA_TIMEOUT)
            .map_err(|e| kafka::kafka_error(cluster, &what, &e))?;
        let now = committed
            .find_partition(&tp.topic, tp.partition)
            .and_then(|x| match x.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        if now != Some(e.committed_offset) {
            out.push(GroupMoved {
                group,
                captured_offset: e.committed_offset,
                capture_time_ms: e.capture_time_ms,
                cluster_offset: now,
            });
        }
    }
    Ok(out)
}
