//! The standalone restore pump: plays Connect's part for [`RestoreSource`].
//!
//! A transactional rdkafka producer writes each record to the same partition with its key,
//! value, headers and timestamp, a transaction spanning engine batches (bounded in records,
//! bytes, time and bytes in flight); once a transaction commits, its delivery reports become
//! the (original offset -> new offset) acknowledgements the next poll hands to the engine.
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bound on each transaction call (init, commit, abort) and on reading the target back.
const TXN_TIMEOUT: Duration = Duration::from_secs(60);
/// A transaction spans engine batches until one of these bounds: each commit waits for the
/// commit markers (make bench, 200,000 x 100 B: one transaction per 2,000-record batch moved
/// 12,000 records/s, 0.11 of ProducerPerformance), and a kill re-sends at most one of them.
const TXN_MAX_RECORDS: usize = 200_000;
const TXN_MAX_BYTES: u64 = 64 << 20;
const TXN_MAX_TIME: Duration = Duration::from_secs(2);
/// Payload bytes sent but not yet reported delivered: about this long of what the target has
/// accepted so far, within the bounds below. Without a bound the producer's queue takes a
/// whole transaction in milliseconds, the time bound means nothing, and against a slow
/// (throttled) target the commit waits for all of it, past the transaction timeout.
const IN_FLIGHT_TIME: Duration = Duration::from_millis(500);
const IN_FLIGHT_MIN_BYTES: u64 = 256 << 10;
const IN_FLIGHT_MAX_BYTES: u64 = 16 << 20;

/// The target's delivery rate over the last second or so, and from it the in-flight cap.
struct DeliveryRate {
    window_start: Instant,
    window_reported: u64,
    /// Bytes per second; until a first window closed, what was reported over one second.
    rate: f64,
}

impl DeliveryRate {
    fn new(reported: u64) -> Self {
        Self {
            window_start: Instant::now(),
            window_reported: reported,
            rate: 0.0,
        }
    }

    /// How many payload bytes may be in flight now. A window is at least one second long, so
    /// a throttled target's first burst (answered at once, then the client is muted) does not
    /// read as a fast one.
    fn cap(&mut self, reported: u64) -> u64 {
        let elapsed = self.window_start.elapsed().as_secs_f64();
        let window_rate = (reported - self.window_reported) as f64 / elapsed.max(1.0);
        if elapsed >= 1.0 {
            (self.window_start, self.window_reported) = (Instant::now(), reported);
            self.rate = window_rate;
        }
        let rate = self.rate.max(window_rate);
        ((rate * IN_FLIGHT_TIME.as_secs_f64()) as u64)
            .clamp(IN_FLIGHT_MIN_BYTES, IN_FLIGHT_MAX_BYTES)
    }
}

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
/// Where a produced record came from, and its payload bytes (for the in-flight bound).
type Origin = (String, i32, i64, u64);

/// Collects delivery reports as acknowledgements (called on our thread, inside `poll`).
#[derive(Default)]
struct AckContext {
    acks: Mutex<Vec<Ack>>,
    failure: Mutex<Option<(KafkaError, String)>>,
    /// Payload bytes of every delivery report so far, written or failed.
    reported_bytes: AtomicU64,
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
        let (topic, partition, original_offset, bytes) = *opaque;
        self.reported_bytes.fetch_add(bytes, Ordering::Relaxed);
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
    let t0 = std::time::Instant::now();
    kafka::list_topics(&cfg.cluster)?;
    log::debug!("restore: cluster reached in {:?}", t0.elapsed());
    // The producer initialises its transactions (connecting, finding its coordinator, up to
    // half a second of librdkafka's retry timer) while the topics are prepared. Before the
    // target is read back, this fences a killed run's producer and aborts its open
    // transaction, so read_committed shows exactly what was written for good.
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
    let (prepared, initialised) = std::thread::scope(|scope| {
        let init = scope.spawn(|| producer.init_transactions(TXN_TIMEOUT));
        let prepared = restore::prepare(cfg);
        log::debug!("restore: topics prepared at {:?}", t0.elapsed());
        (prepared, init.join())
    });
    prepared?;
    initialised
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        .map_err(|e| {
            kafka::acl_error(
                &cfg.cluster,
                &format!("initialise the restore's transactions (transactional.id {txn_id})"),
                &e,
                &format!(
                    "grant WRITE on transactional id {txn_id} (or on the prefix kbackup-restore-)"
                ),
            )
        })?;
    log::debug!("restore: transactions initialised at {:?}", t0.elapsed());

    // Resume where the acknowledged records end (the state files are the truth, as Connect's
    // committed source offsets are for the connector).
    let backup = cfg.open_backup()?;
    let mut assignment = Vec::new();
    for t in &cfg.topics {
        for p in backup.partitions(t)? {
            // No Connect offsets here: the state and the target say where to resume.
            assignment.push(TopicPartitionOffset::new(t.clone(), p, -1));
        }
    }

    let client: Arc<dyn ClusterClient> = Arc::new(RdKafkaCluster::new(&cfg.cluster));
    let mut target_log = KafkaTargetLog::new(Arc::clone(&client), TXN_TIMEOUT);
    let mut source =
        RestoreSource::open_with(cfg.clone(), &assignment, client, &mut target_log, true)?;

    log::debug!("restore: engine opened at {:?}", t0.elapsed());
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
    log::debug!(
        "restore: source opened, {total} records planned at {:?}",
        t0.elapsed()
    );
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

/// Polls the engine and produces, a transaction spanning batches up to the `TXN_MAX_*` bounds,
/// until it says finished (true) or a stop is requested (false). A transaction's
/// acknowledgements reach the engine only after it committed: the state never counts a record
/// a kill could still abort.
fn pump(
    cfg: &SourceConfig,
    source: &mut RestoreSource,
    producer: &BaseProducer<AckContext>,
    observer: &mut dyn RestoreObserver,
) -> Result<bool> {
    let mut committed: Vec<Ack> = Vec::new();
    let reported = || producer.context().reported_bytes.load(Ordering::Relaxed);
    let (mut sent_bytes, mut rate) = (reported(), DeliveryRate::new(reported()));
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
        let mut records = polled.into_records();
        if records.is_empty() {
            // Waiting for a group-commit retry or the other partitions of a topic.
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        producer
            .begin_transaction()
            .map_err(|e| kafka::kafka_error(&cfg.cluster, "begin a restore transaction", &e))?;
        let (started, txn_start_bytes) = (Instant::now(), sent_bytes);
        let mut sent = 0usize;
        loop {
            for r in &records {
                let b = send(cfg, producer, r)?;
                sent_bytes += b;
                // Delivery paces the transaction: wait while too much is in flight.
                while sent_bytes - reported() > rate.cap(reported()) {
                    producer.poll(Duration::from_millis(20));
                }
            }
            sent += records.len();
            if sent >= TXN_MAX_RECORDS
                || sent_bytes - txn_start_bytes >= TXN_MAX_BYTES
                || started.elapsed() >= TXN_MAX_TIME
                || observer.stop_requested()
            {
                break;
            }
            // More of the same transaction: nothing is acknowledged before it commits.
            match source.poll(&[], cfg.batch_size)? {
                Polled::Records(more) => records = more,
                Polled::Waiting | Polled::Finished => break,
            }
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
        if committed.len() != sent {
            return Err(Error::State(format!(
                "a restore transaction committed {} records but {} delivery reports came; \
                 run the same command again (it resumes from what the target holds)",
                sent,
                committed.len()
            )));
        }
        log::debug!(
            "restore transaction committed: {sent} records, {} bytes in {:?}",
            sent_bytes - txn_start_bytes,
            started.elapsed()
        );
        observer.progressed(committed.len() as u64);
    }
}

/// Sends one record to the same partition of the (renamed) topic, exactly as backed up;
/// returns the payload bytes its delivery report will count.
fn send(cfg: &SourceConfig, producer: &BaseProducer<AckContext>, r: &BatchRecord) -> Result<u64> {
    let target = cfg.target_topic(&r.topic);
    let bytes = r.record.payload_bytes();
    let mut headers = OwnedHeaders::new_with_capacity(r.record.headers.len());
    for h in &r.record.headers {
        headers = headers.insert(Header {
            key: &h.key,
            value: h.value.as_deref(),
        });
    }
    let mut rec: BaseRecord<'_, [u8], [u8], Box<Origin>> = BaseRecord::with_opaque_to(
        target,
        Box::new((r.topic.clone(), r.partition, r.record.offset, bytes)),
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
            Ok(()) => return Ok(bytes),
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
