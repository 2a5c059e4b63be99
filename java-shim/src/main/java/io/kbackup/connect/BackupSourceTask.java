package io.kbackup.connect;

import io.kbackup.connect.internal.BatchCodec;
import io.kbackup.connect.internal.BatchCodec.PolledHeader;
import io.kbackup.connect.internal.BatchCodec.PolledRecord;
import io.kbackup.connect.internal.Native;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.data.SchemaAndValue;
import org.apache.kafka.connect.header.ConnectHeaders;
import org.apache.kafka.connect.source.SourceRecord;
import org.apache.kafka.connect.source.SourceTask;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentLinkedQueue;

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

    private volatile long handle;
    private volatile boolean stopping;
    private final ConcurrentLinkedQueue<BatchCodec.Ack> acks = new ConcurrentLinkedQueue<>();
    private final Map<TopicPartition, Map<String, Object>> sourcePartitions = new HashMap<>();
    Map<String, String> renames = Map.of(); // package-private for tests
    private int batchSize;
    private String taskId;
    private long lastFinishedLog;

    @Override
    public String version() {
        return Version.get();
    }

    @Override
    public void start(Map<String, String> props) {
        BackupSourceConfig config = new BackupSourceConfig(props);
        String name = props.getOrDefault("name", "kbackup-restore");
        taskId = name + "-" + props.getOrDefault(BackupSourceConfig.TASK_INDEX_CONFIG, "0");
        renames = config.renames();
        batchSize = config.getInt(BackupSourceConfig.BATCH_SIZE_CONFIG);

        List<TopicPartition> assigned = parseAssignment(props.get(BackupSourceConfig.TASK_PARTITIONS_CONFIG));
        List<Map<String, Object>> keys = new ArrayList<>(assigned.size());
        for (TopicPartition tp : assigned) {
            Map<String, Object> key = sourcePartitionKey(tp);
            sourcePartitions.put(tp, key);
            keys.add(key);
        }
        Map<Map<String, Object>, Map<String, Object>> committed =
                keys.isEmpty() ? Map.of() : context.offsetStorageReader().offsets(keys);
        Map<TopicPartition, Long> assignment = new LinkedHashMap<>();
        for (TopicPartition tp : assigned) {
            Map<String, Object> off = committed == null ? null : committed.get(sourcePartitions.get(tp));
            Object o = off == null ? null : off.get(OFFSET_KEY);
            assignment.put(tp, o instanceof Number n ? n.longValue() : -1L);
        }
        Native.ensureLoaded();
        handle = Native.sourceOpen(config.toNativeJson(name, taskId), BatchCodec.encodeOffsets(assignment));
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
        long h = handle;
        if (stopping || h == 0) {
            return null;
        }
        List<BatchCodec.Ack> pending = new ArrayList<>();
        for (BatchCodec.Ack a; (a = acks.poll()) != null; ) {
            pending.add(a);
        }
        BatchCodec.PollBatch batch;
        try {
            batch = BatchCodec.decodeBatch(Native.sourcePoll(h, BatchCodec.encodeAcks(pending), batchSize));
        } catch (KbackupException e) {
            if (stopping) {
                return null; // stop() closed the handle under us: not a failure
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
        return out;
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
        TopicPartition original = new TopicPartition(r.topic(), r.partition());
        Map<String, Object> partitionKey = sourcePartitions.computeIfAbsent(original,
                BackupSourceTask::sourcePartitionKey);
        ConnectHeaders headers = new ConnectHeaders();
        for (PolledHeader h : r.headers()) {
            headers.add(h.key(), new SchemaAndValue(Schema.OPTIONAL_BYTES_SCHEMA, h.value()));
        }
        // A SourceRecord cannot carry the timestamp type: the original timestamp is sent as is
        // and the topic is held at CreateTime during the restore, so the broker keeps it; the
        // backed-up message.timestamp.type is applied when the restore finishes (docs/restore.md).
        Long timestamp = r.timestampType() == 0 || r.timestamp() < 0 ? null : r.timestamp();
        return new SourceRecord(partitionKey, Map.of(OFFSET_KEY, r.offset()),
                BackupSourceConfig.target(renames, r.topic()), r.partition(),
                Schema.OPTIONAL_BYTES_SCHEMA, r.key(), Schema.OPTIONAL_BYTES_SCHEMA, r.value(), timestamp, headers);
    }

    @Override
    public void commitRecord(SourceRecord record, RecordMetadata metadata) {
        Object topic = record.sourcePartition().get(PARTITION_TOPIC_KEY);
        Object partition = record.sourcePartition().get(PARTITION_KEY);
        Object offset = record.sourceOffset().get(OFFSET_KEY);
        if (topic instanceof String t && partition instanceof Number p && offset instanceof Number o) {
            // metadata is null when a transform filtered the record or errors.tolerance dropped
            // it: nothing was written, but the record is done (-1 = no new offset), so the
            // partition can still finish.
            long newOffset = metadata == null ? -1L : metadata.offset();
            acks.add(new BatchCodec.Ack(t, p.intValue(), o.longValue(), newOffset));
        }
    }

    @Override
    public void stop() {
        stopping = true;
        long h = handle;
        handle = 0;
        if (h != 0) {
            Native.sourceClose(h);
        }
    }
}
