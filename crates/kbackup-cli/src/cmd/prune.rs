//! `kbackup prune`: keeps a backup to a time window by dropping its oldest whole segments.
//!
//! The rules (prefix only, never the active segment, group offsets stay meaningful) live in
//! [`kbackup_core::prune`]; this module parses the age and prints what was done.

use super::progress::utc_time;
use clap::Args;
use kbackup_core::manifest::now_ms;
use kbackup_core::prune;
use kbackup_core::{Error, Result};

/// Appends one formatted line to the output buffer; the buffer is written at once at the end,
/// so a closed stdout becomes an error value (success for main), never a panic.
macro_rules! outln {
    ($out:expr, $($arg:tt)*) => {{
        $out.push_str(&format!($($arg)*));
        $out.push('\n');
    }};
}

/// `kbackup prune`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// The backup: a directory, file:///path, or s3://bucket/prefix, gs://bucket/prefix,
    /// az://container/prefix (object stores take their settings and credentials from their
    /// standard environment variables, e.g. AWS_ENDPOINT_URL; docs/storage.md).
    #[arg(value_name = "BACKUP", value_parser = super::backup_location)]
    pub dir: String,
    /// Drop segments whose newest record is older than this: a number with a unit, ms, s, m,
    /// h, d or w (for example 30d, 12h, 90m).
    #[arg(long = "older-than", value_name = "DURATION", value_parser = parse_duration_ms)]
    pub older_than: i64,
    /// Only list what would be removed.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// One JSON document on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `30d` -> milliseconds; one number and one unit.
pub fn parse_duration_ms(s: &str) -> std::result::Result<i64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: i64 = num.parse().map_err(|_| {
        format!("{s:?} is not a duration: write a number and a unit, for example 30d")
    })?;
    let factor: i64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        "" => {
            return Err(format!(
                "{s:?} has no unit: add ms, s, m, h, d or w (for example {s}d)"
            ))
        }
        u => {
            return Err(format!(
                "unknown unit {u:?} in {s:?}: use ms, s, m, h, d or w"
            ))
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{s:?} is too long a duration"))
}

/// Runs `kbackup prune`.
pub fn run(args: &PruneArgs) -> Result<()> {
    if args.older_than < 0 {
        return Err(Error::Config("--older-than must not be negative".into()));
    }
    let cutoff = now_ms().saturating_sub(args.older_than);
    let report = prune::prune_backup(&super::open_backup(&args.dir)?, cutoff, args.dry_run)?;
    if args.json {
        return super::print_json(&serde_json::json!({
            "dir": args.dir,
            "cutoff_ms": report.cutoff_ms,
            "dry_run": report.dry_run,
            "removed_segments": report.removed.len(),
            "removed_records": report.records(),
            "removed_bytes": report.bytes(),
            "kept_segments": report.kept_segments,
            "partitions": report.partitions,
            "removed": report.removed,
        }));
    }
    let mut out = String::new();
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for s in &report.removed {
        outln!(
            out,
            "{verb} {}-{} segment {} ({} records, newest {})",
            s.topic,
            s.partition,
            s.base_offset,
            s.records,
            utc_time(s.newest_ms)
        );
    }
    outln!(out,
        "{verb} {} segments ({} records, {} bytes) older than {}; {} segments kept in {} partitions",
        report.removed.len(),
        report.records(),
        report.bytes(),
        utc_time(cutoff),
        report.kept_segments,
        report.partitions
    );
    super::write_stdout(&mut std::io::stdout().lock(), out.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_reject_garbage() {
        assert_eq!(parse_duration_ms("30d"), Ok(30 * 86_400_000));
        assert_eq!(parse_duration_ms("90m"), Ok(90 * 60_000));
        assert_eq!(parse_duration_ms("1500ms"), Ok(1500));
        assert_eq!(parse_duration_ms("2w"), Ok(14 * 86_400_000));
        assert!(parse_duration_ms("30").unwrap_err().contains("no unit"));
        assert!(parse_duration_ms("5y")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_duration_ms("d").is_err());
        assert!(parse_duration_ms("99999999999999999w").is_err());
    }
}
