//! Group commits and final topic configs, once partitions are restored.

use super::*;
use super::{engine::*, state::*};
use crate::cluster::CommitOutcome;
use crate::error::{Error, Result};
use crate::record::TopicPartition;
use crate::translate::{self, Target};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

impl RestoreSource {
    /// Commits groups of finished partitions and lifts held topic configs of finished topics.
    /// `Err` when a group commit failed for good (authorization) or for [`COMMIT_GIVE_UP`], or
    /// a topic's final configs cannot be applied for good (a missing ACL): the task must fail
    /// with the cause, not run on with a group or a topic config silently not restored.
    pub(super) fn commit_finished(&mut self) -> Result<()> {
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
                if let Err(e) = run.state.save(&self.state) {
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
        // Other tasks' partitions are read from their state files every TOPIC_CHECK_INTERVAL;
        // a partition of this task that became done is checked at once (a restore holding all
        // of a topic's partitions, such as the CLI's, waited up to 5 s after its last record).
        let done_here = self.runs.values().filter(|r| r.state.done).count();
        let more_done = done_here != self.topic_check_done;
        if done_topics.is_empty() || (!more_done && self.topic_check_at.is_some_and(|t| now < t)) {
            return Ok(());
        }
        self.topic_check_done = done_here;
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
    pub(super) fn finish_topic(&self, topic: &str) -> Result<bool> {
        let Some(mut ts) = TopicState::load(&self.state, topic)? else {
            return Ok(true);
        };
        if !ts.created_by_restore || ts.configs_restored {
            return Ok(true);
        }
        let listed;
        let partitions = match self.backup_partitions.get(topic) {
            Some(ps) => ps,
            None => {
                listed = self.cfg.open_backup()?.partitions(topic)?;
                &listed
            }
        };
        for &p in partitions {
            // Partitions of other tasks: their state files say whether they are done.
            let done = match self.runs.get(&TopicPartition::new(topic, p)) {
                Some(run) => run.state.done,
                None => PartitionState::load(&self.state, topic, p)?.is_some_and(|s| s.done),
            };
            if !done {
                return Ok(false);
            }
        }
        self.cluster
            .alter_topic_configs(&ts.target_topic, &ts.final_configs, KAFKA_TIMEOUT)?;
        ts.configs_restored = true;
        ts.save(&self.state)?;
        log::info!(
            "{}: topic {} fully restored; its configs are now {:?} (retention is active again)",
            self.cfg.task_id,
            ts.target_topic,
            ts.final_configs
        );
        Ok(true)
    }
}
