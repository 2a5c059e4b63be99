//! The source connector's raw properties, turned into a [`SourceConfig`] in one place.
//!
//! The Java connector forwards the properties exactly as the user wrote them (strings keyed by
//! config key); parsing them (`topics`, `topics.rename` and its syntax, numbers, booleans) and
//! every restore rule live here and in [`restore::validate`], so no rule is written twice. The
//! CLI's `--rename` goes through the same [`parse_renames`].

use crate::error::{Error, Result};
use crate::layout;
use crate::restore::window::{self, RestoreWindow};
use crate::restore::{self, SourceConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// Connector name when the properties carry none (as the Java shim did).
const DEFAULT_NAME: &str = "kbackup-restore";
/// Set by the connector in each task config: the task's index, for the task id.
const TASK_INDEX_KEY: &str = "kbackup.task.index";
const BATCH_SIZE_MAX: usize = 1_000_000;

/// Why a rename list does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenameError {
    /// This entry is not `from:to` (one colon, a name on each side).
    NotFromTo(String),
    /// This original topic has two entries.
    Twice(String),
}

impl std::fmt::Display for RenameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RenameError::NotFromTo(entry) => write!(
                f,
                "topics.rename entry '{entry}' is not from:to; write it as \
                 source-topic:target-topic, for example orders:orders-restored"
            ),
            RenameError::Twice(topic) => write!(
                f,
                "topics.rename renames topic '{topic}' twice; keep one entry for it"
            ),
        }
    }
}

/// Parses `topics.rename` (`from:to,from:to`) into original -> target topic.
///
/// Empty entries are skipped and names trimmed. Topic-name rules are checked by
/// [`restore::validate`].
pub fn parse_renames(value: &str) -> std::result::Result<BTreeMap<String, String>, RenameError> {
    let mut out = BTreeMap::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (from, to) = match entry.split_once(':') {
            Some((f, t)) if !f.trim().is_empty() && !t.trim().is_empty() && !t.contains(':') => {
                (f.trim(), t.trim())
            }
            _ => return Err(RenameError::NotFromTo(entry.to_string())),
        };
        if out.insert(from.to_string(), to.to_string()).is_some() {
            return Err(RenameError::Twice(from.to_string()));
        }
    }
    Ok(out)
}

/// The connector keys of the restore window (the CLI's --from-time, --to-time, --from-offset,
/// --to-offset fill the same keys and go through [`parse_window`]).
pub const WINDOW_KEYS: [&str; 4] = [
    "restore.time.from",
    "restore.time.to",
    "restore.offset.from",
    "restore.offset.to",
];

/// Reads the restore window from raw properties: the one parser for the connector and the
/// CLI. Answers the window and (key, message + fix) for each value that does not parse.
pub fn parse_window(props: &BTreeMap<String, String>) -> (RestoreWindow, Vec<(String, String)>) {
    let mut problems = Vec::new();
    let get = |key: &str| props.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());
    let mut time = |key: &str| {
        get(key).and_then(|v| match window::parse_time(key, v) {
            Ok(t) => Some(t),
            Err(e) => {
                problems.push((key.to_string(), e));
                None
            }
        })
    };
    let from_time_ms = time("restore.time.from");
    let to_time_ms = time("restore.time.to");
    let mut offsets = |key: &str| match window::parse_offsets(key, get(key).unwrap_or("")) {
        Ok(b) => b,
        Err(e) => {
            problems.push((key.to_string(), e));
            Vec::new()
        }
    };
    let from_offsets = offsets("restore.offset.from");
    let to_offsets = offsets("restore.offset.to");
    let w = RestoreWindow {
        from_time_ms,
        to_time_ms,
        from_offsets,
        to_offsets,
    };
    (w, problems)
}

/// A [`SourceConfig`] read from raw properties, with what could not be read.
struct Parsed {
    cfg: SourceConfig,
    /// (key, message + fix) for values that could not be read.
    problems: Vec<(String, String)>,
    /// Keys whose value could not be read: the engine's checks of them would only repeat it.
    unreadable: BTreeSet<String>,
}

fn parse(props: &BTreeMap<String, String>) -> Parsed {
    let mut problems = Vec::new();
    let mut unreadable = BTreeSet::new();
    let mut bad = |key: &str, msg: String| {
        unreadable.insert(key.to_string());
        problems.push((key.to_string(), msg));
    };
    let get = |key: &str| props.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());

    let topics: Vec<String> = get("topics")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect();
    if topics.is_empty() {
        bad(
            "topics",
            "topics is required: list the backed-up topics to restore, separated by commas \
             (`kbackup inspect DIR` shows them)"
                .into(),
        );
    }
    let topics_rename = match parse_renames(get("topics.rename").unwrap_or("")) {
        Ok(r) => r,
        Err(e) => {
            bad("topics.rename", e.to_string());
            BTreeMap::new()
        }
    };
    let batch_size = match get("batch.size").map(str::parse::<usize>) {
        None => 1000,
        Some(Ok(n)) if (1..=BATCH_SIZE_MAX).contains(&n) => n,
        Some(_) => {
            bad(
                "batch.size",
                format!(
                    "batch.size '{}' is not a whole number from 1 to {BATCH_SIZE_MAX} \
                     (default 1000)",
                    props["batch.size"]
                ),
            );
            1000
        }
    };
    let mut flag = |key: &str, default: bool| match get(key).map(str::to_ascii_lowercase) {
        None => default,
        Some(v) if v == "true" => true,
        Some(v) if v == "false" => false,
        Some(_) => {
            bad(key, format!("{key} '{}' is not true or false", props[key]));
            default
        }
    };
    let allow_non_empty_topics = flag("restore.allow.non.empty.topics", false);
    let restore_group_offsets = flag("restore.group.offsets", true);
    let (window, window_problems) = parse_window(props);
    for (key, msg) in window_problems {
        bad(&key, msg);
    }

    let mut cluster = BTreeMap::new();
    match get("cluster.bootstrap.servers") {
        Some(s) => {
            cluster.insert("bootstrap.servers".to_string(), s.to_string());
        }
        None => bad(
            "cluster.bootstrap.servers",
            "cluster.bootstrap.servers is required: set it to the bootstrap servers of the \
             cluster restored into (kbackup creates topics and commits group offsets there)"
                .into(),
        ),
    }

    // One location rule (storage::check_location): a directory, file:// or an object-store URL
    // (kept as given: SourceConfig::source_url); anything else that looks like a URL is refused.
    let source_dir = match get("source.dir") {
        None => PathBuf::new(),
        Some(loc) => match crate::storage::local_dir(loc) {
            Ok(dir) => dir,
            Err(_) if crate::storage::check_location(loc).is_ok() => PathBuf::from(loc),
            Err(e) => {
                bad("source.dir", format!("source.dir: {e}"));
                PathBuf::new()
            }
        },
    };
    let storage = crate::storage::StorageSettings::from_props(props);
    if let Err(e) = storage.options() {
        let key = storage
            .0
            .keys()
            .find(|k| e.to_string().contains(k.as_str()))
            .cloned()
            .unwrap_or_else(|| "storage.options".into());
        bad(&key, e.to_string().replace("invalid configuration: ", ""));
    }
    let name = get("name").unwrap_or(DEFAULT_NAME).to_string();
    let task_id = match get(TASK_INDEX_KEY) {
        Some(i) => format!("{name}-{i}"),
        None => format!("{name}-connector"),
    };
    let cfg = SourceConfig {
        connector_name: name,
        task_id,
        source_dir,
        topics,
        topics_rename,
        batch_size,
        cluster,
        restore_state_dir: get("restore.state.dir").map(PathBuf::from),
        allow_non_empty_topics,
        restore_group_offsets,
        window,
        storage,
    };
    Parsed {
        cfg,
        problems,
        unreadable,
    }
}

/// Every problem of the connector's raw properties, as (config key, message + fix): what
/// cannot be read, then [`restore::validate`]'s checks of the rest. Touches no Kafka.
pub fn validate(props: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let Parsed {
        cfg,
        mut problems,
        unreadable,
    } = parse(props);
    for t in &cfg.topics {
        if !cfg.topics_rename.contains_key(t) {
            if let Err(e) = layout::validate_topic_name(t) {
                problems.push(("topics".into(), format!("topics lists {e}")));
            }
        }
    }
    problems.extend(
        restore::validate(&cfg)
            .into_iter()
            .filter(|(key, _)| !unreadable.contains(key)),
    );
    problems
}

/// The restore config of raw properties; fails naming every problem [`validate`] finds.
pub fn source_config(props: &BTreeMap<String, String>) -> Result<SourceConfig> {
    let problems = validate(props);
    if problems.is_empty() {
        return Ok(parse(props).cfg);
    }
    let list: Vec<String> = problems
        .iter()
        .map(|(key, msg)| format!("{key}: {msg}"))
        .collect();
    Err(Error::Config(format!(
        "the restore config has {} problem(s): {}",
        list.len(),
        list.join("; ")
    )))
}

/// Reads the raw properties JSON (an object of strings) the Java connector forwards.
pub fn props_from_json(json: &[u8]) -> Result<BTreeMap<String, String>> {
    let value: serde_json::Value = serde_json::from_slice(json).map_err(|e| {
        Error::Config(format!(
            "the connector properties JSON is malformed ({e}); the Java shim and the native \
             library come from different kbackup versions: use the jar as shipped"
        ))
    })?;
    let obj = value.as_object().ok_or_else(|| {
        Error::Config(
            "the connector properties JSON is not an object; the Java shim and the native \
             library come from different kbackup versions: use the jar as shipped"
                .into(),
        )
    })?;
    // Connect hands null values through for keys set to null; they count as unset.
    Ok(obj
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn backup_with(topics: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        crate::manifest::init_root(dir.path(), crate::perms::Perms::default()).unwrap();
        for t in topics {
            std::fs::create_dir_all(layout::topic_dir(dir.path(), t).unwrap()).unwrap();
        }
        dir
    }

    fn keys_with<'a>(p: &'a [(String, String)], key: &str, text: &str) -> Vec<&'a str> {
        p.iter()
            .filter(|(k, m)| k == key && m.contains(text))
            .map(|(_, m)| m.as_str())
            .collect()
    }

    #[test]
    fn renames_parse_trimmed_and_skip_empty_entries() {
        assert!(parse_renames("").unwrap().is_empty());
        let r = parse_renames(" a:a2 , b : b.restored ,").unwrap();
        assert_eq!(r.get("a").map(String::as_str), Some("a2"));
        assert_eq!(r.get("b").map(String::as_str), Some("b.restored"));
    }

    #[test]
    fn malformed_renames_name_the_entry_and_the_fix() {
        for bad in ["a", "a:", ":b", "a:b:c", " : "] {
            let e = parse_renames(bad).unwrap_err().to_string();
            assert!(
                e.contains("topics.rename") && e.contains("from:to"),
                "{bad}: {e}"
            );
        }
        let e = parse_renames("a:x,a:y").unwrap_err().to_string();
        assert!(e.contains("'a' twice"), "{e}");
    }

    #[test]
    fn missing_required_keys_name_the_fix() {
        let p = validate(&BTreeMap::new());
        assert_eq!(
            keys_with(&p, "source.dir", "source.dir is required").len(),
            1,
            "{p:?}"
        );
        assert_eq!(keys_with(&p, "topics", "kbackup inspect").len(), 1, "{p:?}");
        assert_eq!(keys_with(&p, "topics", "").len(), 1, "{p:?}");
        assert_eq!(
            keys_with(&p, "cluster.bootstrap.servers", "restored into").len(),
            1,
            "{p:?}"
        );
        assert_eq!(
            keys_with(&p, "cluster.bootstrap.servers", "").len(),
            1,
            "{p:?}"
        );
    }

    #[test]
    fn rename_syntax_problem_is_reported_once_under_its_key() {
        let p = validate(&props(&[("topics", "a"), ("topics.rename", "a")]));
        assert_eq!(keys_with(&p, "topics.rename", "").len(), 1, "{p:?}");
        assert_eq!(
            keys_with(&p, "topics.rename", "'a' is not from:to").len(),
            1,
            "{p:?}"
        );
    }

    #[test]
    fn rename_collisions_unlisted_renames_and_bad_targets_are_reported() {
        let p = validate(&props(&[
            ("topics", "a,b"),
            ("topics.rename", "a:b,c:d,b:bad name"),
        ]));
        assert!(
            !keys_with(&p, "topics.rename", "\"c\", which is not listed").is_empty(),
            "{p:?}"
        );
        assert!(
            !keys_with(&p, "topics.rename", "bad name").is_empty(),
            "{p:?}"
        );
        let p = validate(&props(&[("topics", "a,b"), ("topics.rename", "a:b")]));
        assert!(
            !keys_with(&p, "topics.rename", "both be restored into \"b\"").is_empty(),
            "{p:?}"
        );
    }

    #[test]
    fn invalid_listed_topic_names_are_reported_under_topics() {
        let p = validate(&props(&[("topics", "ok,bad/name")]));
        assert_eq!(keys_with(&p, "topics", "bad/name").len(), 1, "{p:?}");
    }

    #[test]
    fn numbers_and_flags_are_checked() {
        let p = validate(&props(&[
            ("batch.size", "0"),
            ("restore.group.offsets", "yes"),
        ]));
        assert_eq!(keys_with(&p, "batch.size", "'0'").len(), 1, "{p:?}");
        assert_eq!(
            keys_with(&p, "restore.group.offsets", "'yes'").len(),
            1,
            "{p:?}"
        );
    }

    #[test]
    fn a_valid_config_has_no_problems_and_keeps_every_value() {
        let dir = backup_with(&["a", "b"]);
        let raw = props(&[
            ("name", "r1"),
            ("source.dir", dir.path().to_str().unwrap()),
            ("topics", " a , b "),
            ("topics.rename", "a:a2"),
            ("cluster.bootstrap.servers", "localhost:9092"),
            ("cluster.client.id", "x"),
            ("batch.size", "7"),
            ("restore.allow.non.empty.topics", "TRUE"),
            ("restore.group.offsets", "false"),
            ("kbackup.task.index", "2"),
        ]);
        assert_eq!(validate(&raw), Vec::<(String, String)>::new());
        let cfg = source_config(&raw).unwrap();
        assert_eq!(cfg.connector_name, "r1");
        assert_eq!(cfg.task_id, "r1-2");
        assert_eq!(cfg.topics, ["a", "b"]);
        assert_eq!(cfg.target_topic("a"), "a2");
        assert_eq!(cfg.batch_size, 7);
        assert_eq!(cfg.cluster.len(), 1);
        assert_eq!(cfg.restore_state_dir, None);
        assert!(cfg.allow_non_empty_topics && !cfg.restore_group_offsets);
    }

    #[test]
    fn window_keys_are_parsed_and_their_problems_named_under_each_key() {
        let dir = backup_with(&["a"]);
        let raw = props(&[
            ("source.dir", dir.path().to_str().unwrap()),
            ("topics", "a"),
            ("cluster.bootstrap.servers", "localhost:9092"),
            ("restore.time.from", "2026-12-01T10:00:00+01:00"),
            ("restore.time.to", "1796116440000"),
            ("restore.offset.from", "a:0=5"),
            ("restore.offset.to", "a=50"),
        ]);
        assert_eq!(validate(&raw), Vec::<(String, String)>::new());
        let w = source_config(&raw).unwrap().window;
        assert_eq!(w.from_time_ms, Some(1_796_115_600_000));
        assert_eq!(w.to_time_ms, Some(1_796_116_440_000));
        assert_eq!(w.from_offsets[0].partition, Some(0));
        assert_eq!(w.to_offsets[0].offset, 50);
        let p = validate(&props(&[
            ("topics", "a"),
            ("restore.time.from", "09:14"),
            ("restore.time.to", "2026-12-01T09:14:00"),
            ("restore.offset.from", "a:x=1"),
            ("restore.offset.to", "b=5"),
        ]));
        for key in WINDOW_KEYS {
            assert_eq!(keys_with(&p, key, "").len(), 1, "{key}: {p:?}");
        }
        assert!(!keys_with(&p, "restore.offset.to", "not listed in topics").is_empty());
    }

    #[test]
    fn topics_not_in_the_backup_are_named() {
        let dir = backup_with(&["a"]);
        let raw = props(&[
            ("source.dir", dir.path().to_str().unwrap()),
            ("topics", "a,no-such-topic"),
            ("cluster.bootstrap.servers", "localhost:9092"),
        ]);
        let p = validate(&raw);
        assert_eq!(keys_with(&p, "topics", "no-such-topic").len(), 1, "{p:?}");
        let e = source_config(&raw).unwrap_err().to_string();
        assert!(e.contains("no-such-topic"), "{e}");
    }

    #[test]
    fn props_json_is_an_object_of_strings() {
        let p = props_from_json(br#"{"topics":"a","x":null}"#).unwrap();
        assert_eq!(p, props(&[("topics", "a")]));
        assert!(props_from_json(b"[1]").is_err());
        assert!(props_from_json(b"{").is_err());
    }
}
