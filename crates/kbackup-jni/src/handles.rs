//! Opaque handles for the objects Java owns (one sink or restore reader per task).
//!
//! Java only ever holds a `long` key into a table; no pointer crosses the boundary, so a stale,
//! closed or forged handle is an error message instead of a use-after-free in the worker JVM.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use kbackup_core::Error;

/// Ids come from one counter for every table, start at 1 (0 is Java's "no handle") and are never
/// reused, so a closed handle can never alias a newer object.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A table of live objects of one kind (a BTreeMap because its `new` is const, so tables can
/// be plain statics).
pub struct Handles<T> {
    kind: &'static str,
    map: Mutex<BTreeMap<u64, Arc<Mutex<T>>>>,
}

impl<T> Handles<T> {
    /// An empty table; `kind` names the objects in error messages ("sink").
    pub const fn new(kind: &'static str) -> Self {
        Handles {
            kind,
            map: Mutex::new(BTreeMap::new()),
        }
    }

    fn table(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Mutex<T>>>> {
        // The table lock is never held while running core code, so poisoning cannot hide state.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `value` and answers its handle (as Java's `long`).
    pub fn insert(&self, value: T) -> i64 {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        self.table().insert(id, Arc::new(Mutex::new(value)));
        id as i64
    }

    /// The object behind `handle`, or an error naming the handle when it is closed or unknown.
    pub fn get(&self, handle: i64) -> Result<Arc<Mutex<T>>, Error> {
        u64::try_from(handle)
            .ok()
            .and_then(|id| self.table().get(&id).cloned())
            .ok_or_else(|| self.closed(handle))
    }

    /// Removes `handle` from the table; `None` when it was already closed (closing twice is a no-op).
    pub fn remove(&self, handle: i64) -> Option<Arc<Mutex<T>>> {
        let id = u64::try_from(handle).ok()?;
        self.table().remove(&id)
    }

    fn closed(&self, handle: i64) -> Error {
        Error::State(format!(
            "{} handle {handle} is closed or was never opened: the task used it after stop() or after \
             a failed start; restart the task, and report this as a kbackup bug if it repeats",
            self.kind
        ))
    }
}

/// Locks one object; a previous panic while it was locked leaves it unusable, by design.
pub fn lock<'a, T>(kind: &str, handle: i64, obj: &'a Mutex<T>) -> Result<MutexGuard<'a, T>, Error> {
    obj.lock().map_err(|_| {
        Error::State(format!(
            "{kind} handle {handle} is unusable because an earlier call on it failed with a panic; \
             restart the task (the backup files stay consistent)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_and_unknown_handles_are_errors_and_ids_are_not_reused() {
        let t: Handles<u32> = Handles::new("sink");
        let a = t.insert(1);
        assert!(a >= 1);
        assert_eq!(*t.get(a).unwrap().lock().unwrap(), 1);
        assert!(t.remove(a).is_some());
        assert!(t.remove(a).is_none(), "double close is a no-op");
        let msg = t.get(a).err().unwrap().to_string();
        assert!(msg.contains(&format!("sink handle {a} is closed")), "{msg}");
        let b = t.insert(2);
        assert_ne!(a, b);
        assert!(t.get(-5).is_err());
        assert!(t.get(0).is_err());
    }
}
