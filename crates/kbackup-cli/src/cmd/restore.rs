//! `kbackup restore`: the restore without Kafka Connect.
//!
//! [`RestoreSource`] (the engine behind the source
//! connector) decides everything, and the core's standalone driver
//! ([`kbackup_core::standalone::restore`]) plays Connect's part with a transactional producer,
//! exactly once across kills. This command builds the config from the flags, shows progress,
//! serves metrics and prints the summary.

use super::cluster::ClusterArgs;
use super::progress::RunUi;
use clap::Args;
use kbackup_core::restore::window::RestoreWindow;
use kbackup_core::restore::{self, RestoreSource, SourceConfig};
use kbackup_core::standalone::restore::{self as driver, RestoreObserver};
use kbackup_core::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Records asked from the engine per poll.
const POLL_BATCH: usize = 2000;

/// `kbackup restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The backup to restore from: a directory, file:///path, or s3://bucket/prefix,
    /// gs://bucket/prefix, az://container/prefix (read in place, with the store's settings and
    /// credentials from its standard environment variables; needs --state-dir).
    #[arg(long, value_name = "BACKUP", value_parser = super::backup_location)]
    pub dir: String,
    /// Comma-separated backed-up topics to restore.
    #[arg(long, value_name = "LIST", value_delimiter = ',', required = true)]
    pub topics: Vec<String>,
    /// Restore topics under other names: ORIGINAL:TARGET[,ORIGINAL:TARGET...].
    #[arg(long, value_name = "A:B,...", value_delimiter = ',')]
    pub rename: Vec<String>,
    /// Commit each captured consumer group's translated offset on the new cluster when its
    /// partition is restored.
    #[arg(long = "group-offsets")]
    pub group_offsets: bool,
    #[command(flatten)]
    pub window: WindowArgs,
    /// Restore into target topics that already hold records (appends after them).
    #[arg(long = "allow-non-empty")]
    pub allow_non_empty: bool,
    /// Where the restore keeps its progress, a directory or a bucket URL (default:
    /// DIR/restore-state/DIGEST beside the backup, in its directory or bucket, one per target
    /// cluster and topic list, so a rerun after a crash resumes). Set it when the backup is
    /// read-only.
    #[arg(long = "state-dir", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Serve Prometheus metrics on http://HOST:PORT/metrics while the restore runs (records
    /// and bytes restored, progress per partition, group commits, finished; see
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

/// The restore window flags, shared by `restore` and `restore-plan` (docs/restore.md,
/// "Point-in-time restore"). Every bound is inclusive.
#[derive(Args, Debug, Default)]
pub struct WindowArgs {
    /// Restore only records whose own timestamp is at or after T (inclusive): milliseconds
    /// since the epoch or ISO-8601 with a zone, e.g. 2026-12-01T09:14:00Z or
    /// 2026-12-01T10:14:00+01:00.
    #[arg(long = "from-time", value_name = "T")]
    pub from_time: Option<String>,
    /// Restore only records whose own timestamp is at or before T (inclusive); groups resume
    /// where their last position captured at or before T puts them.
    #[arg(long = "to-time", value_name = "T")]
    pub to_time: Option<String>,
    /// Restore only records at or after these original offsets (inclusive), per topic or
    /// partition: TOPIC=OFFSET or TOPIC:PARTITION=OFFSET, comma-separated.
    #[arg(
        long = "from-offset",
        value_name = "TOPIC[:P]=OFFSET,...",
        value_delimiter = ','
    )]
    pub from_offset: Vec<String>,
    /// Restore only records at or before these original offsets (inclusive), as --from-offset.
    #[arg(
        long = "to-offset",
        value_name = "TOPIC[:P]=OFFSET,...",
        value_delimiter = ','
    )]
    pub to_offset: Vec<String>,
}

impl WindowArgs {
    /// The window, read by the connector's parser (`restore::props::parse_window`) and checked
    /// against the topics by the same rule; errors name the CLI flag.
    pub fn window(&self, topics: &[String]) -> Result<RestoreWindow> {
        let mut props = BTreeMap::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                props.insert(k.to_string(), v);
            }
        };
        put("restore.time.from", self.from_time.clone());
        put("restore.time.to", self.to_time.clone());
        put(
            "restore.offset.from",
            Some(self.from_offset.join(",")).filter(|v| !v.is_empty()),
        );
        put(
            "restore.offset.to",
            Some(self.to_offset.join(",")).filter(|v| !v.is_empty()),
        );
        let (w, mut problems) = kbackup_core::restore::props::parse_window(&props);
        if problems.is_empty() {
            problems = kbackup_core::restore::window::check(&w, topics);
        }
        if problems.is_empty() {
            return Ok(w);
        }
        let lines: Vec<String> = problems
            .iter()
            .map(|(key, msg)| format!("{}: {msg}", cli_option(key)))
            .collect();
        Err(Error::Config(lines.join("\n")))
    }
}

/// Parses `a:b,c:d` into original -> target, with the one rename parser of the core.
pub fn parse_renames(items: &[String]) -> Result<BTreeMap<String, String>> {
    use kbackup_core::restore::props::{self, RenameError};
    let out = props::parse_renames(&items.join(",")).map_err(|e| {
        Error::Config(match e {
            RenameError::NotFromTo(item) => format!(
                "--rename {item:?} is not ORIGINAL:TARGET; write for example --rename orders:orders-restored"
            ),
            RenameError::Twice(t) => format!("--rename renames {t:?} twice; keep one entry for it"),
        })
    })?;
    for (a, b) in &out {
        kbackup_core::layout::validate_topic_name(a)?;
        kbackup_core::layout::validate_topic_name(b)?;
    }
    Ok(out)
}

/// The restore's identity: one state directory per target cluster and topic mapping, so the
/// same backup restored into a second cluster does not find the first restore "finished".
fn restore_name(
    bootstrap: &str,
    topics: &[String],
    renames: &BTreeMap<String, String>,
    window: &RestoreWindow,
) -> String {
    let mapping: Vec<String> = topics
        .iter()
        .map(|t| format!("{t}->{}", renames.get(t).unwrap_or(t)))
        .collect();
    let name = format!("cli-restore {bootstrap} {}", mapping.join(","));
    // Another window is another restore (a whole-partition restore keeps its old name).
    if window.is_unbounded() {
        name
    } else {
        format!("{name} [{}]", window.describe())
    }
}

impl RestoreObserver for RunUi {
    fn planned(&mut self, total: u64) {
        self.plan(Some(total));
    }

    fn progressed(&mut self, records: u64) {
        self.inc(records);
    }

    fn tick(&mut self, source: &RestoreSource, finished: bool) {
        if let Some(s) = self.server.as_mut() {
            if s.due() || finished {
                s.publish(super::metrics::render_source(&source.metrics()));
            }
        }
    }

    fn stop_requested(&self) -> bool {
        RunUi::stop_requested(self)
    }
}

/// Runs `kbackup restore`.
pub fn run(args: &RestoreArgs) -> Result<()> {
    let cluster = args.cluster.cluster()?;
    let renames = parse_renames(&args.rename)?;
    let topics = super::list_items(&args.topics);
    let window = args.window.window(&topics)?;
    let cfg = SourceConfig {
        connector_name: restore_name(&args.cluster.bootstrap_server, &topics, &renames, &window),
        task_id: "cli-restore-0".into(),
        source_dir: PathBuf::from(&args.dir),
        topics: topics.clone(),
        topics_rename: renames,
        batch_size: POLL_BATCH,
        cluster,
        restore_state_dir: args.state_dir.clone(),
        allow_non_empty_topics: args.allow_non_empty,
        restore_group_offsets: args.group_offsets,
        window,
        storage: Default::default(),
    };
    // A missing or foreign directory gets the CLI's own one-line message first.
    let t0 = std::time::Instant::now();
    cfg.open_backup()?;
    let problems = restore::validate(&cfg);
    log::debug!("restore: validated in {:?}", t0.elapsed());
    if !problems.is_empty() {
        let lines: Vec<String> = problems
            .iter()
            .map(|(key, msg)| format!("{}: {msg}", cli_option(key)))
            .collect();
        return Err(Error::Config(lines.join("\n")));
    }
    let mut ui = RunUi::start(
        "restore",
        "records",
        args.quiet,
        args.json_progress,
        args.metrics_addr.as_deref(),
        Path::new(&args.dir),
    )?;
    let out = driver::run_restore(&cfg, &mut ui)?;
    let progress = ui.into_progress();

    let status = &out.status;
    let restored: u64 = status.partitions.iter().map(|p| p.records_restored).sum();
    let summary = if out.finished {
        format!(
            "finished: {} partitions restored ({} records acknowledged in total, {:.1}s)",
            status.partitions.len(),
            restored,
            progress.elapsed_secs()
        )
    } else {
        format!(
            "interrupted after {} records; run the same command again to resume",
            progress.done()
        )
    };
    progress.finish(&summary);
    if args.json || args.json_progress {
        let json = serde_json::json!({
            "finished": out.finished,
            "state_dir": status.state_dir,
            "records_sent": restored,
            "partitions": status.partitions,
        });
        super::print_summary(json, args.json_progress)?;
    }
    if !out.finished {
        return Err(Error::State(
            "the restore was interrupted by a signal; run the same command again to resume".into(),
        ));
    }
    driver::failed_group_commits(&status.partitions)
}

/// The CLI option behind a connector config key named in a validation problem.
fn cli_option(key: &str) -> &str {
    match key {
        "source.dir" => "--dir",
        "topics" => "--topics",
        "topics.rename" => "--rename",
        "restore.state.dir" => "--state-dir",
        "allow.non.empty.topics" => "--allow-non-empty",
        "restore.time.from" => "--from-time",
        "restore.time.to" => "--to-time",
        "restore.offset.from" => "--from-offset",
        "restore.offset.to" => "--to-offset",
        k if k.starts_with("cluster.") => "--config",
        k => k,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_parse_and_reject_bad_names() {
        let r = parse_renames(&["a:b".into(), " c : d ".into(), "".into()]).unwrap();
        assert_eq!(r.get("a").map(String::as_str), Some("b"));
        assert_eq!(r.get("c").map(String::as_str), Some("d"));
        assert!(parse_renames(&["ab".into()])
            .unwrap_err()
            .to_string()
            .contains("ORIGINAL:TARGET"));
        assert!(parse_renames(&["a:../x".into()]).is_err());
    }

    #[test]
    fn each_target_cluster_and_mapping_gets_its_own_restore_state() {
        let t = vec!["orders".to_string()];
        let none = BTreeMap::new();
        let renamed: BTreeMap<String, String> = [("orders".into(), "o2".into())].into();
        let all = RestoreWindow::default();
        let a = restore_name("h1:9092", &t, &none, &all);
        assert_ne!(a, restore_name("h2:9092", &t, &none, &all));
        assert_ne!(a, restore_name("h1:9092", &t, &renamed, &all));
        assert_eq!(a, restore_name("h1:9092", &t, &none, &all));
        let w = RestoreWindow {
            to_time_ms: Some(5),
            ..Default::default()
        };
        assert_ne!(a, restore_name("h1:9092", &t, &none, &w));
    }
}
