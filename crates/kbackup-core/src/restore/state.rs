//! The restore state directory: one small JSON file per partition and per topic.

use super::config::*;
use crate::error::{Error, Result};
use crate::layout;
use crate::manifest;
use crate::translate::{NewOffsets, Target};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    /// The restore window this state belongs to ([`super::window::RestoreWindow::describe`]);
    /// `first_offset`/`last_offset` are then the window's first and last records.
    #[serde(default = "everything")]
    pub window: String,
    /// Records in the window (`None` without a window: the whole partition).
    #[serde(default)]
    pub window_records: Option<u64>,
    /// Groups not restored: every capture of theirs is later than the window's end time.
    #[serde(default)]
    pub groups_not_captured: Vec<String>,
    /// Last write of this file (ms since the epoch).
    pub updated_ms: i64,
}

impl PartitionState {
    pub(super) fn new(
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
            window: everything(),
            window_records: None,
            groups_not_captured: Vec::new(),
            updated_ms: manifest::now_ms(),
        }
    }

    /// Applies the acknowledgement of the NEXT record of the partition (acknowledgements must
    /// come in original-offset order: the engine orders them, see [`super::AckQueue`]); returns true if
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
    pub(super) fn check_done(&mut self) -> bool {
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
        // A window starts at its first record (a whole partition at its first, found by the
        // seek from 0).
        let start = match self.window.as_str() {
            "everything" => 0,
            _ => self.first_offset.unwrap_or(0),
        };
        Some(self.last_acked_original.saturating_add(1).max(start).max(0))
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

    pub(super) fn path(state_dir: &Path, topic: &str, partition: i32) -> Result<PathBuf> {
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

fn everything() -> String {
    "everything".into()
}

pub(super) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
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

/// Written once per target topic by [`super::prepare`]: whether the restore created it and which
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
    pub(super) fn path(state_dir: &Path, topic: &str) -> Result<PathBuf> {
        layout::validate_topic_name(topic)?;
        Ok(state_dir.join("topics").join(format!("{topic}.json")))
    }

    pub(super) fn save(&self, state_dir: &Path) -> Result<()> {
        let path = Self::path(state_dir, &self.topic)?;
        let dir = path.parent().unwrap_or(state_dir);
        STATE_PERMS
            .create_dir_all(dir)
            .map_err(|e| Error::io(e, "create restore state directory", dir))?;
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::State(format!("cannot serialise topic state: {e}")))?;
        layout::write_atomic(&path, &json, STATE_PERMS)
    }

    pub(super) fn load(state_dir: &Path, topic: &str) -> Result<Option<TopicState>> {
        read_json(&Self::path(state_dir, topic)?)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ConnectorFile {
    connector_name: String,
    created_ms: i64,
}

/// Restore state names topics, groups and positions: owner only, like the backup's default.
pub(super) const STATE_PERMS: crate::perms::Perms = crate::perms::OWNER_ONLY;

/// Creates the state directory and records (or checks) whose it is.
pub(super) fn claim_state_dir(state_dir: &Path, connector: &str) -> Result<()> {
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

pub(super) fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
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
