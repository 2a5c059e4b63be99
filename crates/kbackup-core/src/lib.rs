//! kbackup-core: everything kbackup knows about backups, with no knowledge of the JVM.
//!
//! The Connect shim (through `kbackup-jni`) and the `kbackup` CLI are thin front ends over this
//! crate: the on-disk format (segments, indexes, manifests), the sink engine that writes it, the
//! readers that restore from it, consumer-group offset capture and translation.
#![warn(missing_docs)]

pub mod cluster;
pub mod codec;
pub mod copy;
pub mod error;
pub mod faults;
pub mod format;
pub mod freshness;
pub mod groups;
pub mod index;
pub mod kafka;
pub mod layout;
pub mod manifest;
pub mod metrics;
pub mod offsets_log;
pub mod perms;
pub mod prune;
pub mod reader;
pub mod reconcile;
pub mod record;
pub mod restore;
pub mod segment;
pub mod sink;
pub mod standalone;
pub mod storage;
pub mod translate;
pub mod verify;

pub use error::{Error, Result};

/// Version of this crate, reported by `kbackup --version` and `Native.version()`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
