//! `kbackup verify`: read every byte of a backup and report damage with file and position.

use super::progress::Progress;
use super::{print_json, write_stdout};
use clap::Args;
use kbackup_core::verify::Severity;
use kbackup_core::Result;
use std::fmt::Write as _;

/// `kbackup verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The backup: a directory, file:///path, or s3://bucket/prefix, gs://bucket/prefix,
    /// az://container/prefix (object stores take their settings and credentials from their
    /// standard environment variables, e.g. AWS_ENDPOINT_URL; docs/storage.md).
    #[arg(value_name = "BACKUP", value_parser = super::backup_location)]
    pub dir: String,
    /// One JSON document on stdout instead of text.
    #[arg(long)]
    pub json: bool,
    /// No progress display on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Runs `kbackup verify`; answers whether the backup is free of errors (warnings allowed).
pub fn run(args: &VerifyArgs) -> Result<bool> {
    let backup = super::open_backup(&args.dir)?;
    let mut progress = Progress::new("verify", "bytes", Some(backup.segment_bytes()?), args.quiet);
    let report = backup.verify_with_progress(&mut |n| progress.inc(n))?;
    progress.finish(&format!(
        "checked {} segments, {} records",
        report.segments, report.records
    ));
    if args.json {
        print_json(&report)?;
        return Ok(report.ok);
    }
    let mut s = String::new();
    for p in &report.problems {
        let sev = match p.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let at = p
            .position
            .map_or(String::new(), |n| format!(" at byte {n}"));
        let _ = writeln!(s, "{sev}: {}{at}: {}", p.file.display(), p.message);
    }
    let _ = writeln!(
        s,
        "{}: {} segments, {} records, {} bytes checked; {} errors, {} warnings",
        if report.ok { "OK" } else { "DAMAGED" },
        report.segments,
        report.records,
        report.bytes,
        report.errors(),
        report.warnings()
    );
    write_stdout(&mut std::io::stdout().lock(), s.as_bytes())?;
    Ok(report.ok)
}
