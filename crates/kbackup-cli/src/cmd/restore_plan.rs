//! `kbackup restore-plan`: what a restore would do, computed from the backup alone.
//!
//! Restores are run under pressure; seeing first which topics get created with which
//! partitions and configs, and where each consumer group will resume (in ORIGINAL offsets:
//! the backed-up record it resumes at, or the log end), lets an operator check the plan
//! without a target cluster.

use super::restore::{parse_renames, WindowArgs};
use clap::Args;
use kbackup_core::restore::window::format_time;
use kbackup_core::restore::{self, CARRIED_CONFIGS};
use kbackup_core::translate::Target;
use kbackup_core::{Error, Result};
use serde::Serialize;
use std::collections::BTreeMap;

/// Appends one formatted line to the output buffer; the buffer is written at once at the end,
/// so a closed stdout becomes an error value (success for main), never a panic.
macro_rules! outln {
    ($out:expr, $($arg:tt)*) => {{
        $out.push_str(&format!($($arg)*));
        $out.push('\n');
    }};
}

/// `kbackup restore-plan`.
#[derive(Args, Debug)]
pub struct RestorePlanArgs {
    /// The backup: a directory, file:///path, or s3://bucket/prefix, gs://bucket/prefix,
    /// az://container/prefix (object stores take their settings and credentials from their
    /// standard environment variables, e.g. AWS_ENDPOINT_URL; docs/storage.md).
    #[arg(value_name = "BACKUP", value_parser = super::backup_location)]
    pub dir: String,
    /// Comma-separated backed-up topics the restore would restore.
    #[arg(long, value_name = "LIST", value_delimiter = ',', required = true)]
    pub topics: Vec<String>,
    /// Renames as for `restore`: ORIGINAL:TARGET[,ORIGINAL:TARGET...].
    #[arg(long, value_name = "A:B,...", value_delimiter = ',')]
    pub rename: Vec<String>,
    #[command(flatten)]
    pub window: WindowArgs,
    /// One JSON document on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct GroupPlan {
    group: String,
    /// The group's committed offset on the original partition (latest capture, or the last
    /// one at or before the window's end time).
    backed_up_offset: i64,
    capture_time_ms: i64,
    /// Original offset of the backed-up record the group resumes at (`None`: at the log end).
    resume_at_original: Option<i64>,
    resume_at_log_end: bool,
}

#[derive(Debug, Serialize)]
struct PartitionPlan {
    partition: i32,
    /// Records the restore writes (those of the window).
    records: u64,
    /// First original offset restored.
    first_offset: Option<i64>,
    /// Last original offset restored.
    last_offset: Option<i64>,
    groups: Vec<GroupPlan>,
    /// Groups not restored: every capture of theirs is after the window's end time.
    groups_not_captured: Vec<String>,
}

#[derive(Debug, Serialize)]
struct TopicPlan {
    topic: String,
    target_topic: String,
    /// Partitions the target topic is created with (when it does not exist).
    partitions: i32,
    /// Topic configs the restore sets on a topic it creates.
    configs: BTreeMap<String, String>,
    manifest_found: bool,
    partition_plans: Vec<PartitionPlan>,
}

/// Runs `kbackup restore-plan`.
pub fn run(args: &RestorePlanArgs) -> Result<()> {
    let backup = super::open_backup(&args.dir)?;
    let renames = parse_renames(&args.rename)?;
    let topics = super::list_items(&args.topics);
    let have = backup.topics()?;
    for t in &topics {
        if !have.contains(t) {
            return Err(Error::NotFound(format!(
                "topic {t} is not in the backup at {}; it holds: {}",
                args.dir,
                if have.is_empty() {
                    "no topics".to_string()
                } else {
                    have.join(", ")
                }
            )));
        }
    }
    for from in renames.keys() {
        if !topics.contains(from) {
            return Err(Error::Config(format!(
                "--rename names {from}, which is not in --topics; add it to --topics or drop the rename"
            )));
        }
    }
    let window = args.window.window(&topics)?;
    let planned = restore::plan(&backup, &topics, &window)?;
    let mut plans = Vec::new();
    for t in &topics {
        let manifest = backup.manifest(t)?;
        let parts = backup.partitions(t)?;
        let partitions = manifest
            .as_ref()
            .map_or(0, |m| m.partitions)
            .max(parts.last().map_or(0, |p| p + 1))
            .max(1);
        let configs = manifest
            .as_ref()
            .map(|m| {
                m.configs
                    .iter()
                    .filter(|(k, _)| CARRIED_CONFIGS.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let mut partition_plans = Vec::new();
        for pp in planned.iter().filter(|pp| pp.tp.topic == *t) {
            partition_plans.push(PartitionPlan {
                partition: pp.tp.partition,
                records: pp.span.records,
                first_offset: pp.span.first,
                last_offset: pp.span.last,
                groups_not_captured: pp.groups_not_captured.clone(),
                groups: pp
                    .groups
                    .iter()
                    .map(|g| GroupPlan {
                        group: g.group.clone(),
                        backed_up_offset: g.backed_up_offset,
                        capture_time_ms: g.capture_time_ms,
                        resume_at_original: match g.target {
                            Target::Record(o) => Some(o),
                            Target::LogEnd => None,
                        },
                        resume_at_log_end: g.target == Target::LogEnd,
                    })
                    .collect(),
            });
        }
        plans.push(TopicPlan {
            topic: t.clone(),
            target_topic: renames.get(t).unwrap_or(t).clone(),
            partitions,
            configs,
            manifest_found: manifest.is_some(),
            partition_plans,
        });
    }
    let window_text = window.describe();
    if args.json {
        return super::print_json(&serde_json::json!({
            "dir": args.dir,
            "window": window,
            "window_text": window_text,
            "topics": plans,
        }));
    }
    let mut out = String::new();
    outln!(out, "window: {window_text}");
    for t in &plans {
        outln!(
            out,
            "topic {} -> {}: created (if missing) with {} partitions{}",
            t.topic,
            t.target_topic,
            t.partitions,
            if t.configs.is_empty() {
                String::new()
            } else {
                format!(
                    " and configs {}",
                    t.configs
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                )
            }
        );
        if !t.manifest_found {
            outln!(out, "  warning: no topic manifest in the backup; partition count guessed from the files, no configs");
        }
        for p in &t.partition_plans {
            let range = match (p.first_offset, p.last_offset) {
                (Some(f), Some(l)) => format!("original offsets {f}..={l}"),
                _ => "no records".into(),
            };
            outln!(
                out,
                "  partition {}: {} records, {range}",
                p.partition,
                p.records
            );
            for g in &p.groups {
                let at = match g.resume_at_original {
                    Some(o) => format!("the restored copy of original record {o}"),
                    None => "the end of the restored partition".into(),
                };
                outln!(
                    out,
                    "    group {:?}: committed {} (captured {}) -> resumes at {at}",
                    g.group,
                    g.backed_up_offset,
                    format_time(g.capture_time_ms)
                );
            }
            for g in &p.groups_not_captured {
                outln!(
                    out,
                    "    group {g:?}: not restored: no position captured at or before the window's end time"
                );
            }
        }
    }
    super::write_stdout(&mut std::io::stdout().lock(), out.as_bytes())
}
