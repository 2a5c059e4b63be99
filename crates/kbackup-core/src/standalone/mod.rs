//! The two standalone drivers of the engines, used by the CLI (Kafka Connect is the other
//! driver of the same engines, through the JNI bridge).
//!
//! - [`backup`]: an rdkafka consumer (read_committed, manual assignment, never commits) feeds
//!   [`crate::sink::BackupSink`], the writer the sink connector uses, so the files are
//!   identical and the files, not Kafka, decide where a backup resumes.
//! - [`restore`]: a transactional rdkafka producer writes what
//!   [`crate::restore::RestoreSource`] hands out and turns committed delivery reports into
//!   the acknowledgements Connect would give the source task.
//!
//! The drivers own the loops and the Kafka clients; the front end (the CLI) owns arguments,
//! progress display, metrics endpoints and output, and talks to a driver through an observer.

pub mod backup;
pub mod restore;
