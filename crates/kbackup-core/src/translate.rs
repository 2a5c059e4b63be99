//! Consumer-group offset translation: the one rule that maps a group's committed offset on the
//! original partition to an offset on the restored partition.
//!
//! Restored records get new offsets (compaction gaps, transaction markers, aborted records and
//! retention-deleted heads all vanish), so a committed offset cannot be copied. The rule:
//!
//! * a group whose committed offset on the original partition was `O` resumes at the NEW offset
//!   of the first restored record whose ORIGINAL offset is `>= O`;
//! * if no backed-up record has an original offset `>= O`, it resumes at the new log end;
//! * `O` below the first backed-up offset therefore maps to the first restored record.
//!
//! The rule never requires an exact match on `O`: the record just before a group's position may
//! be compacted away, deleted, a transaction marker or part of an aborted transaction.
//!
//! It is split in two so each half needs only what is known when it runs:
//! [`target_original`] needs only the backup (which original offsets exist), and [`translate`]
//! needs only the acknowledgements of the restore (which new offset each original received).
//!
//! Invariants (each checked by a test below):
//! 1. Never skip data: every backed-up record with original offset `>= O` is at or after the
//!    translated offset, provided the restore wrote the records of a partition in order.
//! 2. Never re-read: no backed-up record with original offset `< O` is at or after the translated
//!    offset, unless the restore itself wrote duplicates (a crash and resume); then the first
//!    copy wins and the duplicates are re-read rather than anything being lost.
//! 3. A group with no committed offset (`O < 0`) gets nothing committed: it keeps the
//!    behaviour it had (`auto.offset.reset`).

/// Answers "which original offsets are in the backup?" for one partition.
///
/// Implemented for sorted slices (tests, small plans); the restore engine implements it over the
/// partition's segment reader, whose `seek` finds the first record at or after an offset.
pub trait OffsetsIndex {
    /// The smallest backed-up original offset `>= offset`, or `None` when there is none.
    fn first_at_or_after(&self, offset: i64) -> Option<i64>;
}

/// A strictly increasing slice of original offsets.
impl OffsetsIndex for [i64] {
    fn first_at_or_after(&self, offset: i64) -> Option<i64> {
        let i = self.partition_point(|&o| o < offset);
        self.get(i).copied()
    }
}

impl OffsetsIndex for Vec<i64> {
    fn first_at_or_after(&self, offset: i64) -> Option<i64> {
        self.as_slice().first_at_or_after(offset)
    }
}

/// Where a group must resume on the restored partition, in terms of the backup.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case", tag = "kind", content = "original_offset")]
pub enum Target {
    /// At the restored copy of the backed-up record with this ORIGINAL offset.
    Record(i64),
    /// At the end of the restored partition: the group had consumed everything backed up.
    LogEnd,
}

/// The restore-side facts [`translate`] needs for one partition.
pub trait NewOffsets {
    /// The new offset the record with this original offset received (the first one, if the
    /// restore wrote it more than once), or `None` if it is not known (yet).
    fn new_offset_of(&self, original: i64) -> Option<i64>;
    /// The new log end of the restored partition (last restored new offset + 1).
    fn log_end(&self) -> i64;
}

/// First half of the rule: which backed-up record a group committed at `committed` resumes at.
///
/// Returns `None` when the group has no committed offset (`committed < 0`): nothing to commit.
pub fn target_original<I: OffsetsIndex + ?Sized>(backed_up: &I, committed: i64) -> Option<Target> {
    if committed < 0 {
        return None;
    }
    Some(match backed_up.first_at_or_after(committed) {
        Some(original) => Target::Record(original),
        None => Target::LogEnd,
    })
}

/// Second half of the rule: the offset to commit on the restored partition.
///
/// Returns `None` if the target record's new offset is not known yet (not acknowledged):
/// the caller must wait, never guess.
pub fn translate<M: NewOffsets + ?Sized>(target: Target, mapping: &M) -> Option<i64> {
    match target {
        Target::Record(original) => mapping.new_offset_of(original),
        Target::LogEnd => Some(mapping.log_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A restore simulated in memory: the new offset of each original, first copy wins.
    struct Restored {
        first_new: BTreeMap<i64, i64>,
        end: i64,
    }

    impl Restored {
        /// Restores `originals` in order into a partition whose log starts at `start`, with a
        /// transaction marker after every `marker_every` records (0 = none), like Connect with
        /// exactly-once support.
        fn of(originals: &[i64], start: i64, marker_every: usize) -> Restored {
            let mut r = Restored {
                first_new: BTreeMap::new(),
                end: start,
            };
            for (i, &o) in originals.iter().enumerate() {
                r.first_new.entry(o).or_insert(r.end);
                r.end += 1;
                if marker_every > 0 && (i + 1) % marker_every == 0 {
                    r.end += 1;
                }
            }
            r
        }
    }

    impl NewOffsets for Restored {
        fn new_offset_of(&self, original: i64) -> Option<i64> {
            self.first_new.get(&original).copied()
        }
        fn log_end(&self) -> i64 {
            self.end
        }
    }

    /// A backup whose original partition had a deleted head (0..10), a compaction gap (13, 14),
    /// a commit marker (17) and an aborted transaction (20..22, not backed up, marker 23).
    fn backup() -> Vec<i64> {
        vec![10, 11, 12, 15, 16, 18, 19, 24, 25]
    }

    fn full(o: i64) -> Option<i64> {
        let b = backup();
        let r = Restored::of(&b, 0, 0);
        target_original(&b, o).and_then(|t| translate(t, &r))
    }

    #[test]
    fn exact_match_maps_to_that_record() {
        assert_eq!(target_original(&backup(), 15), Some(Target::Record(15)));
        assert_eq!(full(15), Some(3));
        assert_eq!(full(10), Some(0));
    }

    #[test]
    fn offset_inside_a_compaction_gap_maps_to_next_record() {
        assert_eq!(target_original(&backup(), 13), Some(Target::Record(15)));
        assert_eq!(target_original(&backup(), 14), Some(Target::Record(15)));
        assert_eq!(full(14), Some(3));
    }

    #[test]
    fn offset_at_a_transaction_marker_maps_to_next_record() {
        assert_eq!(target_original(&backup(), 17), Some(Target::Record(18)));
        assert_eq!(full(17), Some(5));
    }

    #[test]
    fn offset_inside_an_aborted_transaction_maps_past_it() {
        for o in 20..=23 {
            assert_eq!(
                target_original(&backup(), o),
                Some(Target::Record(24)),
                "O = {o}"
            );
        }
        assert_eq!(full(21), Some(7));
    }

    #[test]
    fn offset_last_plus_one_maps_to_log_end() {
        assert_eq!(target_original(&backup(), 26), Some(Target::LogEnd));
        assert_eq!(full(26), Some(9));
    }

    #[test]
    fn offset_far_ahead_of_the_backup_maps_to_log_end() {
        assert_eq!(target_original(&backup(), 1_000_000), Some(Target::LogEnd));
        assert_eq!(full(i64::MAX), Some(9));
    }

    #[test]
    fn offset_before_first_backed_up_maps_to_first_record() {
        assert_eq!(target_original(&backup(), 0), Some(Target::Record(10)));
        assert_eq!(target_original(&backup(), 9), Some(Target::Record(10)));
        assert_eq!(full(3), Some(0));
    }

    #[test]
    fn no_committed_offset_commits_nothing() {
        assert_eq!(target_original(&backup(), -1), None);
        assert_eq!(target_original(&backup(), -1001), None);
    }

    #[test]
    fn empty_partition_maps_everything_to_log_end() {
        let empty: Vec<i64> = Vec::new();
        assert_eq!(target_original(&empty, 0), Some(Target::LogEnd));
        assert_eq!(target_original(&empty, 42), Some(Target::LogEnd));
        // Restoring into an empty new topic: the end is 0.
        let r = Restored::of(&empty, 0, 0);
        assert_eq!(translate(Target::LogEnd, &r), Some(0));
    }

    #[test]
    fn unacknowledged_target_is_not_guessed() {
        let b = backup();
        let r = Restored::of(&b[..3], 0, 0);
        assert_eq!(translate(Target::Record(15), &r), None);
    }

    #[test]
    fn markers_in_the_restored_log_are_skipped() {
        let b = backup();
        // 10@0 11@1 m@2 12@3 15@4 m@5 16@6 18@7 m@8 19@9 24@10 m@11 25@12, end 13
        let r = Restored::of(&b, 0, 2);
        assert_eq!(translate(Target::Record(15), &r), Some(4));
        assert_eq!(translate(Target::Record(16), &r), Some(6));
        assert_eq!(translate(Target::LogEnd, &r), Some(13));
    }

    #[test]
    fn duplicates_from_a_resumed_restore_keep_the_first_copy() {
        // 10..19 restored, crash, resume re-sends from 15: first copy of 15 wins.
        let originals = [10, 11, 12, 15, 16, 18, 19, 15, 16, 18, 19, 24, 25];
        let r = Restored::of(&originals, 0, 0);
        assert_eq!(translate(Target::Record(15), &r), Some(3));
        assert_eq!(translate(Target::Record(24), &r), Some(11));
    }

    /// Invariants 1 and 2 re-checked for every committed offset around a gappy backup, with
    /// and without markers in the restored log and with a non-zero start.
    #[test]
    fn invariants_hold_for_every_committed_offset() {
        let b = backup();
        for (start, markers) in [(0, 0), (0, 1), (7, 3)] {
            let r = Restored::of(&b, start, markers);
            for o in -3..40 {
                let Some(t) = target_original(&b, o) else {
                    assert!(o < 0);
                    continue;
                };
                let new = translate(t, &r).expect("every target is restored");
                for &orig in &b {
                    let at = r.first_new[&orig];
                    if orig >= o {
                        assert!(at >= new, "O={o}: record {orig} at {at} skipped by {new}");
                    } else {
                        assert!(at < new, "O={o}: record {orig} at {at} re-read from {new}");
                    }
                }
            }
        }
    }
}
