//! `kbackup backup`: a backup without Kafka Connect, for teams with one cluster and a cron job.
//!
//! The CLI only moves records: an rdkafka consumer (read_committed, manual assignment, no
//! commits) feeds [`BackupSink`], the same writer the sink connector uses, so the files are
//! identical and the files, not Kafka, decide where a backup resumes. `--until-caught-up`
//! (the default) stops at the end offsets seen at start: a consistent snapshot per partition.

pub use super::cluster::ClusterArgs;
use super::metrics::MetricsServer;
use super::progress::Progress;
use clap::Args;
use kbackup_core::codec::BatchRecord;
use kbackup_core::groups::{CaptureConfig, GroupOffsetCapture};
use kbackup_core::kafka;
use kbackup_core::record::{Header, Record, TimestampType, TopicPartition};
use kbackup_core::sink::{BackupSink, SinkConfig};
use kbackup_core::{Error, Result};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a metadata request may take before the cluster counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Records handed to the sink in one `put`.
const PUT_BATCH: usize = 2000;
/// Pause between two `flush`es (fsync) while records keep coming.
const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// Pause between two group-offset captures in `--continuous` mode.
const CAPTURE_EVERY_MS: u64 = 30_000;
/// The consumer's group id: needed by librdkafka, never used to commit.
const CLI_GROUP: &str = "kbackup-cli-backup";

/// librdkafka's own log lines (connection refused, retries) only with `-v`/`RUST_LOG`: a failed
/// connection must end in ONE clear error line, not a screen of retries.
pub fn quiet_client_config(cluster: &BTreeMap<String, String>) -> ClientConfig {
    let mut cfg = kafka::client_config(cluster);
    let level = if log::max_level() >= log::LevelFilter::Debug {
        RDKafkaLogLevel::Debug
    } else if log::max_level() >= log::LevelFilter::Info {
        RDKafkaLogLevel::Warning
    } else {
        RDKafkaLogLevel::Emerg
    };
    cfg.set_log_level(level);
    cfg
}

/// Client callbacks that keep librdkafka's transient errors (connection refused, retries) out
/// of the user's way: they surface as ONE error from the call that failed, and with `-v`.
pub struct QuietContext;

impl ClientContext for QuietContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        client_log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        log::info!("Kafka client: {error}: {reason}");
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL)
        ) {
            *AUTH_FAILURE.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_string());
        }
    }
}

/// The last authentication or TLS failure a client reported in the background: a failed call
/// then says "authentication failed", not "could not reach the cluster".
static AUTH_FAILURE: Mutex<Option<String>> = Mutex::new(None);

/// Replaces a connection error by the authentication failure behind it, if a client saw one.
pub fn explain_auth_failure(e: Error) -> Error {
    let Some(reason) = AUTH_FAILURE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
    else {
        return e;
    };
    match e {
        Error::Kafka { what, .. } => Error::Kafka {
            what,
            retriable: false,
            detail: format!(
                "{reason}; check the credentials (sasl.username / sasl.password, the client \
                 certificate and key) and sasl.mechanism in --config / --config-file"
            ),
        },
        other => other,
    }
}

/// librdkafka's log lines, shown with `-v` (warnings and worse) or `-vv` (the rest).
pub fn client_log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
        log::info!(target: "librdkafka", "{fac}: {message}");
    } else {
        log::debug!(target: "librdkafka", "{fac}: {message}");
    }
}

impl ConsumerContext for QuietContext {}

/// Every topic on the cluster with its partition count; fails within [`CONNECT_TIMEOUT`] with
/// a retriable [`Error::Kafka`] when no broker answers.
pub fn list_topics(cluster: &BTreeMap<String, String>) -> Result<BTreeMap<String, i32>> {
    let mut cfg = quiet_client_config(cluster);
    cfg.set("group.id", CLI_GROUP);
    let consumer: BaseConsumer<QuietContext> = cfg.create_with_context(QuietContext).map_err(|e| {
        Error::Config(format!(
            "the Kafka client settings are not accepted: {e}; fix the --config / --config-file entries"
        ))
    })?;
    let md = consumer
        .fetch_metadata(None, CONNECT_TIMEOUT)
        .map_err(|e| {
            // The reason (a failed authentication, say) waits in the client's queue: serve it.
            let _ = consumer.poll(Duration::from_millis(200));
            explain_auth_failure(kafka::kafka_error(cluster, "connect to the cluster", &e))
        })?;
    Ok(md
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name().to_string(), t.partitions().len() as i32))
        .collect())
}

/// `kbackup backup`.
#[derive(Args, Debug)]
pub struct BackupArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Backup directory (created if missing; an existing backup is continued where it ends).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
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

/// Per-partition bookkeeping of one run.
struct PartState {
    /// Stop here in `--until-caught-up` mode (the read_committed end offset at start).
    end: i64,
    /// Next offset to read, as far as the CLI knows.
    pos: i64,
    /// First offset read in this run.
    start: i64,
    done: bool,
}

/// Runs `kbackup backup`.
pub fn run(args: &BackupArgs) -> Result<()> {
    kbackup_core::perms::Perms::parse(args.file_mode.as_deref(), "--file-mode")?;
    let cluster = args.cluster.cluster()?;
    let available = list_topics(&cluster)?;
    let topics = select_topics(args, &available, &cluster)?;
    let mut server = args
        .metrics_addr
        .as_deref()
        .map(MetricsServer::start)
        .transpose()?;

    // SIGINT/SIGTERM set a flag; the loop flushes and exits cleanly.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| Error::io(e, "install a signal handler for", &args.dir))?;
    }

    let mut sink_cfg = SinkConfig::new(&args.dir);
    sink_cfg.connector_name = "cli-backup".into();
    sink_cfg.task_id = "cli-backup-0".into();
    sink_cfg.cluster = cluster.clone();
    sink_cfg.consumer_group_id = Some(CLI_GROUP.into());
    // Group offsets are captured below, only with --group-offsets: no second capture loop.
    sink_cfg.offsets_sync_interval_ms = 0;
    if let Some(b) = args.max_segment_bytes {
        sink_cfg.max_segment_size_bytes = b;
    }
    if let Some(ms) = args.max_segment_age {
        sink_cfg.max_segment_age_ms = ms;
    }
    sink_cfg.file_mode = args.file_mode.clone();
    let perms = sink_cfg.perms();
    let mut sink = BackupSink::open(sink_cfg)?;

    let tps: Vec<TopicPartition> = topics
        .iter()
        .flat_map(|t| (0..available[t]).map(move |p| TopicPartition::new(t.clone(), p)))
        .collect();
    let resume = sink.open_partitions(&tps)?;

    let mut ccfg = quiet_client_config(&cluster);
    ccfg.set("group.id", CLI_GROUP)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .set("allow.auto.create.topics", "false");
    // librdkafka pauses a partition's fetches for 1 s once its local queue is full; the backup
    // drains the queue at disk speed, so that pause left it idle most of the time (make bench:
    // 13.8 s -> 4.9 s for 2M records). A user's --config still wins.
    if !cluster.contains_key("fetch.queue.backoff.ms") {
        ccfg.set("fetch.queue.backoff.ms", "0");
    }
    let consumer: BaseConsumer<QuietContext> = ccfg.create_with_context(QuietContext).map_err(|e| {
        Error::Config(format!(
            "the Kafka client settings are not accepted: {e}; fix the --config / --config-file entries"
        ))
    })?;

    let mut state: HashMap<(String, i32), PartState> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for r in &resume {
        // read_committed: the "high" watermark is the last stable offset.
        let (low, end) = consumer
            .fetch_watermarks(&r.topic, r.partition, CONNECT_TIMEOUT)
            .map_err(|e| {
                kafka::kafka_error(
                    &cluster,
                    &format!("read end offsets of {}-{}", r.topic, r.partition),
                    &e,
                )
            })?;
        let start = if r.offset >= 0 {
            r.offset.max(low)
        } else {
            low
        };
        if r.offset >= 0 && r.offset < low {
            log::warn!(
                "{}-{}: records {}..{} were deleted from Kafka (retention) before they were backed up; \
                 the backup continues at {low}",
                r.topic, r.partition, r.offset, low - 1
            );
        }
        let offset = if r.offset >= 0 {
            Offset::Offset(start)
        } else {
            Offset::Beginning
        };
        tpl.add_partition_offset(&r.topic, r.partition, offset)
            .map_err(|e| kafka::kafka_error(&cluster, "assign partitions", &e))?;
        state.insert(
            (r.topic.clone(), r.partition),
            PartState {
                end,
                pos: start,
                start,
                done: false,
            },
        );
    }
    consumer
        .assign(&tpl)
        .map_err(|e| kafka::kafka_error(&cluster, "assign partitions", &e))?;

    let capture = if args.group_offsets {
        let c = GroupOffsetCapture::start(CaptureConfig {
            root: args.dir.clone(),
            cluster: std::sync::Arc::new(kbackup_core::kafka::RdKafkaCluster::new(&cluster)),
            include: None,
            exclude: None,
            own_group: Some(CLI_GROUP.to_string()),
            interval_ms: if args.continuous { CAPTURE_EVERY_MS } else { 0 },
            perms,
        })?;
        c.set_partitions(tps.clone());
        Some(c)
    } else {
        None
    };

    let until = !args.continuous;
    let total: u64 = state
        .values()
        .map(|s| (s.end - s.start).max(0) as u64)
        .sum();
    let mut progress = Progress::new("backup", "offsets", until.then_some(total), args.quiet)
        .with_json_events(args.json_progress);
    if until {
        for s in state.values_mut() {
            s.done = s.pos >= s.end;
        }
    }

    let mut batch: Vec<BatchRecord> = Vec::with_capacity(PUT_BATCH);
    let mut records = 0u64;
    let mut last_flush = Instant::now();
    let mut last_check = Instant::now();
    let mut check_now = false;
    let mut stopped_by_signal = false;
    let result: Result<()> = (|| {
        loop {
            if stop.load(Ordering::Relaxed) {
                stopped_by_signal = true;
                break;
            }
            if until && state.values().all(|s| s.done) {
                break;
            }
            match consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Ok(m)) => {
                    let key = (m.topic().to_string(), m.partition());
                    if let Some(s) = state.get_mut(&key) {
                        let o = m.offset();
                        if until && o >= s.end {
                            s.done = true; // past the snapshot: not part of this backup
                        } else {
                            progress.inc((o + 1 - s.pos).max(0) as u64);
                            s.pos = o + 1;
                            batch.push(to_batch_record(&m));
                            if until && s.pos >= s.end {
                                s.done = true;
                            }
                        }
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => check_now = true,
                Some(Err(e)) => {
                    let err = kafka::acl_error(
                        &cluster,
                        "fetch records",
                        &e,
                        &format!(
                            "grant READ on the backed-up topics and DESCRIBE on consumer group \
                             {CLI_GROUP} (the backup's consumer carries that group id; it never \
                             joins the group or commits)"
                        ),
                    );
                    if !err.is_retriable() {
                        return Err(err);
                    }
                    log::warn!("{err}");
                }
            }
            if batch.len() >= PUT_BATCH
                || (!batch.is_empty() && last_flush.elapsed() >= FLUSH_EVERY)
            {
                records += batch.len() as u64;
                let put = sink.put(&batch);
                batch.clear(); // never handed again, failed or not
                put?;
            }
            if last_flush.elapsed() >= FLUSH_EVERY {
                sink.flush()?;
                last_flush = Instant::now();
            }
            if let Some(s) = server.as_mut().filter(|s| s.due()) {
                publish_metrics(s, &mut sink, capture.as_ref());
            }
            // Transaction markers and aborted records move the position without a message.
            if until && (check_now || last_check.elapsed() >= Duration::from_secs(1)) {
                last_check = Instant::now();
                check_now = false;
                if let Ok(pos) = consumer.position() {
                    for e in pos.elements() {
                        if let (Some(s), Offset::Offset(p)) = (
                            state.get_mut(&(e.topic().to_string(), e.partition())),
                            e.offset(),
                        ) {
                            if !s.done && p > s.pos {
                                progress.inc((p.min(s.end) - s.pos).max(0) as u64);
                                s.pos = p;
                            }
                            if s.pos >= s.end {
                                s.done = true;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    })();

    // Make what was read durable before reporting; after an error, put nothing again (the
    // failed batch may be the one still held) and report nothing as durable: the next run
    // resumes from the files.
    let mut end_result = result;
    if end_result.is_ok() && !batch.is_empty() {
        records += batch.len() as u64;
        end_result = sink.put(&batch);
    }
    let durable = match &end_result {
        Ok(()) => sink.flush(),
        Err(_) => Ok(Vec::new()),
    };
    let captured = match (&capture, &end_result) {
        (Some(c), Ok(())) => Some(c.capture_now()),
        _ => None,
    };
    if let Some(c) = capture {
        c.stop();
    }
    let closed = sink.close();
    end_result?;
    let durable = durable?;
    closed?;
    let captured = captured.transpose()?;
    let groups = if args.group_offsets {
        Some(groups_held(&args.dir, &tps)?)
    } else {
        None
    };
    if groups == Some(0) {
        log::warn!(
            "--group-offsets: the backup holds no consumer-group offsets for these partitions. \
             Kafka lists to a principal only the groups it may DESCRIBE: if groups consume these \
             topics, grant DESCRIBE on them (docs/security.md) and run the backup again"
        );
    }

    let secs = progress.elapsed_secs();
    let summary = format!(
        "{records} records of {} partitions written to {} in {:.1}s{}{}",
        tps.len(),
        args.dir.display(),
        secs,
        captured
            .map(|n| format!(", {n} group offset changes captured"))
            .unwrap_or_default(),
        if stopped_by_signal {
            " (stopped by signal)"
        } else {
            ""
        }
    );
    progress.finish(&summary);
    if args.json || args.json_progress {
        let next: BTreeMap<String, BTreeMap<i32, i64>> =
            durable.iter().fold(BTreeMap::new(), |mut m, o| {
                m.entry(o.topic.clone())
                    .or_default()
                    .insert(o.partition, o.offset);
                m
            });
        let ends: BTreeMap<String, BTreeMap<i32, i64>> =
            state.iter().fold(BTreeMap::new(), |mut m, ((t, p), s)| {
                m.entry(t.clone()).or_default().insert(*p, s.end);
                m
            });
        let out = serde_json::json!({
            "dir": args.dir,
            "topics": topics,
            "partitions": tps.len(),
            "records": records,
            "seconds": secs,
            "mode": if until { "until-caught-up" } else { "continuous" },
            "stopped_by_signal": stopped_by_signal,
            "end_offsets_at_start": if until { serde_json::to_value(ends).unwrap_or_default() } else { serde_json::Value::Null },
            "next_offsets": next,
            "group_offset_changes": captured,
            "groups": groups,
        });
        super::print_summary(out, args.json_progress)?;
    }
    undescribed_topics_error(&args.dir, &topics)
}

/// How many consumer groups the backup holds offsets of on these partitions.
fn groups_held(dir: &std::path::Path, tps: &[TopicPartition]) -> Result<usize> {
    let mut groups = std::collections::BTreeSet::new();
    for tp in tps {
        let log = kbackup_core::layout::group_offsets_log(dir, tp);
        groups.extend(kbackup_core::offsets_log::latest_per_group(&log)?.into_keys());
    }
    Ok(groups.len())
}

/// The records are on disk, but a topic whose partition count and configs could not be read
/// would be re-created without its configs (a compacted topic as a deleting one): exit 3, so a
/// cron job notices, with the ACL to grant.
fn undescribed_topics_error(dir: &std::path::Path, topics: &[String]) -> Result<()> {
    let mut missing = Vec::new();
    for t in topics {
        if !kbackup_core::manifest::read_topic_manifest(dir, t)?.is_some_and(|m| m.described) {
            missing.push(t.as_str());
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::Kafka {
        what: "describe the backed-up topics".into(),
        retriable: false,
        detail: format!(
            "the records are backed up, but the partition count and configs of {} could not be \
             read (see the warning above), so a restore would create the topics without their \
             configs: grant DESCRIBE_CONFIGS on them (docs/security.md) and run the backup again",
            missing.join(", ")
        ),
    })
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
            check_topic_authorized(cluster, t)?;
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

/// A topic the principal may not DESCRIBE is left out of the full topic list, exactly like a
/// missing one; asked for by name, the broker says which it is.
fn check_topic_authorized(cluster: &BTreeMap<String, String>, topic: &str) -> Result<()> {
    let mut cfg = quiet_client_config(cluster);
    cfg.set("allow.auto.create.topics", "false");
    let Ok(consumer) = cfg.create_with_context::<_, BaseConsumer<QuietContext>>(QuietContext)
    else {
        return Ok(());
    };
    let Ok(md) = consumer.fetch_metadata(Some(topic), CONNECT_TIMEOUT) else {
        return Ok(());
    };
    let denied = md.topics().iter().any(|t| {
        t.name() == topic
            && t.error().is_some_and(|e| {
                RDKafkaErrorCode::from(e) == RDKafkaErrorCode::TopicAuthorizationFailed
            })
    });
    if denied {
        return Err(Error::Kafka {
            what: format!("read topic {topic}"),
            retriable: false,
            detail: format!(
                "TopicAuthorizationFailed: the principal may not see topic {topic}: grant it READ \
                 and DESCRIBE_CONFIGS on topic {topic} (docs/security.md)"
            ),
        });
    }
    Ok(())
}

/// A consumed message as the core's record, byte for byte (null stays distinct from empty).
fn to_batch_record<M: Message>(m: &M) -> BatchRecord {
    let (timestamp, timestamp_type) = match m.timestamp() {
        rdkafka::Timestamp::NotAvailable => (-1, TimestampType::NoTimestamp),
        rdkafka::Timestamp::CreateTime(t) => (t, TimestampType::CreateTime),
        rdkafka::Timestamp::LogAppendTime(t) => (t, TimestampType::LogAppendTime),
    };
    let headers = m
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| Header {
                    key: h.key.to_string(),
                    value: h.value.map(<[u8]>::to_vec),
                })
                .collect()
        })
        .unwrap_or_default();
    BatchRecord {
        topic: m.topic().to_string(),
        partition: m.partition(),
        record: Record {
            offset: m.offset(),
            timestamp,
            timestamp_type,
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
        },
    }
}
