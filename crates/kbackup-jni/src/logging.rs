//! Rust `log` records on their way to the worker's SLF4J log.
//!
//! Core code may log from any thread, but calling into Java from a thread Rust spawned would
//! resolve classes with the wrong class loader. So records wait in a bounded queue, and every
//! entry point drains it on the calling (Java) thread through the `Native` class it was given.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Most records kept; past it the oldest are dropped (and counted), so a stalled drain cannot
/// grow memory without bound.
const CAPACITY: usize = 10_000;

/// One queued record: Java level (1=error .. 5=trace), target, message.
pub type Line = (i32, String, String);

static QUEUE: Mutex<VecDeque<Line>> = Mutex::new(VecDeque::new());
static DROPPED: AtomicU64 = AtomicU64::new(0);
static INIT: Once = Once::new();

struct QueueLogger;

impl Log for QueueLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        push(
            java_level(record.level()),
            record.target().to_string(),
            record.args().to_string(),
        );
    }

    fn flush(&self) {}
}

/// Java's level numbers, as in docs/jni.md.
fn java_level(l: Level) -> i32 {
    match l {
        Level::Error => 1,
        Level::Warn => 2,
        Level::Info => 3,
        Level::Debug => 4,
        Level::Trace => 5,
    }
}

/// Queues one line, dropping the oldest when full.
pub fn push(level: i32, target: String, message: String) {
    let mut q = QUEUE.lock().unwrap_or_else(|p| p.into_inner());
    if q.len() >= CAPACITY {
        q.pop_front();
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
    q.push_back((level, target, message));
}

/// Installs the queue logger once per loaded library. The level comes from `KBACKUP_LOG_LEVEL`
/// (error, warn, info, debug, trace; default info): SLF4J filters further, but formatting
/// trace lines nobody reads would cost on every record.
pub fn init() {
    INIT.call_once(|| {
        let level = std::env::var("KBACKUP_LOG_LEVEL")
            .ok()
            .and_then(|v| v.parse::<LevelFilter>().ok())
            .unwrap_or(LevelFilter::Info);
        // Fails only if another logger is already set in this library copy; then ours is unused.
        if log::set_boxed_logger(Box::new(QueueLogger)).is_ok() {
            log::set_max_level(level);
        }
    });
}

/// Takes every queued line, with a warning first when lines were dropped since the last drain.
pub fn take() -> Vec<Line> {
    let mut q = QUEUE.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = Vec::with_capacity(q.len() + 1);
    let dropped = DROPPED.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        out.push((
            2,
            "kbackup_jni".to_string(),
            format!("{dropped} native log lines were dropped because the log queue was full"),
        ));
    }
    out.extend(q.drain(..));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_is_bounded_and_counts_drops() {
        take();
        for i in 0..(CAPACITY + 5) {
            push(3, "t".into(), format!("m{i}"));
        }
        let lines = take();
        assert_eq!(lines.len(), CAPACITY + 1);
        assert!(
            lines[0].2.contains("5 native log lines were dropped"),
            "{:?}",
            lines[0]
        );
        assert_eq!(lines[1].2, "m5", "the oldest lines are the ones dropped");
        assert!(take().is_empty());
    }
}
