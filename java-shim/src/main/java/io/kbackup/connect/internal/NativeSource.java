package io.kbackup.connect.internal;

import io.kbackup.connect.BackupSourceConfig;
import io.kbackup.connect.KbackupException;
import org.apache.kafka.common.TopicPartition;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * One native restore reader (a source task's) in Connect's types, plus the connector-level
 * calls that take the connector's raw properties. The core parses those properties and owns
 * every restore rule ({@code kbackup_core::restore::props}); Java only forwards them.
 * {@link #poll} and {@link #close(List)} are serialized; {@link #metricsJson} runs on any
 * thread. {@link #close} is safe twice; any other call after it throws a {@link KbackupException}.
 */
public final class NativeSource implements AutoCloseable {
    private volatile long handle;
    /** Original topic -> target topic of the assigned partitions, as the core resolved them. */
    private final Map<String, String> targets;

    private NativeSource(long handle, Map<String, String> targets) {
        this.handle = handle;
        this.targets = targets;
    }

    /** Problems with the connector's raw properties, as config key -> messages (each names the fix). */
    public static Map<String, List<String>> validate(Map<String, String> props) {
        Native.ensureLoaded();
        Map<String, List<String>> out = new LinkedHashMap<>();
        Object problems = Json.parse(Native.sourceValidate(propsJson(props)));
        if (problems instanceof List<?>) {
            for (Object p : (List<?>) problems) {
                if (p instanceof Map<?, ?> && ((Map<?, ?>) p).get("message") != null) {
                    Map<?, ?> m = (Map<?, ?>) p;
                    Object key = m.get("key");
                    out.computeIfAbsent(key == null ? "source.dir" : key.toString(), k -> new ArrayList<>())
                            .add(m.get("message").toString());
                }
            }
        }
        return out;
    }

    /** Creates or checks the target topics (connector start); fails naming every config problem. */
    public static void prepare(Map<String, String> props, ClusterClient cluster) {
        Native.ensureLoaded();
        Native.sourcePrepare(propsJson(props), cluster);
    }

    /**
     * Opens a restore reader for the task's raw properties; {@code assignment} maps each
     * partition to Connect's committed source offset (-1: none).
     */
    public static NativeSource open(Map<String, String> props, Map<TopicPartition, Long> assignment,
                                    ClusterClient cluster) {
        Native.ensureLoaded();
        long h = Native.sourceOpen(propsJson(props), BatchEncoder.encodeOffsets(assignment), cluster);
        try {
            return new NativeSource(h, targetsOf(Json.parse(Native.sourceStatus(h))));
        } catch (RuntimeException e) {
            Native.sourceClose(h);
            throw e;
        }
    }

    /** The raw properties the core reads, without any credential ({@link BackupSourceConfig#coreProps}). */
    private static byte[] propsJson(Map<String, String> props) {
        return Json.write(BackupSourceConfig.coreProps(props));
    }

    /** Reads {@code partitions[].topic / target_topic} of the restore status JSON. */
    private static Map<String, String> targetsOf(Object status) {
        Map<String, String> out = new LinkedHashMap<>();
        Object parts = status instanceof Map<?, ?> ? ((Map<?, ?>) status).get("partitions") : null;
        if (parts instanceof List<?>) {
            for (Object p : (List<?>) parts) {
                if (p instanceof Map<?, ?>) {
                    Object topic = ((Map<?, ?>) p).get("topic");
                    Object target = ((Map<?, ?>) p).get("target_topic");
                    if (topic instanceof String && target instanceof String) {
                        out.put((String) topic, (String) target);
                    }
                }
            }
        }
        return Collections.unmodifiableMap(out);
    }

    /** The topic a backed-up topic is restored into. */
    public String targetTopic(String topic) {
        return targets.getOrDefault(topic, topic);
    }

    /** Original topic -> target topic of the assigned partitions. */
    public Map<String, String> targets() {
        return targets;
    }

    /** Hands over the acknowledgements gathered in {@code acks} and answers the next batch (possibly empty). */
    public PollBatch poll(List<AckBuffer> acks, int maxRecords) {
        byte[] polled;
        synchronized (this) {
            polled = Native.sourcePoll(handle(), AckBuffer.drain(acks), maxRecords);
        }
        return BatchDecoder.decodeBatch(polled);
    }

    /** Monitoring snapshot as JSON (docs/operations.md), or null once closed: gauges may read after a close. */
    public byte[] metricsJson() {
        long h = handle;
        return h == 0 ? null : Native.sourceMetrics(h);
    }

    /**
     * Hands the acknowledgements still in {@code lastAcks} to the core, which saves them at
     * once, then closes; safe twice. A failure to save them is thrown after the reader is closed.
     */
    public void close(List<AckBuffer> lastAcks) {
        long h;
        byte[] last;
        synchronized (this) {
            h = handle;
            handle = 0;
            if (h == 0) {
                return;
            }
            last = AckBuffer.drain(lastAcks);
        }
        try {
            Native.sourceAck(h, last);
        } finally {
            Native.sourceClose(h);
        }
    }

    /** Closes without handing over acknowledgements; safe twice. */
    @Override
    public void close() {
        close(List.of());
    }

    private long handle() {
        long h = handle;
        if (h == 0) {
            throw new KbackupException("this kbackup restore reader is closed (the task was stopped); a call after "
                    + "stop() is a bug in the caller, please report it");
        }
        return h;
    }
}
