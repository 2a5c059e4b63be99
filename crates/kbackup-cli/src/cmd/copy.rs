//! `kbackup copy SRC DST`: copy a backup between a local directory and an object store (either
//! way, or store to store), checking every record's CRC at both ends.

use super::progress::Progress;
use super::{print_json, write_stdout};
use clap::Args;
use kbackup_core::copy::copy;
use kbackup_core::layout;
use kbackup_core::perms::Perms;
use kbackup_core::storage::{check_location, open_store, Store, StoreOptions};
use kbackup_core::Result;
use std::fmt::Write as _;
use std::sync::Arc;

/// `kbackup copy`.
#[derive(Args, Debug)]
pub struct CopyArgs {
    /// The backup to copy: a directory, file:///path, s3://bucket/prefix, gs://bucket/prefix
    /// or az://container/prefix. Object stores take their settings and credentials from their
    /// standard environment variables (for S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_REGION, AWS_ENDPOINT_URL, AWS_ALLOW_HTTP=true for a plain-http endpoint).
    #[arg(value_name = "SRC", value_parser = check_location)]
    pub src: String,
    /// Where to copy it, in the same forms: empty, or an earlier (possibly interrupted) copy of
    /// the same backup, which is resumed or refreshed.
    #[arg(value_name = "DST", value_parser = check_location)]
    pub dst: String,
    /// Octal mode of the files a copy into a local directory creates (directories get the
    /// matching search bits), e.g. 640; default 600 (docs/security.md).
    #[arg(long, value_name = "MODE")]
    pub file_mode: Option<String>,
    /// One JSON document on stdout instead of text.
    #[arg(long)]
    pub json: bool,
    /// No progress display on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Runs `kbackup copy`.
pub fn run(args: &CopyArgs) -> Result<()> {
    let options = StoreOptions {
        perms: Perms::parse(args.file_mode.as_deref(), "--file-mode")?,
        ..Default::default()
    };
    let src: Arc<dyn Store> = Arc::from(open_store(&args.src, &options)?);
    let dst: Arc<dyn Store> = Arc::from(open_store(&args.dst, &options)?);
    let ext = format!(".{}", layout::SEGMENT_EXT);
    let total = src
        .list(layout::TOPICS_DIR)?
        .iter()
        .filter(|o| o.key.ends_with(&ext))
        .map(|o| o.size)
        .sum();
    let mut progress = Progress::new("copy", "bytes", Some(total), args.quiet);
    let report = copy(src, dst, &mut |n| progress.inc(n))?;
    progress.finish(&format!(
        "copied {} segments, {} records",
        report.segments, report.records
    ));
    if args.json {
        return print_json(&report);
    }
    let mut s = String::new();
    for t in &report.torn {
        let _ = writeln!(
            s,
            "note: {}: torn tail left behind: copied {} of {} bytes ({})",
            t.key, t.copied, t.source_len, t.why
        );
    }
    for k in &report.skipped {
        let _ = writeln!(s, "skipped: {}: {}", k.key, k.why);
    }
    for k in &report.only_in_destination {
        let _ = writeln!(
            s,
            "note: {k}: in the destination but no longer in the source (left in place)"
        );
    }
    let _ = writeln!(
        s,
        "OK: {} -> {}: {} segments, {} records, {} segment bytes written; {} objects written, \
         {} already there intact",
        report.source,
        report.destination,
        report.segments,
        report.records,
        report.bytes,
        report.written,
        report.unchanged
    );
    write_stdout(&mut std::io::stdout().lock(), s.as_bytes())
}
