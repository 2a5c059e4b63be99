//! Capture of consumer-group positions for the backed-up partitions.
//!
//! A topic copy alone cannot resume consumers: their committed offsets live in
//! `__consumer_offsets`, which cannot be copied (restored records get new offsets). So while the
//! backup runs, this module periodically reads every matching group's committed offsets on the
//! partitions this task backs up and appends the changes to each partition's offsets log
//! ([`crate::offsets_log`]); the restore translates them ([`crate::translate`]).
//!
//! The Kafka calls go through the [`ClusterClient`] (Java clients on the Connect path,
//! librdkafka in the CLI). A capture that keeps failing is an error the sink returns (so the
//! task fails with the cause), not a warning on a connector that looks healthy.

use crate::cluster::ClusterClient;
use crate::error::{Error, Result};
use crate::layout;
use crate::metrics::CaptureStats;
use crate::offsets_log::{self, GroupOffsetEntry};
use crate::record::TopicPartition;
use crate::storage::Store;
use regex::Regex;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Timeout of each Kafka call made by a capture.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// How long captures may fail without a break before [`GroupOffsetCapture::health`] says so:
/// ten intervals, at least a minute (a broker restart or a leader move is not a failure).
pub fn failure_window(interval_ms: u64) -> Duration {
    Duration::from_millis(interval_ms.saturating_mul(10)).max(Duration::from_secs(60))
}

/// What [`GroupOffsetCapture::start`] needs.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// Root directory of the backup (its location, for messages, when `store` is set).
    pub root: PathBuf,
    /// The object store of a backup in a bucket: each capture's changes of a partition are a
    /// new chunk object of its log ([`offsets_log::append_store`]).
    pub store: Option<Arc<dyn Store>>,
    /// In an object store, how often captured changes are stored (ms; 0: at every capture);
    /// the sink uses its segment age, so group positions are as fresh as the data. Captures
    /// at close and at the end of a run store at once.
    pub persist_every_ms: u64,
    /// The source cluster.
    pub cluster: Arc<dyn ClusterClient>,
    /// Only groups whose whole id matches this regex are captured (`None` = all).
    pub include: Option<String>,
    /// Groups whose whole id matches this regex are skipped (`None` = none).
    pub exclude: Option<String>,
    /// The connector's own consumer group, never captured.
    pub own_group: Option<String>,
    /// Pause between background captures in ms; 0 disables the background thread.
    pub interval_ms: u64,
    /// Modes of the offsets logs (and directories) a capture creates.
    pub perms: crate::perms::Perms,
}

/// Periodic capture of group offsets, running on its own thread.
///
/// The thread only logs through the `log` crate and never calls into the JVM.
pub struct GroupOffsetCapture {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    cfg: CaptureConfig,
    include: Option<Regex>,
    exclude: Option<Regex>,
    partitions: Mutex<Vec<TopicPartition>>,
    /// Serialises captures (background and `capture_now`) and holds what was last logged.
    state: Mutex<CaptureState>,
    stop: Mutex<bool>,
    wake: Condvar,
    /// Monitoring counters, apart from `state` so reading them never waits for a capture.
    stats: Mutex<CaptureStats>,
}

#[derive(Default)]
struct CaptureState {
    /// Last logged offset per partition and group; loaded from the log on first use.
    last: HashMap<TopicPartition, BTreeMap<String, i64>>,
    /// In an object store: the place of the next chunk of each partition's log.
    next_part: HashMap<TopicPartition, u64>,
    /// In an object store: changes captured but not stored yet, and when changes were last
    /// stored ([`append_changes`]).
    pending: BTreeMap<TopicPartition, Vec<GroupOffsetEntry>>,
    last_persist: Option<Instant>,
    /// True while captures fail, so a broker outage logs one warning, not one per interval.
    failing: bool,
    /// When the current run of failed captures began, its last error, and whether that
    /// error is transient (the cluster unreachable) rather than a refusal (credentials, ACLs).
    failing_since: Option<(Instant, String, bool)>,
    /// Groups whose last read failed (warned once until they work again).
    failed_groups: HashSet<String>,
}

/// Compiles a user regex so it must match the whole group id, naming the config key on error.
fn whole_match(key: &str, re: &Option<String>) -> Result<Option<Regex>> {
    match re {
        None => Ok(None),
        Some(s) => Regex::new(&format!("^(?:{s})$")).map(Some).map_err(|e| {
            Error::Config(format!(
                "{key} = {s:?} is not a valid regular expression ({e}); fix the pattern, \
                 for example \".*\" for every group"
            ))
        }),
    }
}

/// Appends each partition's changes to its log and answers how many entries the logs took:
/// a log drops what it already holds (another capture of the same backup wrote it first), and
/// those are not changes this capture made.
///
/// In an object store each write is a new chunk object, so changes are held and stored
/// together at most every `persist_every_ms` (and whenever `force`: a capture at close or at
/// the end of a run): one PUT per changed partition per period instead of per capture.
fn append_changes(
    cfg: &CaptureConfig,
    state: &mut CaptureState,
    changes: BTreeMap<TopicPartition, Vec<GroupOffsetEntry>>,
    force: bool,
) -> Result<usize> {
    let Some(store) = &cfg.store else {
        let mut appended = 0;
        for (tp, entries) in changes {
            let log = layout::group_offsets_log(&cfg.root, &tp);
            appended += offsets_log::append(&log, &entries, cfg.perms)?;
            note_known(state, tp, &entries);
        }
        return Ok(appended);
    };
    for (tp, entries) in changes {
        note_known(state, tp.clone(), &entries);
        state.pending.entry(tp).or_default().extend(entries);
    }
    let due = state
        .last_persist
        .is_none_or(|t| t.elapsed() >= Duration::from_millis(cfg.persist_every_ms));
    if !(force || due) {
        return Ok(0);
    }
    state.last_persist = Some(Instant::now());
    let mut appended = 0;
    let pending: Vec<TopicPartition> = state.pending.keys().cloned().collect();
    for tp in pending {
        let next = state.next_part.entry(tp.clone()).or_default();
        let prefix = layout::partition_key(&tp, "");
        // kept until stored: a failed write is tried again at the next capture
        appended += offsets_log::append_store(store.as_ref(), &prefix, next, &state.pending[&tp])?;
        state.pending.remove(&tp);
    }
    Ok(appended)
}

/// Notes the positions just captured as the last known of their groups.
fn note_known(state: &mut CaptureState, tp: TopicPartition, entries: &[GroupOffsetEntry]) {
    let known = state.last.entry(tp).or_default();
    for e in entries {
        known.insert(e.group.clone(), e.committed_offset);
    }
}

impl Shared {
    fn wanted(&self, group: &str) -> bool {
        if self.cfg.own_group.as_deref() == Some(group) {
            return false;
        }
        if let Some(re) = &self.include {
            if !re.is_match(group) {
                return false;
            }
        }
        !self.exclude.as_ref().is_some_and(|re| re.is_match(group))
    }

    fn stopping(&self) -> bool {
        *self.stop.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_state(&self) -> MutexGuard<'_, CaptureState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a capture's outcome for the metrics.
    fn count(&self, ok: bool) {
        let mut st = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            st.captures += 1;
            st.last_success_ms = crate::manifest::now_ms();
        } else {
            st.errors += 1;
        }
    }

    fn capture(&self, force: bool) -> Result<usize> {
        let partitions = self
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        self.capture_for(&partitions, force)
    }

    fn capture_for(&self, partitions: &[TopicPartition], force: bool) -> Result<usize> {
        let mut state = self.lock_state();
        match self.read_changes(&mut state, partitions) {
            Ok(changes) => append_changes(&self.cfg, &mut state, changes, force),
            Err(e) => {
                if force {
                    // what earlier captures found is stored even when this one failed
                    if let Err(e2) = append_changes(&self.cfg, &mut state, BTreeMap::new(), true) {
                        log::warn!("could not store the captured group positions: {e2}");
                    }
                }
                Err(e)
            }
        }
    }

    /// The committed offsets of the wanted groups on `partitions` that differ from what is
    /// known (a change each).
    fn read_changes(
        &self,
        state: &mut CaptureState,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Vec<GroupOffsetEntry>>> {
        if partitions.is_empty() {
            return Ok(BTreeMap::new());
        }
        let groups: Vec<String> = self
            .cfg
            .cluster
            .consumer_groups(KAFKA_TIMEOUT)?
            .into_iter()
            .filter(|g| self.wanted(g))
            .collect();
        let now = crate::manifest::now_ms();
        let mut changes: BTreeMap<TopicPartition, Vec<GroupOffsetEntry>> = BTreeMap::new();
        let (mut read, mut last_error) = (0usize, None);
        for group in groups {
            if self.stopping() {
                break;
            }
            let committed = match self
                .cfg
                .cluster
                .group_offsets(&group, partitions, KAFKA_TIMEOUT)
            {
                Ok(c) => {
                    state.failed_groups.remove(&group);
                    read += 1;
                    c
                }
                Err(e) => {
                    // One unreadable group (coordinator moving) must not stop the others.
                    if state.failed_groups.insert(group.clone()) {
                        log::warn!("skipping group {group:?} in this capture: {e}");
                    } else {
                        log::debug!("skipping group {group:?} again: {e}");
                    }
                    last_error = Some(e);
                    continue;
                }
            };
            for (tp, (offset, metadata)) in committed {
                if !state.last.contains_key(&tp) {
                    let latest = match &self.cfg.store {
                        Some(store) => {
                            let listed = store.list(&layout::partition_key(&tp, ""))?;
                            let parts =
                                offsets_log::store_parts(listed.iter().map(|m| m.key.as_str()));
                            let next = parts.last().map_or(0, |(place, _)| place + 1);
                            state.next_part.insert(tp.clone(), next);
                            offsets_log::latest(offsets_log::read_store_parts(
                                store.as_ref(),
                                &parts,
                            )?)
                        }
                        None => {
                            let log = layout::group_offsets_log(&self.cfg.root, &tp);
                            offsets_log::latest_per_group(&log)?
                        }
                    };
                    let known = latest
                        .into_iter()
                        .map(|(g, e)| (g, e.committed_offset))
                        .collect();
                    state.last.insert(tp.clone(), known);
                }
                let known = state.last.get(&tp).and_then(|m| m.get(&group)).copied();
                if known != Some(offset) {
                    changes.entry(tp).or_default().push(GroupOffsetEntry {
                        capture_time_ms: now,
                        group: group.clone(),
                        committed_offset: offset,
                        metadata,
                    });
                }
            }
        }
        // Not one group readable is not "one unreadable group": the capture as a whole fails.
        if read == 0 {
            if let Some(e) = last_error {
                return Err(e);
            }
        }
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).groups = read as u64;
        Ok(changes)
    }

    /// Notes how the capture that began at `started` went: `None` worked, else its error and
    /// whether that error is transient.
    fn record(&self, started: Instant, failure: Option<(String, bool)>) {
        let mut st = self.lock_state();
        let since = st.failing_since.as_ref().map_or(started, |f| f.0);
        st.failing_since = failure.map(|(e, transient)| (since, e, transient));
    }

    fn run(self: Arc<Self>) {
        let interval = Duration::from_millis(self.cfg.interval_ms.max(100));
        loop {
            let started = Instant::now();
            // A panic must not take the worker down; it is logged and the next round retries.
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.capture(false)));
            self.count(matches!(outcome, Ok(Ok(_))));
            let failing = match &outcome {
                Ok(Ok(n)) => {
                    log::debug!("group offsets capture appended {n} entries");
                    false
                }
                Ok(Err(e)) => {
                    if self.lock_state().failing {
                        log::debug!("group offsets capture failed again: {e}");
                    } else {
                        log::warn!(
                            "group offsets capture failed (retrying every {interval:?}): {e}"
                        );
                    }
                    true
                }
                Err(_) => {
                    log::error!("group offsets capture panicked; retrying in {interval:?}");
                    true
                }
            };
            {
                let mut st = self.lock_state();
                if st.failing && !failing {
                    log::info!("group offsets capture works again");
                }
                st.failing = failing;
            }
            let failure = match &outcome {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some((e.to_string(), e.is_retriable())),
                Err(_) => Some(("the capture panicked".into(), false)),
            };
            self.record(started, failure);
            let mut stop = self.stop.lock().unwrap_or_else(|p| p.into_inner());
            let deadline = started + interval;
            while !*stop {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                stop = self
                    .wake
                    .wait_timeout(stop, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            if *stop {
                return;
            }
        }
    }
}

impl GroupOffsetCapture {
    /// Validates the regexes and starts the background thread (unless `interval_ms` is 0).
    pub fn start(cfg: CaptureConfig) -> Result<GroupOffsetCapture> {
        let include = whole_match("groups.include", &cfg.include)?;
        let exclude = whole_match("groups.exclude", &cfg.exclude)?;
        let interval_ms = cfg.interval_ms;
        let shared = Arc::new(Shared {
            cfg,
            include,
            exclude,
            partitions: Mutex::new(Vec::new()),
            state: Mutex::new(CaptureState::default()),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            stats: Mutex::new(CaptureStats::new()),
        });
        let thread = if interval_ms > 0 {
            let s = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name("kbackup-group-offsets".into())
                .spawn(move || s.run())
                .map_err(|e| {
                    Error::io(e, "start the group offsets thread for", &shared.cfg.root)
                })?;
            Some(handle)
        } else {
            None
        };
        Ok(GroupOffsetCapture { shared, thread })
    }

    /// Replaces the set of partitions whose group offsets are captured (the task's assignment).
    pub fn set_partitions(&self, tps: Vec<TopicPartition>) {
        *self
            .shared
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = tps;
    }

    /// Captures once, now, on the calling thread; returns how many entries were appended.
    pub fn capture_now(&self) -> Result<usize> {
        let res = self.shared.capture(true);
        self.shared.count(res.is_ok());
        res
    }

    /// Captures once, now, for `tps` only (partitions about to be released).
    pub fn capture_partitions(&self, tps: &[TopicPartition]) -> Result<usize> {
        let res = self.shared.capture_for(tps, true);
        self.shared.count(res.is_ok());
        res
    }

    /// Capture counters for the metrics.
    pub fn stats(&self) -> CaptureStats {
        *self.shared.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err` once background captures have failed without a break for their failure window
    /// ([`failure_window`]; ten times longer while the cluster is merely unreachable, when the
    /// task's own consumer is stalled too): group positions are not being backed up, which
    /// must fail the task, not hide in a log.
    pub fn health(&self) -> Result<()> {
        let st = self.shared.lock_state();
        let window = failure_window(self.shared.cfg.interval_ms);
        match &st.failing_since {
            Some((since, last, transient))
                if since.elapsed() >= if *transient { window * 10 } else { window } =>
            {
                Err(Error::Kafka {
                    what: "capture consumer-group offsets".into(),
                    retriable: false,
                    detail: format!(
                        "every capture for {}s failed, the last with: {last}. Group positions \
                         are not being backed up; fix the cause (the cluster.* settings, or the \
                         principal needs DESCRIBE on the groups and topics, see \
                         docs/security.md) and restart the task",
                        since.elapsed().as_secs()
                    ),
                })
            }
            _ => Ok(()),
        }
    }

    /// Stops the background thread and waits for it (at most one Kafka call's timeout).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        *self.shared.stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("group offsets thread ended with a panic");
            }
        }
    }
}

impl Drop for GroupOffsetCapture {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::testing::Refusing;

    fn cfg(include: Option<&str>, exclude: Option<&str>) -> CaptureConfig {
        CaptureConfig {
            root: PathBuf::from("/nonexistent"),
            store: None,
            persist_every_ms: 0,
            cluster: Arc::new(crate::kafka::RdKafkaCluster::new(&BTreeMap::new())),
            include: include.map(String::from),
            exclude: exclude.map(String::from),
            own_group: Some("connect-backup".into()),
            interval_ms: 0,
            perms: crate::perms::OWNER_ONLY,
        }
    }

    #[test]
    fn filters_match_whole_ids_and_skip_own_group() {
        let c = GroupOffsetCapture::start(cfg(Some("app-.*"), Some(".*-test"))).unwrap();
        let s = &c.shared;
        assert!(s.wanted("app-billing"));
        assert!(
            !s.wanted("my-app-billing"),
            "include must match the whole id"
        );
        assert!(!s.wanted("app-billing-test"));
        assert!(!s.wanted("connect-backup"));
        let all = GroupOffsetCapture::start(cfg(None, None)).unwrap();
        assert!(all.shared.wanted("any / group ✓"));
        assert!(!all.shared.wanted("connect-backup"));
    }

    #[test]
    fn bad_regex_names_the_key() {
        let err = GroupOffsetCapture::start(cfg(None, Some("(unclosed")))
            .err()
            .unwrap();
        assert!(err.to_string().contains("groups.exclude"), "{err}");
    }

    #[test]
    fn no_partitions_means_no_kafka_call() {
        let c = GroupOffsetCapture::start(cfg(None, None)).unwrap();
        assert_eq!(c.capture_now().unwrap(), 0);
    }

    fn refusing(retriable: bool) -> GroupOffsetCapture {
        let mut c = cfg(None, None);
        c.cluster = Arc::new(Refusing::new(
            retriable,
            "SaslAuthenticationException: invalid credentials",
        ));
        let cap = GroupOffsetCapture::start(c).unwrap();
        cap.set_partitions(vec![TopicPartition::new("t", 0)]);
        cap
    }

    #[test]
    fn captures_refused_for_their_whole_window_fail_the_task_and_a_success_clears_it() {
        let cap = refusing(false);
        let s = &cap.shared;
        let err = s.capture(false).unwrap_err();
        let window = failure_window(0);
        s.record(Instant::now(), Some((err.to_string(), err.is_retriable())));
        assert!(
            cap.health().is_ok(),
            "one failed capture is not yet a failure"
        );
        s.record(Instant::now(), Some((err.to_string(), false)));
        s.lock_state().failing_since.as_mut().unwrap().0 =
            Instant::now() - window - Duration::from_secs(1);
        let e = cap.health().unwrap_err();
        assert!(!e.is_retriable(), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("invalid credentials") && text.contains("docs/security.md"),
            "{text}"
        );
        s.record(Instant::now(), None);
        assert!(
            cap.health().is_ok(),
            "a capture that works again clears the failure"
        );
    }

    #[test]
    fn an_unreachable_cluster_gets_ten_windows_before_failing_the_task() {
        let cap = refusing(true);
        let s = &cap.shared;
        let err = s.capture(false).unwrap_err();
        assert!(err.is_retriable());
        let window = failure_window(0);
        s.record(Instant::now() - window * 2, Some((err.to_string(), true)));
        assert!(cap.health().is_ok());
        s.lock_state().failing_since.as_mut().unwrap().0 = Instant::now() - window * 11;
        assert!(cap.health().is_err());
    }

    #[test]
    fn background_thread_stops_promptly() {
        let mut c = cfg(None, None);
        c.interval_ms = 60_000;
        let cap = GroupOffsetCapture::start(c).unwrap();
        let t = Instant::now();
        cap.stop();
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    /// Group `g` at offset `o`, captured at `t`.
    fn entry(t: i64, o: i64) -> GroupOffsetEntry {
        GroupOffsetEntry {
            capture_time_ms: t,
            group: "g".into(),
            committed_offset: o,
            metadata: String::new(),
        }
    }

    #[test]
    fn captured_change_count_is_what_the_logs_took_not_what_was_offered() {
        let d = tempfile::tempdir().unwrap();
        let mut c = cfg(None, None);
        c.root = d.path().to_path_buf();
        let tp = TopicPartition::new("t", 0);
        // Two captures of one backup (a rebalance's old and new task, or the CLI beside the
        // connector): this one last saw offset 4; the other already logged the move to 7.
        let log = layout::group_offsets_log(&c.root, &tp);
        offsets_log::append(&log, &[entry(1, 4), entry(2, 7)], c.perms).unwrap();
        let mut state = CaptureState::default();
        state.last.insert(tp.clone(), [("g".to_string(), 4)].into());
        let changes = [(tp.clone(), vec![entry(3, 7)])].into();
        assert_eq!(append_changes(&c, &mut state, changes, false).unwrap(), 0);
        assert_eq!(offsets_log::read_all(&log).unwrap().len(), 2);
        assert_eq!(state.last[&tp]["g"], 7, "it knows the log's position now");
        let changes = [(tp.clone(), vec![entry(4, 9)])].into();
        assert_eq!(append_changes(&c, &mut state, changes, false).unwrap(), 1);
    }

    #[test]
    fn in_an_object_store_changes_are_stored_once_per_period_or_when_forced() {
        use crate::storage::{LocalStore, Store};
        let d = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(d.path(), Default::default()));
        let mut c = cfg(None, None);
        c.store = Some(store.clone());
        c.persist_every_ms = 3_600_000;
        let tp = TopicPartition::new("t", 0);
        let chunks = || {
            let listed = store.list("topics/t/0/").unwrap();
            offsets_log::store_parts(listed.iter().map(|m| m.key.as_str())).len()
        };
        let mut state = CaptureState::default();
        state.last.insert(tp.clone(), BTreeMap::new());
        // the first capture stores at once; the next ones within the period are held
        let ch = |e| [(tp.clone(), vec![e])].into();
        assert_eq!(
            append_changes(&c, &mut state, ch(entry(1, 4)), false).unwrap(),
            1
        );
        assert_eq!(
            append_changes(&c, &mut state, ch(entry(2, 5)), false).unwrap(),
            0
        );
        assert_eq!(
            append_changes(&c, &mut state, ch(entry(3, 6)), false).unwrap(),
            0
        );
        assert_eq!(chunks(), 1, "one PUT per period, not per capture");
        assert_eq!(state.last[&tp]["g"], 6, "held changes count as known");
        // a capture at close stores what is held, in one chunk, in order
        assert_eq!(
            append_changes(&c, &mut state, BTreeMap::new(), true).unwrap(),
            2
        );
        assert_eq!(chunks(), 2);
        let listed = store.list("topics/t/0/").unwrap();
        let parts = offsets_log::store_parts(listed.iter().map(|m| m.key.as_str()));
        let all = offsets_log::read_store_parts(store.as_ref(), &parts).unwrap();
        let offsets: Vec<i64> = all.iter().map(|e| e.committed_offset).collect();
        assert_eq!(offsets, [4, 5, 6]);
        assert!(state.pending.is_empty());
    }
}
