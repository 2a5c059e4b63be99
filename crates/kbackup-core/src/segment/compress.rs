//! Block compression on a small pool of threads shared by every segment writer of the process,
//! so a writer fills its next block (and its caller reads or receives the next records) while
//! the last block compresses.
//!
//! A writer has at most one block on the pool ([`InFlight`]) and writes it before closing the
//! next one, so blocks reach the file in order and the codec's decisions (docs/format.md,
//! "Blocks") are taken in the same order as on one thread. The pool threads only compress: the
//! writes, index entries and fsyncs stay with the writer.

use crate::error::{Error, Result};
use crate::format::block::{self, Compression};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};

/// A compression to run on the pool.
type Job = Box<dyn FnOnce() + Send + 'static>;

/// Threads of the pool: one per core, up to 8 (a block compresses in about a millisecond;
/// more threads than cores only take CPU from the Kafka clients).
const MAX_THREADS: usize = 8;

struct Pool {
    jobs: Sender<Job>,
}

/// The process's pool, started on first use; `None` if no thread could be started (then
/// blocks compress on the writer's thread, as before the pool).
fn pool() -> Option<&'static Pool> {
    static POOL: OnceLock<Option<Pool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_THREADS);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("kbackup-compress-{i}"))
                .spawn(move || loop {
                    // The lock is held only to take one job.
                    let job = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                });
            match spawned {
                Ok(_) => started += 1,
                Err(e) => log::warn!(
                    "could not start a compression thread ({e}); continuing with {started}"
                ),
            }
        }
        (started > 0).then_some(Pool { jobs: tx })
    })
    .as_ref()
}

/// A compressed block: its segment frame body and the raw buffer, handed back for reuse.
pub(super) struct Compressed {
    pub body: Vec<u8>,
    pub raw: Vec<u8>,
}

/// A block handed to the pool, not yet written.
pub(super) struct InFlight {
    done: Receiver<Result<Compressed>>,
    /// Capacity of the raw buffer the job holds (memory the writer accounts for).
    pub raw_capacity: usize,
    /// Raw length (an upper bound of what the block will take in the segment).
    pub raw_len: usize,
    /// (offset, timestamp) of the block's records, indexed when it is written.
    pub records: Vec<(i64, i64)>,
}

/// Hands a block to the pool (or encodes it at once when there is no pool).
pub(super) fn submit(c: Compression, raw: Vec<u8>, records: Vec<(i64, i64)>) -> InFlight {
    let (tx, rx) = mpsc::sync_channel::<Result<Compressed>>(1);
    let raw_capacity = raw.capacity();
    let raw_len = raw.len();
    let (first, last) = span(&records);
    let n = records.len() as u32;
    let job = move || {
        let out = std::panic::catch_unwind(move || {
            let body = block::encode(c, &raw, n, first, last)?;
            Ok(Compressed { body, raw })
        })
        .unwrap_or_else(|_| {
            Err(Error::State(format!(
                "compressing the block of records {first} to {last} panicked"
            )))
        });
        let _ = tx.send(out); // the writer may have been abandoned: nobody waits then
    };
    match pool() {
        Some(p) => {
            if let Err(mpsc::SendError(job)) = p.jobs.send(Box::new(job)) {
                job(); // every pool thread gone: compress here
            }
        }
        None => job(),
    }
    InFlight {
        done: rx,
        raw_capacity,
        raw_len,
        records,
    }
}

impl InFlight {
    /// Waits for the block's compression.
    pub fn wait(&self) -> Result<Compressed> {
        self.done.recv().unwrap_or_else(|_| {
            Err(Error::State(
                "a compression thread stopped before finishing a block".into(),
            ))
        })
    }
}

fn span(records: &[(i64, i64)]) -> (i64, i64) {
    (
        records.first().map_or(0, |r| r.0),
        records.last().map_or(0, |r| r.0),
    )
}
