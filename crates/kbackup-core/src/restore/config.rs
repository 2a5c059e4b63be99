//! The source configuration and the rules it must follow (one owner: [`validate`]).

use crate::error::{Error, Result};
use crate::layout;
use crate::manifest;
use crate::reader::Backup;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

pub(super) fn default_batch_size() -> usize {
    1000
}

pub(super) fn default_true() -> bool {
    true
}

pub(super) fn minus_one() -> i64 {
    -1
}

/// The source connector's configuration, as the JSON of docs/jni.md.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceConfig {
    /// Connect connector name (free text: stored in files, never a path).
    pub connector_name: String,
    /// Connect task id, for log lines and the status.
    pub task_id: String,
    /// Root directory of the backup to restore, or (the CLI) a bucket URL such as
    /// `s3://bucket/prefix` ([`SourceConfig::open_backup`]).
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
    /// The part of each partition to restore (point-in-time / offset window; default all).
    #[serde(default)]
    pub window: super::window::RestoreWindow,
    /// `storage.*` settings of a backup in object storage (docs/storage.md); never shown.
    #[serde(default)]
    pub storage: crate::storage::StorageSettings,
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

    /// The backup bucket's URL when the backup is in object storage (`None`: a directory).
    pub fn source_url(&self) -> Option<&str> {
        self.source_dir.to_str().filter(|loc| {
            crate::storage::check_location(loc).is_ok() && crate::storage::local_dir(loc).is_err()
        })
    }

    /// Opens the backup to restore: the directory, or the bucket (settings and credentials
    /// from the store's standard environment variables).
    pub fn open_backup(&self) -> Result<Backup> {
        match self.source_url() {
            Some(url) => Backup::open_location(url, &self.storage.options()?),
            None => Backup::open(&self.source_dir),
        }
    }

    /// Where this restore keeps its progress: a directory, or a bucket URL (by default
    /// `restore-state/<digest>` beside the backup, in its directory or bucket).
    pub fn state_dir(&self) -> PathBuf {
        match &self.restore_state_dir {
            Some(d) => d.clone(),
            None => {
                layout::restore_state_dir(&self.source_dir).join(name_digest(&self.connector_name))
            }
        }
    }

    /// Opens [`SourceConfig::state_dir`] (a bucket through the `storage.*` settings).
    pub fn state_place(&self) -> Result<super::StatePlace> {
        super::StatePlace::open(&self.state_dir(), &self.storage)
    }
}

/// A stable, path-safe name for free text: 64-bit FNV-1a in hex.
pub(super) fn name_digest(name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Checks a source config without touching Kafka; each problem is (config key, message + fix).
pub fn validate(cfg: &SourceConfig) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let mut bad = |key: &str, msg: String| problems.push((key.to_string(), msg));
    let dir = &cfg.source_dir;
    let mut in_backup = None;
    if let Some(url) = cfg.source_url() {
        match cfg.open_backup().and_then(|b| b.topics()) {
            Ok(t) => in_backup = Some(t.into_iter().collect::<BTreeSet<_>>()),
            Err(e) => bad(
                "source.dir",
                format!("cannot read the backup at {url}: {e}"),
            ),
        }
    } else if dir.as_os_str().is_empty() {
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
        match layout::list_topics(dir) {
            Ok(t) => in_backup = Some(t.into_iter().collect::<BTreeSet<_>>()),
            Err(e) => bad("source.dir", e.to_string()),
        }
    }
    // Progress kept in a bucket (the default for a backup in one): writable with these
    // credentials? (check_reachable leaves a directory alone: it is created and checked when
    // the restore starts.)
    let state = cfg.state_dir();
    if let Some(loc) = state.to_str() {
        if let Err(e) = crate::storage::check_reachable(loc, &cfg.storage, true) {
            bad(
                "restore.state.dir",
                format!(
                    "the restore keeps its progress in {loc} and cannot write there ({e}): grant \
                     write access to that prefix, or set restore.state.dir (the CLI's \
                     --state-dir) to a writable directory or bucket prefix"
                ),
            );
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
    for (key, msg) in super::window::check(&cfg.window, &cfg.topics) {
        bad(&key, msg);
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
