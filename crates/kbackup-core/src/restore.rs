//! The restore engine behind the source connector (and the CLI restore).
//!
//! It reads backed-up records partition by partition for the Java task, learns from the
//! acknowledgements which new offset each original offset received, and, once a partition is
//! fully restored and acknowledged, commits every captured consumer group's translated offset
//! (see [`crate::translate`]) to the target cluster.
//!
//! Everything needed to finish that job after a crash lives in the restore state directory
//! (default `<source_dir>/restore-state/<digest of the connector name>/`, docs/restore.md):
//! one small JSON file per partition, written atomically, holding the backed-up position of each
//! group, the new offset its target record received (the FIRST one when the restore wrote a
//! record twice) and whether the group was committed. The same files are the restore status the
//! CLI shows. The connector name is stored inside `connector.json`, never used as a path.

use crate::cluster::{ClusterClient, CommitOutcome};
use crate::codec::{Ack, BatchRecord, FLAG_FINISHED, FLAG_WAITING_FOR_ACKS};
use crate::error::{Error, Result};
use crate::kafka::RdKafkaCluster;
use crate::layout;
use crate::manifest;
use crate::metrics::{SourceMetrics, SourcePartitionMetrics};
use crate::offsets_log;
use crate::reader::{Backup, PartitionReader};
use crate::reconcile::{self, KafkaTargetLog, TargetLog};
use crate::record::{TopicPartition, TopicPartitionOffset};
use crate::translate::{self, NewOffsets, Target};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Timeout of each Kafka call made by the restore.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);
/// How often progress (not translation data, which is saved at once) is written to disk.
const PROGRESS_SAVE_INTERVAL: Duration = Duration::from_secs(1);
/// Pause between checks whether the other partitions of a topic are done.
const TOPIC_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// Wait before retrying a group commit that failed for a retriable reason.
const COMMIT_RETRY_INTERVAL: Duration = Duration::from_secs(10);
/// How long a log-end group waits for the last transaction's commit marker to land.
const SETTLE: Duration = Duration::from_secs(30);
/// How long group commits may keep failing with transient errors before the task fails.
const COMMIT_GIVE_UP: Duration = Duration::from_secs(300);

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
const HELD_CONFIGS: &[(&str, &str)] = &[
    ("retention.ms", "-1"),
    ("retention.bytes", "-1"),
    ("message.timestamp.type", "CreateTime"),
];

// ---------------------------------------------------------------------------------------------
// Configuration

fn default_batch_size() -> usize {
    1000
}

fn default_true() -> bool {
    true
}

fn minus_one() -> i64 {
    -1
}

/// The source connector's configuration, as the JSON of docs/jni.md.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceConfig {
    /// Connect connector name (free text: stored in files, never a path).
    pub connector_name: String,
    /// Connect task id, for log lines and the status.
    pub task_id: String,
    /// Root directory of the backup to restore.
    pub source_dir: PathBuf,
    /// Backed-up topics to restore (an explicit list).
    pub topics: Vec<String>,
    /// Original topic -> target topic.
    #[serde(default)]
    pub topics_rename: BTreeMap<String, String>,
    /// Most records per poll.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Client settings for the target cluster (`cluster.*` without the prefix).
    #[serde(default)]
    pub cluster: BTreeMap<String, String>,
    /// Where restore progress is kept; default `<source_dir>/restore-state/<digest>/`.
    #[serde(default)]
    pub restore_state_dir: Option<PathBuf>,
    /// Restore into target topics that already hold records.
    #[serde(default)]
    pub allow_non_empty_topics: bool,
    /// Commit translated consumer-group offsets when partitions finish.
    #[serde(default = "default_true")]
    pub restore_group_offsets: bool,
}

impl SourceConfig {
    /// Parses the config JSON handed over by the Java task or built by the CLI.
    pub fn from_json(json: &[u8]) -> Result<SourceConfig> {
        serde_json::from_slice(json).map_err(|e| {
            Error::Config(format!(
                "the source config JSON is malformed ({e}); the Java shim and the native library \
                 come from different kbackup versions: use the jar as shipped"
            ))
        })
    }

    /// The topic an original topic is restored into.
    pub fn target_topic<'a>(&'a self, topic: &'a str) -> &'a str {
        self.topics_rename
            .get(topic)
            .map(String::as_str)
            .unwrap_or(topic)
    }

    /// The `transactional.id` of a restore that writes through its own transactional producer
    /// (the CLI): one per restore identity, so a re-run fences the killed run's producer and
    /// its open transaction is aborted before the target is read back.
    pub fn transactional_id(&self) -> String {
        format!("kbackup-restore-{}", name_digest(&self.connector_name))
    }

    /// The restore state directory this config uses.
    pub fn state_dir(&self) -> PathBuf {
        match &self.restore_state_dir {
            Some(d) => d.clone(),
            None => {
                layout::restore_state_dir(&self.source_dir).join(name_digest(&self.connector_name))
            }
        }
    }
}

/// A stable, path-safe name for free text: 64-bit FNV-1a in hex.
fn name_digest(name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Topics present in a backup (directory names under `topics/`).
fn backup_topics(root: &Path) -> Result<BTreeSet<String>> {
    let dir = layout::topics_dir(root);
    let mut out = BTreeSet::new();
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(e, "list topics of backup", &dir)),
    };
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(e, "list topics of backup", &dir))?;
        if let Some(name) = entry.file_name().to_str() {
            if layout::validate_topic_name(name).is_ok() && entry.path().is_dir() {
                out.insert(name.to_string());
            }
        }
    }
    Ok(out)
}

/// Backed-up partitions of a topic (directory names under the topic directory).
fn backup_partitions(root: &Path, topic: &str) -> Result<Vec<i32>> {
    let dir = layout::topic_dir(root, topic)?;
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(e, "list partitions of", &dir)),
    };
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(e, "list partitions of", &dir))?;
        if let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(layout::parse_partition_dir_name)
        {
            out.push(p);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Checks a source config without touching Kafka; each problem is (config key, message + fix).
pub fn validate(cfg: &SourceConfig) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let mut bad = |key: &str, msg: String| problems.push((key.to_string(), msg));
    let dir = &cfg.source_dir;
    let mut in_backup = None;
    if dir.as_os_str().is_empty() {
        bad(
            "source.dir",
            "source.dir is required: set it to the backup directory to restore from".into(),
        );
    } else if !dir.is_dir() {
        bad(
            "source.dir",
            format!(
                "source.dir {} does not exist or is not a directory: mount the backup volume on \
                 every Connect worker and point source.dir at the backup root",
                dir.display()
            ),
        );
    } else if let Err(e) = manifest::read_root_marker(dir) {
        bad(
            "source.dir",
            format!("source.dir {} is not a kbackup backup: {e}", dir.display()),
        );
    } else {
        match backup_topics(dir) {
            Ok(t) => in_backup = Some(t),
            Err(e) => bad("source.dir", e.to_string()),
        }
    }
    if cfg.topics.is_empty() {
        bad(
            "topics",
            "topics is required: list the backed-up topics to restore, separated by commas".into(),
        );
    }
    let mut seen = BTreeSet::new();
    for t in &cfg.topics {
        if !seen.insert(t) {
            bad(
                "topics",
                format!("topic {t:?} is listed twice in topics: list it once"),
            );
        }
        if let Some(have) = &in_backup {
            if !have.contains(t) {
                let list = have.iter().cloned().collect::<Vec<_>>().join(", ");
                bad(
                    "topics",
                    format!(
                        "topic {t:?} is not in the backup at {}; topics in the backup: [{list}]; \
                         run `kbackup inspect {}` to see them",
                        dir.display(),
                        dir.display()
                    ),
                );
            }
        }
    }
    for (from, to) in &cfg.topics_rename {
        if !cfg.topics.contains(from) {
            bad(
                "topics.rename",
                format!(
                    "topics.rename renames {from:?}, which is not listed in topics: add it to \
                     topics or drop the rename"
                ),
            );
        }
        if let Err(e) = layout::validate_topic_name(to) {
            bad(
                "topics.rename",
                format!("topics.rename target for {from:?}: {e}"),
            );
        }
    }
    let mut targets: BTreeMap<&str, &str> = BTreeMap::new();
    for t in &cfg.topics {
        let target = cfg.target_topic(t);
        if let Some(other) = targets.insert(target, t) {
            bad(
                "topics.rename",
                format!("topics {other:?} and {t:?} would both be restored into {target:?}: rename one of them"),
            );
        }
    }
    if cfg.batch_size == 0 {
        bad(
            "batch.size",
            "batch.size must be at least 1 (default 1000)".into(),
        );
    }
    if cfg
        .cluster
        .get("bootstrap.servers")
        .is_none_or(|s| s.trim().is_empty())
    {
        bad(
            "cluster.bootstrap.servers",
            "cluster.bootstrap.servers is required: set it to the target cluster's brokers (host:port,...)".into(),
        );
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// Restore state files

/// What happened to one group's translated offset on one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum CommitState {
    /// Waiting for the partition to finish (or for a retry).
    Pending,
    /// Committed to the target cluster at this offset.
    Committed {
        /// The translated offset.
        offset: i64,
    },
    /// Not committed because the group has active members; never retried (the members may
    /// already have consumed on the new cluster).
    Refused {
        /// The offset that would have been committed.
        offset: i64,
        /// Why, with the command that applies it by hand.
        reason: String,
    },
    /// Not committed because of a non-retriable error.
    Failed {
        /// Why, with the fix.
        reason: String,
    },
    /// Not committed because `restore_group_offsets` is false.
    Skipped,
}

/// One consumer group's backed-up position on one partition and its translation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupTarget {
    /// Consumer group id.
    pub group: String,
    /// The group's committed offset on the original partition (latest capture).
    pub backed_up_offset: i64,
    /// When that offset was captured (ms since the epoch).
    pub capture_time_ms: i64,
    /// The commit metadata, committed again with the translated offset.
    pub metadata: String,
    /// Where the group resumes, in terms of the backup.
    pub target: Target,
    /// Original offset of the acknowledged record used for the translation.
    pub mapped_original: Option<i64>,
    /// New offset of that record (the first one received).
    pub mapped_new: Option<i64>,
    /// Commit progress.
    pub commit: CommitState,
}

/// Progress of one partition's restore: the status shown to users and the data translation needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Original (backed-up) topic.
    pub topic: String,
    /// Topic restored into.
    pub target_topic: String,
    /// Partition number.
    pub partition: i32,
    /// First backed-up original offset (`None`: the backup holds no record of it).
    pub first_offset: Option<i64>,
    /// Last backed-up original offset.
    pub last_offset: Option<i64>,
    /// Records known to be written (a record restored twice counts twice).
    pub records_restored: u64,
    /// Every backed-up record up to this original offset is acknowledged (written or dropped
    /// by a transform); -1: none. The acknowledged PREFIX, never the highest acknowledgement.
    pub last_acked_original: i64,
    /// New offset of the last written record of that prefix (-1: none); reconciling with the
    /// target after a crash reads on from here.
    #[serde(default = "minus_one")]
    pub last_acked_new: i64,
    /// End offset of the target partition when this restore state was created: where the
    /// restore's own records begin (`None` in state files of older versions).
    #[serde(default)]
    pub target_start: Option<i64>,
    /// Highest acknowledged new offset + 1 (-1: none); the new log end for translation.
    pub new_log_end: i64,
    /// Every backed-up record has been acknowledged.
    pub done: bool,
    /// Captured groups of this partition and their translation.
    pub groups: Vec<GroupTarget>,
    /// Last write of this file (ms since the epoch).
    pub updated_ms: i64,
}

impl PartitionState {
    fn new(
        topic: &str,
        target_topic: &str,
        partition: i32,
        first: Option<i64>,
        last: Option<i64>,
        groups: Vec<GroupTarget>,
    ) -> PartitionState {
        PartitionState {
            topic: topic.to_string(),
            target_topic: target_topic.to_string(),
            partition,
            first_offset: first,
            last_offset: last,
            records_restored: 0,
            last_acked_original: -1,
            last_acked_new: -1,
            target_start: None,
            new_log_end: -1,
            done: last.is_none(),
            groups,
            updated_ms: manifest::now_ms(),
        }
    }

    /// Applies the acknowledgement of the NEXT record of the partition (acknowledgements must
    /// come in original-offset order: the engine orders them, see [`AckQueue`]); returns true if
    /// translation data changed (save at once). A record at or below the acknowledged prefix is
    /// ignored.
    ///
    /// Each group targeting record `R` maps to the first WRITTEN record with original offset
    /// `>= R`: a target filtered by a transform falls to the next restored record, and never to
    /// a copy written later by a resumed restore.
    ///
    /// `new < 0` acknowledges a record that was handled but not written (filtered by a
    /// transform, or dropped by `errors.tolerance`): it counts towards finishing the partition
    /// and is never a group's position.
    pub fn advance(&mut self, original: i64, new: i64) -> bool {
        if original <= self.last_acked_original {
            return false;
        }
        self.last_acked_original = original;
        let mut changed = false;
        if new >= 0 {
            self.records_restored += 1;
            self.last_acked_new = new;
            self.new_log_end = self.new_log_end.max(new.saturating_add(1));
            for g in &mut self.groups {
                if let Target::Record(r) = g.target {
                    if original >= r && g.mapped_new.is_none() {
                        g.mapped_original = Some(original);
                        g.mapped_new = Some(new);
                        changed = true;
                    }
                }
            }
        }
        changed | self.check_done()
    }

    /// Marks the partition done once the acknowledged prefix reaches the last backed-up record.
    fn check_done(&mut self) -> bool {
        if !self.done
            && self
                .last_offset
                .is_some_and(|l| self.last_acked_original >= l)
        {
            self.done = true;
            return true;
        }
        false
    }

    /// Connect committed source offset `committed`: every record up to it was written or
    /// dropped, but the new offsets of those past the acknowledged prefix are unknown (their
    /// acknowledgements were lost and the target did not prove them). Takes them as
    /// acknowledged; a group targeting one of them maps to the first new offset not known to
    /// hold an earlier record (it may re-read some records, never skip one). Returns true if
    /// anything changed.
    pub fn skip_to(&mut self, committed: i64) -> bool {
        if committed <= self.last_acked_original {
            return false;
        }
        let floor = if self.last_acked_new >= 0 {
            self.last_acked_new + 1
        } else {
            self.target_start.unwrap_or(0)
        };
        for g in &mut self.groups {
            if let Target::Record(r) = g.target {
                if r <= committed && g.mapped_new.is_none() {
                    g.mapped_original = Some(r);
                    g.mapped_new = Some(floor);
                }
            }
        }
        self.last_acked_original = committed;
        self.check_done();
        true
    }

    /// Where reading resumes (after the acknowledged prefix), or `None` when nothing is left.
    pub fn resume_from(&self) -> Option<i64> {
        if self.done {
            return None;
        }
        Some(self.last_acked_original.saturating_add(1).max(0))
    }

    /// The target a group resolves to now: once the partition is done, a group whose target
    /// record and every later one were dropped (never written) resumes at the log end.
    pub fn effective_target(&self, g: &GroupTarget) -> Target {
        match g.target {
            Target::Record(_) if self.done && g.mapped_new.is_none() => Target::LogEnd,
            t => t,
        }
    }

    /// All group commits are settled (committed, refused, failed or skipped).
    pub fn settled(&self) -> bool {
        self.done && self.groups.iter().all(|g| g.commit != CommitState::Pending)
    }

    fn path(state_dir: &Path, topic: &str, partition: i32) -> Result<PathBuf> {
        layout::validate_topic_name(topic)?;
        Ok(state_dir
            .join("partitions")
            .join(topic)
            .join(format!("{partition}.json")))
    }

    /// Writes the state file atomically (temp file, fsync, rename, fsync the directory).
    pub fn save(&mut self, state_dir: &Path) -> Result<()> {
        self.updated_ms = manifest::now_ms();
        let path = Self::path(state_dir, &self.topic, self.partition)?;
        let dir = path.parent().unwrap_or(state_dir);
        STATE_PERMS
            .create_dir_all(dir)
            .map_err(|e| Error::io(e, "create restore state directory", dir))?;
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::State(format!("cannot serialise restore state: {e}")))?;
        layout::write_atomic(&path, &json, STATE_PERMS)
    }

    /// Reads a partition's state file; `None` if the restore never saved it.
    pub fn load(state_dir: &Path, topic: &str, partition: i32) -> Result<Option<PartitionState>> {
        let path = Self::path(state_dir, topic, partition)?;
        read_json(&path)
    }
}

impl NewOffsets for PartitionState {
    fn new_offset_of(&self, original: i64) -> Option<i64> {
        self.groups
            .iter()
            .find(|g| g.target == Target::Record(original))
            .and_then(|g| g.mapped_new)
    }
    fn log_end(&self) -> i64 {
        self.new_log_end.max(0)
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(e, "read restore state file", path)),
    };
    serde_json::from_slice(&data).map(Some).map_err(|e| {
        Error::corrupt(
            path,
            0,
            format!("restore state file is not valid ({e}); delete it to restart that partition's restore bookkeeping"),
        )
    })
}

/// Written once per target topic by [`prepare`]: whether the restore created it and which
/// configs it must get once every partition is restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicState {
    /// Original (backed-up) topic.
    pub topic: String,
    /// Topic restored into.
    pub target_topic: String,
    /// The restore created the target topic (only then are its configs managed).
    pub created_by_restore: bool,
    /// Configs the topic gets when the restore finishes (the carried configs).
    pub final_configs: BTreeMap<String, String>,
    /// `final_configs` have been applied, lifting the held retention/timestamp settings.
    pub configs_restored: bool,
}

impl TopicState {
    fn path(state_dir: &Path, topic: &str) -> Result<PathBuf> {
        layout::validate_topic_name(topic)?;
        Ok(state_dir.join("topics").join(format!("{topic}.json")))
    }

    fn save(&self, state_dir: &Path) -> Result<()> {
        let path = Self::path(state_dir, &self.topic)?;
        let dir = path.parent().unwrap_or(state_dir);
        STATE_PERMS
            .create_dir_all(dir)
            .map_err(|e| Error::io(e, "create restore state directory", dir))?;
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::State(format!("cannot serialise topic state: {e}")))?;
        layout::write_atomic(&path, &json, STATE_PERMS)
    }

    fn load(state_dir: &Path, topic: &str) -> Result<Option<TopicState>> {
        read_json(&Self::path(state_dir, topic)?)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ConnectorFile {
    connector_name: String,
    created_ms: i64,
}

/// Restore state names topics, groups and positions: owner only, like the backup's default.
const STATE_PERMS: crate::perms::Perms = crate::perms::OWNER_ONLY;

/// Creates the state directory and records (or checks) whose it is.
fn claim_state_dir(state_dir: &Path, connector: &str) -> Result<()> {
    STATE_PERMS.create_dir_all(state_dir).map_err(|e| {
        Error::io(
            e,
            "create restore state directory (set restore.state.dir to a writable directory if the backup is read-only)",
            state_dir,
        )
    })?;
    let path = state_dir.join("connector.json");
    match read_json::<ConnectorFile>(&path)? {
        Some(f) if f.connector_name == connector => Ok(()),
        Some(f) => Err(Error::Config(format!(
            "restore state directory {} belongs to connector {:?}, not {connector:?}: set \
             restore.state.dir to a directory of its own",
            state_dir.display(),
            f.connector_name
        ))),
        None => {
            let f = ConnectorFile {
                connector_name: connector.to_string(),
                created_ms: manifest::now_ms(),
            };
            let json = serde_json::to_vec_pretty(&f).map_err(|e| Error::State(e.to_string()))?;
            layout::write_atomic(&path, &json, STATE_PERMS)
        }
    }
}

/// Everything a restore state directory says, for `kbackup restore-status`.
#[derive(Debug, Clone, Serialize)]
pub struct StateDirStatus {
    /// The connector the directory belongs to.
    pub connector_name: Option<String>,
    /// Per target topic: creation and config state.
    pub topics: Vec<TopicState>,
    /// Per partition: progress and group commits.
    pub partitions: Vec<PartitionState>,
    /// Every partition with a state file is restored and its groups settled, and every topic
    /// the restore created has its final configs.
    pub finished: bool,
}

/// Reads a restore state directory (see docs/restore.md).
pub fn read_status(state_dir: &Path) -> Result<StateDirStatus> {
    if !state_dir.is_dir() {
        return Err(Error::NotFound(format!(
            "restore state directory {} does not exist: pass the restore.state.dir of the restore \
             (default <source.dir>/restore-state/<digest>/; `ls` that directory to find it)",
            state_dir.display()
        )));
    }
    let connector_name =
        read_json::<ConnectorFile>(&state_dir.join("connector.json"))?.map(|f| f.connector_name);
    let mut topics = Vec::new();
    let mut partitions = Vec::new();
    for entry in list_dir(&state_dir.join("topics"))? {
        if entry.extension().is_some_and(|e| e == "json") {
            if let Some(t) = read_json::<TopicState>(&entry)? {
                topics.push(t);
            }
        }
    }
    for topic_dir in list_dir(&state_dir.join("partitions"))? {
        for file in list_dir(&topic_dir)? {
            if file.extension().is_some_and(|e| e == "json") {
                if let Some(p) = read_json::<PartitionState>(&file)? {
                    partitions.push(p);
                }
            }
        }
    }
    partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    // Finished means nothing is left to do: records, group commits, AND the final configs of
    // the topics the restore created (until then their retention is still held off).
    let finished = !partitions.is_empty()
        && partitions.iter().all(PartitionState::settled)
        && topics
            .iter()
            .all(|t| !t.created_by_restore || t.configs_restored);
    Ok(StateDirStatus {
        connector_name,
        topics,
        partitions,
        finished,
    })
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(e, "list", dir)),
    };
    let mut out = Vec::new();
    for e in rd {
        out.push(e.map_err(|e| Error::io(e, "list", dir))?.path());
    }
    out.sort();
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Planning: which record each captured group resumes at

/// The captured groups of a backed-up partition and the record each resumes at.
///
/// Groups without a committed offset are left out; translation state is empty.
pub fn group_targets(
    root: &Path,
    tp: &TopicPartition,
    reader: Option<&mut PartitionReader>,
) -> Result<Vec<GroupTarget>> {
    let latest = offsets_log::latest_per_group(&layout::group_offsets_log(root, tp))?;
    let mut out = Vec::new();
    let mut reader = reader;
    for (group, e) in latest {
        // The first backed-up offset >= O, found with the reader (errors name file and
        // position); the rule itself stays in `translate`.
        let mut found: Vec<i64> = Vec::new();
        if let (Some(r), true) = (reader.as_deref_mut(), e.committed_offset >= 0) {
            r.seek(e.committed_offset)?;
            found.extend(r.next_record()?.map(|rec| rec.offset));
        }
        let target = translate::target_original(&found, e.committed_offset);
        if let Some(target) = target {
            out.push(GroupTarget {
                group,
                backed_up_offset: e.committed_offset,
                capture_time_ms: e.capture_time_ms,
                metadata: e.metadata,
                target,
                mapped_original: None,
                mapped_new: None,
                commit: CommitState::Pending,
            });
        }
    }
    Ok(out)
}

/// What `kbackup restore-plan` shows: per topic and partition, each group's target.
pub fn plan(root: &Path, topics: &[String]) -> Result<Vec<(TopicPartition, Vec<GroupTarget>)>> {
    let backup = Backup::open(root)?;
    let mut out = Vec::new();
    for topic in topics {
        for p in backup_partitions(root, topic)? {
            let tp = TopicPartition::new(topic.clone(), p);
            let mut reader = open_reader(&backup, topic, p)?;
            out.push((tp.clone(), group_targets(root, &tp, reader.as_mut())?));
        }
    }
    Ok(out)
}

/// Reads the target partition after the last record `state` knows and applies the copies
/// found there as acknowledgements; returns how many records it proved.
fn reconcile_partition(
    state: &mut PartitionState,
    reader: Option<&mut PartitionReader>,
    target: &mut dyn TargetLog,
) -> Result<usize> {
    let from = if state.last_acked_new >= 0 {
        state.last_acked_new + 1
    } else {
        match state.target_start {
            Some(s) => s,
            None => return Ok(0), // state of an older version: where our records begin is unknown
        }
    };
    let Some(reader) = reader else {
        return Ok(0);
    };
    reader.seek(state.last_acked_original.saturating_add(1).max(0))?;
    let (topic, p) = (state.target_topic.clone(), state.partition);
    let acks = reconcile::match_in_order(&mut || reader.next_record(), &mut |each| {
        target.scan(&topic, p, from, each)
    })?;
    for (o, n) in &acks {
        state.advance(*o, *n);
    }
    Ok(acks.len())
}

fn open_reader(backup: &Backup, topic: &str, p: i32) -> Result<Option<PartitionReader>> {
    match backup.partition(topic, p) {
        Ok(r) => Ok(Some(r)),
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------------
// Kafka helpers (target cluster)

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
    let state_dir = cfg.state_dir();
    claim_state_dir(&state_dir, &cfg.connector_name)?;
    for topic in &cfg.topics {
        let target = cfg.target_topic(topic);
        let m = manifest::read_topic_manifest(&cfg.source_dir, topic)?;
        let have = backup_partitions(&cfg.source_dir, topic)?;
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
        let known = TopicState::load(&state_dir, topic)?;
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
                    .save(&state_dir)?;
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
                .save(&state_dir)?;
                cluster.create_topic(target, needed, &held, KAFKA_TIMEOUT)?;
                log::info!(
                    "created topic {target} with {needed} partitions for the restore of {topic}"
                );
            }
        }
    }
    Ok(())
}

fn first_non_empty_partition(cluster: &dyn ClusterClient, topic: &str) -> Result<Option<i32>> {
    let ends = cluster.end_offsets(topic, KAFKA_TIMEOUT)?;
    Ok(ends
        .into_iter()
        .find(|(_, (low, high))| high > low)
        .map(|(p, _)| p))
}

// ---------------------------------------------------------------------------------------------
// The engine

/// The records of one partition handed out and not yet part of the acknowledged prefix.
///
/// Acknowledgements arrive out of order (a record dropped by a transform is acknowledged on the
/// task thread before the producer callbacks of earlier records), but the records were handed
/// out in order, so the prefix only moves over records that are all acknowledged.
#[derive(Debug, Default)]
pub struct AckQueue {
    /// (original offset, new offset once acknowledged; -1 = not written), in original order.
    items: std::collections::VecDeque<(i64, Option<i64>)>,
}

impl AckQueue {
    /// A record was handed out (in increasing original order).
    pub fn handed_out(&mut self, original: i64) {
        self.items.push_back((original, None));
    }

    /// Records an acknowledgement; false if the record was not handed out by this queue.
    pub fn ack(&mut self, original: i64, new: i64) -> bool {
        let (a, b) = self.items.as_slices();
        let found = match a.binary_search_by_key(&original, |x| x.0) {
            Ok(i) => Some(i),
            Err(_) => b
                .binary_search_by_key(&original, |x| x.0)
                .ok()
                .map(|i| i + a.len()),
        };
        match found.and_then(|i| self.items.get_mut(i)) {
            Some(item) => {
                item.1 = Some(new);
                true
            }
            None => false,
        }
    }

    /// Takes the acknowledged records at the front, in order: the prefix can move over them.
    pub fn take_prefix(&mut self) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        while let Some(&(o, Some(n))) = self.items.front() {
            out.push((o, n));
            self.items.pop_front();
        }
        out
    }

    /// Records handed out and not yet in the prefix.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

struct PartitionRun {
    state: PartitionState,
    reader: Option<PartitionReader>,
    /// Handed-out records waiting to join the acknowledged prefix.
    queue: AckQueue,
    /// Original offset to read next; `None` once everything has been sent.
    next: Option<i64>,
    dirty: bool,
    commit_retry_at: Option<Instant>,
}

/// Status of one task's restore, returned by `sourceStatus` as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreStatus {
    /// Connector name.
    pub connector_name: String,
    /// Task id.
    pub task_id: String,
    /// The restore state directory.
    pub state_dir: PathBuf,
    /// Every assigned partition is restored, acknowledged and its groups settled, and the
    /// final configs of their topics are applied.
    pub finished: bool,
    /// Per assigned partition.
    pub partitions: Vec<PartitionState>,
}

/// One task's restore: reads batches, takes acknowledgements, commits group offsets.
pub struct RestoreSource {
    cfg: SourceConfig,
    /// Every Kafka call of the engine goes through here.
    cluster: Arc<dyn ClusterClient>,
    state_dir: PathBuf,
    runs: BTreeMap<TopicPartition, PartitionRun>,
    /// Round-robin position so every partition makes progress.
    cursor: usize,
    last_save: Instant,
    finished_logged: bool,
    /// Topics whose final configs are applied (or not ours to apply).
    topics_finished: BTreeSet<String>,
    /// Earliest time to look at other tasks' partitions of done topics again.
    topic_check_at: Option<Instant>,
    /// Since when group commits fail with transient errors (`None`: the last one worked).
    commit_failing_since: Option<Instant>,
    closed: bool,
    /// Monitoring: key, value and header bytes of the records handed out.
    bytes_handed_out: u64,
}

impl RestoreSource {
    /// Opens the assigned partitions; `offset` of each is the last original offset Connect
    /// committed (-1: none).
    /// Kafka calls go through librdkafka with `cfg.cluster`.
    pub fn open(cfg: SourceConfig, assignment: &[TopicPartitionOffset]) -> Result<RestoreSource> {
        let cluster: Arc<dyn ClusterClient> = Arc::new(RdKafkaCluster::new(&cfg.cluster));
        Self::open_on(cfg, assignment, cluster)
    }

    /// Like [`RestoreSource::open`], with every Kafka call going through `cluster` (the
    /// Connect path: Java clients).
    pub fn open_on(
        cfg: SourceConfig,
        assignment: &[TopicPartitionOffset],
        cluster: Arc<dyn ClusterClient>,
    ) -> Result<RestoreSource> {
        let mut target = KafkaTargetLog::new(Arc::clone(&cluster), KAFKA_TIMEOUT);
        Self::open_with(cfg, assignment, cluster, &mut target, false)
    }

    /// [`RestoreSource::open`] reading the target partitions through `target`.
    ///
    /// Per partition: the saved state is the truth (Connect's committed offset can lag it);
    /// the target partition is then read after the last record the state knows, and the
    /// copies found there count as acknowledged ([`crate::reconcile`]); a committed offset
    /// still further on is taken as acknowledged too ([`PartitionState::skip_to`]). Reading
    /// resumes after all that, so no record proven written is written again. With `strict`
    /// (the CLI, whose only record of progress is the state and the target) a failure to read
    /// the target fails the open instead of resuming from the state alone.
    pub fn open_with(
        cfg: SourceConfig,
        assignment: &[TopicPartitionOffset],
        cluster: Arc<dyn ClusterClient>,
        target_log: &mut dyn TargetLog,
        strict: bool,
    ) -> Result<RestoreSource> {
        let state_dir = cfg.state_dir();
        claim_state_dir(&state_dir, &cfg.connector_name)?;
        let backup = Backup::open(&cfg.source_dir)?;
        let mut runs = BTreeMap::new();
        for a in assignment {
            if !cfg.topics.contains(&a.topic) {
                return Err(Error::Config(format!(
                    "task {} was assigned {}-{}, which is not in topics; restart the connector so \
                     Connect recomputes the assignment",
                    cfg.task_id, a.topic, a.partition
                )));
            }
            let tp = a.topic_partition();
            let target = cfg.target_topic(&a.topic).to_string();
            let mut reader = open_reader(&backup, &a.topic, a.partition)?;
            let saved = PartitionState::load(&state_dir, &a.topic, a.partition)?;
            let mut state = match saved {
                Some(mut s) => {
                    // A failed group commit (a missing ACL, say) is tried again by the next
                    // run: its cause may be fixed. Refused ones are not (the group has members).
                    for g in s.groups.iter_mut() {
                        if matches!(g.commit, CommitState::Failed { .. }) {
                            g.commit = CommitState::Pending;
                        }
                    }
                    if a.offset < 0 && s.last_acked_original >= 0 && !s.done {
                        log::info!(
                            "{}: Connect has no committed offset for {tp} but the restore state in \
                             {} has progress up to original offset {}: resuming from it (delete \
                             that directory to restore the partition again from the start)",
                            cfg.task_id,
                            state_dir.display(),
                            s.last_acked_original
                        );
                    }
                    s
                }
                None => {
                    let (first, last) = match &reader {
                        Some(r) => (r.first_offset()?, r.last_offset()?),
                        None => (None, None),
                    };
                    let groups = if cfg.restore_group_offsets {
                        group_targets(&cfg.source_dir, &tp, reader.as_mut())?
                    } else {
                        Vec::new()
                    };
                    let mut s =
                        PartitionState::new(&a.topic, &target, a.partition, first, last, groups);
                    if !cfg.restore_group_offsets {
                        s.groups
                            .iter_mut()
                            .for_each(|g| g.commit = CommitState::Skipped);
                    }
                    if !s.done {
                        match target_log.end_offset(&target, a.partition) {
                            Ok(end) => s.target_start = Some(end),
                            Err(e) if strict => return Err(e),
                            Err(e) => log::warn!(
                                "{}: {e}; a crash before the first acknowledgement of {tp} will \
                                 restore what was written again",
                                cfg.task_id
                            ),
                        }
                    }
                    s.save(&state_dir)?;
                    s
                }
            };
            if !state.done {
                let before = state.last_acked_original;
                match reconcile_partition(&mut state, reader.as_mut(), target_log) {
                    Ok(0) => {}
                    Ok(n) => log::info!(
                        "{}: {n} records of {tp} after original offset {before} were found \
                         in {target} (their acknowledgements were lost): not restored again",
                        cfg.task_id
                    ),
                    Err(e) if strict => return Err(e),
                    Err(e) => log::warn!(
                        "{}: could not read back {target}-{} to reconcile ({e}); resuming \
                         from the saved state and Connect's committed offset",
                        cfg.task_id,
                        a.partition
                    ),
                }
                if a.offset > state.last_acked_original {
                    log::info!(
                        "{}: Connect committed {tp} up to original offset {} while the restore \
                         state proves {}: taking the records between as written",
                        cfg.task_id,
                        a.offset,
                        state.last_acked_original
                    );
                    state.skip_to(a.offset);
                    if state.done {
                        if let Ok(end) = target_log.end_offset(&target, a.partition) {
                            state.new_log_end = state.new_log_end.max(end);
                        }
                    }
                }
                state.save(&state_dir)?;
            }
            let next = state.resume_from();
            if let (Some(n), Some(r)) = (next, reader.as_mut()) {
                r.seek(n)?;
            }
            log::info!(
                "{}: restoring {tp} into {target} from original offset {}",
                cfg.task_id,
                next.map_or("(done)".to_string(), |n| n.to_string())
            );
            runs.insert(
                tp,
                PartitionRun {
                    state,
                    reader,
                    queue: AckQueue::default(),
                    next,
                    dirty: false,
                    commit_retry_at: None,
                },
            );
        }
        Ok(RestoreSource {
            cfg,
            cluster,
            state_dir,
            runs,
            cursor: 0,
            last_save: Instant::now(),
            finished_logged: false,
            topics_finished: BTreeSet::new(),
            topic_check_at: None,
            commit_failing_since: None,
            closed: false,
            bytes_handed_out: 0,
        })
    }

    /// Takes acknowledgements, commits finished partitions' groups, returns the next batch.
    pub fn poll(&mut self, acks: &[Ack], max_records: usize) -> Result<(u8, Vec<BatchRecord>)> {
        if self.closed {
            return Err(Error::State(
                "poll after close: the task was already stopped".into(),
            ));
        }
        self.apply_acks(acks)?;
        self.commit_finished()?;
        self.save(false)?;

        let max = if max_records == 0 {
            self.cfg.batch_size.max(1)
        } else {
            max_records
        };
        let mut out = Vec::new();
        let keys: Vec<TopicPartition> = self.runs.keys().cloned().collect();
        let n = keys.len();
        for i in 0..n {
            if out.len() >= max {
                break;
            }
            let tp = &keys[(self.cursor + i) % n];
            let Some(run) = self.runs.get_mut(tp) else {
                continue;
            };
            let (Some(_), Some(reader)) = (run.next, run.reader.as_mut()) else {
                continue;
            };
            while out.len() < max {
                match reader.next_record()? {
                    Some(record) => {
                        run.next = Some(record.offset + 1);
                        run.queue.handed_out(record.offset);
                        self.bytes_handed_out += record_bytes(&record);
                        out.push(BatchRecord {
                            topic: tp.topic.clone(),
                            partition: tp.partition,
                            record,
                        });
                    }
                    None => {
                        run.next = None;
                        break;
                    }
                }
            }
        }
        if n > 0 {
            self.cursor = (self.cursor + 1) % n;
        }
        let finished = self.finished();
        let mut flags = 0;
        if finished {
            flags |= FLAG_FINISHED;
            if !self.finished_logged {
                log::info!(
                    "{}: restore finished: every assigned partition is restored and acknowledged, \
                     its groups settled and its topics' configs restored; state in {}",
                    self.cfg.task_id,
                    self.state_dir.display()
                );
                self.finished_logged = true;
            }
        } else if out.is_empty() {
            flags |= FLAG_WAITING_FOR_ACKS;
        }
        Ok((flags, out))
    }

    fn apply_acks(&mut self, acks: &[Ack]) -> Result<()> {
        let mut urgent = false;
        // Acks come partition by partition: look each partition up once per run, not per ack.
        for same in acks.chunk_by(|x, y| x.partition == y.partition && x.topic == y.topic) {
            let tp = TopicPartition::new(same[0].topic.clone(), same[0].partition);
            let Some(run) = self.runs.get_mut(&tp) else {
                log::debug!("ignoring acknowledgement for {tp}, not assigned to this task");
                continue;
            };
            for a in same {
                if !run.queue.ack(a.original_offset, a.new_offset) {
                    log::debug!(
                        "ignoring acknowledgement of {tp}@{}: not handed out by this task",
                        a.original_offset
                    );
                }
            }
            for (o, n) in run.queue.take_prefix() {
                if run.state.advance(o, n) {
                    urgent = true;
                }
            }
            run.dirty = true;
        }
        if urgent {
            self.save(true)?;
        }
        Ok(())
    }

    /// Writes dirty partition states: at once when `force`, else at most once per interval.
    fn save(&mut self, force: bool) -> Result<()> {
        if !force && self.last_save.elapsed() < PROGRESS_SAVE_INTERVAL {
            return Ok(());
        }
        for run in self.runs.values_mut() {
            if run.dirty {
                run.state.save(&self.state_dir)?;
                run.dirty = false;
            }
        }
        self.last_save = Instant::now();
        Ok(())
    }

    /// Commits groups of finished partitions and lifts held topic configs of finished topics.
    /// `Err` when a group commit failed for good (authorization) or for [`COMMIT_GIVE_UP`], or
    /// a topic's final configs cannot be applied for good (a missing ACL): the task must fail
    /// with the cause, not run on with a group or a topic config silently not restored.
    fn commit_finished(&mut self) -> Result<()> {
        let now = Instant::now();
        // group -> (target topic, partition, offset, metadata), for partitions ready now.
        let mut by_group: BTreeMap<String, Vec<(String, i32, i64, String)>> = BTreeMap::new();
        for run in self.runs.values_mut() {
            if !run.state.done || run.commit_retry_at.is_some_and(|t| now < t) {
                continue;
            }
            if run
                .state
                .groups
                .iter()
                .all(|g| g.commit != CommitState::Pending)
            {
                continue;
            }
            let mut log_end = run.state.new_log_end;
            if run.state.groups.iter().any(|g| {
                g.commit == CommitState::Pending && run.state.effective_target(g) == Target::LogEnd
            }) {
                // The target's end once the partition is done: past the commit marker of the
                // last transaction (exactly-once, the CLI), so the group shows no lag, and the
                // end at all when nothing was restored here.
                let (topic, p) = (&run.state.target_topic, run.state.partition);
                match crate::cluster::settled_log_end(
                    self.cluster.as_ref(),
                    topic,
                    p,
                    KAFKA_TIMEOUT,
                    SETTLE,
                ) {
                    Ok(high) => log_end = log_end.max(high),
                    Err(e) => {
                        log::warn!(
                            "{}: {e}; retrying in {COMMIT_RETRY_INTERVAL:?}",
                            self.cfg.task_id
                        );
                        run.commit_retry_at = Some(now + COMMIT_RETRY_INTERVAL);
                        continue;
                    }
                }
            }
            let mut facts = run.state.clone();
            facts.new_log_end = log_end.max(0);
            for g in &run.state.groups {
                if g.commit != CommitState::Pending {
                    continue;
                }
                match translate::translate(run.state.effective_target(g), &facts) {
                    Some(offset) => by_group.entry(g.group.clone()).or_default().push((
                        run.state.target_topic.clone(),
                        run.state.partition,
                        offset,
                        g.metadata.clone(),
                    )),
                    None => log::error!(
                        "{}: no new offset known for group {:?} target {:?} on {}-{} although the \
                         partition is done; leaving it pending",
                        self.cfg.task_id,
                        g.group,
                        g.target,
                        run.state.topic,
                        run.state.partition
                    ),
                }
            }
        }
        let mut failure: Option<String> = None;
        for (group, offsets) in by_group {
            let outcome = self.cluster.commit_group(&group, &offsets, KAFKA_TIMEOUT);
            let new_state = |topic: &str, p: i32, offset: i64| match &outcome {
                CommitOutcome::Done => Some(CommitState::Committed { offset }),
                CommitOutcome::ActiveMembers(why) => Some(CommitState::Refused {
                    offset,
                    reason: format!(
                        "{why}; kbackup never moves a group with active members. To apply the \
                         translated offset, stop the group's consumers and run: \
                         kafka-consumer-groups --bootstrap-server <target> --group '{group}' \
                         --reset-offsets --to-offset {offset} --topic {topic}:{p} --execute"
                    ),
                }),
                // Left pending: the task fails (below) and a restart after the fix commits it.
                CommitOutcome::Failed(_) | CommitOutcome::Retry(_) => None,
            };
            let task = &self.cfg.task_id;
            match &outcome {
                CommitOutcome::Done => {
                    log::info!(
                        "{task}: committed translated offsets of group {group:?}: {offsets:?}"
                    )
                }
                CommitOutcome::ActiveMembers(why) => log::warn!(
                    "{task}: NOT committing translated offsets of group {group:?} ({why}); \
                     the restore status shows the offsets to apply by hand"
                ),
                CommitOutcome::Failed(why) => {
                    log::error!("{task}: committing group {group:?} failed: {why}");
                    failure.get_or_insert_with(|| {
                        format!(
                            "committing the translated offsets of group {group:?} on the target \
                             cluster failed: {why}. The records are restored; fix the cause \
                             (docs/security.md lists the ACLs) and restart the task: the commit \
                             is retried then"
                        )
                    });
                }
                CommitOutcome::Retry(why) => {
                    let since = *self.commit_failing_since.get_or_insert(now);
                    if now.duration_since(since) >= COMMIT_GIVE_UP {
                        failure.get_or_insert_with(|| {
                            format!(
                                "committing the translated offsets of group {group:?} on the \
                                 target cluster kept failing for {}s: {why}. The records are \
                                 restored; restart the task once the cluster answers: the \
                                 commit is retried then",
                                COMMIT_GIVE_UP.as_secs()
                            )
                        });
                    }
                    log::warn!(
                        "{task}: committing group {group:?} failed, retrying in \
                         {COMMIT_RETRY_INTERVAL:?}: {why}"
                    )
                }
            }
            if outcome == CommitOutcome::Done {
                self.commit_failing_since = None;
            }
            for (topic, p, offset, _) in &offsets {
                let Some(run) = self
                    .runs
                    .values_mut()
                    .find(|r| &r.state.target_topic == topic && r.state.partition == *p)
                else {
                    continue;
                };
                for g in run.state.groups.iter_mut().filter(|g| g.group == group) {
                    match new_state(topic, *p, *offset) {
                        Some(s) => g.commit = s,
                        None => run.commit_retry_at = Some(now + COMMIT_RETRY_INTERVAL),
                    }
                }
                run.dirty = true;
            }
        }
        // Group commits changed state: persist now so a restart does not repeat them.
        for run in self.runs.values_mut() {
            if run.dirty && run.state.settled() {
                if let Err(e) = run.state.save(&self.state_dir) {
                    log::error!("{}: {e}", self.cfg.task_id);
                } else {
                    run.dirty = false;
                }
            }
        }
        // Topics whose partitions here are all done get their final configs (once per task).
        let done_topics: BTreeSet<String> = self
            .runs
            .values()
            .filter(|r| r.state.done && !self.topics_finished.contains(&r.state.topic))
            .map(|r| r.state.topic.clone())
            .collect();
        // Other tasks' partitions are checked through their state files: not on every poll.
        if let Some(why) = failure {
            return Err(Error::Kafka {
                what: "commit restored consumer-group offsets".into(),
                retriable: false,
                detail: why,
            });
        }
        if done_topics.is_empty() || self.topic_check_at.is_some_and(|t| now < t) {
            return Ok(());
        }
        self.topic_check_at = Some(now + TOPIC_CHECK_INTERVAL);
        for topic in done_topics {
            match self.finish_topic(&topic) {
                Ok(true) => {
                    self.topics_finished.insert(topic);
                }
                Ok(false) => {}
                // A refusal (ACLs) would leave the held retention on the topic for good.
                Err(e) if !e.is_retriable() => return Err(e),
                Err(e) => log::warn!("{}: {e}", self.cfg.task_id),
            }
        }
        Ok(())
    }

    /// Applies the final configs of a topic the restore created once all its partitions are done.
    /// Returns true when nothing is left to do for the topic.
    fn finish_topic(&self, topic: &str) -> Result<bool> {
        let Some(mut ts) = TopicState::load(&self.state_dir, topic)? else {
            return Ok(true);
        };
        if !ts.created_by_restore || ts.configs_restored {
            return Ok(true);
        }
        for p in backup_partitions(&self.cfg.source_dir, topic)? {
            // Partitions of other tasks: their state files say whether they are done.
            let done = match self.runs.get(&TopicPartition::new(topic, p)) {
                Some(run) => run.state.done,
                None => PartitionState::load(&self.state_dir, topic, p)?.is_some_and(|s| s.done),
            };
            if !done {
                return Ok(false);
            }
        }
        self.cluster
            .alter_topic_configs(&ts.target_topic, &ts.final_configs, KAFKA_TIMEOUT)?;
        ts.configs_restored = true;
        ts.save(&self.state_dir)?;
        log::info!(
            "{}: topic {} fully restored; its configs are now {:?} (retention is active again)",
            self.cfg.task_id,
            ts.target_topic,
            ts.final_configs
        );
        Ok(true)
    }

    /// The task's progress (also in the state directory, see [`read_status`]).
    pub fn status(&self) -> RestoreStatus {
        RestoreStatus {
            connector_name: self.cfg.connector_name.clone(),
            task_id: self.cfg.task_id.clone(),
            state_dir: self.state_dir.clone(),
            finished: self.finished(),
            partitions: self.runs.values().map(|r| r.state.clone()).collect(),
        }
    }

    /// A snapshot of the task's progress for monitoring (see [`crate::metrics`]).
    pub fn metrics(&self) -> SourceMetrics {
        let mut m = SourceMetrics {
            bytes_restored: self.bytes_handed_out,
            finished: u64::from(self.finished()),
            ..SourceMetrics::default()
        };
        for run in self.runs.values() {
            let s = &run.state;
            let count = |f: fn(&CommitState) -> bool| {
                s.groups.iter().filter(|g| f(&g.commit)).count() as u64
            };
            let last = s.last_offset.unwrap_or(-1);
            let p = SourcePartitionMetrics {
                topic: s.topic.clone(),
                partition: s.partition,
                records_restored: s.records_restored,
                acked_offset: s.last_acked_original,
                last_offset: last,
                remaining_offsets: if s.done {
                    0
                } else {
                    (last - s.last_acked_original).max(0)
                },
                done: u64::from(s.done),
                groups_committed: count(|c| matches!(c, CommitState::Committed { .. })),
                groups_pending: count(|c| matches!(c, CommitState::Pending)),
                groups_refused: count(|c| matches!(c, CommitState::Refused { .. })),
                groups_failed: count(|c| matches!(c, CommitState::Failed { .. })),
            };
            m.records_restored += p.records_restored;
            m.partitions += 1;
            m.partitions_done += p.done;
            m.groups_committed += p.groups_committed;
            m.groups_pending += p.groups_pending;
            m.groups_refused += p.groups_refused;
            m.groups_failed += p.groups_failed;
            m.partition_metrics.push(p);
        }
        m
    }

    /// Finished as `restore-status` means it: every assigned partition settled AND the final
    /// configs of their topics applied (until then a created topic's retention is held off).
    fn finished(&self) -> bool {
        self.runs
            .values()
            .all(|r| r.state.settled() && self.topics_finished.contains(&r.state.topic))
    }

    /// Applies acknowledgements and saves the state at once (a task handing over its last
    /// acknowledgements before it stops).
    pub fn ack(&mut self, acks: &[Ack]) -> Result<()> {
        if self.closed {
            return Err(Error::State(
                "acknowledgements after close: the task was already stopped".into(),
            ));
        }
        self.apply_acks(acks)?;
        self.save(true)
    }

    /// Saves progress and releases the readers; safe to call twice.
    pub fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let result = self.save(true);
        self.runs.clear();
        result
    }
}

/// Key, value and header bytes of a record (what the restore moves, for the metrics).
fn record_bytes(r: &crate::record::Record) -> u64 {
    let kv = r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len);
    let h: usize = r
        .headers
        .iter()
        .map(|h| h.key.len() + h.value.as_ref().map_or(0, Vec::len))
        .sum();
    (kv + h) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::testing::Refusing;

    fn target(group: &str, r: Option<i64>) -> GroupTarget {
        GroupTarget {
            group: group.into(),
            backed_up_offset: r.unwrap_or(1000),
            capture_time_ms: 1,
            metadata: String::new(),
            target: r.map_or(Target::LogEnd, Target::Record),
            mapped_original: None,
            mapped_new: None,
            commit: CommitState::Pending,
        }
    }

    fn state() -> PartitionState {
        // Backup holds 10..=25 with gaps; groups at record 15, record 24 and the end.
        PartitionState::new(
            "orders",
            "orders-restored",
            2,
            Some(10),
            Some(25),
            vec![
                target("a", Some(15)),
                target("b", Some(24)),
                target("c", None),
            ],
        )
    }

    #[test]
    fn records_not_written_finish_the_partition_but_never_hold_a_group() {
        let mut s = state();
        assert!(!s.advance(10, 0));
        assert!(
            !s.advance(15, -1),
            "target filtered by a transform: no mapping yet"
        );
        assert_eq!(s.groups[0].mapped_new, None);
        assert!(s.advance(16, 1), "the next written record takes the group");
        assert_eq!(s.groups[0].mapped_original, Some(16));
        assert_eq!(s.groups[0].mapped_new, Some(1));
        assert!(s.advance(24, 2));
        assert!(
            s.advance(25, -1),
            "a filtered last record still finishes the partition"
        );
        assert!(s.done);
        assert_eq!(s.records_restored, 3);
        assert_eq!(translate::translate(Target::LogEnd, &s), Some(3));
    }

    #[test]
    fn acks_map_targets_and_finish_on_last_record() {
        let mut s = state();
        assert!(!s.advance(10, 0));
        assert!(!s.advance(12, 1));
        assert!(s.advance(15, 2), "target record acknowledged: save at once");
        assert!(!s.advance(16, 3));
        assert!(!s.done);
        assert!(s.advance(24, 4));
        assert!(s.advance(25, 5), "last record: done");
        assert!(s.done);
        assert_eq!(s.new_offset_of(15), Some(2));
        assert_eq!(s.new_offset_of(24), Some(4));
        assert_eq!(translate::translate(Target::LogEnd, &s), Some(6));
        assert_eq!(s.records_restored, 6);
        assert_eq!((s.last_acked_original, s.last_acked_new), (25, 5));
    }

    #[test]
    fn a_record_at_or_below_the_prefix_is_ignored() {
        let mut s = state();
        s.advance(15, 2);
        s.advance(16, 3);
        assert!(!s.advance(15, 7), "already in the prefix");
        assert_eq!(s.new_offset_of(15), Some(2));
        assert_eq!(s.records_restored, 2);
    }

    #[test]
    fn resume_is_after_the_acknowledged_prefix() {
        let mut s = state();
        assert_eq!(s.resume_from(), Some(0));
        s.advance(11, 0);
        assert_eq!(s.resume_from(), Some(12));
        s.advance(25, 1);
        assert_eq!(s.resume_from(), None, "done: nothing left to send");
    }

    #[test]
    fn defect1_committed_offset_at_or_past_the_last_record_means_done() {
        // The acks of 24 and 25 were in the Java buffers when the task stopped; Connect had
        // committed their source offsets. The partition is done, never waiting for acks.
        let mut s = state();
        s.advance(15, 2);
        assert!(s.skip_to(25));
        assert!(s.done);
        assert_eq!(s.resume_from(), None);
        assert_eq!(s.new_offset_of(15), Some(2));
        assert_eq!(
            s.new_offset_of(24),
            Some(3),
            "unknown copy: first offset after what is known (re-read, never skipped)"
        );
        let mut past = state();
        assert!(past.skip_to(40));
        assert!(past.done);
    }

    #[test]
    fn defect1_group_target_in_the_lost_window_is_not_rewound_to() {
        // Connect committed past group b's target (24) but its ack was lost: before the fix
        // the restore rewound to 24 and wrote 24.. twice.
        let mut s = state();
        s.advance(15, 2);
        s.skip_to(24);
        assert_eq!(s.resume_from(), Some(25));
        assert_eq!(s.new_offset_of(24), Some(3));
    }

    #[test]
    fn defect3_group_whose_target_and_later_records_were_dropped_resolves_to_log_end() {
        let mut s = state();
        s.advance(10, 0);
        s.advance(15, 1);
        s.advance(24, -1);
        s.advance(25, -1);
        assert!(s.done);
        let b = s.groups[1].clone();
        assert_eq!(b.mapped_new, None, "nothing at or after 24 was written");
        assert_eq!(s.effective_target(&b), Target::LogEnd);
        assert_eq!(translate::translate(s.effective_target(&b), &s), Some(2));
        let a = s.groups[0].clone();
        assert_eq!(s.effective_target(&a), Target::Record(15));
    }

    #[test]
    fn state_survives_a_simulated_crash() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = state();
        s.advance(15, 2);
        s.save(dir.path()).unwrap();
        // Acks after the save are lost with the process.
        s.advance(24, 4);
        let mut back = PartitionState::load(dir.path(), "orders", 2)
            .unwrap()
            .unwrap();
        assert_eq!(back.new_offset_of(15), Some(2));
        assert_eq!(back.new_offset_of(24), None);
        assert_eq!(
            back.resume_from(),
            Some(16),
            "resumes after the saved prefix"
        );
        back.advance(24, 12);
        back.advance(25, 13);
        assert!(back.done);
        assert_eq!(back.new_offset_of(15), Some(2));
        assert_eq!(back.new_offset_of(24), Some(12));
        back.save(dir.path()).unwrap();
        let status = read_status(dir.path()).unwrap();
        assert_eq!(status.partitions.len(), 1);
        assert!(!status.finished, "group commits are still pending");
    }

    #[test]
    fn ack_queue_moves_the_prefix_only_over_contiguous_acks() {
        let mut q = AckQueue::default();
        for o in [3, 4, 8] {
            q.handed_out(o);
        }
        assert!(q.ack(8, -1));
        assert!(q.take_prefix().is_empty(), "8 acknowledged before 3 and 4");
        assert!(q.ack(3, 0));
        assert_eq!(q.take_prefix(), vec![(3, 0)]);
        assert!(!q.ack(5, 9), "never handed out");
        assert!(q.ack(4, 1));
        assert_eq!(q.take_prefix(), vec![(4, 1), (8, -1)]);
        assert!(q.is_empty());
    }

    #[test]
    fn status_is_finished_when_groups_are_settled() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = state();
        s.advance(25, 0);
        for g in &mut s.groups {
            g.commit = CommitState::Committed { offset: 0 };
        }
        s.groups[1].commit = CommitState::Refused {
            offset: 0,
            reason: "active".into(),
        };
        s.save(dir.path()).unwrap();
        claim_state_dir(dir.path(), "restore / ü").unwrap();
        let st = read_status(dir.path()).unwrap();
        assert!(st.finished);
        assert_eq!(st.connector_name.as_deref(), Some("restore / ü"));
    }

    #[test]
    fn empty_partition_is_done_at_once() {
        let s = PartitionState::new("t", "t", 0, None, None, vec![target("g", None)]);
        assert!(s.done);
        assert_eq!(s.resume_from(), None);
        assert!(!s.settled(), "its group still needs a commit");
    }

    #[test]
    fn corrupt_state_file_names_the_file_and_fix() {
        let dir = tempfile::tempdir().unwrap();
        let p = PartitionState::path(dir.path(), "t", 0).unwrap();
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"{not json").unwrap();
        let m = PartitionState::load(dir.path(), "t", 0)
            .unwrap_err()
            .to_string();
        assert!(m.contains("0.json") && m.contains("delete it"), "{m}");
    }

    #[test]
    fn state_dir_belongs_to_one_connector_and_its_name_is_not_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SourceConfig::from_json(
            format!(r#"{{"connector_name":"../evil name","task_id":"x-0","source_dir":{:?},"topics":["t"]}}"#, dir.path()).as_bytes(),
        )
        .unwrap();
        let sd = cfg.state_dir();
        assert!(sd.starts_with(dir.path().join("restore-state")));
        assert_eq!(sd.file_name().unwrap().len(), 16);
        assert!(cfg.restore_group_offsets && cfg.batch_size == 1000 && !cfg.allow_non_empty_topics);
        claim_state_dir(&sd, &cfg.connector_name).unwrap();
        claim_state_dir(&sd, &cfg.connector_name).unwrap();
        let err = claim_state_dir(&sd, "other").unwrap_err().to_string();
        assert!(err.contains("restore.state.dir"), "{err}");
    }

    #[test]
    fn validate_names_keys_and_fixes() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SourceConfig {
            connector_name: "r".into(),
            task_id: "r-0".into(),
            source_dir: dir.path().join("missing"),
            topics: vec!["a".into(), "b".into()],
            topics_rename: [
                ("a".to_string(), "bad name".to_string()),
                ("zz".to_string(), "ok".to_string()),
                ("b".to_string(), "a".to_string()),
            ]
            .into_iter()
            .collect(),
            batch_size: 0,
            cluster: BTreeMap::new(),
            restore_state_dir: None,
            allow_non_empty_topics: false,
            restore_group_offsets: true,
        };
        let problems = validate(&cfg);
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert!(keys.contains(&"source.dir"), "{problems:?}");
        assert!(keys.contains(&"batch.size"));
        assert!(keys.contains(&"cluster.bootstrap.servers"));
        assert_eq!(
            keys.iter().filter(|k| **k == "topics.rename").count(),
            2,
            "{problems:?}"
        );
        assert!(problems
            .iter()
            .any(|(_, m)| m.contains("\"zz\"") && m.contains("not listed in topics")));
    }

    fn write_backup(root: &Path, offsets: &[i64]) {
        use crate::record::{Record, TimestampType};
        use crate::sink::{BackupSink, SinkConfig};
        let mut sink = BackupSink::open(SinkConfig::new(root)).unwrap();
        sink.open_partitions(&[TopicPartition::new("t", 0)])
            .unwrap();
        let recs: Vec<BatchRecord> = offsets
            .iter()
            .map(|&o| BatchRecord {
                topic: "t".into(),
                partition: 0,
                record: Record {
                    offset: o,
                    timestamp: 1000 + o,
                    timestamp_type: TimestampType::CreateTime,
                    key: Some(vec![o as u8]),
                    value: None,
                    headers: vec![],
                },
            })
            .collect();
        sink.put(&recs).unwrap();
        sink.flush().unwrap();
        sink.close().unwrap();
    }

    fn engine_cfg(root: &Path, groups: bool) -> SourceConfig {
        SourceConfig {
            connector_name: "restore".into(),
            task_id: "restore-0".into(),
            source_dir: root.to_path_buf(),
            topics: vec!["t".into()],
            topics_rename: [("t".to_string(), "t2".to_string())].into_iter().collect(),
            batch_size: 100,
            cluster: BTreeMap::new(),
            restore_state_dir: None,
            allow_non_empty_topics: false,
            restore_group_offsets: groups,
        }
    }

    fn ack(o: i64, n: i64) -> Ack {
        Ack {
            topic: "t".into(),
            partition: 0,
            original_offset: o,
            new_offset: n,
        }
    }

    fn offsets(batch: &[BatchRecord]) -> Vec<i64> {
        batch.iter().map(|b| b.record.offset).collect()
    }

    /// The target partition t2-0 in memory: copies of `write_backup`'s records.
    #[derive(Default)]
    struct FakeTarget {
        records: Vec<reconcile::TargetRecord>,
    }

    impl FakeTarget {
        /// Writes copies of backed-up records `(original, new offset)`.
        fn write(&mut self, copies: &[(i64, i64)]) {
            for &(o, n) in copies {
                self.records.push(reconcile::TargetRecord {
                    offset: n,
                    timestamp: 1000 + o,
                    log_append_time: false,
                    key: Some(vec![o as u8]),
                    value: None,
                    headers: vec![],
                });
            }
        }
    }

    impl TargetLog for FakeTarget {
        fn end_offset(&mut self, _: &str, _: i32) -> Result<i64> {
            Ok(self.records.last().map_or(0, |r| r.offset + 1))
        }
        fn scan(
            &mut self,
            topic: &str,
            _: i32,
            from: i64,
            each: &mut dyn FnMut(reconcile::TargetRecord) -> bool,
        ) -> Result<()> {
            assert_eq!(topic, "t2", "reads the TARGET topic");
            for r in self.records.iter().filter(|r| r.offset >= from) {
                if !each(r.clone()) {
                    break;
                }
            }
            Ok(())
        }
    }

    fn open_fake(cfg: &SourceConfig, committed: i64, target: &mut FakeTarget) -> RestoreSource {
        open_fake_on(
            cfg,
            committed,
            target,
            Arc::new(RdKafkaCluster::new(&cfg.cluster)),
        )
    }

    fn open_fake_on(
        cfg: &SourceConfig,
        committed: i64,
        target: &mut FakeTarget,
        cluster: Arc<dyn ClusterClient>,
    ) -> RestoreSource {
        RestoreSource::open_with(
            cfg.clone(),
            &[TopicPartitionOffset::new("t", 0, committed)],
            cluster,
            target,
            true,
        )
        .unwrap()
    }

    fn held_t2(cfg: &SourceConfig) {
        TopicState {
            topic: "t".into(),
            target_topic: "t2".into(),
            created_by_restore: true,
            final_configs: [("retention.ms".to_string(), "1000".to_string())].into(),
            configs_restored: false,
        }
        .save(&cfg.state_dir())
        .unwrap();
    }

    #[test]
    fn engine_plans_groups_and_resumes_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_backup(root, &[0, 1, 2, 5, 6, 9]);
        let log = layout::group_offsets_log(root, &TopicPartition::new("t", 0));
        let e = |g: &str, o: i64| offsets_log::GroupOffsetEntry {
            capture_time_ms: 7,
            group: g.into(),
            committed_offset: o,
            metadata: String::new(),
        };
        offsets_log::append(
            &log,
            &[e("gap", 3), e("ahead", 100), e("first", 0), e("gap", 4)],
            crate::perms::OWNER_ONLY,
        )
        .unwrap();
        let plan = plan(root, &["t".to_string()]).unwrap();
        let targets: BTreeMap<_, _> = plan[0]
            .1
            .iter()
            .map(|g| (g.group.clone(), g.target))
            .collect();
        assert_eq!(
            targets["gap"],
            Target::Record(5),
            "latest entry (4) used, gap skipped"
        );
        assert_eq!(targets["ahead"], Target::LogEnd);
        assert_eq!(targets["first"], Target::Record(0));

        let cfg = engine_cfg(root, true);
        let mut target = FakeTarget::default();
        let mut src = open_fake(&cfg, -1, &mut target);
        let (flags, b) = src.poll(&[], 4).unwrap();
        assert_eq!((flags, offsets(&b)), (0, vec![0, 1, 2, 5]));
        assert_eq!(b[0].topic, "t", "batches carry the ORIGINAL topic");
        let (flags, b) = src.poll(&[ack(0, 0), ack(1, 1), ack(2, 2)], 4).unwrap();
        assert_eq!((flags, offsets(&b)), (0, vec![6, 9]));
        let (flags, b) = src.poll(&[], 4).unwrap();
        assert_eq!((flags, b.len()), (FLAG_WAITING_FOR_ACKS, 0));
        // SIGKILL: 5 and 6 were written (new offsets 3 and 4), their acks never reached the
        // core; Connect committed up to 6.
        drop(src);
        target.write(&[(0, 0), (1, 1), (2, 2), (5, 3), (6, 4)]);
        let mut src = open_fake(&cfg, 6, &mut target);
        let (_, b) = src.poll(&[], 10).unwrap();
        assert_eq!(
            offsets(&b),
            vec![9],
            "5 and 6 were found in the target: not sent again"
        );
        drop(src); // crash again
        let st = PartitionState::load(&cfg.state_dir(), "t", 0)
            .unwrap()
            .unwrap();
        assert_eq!(st.target_topic, "t2");
        assert_eq!(
            st.new_offset_of(5),
            Some(3),
            "group mapped to the copy found"
        );
        assert_eq!(st.new_offset_of(0), Some(0));
        assert_eq!(st.resume_from(), Some(7));
        let status = read_status(&cfg.state_dir()).unwrap();
        assert_eq!(status.connector_name.as_deref(), Some("restore"));
        assert!(!status.finished);
    }

    #[test]
    fn reconcile_without_a_connect_offset_resumes_exactly_after_the_target() {
        // The CLI: no committed offset at all, the state saved nothing past 1, the target holds
        // 0..=6 (the transaction that wrote 2..6 committed before the kill).
        let dir = tempfile::tempdir().unwrap();
        write_backup(dir.path(), &[0, 1, 2, 5, 6, 9]);
        let cfg = engine_cfg(dir.path(), false);
        let mut target = FakeTarget::default();
        let mut src = open_fake(&cfg, -1, &mut target);
        src.poll(&[], 10).unwrap();
        src.poll(&[ack(0, 0), ack(1, 1)], 10).unwrap();
        drop(src);
        target.write(&[(0, 0), (1, 1), (2, 2), (5, 3), (6, 4)]);
        let mut src = open_fake(&cfg, -1, &mut target);
        let (_, b) = src.poll(&[], 10).unwrap();
        assert_eq!(offsets(&b), vec![9]);
        let (flags, _) = src.poll(&[ack(9, 5)], 10).unwrap();
        assert_eq!(flags, FLAG_FINISHED);
    }

    #[test]
    fn defect2_partition_is_not_done_while_earlier_records_are_unacknowledged() {
        let dir = tempfile::tempdir().unwrap();
        write_backup(dir.path(), &[3, 4, 8]);
        let cfg = engine_cfg(dir.path(), false);
        let mut src = open_fake(&cfg, -1, &mut FakeTarget::default());
        src.poll(&[], 10).unwrap();
        // The last record was dropped by a transform: acknowledged at once on the task
        // thread, before the producer callbacks of 3 and 4.
        let (flags, _) = src.poll(&[ack(8, -1)], 10).unwrap();
        assert_eq!(
            flags, FLAG_WAITING_FOR_ACKS,
            "3 and 4 are not acknowledged yet"
        );
        assert!(!src.status().partitions[0].done);
        let (flags, _) = src.poll(&[ack(4, 1)], 10).unwrap();
        assert_eq!(flags, FLAG_WAITING_FOR_ACKS);
        let (flags, _) = src.poll(&[ack(3, 0)], 10).unwrap();
        assert_eq!(flags, FLAG_FINISHED);
        assert_eq!(src.status().partitions[0].new_log_end, 2);
    }

    #[test]
    fn metrics_follow_acknowledgements_to_finished() {
        let dir = tempfile::tempdir().unwrap();
        write_backup(dir.path(), &[3, 4, 8]);
        let cfg = engine_cfg(dir.path(), false);
        let mut src = open_fake(&cfg, -1, &mut FakeTarget::default());
        let (_, batch) = src.poll(&[], 10).unwrap();
        let m = src.metrics();
        assert_eq!((m.partitions, m.partitions_done, m.finished), (1, 0, 0));
        let bytes: u64 = batch.iter().map(|r| record_bytes(&r.record)).sum();
        assert!(bytes > 0 && m.bytes_restored == bytes, "{m:?}");
        assert_eq!(m.partition_metrics[0].remaining_offsets, 9, "{m:?}");
        src.poll(&[ack(3, 0), ack(4, 1)], 10).unwrap();
        let p = &src.metrics().partition_metrics[0];
        assert_eq!(
            (p.records_restored, p.acked_offset, p.last_offset),
            (2, 4, 8)
        );
        assert_eq!(p.remaining_offsets, 4);
        src.poll(&[ack(8, 2)], 10).unwrap();
        let m = src.metrics();
        assert_eq!(
            (m.records_restored, m.partitions_done, m.finished),
            (3, 1, 1)
        );
        assert_eq!(m.partition_metrics[0].remaining_offsets, 0);
    }

    #[test]
    fn defect1_stop_hands_acks_to_the_core_and_restart_is_done() {
        let dir = tempfile::tempdir().unwrap();
        write_backup(dir.path(), &[3, 4, 8]);
        let cfg = engine_cfg(dir.path(), false);
        let mut src = open_fake(&cfg, -1, &mut FakeTarget::default());
        src.poll(&[], 10).unwrap();
        // stop(): the acks still in the Java buffers are handed over before the close.
        src.ack(&[ack(3, 0), ack(4, 1), ack(8, 2)]).unwrap();
        src.close().unwrap();
        let st = PartitionState::load(&cfg.state_dir(), "t", 0)
            .unwrap()
            .unwrap();
        assert!(st.done && st.new_log_end == 3, "{st:?}");
        // And without them (a kill): Connect's committed offset at the last record is enough.
        let dir = tempfile::tempdir().unwrap();
        write_backup(dir.path(), &[3, 4, 8]);
        let cfg = engine_cfg(dir.path(), false);
        let mut src = open_fake(&cfg, -1, &mut FakeTarget::default());
        src.poll(&[], 10).unwrap();
        drop(src);
        let mut src = open_fake(&cfg, 8, &mut FakeTarget::default());
        let (flags, b) = src.poll(&[], 10).unwrap();
        assert_eq!(
            (flags, b.len()),
            (FLAG_FINISHED, 0),
            "done, not waiting for acks"
        );
    }

    #[test]
    fn defect7_not_finished_before_held_topic_configs_are_restored() {
        let dir = tempfile::tempdir().unwrap();
        write_backup(dir.path(), &[3]);
        let cfg = engine_cfg(dir.path(), false);
        // The restore created t2 with retention held off; lifting it needs the cluster, which
        // is unreachable here (a transient error), so the configs stay held and it retries.
        held_t2(&cfg);
        let unreachable = Arc::new(Refusing::new(true, "AllBrokersDown"));
        let mut src = open_fake_on(&cfg, -1, &mut FakeTarget::default(), unreachable);
        src.poll(&[], 10).unwrap();
        let (flags, _) = src.poll(&[ack(3, 0)], 10).unwrap();
        assert_eq!(flags & FLAG_FINISHED, 0, "retention.ms is still held at -1");
        assert!(!src.status().finished);
        assert!(!read_status(&cfg.state_dir()).unwrap().finished);
    }

    #[test]
    fn held_configs_refused_for_good_fail_the_task_naming_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        write_backup(dir.path(), &[3]);
        let cfg = engine_cfg(dir.path(), false);
        held_t2(&cfg);
        let refusing = Arc::new(Refusing::new(
            false,
            "TopicAuthorizationException: ALTER_CONFIGS",
        ));
        let mut src = open_fake_on(&cfg, -1, &mut FakeTarget::default(), refusing);
        src.poll(&[], 10).unwrap();
        let err = src.poll(&[ack(3, 0)], 10).unwrap_err();
        assert!(!err.is_retriable(), "{err}");
        assert!(err.to_string().contains("ALTER_CONFIGS"), "{err}");
        assert!(!src.status().finished);
    }

    #[test]
    fn engine_finishes_once_everything_is_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        write_backup(dir.path(), &[3, 4, 8]);
        let cfg = engine_cfg(dir.path(), false);
        let mut src = open_fake(&cfg, -1, &mut FakeTarget::default());
        let (_, b) = src.poll(&[], 0).unwrap();
        assert_eq!(
            offsets(&b),
            vec![3, 4, 8],
            "max_records 0 falls back to batch_size"
        );
        let (flags, _) = src.poll(&[ack(3, 0), ack(4, 1)], 10).unwrap();
        assert_eq!(flags, FLAG_WAITING_FOR_ACKS);
        let (flags, b) = src.poll(&[ack(8, 2)], 10).unwrap();
        assert_eq!((flags, b.len()), (FLAG_FINISHED, 0));
        assert!(src.status().finished);
        src.close().unwrap();
        src.close().unwrap();
        assert!(src.poll(&[], 1).is_err(), "poll after close is refused");
        // A restart after the end sends nothing, even if Connect's offsets lag.
        let mut again = open_fake(&cfg, 4, &mut FakeTarget::default());
        let (flags, b) = again.poll(&[], 10).unwrap();
        assert_eq!((flags, b.len()), (FLAG_FINISHED, 0));
    }

    #[test]
    fn restore_state_is_owner_only_under_a_permissive_umask() {
        use crate::perms::tests::{not_owner_only, with_open_umask};
        with_open_umask(|| {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("b");
            write_backup(&root, &[3, 4]);
            let cfg = engine_cfg(&root, false);
            let mut src = open_fake(&cfg, -1, &mut FakeTarget::default());
            src.poll(&[], 10).unwrap();
            src.poll(&[ack(3, 0), ack(4, 1)], 10).unwrap();
            src.close().unwrap();
            assert!(cfg.state_dir().join("connector.json").exists());
            assert_eq!(not_owner_only(&root), Vec::<String>::new());
        });
    }

    #[test]
    fn a_failed_group_commit_is_tried_again_when_the_restore_is_opened_again() {
        let dir = tempfile::tempdir().unwrap();
        write_backup(dir.path(), &[3, 4]);
        let e = |g: &str| offsets_log::GroupOffsetEntry {
            capture_time_ms: 1,
            group: g.into(),
            committed_offset: 4,
            metadata: String::new(),
        };
        let log = layout::group_offsets_log(dir.path(), &TopicPartition::new("t", 0));
        offsets_log::append(&log, &[e("failed"), e("refused")], crate::perms::OWNER_ONLY).unwrap();
        let cfg = engine_cfg(dir.path(), true);
        open_fake(&cfg, -1, &mut FakeTarget::default())
            .close()
            .unwrap();
        let mut s = PartitionState::load(&cfg.state_dir(), "t", 0)
            .unwrap()
            .unwrap();
        for g in s.groups.iter_mut() {
            g.commit = if g.group == "failed" {
                CommitState::Failed {
                    reason: "GroupAuthorizationFailed".into(),
                }
            } else {
                CommitState::Refused {
                    offset: 1,
                    reason: "members".into(),
                }
            };
        }
        s.save(&cfg.state_dir()).unwrap();
        let again = open_fake(&cfg, -1, &mut FakeTarget::default());
        let commits: BTreeMap<String, CommitState> = again.status().partitions[0]
            .groups
            .iter()
            .map(|g| (g.group.clone(), g.commit.clone()))
            .collect();
        assert_eq!(
            commits["failed"],
            CommitState::Pending,
            "its cause may be fixed"
        );
        assert!(matches!(commits["refused"], CommitState::Refused { .. }));
    }
}
