//! [`LocalStore`]: a backup in a local directory, one file per key (today's layout).
//!
//! Whole objects and completed streams are written to a temporary name beside their final
//! one, fsynced and renamed, then the directory is fsynced: a reader (or a crash) sees the
//! old file or the complete new one, never a part. A conditional create links the fsynced
//! temporary file to its final name, which the kernel does atomically and refuses if the name
//! exists, so of two racing writers exactly one wins.

use super::{check_key, check_prefix, conflict, ObjectMeta, PartWriter, Store};
use crate::error::{Error, Result};
use crate::layout::fsync_dir;
use crate::perms::Perms;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Marks temporary files (never listed, never a valid key).
pub(crate) const TMP_MARK: &str = ".kbtmp-";

/// A store over a local directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    perms: Perms,
}

impl LocalStore {
    /// A store rooted at `root` (created on the first write), giving new files and directories
    /// `perms`.
    pub fn new(root: impl Into<PathBuf>, perms: Perms) -> LocalStore {
        LocalStore {
            root: root.into(),
            perms,
        }
    }

    /// The directory the store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    /// Creates the parent directory of `path`, fsyncing each new directory's parent so the new
    /// entries survive a crash.
    fn make_parent(&self, path: &Path) -> Result<PathBuf> {
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        if dir.is_dir() {
            return Ok(dir);
        }
        let mut missing = Vec::new();
        let mut d = dir.as_path();
        while !d.as_os_str().is_empty() && !d.is_dir() {
            missing.push(d.to_path_buf());
            d = d.parent().unwrap_or(Path::new(""));
        }
        self.perms
            .create_dir_all(&dir)
            .map_err(|e| Error::io(e, "create directory", &dir))?;
        for m in missing.iter().rev() {
            if let Some(parent) = m.parent().filter(|p| !p.as_os_str().is_empty()) {
                fsync_dir(parent)?;
            }
        }
        Ok(dir)
    }

    /// A new temporary file beside `path`, unique across threads and processes.
    fn temp_file(&self, path: &Path) -> Result<(PathBuf, File)> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        self.make_parent(path)?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = path.with_file_name(format!(
            ".{name}{TMP_MARK}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // a replaced file keeps its mode: an operator's chmod is never undone (perms.rs)
        let f = self
            .perms
            .for_replacement(path)
            .create_new(&tmp)
            .map_err(|e| Error::io(e, "create temporary file", &tmp))?;
        Ok((tmp, f))
    }

    fn write_temp(&self, path: &Path, data: &[u8]) -> Result<PathBuf> {
        let (tmp, mut f) = self.temp_file(path)?;
        let done = f
            .write_all(data)
            .map_err(|e| Error::io(e, "write", &tmp))
            .and_then(|_| f.sync_all().map_err(|e| Error::io(e, "fsync", &tmp)));
        if let Err(e) = done {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(tmp)
    }

    fn part_writer(&self, key: &str, only_new: bool) -> Result<Box<dyn PartWriter>> {
        let path = self.path(key)?;
        let (tmp, f) = self.temp_file(&path)?;
        Ok(Box::new(LocalPartWriter {
            key: key.to_string(),
            path,
            tmp,
            file: Some(BufWriter::with_capacity(1 << 20, f)),
            written: 0,
            only_new,
        }))
    }

    fn meta(&self, key: &str, m: &fs::Metadata) -> ObjectMeta {
        ObjectMeta {
            key: key.to_string(),
            size: m.len(),
            modified: m.modified().unwrap_or(std::time::UNIX_EPOCH),
        }
    }
}

/// Renames the complete temporary file onto `path` and fsyncs the directory.
fn publish(tmp: &Path, path: &Path) -> Result<()> {
    if let Err(e) = fs::rename(tmp, path) {
        let _ = fs::remove_file(tmp);
        return Err(Error::io(e, "rename into place", path));
    }
    fsync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Links the complete temporary file to `path` only if nothing is there, removes the temporary
/// name and fsyncs the directory. link(2) fails with EEXIST if the name exists: atomic, unlike
/// exists-then-rename, so of two racing writers exactly one wins.
fn publish_new(tmp: &Path, path: &Path) -> Result<()> {
    let linked = fs::hard_link(tmp, path);
    let _ = fs::remove_file(tmp);
    match linked {
        Ok(()) => fsync_dir(path.parent().unwrap_or(Path::new("."))),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(conflict(path.display().to_string()))
        }
        Err(e) => Err(Error::io(e, "create (only if absent)", path)),
    }
}

impl Store for LocalStore {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let path = self.path(key)?;
        let tmp = self.write_temp(&path, data)?;
        publish(&tmp, &path)
    }

    fn put_if_absent(&self, key: &str, data: &[u8]) -> Result<()> {
        let path = self.path(key)?;
        let tmp = self.write_temp(&path, data)?;
        publish_new(&tmp, &path)
    }

    fn writer(&self, key: &str) -> Result<Box<dyn PartWriter>> {
        self.part_writer(key, false)
    }

    fn writer_new(&self, key: &str) -> Result<Box<dyn PartWriter>> {
        self.part_writer(key, true)
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let path = self.path(key)?;
        fs::read(&path).map_err(|e| not_found_or(e, "read", &path))
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let path = self.path(key)?;
        let mut f = File::open(&path).map_err(|e| not_found_or(e, "open", &path))?;
        let size = f.metadata().map_err(|e| Error::io(e, "stat", &path))?.len();
        if range.start > size || range.start > range.end {
            return Err(Error::State(format!(
                "read of bytes {range:?} of {} ({size} bytes) starts past its end; this is a bug \
                 in kbackup, please report it",
                path.display()
            )));
        }
        let len = range.end.min(size) - range.start;
        let mut buf = Vec::with_capacity(len as usize);
        f.seek(SeekFrom::Start(range.start))
            .and_then(|_| f.take(len).read_to_end(&mut buf))
            .map_err(|e| Error::io(e, "read", &path))?;
        Ok(buf)
    }

    fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let path = self.path(key)?;
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(self.meta(key, &m))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(e, "stat", &path)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        check_prefix(prefix)?;
        let prefix = prefix.trim_end_matches('/');
        let mut out = Vec::new();
        let start = if prefix.is_empty() {
            self.root.clone()
        } else {
            self.root.join(prefix)
        };
        match fs::metadata(&start) {
            // a prefix is a directory: one naming a file lists nothing, as on object stores
            Ok(m) if !m.is_dir() => return Ok(out),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io(e, "stat", &start)),
        }
        let mut dirs = vec![(start, prefix.to_string())];
        while let Some((dir, key)) = dirs.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                // removed while we walked: it holds nothing any more
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(e, "list directory", &dir)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(e, "list directory", &dir))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.contains(TMP_MARK) {
                    continue;
                }
                let child = if key.is_empty() {
                    name.to_string()
                } else {
                    format!("{key}/{name}")
                };
                let m = match entry.metadata() {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io(e, "stat", entry.path())),
                };
                if m.is_dir() {
                    dirs.push((entry.path(), child));
                } else if m.is_file() {
                    out.push(self.meta(&child, &m));
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => fsync_dir(path.parent().unwrap_or(Path::new("."))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(e, "delete", &path)),
        }
    }
}

fn not_found_or(e: io::Error, op: &'static str, path: &Path) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        Error::NotFound(format!("{} does not exist", path.display()))
    } else {
        Error::io(e, op, path)
    }
}

/// A streamed file: written to a temporary name, renamed into place on completion.
struct LocalPartWriter {
    key: String,
    path: PathBuf,
    tmp: PathBuf,
    file: Option<BufWriter<File>>,
    written: u64,
    /// Complete only if nothing is stored under the key ([`Store::writer_new`]).
    only_new: bool,
}

impl LocalPartWriter {
    fn discard(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl PartWriter for LocalPartWriter {
    fn write(&mut self, data: &[u8]) -> Result<()> {
        let Some(f) = self.file.as_mut() else {
            return Err(Error::State(format!(
                "write to {} after it failed or finished",
                self.path.display()
            )));
        };
        if let Err(e) = f.write_all(data) {
            self.discard();
            return Err(Error::io(e, "write", &self.tmp));
        }
        self.written += data.len() as u64;
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn complete(mut self: Box<Self>) -> Result<ObjectMeta> {
        let Some(f) = self.file.take() else {
            return Err(Error::State(format!(
                "complete of {} after it failed",
                self.path.display()
            )));
        };
        let synced = f
            .into_inner()
            .map_err(|e| Error::io(e.into_error(), "write", &self.tmp))
            .and_then(|f| f.sync_all().map_err(|e| Error::io(e, "fsync", &self.tmp)));
        if let Err(e) = synced {
            let _ = fs::remove_file(&self.tmp);
            return Err(e);
        }
        if self.only_new {
            publish_new(&self.tmp, &self.path)?;
        } else {
            publish(&self.tmp, &self.path)?;
        }
        let m = fs::metadata(&self.path).map_err(|e| Error::io(e, "stat", &self.path))?;
        Ok(ObjectMeta {
            key: self.key.clone(),
            size: m.len(),
            modified: m.modified().unwrap_or(std::time::UNIX_EPOCH),
        })
    }

    fn abort(mut self: Box<Self>) -> Result<()> {
        if self.file.take().is_some() {
            match fs::remove_file(&self.tmp) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(e, "remove temporary file", &self.tmp)),
            }
        }
        Ok(())
    }
}

impl Drop for LocalPartWriter {
    fn drop(&mut self) {
        self.discard();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::is_conflict;
    use std::sync::{Arc, Barrier};

    fn store() -> (tempfile::TempDir, LocalStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path().join("backup"), Perms::default());
        (dir, s)
    }

    #[test]
    fn keys_map_to_todays_files() {
        let (_d, s) = store();
        s.put("topics/t/0/00000000000000000000.segment", b"abc")
            .unwrap();
        let p = s.root().join("topics/t/0/00000000000000000000.segment");
        assert_eq!(fs::read(p).unwrap(), b"abc");
    }

    #[test]
    fn a_new_only_stream_loses_to_an_object_already_there_and_leaves_no_trace() {
        let (_d, s) = store();
        let mut w = s.writer_new("topics/t/0/a.segment").unwrap();
        w.write(b"first").unwrap();
        w.complete().unwrap();
        let mut w = s.writer_new("topics/t/0/a.segment").unwrap();
        w.write(b"second, stale").unwrap();
        let e = w.complete().unwrap_err();
        assert!(is_conflict(&e), "{e}");
        assert_eq!(s.get("topics/t/0/a.segment").unwrap(), b"first");
        let names: Vec<_> = fs::read_dir(s.root().join("topics/t/0"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.segment"], "no temporary file survives");
    }

    #[test]
    fn put_if_absent_race_between_threads_has_exactly_one_winner() {
        let (_d, s) = store();
        let s = Arc::new(s);
        for round in 0..20 {
            let key = format!("manifests/m-{round}");
            let barrier = Arc::new(Barrier::new(4));
            let handles: Vec<_> = (0..4)
                .map(|i| {
                    let (s, b, key) = (s.clone(), barrier.clone(), key.clone());
                    std::thread::spawn(move || {
                        b.wait();
                        s.put_if_absent(&key, format!("writer {i}").as_bytes())
                    })
                })
                .collect();
            let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            let winners = results.iter().filter(|r| r.is_ok()).count();
            assert_eq!(winners, 1, "round {round}: {results:?}");
            for r in results.iter().filter_map(|r| r.as_ref().err()) {
                assert!(is_conflict(r), "{r}");
                assert!(r.to_string().contains("another writer"), "{r}");
            }
            let won = results.iter().position(|r| r.is_ok()).unwrap();
            assert_eq!(s.get(&key).unwrap(), format!("writer {won}").as_bytes());
        }
        // no temporary file survives
        let names: Vec<_> = fs::read_dir(s.root().join("manifests"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 20, "{names:?}");
    }

    #[test]
    fn dropped_part_writer_leaves_nothing_visible_or_behind() {
        let (_d, s) = store();
        let mut w = s.writer("topics/t/0/x.segment").unwrap();
        w.write(&[7u8; 100_000]).unwrap();
        assert!(s.head("topics/t/0/x.segment").unwrap().is_none());
        assert!(s.list("").unwrap().is_empty());
        drop(w);
        assert!(s.list("").unwrap().is_empty());
        let dir = s.root().join("topics/t/0");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "temp file left");
    }

    #[test]
    fn completed_writer_replaces_atomically() {
        let (_d, s) = store();
        s.put("a/seg", b"old").unwrap();
        let mut w = s.writer("a/seg").unwrap();
        w.write(b"new ").unwrap();
        w.write(b"content").unwrap();
        assert_eq!(s.get("a/seg").unwrap(), b"old");
        let m = w.complete().unwrap();
        assert_eq!((m.key.as_str(), m.size), ("a/seg", 11));
        assert_eq!(s.get("a/seg").unwrap(), b"new content");
    }

    #[test]
    fn temp_files_are_not_listed_new_files_are_owner_only_replaced_keep_their_mode() {
        use std::os::unix::fs::PermissionsExt;
        let (_d, s) = store();
        s.put("x/y", b"1").unwrap();
        let w = s.writer("x/z").unwrap();
        assert_eq!(
            s.list("x")
                .unwrap()
                .iter()
                .map(|m| &m.key)
                .collect::<Vec<_>>(),
            ["x/y"]
        );
        drop(w);
        let mode = fs::metadata(s.root().join("x/y"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
