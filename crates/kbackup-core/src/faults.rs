//! Injected I/O faults for the backup writer's tests (feature `fault-injection`).
//!
//! The writer's segment writes, fsyncs and directory fsyncs pass through the hooks below. In a
//! normal build they are empty inline functions. With the feature, a test arms faults (fail the
//! Nth write or fsync of a file, optionally after part of the bytes) and reads back a model of
//! what a crash right now would leave on disk: only fsynced bytes of files whose directory
//! entry was fsynced, with the pages of a failed fsync lost for good (Linux marks them clean
//! after reporting the error, so a later fsync that succeeds does not bring them back).
//! The state is global, so the tests that use it live in their own test binary.

#[cfg(not(feature = "fault-injection"))]
use std::io;
#[cfg(not(feature = "fault-injection"))]
use std::path::Path;

/// The I/O operations a fault can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A write to a segment or index file.
    Write,
    /// An fsync of a segment or index file.
    Fsync,
    /// An fsync of a directory.
    DirFsync,
}

#[cfg(feature = "fault-injection")]
pub use model::*;

#[cfg(feature = "fault-injection")]
mod model {
    use super::Op;
    use std::collections::{HashMap, HashSet};
    use std::ffi::OsString;
    use std::io;
    use std::ops::Range;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    struct Fault {
        op: Op,
        path_contains: String,
        /// Matching operations to let through before this one fails.
        skip: u32,
        /// For writes: bytes written before the error is returned.
        partial: usize,
        errno: i32,
    }

    #[derive(Default)]
    struct FileModel {
        /// Length at the last successful fsync.
        synced_len: u64,
        /// Byte ranges whose pages were dropped by a failed fsync.
        lost: Vec<Range<u64>>,
    }

    #[derive(Default)]
    struct State {
        faults: Vec<Fault>,
        files: HashMap<PathBuf, FileModel>,
        dirs: HashMap<PathBuf, HashSet<OsString>>,
        injected: u32,
    }

    static STATE: Mutex<Option<State>> = Mutex::new(None);

    fn with<T>(f: impl FnOnce(&mut State) -> T) -> T {
        let mut g = STATE.lock().unwrap_or_else(|p| p.into_inner());
        f(g.get_or_insert_with(State::default))
    }

    /// Forgets every armed fault and the disk model.
    pub fn reset() {
        *STATE.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Arms one fault: the `skip + 1`-th `op` on a path containing `path_contains` fails with
    /// `errno` (after writing `partial` bytes, for a write).
    pub fn arm(op: Op, path_contains: &str, skip: u32, partial: usize, errno: i32) {
        with(|s| {
            s.faults.push(Fault {
                op,
                path_contains: path_contains.to_string(),
                skip,
                partial,
                errno,
            })
        });
    }

    /// How many armed faults have fired.
    pub fn injected() -> u32 {
        with(|s| s.injected)
    }

    /// True while armed faults have not fired yet.
    pub fn pending() -> bool {
        with(|s| !s.faults.is_empty())
    }

    /// What a crash now would leave of `path`: `None` when its directory entry was never
    /// fsynced, else its fsynced bytes with lost pages zeroed.
    pub fn disk_image(path: &Path) -> Option<Vec<u8>> {
        let data = std::fs::read(path).ok()?;
        with(|s| {
            let dir = path.parent()?;
            if !s.dirs.get(dir)?.contains(path.file_name()?) {
                return None;
            }
            let m = s.files.get(path)?;
            let mut out = data[..(m.synced_len as usize).min(data.len())].to_vec();
            for r in &m.lost {
                let end = (r.end as usize).min(out.len());
                for b in out.iter_mut().take(end).skip(r.start as usize) {
                    *b = 0;
                }
            }
            Some(out)
        })
    }

    fn take(s: &mut State, op: Op, path: &Path) -> Option<(usize, i32)> {
        let p = path.to_string_lossy();
        let i = s
            .faults
            .iter()
            .position(|f| f.op == op && p.contains(&f.path_contains))?;
        if s.faults[i].skip > 0 {
            s.faults[i].skip -= 1;
            return None;
        }
        let f = s.faults.remove(i);
        s.injected += 1;
        Some((f.partial, f.errno))
    }

    pub(crate) fn write(
        path: &Path,
        buf: &[u8],
        w: impl FnOnce(&[u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        match with(|s| take(s, Op::Write, path)) {
            None => w(buf),
            Some((partial, errno)) => {
                let n = partial.min(buf.len());
                if n > 0 {
                    w(&buf[..n])?;
                }
                Err(io::Error::from_raw_os_error(errno))
            }
        }
    }

    pub(crate) fn fsync(path: &Path, f: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let fault = with(|s| take(s, Op::Fsync, path));
        with(|s| {
            let m = s.files.entry(path.to_path_buf()).or_default();
            if fault.is_some() {
                // The kernel dropped the dirty pages: they never reach the disk.
                if len > m.synced_len {
                    m.lost.push(m.synced_len..len);
                }
            }
        });
        if let Some((_, errno)) = fault {
            return Err(io::Error::from_raw_os_error(errno));
        }
        f()?;
        with(|s| s.files.entry(path.to_path_buf()).or_default().synced_len = len);
        Ok(())
    }

    pub(crate) fn dir_fsync(dir: &Path, f: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        if let Some((_, errno)) = with(|s| take(s, Op::DirFsync, dir)) {
            return Err(io::Error::from_raw_os_error(errno));
        }
        f()?;
        let names: HashSet<OsString> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        with(|s| s.dirs.insert(dir.to_path_buf(), names));
        Ok(())
    }

    pub(crate) fn truncated(path: &Path, len: u64) {
        with(|s| {
            if let Some(m) = s.files.get_mut(path) {
                m.synced_len = m.synced_len.min(len);
                m.lost.retain_mut(|r| {
                    r.end = r.end.min(len);
                    r.start < r.end
                });
            }
        });
    }

    pub(crate) fn removed(path: &Path) {
        with(|s| {
            s.files.remove(path);
        });
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn write(
    _path: &Path,
    buf: &[u8],
    w: impl FnOnce(&[u8]) -> io::Result<usize>,
) -> io::Result<usize> {
    w(buf)
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn fsync(_path: &Path, f: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    f()
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn dir_fsync(_dir: &Path, f: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    f()
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn truncated(_path: &Path, _len: u64) {}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn removed(_path: &Path) {}
