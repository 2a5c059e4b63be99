//! One module per subcommand: its clap `Args` and a `run` function over kbackup-core.
//!
//! To add a verb: create `cmd/<verb>.rs` with `pub struct <Verb>Args` (clap `Args`) and
//! `pub fn run(args: &<Verb>Args) -> kbackup_core::Result<()>`, declare it here and add one
//! variant to `Command` in main.rs.

pub mod backup;
pub mod cat;
pub mod cluster;
pub mod copy;
pub mod inspect;
pub mod metrics;
pub mod offsets;
pub mod progress;
pub mod prune;
pub mod reindex;
pub mod restore;
pub mod restore_plan;
pub mod restore_status;
pub mod status;
pub mod verify;

use kbackup_core::Error;
use std::io::Write;

/// Parses the backup argument of a verb that reads a backup wherever it is: a directory, a
/// `file://` URL or an object-store URL (`s3://`, `gs://`, `az://`); anything else is refused
/// (exit 2) naming the supported forms.
pub fn backup_location(value: &str) -> Result<String, String> {
    kbackup_core::storage::check_location(value)
}

/// Opens the backup at a location [`backup_location`] accepted. An object store takes its
/// settings and credentials from its standard environment variables (docs/storage.md).
pub fn open_backup(location: &str) -> kbackup_core::Result<kbackup_core::reader::Backup> {
    kbackup_core::reader::Backup::open_location(
        location,
        &kbackup_core::storage::StoreOptions::default(),
    )
}

/// Writes to stdout, mapping failures (including a closed pipe, which main treats as success)
/// to [`Error::Io`].
pub fn write_stdout(out: &mut impl Write, bytes: &[u8]) -> kbackup_core::Result<()> {
    out.write_all(bytes)
        .map_err(|e| Error::io(e, "write to standard output", "-"))
}

/// Prints a value as pretty JSON followed by a newline.
pub fn print_json<T: serde::Serialize>(value: &T) -> kbackup_core::Result<()> {
    let mut s = serde_json::to_string_pretty(value).expect("report types serialise");
    s.push('\n');
    let mut out = std::io::stdout().lock();
    write_stdout(&mut out, s.as_bytes())?;
    out.flush()
        .map_err(|e| Error::io(e, "write to standard output", "-"))
}

/// Prints a value as ONE line of JSON (`--json-progress` streams).
pub fn print_json_line<T: serde::Serialize>(value: &T) -> kbackup_core::Result<()> {
    let mut s = serde_json::to_string(value).expect("report types serialise");
    s.push('\n');
    let mut out = std::io::stdout().lock();
    write_stdout(&mut out, s.as_bytes())?;
    out.flush()
        .map_err(|e| Error::io(e, "write to standard output", "-"))
}

/// Prints the `--json` summary: pretty, or as the last line of a `--json-progress` stream
/// (`"event": "summary"`).
pub fn print_summary(mut value: serde_json::Value, as_event: bool) -> kbackup_core::Result<()> {
    if !as_event {
        return print_json(&value);
    }
    if let Some(obj) = value.as_object_mut() {
        obj.insert("event".into(), "summary".into());
    }
    print_json_line(&value)
}

/// The entries of a comma-separated list option (`--topics a,b`), trimmed, empties dropped.
pub fn list_items(items: &[String]) -> Vec<String> {
    items
        .iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}
