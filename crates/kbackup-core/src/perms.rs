//! Who may read a backup: the mode of every file and directory kbackup creates.
//!
//! A backup holds every record of the cluster, so it is as secret as the cluster itself. Every
//! creation goes through [`Perms`]: new files get the configured mode (default 0600) and new
//! directories the same bits plus search (default 0700), set explicitly after creation so the
//! process umask neither widens nor narrows them. Existing files and directories keep their
//! mode: an operator's `chmod` is never undone.

use crate::error::{Error, Result};
use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The modes kbackup gives the files and directories it creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perms {
    file: u32,
    dir: u32,
}

/// Readable and writable by the owner only: files 0600, directories 0700 (the default).
pub const OWNER_ONLY: Perms = Perms {
    file: 0o600,
    dir: 0o700,
};

impl Default for Perms {
    fn default() -> Perms {
        OWNER_ONLY
    }
}

impl Perms {
    /// Perms for a file mode such as 0o640; directories get the same bits plus search (x)
    /// wherever read is allowed (0o640 -> 0o750). `key` names the setting in errors.
    pub fn from_file_mode(mode: u32, key: &str) -> Result<Perms> {
        if mode & !0o666 != 0 || mode & 0o600 != 0o600 {
            return Err(Error::Config(format!(
                "{key} = {mode:04o} is not a usable file mode: give octal read/write bits that \
                 include owner read and write (0600) and no execute or special bits, for \
                 example 0600 (owner only, the default) or 0640 (owner and group may read)"
            )));
        }
        Ok(Perms {
            file: mode,
            dir: mode | ((mode & 0o444) >> 2),
        })
    }

    /// Parses an octal mode ("0640", "640", "0o640"); `None` or an empty value is the default.
    pub fn parse(value: Option<&str>, key: &str) -> Result<Perms> {
        let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(OWNER_ONLY);
        };
        let digits = v.strip_prefix("0o").unwrap_or(v);
        let mode = u32::from_str_radix(digits, 8).map_err(|_| {
            Error::Config(format!(
                "{key} = {v:?} is not an octal file mode; write it like chmod does, for \
                 example 0600 (owner only, the default) or 0640 (owner and group may read)"
            ))
        })?;
        Perms::from_file_mode(mode, key)
    }

    /// The mode of the file at `path` (for files derived from it, such as rebuilt indexes).
    pub fn of_file(path: &Path) -> Result<Perms> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(e, "read the mode of", path))?;
        let mode = meta.permissions().mode() & 0o666;
        Ok(Perms::from_file_mode(mode | 0o600, "file mode").unwrap_or(OWNER_ONLY))
    }

    /// Mode given to new files.
    pub fn file_mode(&self) -> u32 {
        self.file
    }

    /// Mode given to new directories.
    pub fn dir_mode(&self) -> u32 {
        self.dir
    }

    /// Like `std::fs::create_dir_all`, giving each directory it creates [`Perms::dir_mode`].
    pub fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        if path.as_os_str().is_empty() || path.is_dir() {
            return Ok(());
        }
        if let Some(parent) = path.parent() {
            self.create_dir_all(parent)?;
        }
        match DirBuilder::new().mode(self.dir).create(path) {
            Ok(()) => std::fs::set_permissions(path, Permissions::from_mode(self.dir)),
            // another writer made it first; it set the mode
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates a new file for writing with [`Perms::file_mode`]; fails if it exists.
    pub fn create_new(&self, path: &Path) -> io::Result<File> {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(self.file)
            .open(path)?;
        f.set_permissions(Permissions::from_mode(self.file))?;
        Ok(f)
    }

    /// Opens a file for writing without truncating it, creating it with
    /// [`Perms::file_mode`] if missing (an existing file keeps its mode).
    pub fn open_write(&self, path: &Path) -> io::Result<File> {
        match self.create_new(path) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                OpenOptions::new().write(true).open(path)
            }
            other => other,
        }
    }

    /// Like [`Perms::create_new`] but replaces an existing file (truncates it; it keeps its
    /// mode).
    pub fn create(&self, path: &Path) -> io::Result<File> {
        match self.create_new(path) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                OpenOptions::new().write(true).truncate(true).open(path)
            }
            other => other,
        }
    }

    /// The mode a replacement of `path` gets: the mode of the file it replaces, or
    /// [`Perms::file_mode`] for a new file.
    pub fn for_replacement(&self, path: &Path) -> Perms {
        match std::fs::metadata(path) {
            Ok(m) => Perms {
                file: m.permissions().mode() & 0o7777,
                dir: self.dir,
            },
            Err(_) => *self,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Runs `f` under umask 000, the most permissive one, so a mode left to the umask shows.
    /// The umask is per process: tests that depend on it run under one lock.
    pub(crate) fn with_open_umask<T>(f: impl FnOnce() -> T) -> T {
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        extern "C" {
            fn umask(mask: u32) -> u32;
        }
        // SAFETY: umask only swaps the process's file creation mask.
        let old = unsafe { umask(0) };
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        unsafe { umask(old) };
        out.unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// Every entry under `root` (root included) whose mode is not owner-only, as "path mode".
    pub(crate) fn not_owner_only(root: &Path) -> Vec<String> {
        let mut bad = Vec::new();
        let mut todo = vec![root.to_path_buf()];
        while let Some(p) = todo.pop() {
            let m = std::fs::symlink_metadata(&p).unwrap();
            let mode = m.mode() & 0o7777;
            let want = if m.is_dir() { 0o700 } else { 0o600 };
            if mode != want {
                bad.push(format!("{} {mode:04o}", p.display()));
            }
            if m.is_dir() {
                for e in std::fs::read_dir(&p).unwrap() {
                    todo.push(e.unwrap().path());
                }
            }
        }
        bad
    }

    #[test]
    fn modes_parse_like_chmod_and_dirs_get_search_where_read_is_allowed() {
        assert_eq!(Perms::parse(None, "k").unwrap(), OWNER_ONLY);
        assert_eq!(Perms::parse(Some(" "), "k").unwrap(), OWNER_ONLY);
        let p = Perms::parse(Some("0640"), "k").unwrap();
        assert_eq!((p.file_mode(), p.dir_mode()), (0o640, 0o750));
        let p = Perms::parse(Some("644"), "k").unwrap();
        assert_eq!((p.file_mode(), p.dir_mode()), (0o644, 0o755));
        assert_eq!(Perms::parse(Some("0o600"), "k").unwrap(), OWNER_ONLY);
        for bad in ["0755", "0400", "4600", "rw-------", "0x180", "0800"] {
            let e = Perms::parse(Some(bad), "file.mode")
                .unwrap_err()
                .to_string();
            assert!(e.contains("file.mode") && e.contains("0600"), "{bad}: {e}");
        }
    }

    #[test]
    fn created_entries_get_the_mode_whatever_the_umask() {
        with_open_umask(|| {
            let d = tempfile::tempdir().unwrap();
            let root = d.path().join("a");
            OWNER_ONLY.create_dir_all(&root.join("b/c")).unwrap();
            OWNER_ONLY.create_new(&root.join("b/new")).unwrap();
            OWNER_ONLY.open_write(&root.join("b/c/lock")).unwrap();
            OWNER_ONLY.create(&root.join("b/c/f")).unwrap();
            assert_eq!(not_owner_only(&root), Vec::<String>::new());

            let wide = Perms::parse(Some("0644"), "k").unwrap();
            wide.create_dir_all(&root.join("w")).unwrap();
            let f = root.join("w/f");
            wide.create_new(&f).unwrap();
            let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
            assert_eq!(mode(&root.join("w")), 0o755);
            assert_eq!(mode(&f), 0o644);
            // existing entries keep their mode
            OWNER_ONLY.open_write(&f).unwrap();
            OWNER_ONLY.create(&f).unwrap();
            OWNER_ONLY.create_dir_all(&root.join("w")).unwrap();
            assert_eq!(mode(&f), 0o644);
            assert_eq!(mode(&root.join("w")), 0o755);
            assert_eq!(OWNER_ONLY.for_replacement(&f).file_mode(), 0o644);
            assert_eq!(OWNER_ONLY.for_replacement(&root.join("nope")), OWNER_ONLY);
            assert_eq!(Perms::of_file(&f).unwrap().file_mode(), 0o644);
        });
    }

    #[test]
    fn a_restrictive_umask_does_not_narrow_a_configured_mode() {
        with_open_umask(|| {
            extern "C" {
                fn umask(mask: u32) -> u32;
            }
            let d = tempfile::tempdir().unwrap();
            // SAFETY: swaps the process's file creation mask; restored by with_open_umask.
            unsafe { umask(0o077) };
            let p = Perms::parse(Some("0640"), "k").unwrap();
            p.create_dir_all(&d.path().join("x")).unwrap();
            p.create_new(&d.path().join("x/f")).unwrap();
            let mode = |q: &Path| std::fs::metadata(q).unwrap().mode() & 0o7777;
            assert_eq!(mode(&d.path().join("x")), 0o750);
            assert_eq!(mode(&d.path().join("x/f")), 0o640);
        });
    }

    /// A backup written by the sink: every file and directory in it (segments, indexes,
    /// manifests, lock files, group-offsets logs, rebuilt indexes).
    fn write_backup(root: &Path, file_mode: Option<&str>, max_segment: u64) {
        use crate::offsets_log::{self, GroupOffsetEntry};
        use crate::record::BatchRecord;
        use crate::record::{Record, TimestampType, TopicPartition};
        use crate::sink::{BackupSink, SinkConfig};
        let mut cfg = SinkConfig::new(root);
        cfg.file_mode = file_mode.map(String::from);
        cfg.max_segment_size_bytes = max_segment;
        let perms = cfg.perms();
        let mut sink = BackupSink::open(cfg).unwrap();
        let tps = [TopicPartition::new("t", 0), TopicPartition::new("u", 1)];
        sink.open_partitions(&tps).unwrap();
        let recs: Vec<BatchRecord> = (0..40)
            .map(|o| BatchRecord {
                topic: tps[o as usize % 2].topic.clone(),
                partition: tps[o as usize % 2].partition,
                record: Record {
                    offset: o,
                    timestamp: 1000 + o,
                    timestamp_type: TimestampType::CreateTime,
                    key: Some(vec![o as u8; 20]),
                    value: Some(vec![1; 50]),
                    headers: vec![],
                },
            })
            .collect();
        sink.put(&recs).unwrap();
        sink.flush().unwrap();
        sink.close().unwrap();
        for tp in &tps {
            let entry = GroupOffsetEntry {
                capture_time_ms: 1,
                group: "g".into(),
                committed_offset: 3,
                metadata: String::new(),
            };
            let log = crate::layout::group_offsets_log(root, tp);
            offsets_log::append(&log, &[entry], perms).unwrap();
        }
        // `kbackup reindex` after the indexes were lost
        let dir = crate::layout::partition_dir(root, &tps[0]).unwrap();
        let (_, seg) = crate::layout::list_segments(&dir).unwrap().remove(0);
        std::fs::remove_file(crate::layout::offset_index_path(&seg)).unwrap();
        crate::verify::rebuild_index(&seg).unwrap();
    }

    #[test]
    fn a_backup_is_owner_only_under_a_permissive_umask() {
        with_open_umask(|| {
            let d = tempfile::tempdir().unwrap();
            let root = d.path().join("new/backup");
            write_backup(&root, None, 300);
            let segments = std::fs::read_dir(root.join("topics/t/0"))
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().extension() == Some("segment".as_ref()))
                .count();
            assert!(segments > 1, "the test rolls segments");
            assert_eq!(not_owner_only(&root), Vec::<String>::new());
            assert_eq!(not_owner_only(&d.path().join("new")), Vec::<String>::new());
        });
    }

    #[test]
    fn a_configured_file_mode_is_given_exactly() {
        with_open_umask(|| {
            let d = tempfile::tempdir().unwrap();
            let root = d.path().join("backup");
            write_backup(&root, Some("0640"), 300);
            let mut todo = vec![root.clone()];
            while let Some(p) = todo.pop() {
                let m = std::fs::metadata(&p).unwrap();
                let want = if m.is_dir() { 0o750 } else { 0o640 };
                assert_eq!(m.mode() & 0o7777, want, "{}", p.display());
                if m.is_dir() {
                    todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
                }
            }
        });
    }
}
