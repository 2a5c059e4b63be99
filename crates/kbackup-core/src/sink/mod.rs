//! The backup writer behind the sink connector and the CLI `backup` verb.
//!
//! It owns one segment writer per assigned partition and keeps the files, not Connect's
//! committed offsets, as the truth: `open_partitions` repairs a torn tail and answers where to
//! resume, `put` skips what is already on disk, and `flush` answers only what is durable. It
//! also keeps each topic's manifest up to date without ever letting a manifest problem block
//! data.

mod config;
mod manifests;
mod monitoring;
mod partition;

pub use config::{SinkConfig, DEFAULT_BUFFER_MEMORY, MIN_BUFFER_MEMORY};
use manifests::*;
use partition::*;

use crate::cluster::ClusterClient;
use crate::codec;
use crate::error::{Error, Result};
use crate::format::block::Compression;
use crate::format::body;
use crate::format::FORMAT_VERSION;
use crate::groups::{CaptureConfig, GroupOffsetCapture};
use crate::kafka::RdKafkaCluster;
use crate::layout;
use crate::manifest;
use crate::perms::Perms;
use crate::record::BatchRecord;
use crate::record::{TopicPartition, TopicPartitionOffset};
use crate::segment::{SegmentHeader, SegmentWriter, FRAME_PREFIX_LEN};
use crate::storage::{self, Store, StoreOptions};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long a manifest refresh may wait for the cluster.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long reading the log start and end offsets at open may take.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(15);
/// Minimum pause between two manifest refresh attempts of a topic after a failure.
const DESCRIBE_RETRY_MS: i64 = 30_000;

/// The sink engine. Create with [`BackupSink::open`]; finish with [`BackupSink::close`].
pub struct BackupSink {
    config: SinkConfig,
    /// Every Kafka call of the sink goes through here.
    cluster: Arc<dyn ClusterClient>,
    clock: Arc<dyn Fn() -> i64 + Send + Sync>,
    /// Looked up for every record: B-trees, because a lookup among a task's few topics and
    /// partitions is a comparison or two, where SipHash hashing cost more than the append.
    parts: BTreeMap<String, BTreeMap<i32, PartitionState>>,
    topics: HashMap<String, TopicState>,
    /// Directories with new entries that must be fsynced before data is reported durable.
    dirs_to_sync: BTreeSet<PathBuf>,
    /// The object store of a backup to a bucket (`None`: `config.target_dir` is a directory).
    store: Option<Arc<dyn Store>>,
    scratch: Vec<u8>,
    /// Background capture of consumer-group offsets for the open partitions, when a cluster is
    /// configured and `offsets_sync_interval_ms` > 0.
    capture: Option<GroupOffsetCapture>,
    closed: bool,
    /// Modes of everything the sink creates (`file.mode`, parsed once).
    perms: Perms,
    /// Codec and level of new blocks (`compression.type`, parsed once: it was parsed for every
    /// record, a lower-cased copy each time).
    compression: Compression,
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
        mut config: SinkConfig,
        clock: Arc<dyn Fn() -> i64 + Send + Sync>,
        cluster: Arc<dyn ClusterClient>,
    ) -> Result<BackupSink> {
        config.validate()?;
        let location = config.target_dir.to_string_lossy().into_owned();
        let store: Option<Arc<dyn Store>> = match storage::parse_location(&location)? {
            storage::Target::Local(dir) => {
                config.target_dir = dir;
                None
            }
            storage::Target::Cloud { .. } => {
                // storage.* settings, each unset one from the store's environment variables
                let options = StoreOptions {
                    perms: config.perms(),
                    ..config.storage.options()?
                };
                Some(Arc::from(storage::open_store(&location, &options)?))
            }
        };
        if let Some(store) = &store {
            manifest::init_store_root(store.as_ref())?;
            // Probe writability now so a read-only bucket fails at start, not at the first put.
            let probe = format!(
                "{}/write-probe-{}-{}",
                storage::UPLOADS_PREFIX,
                std::process::id(),
                config
                    .task_id
                    .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            );
            store.put(&probe, b"")?;
            store.delete(&probe)?;
        } else {
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
        }
        let capture = if config.cluster.contains_key("bootstrap.servers")
            && config.offsets_sync_interval_ms > 0
        {
            Some(GroupOffsetCapture::start(CaptureConfig {
                root: config.target_dir.clone(),
                store: store.clone(),
                // in a bucket, group positions are stored as often as segments complete
                persist_every_ms: config.max_segment_age_ms.max(0) as u64,
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
            "backup sink {} {} writing to {} (format version {FORMAT_VERSION}, compression {})",
            config.connector_name,
            config.task_id,
            config.target_dir.display(),
            config.compression_type.as_deref().unwrap_or("none")
        );
        Ok(BackupSink {
            perms: config.perms(),
            compression: config.compression()?,
            config,
            cluster,
            clock,
            parts: BTreeMap::new(),
            topics: HashMap::new(),
            dirs_to_sync: BTreeSet::new(),
            store,
            scratch: Vec::with_capacity(4096),
            capture,
            closed: false,
            totals: SinkTotals::default(),
            ends: HashMap::new(),
            ends_asked_ms: i64::MIN,
        })
    }

    /// The object store of a backup to a bucket (`None` for a directory).
    pub fn store(&self) -> Option<Arc<dyn Store>> {
        self.store.clone()
    }

    /// Like [`Self::flush`], but first completes every open segment in an object store, so
    /// everything appended is durable when it returns (a directory's flush already does
    /// that): the end of a run that stops here.
    pub fn flush_all(&mut self) -> Result<Vec<TopicPartitionOffset>> {
        self.check_open()?;
        for tp in self.open_in_store(|_| true) {
            self.complete_segment(&tp)?;
        }
        self.flush()
    }

    /// The partitions written to an object store whose open segment `due` picks.
    fn open_in_store(&self, due: impl Fn(&SegmentWriter) -> bool) -> Vec<TopicPartition> {
        let mut out = Vec::new();
        for (topic, m) in &self.parts {
            for (p, st) in m {
                let open = st.seg.as_ref().filter(|s| s.is_object() && due(s));
                if open.is_some() && st.poisoned.is_none() {
                    out.push(TopicPartition::new(topic.clone(), *p));
                }
            }
        }
        out
    }

    /// Completes the open segment of a partition written to an object store: durable when
    /// this returns. A lost race drops the partition ([`Self::lose_partition`]); another error
    /// poisons it.
    fn complete_segment(&mut self, tp: &TopicPartition) -> Result<()> {
        let st = self.partition(&tp.topic, tp.partition)?;
        let Some(seg) = st.seg.take() else {
            return Ok(());
        };
        st.prev_segment_last = seg.last_offset();
        match seg.finish() {
            Ok(()) => {
                st.last_durable = st.last_written;
                st.counters.max_ts_durable = st.counters.max_ts_written;
                st.counters.rolled += 1;
                self.totals.rolled += 1;
                Ok(())
            }
            Err(e) if storage::is_conflict(&e) => Err(self.lose_partition(tp, &e)),
            Err(e) => {
                st.poison(&tp.to_string(), &e);
                self.totals.errors += 1;
                Err(self.store_failure(tp, &e))
            }
        }
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
            body::encode(&mut scratch, &r.record);
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
        res?;
        self.bound_buffers()
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
        self.bound_buffers()
    }

    /// Memory held for open compression blocks over all partitions (their capacity).
    pub fn buffered_bytes(&self) -> u64 {
        self.parts
            .values()
            .flat_map(|m| m.values())
            .filter_map(|st| st.seg.as_ref())
            .map(|w| w.buffered() as u64)
            .sum()
    }

    /// Keeps the open compression blocks of all partitions within `buffer.memory.bytes`: above
    /// it, the largest blocks are written out early (smaller blocks, nothing made durable) and
    /// their memory given back (an empty block kept for reuse costs memory too) until half the
    /// budget is left. So memory is bounded by the setting, not by partitions times
    /// a block: a task with 600 partitions that each fill slowly holds at most the budget. An
    /// error poisons the partition like a failed append.
    fn bound_buffers(&mut self) -> Result<()> {
        let budget = self.config.buffer_memory_bytes;
        let mut total = self.buffered_bytes();
        if total <= budget {
            return Ok(());
        }
        let mut open: Vec<(usize, String, i32)> = Vec::new();
        for (topic, m) in &self.parts {
            for (p, st) in m {
                if let Some(n) = st.seg.as_ref().map(|w| w.buffered()).filter(|n| *n > 0) {
                    open.push((n, topic.clone(), *p));
                }
            }
        }
        open.sort_unstable_by_key(|o| std::cmp::Reverse(o.0));
        for (n, topic, p) in open {
            if total <= budget / 2 {
                break;
            }
            let st = self
                .parts
                .get_mut(&topic)
                .and_then(|m| m.get_mut(&p))
                .expect("listed above");
            let res = st.seg.as_mut().expect("listed above").release_block();
            if let Err(e) = res {
                st.poison(&format!("{topic}-{p}"), &e);
                self.totals.errors += 1;
                return Err(e);
            }
            total -= n as u64;
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
            self.totals.errors += 1;
            if storage::is_conflict(e) {
                return Err(self.lose_partition(&TopicPartition::new(topic, partition), e));
            }
            if let Some(st) = self
                .parts
                .get_mut(topic)
                .and_then(|m| m.get_mut(&partition))
            {
                st.poison(&format!("{topic}-{partition}"), e);
                if st.store.is_some() {
                    return Err(self.store_failure(&TopicPartition::new(topic, partition), e));
                }
            }
        }
        res
    }

    /// The error that ends a writer whose partition could not be written to its object store
    /// (after the store's own retries): its unfinished segment was discarded, so the same
    /// records handed again could not continue it. A restart resumes after the last complete
    /// segment, and Kafka sends the rest again.
    fn store_failure(&self, tp: &TopicPartition, e: &Error) -> Error {
        Error::State(format!(
            "{tp}: writing to {} failed: {e}. The segment being written was discarded and \
             nothing of it was reported durable; once the store answers again, restart the \
             task (or run the backup again): it resumes after the last complete segment",
            self.config.target_dir.display()
        ))
    }

    /// After another writer won the race for a segment key: drops the partition (its upload
    /// is aborted) and answers the error that stops this writer.
    fn lose_partition(&mut self, tp: &TopicPartition, e: &Error) -> Error {
        if let Some(st) = self
            .parts
            .get_mut(&tp.topic)
            .and_then(|m| m.get_mut(&tp.partition))
        {
            if let Some(seg) = st.seg.take() {
                seg.abandon();
            }
        }
        self.forget(tp);
        let e = lost_race(tp, &self.config.target_dir.to_string_lossy(), e);
        log::error!("{e}");
        e
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
        let compression = self.compression;
        let perms = self.perms;
        let st = self.partition(topic, partition)?;
        let mut rolled = false;
        let mut new_dir = None;
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
                let in_store = seg.is_object();
                seg.finish()?;
                if in_store {
                    // complete in the store: durable now (a directory's segment is at flush)
                    st.last_durable = st.last_written;
                    st.counters.max_ts_durable = st.counters.max_ts_written;
                }
                st.counters.rolled += 1;
                rolled = true;
            }
        }
        if st.seg.is_none() {
            let header = SegmentHeader {
                version: compression.segment_version(),
                header_len: 0,
                partition,
                base_offset: offset,
                prev_last_offset: st.prev_segment_last.unwrap_or(-1),
                index_interval_bytes: interval,
                created_ms: now,
                topic: topic.to_string(),
            };
            if let Some(store) = &st.store {
                let key = st.dir.join(layout::segment_file_name(offset));
                let mut w =
                    SegmentWriter::create_object(store.clone(), &key.to_string_lossy(), header)?;
                w.set_compression(compression);
                st.seg = Some(w);
            } else {
                let mut w = SegmentWriter::create(&st.dir, header, perms)?;
                w.set_compression(compression);
                // Noted before the first append: its directory entry is owed an fsync whatever
                // happens to the records.
                st.unreported.push(w.path().to_path_buf());
                st.seg = Some(w);
                new_dir = Some(st.dir.clone());
            }
        }
        // One partition lookup per record: `st` is used to the end, and the sink-wide
        // bookkeeping waits until it is released.
        let appended = st
            .seg
            .as_mut()
            .expect("created above")
            .append(offset, timestamp, body);
        let bytes = (FRAME_PREFIX_LEN + body.len()) as u64;
        if appended.is_ok() {
            st.last_written = Some(offset);
            st.first_appended.get_or_insert(offset);
            let c = &mut st.counters;
            c.records += 1;
            c.bytes += bytes;
            c.max_ts_written = c.max_ts_written.max(timestamp);
        }
        if let Some(dir) = new_dir {
            // Owed whatever happened to the record: the segment's directory entry exists.
            self.dirs_to_sync.insert(dir);
        }
        appended?;
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
        // In an object store only a complete segment is durable: complete the open ones due by
        // age, so the age bounds what is not yet durable even when no record arrives to roll
        // them. (A lost race or an error is counted by complete_segment.)
        let now = (self.clock)();
        let max_age = self.config.max_segment_age_ms;
        let due = self.open_in_store(|s| max_age > 0 && now - s.header().created_ms >= max_age);
        for tp in due {
            if let Err(e) = self.complete_segment(&tp) {
                first_err.get_or_insert(e);
            }
        }
        for (topic, m) in self.parts.iter_mut() {
            for (p, st) in m.iter_mut() {
                if st.poisoned.is_some() || st.store.is_some() {
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
                if st.store.is_none() {
                    st.counters.max_ts_durable = st.counters.max_ts_written;
                    st.last_durable = st.last_written;
                    st.unreported.clear();
                    st.checkpoint = st.seg.as_ref().map(|s| (s.path().to_path_buf(), s.len()));
                }
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
                    let e = if storage::is_conflict(&e) {
                        lost_race(&tp, &self.config.target_dir.to_string_lossy(), &e)
                    } else if st.store.is_some() {
                        self.store_failure(&tp, &e)
                    } else {
                        e
                    };
                    log::error!("{e}");
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
}
