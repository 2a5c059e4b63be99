//! Capture of consumer-group positions for the backed-up partitions.
//!
//! A topic copy alone cannot resume consumers: their committed offsets live in
//! `__consumer_offsets`, which cannot be copied (restored records get new offsets). So while the
//! backup runs, this module periodically reads every matching group's committed offsets on the
//! partitions this task backs up and appends the changes to each partition's offsets log
//! ([`crate::offsets_log`]); the restore translates them ([`crate::translate`]).
//!
//! rdkafka's safe AdminClient cannot list group offsets, so groups are listed with
//! `fetch_group_list` and each group's offsets are read by a `BaseConsumer` carrying that
//! `group.id` that never subscribes (so it never joins the group or disturbs its members) and
//! never commits.

use crate::error::{Error, Result};
use crate::layout;
use crate::metrics::CaptureStats;
use crate::offsets_log::{self, GroupOffsetEntry};
use crate::record::TopicPartition;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use regex::Regex;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Timeout of each Kafka call made by a capture.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// What [`GroupOffsetCapture::start`] needs.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// Root directory of the backup.
    pub root: PathBuf,
    /// Client settings for the source cluster (`cluster.*` with the prefix removed).
    pub cluster: BTreeMap<String, String>,
    /// Only groups whose whole id matches this regex are captured (`None` = all).
    pub include: Option<String>,
    /// Groups whose whole id matches this regex are skipped (`None` = none).
    pub exclude: Option<String>,
    /// The connector's own consumer group, never captured.
    pub own_group: Option<String>,
    /// Pause between background captures in ms; 0 disables the background thread.
    pub interval_ms: u64,
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
    /// True while captures fail, so a broker outage logs one warning, not one per interval.
    failing: bool,
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

fn kafka_err(
    cluster: &BTreeMap<String, String>,
    what: String,
    e: rdkafka::error::KafkaError,
) -> Error {
    crate::kafka::kafka_error(cluster, &what, &e)
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

    /// One group's committed offsets, read as an outsider (no subscribe, no commit).
    fn committed(&self, group: &str, tpl: &TopicPartitionList) -> Result<TopicPartitionList> {
        let consumer: BaseConsumer = crate::kafka::client_config(&self.cfg.cluster)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .create()
            .map_err(|e| {
                kafka_err(
                    &self.cfg.cluster,
                    format!("create client for group {group:?}"),
                    e,
                )
            })?;
        consumer
            .committed_offsets(tpl.clone(), KAFKA_TIMEOUT)
            .map_err(|e| {
                kafka_err(
                    &self.cfg.cluster,
                    format!("read committed offsets of group {group:?}"),
                    e,
                )
            })
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

    fn capture(&self) -> Result<usize> {
        let partitions = self
            .partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        self.capture_for(&partitions)
    }

    fn capture_for(&self, partitions: &[TopicPartition]) -> Result<usize> {
        let mut state = self.lock_state();
        if partitions.is_empty() {
            return Ok(0);
        }
        let cluster = crate::kafka::client_config(&self.cfg.cluster);
        let lister: BaseConsumer = cluster.create().map_err(|e| {
            kafka_err(
                &self.cfg.cluster,
                "create client to list consumer groups".into(),
                e,
            )
        })?;
        let list = lister
            .fetch_group_list(None, KAFKA_TIMEOUT)
            .map_err(|e| kafka_err(&self.cfg.cluster, "list consumer groups".into(), e))?;
        let groups: Vec<String> = list
            .groups()
            .iter()
            // Connect workers' own coordination groups hold no offsets.
            .filter(|g| g.protocol_type() != "connect")
            .map(|g| g.name().to_string())
            .filter(|g| self.wanted(g))
            .collect();
        drop(list);
        drop(lister);

        let mut tpl = TopicPartitionList::new();
        for tp in partitions {
            tpl.add_partition(&tp.topic, tp.partition);
        }
        let now = crate::manifest::now_ms();
        let mut changes: BTreeMap<TopicPartition, Vec<GroupOffsetEntry>> = BTreeMap::new();
        let mut groups_read = 0;
        for group in groups {
            if self.stopping() {
                break;
            }
            let committed = match self.committed(&group, &tpl) {
                Ok(c) => {
                    state.failed_groups.remove(&group);
                    groups_read += 1;
                    c
                }
                Err(e) => {
                    // One unreadable group (ACLs, coordinator moving) must not stop the others.
                    if state.failed_groups.insert(group.clone()) {
                        log::warn!("skipping group {group:?} in this capture: {e}");
                    } else {
                        log::debug!("skipping group {group:?} again: {e}");
                    }
                    continue;
                }
            };
            for el in committed.elements() {
                let Offset::Offset(offset) = el.offset() else {
                    continue; // no committed offset on this partition
                };
                let tp = TopicPartition::new(el.topic(), el.partition());
                if !state.last.contains_key(&tp) {
                    let log = layout::group_offsets_log(&self.cfg.root, &tp);
                    let latest = offsets_log::latest_per_group(&log)?;
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
                        metadata: el.metadata().to_string(),
                    });
                }
            }
        }
        let mut appended = 0;
        for (tp, entries) in changes {
            offsets_log::append(&layout::group_offsets_log(&self.cfg.root, &tp), &entries)?;
            let known = state.last.entry(tp).or_default();
            for e in &entries {
                known.insert(e.group.clone(), e.committed_offset);
            }
            appended += entries.len();
        }
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).groups = groups_read;
        Ok(appended)
    }

    fn run(self: Arc<Self>) {
        let interval = Duration::from_millis(self.cfg.interval_ms.max(100));
        loop {
            let started = Instant::now();
            // A panic must not take the worker down; it is logged and the next round retries.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.capture()));
            self.count(matches!(outcome, Ok(Ok(_))));
            let failing = match outcome {
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
        let res = self.shared.capture();
        self.shared.count(res.is_ok());
        res
    }

    /// Captures once, now, for `tps` only (partitions about to be released).
    pub fn capture_partitions(&self, tps: &[TopicPartition]) -> Result<usize> {
        let res = self.shared.capture_for(tps);
        self.shared.count(res.is_ok());
        res
    }

    /// Capture counters for the metrics.
    pub fn stats(&self) -> CaptureStats {
        *self.shared.stats.lock().unwrap_or_else(|p| p.into_inner())
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

    fn cfg(include: Option<&str>, exclude: Option<&str>) -> CaptureConfig {
        CaptureConfig {
            root: PathBuf::from("/nonexistent"),
            cluster: BTreeMap::new(),
            include: include.map(String::from),
            exclude: exclude.map(String::from),
            own_group: Some("connect-backup".into()),
            interval_ms: 0,
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

    #[test]
    fn background_thread_stops_promptly() {
        let mut c = cfg(None, None);
        c.interval_ms = 60_000;
        let cap = GroupOffsetCapture::start(c).unwrap();
        let t = Instant::now();
        cap.stop();
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
