//! One error type for the whole core.
//!
//! Every front end (the JNI bridge, the CLI) maps these variants in one place: the bridge to a
//! fatal or a retriable Java exception, the CLI to an exit code. So each variant says what kind
//! of failure it is, and each message names the problem and the fix.

use std::io;
use std::path::PathBuf;

/// Result alias used by every fallible function of the core.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in the core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system operation failed.
    #[error("could not {op} {}: {source}{}", path.display(), io_hint(source))]
    Io {
        /// The file or directory the operation was applied to.
        path: PathBuf,
        /// What was attempted, as a verb phrase ("open segment", "create directory").
        op: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// A backup file does not hold what the format says it must.
    #[error(
        "corrupt backup file {} at byte {position}: {detail}; run `kbackup verify` on the backup \
         to list every damaged file, and restore that file from another copy of the backup",
        path.display()
    )]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte position in the file where the damage was found.
        position: u64,
        /// What was wrong.
        detail: String,
    },
    /// A configuration value is missing or invalid; the message names the key and the fix.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Something that was asked for does not exist (a topic, partition or backup).
    #[error("not found: {0}")]
    NotFound(String),
    /// Talking to Kafka failed.
    #[error("Kafka {what} failed: {detail}")]
    Kafka {
        /// The operation ("describe topic orders").
        what: String,
        /// True when trying again later may succeed (broker unreachable, timeout).
        retriable: bool,
        /// The client's error and the fix.
        detail: String,
    },
    /// A buffer handed over the JNI boundary is malformed.
    #[error("malformed buffer from the Java side: {0}; this is a bug in the kbackup shim, please report it")]
    Codec(String),
    /// The API was misused (for example a call after `close`).
    #[error("invalid state: {0}")]
    State(String),
}

impl Error {
    /// True when the same call may succeed if tried again later (Connect should retry).
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Kafka { retriable, .. } => *retriable,
            Error::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ),
            _ => false,
        }
    }

    /// Builds an [`Error::Io`]; meant for `map_err(|e| Error::io(e, "open segment", &path))`.
    pub fn io(source: io::Error, op: &'static str, path: impl Into<PathBuf>) -> Error {
        Error::Io {
            path: path.into(),
            op,
            source,
        }
    }

    /// Builds an [`Error::Corrupt`].
    pub fn corrupt(path: impl Into<PathBuf>, position: u64, detail: impl Into<String>) -> Error {
        Error::Corrupt {
            path: path.into(),
            position,
            detail: detail.into(),
        }
    }
}

/// A short fix hint for the I/O errors users hit most.
fn io_hint(e: &io::Error) -> &'static str {
    // EMFILE / ENFILE (Linux, macOS): out of file descriptors
    if matches!(e.raw_os_error(), Some(23 | 24)) {
        return " (too many open files: a backup keeps 4 per partition it writes; raise the \
                 open-file limit (`ulimit -n`, LimitNOFILE= in a systemd unit) or back up fewer \
                 partitions per process)";
    }
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            " (check that the user running kbackup or the Connect worker may read and write this path)"
        }
        io::ErrorKind::NotFound => " (check that the path exists and is spelled correctly)",
        io::ErrorKind::AlreadyExists => " (remove or rename the existing file first)",
        io::ErrorKind::StorageFull => " (the disk is full: free space or point the backup at a larger volume)",
        io::ErrorKind::ReadOnlyFilesystem => {
            " (the file system is mounted read-only: remount it read-write or choose another directory)"
        }
        io::ErrorKind::QuotaExceeded => " (the disk quota is exhausted: raise it or free space)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_error_names_op_path_and_fix() {
        let e = Error::io(
            io::Error::from(io::ErrorKind::PermissionDenied),
            "create directory",
            "/backups/x",
        );
        let m = e.to_string();
        assert!(m.contains("create directory"), "{m}");
        assert!(m.contains("/backups/x"), "{m}");
        assert!(m.contains("may read and write"), "{m}");
        assert!(!e.is_retriable());
    }

    #[test]
    fn corrupt_error_names_file_and_position() {
        let m = Error::corrupt("/b/topics/t/0/x.segment", 4711, "CRC mismatch").to_string();
        assert!(m.contains("/b/topics/t/0/x.segment") && m.contains("4711") && m.contains("CRC"));
    }

    #[test]
    fn kafka_retriable_flag_is_honoured() {
        let e = Error::Kafka {
            what: "describe topic".into(),
            retriable: true,
            detail: "timeout".into(),
        };
        assert!(e.is_retriable());
        assert!(!Error::Config("x".into()).is_retriable());
    }
}
