//! `kbackup restore`: the restore without Kafka Connect.
//!
//! [`RestoreSource`] (the engine behind the source connector) decides everything: which topics
//! to create, what to read, how group offsets translate and when the restore is finished. The
//! CLI plays Connect's part: a transactional rdkafka producer writes each record to the same
//! partition with its key, value, headers and timestamp, one transaction per engine batch, and
//! once a transaction commits its delivery reports become the (original offset -> new offset)
//! acknowledgements the next poll hands to the engine.
//!
//! Exactly once across kills: the target's committed records are the restore position. A re-run
//! first initialises the producer with the same `transactional.id` (which fences the killed
//! run's producer and aborts its open transaction), then opens the engine, which reads the
//! target after the last record its state knows and takes the copies found there as
//! acknowledged ([`kbackup_core::reconcile`]): nothing committed is written again, nothing
//! aborted is counted.

use super::backup::{list_topics, quiet_client_config, ClusterArgs};
use super::metrics::MetricsServer;
use super::progress::Progress;
use clap::Args;
use kbackup_core::cluster::ClusterClient;
use kbackup_core::codec::{Ack, BatchRecord, FLAG_FINISHED};
use kbackup_core::kafka;
use kbackup_core::kafka::RdKafkaCluster;
use kbackup_core::reader::Backup;
use kbackup_core::reconcile::KafkaTargetLog;
use kbackup_core::record::TopicPartitionOffset;
use kbackup_core::restore::{self, PartitionState, RestoreSource, SourceConfig};
use kbackup_core::{Error, Result};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::Message;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Records asked from the engine per poll.
const POLL_BATCH: usize = 2000;
/// Bound on each transaction call (init, commit, abort) and on reading the target back.
const TXN_TIMEOUT: Duration = Duration::from_secs(60);

/// `kbackup restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Backup directory to restore from.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
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
    /// Restore into target topics that already hold records (appends after them).
    #[arg(long = "allow-non-empty")]
    pub allow_non_empty: bool,
    /// Where the restore keeps its progress (default: DIR/restore-state/DIGEST, one per
    /// target cluster and topic list, so a rerun after a crash resumes).
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

/// Parses `a:b,c:d` into original -> target, with the one rename parser of the core.
pub fn parse_renames(items: &[String]) -> Result<BTreeMap<String, String>> {
    use kbackup_core::restore_props::{self, RenameError};
    let out = restore_props::parse_renames(&items.join(",")).map_err(|e| {
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
fn restore_name(bootstrap: &str, topics: &[String], renames: &BTreeMap<String, String>) -> String {
    let mapping: Vec<String> = topics
        .iter()
        .map(|t| format!("{t}->{}", renames.get(t).unwrap_or(t)))
        .collect();
    format!("cli-restore {bootstrap} {}", mapping.join(","))
}

/// Where a produced record came from: (original topic, partition, original offset).
type Origin = (String, i32, i64);

/// Collects delivery reports as acknowledgements (called on our thread, inside `poll`).
#[derive(Default)]
struct AckContext {
    acks: Mutex<Vec<Ack>>,
    failure: Mutex<Option<(KafkaError, String)>>,
}

impl ClientContext for AckContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        super::backup::client_log(level, fac, message);
    }

    /// Transient client errors surface as the failed delivery or call; details with `-v`.
    fn error(&self, error: KafkaError, reason: &str) {
        log::info!("Kafka client: {error}: {reason}");
    }
}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Box<Origin>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let (topic, partition, original_offset) = *opaque;
        match result {
            Ok(m) => self
                .acks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Ack {
                    topic,
                    partition,
                    original_offset,
                    new_offset: m.offset(),
                }),
            Err((e, _)) => {
                let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
                if f.is_none() {
                    *f = Some((
                        e.clone(),
                        format!("record {topic}-{partition}@{original_offset} was not written"),
                    ));
                }
            }
        }
    }
}

/// Runs `kbackup restore`.
pub fn run(args: &RestoreArgs) -> Result<()> {
    let cluster = args.cluster.cluster()?;
    let renames = parse_renames(&args.rename)?;
    let topics = super::list_items(&args.topics);
    let cfg = SourceConfig {
        connector_name: restore_name(&args.cluster.bootstrap_server, &topics, &renames),
        task_id: "cli-restore-0".into(),
        source_dir: args.dir.clone(),
        topics: topics.clone(),
        topics_rename: renames,
        batch_size: POLL_BATCH,
        cluster: cluster.clone(),
        restore_state_dir: args.state_dir.clone(),
        allow_non_empty_topics: args.allow_non_empty,
        restore_group_offsets: args.group_offsets,
    };
    // A missing or foreign directory gets the CLI's own one-line message first.
    Backup::open(&args.dir)?;
    let problems = restore::validate(&cfg);
    if !problems.is_empty() {
        let lines: Vec<String> = problems
            .iter()
            .map(|(key, msg)| format!("{}: {msg}", cli_option(key)))
            .collect();
        return Err(Error::Config(lines.join("\n")));
    }
    let mut server = args
        .metrics_addr
        .as_deref()
        .map(MetricsServer::start)
        .transpose()?;
    // Bounded connection check first: an unreachable cluster fails in 10 s with one line.
    list_topics(&cluster)?;
    restore::prepare(&cfg)?;

    // Resume where the acknowledged records end (the state files are the truth, as Connect's
    // committed source offsets are for the connector).
    let state_dir = cfg.state_dir();
    let backup = Backup::open(&args.dir)?;
    let mut assignment = Vec::new();
    let mut total = 0u64;
    for t in &topics {
        for p in backup.partitions(t)? {
            let saved = PartitionState::load(&state_dir, t, p)?;
            // No Connect offsets here: the state and the target say where to resume.
            assignment.push(TopicPartitionOffset::new(t.clone(), p, -1));
            let reader = backup.partition(t, p)?;
            let count = reader.record_count()?;
            let done = saved.as_ref().map_or(0, |s| s.records_restored);
            total += count.saturating_sub(done);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| Error::io(e, "install a signal handler for", &args.dir))?;
    }

    let mut pcfg = quiet_client_config(&cluster);
    pcfg.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("transactional.id", cfg.transactional_id())
        .set("message.max.bytes", "1000000000");
    let producer: BaseProducer<AckContext> = pcfg
        .create_with_context(AckContext::default())
        .map_err(|e| {
            Error::Config(format!(
                "the Kafka client settings are not accepted: {e}; fix the --config / --config-file entries"
            ))
        })?;
    // Before reading the target back: fences a killed run's producer and aborts its open
    // transaction, so read_committed shows exactly what was written for good.
    producer.init_transactions(TXN_TIMEOUT).map_err(|e| {
        kafka::acl_error(
            &cluster,
            &format!(
                "initialise the restore's transactions (transactional.id {})",
                cfg.transactional_id()
            ),
            &e,
            &format!(
                "grant WRITE on transactional id {} (or on the prefix kbackup-restore-)",
                cfg.transactional_id()
            ),
        )
    })?;
    let client: Arc<dyn ClusterClient> = Arc::new(RdKafkaCluster::new(&cluster));
    let mut target_log = KafkaTargetLog::new(Arc::clone(&client), TXN_TIMEOUT);
    let mut source =
        RestoreSource::open_with(cfg.clone(), &assignment, client, &mut target_log, true)?;

    let mut progress = Progress::new("restore", "records", Some(total), args.quiet)
        .with_json_events(args.json_progress);
    let result = pump(
        &cfg,
        &mut source,
        &producer,
        &mut progress,
        &stop,
        server.as_mut(),
    );
    if result.is_err() {
        // Nothing of the failed transaction may become visible; the re-run reads the target.
        let _ = producer.abort_transaction(TXN_TIMEOUT);
    }
    let status = source.status();
    let closed = source.close();
    let finished = result?;
    closed?;

    let restored: u64 = status.partitions.iter().map(|p| p.records_restored).sum();
    let summary = if finished {
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
        let out = serde_json::json!({
            "finished": finished,
            "state_dir": status.state_dir,
            "records_sent": restored,
            "partitions": status.partitions,
        });
        super::print_summary(out, args.json_progress)?;
    }
    if !finished {
        return Err(Error::State(
            "the restore was interrupted by a signal; run the same command again to resume".into(),
        ));
    }
    failed_group_commits(&status.partitions)
}

/// A group commit that failed (a missing ACL, say) is not a finished restore: the records are
/// in place, but the group would not resume where it stood. A re-run retries only the commits.
fn failed_group_commits(partitions: &[PartitionState]) -> Result<()> {
    let mut failed: BTreeMap<&str, (Vec<String>, &str)> = BTreeMap::new();
    for p in partitions {
        for g in &p.groups {
            if let restore::CommitState::Failed { reason } = &g.commit {
                let e = failed.entry(&g.group).or_insert((Vec::new(), reason));
                e.0.push(format!("{}-{}", p.target_topic, p.partition));
            }
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    let each: Vec<String> = failed
        .iter()
        .map(|(g, (tps, reason))| format!("group {g:?} on {}: {reason}", tps.join(", ")))
        .collect();
    Err(Error::Kafka {
        what: "commit the translated consumer-group offsets".into(),
        retriable: false,
        detail: format!(
            "every record is restored, but {} group commit(s) failed: {}; fix that and run the \
             same command again (it only retries the group commits)",
            failed.len(),
            each.join("; ")
        ),
    })
}

/// Polls the engine and produces, one transaction per batch, until it says finished (true) or
/// a signal arrives (false). A batch's acknowledgements reach the engine only after its
/// transaction committed: the state never counts a record a kill could still abort.
fn pump(
    cfg: &SourceConfig,
    source: &mut RestoreSource,
    producer: &BaseProducer<AckContext>,
    progress: &mut Progress,
    stop: &AtomicBool,
    mut server: Option<&mut MetricsServer>,
) -> Result<bool> {
    let mut committed: Vec<Ack> = Vec::new();
    loop {
        let (flags, records) = source.poll(&committed, POLL_BATCH)?;
        committed.clear();
        if let Some(s) = server.as_deref_mut() {
            if s.due() || flags & FLAG_FINISHED != 0 {
                s.publish(super::metrics::render_source(&source.metrics()));
            }
        }
        if flags & FLAG_FINISHED != 0 {
            return Ok(true);
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
        if records.is_empty() {
            // Waiting for a group-commit retry or the other partitions of a topic.
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        producer
            .begin_transaction()
            .map_err(|e| kafka::kafka_error(&cfg.cluster, "begin a restore transaction", &e))?;
        for r in &records {
            send(cfg, producer, r)?;
        }
        producer.commit_transaction(TXN_TIMEOUT).map_err(|e| {
            let targets: Vec<&str> = cfg.topics.iter().map(|t| cfg.target_topic(t)).collect();
            kafka::acl_error(
                &cfg.cluster,
                "commit a restore transaction",
                &e,
                &format!("grant WRITE on topic {}", targets.join(", ")),
            )
        })?;
        producer.poll(Duration::ZERO);
        if let Some((e, what)) = producer
            .context()
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            return Err(kafka::kafka_error(
                &cfg.cluster,
                &format!("restore ({what})"),
                &e,
            ));
        }
        committed = std::mem::take(
            &mut *producer
                .context()
                .acks
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        if committed.len() != records.len() {
            return Err(Error::State(format!(
                "a restore transaction committed {} records but {} delivery reports came; \
                 run the same command again (it resumes from what the target holds)",
                records.len(),
                committed.len()
            )));
        }
        progress.inc(committed.len() as u64);
    }
}

/// Sends one record to the same partition of the (renamed) topic, exactly as backed up.
fn send(cfg: &SourceConfig, producer: &BaseProducer<AckContext>, r: &BatchRecord) -> Result<()> {
    let target = cfg.target_topic(&r.topic);
    let mut headers = OwnedHeaders::new_with_capacity(r.record.headers.len());
    for h in &r.record.headers {
        headers = headers.insert(Header {
            key: &h.key,
            value: h.value.as_deref(),
        });
    }
    let mut rec: BaseRecord<'_, [u8], [u8], Box<Origin>> = BaseRecord::with_opaque_to(
        target,
        Box::new((r.topic.clone(), r.partition, r.record.offset)),
    )
    .partition(r.partition)
    .headers(headers);
    if let Some(k) = r.record.key.as_deref() {
        rec = rec.key(k);
    }
    if let Some(v) = r.record.value.as_deref() {
        rec = rec.payload(v);
    }
    // No timestamp (-1): the producer stamps the record, as Kafka's Java producer does.
    if r.record.timestamp >= 0 {
        rec = rec.timestamp(r.record.timestamp);
    }
    loop {
        match producer.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                rec = back;
                producer.poll(Duration::from_millis(50));
            }
            Err((e, _)) => {
                return Err(kafka::kafka_error(
                    &cfg.cluster,
                    &format!(
                        "produce {}-{}@{} to {target}",
                        r.topic, r.partition, r.record.offset
                    ),
                    &e,
                ))
            }
        }
    }
}

/// The CLI option behind a connector config key named in a validation problem.
fn cli_option(key: &str) -> &str {
    match key {
        "source.dir" => "--dir",
        "topics" => "--topics",
        "topics.rename" => "--rename",
        "restore.state.dir" => "--state-dir",
        "allow.non.empty.topics" => "--allow-non-empty",
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
        let a = restore_name("h1:9092", &t, &none);
        assert_ne!(a, restore_name("h2:9092", &t, &none));
        assert_ne!(a, restore_name("h1:9092", &t, &renamed));
        assert_eq!(a, restore_name("h1:9092", &t, &none));
    }
}
