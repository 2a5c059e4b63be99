//! The standalone backup loop: a consistent snapshot per partition (`until caught up`, the
//! end offsets seen at start) or a continuous backup until asked to stop.

use crate::codec::BatchBuilder;
use crate::error::{Error, Result};
use crate::groups::{CaptureConfig, GroupOffsetCapture};
use crate::kafka::{self, FetchQueue, Msg, QuietContext, RdKafkaCluster, CONNECT_TIMEOUT};
use crate::reader::Backup;
use crate::record::{TopicPartition, TopicPartitionOffset};
use crate::sink::{BackupSink, SinkConfig};
use crate::storage::StoreOptions;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
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
/// The writer's turn when no batch comes: how often the ticker runs at least.
const WRITER_TICK: Duration = Duration::from_millis(200);
/// Messages taken from librdkafka per call (kafka::FetchQueue) at most: one queue lock and
/// clock read per call instead of per message.
const READ_BATCH: usize = 1000;
/// Record bytes a read aims at: the messages of a read stay in librdkafka's memory until the
/// next read, outside its pre-fetch bound, so large records are read fewer at a time (1000
/// messages of 64 KiB held 64 MiB: RSS 82 -> 140 MiB).
const READ_BYTES: usize = 1024 * 1024;
/// Client-wide events (errors, log lines) served between two reads at most.
const CLIENT_EVENTS_PER_TURN: usize = 100;
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

/// What the front end sees of a running backup. Called on the thread that reads from Kafka.
pub trait BackupObserver {
    /// Once, before the first record: offsets to read (`None` in continuous mode).
    fn planned(&mut self, _total: Option<u64>) {}
    /// The backup moved this many offsets further (records, markers, aborted records).
    fn progressed(&mut self, _offsets: u64) {}
    /// Once, at the start: what runs on the writer thread between its batches.
    fn ticker(&mut self) -> Option<Box<dyn SinkTicker>> {
        None
    }
    /// True once the backup should flush and stop (a signal).
    fn stop_requested(&self) -> bool;
}

/// Sees the sink on the thread that writes it, between two batches and at least every
/// 200 ms (a few times a second): publishes metrics when due.
pub trait SinkTicker: Send {
    /// One turn: cheap unless something is due.
    fn tick(&mut self, sink: &mut BackupSink, capture: Option<&GroupOffsetCapture>);
    /// Once, after the final flush of a run that ended well: publish what is due or not.
    fn last(&mut self, sink: &mut BackupSink, capture: Option<&GroupOffsetCapture>) {
        self.tick(sink, capture);
    }
}

/// What the reading thread hands the writer thread.
enum Work {
    /// Records to write: an encoded batch, sent back empty for reuse.
    Put(BatchBuilder),
    /// Make what was written durable (fsync).
    Flush,
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
    // librdkafka's pre-fetch, bounded for all partitions together (one consumer queue): a
    // user's setting still wins (`--config`).
    // - `fetch.queue.backoff.ms`: once the local queue is full, librdkafka pauses a
    //   partition's fetches for 1 s by default, and the backup drains the queue at disk speed,
    //   so that pause left it idle most of the time (13.8 s -> 4.9 s for 2M records). At 0 its
    //   broker thread spun on the full queue (a fifth of the backup's CPU in clock reads and
    //   queue locks); 10 ms costs neither (1 KiB x 524,288, 6 partitions: 5.5 -> 3.5 CPU s).
    // - `queued.max.messages.kbytes`: librdkafka's 64 MiB default was most of the CLI's memory;
    //   16 MiB is a tenth of a second at the backup's speed and read as fast (RSS 119 -> 55 MiB).
    for (key, value) in [
        ("fetch.queue.backoff.ms", "10"),
        ("queued.max.messages.kbytes", "16384"),
    ] {
        if !cluster.contains_key(key) {
            set.push((key, value));
        }
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
    // Before the assignment: the partitions start fetching into this queue, not the consumer's.
    let mut fetch = FetchQueue::new(
        &consumer,
        state
            .iter()
            .flat_map(|(t, m)| m.keys().map(move |p| (t.as_str(), *p))),
    )
    .ok_or_else(|| Error::Kafka {
        what: "set up the fetch queue of the backed-up partitions".into(),
        retriable: false,
        detail: "librdkafka refused a queue of its own for the partitions (out of memory?)".into(),
    })?;
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

    // Two threads: this one reads from Kafka and encodes batches, a writer thread compresses
    // and writes them (and fsyncs), so fetching and compressing overlap. At most one batch
    // waits between them, one is being written, one filled and one emptied waits for reuse:
    // at most four batch buffers (PUT_BATCH records or PUT_BATCH_BYTES each).
    let undone = state
        .values()
        .flat_map(HashMap::values)
        .filter(|s| !s.done)
        .count();
    let mut ticker = observer.ticker();
    let (work_tx, work_rx) = mpsc::sync_channel::<Work>(1);
    let (spare_tx, spare_rx) = mpsc::channel::<BatchBuilder>();
    let sink_ref = &mut sink;
    let capture_ref = capture.as_ref();
    let ticker_ref = &mut ticker;
    let mut records = 0u64;
    let mut stopped = false;
    let end_result: Result<()> = std::thread::scope(|scope| {
        let writer = std::thread::Builder::new()
            .name("kbackup-writer".into())
            .spawn_scoped(scope, move || -> Result<()> {
                loop {
                    match work_rx.recv_timeout(WRITER_TICK) {
                        Ok(Work::Put(mut b)) => {
                            let put = sink_ref.put_encoded(b.finish());
                            b.clear(); // never handed again, failed or not
                            let _ = spare_tx.send(b);
                            put?;
                        }
                        Ok(Work::Flush) => {
                            sink_ref.flush()?;
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return Ok(()),
                    }
                    if let Some(t) = ticker_ref.as_mut() {
                        t.tick(sink_ref, capture_ref);
                    }
                }
            })
            .map_err(|e| Error::io(e, "start the writer thread for", &run.dir))?;
        let mut reader = Reader {
            consumer: &consumer,
            cluster,
            state: &mut state,
            undone,
            until,
            work: &work_tx,
            spare: &spare_rx,
            batch: BatchBuilder::new(),
            records: 0,
        };
        let read = reader.run(&mut fetch, observer, &mut stopped);
        // Hand over what was read (after an error too: it was read, and the writer decides),
        // then let the writer finish.
        let _ = reader.send_batch(); // a stopped writer reports its own error below
        records = reader.records;
        drop(reader);
        drop(work_tx);
        let written = writer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        // The writer's error first: a failed send only means the writer stopped.
        written?;
        read
    });

    let durable = match &end_result {
        Ok(()) => sink.flush_all(),
        Err(_) => Ok(Vec::new()),
    };
    if let (Some(t), Ok(_)) = (ticker.as_mut(), &durable) {
        t.last(&mut sink, capture.as_ref()); // the last page shows the final durable offsets
    }
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

/// The reading side of a run: polls the consumer, tracks each partition's position and
/// hands full batches to the writer thread.
struct Reader<'a> {
    consumer: &'a BaseConsumer<QuietContext>,
    cluster: &'a BTreeMap<String, String>,
    state: &'a mut HashMap<String, HashMap<i32, PartState>>,
    /// Partitions not done yet (until-caught-up mode).
    undone: usize,
    until: bool,
    work: &'a mpsc::SyncSender<Work>,
    spare: &'a mpsc::Receiver<BatchBuilder>,
    batch: BatchBuilder,
    /// Records handed to the writer.
    records: u64,
}

/// The writer thread stopped (it failed: its error is the run's).
struct WriterGone;

impl Reader<'_> {
    fn run(
        &mut self,
        fetch: &mut FetchQueue<'_>,
        observer: &mut dyn BackupObserver,
        stopped: &mut bool,
    ) -> Result<()> {
        let mut last_flush = Instant::now();
        let mut last_check = Instant::now();
        let mut check_now = false;
        let mut read_max = 16; // until the record size is known
        loop {
            if observer.stop_requested() {
                *stopped = true;
                return Ok(());
            }
            if self.until && self.undone == 0 {
                return Ok(());
            }
            let mut bytes = 0usize;
            let msgs = fetch.read(Duration::from_millis(200), read_max);
            for m in msgs {
                match m.error() {
                    None => {
                        bytes +=
                            m.key().map_or(0, <[u8]>::len) + m.payload().map_or(0, <[u8]>::len);
                        self.take(m, observer)?;
                    }
                    Some(RDKafkaErrorCode::PartitionEOF) => check_now = true,
                    Some(code) => self.fetch_error(KafkaError::MessageConsumption(code))?,
                }
                let full = self.batch.len() >= PUT_BATCH || self.batch.bytes() >= PUT_BATCH_BYTES;
                if full && self.send_batch().is_err() {
                    return Ok(()); // the writer's error ends the run
                }
            }
            if !msgs.is_empty() {
                read_max = (READ_BYTES * msgs.len() / bytes.max(1)).clamp(1, READ_BATCH);
            }
            // The consumer's own queue: client-wide errors (a failed authentication, say) and
            // librdkafka's log lines, one per poll (bounded, so a flood cannot stall reading).
            for _ in 0..fetch.client_events().clamp(1, CLIENT_EVENTS_PER_TURN) {
                match self.consumer.poll(Duration::ZERO) {
                    Some(Err(KafkaError::PartitionEOF(_))) => check_now = true,
                    Some(Err(e)) => self.fetch_error(e)?,
                    // Not expected (every partition forwards to the fetch queue). Skipping it
                    // would leave a hole in the backup, so end the run before it is written
                    // past: the next run resumes from the files and reads it again.
                    Some(Ok(m)) => {
                        return Err(Error::Kafka {
                            what: "fetch records".into(),
                            retriable: true,
                            detail: format!(
                                "a record of {}-{} at offset {} came outside the backup's \
                                 fetch queue; run the backup again (it resumes from the files)",
                                m.topic(),
                                m.partition(),
                                m.offset()
                            ),
                        })
                    }
                    None => {}
                }
            }
            if last_flush.elapsed() >= FLUSH_EVERY {
                if self.send_batch().is_err() || self.work.send(Work::Flush).is_err() {
                    return Ok(());
                }
                last_flush = Instant::now();
            }
            // Transaction markers and aborted records move the position without a message.
            if self.until && (check_now || last_check.elapsed() >= Duration::from_secs(1)) {
                last_check = Instant::now();
                check_now = false;
                self.check_positions(observer);
            }
        }
    }

    /// A failed fetch: the run's error unless Kafka may recover by itself (logged then).
    fn fetch_error(&self, e: KafkaError) -> Result<()> {
        let err = kafka::acl_error(
            self.cluster,
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
        Ok(())
    }

    /// Takes one consumed message into the batch (or notes its partition done).
    fn take(&mut self, m: &Msg<'_>, observer: &mut dyn BackupObserver) -> Result<()> {
        let Some(s) = self
            .state
            .get_mut(m.topic())
            .and_then(|t| t.get_mut(&m.partition()))
        else {
            return Ok(());
        };
        let o = m.offset();
        if self.until && o >= s.end {
            mark_done(s, &mut self.undone); // past the snapshot: not part of this backup
            return Ok(());
        }
        let Some(headers) = m.headers() else {
            return Err(Error::Kafka {
                what: format!("back up {}-{} at offset {o}", m.topic(), m.partition()),
                retriable: false,
                detail: "a header key of the record is not UTF-8, which the backup format \
                         keeps keys as (Kafka's Java clients write UTF-8 only): rewrite the \
                         record's headers or leave the topic out of the backup"
                    .into(),
            });
        };
        observer.progressed((o + 1 - s.pos).max(0) as u64);
        s.pos = o + 1;
        let (timestamp, timestamp_type) = m.timestamp();
        self.batch.push(
            m.topic(),
            m.partition(),
            o,
            timestamp,
            timestamp_type,
            m.key(),
            m.payload(),
            headers,
        );
        if self.until && s.pos >= s.end {
            mark_done(s, &mut self.undone);
        }
        Ok(())
    }

    /// Moves positions past markers and aborted records, from the consumer's positions.
    fn check_positions(&mut self, observer: &mut dyn BackupObserver) {
        let Ok(pos) = self.consumer.position() else {
            return;
        };
        for e in pos.elements() {
            if let (Some(s), Offset::Offset(p)) = (
                self.state
                    .get_mut(e.topic())
                    .and_then(|t| t.get_mut(&e.partition())),
                e.offset(),
            ) {
                if !s.done && p > s.pos {
                    observer.progressed((p.min(s.end) - s.pos).max(0) as u64);
                    s.pos = p;
                }
                if s.pos >= s.end {
                    mark_done(s, &mut self.undone);
                }
            }
        }
    }

    /// Hands the batch (if it holds records) to the writer, taking an emptied one back.
    fn send_batch(&mut self) -> std::result::Result<(), WriterGone> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| BatchBuilder::new());
        let full = std::mem::replace(&mut self.batch, next);
        self.records += full.len() as u64;
        self.work.send(Work::Put(full)).map_err(|_| WriterGone)
    }
}

fn mark_done(s: &mut PartState, undone: &mut usize) {
    if !s.done {
        s.done = true;
        *undone -= 1;
    }
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
