//! The standalone backup loop: a consistent snapshot per partition (`until caught up`, the
//! end offsets seen at start) or a continuous backup until asked to stop.

use crate::codec::BatchBuilder;
use crate::error::{Error, Result};
use crate::groups::{CaptureConfig, GroupOffsetCapture};
use crate::kafka::{self, RdKafkaCluster, CONNECT_TIMEOUT};
use crate::reader::Backup;
use crate::record::{TimestampType, TopicPartition, TopicPartitionOffset};
use crate::sink::{BackupSink, SinkConfig};
use crate::storage::StoreOptions;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Records handed to the sink in one `put`.
const PUT_BATCH: usize = 2000;
/// Bytes of a batch buffer that hand it to the sink before it holds `PUT_BATCH` records.
const PUT_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Pause between two `flush`es (fsync) while records keep coming.
const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// Pause between two group-offset captures in continuous mode.
const CAPTURE_EVERY_MS: u64 = 30_000;
/// The consumer's group id: needed by librdkafka, never used to commit.
pub const BACKUP_GROUP: &str = "kbackup-cli-backup";

/// What to back up and how.
#[derive(Debug, Clone)]
pub struct BackupRun {
    /// Backup directory (created if missing; an existing backup is continued).
    pub dir: PathBuf,
    /// The topics, each existing on the cluster, with their partition counts.
    pub topics: BTreeMap<String, i32>,
    /// librdkafka settings of the cluster.
    pub cluster: BTreeMap<String, String>,
    /// Also capture the committed offsets of the groups on these topics.
    pub group_offsets: bool,
    /// Run until asked to stop instead of stopping at the end offsets seen at start.
    pub continuous: bool,
    /// Segment roll by size (default: the sink's).
    pub max_segment_bytes: Option<u64>,
    /// Segment roll by age in ms (default: the sink's).
    pub max_segment_age_ms: Option<i64>,
    /// Octal mode of the files created (default: owner only).
    pub file_mode: Option<String>,
    /// Block codec of new segments (`none`, `zstd`, `lz4`) and zstd level.
    pub compression: (String, Option<i32>),
    /// Bound of the bytes in open compression blocks over all partitions (default: the
    /// sink's, [`crate::sink::DEFAULT_BUFFER_MEMORY`]).
    pub buffer_memory_bytes: Option<u64>,
}

/// What the front end sees of a running backup.
pub trait BackupObserver {
    /// Once, before the first record: offsets to read (`None` in continuous mode).
    fn planned(&mut self, _total: Option<u64>) {}
    /// The backup moved this many offsets further (records, markers, aborted records).
    fn progressed(&mut self, _offsets: u64) {}
    /// Every turn of the loop (a few times a second at least): publish metrics when due.
    fn tick(&mut self, _sink: &mut BackupSink, _capture: Option<&GroupOffsetCapture>) {}
    /// True once the backup should flush and stop (a signal).
    fn stop_requested(&self) -> bool;
}

/// How a backup ended.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    /// Records written in this run.
    pub records: u64,
    /// Every partition backed up.
    pub partitions: Vec<TopicPartition>,
    /// The next offset to back up per partition, durable on disk.
    pub durable: Vec<TopicPartitionOffset>,
    /// The end offsets seen at start (until-caught-up mode).
    pub ends_at_start: Option<BTreeMap<TopicPartition, i64>>,
    /// Group offset changes captured at the end (with group offsets).
    pub group_offset_changes: Option<usize>,
    /// Consumer groups the backup holds offsets of on these partitions (with group offsets).
    pub groups: Option<usize>,
    /// Stopped by [`BackupObserver::stop_requested`].
    pub stopped: bool,
}

/// Per-partition bookkeeping of one run.
struct PartState {
    /// Stop here in until-caught-up mode (the read_committed end offset at start).
    end: i64,
    /// Next offset to read, as far as the loop knows.
    pos: i64,
    /// First offset read in this run.
    start: i64,
    done: bool,
}

/// Runs a backup to its end (caught up, or stopped) and makes it durable.
///
/// `Err` after the records read so far are durable or not reported: the next run resumes from
/// the files. A topic whose partition count and configs could not be described is an error
/// after the records are written, so a cron job notices.
pub fn run_backup(run: &BackupRun, observer: &mut dyn BackupObserver) -> Result<BackupOutcome> {
    let mut sink_cfg = SinkConfig::new(&run.dir);
    sink_cfg.connector_name = "cli-backup".into();
    sink_cfg.task_id = "cli-backup-0".into();
    sink_cfg.cluster = run.cluster.clone();
    sink_cfg.consumer_group_id = Some(BACKUP_GROUP.into());
    // Group offsets are captured below, only when asked: no second capture loop.
    sink_cfg.offsets_sync_interval_ms = 0;
    if let Some(b) = run.max_segment_bytes {
        sink_cfg.max_segment_size_bytes = b;
    }
    if let Some(ms) = run.max_segment_age_ms {
        sink_cfg.max_segment_age_ms = ms;
    }
    sink_cfg.file_mode = run.file_mode.clone();
    sink_cfg.compression_type = Some(run.compression.0.clone());
    sink_cfg.compression_level = run.compression.1;
    if let Some(b) = run.buffer_memory_bytes {
        sink_cfg.buffer_memory_bytes = b;
    }
    let perms = sink_cfg.perms();
    let mut sink = BackupSink::open(sink_cfg)?;

    let tps: Vec<TopicPartition> = run
        .topics
        .iter()
        .flat_map(|(t, n)| (0..*n).map(move |p| TopicPartition::new(t.clone(), p)))
        .collect();
    let resume = sink.open_partitions(&tps)?;

    let cluster = &run.cluster;
    let mut set = vec![
        ("group.id", BACKUP_GROUP),
        ("isolation.level", "read_committed"),
        ("enable.partition.eof", "true"),
        ("auto.offset.reset", "earliest"),
    ];
    // librdkafka pauses a partition's fetches for 1 s once its local queue is full; the backup
    // drains the queue at disk speed, so that pause left it idle most of the time (make bench:
    // 13.8 s -> 4.9 s for 2M records). A user's setting still wins.
    if !cluster.contains_key("fetch.queue.backoff.ms") {
        set.push(("fetch.queue.backoff.ms", "0"));
    }
    let consumer = kafka::consumer(cluster, "read the backed-up topics", &set)?;

    // By topic, then partition: a consumed message finds its state by its borrowed topic
    // name, without building a key per message.
    let mut state: HashMap<String, HashMap<i32, PartState>> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for r in &resume {
        // read_committed: the "high" watermark is the last stable offset.
        let (low, end) = consumer
            .fetch_watermarks(&r.topic, r.partition, CONNECT_TIMEOUT)
            .map_err(|e| {
                kafka::kafka_error(
                    cluster,
                    &format!("read end offsets of {}-{}", r.topic, r.partition),
                    &e,
                )
            })?;
        let start = if r.offset >= 0 {
            r.offset.max(low)
        } else {
            low
        };
        if r.offset >= 0 && r.offset < low {
            log::warn!(
                "{}-{}: records {}..{} were deleted from Kafka (retention) before they were backed up; \
                 the backup continues at {low}",
                r.topic, r.partition, r.offset, low - 1
            );
        }
        let offset = if r.offset >= 0 {
            Offset::Offset(start)
        } else {
            Offset::Beginning
        };
        tpl.add_partition_offset(&r.topic, r.partition, offset)
            .map_err(|e| kafka::kafka_error(cluster, "assign partitions", &e))?;
        state.entry(r.topic.clone()).or_default().insert(
            r.partition,
            PartState {
                end,
                pos: start,
                start,
                done: false,
            },
        );
    }
    consumer
        .assign(&tpl)
        .map_err(|e| kafka::kafka_error(cluster, "assign partitions", &e))?;

    let capture = if run.group_offsets {
        let c = GroupOffsetCapture::start(CaptureConfig {
            root: sink.config().target_dir.clone(),
            store: sink.store(),
            persist_every_ms: sink.config().max_segment_age_ms.max(0) as u64,
            cluster: Arc::new(RdKafkaCluster::new(cluster)),
            include: None,
            exclude: None,
            own_group: Some(BACKUP_GROUP.to_string()),
            interval_ms: if run.continuous { CAPTURE_EVERY_MS } else { 0 },
            perms,
        })?;
        c.set_partitions(tps.clone());
        Some(c)
    } else {
        None
    };

    let until = !run.continuous;
    let total: u64 = state
        .values()
        .flat_map(HashMap::values)
        .map(|s| (s.end - s.start).max(0) as u64)
        .sum();
    observer.planned(until.then_some(total));
    if until {
        for s in state.values_mut().flat_map(HashMap::values_mut) {
            s.done = s.pos >= s.end;
        }
    }

    let mut batch = BatchBuilder::new();
    let mut records = 0u64;
    let mut last_flush = Instant::now();
    let mut last_check = Instant::now();
    let mut check_now = false;
    let mut stopped = false;
    let result: Result<()> = (|| {
        loop {
            if observer.stop_requested() {
                stopped = true;
                break;
            }
            if until && state.values().flat_map(HashMap::values).all(|s| s.done) {
                break;
            }
            match consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Ok(m)) => {
                    let s = state
                        .get_mut(m.topic())
                        .and_then(|t| t.get_mut(&m.partition()));
                    if let Some(s) = s {
                        let o = m.offset();
                        if until && o >= s.end {
                            s.done = true; // past the snapshot: not part of this backup
                        } else {
                            observer.progressed((o + 1 - s.pos).max(0) as u64);
                            s.pos = o + 1;
                            push_message(&mut batch, &m);
                            if until && s.pos >= s.end {
                                s.done = true;
                            }
                        }
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => check_now = true,
                Some(Err(e)) => {
                    let err = kafka::acl_error(
                        cluster,
                        "fetch records",
                        &e,
                        &format!(
                            "grant READ on the backed-up topics and DESCRIBE on consumer group \
                             {BACKUP_GROUP} (the backup's consumer carries that group id; it \
                             never joins the group or commits)"
                        ),
                    );
                    if !err.is_retriable() {
                        return Err(err);
                    }
                    log::warn!("{err}");
                }
            }
            if batch.len() >= PUT_BATCH
                || batch.bytes() >= PUT_BATCH_BYTES
                || (!batch.is_empty() && last_flush.elapsed() >= FLUSH_EVERY)
            {
                records += batch.len() as u64;
                let put = sink.put_encoded(batch.finish());
                batch.clear(); // never handed again, failed or not
                put?;
            }
            if last_flush.elapsed() >= FLUSH_EVERY {
                sink.flush()?;
                last_flush = Instant::now();
            }
            observer.tick(&mut sink, capture.as_ref());
            // Transaction markers and aborted records move the position without a message.
            if until && (check_now || last_check.elapsed() >= Duration::from_secs(1)) {
                last_check = Instant::now();
                check_now = false;
                if let Ok(pos) = consumer.position() {
                    for e in pos.elements() {
                        if let (Some(s), Offset::Offset(p)) = (
                            state
                                .get_mut(e.topic())
                                .and_then(|t| t.get_mut(&e.partition())),
                            e.offset(),
                        ) {
                            if !s.done && p > s.pos {
                                observer.progressed((p.min(s.end) - s.pos).max(0) as u64);
                                s.pos = p;
                            }
                            if s.pos >= s.end {
                                s.done = true;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    })();

    // Make what was read durable before reporting; after an error, put nothing again (the
    // failed batch may be the one still held) and report nothing as durable: the next run
    // resumes from the files.
    let mut end_result = result;
    if end_result.is_ok() && !batch.is_empty() {
        records += batch.len() as u64;
        end_result = sink.put_encoded(batch.finish());
    }
    let durable = match &end_result {
        Ok(()) => sink.flush_all(),
        Err(_) => Ok(Vec::new()),
    };
    let captured = match (&capture, &end_result) {
        (Some(c), Ok(())) => Some(c.capture_now()),
        _ => None,
    };
    if let Some(c) = capture {
        c.stop();
    }
    let closed = sink.close();
    end_result?;
    let durable = durable?;
    closed?;
    let group_offset_changes = captured.transpose()?;
    let groups = if run.group_offsets {
        Some(groups_held(&run.dir.to_string_lossy(), &tps)?)
    } else {
        None
    };
    if groups == Some(0) {
        log::warn!(
            "group offsets: the backup holds no consumer-group offsets for these partitions. \
             Kafka lists to a principal only the groups it may DESCRIBE: if groups consume these \
             topics, grant DESCRIBE on them (docs/security.md) and run the backup again"
        );
    }
    let ends_at_start = until.then(|| {
        state
            .iter()
            .flat_map(|(t, m)| {
                m.iter()
                    .map(move |(p, s)| (TopicPartition::new(t.clone(), *p), s.end))
            })
            .collect()
    });
    Ok(BackupOutcome {
        records,
        partitions: tps,
        durable,
        ends_at_start,
        group_offset_changes,
        groups,
        stopped,
    })
}

/// How many consumer groups the backup at `location` holds offsets of on these partitions.
fn groups_held(location: &str, tps: &[TopicPartition]) -> Result<usize> {
    let backup = Backup::open_location(location, &StoreOptions::default())?;
    let mut groups = BTreeSet::new();
    for tp in tps {
        groups.extend(backup.latest_group_offsets(tp)?.into_keys());
    }
    Ok(groups.len())
}

/// The records are on disk, but a topic whose partition count and configs could not be read
/// would be re-created without its configs (a compacted topic as a deleting one): an error,
/// so a cron job notices, with the ACL to grant.
pub fn undescribed_topics_error<'a>(
    location: &str,
    topics: impl IntoIterator<Item = &'a String>,
) -> Result<()> {
    let backup = Backup::open_location(location, &StoreOptions::default())?;
    let mut missing = Vec::new();
    for t in topics {
        if !backup.manifest(t)?.is_some_and(|m| m.described) {
            missing.push(t.as_str());
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::Kafka {
        what: "describe the backed-up topics".into(),
        retriable: false,
        detail: format!(
            "the records are backed up, but the partition count and configs of {} could not be \
             read (see the warning above), so a restore would create the topics without their \
             configs: grant DESCRIBE_CONFIGS on them (docs/security.md) and run the backup again",
            missing.join(", ")
        ),
    })
}

/// Appends a consumed message to a batch buffer byte for byte (null stays distinct from
/// empty), from its borrowed key, value and headers.
fn push_message<M: Message>(batch: &mut BatchBuilder, m: &M) {
    let (timestamp, timestamp_type) = timestamp_of(m);
    let headers = m.headers();
    let n = headers.map_or(0, |h| h.count());
    let iter = (0..n).map(|i| {
        let h = headers.expect("n > 0 only with headers").get(i);
        (h.key, h.value)
    });
    batch.push(
        m.topic(),
        m.partition(),
        m.offset(),
        timestamp,
        timestamp_type,
        m.key(),
        m.payload(),
        ExactLen(iter, n),
    );
}

/// An iterator of known length (rdkafka's header access is by index).
struct ExactLen<I>(I, usize);

impl<I: Iterator> Iterator for ExactLen<I> {
    type Item = I::Item;
    fn next(&mut self) -> Option<I::Item> {
        self.0.next()
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.1, Some(self.1))
    }
}

impl<I: Iterator> ExactSizeIterator for ExactLen<I> {}

/// A message's timestamp and its type.
fn timestamp_of<M: Message>(m: &M) -> (i64, TimestampType) {
    match m.timestamp() {
        rdkafka::Timestamp::NotAvailable => (-1, TimestampType::NoTimestamp),
        rdkafka::Timestamp::CreateTime(t) => (t, TimestampType::CreateTime),
        rdkafka::Timestamp::LogAppendTime(t) => (t, TimestampType::LogAppendTime),
    }
}
