//! `kbackup restore-status`: how far a restore got, read from its state directory.
//!
//! Restores run for hours and may be interrupted; the state directory (the connector's or the
//! CLI's) already records per partition what was acknowledged and which group offsets were
//! committed, so this command only reads it and never talks to Kafka.

use clap::Args;
use kbackup_core::layout;
use kbackup_core::restore::{self, CommitState, StateDirStatus, StatePlace};
use kbackup_core::translate::Target;
use kbackup_core::{Error, Result};
use std::path::{Path, PathBuf};

/// Appends one formatted line to the output buffer; the buffer is written at once at the end,
/// so a closed stdout becomes an error value (success for main), never a panic.
macro_rules! outln {
    ($out:expr, $($arg:tt)*) => {{
        $out.push_str(&format!($($arg)*));
        $out.push('\n');
    }};
}

/// `kbackup restore-status`.
#[derive(Args, Debug)]
pub struct RestoreStatusArgs {
    /// The backup that was restored from: a directory, or a bucket URL (s3://bucket/prefix,
    /// gs://..., az://...).
    #[arg(value_name = "BACKUP", value_parser = super::backup_location)]
    pub dir: String,
    /// The restore's --state-dir / restore.state.dir, a directory or bucket URL (default:
    /// every restore state under BACKUP/restore-state).
    #[arg(long = "state-dir", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// One JSON document on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `kbackup restore-status`; fails (exit 1) only when no status can be read.
pub fn run(args: &RestoreStatusArgs) -> Result<()> {
    let backup = super::open_backup(&args.dir)?;
    let dirs = match &args.state_dir {
        Some(d) => vec![d.clone()],
        None => backup.restore_states()?,
    };
    if dirs.is_empty() {
        return Err(Error::NotFound(format!(
            "no restore has run from {}: {} does not exist or is empty (a restore with \
             --state-dir / restore.state.dir elsewhere: pass that directory with --state-dir)",
            args.dir,
            layout::restore_state_dir(backup.root()).display()
        )));
    }
    let mut all = Vec::new();
    for d in &dirs {
        let place = StatePlace::open(d, &Default::default())?;
        all.push((d.clone(), restore::read_status(&place)?));
    }
    if args.json {
        let items: Vec<_> = all
            .iter()
            .map(|(d, s)| serde_json::json!({ "state_dir": d, "status": s }))
            .collect();
        return super::print_json(&serde_json::json!({ "dir": args.dir, "restores": items }));
    }
    let mut out = String::new();
    for (d, s) in &all {
        print_status(&mut out, d, s);
    }
    super::write_stdout(&mut std::io::stdout().lock(), out.as_bytes())
}

fn print_status(out: &mut String, dir: &Path, s: &StateDirStatus) {
    outln!(
        out,
        "restore {} ({}): {}",
        s.connector_name.as_deref().unwrap_or("(unnamed)"),
        dir.display(),
        if s.finished {
            "FINISHED"
        } else {
            "in progress or interrupted"
        }
    );
    for t in &s.topics {
        outln!(
            out,
            "  topic {} -> {}{}{}",
            t.topic,
            t.target_topic,
            if t.created_by_restore {
                " (created by the restore)"
            } else {
                ""
            },
            if t.created_by_restore && !t.configs_restored {
                ", retention still held off"
            } else {
                ""
            }
        );
    }
    for p in &s.partitions {
        let range = match (p.first_offset, p.last_offset) {
            (Some(f), Some(l)) => format!("{f}..={l}"),
            _ => "empty".into(),
        };
        outln!(out,
            "  {}-{} -> {}: {} records acknowledged, original offsets {range}, last acknowledged {}{}",
            p.topic,
            p.partition,
            p.target_topic,
            p.records_restored,
            p.last_acked_original,
            if p.done { ", done" } else { "" }
        );
        for g in &p.groups {
            let target = match g.target {
                Target::Record(o) => format!("record {o}"),
                Target::LogEnd => "log end".into(),
            };
            let commit = match &g.commit {
                CommitState::Pending => "pending".to_string(),
                CommitState::Committed { offset } => format!("committed at {offset}"),
                CommitState::Refused { offset, reason } => {
                    format!("NOT committed ({offset}): {reason}")
                }
                CommitState::Failed { reason } => format!("FAILED: {reason}"),
                CommitState::Skipped => "skipped (no --group-offsets)".into(),
            };
            outln!(
                out,
                "      group {:?}: backed-up offset {} -> {target}: {commit}",
                g.group,
                g.backed_up_offset
            );
        }
    }
}
