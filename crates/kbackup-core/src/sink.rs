//! The backup writer behind the sink connector and the CLI `backup` verb.
//!
//! It owns one segment writer per assigned partition and keeps the files, not Connect's
//! committed offsets, as the truth: `open_partitions` repairs a torn tail and answers where to
//! resume, `put` skips what is already on disk, and `flush` answers only what is durable. It
//! also keeps each topic's manifest up to date without ever letting a manifest problem block
//! data.

use crate::cluster::ClusterClient;
use crate::codec::{self, BatchRecord};
use crate::error::{Error, Result};
use crate::groups::{CaptureConfig, GroupOffsetCapture};
use crate::index::DEFAULT_INDEX_INTERVAL_BYTES;
use crate::kafka::RdKafkaCluster;
use crate::layout;
use crate::manifest::{self, TopicManifest, FORMAT_VERSION};
use crate::metrics::{self, SinkMetrics, SinkPartitionMetrics};
use crate::perms::Perms;
use crate::record::{TopicPartition, TopicPartitionOffset};
use crate::segment::{self, SegmentHeader, SegmentWriter, FRAME_PREFIX_LEN};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long a manifest refresh may wait for the cluster.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long reading the log start and end offsets at open may take.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(15);
/// Minimum pause between two manifest refresh attempts of a topic after a failure.
const DESCRIBE_RETRY_MS: i64 = 30_000;

fn default_segment_size() -> u64 {
    1 << 30
}
fn default_segment_age() -> i64 {
    3_600_000
}
fn default_index_interval() -> u32 {
    DEFAULT_INDEX_INTERVAL_BYTES
}
fn default_sync_interval() -> u64 {
    5_000
}

/// Sink configuration (the JSON of docs/jni.md, "Sink config JSON").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SinkConfig {
    /// Connector name (for log lines).
    #[serde(default)]
    pub connector_name: String,
    /// Task id (for log lines).
    #[serde(default)]
    pub task_id: String,
    /// Backup root directory.
    pub target_dir: PathBuf,
    /// Roll a segment when it would grow past this many bytes (default 1 GiB).
    #[serde(default = "default_segment_size")]
    pub max_segment_size_bytes: u64,
    /// Roll a segment once it is this old when the next record arrives (<= 0: never; default 1 h).
    #[serde(default = "default_segment_age")]
    pub max_segment_age_ms: i64,
    /// Bytes between two offset index entries (default 4096).
    #[serde(default = "default_index_interval")]
    pub index_interval_bytes: u32,
    /// librdkafka settings of the source cluster (`cluster.*` without the prefix).
    #[serde(default)]
    pub cluster: BTreeMap<String, String>,
    /// The connector's own consumer group (never backed up).
    #[serde(default)]
    pub consumer_group_id: Option<String>,
    /// How often group offsets are captured (ms).
    #[serde(default = "default_sync_interval")]
    pub offsets_sync_interval_ms: u64,
    /// Regex of groups to capture.
    #[serde(default)]
    pub groups_include: Option<String>,
    /// Regex of groups not to capture.
    #[serde(default)]
    pub groups_exclude: Option<String>,
    /// Octal mode of the files the backup creates (`file.mode`; `None`: 0600, owner only).
    #[serde(default)]
    pub file_mode: Option<String>,
}

impl SinkConfig {
    /// A config with defaults for everything but the target directory.
    pub fn new(target_dir: impl Into<PathBuf>) -> SinkConfig {
        SinkConfig {
            connector_name: String::new(),
            task_id: String::new(),
            target_dir: target_dir.into(),
            max_segment_size_bytes: default_segment_size(),
            max_segment_age_ms: default_segment_age(),
            index_interval_bytes: default_index_interval(),
            cluster: BTreeMap::new(),
            consumer_group_id: None,
            offsets_sync_interval_ms: default_sync_interval(),
            groups_include: None,
            groups_exclude: None,
            file_mode: None,
        }
    }

    /// Parses the JSON handed over by the Java side.
    pub fn from_json(json: &[u8]) -> Result<SinkConfig> {
        serde_json::from_slice(json)
            .map_err(|e| Error::Config(format!("sink config JSON is not valid: {e}")))
    }

    fn validate(&self) -> Result<()> {
        if self.target_dir.as_os_str().is_empty() {
            return Err(Error::Config(
                "target.dir is empty; set it to the backup directory".into(),
            ));
        }
        if self.max_segment_size_bytes == 0 {
            return Err(Error::Config(
                "max.segment.size.bytes must be at least 1".into(),
            ));
        }
        if self.index_interval_bytes == 0 {
            return Err(Error::Config(
                "index.interval.bytes must be at least 1".into(),
            ));
        }
        Perms::parse(self.file_mode.as_deref(), "file.mode")?;
        Ok(())
    }

    /// The modes of the files and directories the backup creates (checked by `validate`).
    pub fn perms(&self) -> Perms {
        Perms::parse(self.file_mode.as_deref(), "file.mode").unwrap_or_default()
    }
}

/// Per-partition writer state.
struct PartitionState {
    dir: PathBuf,
    /// Holds the partition's exclusive writer lock until the state is dropped.
    _lock: std::fs::File,
    seg: Option<SegmentWriter>,
    /// Last offset appended (maybe still buffered).
    last_written: Option<i64>,
    /// Last offset known to be on stable storage.
    last_durable: Option<i64>,
    /// Last offset of the last finished segment (goes into the next segment header).
    prev_segment_last: Option<i64>,
    /// The segment and its length as of the last flush that succeeded: what may be reported.
    checkpoint: Option<(PathBuf, u64)>,
    /// Segments created since that flush (their data or directory entry may not be durable).
    unreported: Vec<PathBuf>,
    /// Set by an I/O error: nothing more is written or reported until the partition is
    /// reopened from its files, cut back to the checkpoint.
    poisoned: Option<String>,
    /// First offset this sink appended to the partition.
    first_appended: Option<i64>,
    /// After a reopen from a poisoned state: the next record delivered must be at or below
    /// this offset, or records would be missing (Connect rewinds to its last commit after a
    /// failed `preCommit`, but hands a failed `put`'s batch again as it was).
    rewind_to: Option<i64>,
    /// The last record handed was a re-delivery (skipped).
    skipping: bool,
    /// Monitoring counters; carried over when the partition is reopened after an error.
    counters: PartitionCounters,
}

/// Per-partition monitoring counters (see [`crate::metrics`]).
#[derive(Debug, Clone)]
struct PartitionCounters {
    records: u64,
    bytes: u64,
    rolled: u64,
    errors: u64,
    /// Highest timestamp appended, and the same as of the last successful flush (-1: none).
    max_ts_written: i64,
    max_ts_durable: i64,
}

impl Default for PartitionCounters {
    fn default() -> PartitionCounters {
        PartitionCounters {
            records: 0,
            bytes: 0,
            rolled: 0,
            errors: 0,
            max_ts_written: -1,
            max_ts_durable: -1,
        }
    }
}

/// Task-wide monitoring counters (records and bytes are also per partition).
#[derive(Debug, Default)]
struct SinkTotals {
    records: u64,
    bytes: u64,
    rolled: u64,
    errors: u64,
    flushes: u64,
    flush_last_ms: f64,
    flush_total_ms: f64,
}

/// A partition's log start and end offsets on the cluster and when they were read (ms).
#[derive(Debug, Clone, Copy)]
struct EndOffset {
    start: i64,
    end: i64,
    read_ms: i64,
}

impl PartitionState {
    /// Poisons the partition after `err`: drops the writer without writing its buffers and
    /// cuts the files back to the last successful flush, so pages a failed fsync dropped can
    /// never be read back as data and reported durable later.
    fn poison(&mut self, tp: &str, err: &Error) {
        log::error!(
            "{tp}: I/O error, the partition stops writing until it is reopened from its files \
             (what was not durable is fetched again from Kafka): {err}"
        );
        if let Some(seg) = self.seg.take() {
            seg.abandon();
        }
        self.counters.errors += 1;
        let mut cut = Ok(());
        for p in self.unreported.drain(..) {
            cut = cut.and(segment::remove_segment_files(&p));
        }
        if let Some((p, len)) = &self.checkpoint {
            cut = cut.and(segment::truncate_segment(p, *len));
        }
        cut = cut.and(sync_dir(&self.dir));
        if let Err(e) = cut {
            log::error!("{tp}: could not cut the files back to the last flush: {e}");
        }
        self.poisoned = Some(err.to_string());
    }
}

/// Per-topic manifest bookkeeping.
struct TopicState {
    manifest: Option<TopicManifest>,
    max_partition: i32,
    /// A manifest write or refresh is still owed.
    pending: bool,
    next_attempt_ms: i64,
}

/// The sink engine. Create with [`BackupSink::open`]; finish with [`BackupSink::close`].
pub struct BackupSink {
    config: SinkConfig,
    /// Every Kafka call of the sink goes through here.
    cluster: Arc<dyn ClusterClient>,
    clock: Arc<dyn Fn() -> i64 + Send + Sync>,
    parts: HashMap<String, HashMap<i32, PartitionState>>,
    topics: HashMap<String, TopicState>,
    /// Directories with new entries that must be fsynced before data is reported durable.
    dirs_to_sync: BTreeSet<PathBuf>,
    scratch: Vec<u8>,
    /// Background capture of consumer-group offsets for the open partitions, when a cluster is
    /// configured and `offsets_sync_interval_ms` > 0.
    capture: Option<GroupOffsetCapture>,
    closed: bool,
    /// Modes of everything the sink creates (`file.mode`, parsed once).
    perms: Perms,
    /// Monitoring: task-wide counters, the cluster's end offsets and when they were last asked.
    totals: SinkTotals,
    ends: HashMap<TopicPartition, EndOffset>,
    ends_asked_ms: i64,
}

impl BackupSink {
    /// Opens the sink: creates or checks the target directory and its root marker.
    /// Kafka calls go through librdkafka with `config.cluster`.
    pub fn open(config: SinkConfig) -> Result<BackupSink> {
        let cluster = Arc::new(RdKafkaCluster::new(&config.cluster));
        BackupSink::build(config, Arc::new(manifest::now_ms), cluster)
    }

    /// Like [`BackupSink::open`], with every Kafka call going through `cluster` (the Connect
    /// path: Java clients). `config.cluster` then only says whether a cluster is configured.
    pub fn open_on(config: SinkConfig, cluster: Arc<dyn ClusterClient>) -> Result<BackupSink> {
        BackupSink::build(config, Arc::new(manifest::now_ms), cluster)
    }

    /// Like [`BackupSink::open`] with an injected clock (ms), for deterministic roll tests.
    pub fn open_with_clock(
        config: SinkConfig,
        clock: Arc<dyn Fn() -> i64 + Send + Sync>,
    ) -> Result<BackupSink> {
        let cluster = Arc::new(RdKafkaCluster::new(&config.cluster));
        BackupSink::build(config, clock, cluster)
    }

    fn build(
        config: SinkConfig,
        clock: Arc<dyn Fn() -> i64 + Send + Sync>,
        cluster: Arc<dyn ClusterClient>,
    ) -> Result<BackupSink> {
        config.validate()?;
        manifest::init_root(&config.target_dir, config.perms())?;
        // Probe writability now so a read-only target fails at start, not at the first put.
        let probe = config
            .target_dir
            .join(format!(".write-probe-{}", std::process::id()));
        config
            .perms()
            .create(&probe)
            .map_err(|e| Error::io(e, "write to the target directory", &config.target_dir))?;
        let _ = std::fs::remove_file(&probe);
        let capture = if config.cluster.contains_key("bootstrap.servers")
            && config.offsets_sync_interval_ms > 0
        {
            Some(GroupOffsetCapture::start(CaptureConfig {
                root: config.target_dir.clone(),
                cluster: Arc::clone(&cluster),
                include: config.groups_include.clone(),
                exclude: config.groups_exclude.clone(),
                own_group: config.consumer_group_id.clone(),
                interval_ms: config.offsets_sync_interval_ms,
                perms: config.perms(),
            })?)
        } else {
            None
        };
        log::info!(
            "backup sink {} {} writing to {} (format version {FORMAT_VERSION})",
            config.connector_name,
            config.task_id,
            config.target_dir.display()
        );
        Ok(BackupSink {
            perms: config.perms(),
            config,
            cluster,
            clock,
            parts: HashMap::new(),
            topics: HashMap::new(),
            dirs_to_sync: BTreeSet::new(),
            scratch: Vec::with_capacity(4096),
            capture,
            closed: false,
            totals: SinkTotals::default(),
            ends: HashMap::new(),
            ends_asked_ms: i64::MIN,
        })
    }

    /// The configuration the sink was opened with.
    pub fn config(&self) -> &SinkConfig {
        &self.config
    }

    /// Fails once group-offset captures have been failing for their whole failure window:
    /// a task that backs up records but no group positions must not look healthy.
    fn check_capture(&self) -> Result<()> {
        match &self.capture {
            Some(c) => c.health(),
            None => Ok(()),
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            return Err(Error::State(
                "the backup sink is closed; open a new one".into(),
            ));
        }
        Ok(())
    }

    /// Opens partitions for writing: repairs a torn tail and answers, per partition, the next
    /// offset to fetch: last offset in the files + 1; for a partition without files, its log
    /// start offset on the cluster (or -1 when no cluster is configured, 0 when it cannot be
    /// reached: Connect then starts at the log start through `auto.offset.reset=earliest`).
    ///
    /// The files are the truth in both directions: an empty or emptied backup never defers to
    /// the offsets Connect committed for an earlier backup. And a cluster whose log ends below
    /// what the files hold (a re-created topic, another cluster behind the same address) is
    /// an error, never a reason to skip records as re-deliveries.
    pub fn open_partitions(&mut self, tps: &[TopicPartition]) -> Result<Vec<TopicPartitionOffset>> {
        self.check_open()?;
        let mut last = Vec::with_capacity(tps.len());
        for tp in tps {
            self.reopen_if_poisoned(&tp.topic, tp.partition)?;
            let st = self.partition(&tp.topic, tp.partition)?;
            last.push(st.last_written);
        }
        let marks = self.watermarks(tps);
        if let Some(m) = &marks {
            self.note_end_offsets(m, (self.clock)());
        }
        let mut out = Vec::with_capacity(tps.len());
        for (tp, last) in tps.iter().zip(last) {
            let next = match (last, marks.as_ref().map(|m| m.get(tp))) {
                (Some(l), Some(Some(&(_, end)))) if end <= l => {
                    // Forget the partition so a later open checks again.
                    self.forget(tp);
                    return Err(self.recreated_error(tp, l, end));
                }
                (Some(l), _) => l + 1,
                (None, Some(Some(&(start, _)))) => {
                    log::info!(
                        "{tp}: no backup files; starting at the partition's log start offset \
                         {start} (the files decide where a backup resumes, not the offsets \
                         Connect committed)"
                    );
                    start
                }
                (None, Some(None)) => {
                    log::warn!(
                        "{tp}: no backup files and the log start offset could not be read; \
                         starting at offset 0 (the consumer moves to the log start)"
                    );
                    0
                }
                (None, _) => -1,
            };
            out.push(TopicPartitionOffset::new(
                tp.topic.clone(),
                tp.partition,
                next,
            ));
        }
        Ok(out)
    }

    /// Log start and end offsets of `tps` on the cluster; `None` without a configured cluster,
    /// an empty map (with a warning) when it cannot be reached.
    fn watermarks(&self, tps: &[TopicPartition]) -> Option<BTreeMap<TopicPartition, (i64, i64)>> {
        if !self.config.cluster.contains_key("bootstrap.servers") || tps.is_empty() {
            return None;
        }
        match self.cluster.watermarks(tps, WATERMARK_TIMEOUT) {
            Ok(m) => Some(m),
            Err(e) => {
                log::warn!(
                    "could not read log start and end offsets ({e}); a re-created topic cannot \
                     be detected at this open"
                );
                Some(BTreeMap::new())
            }
        }
    }

    fn recreated_error(&self, tp: &TopicPartition, last: i64, end: i64) -> Error {
        Error::State(format!(
            "{tp}: the backup in {} holds records up to offset {last}, but the partition on \
             the cluster at {} now ends at offset {end}: the topic was deleted and re-created, \
             or another cluster answers at that address. Writing on would skip every record up \
             to offset {last} as already backed up. Back the new topic up into a new target \
             directory (or move the old backup away) and start again",
            self.config.target_dir.display(),
            self.config
                .cluster
                .get("bootstrap.servers")
                .map_or("?", String::as_str),
        ))
    }

    /// At the start of a run of re-delivered records: fails when the cluster's log for the
    /// partition ends at or below the files' last offset (the records are not the backed-up
    /// ones). Rewinds are rare, so this costs one request per rewind.
    fn check_redelivery(&self, tp: &TopicPartition, last: i64) -> Result<()> {
        if !self.config.cluster.contains_key("bootstrap.servers") {
            return Ok(());
        }
        match self
            .cluster
            .watermarks(std::slice::from_ref(tp), WATERMARK_TIMEOUT)
        {
            Ok(m) => match m.get(tp) {
                Some(&(_, end)) if end <= last => Err(self.recreated_error(tp, last, end)),
                _ => Ok(()),
            },
            Err(e) => {
                log::warn!("{tp}: could not check the log end offset for a re-delivery ({e})");
                Ok(())
            }
        }
    }

    /// Drops a partition's state (and its writer lock) without writing anything.
    fn forget(&mut self, tp: &TopicPartition) {
        if let Some(m) = self.parts.get_mut(&tp.topic) {
            m.remove(&tp.partition);
            if m.is_empty() {
                self.parts.remove(&tp.topic);
            }
        }
        self.update_capture_partitions();
    }

    /// Reopens a poisoned partition from its files (cut back to the last flush at poisoning).
    fn reopen_if_poisoned(&mut self, topic: &str, partition: i32) -> Result<()> {
        let Some(old) = self.parts.get_mut(topic).and_then(|m| m.remove(&partition)) else {
            return Ok(());
        };
        let Some(why) = old.poisoned.clone() else {
            self.parts
                .entry(topic.to_string())
                .or_default()
                .insert(partition, old);
            return Ok(());
        };
        let first_appended = old.first_appended;
        let counters = old.counters.clone();
        drop(old); // releases the writer lock
        let tp = TopicPartition::new(topic, partition);
        match self.open_partition(&tp) {
            Ok(mut st) => {
                log::warn!(
                    "{tp}: reopened from its files after an I/O error ({why}); resuming after \
                     offset {:?}",
                    st.last_written
                );
                st.rewind_to = st.last_written.map(|l| l + 1).or(first_appended);
                st.first_appended = first_appended;
                st.counters = counters;
                self.parts
                    .entry(topic.to_string())
                    .or_default()
                    .insert(partition, st);
                Ok(())
            }
            Err(e) => Err(Error::State(format!(
                "{tp} stopped writing after an I/O error ({why}) and cannot be reopened from its \
                 files: {e}; fix the storage, then restart the task"
            ))),
        }
    }

    /// The state of a partition, opening it (and noting its topic) on first use.
    fn partition(&mut self, topic: &str, partition: i32) -> Result<&mut PartitionState> {
        let known = self
            .parts
            .get(topic)
            .is_some_and(|m| m.contains_key(&partition));
        if !known {
            let tp = TopicPartition::new(topic, partition);
            let st = self.open_partition(&tp)?;
            self.parts
                .entry(topic.to_string())
                .or_default()
                .insert(partition, st);
            self.note_topic(topic, partition);
            self.update_capture_partitions();
        }
        Ok(self
            .parts
            .get_mut(topic)
            .and_then(|m| m.get_mut(&partition))
            .expect("inserted above"))
    }

    fn open_partition(&mut self, tp: &TopicPartition) -> Result<PartitionState> {
        let root = self.config.target_dir.clone();
        let dir = layout::partition_dir(&root, tp)?;
        if !dir.is_dir() {
            self.perms
                .create_dir_all(&dir)
                .map_err(|e| Error::io(e, "create partition directory", &dir))?;
            self.dirs_to_sync.insert(layout::topics_dir(&root));
            self.dirs_to_sync
                .insert(layout::topic_dir(&root, &tp.topic)?);
            self.dirs_to_sync.insert(dir.clone());
        }
        let lock = lock_partition(&dir, tp, self.perms)?;
        let mut segments = layout::list_segments(&dir)?;
        let mut seg = None;
        let mut prev_segment_last = None;
        while let Some((base, path)) = segments.pop() {
            let scan = match segment::scan(&path)? {
                Some(s) if s.records > 0 => s,
                _ => {
                    // Created but no complete record: the name may not match what comes next.
                    log::warn!(
                        "{}: segment holds no complete record (interrupted while being created); removing it",
                        path.display()
                    );
                    remove_segment(&path)?;
                    self.dirs_to_sync.insert(dir.clone());
                    continue;
                }
            };
            if scan.header.topic != tp.topic
                || scan.header.partition != tp.partition
                || scan.header.base_offset != base
            {
                return Err(Error::corrupt(
                    &path,
                    0,
                    format!(
                        "segment header says {}-{} base offset {}, but the file belongs to {tp} base offset {base}",
                        scan.header.topic, scan.header.partition, scan.header.base_offset
                    ),
                ));
            }
            let w = SegmentWriter::reopen(&path, scan)?;
            prev_segment_last = w.last_offset();
            seg = Some(w);
            break;
        }
        let last = seg.as_ref().and_then(SegmentWriter::last_offset);
        if let Some(l) = last {
            log::info!("{tp}: resuming after offset {l}");
        }
        let checkpoint = seg.as_ref().map(|s| (s.path().to_path_buf(), s.len()));
        Ok(PartitionState {
            dir,
            _lock: lock,
            seg,
            last_written: last,
            last_durable: last,
            prev_segment_last,
            checkpoint,
            unreported: Vec::new(),
            poisoned: None,
            first_appended: None,
            rewind_to: None,
            skipping: false,
            counters: PartitionCounters::default(),
        })
    }

    /// Appends records (any mix of partitions). Records at or below the last offset written
    /// for their partition are skipped (re-delivery).
    pub fn put(&mut self, records: &[BatchRecord]) -> Result<()> {
        self.check_open()?;
        self.check_capture()?;
        let now = (self.clock)();
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut res = Ok(());
        for r in records {
            scratch.clear();
            codec::put_record_body(&mut scratch, &r.record);
            res = self.append(
                &r.topic,
                r.partition,
                r.record.offset,
                r.record.timestamp,
                &scratch,
                now,
            );
            if res.is_err() {
                break;
            }
        }
        self.scratch = scratch;
        res
    }

    /// Appends the records of an encoded batch buffer (docs/jni.md) without decoding keys,
    /// values or headers: the fast path of the JNI bridge.
    pub fn put_encoded(&mut self, batch: &[u8]) -> Result<()> {
        self.check_open()?;
        self.check_capture()?;
        let (_, refs) = codec::decode_batch_refs(batch)?;
        let now = (self.clock)();
        for r in refs {
            self.append(r.topic, r.partition, r.offset, r.timestamp, r.body, now)?;
        }
        Ok(())
    }

    fn append(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        timestamp: i64,
        body: &[u8],
        now: i64,
    ) -> Result<()> {
        self.reopen_if_poisoned(topic, partition)?;
        let st = self.partition(topic, partition)?;
        if let Some(want) = st.rewind_to.take() {
            if offset > want {
                // Not rewound to at or before the files' end: records in between would be
                // missing. Failing makes the restarted task resume from the files.
                let e = Error::State(format!(
                    "{topic}-{partition}: after an I/O error the files continue at offset {want}, \
                     but the next record delivered is {offset}; restart the task so it resumes \
                     from the files"
                ));
                st.poisoned = Some(e.to_string());
                return Err(e);
            }
        }
        if let Some(l) = st.last_written.filter(|l| offset <= *l) {
            log::trace!("{topic}-{partition}: skipping re-delivered offset {offset}");
            if !std::mem::replace(&mut st.skipping, true) {
                let tp = TopicPartition::new(topic, partition);
                if let Err(e) = self.check_redelivery(&tp, l) {
                    self.forget(&tp);
                    return Err(e);
                }
            }
            return Ok(());
        }
        st.skipping = false;
        let res = self.append_new(topic, partition, offset, timestamp, body, now);
        if let Err(e) = &res {
            if let Some(st) = self
                .parts
                .get_mut(topic)
                .and_then(|m| m.get_mut(&partition))
            {
                st.poison(&format!("{topic}-{partition}"), e);
            }
            self.totals.errors += 1;
        }
        res
    }

    /// Appends a record above the last one written; any error poisons the partition.
    fn append_new(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        timestamp: i64,
        body: &[u8],
        now: i64,
    ) -> Result<()> {
        let max_size = self.config.max_segment_size_bytes;
        let max_age = self.config.max_segment_age_ms;
        let interval = self.config.index_interval_bytes;
        let perms = self.perms;
        let st = self.partition(topic, partition)?;
        let mut rolled = false;
        if let Some(seg) = &st.seg {
            let too_big = seg.len() + (FRAME_PREFIX_LEN + body.len()) as u64 > max_size;
            let too_old = max_age > 0 && now - seg.header().created_ms >= max_age;
            if !seg.is_empty() && (too_big || too_old) {
                let seg = st.seg.take().expect("checked");
                st.prev_segment_last = seg.last_offset();
                log::debug!(
                    "{topic}-{partition}: rolling segment {} ({})",
                    seg.path().display(),
                    if too_big { "size" } else { "age" }
                );
                seg.finish()?;
                st.counters.rolled += 1;
                rolled = true;
            }
        }
        if st.seg.is_none() {
            let header = SegmentHeader {
                version: FORMAT_VERSION,
                header_len: 0,
                partition,
                base_offset: offset,
                prev_last_offset: st.prev_segment_last.unwrap_or(-1),
                index_interval_bytes: interval,
                created_ms: now,
                topic: topic.to_string(),
            };
            let w = SegmentWriter::create(&st.dir, header, perms)?;
            // Noted before the first append: its directory entry is owed an fsync whatever
            // happens to the records.
            st.unreported.push(w.path().to_path_buf());
            st.seg = Some(w);
            let dir = st.dir.clone();
            self.dirs_to_sync.insert(dir);
        }
        let st = self.partition(topic, partition)?;
        st.seg
            .as_mut()
            .expect("created above")
            .append(offset, timestamp, body)?;
        st.last_written = Some(offset);
        st.first_appended.get_or_insert(offset);
        let bytes = (FRAME_PREFIX_LEN + body.len()) as u64;
        let c = &mut st.counters;
        c.records += 1;
        c.bytes += bytes;
        c.max_ts_written = c.max_ts_written.max(timestamp);
        self.totals.records += 1;
        self.totals.bytes += bytes;
        self.totals.rolled += u64::from(rolled);
        Ok(())
    }

    /// Makes everything appended so far durable and answers, per open partition with data,
    /// last durable offset + 1 (sorted by topic and partition).
    ///
    /// An I/O error poisons the partitions it touches and fails the flush; so does a partition
    /// poisoned earlier that cannot be reopened. A poisoned partition that can be reopened is
    /// reopened from its files here, so what is reported is what its files hold.
    pub fn flush(&mut self) -> Result<Vec<TopicPartitionOffset>> {
        self.check_open()?;
        let started = std::time::Instant::now();
        let poisoned: Vec<(String, i32)> = self
            .parts
            .iter()
            .flat_map(|(t, m)| {
                m.iter()
                    .filter(|(_, st)| st.poisoned.is_some())
                    .map(|(p, _)| (t.clone(), *p))
            })
            .collect();
        let mut first_err = None;
        for (t, p) in poisoned {
            if let Err(e) = self.reopen_if_poisoned(&t, p) {
                first_err.get_or_insert(e);
            }
        }
        for (topic, m) in self.parts.iter_mut() {
            for (p, st) in m.iter_mut() {
                if st.poisoned.is_some() {
                    continue;
                }
                if let Some(seg) = &mut st.seg {
                    if let Err(e) = seg.flush() {
                        st.poison(&format!("{topic}-{p}"), &e);
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        if let Err(e) = self.sync_dirs() {
            // Which new entries were lost is unknown: every partition with one is poisoned.
            for (topic, m) in self.parts.iter_mut() {
                for (p, st) in m.iter_mut() {
                    if st.poisoned.is_none() && !st.unreported.is_empty() {
                        st.poison(&format!("{topic}-{p}"), &e);
                    }
                }
            }
            first_err.get_or_insert(e);
        }
        if let Some(e) = first_err {
            self.totals.errors += 1;
            return Err(e);
        }
        let took_ms = started.elapsed().as_secs_f64() * 1000.0;
        self.totals.flushes += 1;
        self.totals.flush_last_ms = took_ms;
        self.totals.flush_total_ms += took_ms;
        let mut out = Vec::new();
        for (topic, m) in &mut self.parts {
            for (p, st) in m.iter_mut() {
                st.counters.max_ts_durable = st.counters.max_ts_written;
                st.last_durable = st.last_written;
                st.unreported.clear();
                st.checkpoint = st.seg.as_ref().map(|s| (s.path().to_path_buf(), s.len()));
                if let Some(l) = st.last_durable {
                    out.push(TopicPartitionOffset::new(topic.clone(), *p, l + 1));
                }
            }
        }
        out.sort();
        self.write_pending_manifests();
        Ok(out)
    }

    fn sync_dirs(&mut self) -> Result<()> {
        while let Some(d) = self.dirs_to_sync.pop_first() {
            if let Err(e) = sync_dir(&d) {
                self.dirs_to_sync.insert(d);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Flushes and releases partitions (after a rebalance revoked them).
    pub fn close_partitions(&mut self, tps: &[TopicPartition]) -> Result<()> {
        self.check_open()?;
        // The last capture for these partitions, while they are still ours: Connect closes
        // every partition before it stops a task, so a capture at stop would find none.
        if let Some(capture) = &self.capture {
            let owned: Vec<TopicPartition> = tps
                .iter()
                .filter(|tp| {
                    self.parts
                        .get(&tp.topic)
                        .is_some_and(|m| m.contains_key(&tp.partition))
                })
                .cloned()
                .collect();
            if !owned.is_empty() {
                match capture.capture_partitions(&owned) {
                    Ok(n) => log::debug!("captured {n} group offset changes at close"),
                    Err(e) => log::warn!("capture of consumer-group offsets at close failed: {e}"),
                }
            }
        }
        let mut to_finish = Vec::new();
        for tp in tps {
            if let Some(m) = self.parts.get_mut(&tp.topic) {
                if let Some(st) = m.remove(&tp.partition) {
                    to_finish.push((tp.clone(), st));
                }
                if m.is_empty() {
                    self.parts.remove(&tp.topic);
                }
            }
        }
        self.update_capture_partitions();
        let mut first_err = None;
        for (tp, mut st) in to_finish {
            if st.poisoned.is_some() {
                continue; // cut back already; the next owner reopens it from the files
            }
            if let Some(seg) = st.seg.take() {
                if let Err(e) = seg.finish() {
                    st.poison(&tp.to_string(), &e);
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Err(e) = self.sync_dirs() {
            first_err.get_or_insert(e);
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Flushes and closes everything. Safe to call twice; later calls do nothing.
    pub fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        let tps: Vec<TopicPartition> = self
            .parts
            .iter()
            .flat_map(|(t, m)| m.keys().map(|p| TopicPartition::new(t.clone(), *p)))
            .collect();
        // close_partitions makes the last capture, so a backup stopped on purpose holds the
        // groups' latest positions.
        let res = self.close_partitions(&tps);
        if let Some(capture) = self.capture.take() {
            capture.stop();
        }
        self.write_pending_manifests();
        self.closed = true;
        res
    }

    /// Tells the group-offset capture which partitions this sink owns now.
    fn update_capture_partitions(&self) {
        if let Some(capture) = &self.capture {
            let mut tps: Vec<TopicPartition> = self
                .parts
                .iter()
                .flat_map(|(t, m)| m.keys().map(|p| TopicPartition::new(t.clone(), *p)))
                .collect();
            tps.sort();
            capture.set_partitions(tps);
        }
    }

    /// Records that a partition of `topic` exists and writes or refreshes the manifest if due.
    fn note_topic(&mut self, topic: &str, partition: i32) {
        let root = self.config.target_dir.clone();
        let ts = self.topics.entry(topic.to_string()).or_insert_with(|| {
            let manifest = manifest::read_topic_manifest(&root, topic).unwrap_or_else(|e| {
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

    fn write_pending_manifests(&mut self) {
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
    fn write_manifest(&mut self, topic: &str) {
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
            if let Err(e) = manifest::write_topic_manifest(&root, &m, self.perms) {
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

/// How long a new writer waits for the previous one to release a partition: after a Connect
/// rebalance the old task closes its partitions within moments.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// Takes the exclusive writer lock of a partition directory, waiting up to [`LOCK_WAIT`].
/// The kernel drops the lock when its holder exits, so a crash never leaves it stale.
fn lock_partition(dir: &Path, tp: &TopicPartition, perms: Perms) -> Result<std::fs::File> {
    let path = dir.join(layout::WRITER_LOCK);
    let file = perms
        .open_write(&path)
        .map_err(|e| Error::io(e, "open the partition lock file", &path))?;
    let started = std::time::Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Io {
                    path,
                    op: "lock partition for writing",
                    source: std::io::Error::new(
                        std::io::ErrorKind::WouldBlock,
                        format!(
                            "{tp} is being written by another kbackup writer (another task, \
                             connector or `kbackup backup` on the same target directory) for \
                             more than {}s; run one writer per backup directory",
                            LOCK_WAIT.as_secs()
                        ),
                    ),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io(e, "lock partition for writing", &path))
            }
        }
    }
}

fn remove_segment(path: &Path) -> Result<()> {
    segment::remove_segment_files(path)
}

/// Fsyncs a directory through the fault-injection hook.
fn sync_dir(dir: &Path) -> Result<()> {
    let f = std::fs::File::open(dir).map_err(|e| Error::io(e, "open directory for fsync", dir))?;
    crate::faults::dir_fsync(dir, || f.sync_all()).map_err(|e| Error::io(e, "fsync directory", dir))
}
