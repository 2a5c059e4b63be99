//! The two small JSON files of a backup: the root marker and the per-topic manifest.
//!
//! The root marker lets every tool refuse a directory that is not a backup (or is a backup of a
//! newer format) before touching it. The topic manifest carries what is needed to re-create a
//! topic on restore: its partition count and non-default configs. Both are written atomically.

use crate::error::{Error, Result};
use crate::layout;
use crate::perms::Perms;
use crate::storage::Store;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

// Defined once in `format`; these keep the old `manifest::` paths working.
use crate::format::{FORMAT_NAME, FORMAT_VERSION};

/// `DIR/kbackup.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootMarker {
    /// Always `"kbackup"`.
    pub format: String,
    /// On-disk format version of the backup.
    pub version: u16,
    /// When the backup directory was initialised (ms since the epoch).
    pub created_ms: i64,
    /// The program that initialised it (`kbackup-core 0.1.0`).
    pub created_by: String,
}

/// `DIR/topics/<topic>/topic.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicManifest {
    /// Topic name (equal to the directory name).
    pub topic: String,
    /// Partition count of the source topic (or highest backed-up partition + 1 if unknown).
    pub partitions: i32,
    /// Topic configs that were not at their default in the source cluster.
    pub configs: BTreeMap<String, String>,
    /// True when `partitions`/`configs` were read from the source cluster, false when guessed.
    pub described: bool,
    /// When the manifest was first written (ms since the epoch).
    pub created_ms: i64,
    /// When it was last rewritten (ms since the epoch).
    pub updated_ms: i64,
}

/// Current wall-clock time in ms since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Reads and checks the root marker of `root`; a clear error when `root` is not a backup.
pub fn read_root_marker(root: &Path) -> Result<RootMarker> {
    let path = layout::root_marker(root);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(if root.is_dir() {
                Error::NotFound(format!(
                    "{} is not a kbackup backup: it has no {} file; point at the directory \
                     given as target.dir / --dir when the backup was written",
                    root.display(),
                    layout::ROOT_MARKER
                ))
            } else {
                Error::NotFound(format!(
                    "backup directory {} does not exist; check the path",
                    root.display()
                ))
            })
        }
        Err(e) => return Err(Error::io(e, "read backup marker", path)),
    };
    parse_root_marker(&bytes, &path)
}

/// Reads and checks the root marker of a backup in `store` (its bytes too, for a copy); a
/// clear error when the location holds no backup.
pub fn read_store_marker(store: &dyn Store) -> Result<(RootMarker, Vec<u8>)> {
    let data = match store.get(layout::ROOT_MARKER) {
        Ok(d) => d,
        Err(Error::NotFound(_)) => {
            return Err(Error::NotFound(format!(
                "{} is not a kbackup backup: it has no {}; point at the location given as \
                 target.dir / --dir when the backup was written",
                store.location(),
                layout::ROOT_MARKER
            )))
        }
        Err(e) => return Err(e),
    };
    let marker = parse_root_marker(&data, Path::new(&store.describe(layout::ROOT_MARKER)))?;
    Ok((marker, data))
}

/// Checks the bytes of a root marker read from `path` (a file or an object, for messages).
pub fn parse_root_marker(bytes: &[u8], path: &Path) -> Result<RootMarker> {
    let marker: RootMarker = serde_json::from_slice(bytes).map_err(|e| {
        Error::corrupt(
            path,
            0,
            format!("not valid kbackup marker JSON ({e}); if only this file is damaged, rewrite it as {{\"format\":\"kbackup\",\"version\":1,\"created_ms\":0,\"created_by\":\"manual\"}}"),
        )
    })?;
    if marker.format != FORMAT_NAME {
        return Err(Error::corrupt(
            path,
            0,
            format!("format is {:?}, expected \"kbackup\"", marker.format),
        ));
    }
    crate::format::check_version(crate::format::FileKind::RootMarker, path, marker.version)?;
    Ok(marker)
}

/// Creates `root` (and its marker) if needed, or checks that an existing directory is a backup.
/// An existing non-empty directory without a marker is refused, so a typo cannot scatter
/// backup files into an unrelated directory.
pub fn init_root(root: &Path, perms: Perms) -> Result<RootMarker> {
    if layout::root_marker(root).exists() {
        return read_root_marker(root);
    }
    if root.exists() {
        if !root.is_dir() {
            return Err(Error::Config(format!(
                "target directory {} is a file, not a directory; choose a directory path",
                root.display()
            )));
        }
        let rd =
            std::fs::read_dir(root).map_err(|e| Error::io(e, "list target directory", root))?;
        // Entries another task is creating at this moment (same backup, started together)
        // do not make the directory foreign.
        let foreign = rd.filter_map(|e| e.ok()).any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            !(name == layout::TOPICS_DIR
                || name.starts_with(layout::ROOT_MARKER)
                || name.starts_with(".write-probe-"))
        });
        if foreign {
            return Err(Error::Config(format!(
                "target directory {} is not empty and is not a kbackup backup (no {}); \
                 choose an empty or new directory",
                root.display(),
                layout::ROOT_MARKER
            )));
        }
    } else {
        perms
            .create_dir_all(root)
            .map_err(|e| Error::io(e, "create target directory", root))?;
    }
    let (marker, json) = new_marker();
    layout::write_atomic(&layout::root_marker(root), &json, perms)?;
    let topics = layout::topics_dir(root);
    perms
        .create_dir_all(&topics)
        .map_err(|e| Error::io(e, "create directory", &topics))?;
    layout::fsync_dir(root)?;
    Ok(marker)
}

/// The root marker of a new backup, and its bytes.
fn new_marker() -> (RootMarker, Vec<u8>) {
    let marker = RootMarker {
        format: FORMAT_NAME.to_string(),
        version: FORMAT_VERSION,
        created_ms: now_ms(),
        created_by: format!("kbackup-core {}", crate::VERSION),
    };
    let mut json = serde_json::to_vec_pretty(&marker).expect("marker serialises");
    json.push(b'\n');
    (marker, json)
}

/// [`init_root`] for a backup in an object store: creates the marker only if absent (of two
/// writers starting together one creates it, the other reads it), or checks the one there.
/// A prefix holding other objects but no marker is refused, like a foreign directory.
pub fn init_store_root(store: &dyn Store) -> Result<RootMarker> {
    match read_store_marker(store) {
        Ok((m, _)) => return Ok(m),
        Err(Error::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    let ours = |k: &str| {
        k.starts_with(&format!("{}/", layout::TOPICS_DIR))
            || k.starts_with(&format!("{}/", crate::storage::UPLOADS_PREFIX))
    };
    if let Some(foreign) = store.list("")?.into_iter().find(|m| !ours(&m.key)) {
        return Err(Error::Config(format!(
            "{} is not empty and is not a kbackup backup (no {}, but {} is there); choose an \
             empty or new prefix",
            store.location(),
            layout::ROOT_MARKER,
            store.describe(&foreign.key)
        )));
    }
    let (marker, json) = new_marker();
    match store.put_if_absent(layout::ROOT_MARKER, &json) {
        Ok(()) => Ok(marker),
        Err(e) if crate::storage::is_conflict(&e) => Ok(read_store_marker(store)?.0),
        Err(e) => Err(e),
    }
}

/// [`read_topic_manifest`] of a backup in an object store.
pub fn read_store_topic_manifest(store: &dyn Store, topic: &str) -> Result<Option<TopicManifest>> {
    layout::validate_topic_name(topic)?;
    let key = layout::topic_manifest_key(topic);
    match store.get(&key) {
        Ok(data) => Ok(Some(parse_topic_manifest(
            &data,
            Path::new(&store.describe(&key)),
            topic,
        )?)),
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// [`write_topic_manifest`] of a backup in an object store: one whole-object put, so readers
/// see the old manifest or the new one. Every task writing a partition of the topic may write
/// it; they write what the cluster describes, so the last one is as good as any.
pub fn write_store_topic_manifest(store: &dyn Store, m: &TopicManifest) -> Result<()> {
    let mut json = serde_json::to_vec_pretty(m).expect("manifest serialises");
    json.push(b'\n');
    store.put(&layout::topic_manifest_key(&m.topic), &json)
}

/// Reads a topic manifest; `Ok(None)` when the topic has none yet.
pub fn read_topic_manifest(root: &Path, topic: &str) -> Result<Option<TopicManifest>> {
    let path = layout::topic_manifest(root, topic)?;
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(e, "read topic manifest", path)),
    };
    parse_topic_manifest(&bytes, &path, topic).map(Some)
}

/// Checks the bytes of the manifest of `topic` read from `path` (a file or an object).
pub fn parse_topic_manifest(bytes: &[u8], path: &Path, topic: &str) -> Result<TopicManifest> {
    let m: TopicManifest = serde_json::from_slice(bytes).map_err(|e| {
        Error::corrupt(
            path,
            e.column() as u64,
            format!("not a valid topic manifest ({e})"),
        )
    })?;
    if m.topic != topic {
        return Err(Error::corrupt(
            path,
            0,
            format!(
                "manifest names topic {:?} but lives in the directory of {topic:?}",
                m.topic
            ),
        ));
    }
    Ok(m)
}

/// Writes a topic manifest atomically (temp file, fsync, rename, fsync directory).
pub fn write_topic_manifest(root: &Path, m: &TopicManifest, perms: Perms) -> Result<()> {
    let dir = layout::topic_dir(root, &m.topic)?;
    perms
        .create_dir_all(&dir)
        .map_err(|e| Error::io(e, "create topic directory", &dir))?;
    let mut json = serde_json::to_vec_pretty(m).expect("manifest serialises");
    json.push(b'\n');
    layout::write_atomic(&dir.join(layout::TOPIC_MANIFEST), &json, perms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perms::OWNER_ONLY;

    #[test]
    fn init_root_creates_marker_and_refuses_foreign_dirs() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("b");
        let m = init_root(&root, OWNER_ONLY).unwrap();
        assert_eq!(m.version, FORMAT_VERSION);
        assert_eq!(read_root_marker(&root).unwrap(), m);
        // Second open accepts it.
        init_root(&root, OWNER_ONLY).unwrap();

        let foreign = d.path().join("f");
        std::fs::create_dir(&foreign).unwrap();
        std::fs::write(foreign.join("x"), b"x").unwrap();
        let e = init_root(&foreign, OWNER_ONLY).unwrap_err().to_string();
        assert!(e.contains("not empty") && e.contains("kbackup.json"), "{e}");
        let e = read_root_marker(&foreign).unwrap_err().to_string();
        assert!(e.contains("not a kbackup backup"), "{e}");
        let e = read_root_marker(&d.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
    }

    #[test]
    fn newer_format_is_refused_with_upgrade_hint() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("kbackup.json"),
            br#"{"format":"kbackup","version":99,"created_ms":0,"created_by":"x"}"#,
        )
        .unwrap();
        let e = read_root_marker(d.path()).unwrap_err().to_string();
        assert!(e.contains("upgrade kbackup"), "{e}");
    }

    #[test]
    fn topic_manifest_round_trips() {
        let d = tempfile::tempdir().unwrap();
        init_root(d.path(), OWNER_ONLY).unwrap();
        assert_eq!(read_topic_manifest(d.path(), "t").unwrap(), None);
        let m = TopicManifest {
            topic: "t".into(),
            partitions: 3,
            configs: [("cleanup.policy".to_string(), "compact".to_string())].into(),
            described: true,
            created_ms: 1,
            updated_ms: 2,
        };
        write_topic_manifest(d.path(), &m, OWNER_ONLY).unwrap();
        assert_eq!(read_topic_manifest(d.path(), "t").unwrap(), Some(m));
        assert!(!d.path().join("topics/t/topic.json.tmp").exists());
    }
}
