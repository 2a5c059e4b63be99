package io.kbackup.connect;

import io.kbackup.connect.internal.AckBuffer;
import io.kbackup.connect.internal.ClusterClient;
import io.kbackup.connect.internal.NativeSource;
import io.kbackup.connect.internal.PollBatch;
import io.kbackup.connect.internal.PolledHeader;
import io.kbackup.connect.internal.PolledRecord;
import io.kbackup.connect.internal.TaskMetrics;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.data.SchemaAndValue;
import org.apache.kafka.connect.header.ConnectHeaders;
import org.apache.kafka.connect.source.SourceRecord;
import org.apache.kafka.connect.source.SourceTask;
import org.apache.kafka.connect.source.SourceTaskContext;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.ArrayList;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Forwards Connect's source calls to the core: one native call per {@link #poll}, which also
 * hands over the acknowledgements {@link #commitRecord} gathered (any thread, cheap).
 */
public class BackupSourceTask extends SourceTask {
    private static final Logger log = LoggerFactory.getLogger(BackupSourceTask.class);

    static final String PARTITION_TOPIC_KEY = "topic";
    static final String PARTITION_KEY = "partition";
    static final String OFFSET_KEY = "offset";

    /** Pause when the core has nothing to send yet (waiting for acks or reading ahead). */
    static final long IDLE_SLEEP_MS = 100;
    /** Pause once the restore is finished: nothing will come any more. */
    static final long FINISHED_SLEEP_MS = 1000;
    /** At most one "restore finished" line per this interval. */
    static final long FINISHED_LOG_INTERVAL_MS = 60_000;
    /**
     * Unacknowledged records (or 4 batches, if more) above which poll waits for
     * acknowledgements. Unbounded, the task read as far ahead as the producer's buffer.memory
     * allows (some 200,000 small records per task), and young collections copied and promoted
     * their objects again and again: a fifth to a quarter of the worker's CPU in a restore.
     */
    static final long MAX_UNACKED = 5_000;
    /** Poll stops waiting when no acknowledgement came for this long (exactly-once transactions hold them back). */
    static final long ACK_STALL_MS = 20;

    /** The core's restore reader; it serializes poll against the last hand-over in stop. */
    private volatile NativeSource source;
    private ClusterClient cluster;
    /** Plugin metrics (null on workers without KIP-877); gauges read the core on JMX threads. */
    private volatile TaskMetrics metrics;
    private volatile boolean stopping;
    /** Every partition seen; created by {@link #slot}, looked up from any thread. */
    private final Map<TopicPartition, Slot> slots = new ConcurrentHashMap<>();
    /** Copy-on-write views of {@link #slots} for the per-record paths: never modified once published. */
    private volatile List<AckBuffer> ackBuffers = List.of();
    private volatile Map<Map<String, Object>, Slot> slotsByKey = new IdentityHashMap<>();
    /** The slot of the previous polled record (task thread only): batches come partition by partition. */
    private Slot lastSlot;
    /** Original topic -> target topic, as the core resolved topics.rename (package-private for tests). */
    Map<String, String> renames = Map.of();
    private int batchSize;
    private String taskId;
    private long lastFinishedLog;
    /** Records returned by poll (task thread only). */
    private long handedOut;
    /** Acknowledgements counted when poll last stopped waiting because none came. */
    private long stalledAt = -1;

    /**
     * What every record of one partition shares: its source-partition key (one map for all its
     * records, which also finds the slot again in {@link #commitRecord}), its target topic and
     * the acknowledgements waiting for the next poll.
     */
    private static final class Slot {
        private final TopicPartition tp;
        private final Map<String, Object> key;
        private final String target;
        private final AckBuffer acks;

        Slot(TopicPartition tp, Map<String, Object> key, String target, AckBuffer acks) {
            this.tp = tp;
            this.key = key;
            this.target = target;
            this.acks = acks;
        }

        TopicPartition tp() {
            return tp;
        }

        Map<String, Object> key() {
            return key;
        }

        String target() {
            return target;
        }

        AckBuffer acks() {
            return acks;
        }
    }

    /** The slot of {@code tp}, created on first use. */
    private synchronized Slot slot(TopicPartition tp) {
        Slot s = slots.get(tp);
        if (s == null) {
            s = new Slot(tp, sourcePartitionKey(tp), renames.getOrDefault(tp.topic(), tp.topic()),
                    new AckBuffer(tp.topic(), tp.partition()));
            List<AckBuffer> buffers = new ArrayList<>(ackBuffers);
            buffers.add(s.acks());
            Map<Map<String, Object>, Slot> byKey = new IdentityHashMap<>(slotsByKey);
            byKey.put(s.key(), s);
            slots.put(tp, s);
            ackBuffers = List.copyOf(buffers);
            slotsByKey = byKey;
        }
        return s;
    }

    @Override
    public String version() {
        return Version.get();
    }

    @Override
    public void start(Map<String, String> props) {
        BackupSourceConfig config = new BackupSourceConfig(props);
        String name = props.getOrDefault("name", "kbackup-restore");
        taskId = name + "-" + props.getOrDefault(BackupSourceConfig.TASK_INDEX_CONFIG, "0");
        batchSize = config.getInt(BackupSourceConfig.BATCH_SIZE_CONFIG);

        List<TopicPartition> assigned = parseAssignment(props.get(BackupSourceConfig.TASK_PARTITIONS_CONFIG));
        List<Map<String, Object>> keys = new ArrayList<>(assigned.size());
        for (TopicPartition tp : assigned) {
            keys.add(sourcePartitionKey(tp));
        }
        Map<Map<String, Object>, Map<String, Object>> committed =
                keys.isEmpty() ? Map.of() : context.offsetStorageReader().offsets(keys);
        Map<TopicPartition, Long> assignment = new LinkedHashMap<>();
        for (int i = 0; i < assigned.size(); i++) {
            Map<String, Object> off = committed == null ? null : committed.get(keys.get(i));
            Object o = off == null ? null : off.get(OFFSET_KEY);
            assignment.put(assigned.get(i), o instanceof Number ? ((Number) o).longValue() : -1L);
        }
        cluster = new ClusterClient(config.clientProps());
        // The core parses the raw properties (topics.rename included) and answers the targets.
        NativeSource opened = NativeSource.open(props, assignment, cluster);
        source = opened;
        renames = opened.targets();
        for (TopicPartition tp : assigned) {
            slot(tp);
        }
        metrics = TaskMetrics.create(SourceTaskContext.class, context, opened::metricsJson,
                TaskMetrics.SOURCE_TASK, TaskMetrics.SOURCE_PARTITION);
        if (metrics != null) {
            metrics.partitionsOpened(assigned);
        }
        log.info("kbackup restore task {} started for {} partitions, resuming from {}", taskId, assigned.size(),
                assignment);
    }

    /** Parses {@code topic:partition,...} as written by the connector. */
    static List<TopicPartition> parseAssignment(String value) {
        List<TopicPartition> out = new ArrayList<>();
        if (value == null || value.isBlank()) {
            return out;
        }
        for (String e : value.split(",")) {
            int colon = e.lastIndexOf(':');
            if (colon <= 0) {
                throw new KbackupException("task config " + BackupSourceConfig.TASK_PARTITIONS_CONFIG + " entry '" + e
                        + "' is not topic:partition; this key is written by the connector, do not set it by hand");
            }
            try {
                out.add(new TopicPartition(e.substring(0, colon), Integer.parseInt(e.substring(colon + 1))));
            } catch (NumberFormatException ex) {
                throw new KbackupException("task config " + BackupSourceConfig.TASK_PARTITIONS_CONFIG + " entry '" + e
                        + "' has no partition number; this key is written by the connector, do not set it by hand");
            }
        }
        return out;
    }

    @Override
    public List<SourceRecord> poll() throws InterruptedException {
        NativeSource s = source;
        if (stopping || s == null) {
            return null;
        }
        awaitAcks();
        PollBatch batch;
        try {
            batch = s.poll(ackBuffers, batchSize);
        } catch (KbackupException e) {
            if (stopping) {
                return null; // stop() closed the reader (after handing the acks over): not a failure
            }
            throw e;
        }
        if (batch.records().isEmpty()) {
            if (batch.finished()) {
                long now = System.currentTimeMillis();
                if (now - lastFinishedLog >= FINISHED_LOG_INTERVAL_MS) {
                    lastFinishedLog = now;
                    log.info("kbackup restore task {}: restore finished; every assigned partition is restored and "
                            + "acknowledged (the connector can be deleted)", taskId);
                }
                Thread.sleep(FINISHED_SLEEP_MS);
            } else {
                Thread.sleep(IDLE_SLEEP_MS);
            }
            return null;
        }
        List<SourceRecord> out = new ArrayList<>(batch.records().size());
        for (PolledRecord r : batch.records()) {
            out.add(toSourceRecord(r));
        }
        handedOut += out.size();
        return out;
    }

    private long acked() {
        long n = 0;
        for (AckBuffer b : ackBuffers) {
            n += b.added();
        }
        return n;
    }

    /**
     * Waits (1 ms steps) while more than {@link #MAX_UNACKED} records are unacknowledged and
     * acknowledgements keep coming; never waits while they have stopped coming.
     */
    private void awaitAcks() throws InterruptedException {
        long limit = Math.max(MAX_UNACKED, 4L * batchSize);
        long acked = acked();
        if (acked == stalledAt) {
            return; // none came since the last wait gave up: do not wait on every poll
        }
        stalledAt = -1;
        long quietMs = 0;
        while (!stopping && handedOut - acked > limit) {
            if (quietMs >= ACK_STALL_MS) {
                stalledAt = acked;
                return;
            }
            Thread.sleep(1);
            long now = acked();
            quietMs = now == acked ? quietMs + 1 : 0;
            acked = now;
        }
    }

    /**
     * The source partition of a backed-up partition. Connect finds committed source offsets by
     * the SERIALIZED key, so its field order must be the same in every JVM: a sorted map, never
     * {@code Map.of}, whose iteration order is randomised per JVM.
     */
    static Map<String, Object> sourcePartitionKey(TopicPartition tp) {
        Map<String, Object> key = new TreeMap<>();
        key.put(PARTITION_TOPIC_KEY, tp.topic());
        key.put(PARTITION_KEY, tp.partition());
        return Collections.unmodifiableMap(key);
    }

    SourceRecord toSourceRecord(PolledRecord r) {
        Slot slot = lastSlot;
        if (slot == null || slot.tp().partition() != r.partition() || !slot.tp().topic().equals(r.topic())) {
            slot = slot(new TopicPartition(r.topic(), r.partition()));
            lastSlot = slot;
        }
        ConnectHeaders headers = new ConnectHeaders();
        for (PolledHeader h : r.headers()) {
            headers.add(h.key(), new SchemaAndValue(Schema.OPTIONAL_BYTES_SCHEMA, h.value()));
        }
        // A SourceRecord cannot carry the timestamp type: the original timestamp is sent as is
        // and the topic is held at CreateTime during the restore, so the broker keeps it; the
        // backed-up message.timestamp.type is applied when the restore finishes (docs/restore.md).
        Long timestamp = r.timestampType() == 0 || r.timestamp() < 0 ? null : r.timestamp();
        return new SourceRecord(slot.key(), Map.of(OFFSET_KEY, r.offset()), slot.target(), r.partition(),
                Schema.OPTIONAL_BYTES_SCHEMA, r.key(), Schema.OPTIONAL_BYTES_SCHEMA, r.value(), timestamp, headers);
    }

    @Override
    public void commitRecord(SourceRecord record, RecordMetadata metadata) {
        // Usually the very map toSourceRecord set; a transform may have replaced it with an equal one.
        Slot slot = slotsByKey.get(record.sourcePartition());
        if (slot == null) {
            Object topic = record.sourcePartition().get(PARTITION_TOPIC_KEY);
            Object partition = record.sourcePartition().get(PARTITION_KEY);
            if (!(topic instanceof String && partition instanceof Number)) {
                return;
            }
            slot = slot(new TopicPartition((String) topic, ((Number) partition).intValue()));
        }
        Object o = record.sourceOffset().get(OFFSET_KEY);
        if (o instanceof Number) {
            // metadata is null when a transform filtered the record or errors.tolerance dropped
            // it: nothing was written, but the record is done (-1 = no new offset), so the
            // partition can still finish.
            long newOffset = metadata == null ? -1L : metadata.offset();
            slot.acks().add(((Number) o).longValue(), newOffset);
        }
    }

    /**
     * Connect calls this after its final offset commit, so the source offsets of every record
     * acknowledged so far are committed: the acknowledgements still in the buffers go to the
     * core (which saves them) before the handle closes, or the restarted task would wait for
     * them forever.
     */
    @Override
    public void stop() {
        stopping = true;
        TaskMetrics m = metrics;
        metrics = null;
        if (m != null) {
            m.close();
        }
        NativeSource s = source;
        source = null;
        if (s == null) {
            return;
        }
        try {
            s.close(ackBuffers);
        } catch (RuntimeException e) {
            log.error("kbackup restore task {}: could not save the last acknowledgements before stopping; "
                    + "the next start reconciles them from the target topic", taskId, e);
        } finally {
            if (cluster != null) {
                cluster.close();
                cluster = null;
            }
        }
    }
}
