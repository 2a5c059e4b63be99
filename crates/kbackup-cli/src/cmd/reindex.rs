//! `kbackup reindex`: rebuild index files (derived data) from their segments.

use super::write_stdout;
use clap::Args;
use kbackup_core::reader::Backup;
use kbackup_core::Result;
use std::path::PathBuf;

/// `kbackup reindex`.
#[derive(Args, Debug)]
pub struct ReindexArgs {
    /// Backup directory.
    #[arg(value_name = "DIR", value_parser = super::backup_dir)]
    pub dir: PathBuf,
}

/// Runs `kbackup reindex`; answers false when a segment was too damaged to index.
pub fn run(args: &ReindexArgs) -> Result<bool> {
    let rep = Backup::open(&args.dir)?.reindex()?;
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
