//! The restore window: which backed-up records a restore writes, in ONE place for the CLI and
//! the source connector (docs/restore.md, "Point-in-time restore").
//!
//! Rules (each tested below):
//! * Every bound is INCLUSIVE: a record is in the window when `from_offset <= offset <=
//!   to_offset` for its partition and `from_time <= timestamp <= to_time`; an unset bound is
//!   open. "As of 09:14" is `to_time = 09:14`, so it includes a record stamped 09:14:00.000.
//! * Membership is decided by each record's OWN stored timestamp (CreateTime or LogAppendTime,
//!   whichever the topic used). With out-of-order CreateTime a window need not be contiguous
//!   in offsets: the restore starts at the first record whose timestamp is >= `from_time`
//!   (found with the time index, see [`PartitionReader::seek_time`]), then reads to the end of
//!   the partition (or `to_offset`) and keeps each record whose own timestamp is in the
//!   window. Restored records keep their original relative order.
//! * A group's position as of a window with `to_time` comes from its last capture at or
//!   before `to_time` ([`crate::offsets_log::per_group_as_of`]); a group captured only later
//!   is not restored (a warning names it).

use crate::error::{Error, Result};
use crate::reader::PartitionReader;
use crate::record::TopicPartition;
use serde::{Deserialize, Serialize};

/// A bound on original offsets for a whole topic or one of its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetBound {
    /// Backed-up topic.
    pub topic: String,
    /// The partition, or `None` for every partition of the topic.
    pub partition: Option<i32>,
    /// The original offset (inclusive).
    pub offset: i64,
}

/// The window of a restore: what part of each partition is written (all bounds inclusive).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreWindow {
    /// Records whose own timestamp is >= this (ms since the epoch).
    #[serde(default)]
    pub from_time_ms: Option<i64>,
    /// Records whose own timestamp is <= this; also the latest capture time of group positions.
    #[serde(default)]
    pub to_time_ms: Option<i64>,
    /// Lowest original offset restored, per topic or topic-partition.
    #[serde(default)]
    pub from_offsets: Vec<OffsetBound>,
    /// Highest original offset restored, per topic or topic-partition.
    #[serde(default)]
    pub to_offsets: Vec<OffsetBound>,
}

/// The window as it applies to one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionWindow {
    /// Lowest original offset (inclusive).
    pub from_offset: i64,
    /// Highest original offset (inclusive).
    pub to_offset: i64,
    /// Lowest record timestamp (inclusive).
    pub from_time: i64,
    /// Highest record timestamp (inclusive).
    pub to_time: i64,
}

impl PartitionWindow {
    /// The window of a restore without bounds.
    pub const ALL: PartitionWindow = PartitionWindow {
        from_offset: 0,
        to_offset: i64::MAX,
        from_time: i64::MIN,
        to_time: i64::MAX,
    };

    /// Whether a record with this offset and timestamp is restored.
    pub fn contains(&self, offset: i64, timestamp: i64) -> bool {
        (self.from_offset..=self.to_offset).contains(&offset)
            && (self.from_time..=self.to_time).contains(&timestamp)
    }

    /// No record at or after this offset can be in the window.
    pub fn past(&self, offset: i64) -> bool {
        offset > self.to_offset
    }

    /// Nothing is left out.
    pub fn is_all(&self) -> bool {
        *self == Self::ALL
    }
}

/// Where a window lies in one partition of the backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WindowSpan {
    /// Original offset of the first record in the window (`None`: the window is empty).
    pub first: Option<i64>,
    /// Original offset of the last record in the window.
    pub last: Option<i64>,
    /// Records in the window.
    pub records: u64,
}

impl RestoreWindow {
    /// True when the window leaves nothing out (the plain restore).
    pub fn is_unbounded(&self) -> bool {
        *self == RestoreWindow::default()
    }

    /// The window as it applies to `tp`: a partition's own offset bound wins over its topic's.
    pub fn for_partition(&self, tp: &TopicPartition) -> PartitionWindow {
        let pick = |bounds: &[OffsetBound]| {
            let exact = bounds
                .iter()
                .find(|b| b.topic == tp.topic && b.partition == Some(tp.partition));
            exact
                .or_else(|| {
                    bounds
                        .iter()
                        .find(|b| b.topic == tp.topic && b.partition.is_none())
                })
                .map(|b| b.offset)
        };
        PartitionWindow {
            from_offset: pick(&self.from_offsets).unwrap_or(0).max(0),
            to_offset: pick(&self.to_offsets).unwrap_or(i64::MAX),
            from_time: self.from_time_ms.unwrap_or(i64::MIN),
            to_time: self.to_time_ms.unwrap_or(i64::MAX),
        }
    }

    /// One line for logs and the restore state: a resumed restore must use the same window.
    pub fn describe(&self) -> String {
        if self.is_unbounded() {
            return "everything".into();
        }
        let bounds = |b: &[OffsetBound]| {
            b.iter()
                .map(|b| match b.partition {
                    Some(p) => format!("{}:{p}={}", b.topic, b.offset),
                    None => format!("{}={}", b.topic, b.offset),
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut parts = Vec::new();
        if let Some(t) = self.from_time_ms {
            parts.push(format!("from time {}", format_time(t)));
        }
        if let Some(t) = self.to_time_ms {
            parts.push(format!("to time {}", format_time(t)));
        }
        if !self.from_offsets.is_empty() {
            parts.push(format!("from offsets {}", bounds(&self.from_offsets)));
        }
        if !self.to_offsets.is_empty() {
            parts.push(format!("to offsets {}", bounds(&self.to_offsets)));
        }
        parts.join(", ")
    }
}

/// A time as ISO-8601 in UTC with milliseconds, and the epoch milliseconds.
pub fn format_time(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => format!("{} ({ms})", t.format("%Y-%m-%dT%H:%M:%S%.3fZ")),
        None => ms.to_string(),
    }
}

/// Reads a time bound: epoch milliseconds (`1764580440000`) or ISO-8601 / RFC 3339 WITH a
/// zone (`2026-12-01T09:14:00Z`, `2026-12-01T10:14:00.250+01:00`).
pub fn parse_time(key: &str, value: &str) -> std::result::Result<i64, String> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v
            .parse::<i64>()
            .map_err(|_| format!("{key} '{v}' is too large for milliseconds since the epoch"));
    }
    match chrono::DateTime::parse_from_rfc3339(v) {
        Ok(t) => Ok(t.timestamp_millis()),
        Err(e) => Err(format!(
            "{key} '{v}' is neither milliseconds since the epoch nor an ISO-8601 time with a zone \
             ({e}); write for example 2026-12-01T09:14:00Z, 2026-12-01T10:14:00+01:00 or \
             1796116440000"
        )),
    }
}

/// Reads offset bounds `TOPIC=OFFSET` or `TOPIC:PARTITION=OFFSET`, separated by commas.
pub fn parse_offsets(key: &str, value: &str) -> std::result::Result<Vec<OffsetBound>, String> {
    let mut out: Vec<OffsetBound> = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let fix = format!(
            "{key} entry '{entry}' is not TOPIC=OFFSET or TOPIC:PARTITION=OFFSET with a \
             non-negative offset; write for example orders=100 or orders:0=100"
        );
        let Some((target, offset)) = entry.rsplit_once('=') else {
            return Err(fix);
        };
        let offset = offset.trim().parse::<i64>().map_err(|_| fix.clone())?;
        let (topic, partition) = match target.split_once(':') {
            Some((t, p)) => (
                t.trim(),
                Some(p.trim().parse::<i32>().map_err(|_| fix.clone())?),
            ),
            None => (target.trim(), None),
        };
        if topic.is_empty() || offset < 0 || partition.is_some_and(|p| p < 0) {
            return Err(fix);
        }
        if out
            .iter()
            .any(|b| b.topic == topic && b.partition == partition)
        {
            return Err(format!(
                "{key} names {} twice; keep one entry for it",
                match partition {
                    Some(p) => format!("{topic}:{p}"),
                    None => topic.to_string(),
                }
            ));
        }
        out.push(OffsetBound {
            topic: topic.to_string(),
            partition,
            offset,
        });
    }
    Ok(out)
}

/// Problems of a window against the restore's topic list, as (config key, message + fix).
pub fn check(w: &RestoreWindow, topics: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let (Some(f), Some(t)) = (w.from_time_ms, w.to_time_ms) {
        if f > t {
            out.push((
                "restore.time.from".to_string(),
                format!(
                    "restore.time.from {} is after restore.time.to {}: the window would be empty; \
                     swap them",
                    format_time(f),
                    format_time(t)
                ),
            ));
        }
    }
    for (key, bounds) in [
        ("restore.offset.from", &w.from_offsets),
        ("restore.offset.to", &w.to_offsets),
    ] {
        for b in bounds {
            if !topics.contains(&b.topic) {
                out.push((
                    key.to_string(),
                    format!(
                        "{key} names topic {:?}, which is not listed in topics: add it to topics \
                         or drop the bound",
                        b.topic
                    ),
                ));
            }
        }
    }
    for f in &w.from_offsets {
        for t in w.to_offsets.iter().filter(|t| t.topic == f.topic) {
            let same = t.partition == f.partition
                || (t.partition.is_none()
                    && !w
                        .to_offsets
                        .iter()
                        .any(|x| x.topic == f.topic && x.partition == f.partition))
                || (f.partition.is_none()
                    && !w
                        .from_offsets
                        .iter()
                        .any(|x| x.topic == t.topic && x.partition == t.partition));
            if same && f.offset > t.offset {
                out.push((
                    "restore.offset.from".to_string(),
                    format!(
                        "restore.offset.from {}={} is after restore.offset.to {}={} for the same \
                         partitions: the window would be empty; swap them",
                        label(f),
                        f.offset,
                        label(t),
                        t.offset
                    ),
                ));
            }
        }
    }
    out
}

fn label(b: &OffsetBound) -> String {
    match b.partition {
        Some(p) => format!("{}:{p}", b.topic),
        None => b.topic.clone(),
    }
}

/// Positions `reader` at the first record of the window (or at the end) and answers its offset.
/// With a time bound the time index finds it ([`PartitionReader::seek_time`]).
pub fn seek_start(reader: &mut PartitionReader, w: &PartitionWindow) -> Result<Option<i64>> {
    let found = if w.from_time == i64::MIN {
        reader.seek(w.from_offset)?;
        w.from_offset
    } else {
        match reader.seek_time(w.from_time, w.from_offset)? {
            Some(o) => o,
            None => return Ok(None),
        }
    };
    // The first record there may still be outside (a later timestamp than `to_time`): the
    // caller reads on, filtering each record.
    Ok(Some(found))
}

/// The next record of the window from the reader's position (`None` when none is left);
/// records outside it are skipped by their own offset and timestamp.
pub fn next_in_window(
    reader: &mut PartitionReader,
    w: &PartitionWindow,
) -> Result<Option<crate::record::Record>> {
    loop {
        let Some(r) = reader.next_record()? else {
            return Ok(None);
        };
        if w.past(r.offset) {
            return Ok(None);
        }
        if w.contains(r.offset, r.timestamp) {
            return Ok(Some(r));
        }
    }
}

/// Where the window lies in a partition: first and last offsets and the record count. Reads
/// from the window's start (found with the time index) to its end (`to_offset`, or the end of
/// the partition when only times bound it, since later records may carry older timestamps).
pub fn span(reader: &mut PartitionReader, w: &PartitionWindow) -> Result<WindowSpan> {
    let mut s = WindowSpan::default();
    if w.from_offset > w.to_offset || w.from_time > w.to_time {
        return Ok(s);
    }
    if seek_start(reader, w)?.is_none() {
        return Ok(s);
    }
    while let Some((o, ts)) = reader.next_offset_timestamp()? {
        if w.past(o) {
            break;
        }
        if w.contains(o, ts) {
            s.first.get_or_insert(o);
            s.last = Some(o);
            s.records += 1;
        }
    }
    Ok(s)
}

/// Fails when a saved restore state was made for another window.
pub(super) fn same_window(saved: &str, now: &str, state_dir: &str) -> Result<()> {
    if saved == now {
        return Ok(());
    }
    Err(Error::Config(format!(
        "the restore state in {} was made for the window [{saved}], this restore asks for \
         [{now}]: restore the same window to resume, or use a new restore.state.dir (CLI: \
         --state-dir) for another window",
        state_dir
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(t: &str, p: i32) -> TopicPartition {
        TopicPartition::new(t.to_string(), p)
    }

    #[test]
    fn bounds_are_inclusive_and_unset_bounds_open() {
        let w = PartitionWindow {
            from_offset: 10,
            to_offset: 20,
            from_time: 1000,
            to_time: 2000,
        };
        assert!(w.contains(10, 1000) && w.contains(20, 2000));
        assert!(!w.contains(9, 1500) && !w.contains(21, 1500));
        assert!(!w.contains(15, 999) && !w.contains(15, 2001));
        assert!(PartitionWindow::ALL.contains(0, i64::MIN) && PartitionWindow::ALL.is_all());
        assert!(RestoreWindow::default().for_partition(&tp("a", 0)).is_all());
    }

    #[test]
    fn a_partition_bound_wins_over_its_topic_bound() {
        let w = RestoreWindow {
            from_offsets: parse_offsets("k", "a=5,a:1=7,b:0=3").unwrap(),
            to_offsets: parse_offsets("k", "a:0=50").unwrap(),
            ..Default::default()
        };
        assert_eq!(w.for_partition(&tp("a", 0)).from_offset, 5);
        assert_eq!(w.for_partition(&tp("a", 0)).to_offset, 50);
        assert_eq!(w.for_partition(&tp("a", 1)).from_offset, 7);
        assert_eq!(w.for_partition(&tp("a", 1)).to_offset, i64::MAX);
        assert_eq!(w.for_partition(&tp("b", 1)).from_offset, 0);
        assert_eq!(w.for_partition(&tp("b", 0)).from_offset, 3);
    }

    #[test]
    fn times_parse_as_epoch_ms_or_iso_8601_with_a_zone() {
        assert_eq!(parse_time("k", "1796116440000"), Ok(1_796_116_440_000));
        assert_eq!(
            parse_time("k", "2026-12-01T09:14:00Z"),
            Ok(1_796_116_440_000)
        );
        assert_eq!(
            parse_time("k", "2026-12-01T10:14:00.250+01:00"),
            Ok(1_796_116_440_250)
        );
        for bad in [
            "2026-12-01T09:14:00",
            "yesterday",
            "",
            "-5",
            "2026-13-01T00:00:00Z",
        ] {
            let e = parse_time("restore.time.to", bad).unwrap_err();
            assert!(
                e.contains("restore.time.to") && e.contains("2026-12-01T09:14:00Z"),
                "{e}"
            );
        }
        assert_eq!(
            format_time(1_796_116_440_250),
            "2026-12-01T09:14:00.250Z (1796116440250)"
        );
    }

    #[test]
    fn offset_bounds_parse_and_reject_bad_entries() {
        let b = parse_offsets("k", " orders:0=100 , orders=7,").unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].partition, b[0].offset), (Some(0), 100));
        assert_eq!((b[1].partition, b[1].offset), (None, 7));
        for bad in [
            "orders",
            "orders=-1",
            "orders:x=1",
            "=5",
            "orders:-1=3",
            "o=1x",
        ] {
            let e = parse_offsets("restore.offset.from", bad).unwrap_err();
            assert!(e.contains("orders:0=100"), "{bad}: {e}");
        }
        assert!(parse_offsets("k", "a=1,a=2").unwrap_err().contains("twice"));
    }

    #[test]
    fn empty_windows_and_unknown_topics_are_refused() {
        let topics = vec!["a".to_string()];
        let w = RestoreWindow {
            from_time_ms: Some(2),
            to_time_ms: Some(1),
            from_offsets: parse_offsets("k", "a=10,x=1").unwrap(),
            to_offsets: parse_offsets("k", "a=5").unwrap(),
        };
        let p = check(&w, &topics);
        assert!(
            p.iter()
                .any(|(k, m)| k == "restore.time.from" && m.contains("swap")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|(k, m)| k == "restore.offset.from" && m.contains("\"x\"")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|(k, m)| k == "restore.offset.from" && m.contains("a=10")),
            "{p:?}"
        );
        let ok = RestoreWindow {
            from_offsets: parse_offsets("k", "a=10").unwrap(),
            to_offsets: parse_offsets("k", "a:0=5,a=20").unwrap(),
            ..Default::default()
        };
        // a:0 has its own upper bound (5), below the topic's lower bound (10): empty there.
        let p = check(&ok, &topics);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].1.contains("a=10") && p[0].1.contains("a:0=5"), "{p:?}");
    }
}
