//! The restore state: one small JSON object per partition and per topic, in a local directory
//! or under a prefix in a bucket ([`StatePlace`]).

use super::config::*;
use crate::error::{Error, Result};
use crate::layout;
use crate::manifest;
use crate::storage::{self, LocalStore, StorageSettings, Store};
use crate::translate::{NewOffsets, Target};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Where a restore keeps its progress: a local directory or a prefix in a bucket, both through
/// the storage layer. Keys: `connector.json`, `topics/<topic>.json` and
/// `partitions/<topic>/<partition>.json`. Each object is written whole (a local file
/// atomically: temporary file, fsync, rename); each partition's object has one writer, the task
/// restoring it, so no write needs to be conditional except the claim of `connector.json`.
#[derive(Clone, Debug)]
pub struct StatePlace {
    store: Arc<dyn Store>,
    local: bool,
}

impl StatePlace {
    /// The state at `location`: a directory (created on the first write, owner only) or an
    /// object-store URL reached with `settings` and the environment.
    pub fn open(location: &Path, settings: &StorageSettings) -> Result<StatePlace> {
        let local = location
            .to_str()
            .is_none_or(|loc| storage::local_dir(loc).is_ok());
        let store: Box<dyn Store> = match location.to_str() {
            Some(loc) => {
                let mut options = settings.options()?;
                options.perms = STATE_PERMS;
                storage::open_store(loc, &options)?
            }
            None => Box::new(LocalStore::new(location, STATE_PERMS)),
        };
        Ok(StatePlace {
            store: Arc::from(store),
            local,
        })
    }

    /// How often progress is written: each write to a bucket is a request (a progress write
    /// lost to a crash only makes the resumed restore read more of the target back).
    pub(super) fn save_interval(&self) -> std::time::Duration {
        if self.local {
            super::PROGRESS_SAVE_INTERVAL
        } else {
            super::PROGRESS_SAVE_INTERVAL_STORE
        }
    }

    /// The directory or URL, for messages and the status.
    pub fn location(&self) -> String {
        self.store.location()
    }

    /// The object under `key` parsed, or `None` if the restore never wrote it.
    fn read<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let data = match self.store.get(key) {
            Ok(d) => d,
            Err(Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        serde_json::from_slice(&data).map(Some).map_err(|e| {
            Error::corrupt(
                self.store.describe(key),
                0,
                format!(
                    "restore state file is not valid ({e}); delete it to restart that \
                     partition's restore bookkeeping"
                ),
            )
        })
    }

    /// Writes `value` as the whole object under `key`.
    fn write<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        let json = serde_json::to_vec_pretty(value)
            .map_err(|e| Error::State(format!("cannot serialise restore state: {e}")))?;
        self.store.put(key, &json)
    }
}

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

    fn key(topic: &str, partition: i32) -> Result<String> {
        layout::validate_topic_name(topic)?;
        Ok(format!("partitions/{topic}/{partition}.json"))
    }

    /// Writes the state (a local file atomically: temp file, fsync, rename, fsync the directory).
    pub fn save(&mut self, place: &StatePlace) -> Result<()> {
        self.updated_ms = manifest::now_ms();
        place.write(&Self::key(&self.topic, self.partition)?, self)
    }

    /// Reads a partition's state; `None` if the restore never saved it.
    pub fn load(place: &StatePlace, topic: &str, partition: i32) -> Result<Option<PartitionState>> {
        place.read(&Self::key(topic, partition)?)
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
    fn key(topic: &str) -> Result<String> {
        layout::validate_topic_name(topic)?;
        Ok(format!("topics/{topic}.json"))
    }

    pub(super) fn save(&self, place: &StatePlace) -> Result<()> {
        place.write(&Self::key(&self.topic)?, self)
    }

    pub(super) fn load(place: &StatePlace, topic: &str) -> Result<Option<TopicState>> {
        place.read(&Self::key(topic)?)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ConnectorFile {
    connector_name: String,
    created_ms: i64,
}

/// Restore state names topics, groups and positions: owner only, like the backup's default.
pub(super) const STATE_PERMS: crate::perms::Perms = crate::perms::OWNER_ONLY;

const CONNECTOR_KEY: &str = "connector.json";

/// Records (or checks) which connector the restore state belongs to. Two restores racing to
/// claim one place: exactly one creates the record, the other reads it and is checked.
pub(super) fn claim_state_dir(place: &StatePlace, connector: &str) -> Result<()> {
    let check = |f: ConnectorFile| {
        if f.connector_name == connector {
            return Ok(());
        }
        Err(Error::Config(format!(
            "restore state {} belongs to connector {:?}, not {connector:?}: set \
             restore.state.dir to a directory of its own",
            place.location(),
            f.connector_name
        )))
    };
    if let Some(f) = place.read::<ConnectorFile>(CONNECTOR_KEY)? {
        return check(f);
    }
    let f = ConnectorFile {
        connector_name: connector.to_string(),
        created_ms: manifest::now_ms(),
    };
    let json = serde_json::to_vec_pretty(&f).map_err(|e| Error::State(e.to_string()))?;
    match place.store.put_if_absent(CONNECTOR_KEY, &json) {
        Ok(()) => Ok(()),
        Err(e) if storage::is_conflict(&e) => match place.read::<ConnectorFile>(CONNECTOR_KEY)? {
            Some(f) => check(f),
            None => Err(e),
        },
        Err(e) => Err(Error::State(format!(
            "cannot keep the restore's progress in {}: {e}; set restore.state.dir (the CLI's \
             --state-dir) to a writable directory or bucket prefix if the backup is read-only",
            place.location()
        ))),
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

/// Reads a restore's state (see docs/restore.md).
pub fn read_status(place: &StatePlace) -> Result<StateDirStatus> {
    let keys: Vec<String> = place.store.list("")?.into_iter().map(|o| o.key).collect();
    if keys.is_empty() {
        return Err(Error::NotFound(format!(
            "no restore state at {}: pass the restore.state.dir of the restore (default \
             <source.dir>/restore-state/<digest>/; `kbackup restore-status <source.dir>` lists \
             those)",
            place.location()
        )));
    }
    let connector_name = place
        .read::<ConnectorFile>(CONNECTOR_KEY)?
        .map(|f| f.connector_name);
    let mut topics = Vec::new();
    let mut partitions = Vec::new();
    for key in &keys {
        let parts: Vec<&str> = key.split('/').collect();
        match parts.as_slice() {
            ["topics", name] if name.ends_with(".json") => {
                topics.extend(place.read::<TopicState>(key)?);
            }
            ["partitions", _, name] if name.ends_with(".json") => {
                partitions.extend(place.read::<PartitionState>(key)?);
            }
            _ => {}
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
