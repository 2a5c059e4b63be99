//! `kbackup backup`: a backup without Kafka Connect, for teams with one cluster and a cron job.
//!
//! The loop is the core's standalone driver ([`kbackup_core::standalone::backup`]): the same
//! writer the sink connector uses, so the files are identical. This command picks the topics,
//! shows progress, serves metrics and prints the summary.

use super::cluster::ClusterArgs;
use super::metrics::MetricsServer;
use super::progress::RunUi;
use clap::Args;
use kbackup_core::groups::GroupOffsetCapture;
use kbackup_core::kafka;
use kbackup_core::sink::BackupSink;
use kbackup_core::standalone::backup::{self as driver, BackupObserver, BackupRun, SinkTicker};
use kbackup_core::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `kbackup backup`.
#[derive(Args, Debug)]
pub struct BackupArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Where the backup goes: a directory or an object-store URL (`s3://bucket/prefix`,
    /// `gs://...`, `az://...`); created if missing, an existing backup is continued where it
    /// ends.
    #[arg(long, value_name = "DIR|URL", value_parser = super::backup_location)]
    pub dir: String,
    /// Comma-separated topics to back up.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        required_unless_present = "topics_regex",
        conflicts_with = "topics_regex"
    )]
    pub topics: Vec<String>,
    /// Back up every topic whose whole name matches this regular expression (internal topics
    /// starting with "__" are never included).
    #[arg(long = "topics-regex", value_name = "RE")]
    pub topics_regex: Option<String>,
    /// Also capture the committed offsets of every consumer group on these topics, so a
    /// restore can move the groups to the matching new offsets.
    #[arg(long = "group-offsets")]
    pub group_offsets: bool,
    /// Keep running and backing up new records until SIGINT or SIGTERM, then flush and exit.
    #[arg(long, conflicts_with = "until_caught_up")]
    pub continuous: bool,
    /// Stop once every partition reached the end offset it had when the backup started (the
    /// default): a consistent snapshot for cron jobs.
    #[arg(long = "until-caught-up")]
    pub until_caught_up: bool,
    /// Start a new segment file once the current one reaches this many bytes (default 1 GiB).
    /// Smaller segments let `prune` free space in finer steps.
    #[arg(long = "max-segment-bytes", value_name = "BYTES")]
    pub max_segment_bytes: Option<u64>,
    /// Start a new segment file once the current one is this old (default 1h), as a duration
    /// like for `prune --older-than`.
    #[arg(long = "max-segment-age", value_name = "DURATION", value_parser = super::prune::parse_duration_ms)]
    pub max_segment_age: Option<i64>,
    /// Octal mode of the files the backup creates, like chmod's (default 0600: the backup
    /// holds every record, so only its owner may read it). Directories get the same bits plus
    /// search where read is allowed (0640 -> 0750).
    #[arg(long = "file-mode", value_name = "MODE")]
    pub file_mode: Option<String>,
    /// Upper bound of the record bytes held in open compression blocks over all partitions
    /// (default 33554432, 32 MiB; at least 1 MiB). Above it the largest blocks are written
    /// early, so memory does not grow with the partition count.
    #[arg(long = "buffer-memory", value_name = "BYTES")]
    pub buffer_memory: Option<u64>,
    /// Compress new segments in blocks of up to 256 KiB with this codec: zstd (the default),
    /// lz4 (faster, larger) or none (segment format version 1, readable by every kbackup
    /// release). A continued backup keeps what is written; new segments use this.
    #[arg(long, value_name = "CODEC", default_value = "zstd")]
    pub compression: String,
    /// zstd level, 1 (fastest, the default) to 22 (smallest).
    #[arg(
        long = "compression-level",
        value_name = "N",
        allow_negative_numbers = true
    )]
    pub compression_level: Option<i32>,
    /// Serve Prometheus metrics on http://HOST:PORT/metrics while the backup runs (records
    /// and bytes written, backup lag per partition, fsync time, group captures; see
    /// docs/operations.md).
    #[arg(long = "metrics-addr", value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
    /// Print a JSON summary on stdout at the end.
    #[arg(long)]
    pub json: bool,
    /// Print progress for scripts: one JSON object per line on stdout, a progress event every
    /// second and the summary as the last line (docs/cli.md, "Progress events").
    #[arg(long = "json-progress")]
    pub json_progress: bool,
    /// No progress output (errors are still printed).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// How old the end offsets behind the lag metrics may get (one request per partition).
const END_OFFSETS_MAX_AGE_MS: i64 = 5_000;

/// Renders the backup's metrics for the scrape endpoint: the sink's snapshot with fresh end
/// offsets (read at most every few seconds) and the CLI's own group-offset capture.
fn publish_metrics(
    server: &mut MetricsServer,
    sink: &mut BackupSink,
    capture: Option<&GroupOffsetCapture>,
) {
    let now = kbackup_core::manifest::now_ms();
    if let Some((cluster, tps)) = sink.end_offsets_due(now, END_OFFSETS_MAX_AGE_MS) {
        match cluster.watermarks(&tps, Duration::from_secs(3)) {
            Ok(marks) => sink.note_end_offsets(&marks, now),
            Err(e) => log::debug!("metrics: could not read end offsets for the lag: {e}"),
        }
    }
    let mut m = sink.metrics(kbackup_core::manifest::now_ms());
    if let Some(c) = capture {
        let st = c.stats();
        m.group_captures = st.captures;
        m.group_capture_errors = st.errors;
        m.group_capture_last_success_ms = st.last_success_ms;
        m.groups_captured = st.groups;
    }
    server.publish(super::metrics::render_sink(&m));
}

impl BackupObserver for RunUi {
    fn planned(&mut self, total: Option<u64>) {
        self.plan(total);
    }

    fn progressed(&mut self, offsets: u64) {
        self.inc(offsets);
    }

    fn ticker(&mut self) -> Option<Box<dyn SinkTicker>> {
        let server = self.server.take()?;
        Some(Box::new(MetricsTicker(server)))
    }

    fn stop_requested(&self) -> bool {
        RunUi::stop_requested(self)
    }
}

/// Publishes the sink's metrics from the backup's writer thread.
struct MetricsTicker(MetricsServer);

impl SinkTicker for MetricsTicker {
    fn tick(&mut self, sink: &mut BackupSink, capture: Option<&GroupOffsetCapture>) {
        if self.0.due() {
            publish_metrics(&mut self.0, sink, capture);
        }
    }

    fn last(&mut self, sink: &mut BackupSink, capture: Option<&GroupOffsetCapture>) {
        publish_metrics(&mut self.0, sink, capture);
    }
}

/// Runs `kbackup backup`.
pub fn run(args: &BackupArgs) -> Result<()> {
    kbackup_core::perms::Perms::parse(args.file_mode.as_deref(), "--file-mode")?;
    kbackup_core::format::block::Compression::parse(
        &args.compression,
        args.compression_level,
        "--compression",
    )?;
    let cluster = args.cluster.cluster()?;
    let available = kafka::list_topics(&cluster)?;
    let topics = select_topics(args, &available, &cluster)?;
    let mut ui = RunUi::start(
        "backup",
        "offsets",
        args.quiet,
        args.json_progress,
        args.metrics_addr.as_deref(),
        Path::new(&args.dir),
    )?;
    let run = BackupRun {
        dir: PathBuf::from(&args.dir),
        topics: topics.iter().map(|t| (t.clone(), available[t])).collect(),
        cluster,
        group_offsets: args.group_offsets,
        continuous: args.continuous,
        max_segment_bytes: args.max_segment_bytes,
        max_segment_age_ms: args.max_segment_age,
        file_mode: args.file_mode.clone(),
        compression: (args.compression.clone(), args.compression_level),
        buffer_memory_bytes: args.buffer_memory,
    };
    let out = driver::run_backup(&run, &mut ui)?;
    let progress = ui.into_progress();

    let secs = progress.elapsed_secs();
    let summary = format!(
        "{} records of {} partitions written to {} in {:.1}s{}{}",
        out.records,
        out.partitions.len(),
        args.dir,
        secs,
        out.group_offset_changes
            .map(|n| format!(", {n} group offset changes captured"))
            .unwrap_or_default(),
        if out.stopped {
            " (stopped by signal)"
        } else {
            ""
        }
    );
    progress.finish(&summary);
    if args.json || args.json_progress {
        let next: BTreeMap<String, BTreeMap<i32, i64>> =
            out.durable.iter().fold(BTreeMap::new(), |mut m, o| {
                m.entry(o.topic.clone())
                    .or_default()
                    .insert(o.partition, o.offset);
                m
            });
        let ends = out.ends_at_start.as_ref().map(|ends| {
            ends.iter().fold(
                BTreeMap::<String, BTreeMap<i32, i64>>::new(),
                |mut m, (tp, end)| {
                    m.entry(tp.topic.clone())
                        .or_default()
                        .insert(tp.partition, *end);
                    m
                },
            )
        });
        let json = serde_json::json!({
            "dir": args.dir,
            "topics": topics,
            "partitions": out.partitions.len(),
            "records": out.records,
            "seconds": secs,
            "mode": if args.continuous { "continuous" } else { "until-caught-up" },
            "stopped_by_signal": out.stopped,
            "end_offsets_at_start": ends,
            "next_offsets": next,
            "group_offset_changes": out.group_offset_changes,
            "groups": out.groups,
        });
        super::print_summary(json, args.json_progress)?;
    }
    driver::undescribed_topics_error(&args.dir, &topics)
}

/// The topics named by --topics (each must exist) or matched by --topics-regex (at least one).
fn select_topics(
    args: &BackupArgs,
    available: &BTreeMap<String, i32>,
    cluster: &BTreeMap<String, String>,
) -> Result<Vec<String>> {
    let servers = cluster
        .get("bootstrap.servers")
        .map(String::as_str)
        .unwrap_or("?");
    if let Some(re) = &args.topics_regex {
        let r = regex::Regex::new(&format!("^(?:{re})$")).map_err(|e| {
            Error::Config(format!(
                "--topics-regex {re:?} is not a valid regular expression: {e}"
            ))
        })?;
        let picked: Vec<String> = available
            .keys()
            .filter(|t| !t.starts_with("__") && r.is_match(t))
            .cloned()
            .collect();
        if picked.is_empty() {
            return Err(Error::NotFound(format!(
                "no topic on the cluster at {servers} matches --topics-regex {re:?}; list the topics \
                 with kafka-topics.sh --list and fix the expression"
            )));
        }
        return Ok(picked);
    }
    let mut out = Vec::new();
    for t in &args.topics {
        let t = t.trim();
        if t.is_empty() {
            continue;
        }
        kbackup_core::layout::validate_topic_name(t)?;
        if !available.contains_key(t) {
            kafka::check_topic_authorized(cluster, t)?;
            return Err(Error::NotFound(format!(
                "topic {t} does not exist on the cluster at {servers}; check the name in --topics"
            )));
        }
        if !out.iter().any(|o: &String| o == t) {
            out.push(t.to_string());
        }
    }
    if out.is_empty() {
        return Err(Error::Config(
            "--topics is empty; name at least one topic".into(),
        ));
    }
    Ok(out)
}
