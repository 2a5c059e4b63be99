//! The standalone restore pump: plays Connect's part for [`RestoreSource`].
//!
//! A transactional rdkafka producer writes each record to the same partition with its key,
//! value, headers and timestamp, one transaction per engine batch; once a transaction commits,
//! its delivery reports become the (original offset -> new offset) acknowledgements the next
//! poll hands to the engine.
//!
//! Exactly once across kills: the target's committed records are the restore position. A re-run
//! first initialises the producer with the same `transactional.id` (which fences the killed
//! run's producer and aborts its open transaction), then opens the engine, which reads the
//! target after the last record its state knows and takes the copies found there as
//! acknowledged ([`crate::reconcile`]): nothing committed is written again, nothing aborted is
//! counted.

use crate::cluster::ClusterClient;
use crate::error::{Error, Result};
use crate::kafka::{self, RdKafkaCluster};
use crate::reader::Backup;
use crate::reconcile::KafkaTargetLog;
use crate::record::TopicPartitionOffset;
use crate::record::{Ack, BatchRecord};
use crate::restore::SourceConfig;
use crate::restore::{self, CommitState, PartitionState, Polled, RestoreSource, RestoreStatus};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::Message;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Bound on each transaction call (init, commit, abort) and on reading the target back.
const TXN_TIMEOUT: Duration = Duration::from_secs(60);

/// What the front end sees of a running restore.
pub trait RestoreObserver {
    /// Once, before the first record: records left to restore.
    fn planned(&mut self, _total: u64) {}
    /// This many more records are committed on the target.
    fn progressed(&mut self, _records: u64) {}
    /// After every poll of the engine: publish metrics when due (always once `finished`).
    fn tick(&mut self, _source: &RestoreSource, _finished: bool) {}
    /// True once the restore should stop (a signal); it resumes on the next run.
    fn stop_requested(&self) -> bool;
}

/// How a restore ended.
#[derive(Debug, Clone)]
pub struct RestoreOutcome {
    /// Everything is restored, acknowledged and settled (false: stopped, resume by re-running).
    pub finished: bool,
    /// The engine's status at the end.
    pub status: RestoreStatus,
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
        kafka::client_log(level, fac, message);
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

/// Restores `cfg` (already validated) to its end or until stopped.
///
/// `Err` for a failure (the open transaction is aborted; a re-run resumes from what the
/// target holds) and for a finished restore whose group commits failed (a re-run retries only
/// those).
pub fn run_restore(
    cfg: &SourceConfig,
    observer: &mut dyn RestoreObserver,
) -> Result<RestoreOutcome> {
    // Bounded connection check first: an unreachable cluster fails in 10 s with one line.
    kafka::list_topics(&cfg.cluster)?;
    restore::prepare(cfg)?;

    // Resume where the acknowledged records end (the state files are the truth, as Connect's
    // committed source offsets are for the connector).
    let backup = Backup::open(&cfg.source_dir)?;
    let mut assignment = Vec::new();
    for t in &cfg.topics {
        for p in backup.partitions(t)? {
            // No Connect offsets here: the state and the target say where to resume.
            assignment.push(TopicPartitionOffset::new(t.clone(), p, -1));
        }
    }

    let txn_id = cfg.transactional_id();
    let producer = kafka::producer(
        &cfg.cluster,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", "5"),
            ("transactional.id", &txn_id),
            ("message.max.bytes", "1000000000"),
        ],
        AckContext::default(),
    )?;
    // Before reading the target back: fences a killed run's producer and aborts its open
    // transaction, so read_committed shows exactly what was written for good.
    producer.init_transactions(TXN_TIMEOUT).map_err(|e| {
        kafka::acl_error(
            &cfg.cluster,
            &format!("initialise the restore's transactions (transactional.id {txn_id})"),
            &e,
            &format!(
                "grant WRITE on transactional id {txn_id} (or on the prefix kbackup-restore-)"
            ),
        )
    })?;
    let client: Arc<dyn ClusterClient> = Arc::new(RdKafkaCluster::new(&cfg.cluster));
    let mut target_log = KafkaTargetLog::new(Arc::clone(&client), TXN_TIMEOUT);
    let mut source =
        RestoreSource::open_with(cfg.clone(), &assignment, client, &mut target_log, true)?;

    // The total to restore: the window's records (counted when the state was made), or the
    // whole partition's.
    let mut total = 0u64;
    for s in source.status().partitions {
        let count = match s.window_records {
            Some(n) => n,
            None => backup.partition(&s.topic, s.partition)?.record_count()?,
        };
        total += count.saturating_sub(s.records_restored);
    }
    observer.planned(total);
    let result = pump(cfg, &mut source, &producer, observer);
    if result.is_err() {
        // Nothing of the failed transaction may become visible; the re-run reads the target.
        let _ = producer.abort_transaction(TXN_TIMEOUT);
    }
    let status = source.status();
    let closed = source.close();
    let finished = result?;
    closed?;
    Ok(RestoreOutcome { finished, status })
}

/// A group commit that failed (a missing ACL, say) is not a finished restore: the records are
/// in place, but the group would not resume where it stood. A re-run retries only the commits.
pub fn failed_group_commits(partitions: &[PartitionState]) -> Result<()> {
    let mut failed: BTreeMap<&str, (Vec<String>, &str)> = BTreeMap::new();
    for p in partitions {
        for g in &p.groups {
            if let CommitState::Failed { reason } = &g.commit {
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
/// a stop is requested (false). A batch's acknowledgements reach the engine only after its
/// transaction committed: the state never counts a record a kill could still abort.
fn pump(
    cfg: &SourceConfig,
    source: &mut RestoreSource,
    producer: &BaseProducer<AckContext>,
    observer: &mut dyn RestoreObserver,
) -> Result<bool> {
    let mut committed: Vec<Ack> = Vec::new();
    loop {
        let polled = source.poll(&committed, cfg.batch_size)?;
        committed.clear();
        let finished = matches!(polled, Polled::Finished);
        observer.tick(source, finished);
        if finished {
            return Ok(true);
        }
        if observer.stop_requested() {
            return Ok(false);
        }
        let records = polled.into_records();
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
        observer.progressed(committed.len() as u64);
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
