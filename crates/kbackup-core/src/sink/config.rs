//! The sink's configuration (the JSON of docs/jni.md, or built by the CLI).

use crate::error::{Error, Result};
use crate::format::block::Compression;
use crate::index::DEFAULT_INDEX_INTERVAL_BYTES;
use crate::perms::Perms;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub(super) fn default_segment_size() -> u64 {
    1 << 30
}
pub(super) fn default_segment_age() -> i64 {
    3_600_000
}
pub(super) fn default_index_interval() -> u32 {
    DEFAULT_INDEX_INTERVAL_BYTES
}
pub(super) fn default_sync_interval() -> u64 {
    5_000
}

/// Sink configuration (the JSON of docs/jni.md, "Sink config JSON").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SinkConfig {
    /// Connector name (for log lines).
    #[serde(default)]
    pub connector_name: String,
    /// Task id (for log lines).
    #[serde(default)]
    pub task_id: String,
    /// Backup root directory.
    pub target_dir: PathBuf,
    /// Roll a segment when it would grow past this many bytes (default 1 GiB).
    #[serde(default = "default_segment_size")]
    pub max_segment_size_bytes: u64,
    /// Roll a segment once it is this old when the next record arrives (<= 0: never; default 1 h).
    #[serde(default = "default_segment_age")]
    pub max_segment_age_ms: i64,
    /// Bytes between two offset index entries (default 4096).
    #[serde(default = "default_index_interval")]
    pub index_interval_bytes: u32,
    /// librdkafka settings of the source cluster (`cluster.*` without the prefix).
    #[serde(default)]
    pub cluster: BTreeMap<String, String>,
    /// The connector's own consumer group (never backed up).
    #[serde(default)]
    pub consumer_group_id: Option<String>,
    /// How often group offsets are captured (ms).
    #[serde(default = "default_sync_interval")]
    pub offsets_sync_interval_ms: u64,
    /// Regex of groups to capture.
    #[serde(default)]
    pub groups_include: Option<String>,
    /// Regex of groups not to capture.
    #[serde(default)]
    pub groups_exclude: Option<String>,
    /// Octal mode of the files the backup creates (`file.mode`; `None`: 0600, owner only).
    #[serde(default)]
    pub file_mode: Option<String>,
    /// Block codec of new segments: `none`, `zstd` or `lz4` (`compression.type`). Absent from
    /// the JSON: `none`, what builds before compression wrote; the connector and the CLI
    /// default to zstd and always send it.
    #[serde(default)]
    pub compression_type: Option<String>,
    /// zstd level (`compression.level`; default 1).
    #[serde(default)]
    pub compression_level: Option<i32>,
    /// Upper bound of the record bytes held in open compression blocks over all partitions
    /// (`buffer.memory.bytes`; default 32 MiB). Above it the largest blocks are written early.
    #[serde(default = "default_buffer_memory")]
    pub buffer_memory_bytes: u64,
    /// `storage.*` settings of an object-store target (docs/storage.md); values never shown.
    #[serde(default)]
    pub storage: crate::storage::StorageSettings,
}

/// Smallest [`SinkConfig::buffer_memory_bytes`] accepted.
pub const MIN_BUFFER_MEMORY: u64 = 1024 * 1024;

/// Default of [`SinkConfig::buffer_memory_bytes`]: 128 full 256 KiB blocks.
pub const DEFAULT_BUFFER_MEMORY: u64 = 32 * 1024 * 1024;

fn default_buffer_memory() -> u64 {
    DEFAULT_BUFFER_MEMORY
}

impl SinkConfig {
    /// A config with defaults for everything but the target directory.
    pub fn new(target_dir: impl Into<PathBuf>) -> SinkConfig {
        SinkConfig {
            connector_name: String::new(),
            task_id: String::new(),
            target_dir: target_dir.into(),
            max_segment_size_bytes: default_segment_size(),
            max_segment_age_ms: default_segment_age(),
            index_interval_bytes: default_index_interval(),
            cluster: BTreeMap::new(),
            consumer_group_id: None,
            offsets_sync_interval_ms: default_sync_interval(),
            groups_include: None,
            groups_exclude: None,
            file_mode: None,
            compression_type: None,
            compression_level: None,
            buffer_memory_bytes: DEFAULT_BUFFER_MEMORY,
            storage: Default::default(),
        }
    }

    /// Parses the JSON handed over by the Java side.
    pub fn from_json(json: &[u8]) -> Result<SinkConfig> {
        let cfg: SinkConfig = serde_json::from_slice(json)
            .map_err(|e| Error::Config(format!("sink config JSON is not valid: {e}")))?;
        // One location rule (storage::check_location): a directory, file:// or an object-store
        // URL; anything else that looks like a URL is refused, never a directory of that name.
        if !cfg.target_dir.as_os_str().is_empty() {
            crate::storage::check_location(&cfg.target_dir.to_string_lossy())
                .map_err(|e| Error::Config(format!("target.dir: {e}")))?;
        }
        Ok(cfg)
    }

    pub(super) fn validate(&self) -> Result<()> {
        if self.target_dir.as_os_str().is_empty() {
            return Err(Error::Config(
                "target.dir is empty; set it to the backup directory".into(),
            ));
        }
        if self.max_segment_size_bytes == 0 {
            return Err(Error::Config(
                "max.segment.size.bytes must be at least 1".into(),
            ));
        }
        if self.index_interval_bytes == 0 {
            return Err(Error::Config(
                "index.interval.bytes must be at least 1".into(),
            ));
        }
        if self.buffer_memory_bytes < MIN_BUFFER_MEMORY {
            return Err(Error::Config(format!(
                "buffer.memory.bytes is {}; set it to at least {MIN_BUFFER_MEMORY} (1 MiB)",
                self.buffer_memory_bytes
            )));
        }
        Perms::parse(self.file_mode.as_deref(), "file.mode")?;
        self.compression()?;
        self.storage.options()?;
        Ok(())
    }

    /// The codec and level of new blocks (checked by `validate`).
    pub fn compression(&self) -> Result<Compression> {
        Compression::parse(
            self.compression_type.as_deref().unwrap_or("none"),
            self.compression_level,
            "compression.type",
        )
    }

    /// The modes of the files and directories the backup creates (checked by `validate`).
    pub fn perms(&self) -> Perms {
        Perms::parse(self.file_mode.as_deref(), "file.mode").unwrap_or_default()
    }
}
