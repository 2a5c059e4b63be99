//! `kbackup status`: is the backup fresh? For cron jobs and Kubernetes probes.
//!
//! It compares the backup with the live cluster per partition (kbackup_core::freshness) and
//! exits with [`crate::EXIT_STALE`] when a threshold is passed, so an alert fires the day a
//! backup stops, not the day it is needed.

use super::cluster::ClusterArgs;
use super::list_items;
use super::progress::utc_time;
use super::prune::parse_duration_ms;
use clap::Args;
use kbackup_core::freshness::{self, Freshness, FreshnessOptions, PartitionFreshness};
use kbackup_core::Result;
use serde::Serialize;
use std::path::PathBuf;

/// `kbackup status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The backup: a directory, file:///path, or s3://bucket/prefix, gs://bucket/prefix,
    /// az://container/prefix (object stores take their settings and credentials from their
    /// standard environment variables, e.g. AWS_ENDPOINT_URL; docs/storage.md).
    #[arg(value_name = "BACKUP", value_parser = super::backup_location)]
    pub dir: String,
    /// Topics that must be backed up (default: every topic in the backup).
    #[arg(long, value_delimiter = ',', value_name = "TOPIC,...")]
    pub topics: Vec<String>,
    /// Kafka bootstrap servers of the backed-up cluster; without it, only the files are read.
    #[arg(long = "bootstrap-server", value_name = "HOST:PORT")]
    pub bootstrap_server: Option<String>,
    /// A Kafka client setting (librdkafka name); repeat for several.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// A file of Kafka client settings, one KEY=VALUE per line.
    #[arg(long = "config-file", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Stale when a partition has more committed records not backed up than this.
    #[arg(long = "max-lag-records", value_name = "N")]
    pub max_lag_records: Option<u64>,
    /// Stale when the oldest record not backed up is older than this (with a cluster), or the
    /// newest backed-up record is older than this (without one): a number and a unit, ms, s,
    /// m, h or d.
    #[arg(long = "max-lag-time", value_name = "DURATION", value_parser = parse_duration_ms)]
    pub max_lag_time: Option<i64>,
    /// Stale when a captured group moved on the cluster and its last capture is older than this.
    #[arg(long = "max-capture-age", value_name = "DURATION", value_parser = parse_duration_ms)]
    pub max_capture_age: Option<i64>,
    /// Stop counting a partition's missing records after this many (bounds the reading).
    #[arg(long = "count-cap", value_name = "N", default_value_t = 1_000_000)]
    pub count_cap: u64,
    /// One JSON document on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The report with the verdict.
#[derive(Debug, Serialize)]
struct Report {
    fresh: bool,
    /// Each reason the backup is stale, in words.
    problems: Vec<String>,
    #[serde(flatten)]
    freshness: Freshness,
}

/// Runs `kbackup status`; Ok(false) when the backup is stale.
pub fn run(args: &StatusArgs) -> Result<bool> {
    let backup = super::open_backup(&args.dir)?;
    let cluster = match &args.bootstrap_server {
        Some(b) => ClusterArgs {
            bootstrap_server: b.clone(),
            config: args.config.clone(),
            config_file: args.config_file.clone(),
        }
        .cluster()?,
        None => Default::default(),
    };
    let opts = FreshnessOptions {
        topics: list_items(&args.topics),
        cluster,
        count_cap: args
            .count_cap
            .max(args.max_lag_records.map_or(0, |n| n + 1)),
    };
    let f = freshness::check(&backup, &opts)?;
    let problems = judge(args, &f, args.bootstrap_server.is_some());
    let report = Report {
        fresh: problems.is_empty(),
        problems,
        freshness: f,
    };
    if args.json {
        super::print_json(&report)?;
    } else {
        print_table(&report);
    }
    Ok(report.fresh)
}

fn judge(args: &StatusArgs, f: &Freshness, with_cluster: bool) -> Vec<String> {
    let now = f.checked_at_ms;
    let mut out: Vec<String> = f
        .topics_not_backed_up
        .iter()
        .map(|t| format!("topic {t} is not in the backup at all"))
        .collect();
    for p in &f.partitions {
        let tp = format!("{}-{}", p.topic, p.partition);
        let Some(b) = &p.backup else {
            out.push(format!(
                "partition {tp} exists on the cluster but not in the backup"
            ));
            continue;
        };
        match &p.behind {
            Some(behind) => {
                if behind.gap {
                    out.push(format!(
                        "{tp}: the backup ends at offset {} but the cluster's log now starts at \
                         {}: records in between were deleted before they were backed up",
                        b.next_offset.unwrap_or(0),
                        behind.log_start
                    ));
                }
                if args.max_lag_records.is_some_and(|max| behind.records > max) {
                    out.push(format!(
                        "{tp}: {}{} records not backed up (more than --max-lag-records {})",
                        behind.records,
                        if behind.exact { "" } else { "+" },
                        args.max_lag_records.unwrap_or(0)
                    ));
                }
                if let (Some(max), Some(ts)) =
                    (args.max_lag_time, behind.oldest_missing_timestamp_ms)
                {
                    if now - ts > max {
                        out.push(format!(
                            "{tp}: the oldest record not backed up is {} old (written {}), more \
                             than --max-lag-time",
                            human_ms(now - ts),
                            utc_time(ts)
                        ));
                    }
                }
            }
            None if !with_cluster => {
                if let (Some(max), Some(ts)) = (args.max_lag_time, b.newest_timestamp_ms) {
                    if now - ts > max {
                        out.push(format!(
                            "{tp}: the newest backed-up record is {} old (no cluster given to \
                             compare with), more than --max-lag-time",
                            human_ms(now - ts)
                        ));
                    }
                }
            }
            None => {}
        }
        if let Some(max) = args.max_capture_age {
            for g in &p.groups_moved {
                if now - g.capture_time_ms > max {
                    out.push(format!(
                        "{tp}: group {:?} moved to {} on the cluster, but its last capture ({}, \
                         offset {}) is {} old: group offsets are not being captured",
                        g.group,
                        g.cluster_offset.map_or("(none)".into(), |o| o.to_string()),
                        utc_time(g.capture_time_ms),
                        g.captured_offset,
                        human_ms(now - g.capture_time_ms)
                    ));
                }
            }
        }
    }
    out
}

fn human_ms(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        _ if s < 120 => format!("{s}s"),
        _ if s < 7200 => format!("{}m", s / 60),
        _ if s < 172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn cell<T: ToString>(v: Option<T>) -> String {
    v.map_or("-".to_string(), |v| v.to_string())
}

fn row(p: &PartitionFreshness) -> String {
    let b = p.backup.as_ref();
    let behind = p.behind.as_ref();
    format!(
        "{:<30} {:>5} {:>14} {:>24} {:>14} {:>10} {:>24} {:>12}",
        p.topic,
        p.partition,
        cell(b.and_then(|b| b.next_offset)),
        b.and_then(|b| b.newest_timestamp_ms)
            .map_or("-".into(), utc_time),
        cell(behind.map(|x| x.log_end)),
        cell(behind.map(|x| format!("{}{}", x.records, if x.exact { "" } else { "+" }))),
        behind
            .and_then(|x| x.oldest_missing_timestamp_ms)
            .map_or("-".into(), utc_time),
        p.groups_moved.len(),
    )
}

fn print_table(r: &Report) {
    println!(
        "{:<30} {:>5} {:>14} {:>24} {:>14} {:>10} {:>24} {:>12}",
        "TOPIC",
        "PART",
        "BACKUP-END",
        "NEWEST-BACKED-UP",
        "CLUSTER-END",
        "BEHIND",
        "OLDEST-NOT-BACKED-UP",
        "GROUPS-MOVED"
    );
    for p in &r.freshness.partitions {
        println!("{}", row(p));
    }
    if r.fresh {
        println!("FRESH: within every threshold given");
    } else {
        for p in &r.problems {
            println!("STALE: {p}");
        }
    }
}
