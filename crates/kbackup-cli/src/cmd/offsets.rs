//! `kbackup offsets`: which consumer-group positions a backup holds, and from when.
//!
//! Before restoring, an operator wants to know whether the groups they care about were
//! captured and how old the capture is; the per-partition offsets logs hold exactly that.

use super::progress::utc_time;
use clap::Args;
use kbackup_core::record::TopicPartition;
use kbackup_core::{Error, Result};
use serde::Serialize;

/// `kbackup offsets`.
#[derive(Args, Debug)]
pub struct OffsetsArgs {
    /// The backup: a directory, file:///path, or s3://bucket/prefix, gs://bucket/prefix,
    /// az://container/prefix (object stores take their settings and credentials from their
    /// standard environment variables, e.g. AWS_ENDPOINT_URL; docs/storage.md).
    #[arg(value_name = "BACKUP", value_parser = super::backup_location)]
    pub dir: String,
    /// Only this consumer group.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Only this topic.
    #[arg(long, value_name = "TOPIC")]
    pub topic: Option<String>,
    /// One JSON document on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One group's latest captured position on one partition.
#[derive(Debug, Serialize)]
struct Row {
    group: String,
    topic: String,
    partition: i32,
    /// The committed offset: the next offset the group would have read.
    committed_offset: i64,
    capture_time_ms: i64,
    capture_time: String,
    metadata: String,
}

/// Runs `kbackup offsets`.
pub fn run(args: &OffsetsArgs) -> Result<()> {
    let backup = super::open_backup(&args.dir)?;
    let topics = match &args.topic {
        Some(t) => {
            backup.partitions(t)?; // a clear error when the topic is not in the backup
            vec![t.clone()]
        }
        None => backup.topics()?,
    };
    let mut rows = Vec::new();
    for topic in &topics {
        for p in backup.partitions(topic)? {
            let tp = TopicPartition::new(topic.clone(), p);
            let latest = backup.latest_group_offsets(&tp)?;
            for (group, e) in latest {
                if args.group.as_ref().is_some_and(|g| *g != group) {
                    continue;
                }
                rows.push(Row {
                    group,
                    topic: topic.clone(),
                    partition: p,
                    committed_offset: e.committed_offset,
                    capture_time_ms: e.capture_time_ms,
                    capture_time: utc_time(e.capture_time_ms),
                    metadata: e.metadata,
                });
            }
        }
    }
    rows.sort_by(|a, b| (&a.group, &a.topic, a.partition).cmp(&(&b.group, &b.topic, b.partition)));
    if let (Some(g), true) = (&args.group, rows.is_empty()) {
        return Err(Error::NotFound(format!(
            "the backup at {} holds no offsets of consumer group {g:?}; run `kbackup offsets {}` \
             to list the captured groups (a backup captures groups only with --group-offsets or \
             the sink connector's group capture)",
            args.dir, args.dir
        )));
    }
    if args.json {
        return super::print_json(&serde_json::json!({ "dir": args.dir, "offsets": rows }));
    }
    if rows.is_empty() {
        return super::write_stdout(
            &mut std::io::stdout().lock(),
            b"no consumer-group offsets in this backup\n",
        );
    }
    let gw = rows.iter().map(|r| r.group.len()).max().unwrap_or(5).max(5);
    let tw = rows.iter().map(|r| r.topic.len()).max().unwrap_or(5).max(5);
    let mut out = String::new();
    line(
        &mut out,
        format!(
            "{:gw$}  {:tw$}  {:>9}  {:>15}  CAPTURED (UTC)",
            "GROUP", "TOPIC", "PARTITION", "OFFSET"
        ),
    );
    for r in &rows {
        line(
            &mut out,
            format!(
                "{:gw$}  {:tw$}  {:>9}  {:>15}  {}",
                r.group, r.topic, r.partition, r.committed_offset, r.capture_time
            ),
        );
    }
    super::write_stdout(&mut std::io::stdout().lock(), out.as_bytes())
}

fn line(out: &mut String, s: String) {
    out.push_str(&s);
    out.push('\n');
}
