//! `kbackup reindex`: rebuild index files (derived data) from their segments.

use super::write_stdout;
use clap::Args;
use kbackup_core::Result;

/// `kbackup reindex`.
#[derive(Args, Debug)]
pub struct ReindexArgs {
    /// The backup: a directory, file:///path, or s3://bucket/prefix, gs://bucket/prefix,
    /// az://container/prefix (object stores take their settings and credentials from their
    /// standard environment variables, e.g. AWS_ENDPOINT_URL; docs/storage.md).
    #[arg(value_name = "BACKUP", value_parser = super::backup_location)]
    pub dir: String,
}

/// Runs `kbackup reindex`; answers false when a segment was too damaged to index.
pub fn run(args: &ReindexArgs) -> Result<bool> {
    let rep = super::open_backup(&args.dir)?.reindex()?;
    let mut s = String::new();
    for (path, why) in &rep.failed {
        s.push_str(&format!("error: {}: {why}\n", path.display()));
    }
    s.push_str(&format!(
        "{} segments, {} index pairs rebuilt, {} segments could not be indexed\n",
        rep.segments,
        rep.rebuilt,
        rep.failed.len()
    ));
    write_stdout(&mut std::io::stdout().lock(), s.as_bytes())?;
    Ok(rep.failed.is_empty())
}
