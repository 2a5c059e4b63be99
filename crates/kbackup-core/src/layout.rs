//! Where every file of a backup lives (docs/format.md, "Directory layout").
//!
//! All path building goes through here so that names are validated in one place: topic names
//! are checked against Kafka's rules before they become a path component, partition and segment
//! names are parsed strictly, and free text (group ids) never becomes a path.

use crate::error::{Error, Result};
use crate::perms::Perms;
use crate::record::TopicPartition;
use std::path::{Path, PathBuf};

/// Name of the root marker file that says "this directory is a kbackup backup".
pub const ROOT_MARKER: &str = "kbackup.json";
/// Directory under the root that holds one directory per topic.
pub const TOPICS_DIR: &str = "topics";
/// Directory under the root reserved for restore progress.
pub const RESTORE_STATE_DIR: &str = "restore-state";
/// Topic manifest file name inside a topic directory.
pub const TOPIC_MANIFEST: &str = "topic.json";
/// Extension of segment files.
pub const SEGMENT_EXT: &str = "segment";
/// Extension of offset index files.
pub const OFFSET_INDEX_EXT: &str = "offset-index";
/// Extension of time index files.
pub const TIME_INDEX_EXT: &str = "time-index";
/// File name of a partition's consumer-group offsets log.
pub const GROUP_OFFSETS_LOG: &str = "group-offsets.log";
/// Empty file in a partition directory that the writer of the partition holds an exclusive
/// advisory lock on (`flock`), so two writers never append to the same segment.
pub const WRITER_LOCK: &str = "writer.lock";

/// Checks a topic name against Kafka's rules: 1..=249 chars of `[a-zA-Z0-9._-]`, not `.`/`..`.
pub fn validate_topic_name(topic: &str) -> Result<()> {
    let ok_chars = topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if topic.is_empty() || topic.len() > 249 || !ok_chars || topic == "." || topic == ".." {
        return Err(Error::Config(format!(
            "{topic:?} is not a valid Kafka topic name: use 1 to 249 characters of \
             a-z, A-Z, 0-9, '.', '_' and '-', and not \".\" or \"..\""
        )));
    }
    Ok(())
}

/// Checks a partition number (>= 0).
pub fn validate_partition(partition: i32) -> Result<()> {
    if partition < 0 {
        return Err(Error::Config(format!(
            "partition {partition} is negative; Kafka partitions are numbered from 0"
        )));
    }
    Ok(())
}

/// `DIR/kbackup.json`.
pub fn root_marker(root: &Path) -> PathBuf {
    root.join(ROOT_MARKER)
}

/// `DIR/topics`.
pub fn topics_dir(root: &Path) -> PathBuf {
    root.join(TOPICS_DIR)
}

/// `DIR/restore-state`.
pub fn restore_state_dir(root: &Path) -> PathBuf {
    root.join(RESTORE_STATE_DIR)
}

/// `DIR/topics/<topic>`; the topic name is validated first.
pub fn topic_dir(root: &Path, topic: &str) -> Result<PathBuf> {
    validate_topic_name(topic)?;
    Ok(topics_dir(root).join(topic))
}

/// `DIR/topics/<topic>/topic.json`.
pub fn topic_manifest(root: &Path, topic: &str) -> Result<PathBuf> {
    Ok(topic_dir(root, topic)?.join(TOPIC_MANIFEST))
}

/// `DIR/topics/<topic>/<partition>`; topic and partition are validated first.
pub fn partition_dir(root: &Path, tp: &TopicPartition) -> Result<PathBuf> {
    validate_partition(tp.partition)?;
    Ok(topic_dir(root, &tp.topic)?.join(tp.partition.to_string()))
}

/// `DIR/topics/<topic>/<partition>/group-offsets.log`.
///
/// Callers pass a `TopicPartition` that came from the backup or was validated with
/// [`validate_topic_name`]; the topic is not re-validated here.
pub fn group_offsets_log(root: &Path, tp: &TopicPartition) -> PathBuf {
    topics_dir(root)
        .join(&tp.topic)
        .join(tp.partition.to_string())
        .join(GROUP_OFFSETS_LOG)
}

/// `group-offsets.{seq:020}.log`: one chunk of a partition's group-offsets log in an object
/// store, where objects cannot be appended to. Each chunk is a complete log (header and
/// entries); the partition's log is `group-offsets.log` (if any) followed by its chunks in
/// sequence order, and each chunk is created only if absent, so two writers never overwrite
/// one.
pub fn group_offsets_chunk_name(seq: u64) -> String {
    format!("group-offsets.{seq:020}.log")
}

/// Where a file of a partition directory goes in the order of its group-offsets log: `Some(0)`
/// for `group-offsets.log`, `Some(seq + 1)` for chunk `seq`, `None` for anything else.
pub fn offsets_log_part(name: &str) -> Option<u64> {
    if name == GROUP_OFFSETS_LOG {
        return Some(0);
    }
    let seq = parse_base(name.strip_prefix("group-offsets.")?.strip_suffix(".log")?)?;
    Some(seq as u64 + 1)
}

/// `{base_offset:020}.segment`.
pub fn segment_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.{SEGMENT_EXT}")
}

/// Path of the segment with `base_offset` in a partition directory.
pub fn segment_path(partition_dir: &Path, base_offset: i64) -> PathBuf {
    partition_dir.join(segment_file_name(base_offset))
}

/// The offset index beside a segment (`{base:020}.offset-index`).
pub fn offset_index_path(segment_path: &Path) -> PathBuf {
    segment_path.with_extension(OFFSET_INDEX_EXT)
}

/// The time index beside a segment (`{base:020}.time-index`).
pub fn time_index_path(segment_path: &Path) -> PathBuf {
    segment_path.with_extension(TIME_INDEX_EXT)
}

/// Parses exactly 20 ASCII digits; `None` for anything else or a value above `i64::MAX`.
fn parse_base(digits: &str) -> Option<i64> {
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<i64>().ok()
}

/// Base offset of a file named `{base:020}.segment`; `None` for any other name.
pub fn parse_segment_file_name(name: &str) -> Option<i64> {
    parse_base(name.strip_suffix(".segment")?)
}

/// Partition number of a directory named by a canonical decimal (`0`, `17`; not `007`, `-1`).
pub fn parse_partition_dir_name(name: &str) -> Option<i32> {
    if name.is_empty()
        || !name.bytes().all(|b| b.is_ascii_digit())
        || (name.len() > 1 && name.starts_with('0'))
    {
        return None;
    }
    name.parse::<i32>().ok()
}

/// The segments of a partition directory, sorted by base offset, as (base offset, path).
/// Files that are not segments (indexes, the group-offsets log, temp files) are ignored.
pub fn list_segments(partition_dir: &Path) -> Result<Vec<(i64, PathBuf)>> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(partition_dir)
        .map_err(|e| Error::io(e, "list partition directory", partition_dir))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(e, "list partition directory", partition_dir))?;
        if let Some(base) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            out.push((base, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// What a key of a backup (a path relative to its root, `/`-separated) is in the format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// `topics/<topic>/topic.json`.
    Manifest(String),
    /// `topics/<topic>/<partition>/<base>.segment`.
    Segment {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Base offset from the name.
        base: i64,
    },
    /// An offset or time index, with the key of its segment.
    Index(String),
    /// `topics/<topic>/<partition>/group-offsets.log`, or one of its chunks
    /// ([`group_offsets_chunk_name`]).
    OffsetsLog {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
    },
    /// A writer's or log's lock file.
    Lock,
    /// Under `restore-state/`.
    RestoreState,
    /// Not part of the format.
    Other,
}

/// Classifies a key of a backup by the layout above (the root marker is [`KeyKind::Other`]:
/// callers look for it by name).
pub fn classify_key(key: &str) -> KeyKind {
    if key.starts_with(&format!("{RESTORE_STATE_DIR}/")) {
        return KeyKind::RestoreState;
    }
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        [t, topic, name] if *t == TOPICS_DIR && *name == TOPIC_MANIFEST => {
            if validate_topic_name(topic).is_ok() {
                KeyKind::Manifest(topic.to_string())
            } else {
                KeyKind::Other
            }
        }
        [t, topic, p, name] if *t == TOPICS_DIR => {
            let partition = match parse_partition_dir_name(p) {
                Some(p) if validate_topic_name(topic).is_ok() => p,
                _ => return KeyKind::Other,
            };
            if offsets_log_part(name).is_some() {
                return KeyKind::OffsetsLog {
                    topic: topic.to_string(),
                    partition,
                };
            }
            if *name == WRITER_LOCK || name.ends_with(".lock") {
                return KeyKind::Lock;
            }
            if let Some(base) = parse_segment_file_name(name) {
                return KeyKind::Segment {
                    topic: topic.to_string(),
                    partition,
                    base,
                };
            }
            for ext in [OFFSET_INDEX_EXT, TIME_INDEX_EXT] {
                if let Some(stem) = name.strip_suffix(&format!(".{ext}")) {
                    let seg = format!("{stem}.{SEGMENT_EXT}");
                    if parse_segment_file_name(&seg).is_some() {
                        return KeyKind::Index(format!("{t}/{topic}/{p}/{seg}"));
                    }
                }
            }
            KeyKind::Other
        }
        _ => KeyKind::Other,
    }
}

/// The key of a partition's file `name` (`topics/<topic>/<partition>/<name>`).
pub fn partition_key(tp: &TopicPartition, name: &str) -> String {
    format!("{TOPICS_DIR}/{}/{}/{name}", tp.topic, tp.partition)
}

/// The key of a topic's manifest (`topics/<topic>/topic.json`).
pub fn topic_manifest_key(topic: &str) -> String {
    format!("{TOPICS_DIR}/{topic}/{TOPIC_MANIFEST}")
}

// ---------------------------------------------------------------------------------------------
// Listing a backup: the one walk of its directories (reader, restore, prune and the CLI use it).

/// The sub-directories of `dir` as (name, path), sorted by name; a missing `dir` is empty.
fn sub_dirs(dir: &Path, what: &'static str) -> Result<Vec<(String, PathBuf)>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(e, what, dir)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(e, what, dir))?;
        let path = entry.path();
        if let (Some(name), true) = (entry.file_name().to_str(), path.is_dir()) {
            out.push((name.to_string(), path));
        }
    }
    out.sort();
    Ok(out)
}

/// The backed-up topics, sorted: directories under `topics/` named like a topic. Anything else
/// there is not part of the format (`verify` reports it).
pub fn list_topics(root: &Path) -> Result<Vec<String>> {
    Ok(sub_dirs(&topics_dir(root), "list topics of backup")?
        .into_iter()
        .filter(|(name, _)| validate_topic_name(name).is_ok())
        .map(|(name, _)| name)
        .collect())
}

/// The backed-up partitions of `topic`, sorted: its directories named by a canonical number.
pub fn list_partitions(root: &Path, topic: &str) -> Result<Vec<i32>> {
    let mut out: Vec<i32> = sub_dirs(&topic_dir(root, topic)?, "list partitions of")?
        .into_iter()
        .filter_map(|(name, _)| parse_partition_dir_name(&name))
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// Every backed-up partition as (topic, partition, directory), sorted.
pub fn list_partition_dirs(root: &Path) -> Result<Vec<(String, i32, PathBuf)>> {
    let mut out = Vec::new();
    for topic in list_topics(root)? {
        for p in list_partitions(root, &topic)? {
            let dir = partition_dir(root, &TopicPartition::new(topic.clone(), p))?;
            out.push((topic.clone(), p, dir));
        }
    }
    Ok(out)
}

/// The restore state directories kept in the backup (`restore-state/*/`), sorted.
pub fn list_restore_states(root: &Path) -> Result<Vec<PathBuf>> {
    Ok(
        sub_dirs(&restore_state_dir(root), "list restore states in")?
            .into_iter()
            .map(|(_, path)| path)
            .collect(),
    )
}

/// Fsyncs a directory so that entries created or renamed in it survive a crash.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let f = std::fs::File::open(dir).map_err(|e| Error::io(e, "open directory for fsync", dir))?;
    f.sync_all()
        .map_err(|e| Error::io(e, "fsync directory", dir))
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync the directory. A new
/// file gets `perms`; a replaced one keeps its mode ([`Perms::for_replacement`]).
pub fn write_atomic(path: &Path, bytes: &[u8], perms: Perms) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    // Unique per writer: tasks in one JVM (and other processes) may write the same manifest
    // at once; each renames its own complete file, and the last rename wins.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp-{}-{n}", std::process::id()));
    let tmp = dir.join(tmp_name);
    {
        let mut f = perms
            .for_replacement(path)
            .create_new(&tmp)
            .map_err(|e| Error::io(e, "create temporary file", &tmp))?;
        f.write_all(bytes)
            .map_err(|e| Error::io(e, "write temporary file", &tmp))?;
        f.sync_all()
            .map_err(|e| Error::io(e, "fsync temporary file", &tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(e, "rename temporary file onto", path))?;
    fsync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_validated_before_becoming_paths() {
        for ok in ["orders", "a.b_c-D9", "x"] {
            validate_topic_name(ok).unwrap();
        }
        let long = "a".repeat(250);
        for bad in ["", ".", "..", "a/b", "../etc", "a b", "ü", long.as_str()] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
            assert!(topic_dir(Path::new("/b"), bad).is_err());
        }
        assert!(partition_dir(Path::new("/b"), &TopicPartition::new("t", -1)).is_err());
        assert_eq!(
            partition_dir(Path::new("/b"), &TopicPartition::new("t", 3)).unwrap(),
            PathBuf::from("/b/topics/t/3")
        );
        assert_eq!(
            group_offsets_log(Path::new("/b"), &TopicPartition::new("t", 3)),
            PathBuf::from("/b/topics/t/3/group-offsets.log")
        );
    }

    #[test]
    fn group_offsets_chunks_are_offsets_logs_ordered_after_the_single_log() {
        assert_eq!(
            group_offsets_chunk_name(7),
            "group-offsets.00000000000000000007.log"
        );
        assert_eq!(offsets_log_part(GROUP_OFFSETS_LOG), Some(0));
        assert_eq!(offsets_log_part(&group_offsets_chunk_name(0)), Some(1));
        assert_eq!(offsets_log_part(&group_offsets_chunk_name(7)), Some(8));
        for other in [
            "group-offsets.7.log",
            "group-offsets.lock",
            "group-offsets.log.x",
        ] {
            assert_eq!(offsets_log_part(other), None, "{other}");
        }
        assert_eq!(
            classify_key(&format!("topics/t/3/{}", group_offsets_chunk_name(2))),
            KeyKind::OffsetsLog {
                topic: "t".into(),
                partition: 3
            }
        );
    }

    #[test]
    fn segment_names_parse_strictly() {
        assert_eq!(segment_file_name(42), "00000000000000000042.segment");
        assert_eq!(
            parse_segment_file_name("00000000000000000042.segment"),
            Some(42)
        );
        assert_eq!(
            parse_segment_file_name(&segment_file_name(i64::MAX)),
            Some(i64::MAX)
        );
        for bad in [
            "42.segment",
            "0000000000000000042.segment",
            "000000000000000000042.segment",
            "0000000000000000004a.segment",
            "00000000000000000042.segment.tmp",
            "00000000000000000042.offset-index",
            "+0000000000000000042.segment",
            "99999999999999999999.segment",
        ] {
            assert_eq!(parse_segment_file_name(bad), None, "{bad}");
        }
        let seg = segment_path(Path::new("/p"), 7);
        assert_eq!(
            offset_index_path(&seg),
            PathBuf::from("/p/00000000000000000007.offset-index")
        );
        assert_eq!(
            time_index_path(&seg),
            PathBuf::from("/p/00000000000000000007.time-index")
        );
    }

    #[test]
    fn partition_dir_names_parse_strictly() {
        assert_eq!(parse_partition_dir_name("0"), Some(0));
        assert_eq!(parse_partition_dir_name("17"), Some(17));
        for bad in ["", "-1", "01", "1a", "99999999999"] {
            assert_eq!(parse_partition_dir_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn keys_are_classified_by_the_layout() {
        let k = |key| match classify_key(key) {
            KeyKind::Manifest(t) => format!("manifest {t}"),
            KeyKind::Segment {
                topic,
                partition,
                base,
            } => format!("segment {topic}-{partition}@{base}"),
            KeyKind::Index(s) => format!("index of {s}"),
            KeyKind::OffsetsLog { topic, partition } => format!("log {topic}-{partition}"),
            KeyKind::Lock => "lock".into(),
            KeyKind::RestoreState => "restore".into(),
            KeyKind::Other => "other".into(),
        };
        assert_eq!(k("topics/orders/topic.json"), "manifest orders");
        assert_eq!(
            k("topics/orders/0/00000000000000000042.segment"),
            "segment orders-0@42"
        );
        assert_eq!(
            k("topics/orders/3/00000000000000000042.time-index"),
            "index of topics/orders/3/00000000000000000042.segment"
        );
        assert_eq!(k("topics/orders/3/group-offsets.log"), "log orders-3");
        assert_eq!(k("topics/orders/3/writer.lock"), "lock");
        assert_eq!(k("restore-state/abc/state.json"), "restore");
        for other in [
            "topics/orders/007/00000000000000000000.segment",
            "topics/orders/0/42.segment",
            "topics/or ders/0/00000000000000000000.segment",
            "notes.txt",
            "topics/orders/0/x/y",
        ] {
            assert_eq!(k(other), "other", "{other}");
        }
        let tp = TopicPartition::new("orders", 3);
        assert_eq!(
            partition_key(&tp, GROUP_OFFSETS_LOG),
            "topics/orders/3/group-offsets.log"
        );
        assert_eq!(topic_manifest_key("orders"), "topics/orders/topic.json");
    }
}
