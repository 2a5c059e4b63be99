package io.kbackup.connect.internal;

import org.apache.kafka.common.TopicPartition;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.lang.reflect.Method;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.DoubleSupplier;
import java.util.function.Supplier;

/**
 * A task's metrics, registered through Connect's plugin metrics (KIP-877,
 * {@code context.pluginMetrics()}, Kafka 4.1+), so they appear in the worker's JMX under
 * {@code kafka.connect:type=plugins,connector=...,task=...} with no extra setup.
 *
 * <p>The figures come from the core in ONE native call per snapshot ({@code sinkMetrics} /
 * {@code sourceMetrics}, JSON), cached for {@link #CACHE_MS} so a scrape of every gauge costs
 * one call. On a worker older than 4.1 the context has no {@code pluginMetrics()}: the task runs
 * without metrics (one log line says so). The classes of the plugin-metrics API are referenced
 * only by {@link PluginRegistry}, which is loaded after that check, so an old worker never
 * links them. Metric names are the core's field names in kebab case; docs/operations.md lists
 * them.
 */
public final class TaskMetrics {
    private static final Logger log = LoggerFactory.getLogger(TaskMetrics.class);

    /** How long one snapshot serves every gauge. */
    static final long CACHE_MS = 1000;

    /** Sink task-level metrics: core field name, description. */
    public static final String[][] SINK_TASK = {
        {"records_written", "Records appended to the backup by this task."},
        {"bytes_written", "Bytes appended to segment files by this task."},
        {"segments_rolled", "Segments finished because of size or age."},
        {"errors", "Writes and flushes that failed."},
        {"flushes", "Flushes (fsync rounds) done."},
        {"fsync_last_ms", "Duration of the last flush, ms."},
        {"fsync_avg_ms", "Mean duration of a flush, ms."},
        {"fsync_time_ms_total", "Total time spent flushing, ms."},
        {"partitions", "Partitions open in this task."},
        {"lag_records", "Offsets on the cluster not yet durable in the backup, summed over the task's partitions (-1: unknown)."},
        {"lag_ms", "Largest time lag of the task's partitions, ms (-1: unknown)."},
        {"group_captures", "Consumer-group offset captures that succeeded."},
        {"group_capture_errors", "Consumer-group offset captures that failed."},
        {"group_capture_last_success_ms", "End of the last successful group-offset capture, ms since the epoch (-1: none)."},
        {"groups_captured", "Groups read in the last successful capture."},
    };
    /** Sink per topic-partition metrics. */
    public static final String[][] SINK_PARTITION = {
        {"records_written", "Records of this partition appended by this task."},
        {"bytes_written", "Bytes of this partition appended to segment files."},
        {"segments_rolled", "Segments of this partition finished because of size or age."},
        {"errors", "I/O errors that stopped this partition until it was reopened."},
        {"durable_offset", "Last offset on stable storage (-1: none)."},
        {"end_offset", "End offset of the partition on the cluster at the last read (-1: unknown)."},
        {"lag_records", "End offset minus the next offset the backup needs (-1: unknown)."},
        {"lag_ms", "0 when caught up, else now minus the timestamp of the newest durable record, ms (-1: unknown)."},
        {"newest_durable_timestamp_ms", "Highest timestamp of the durable records, ms since the epoch (-1: none)."},
    };
    /** Source task-level metrics. */
    public static final String[][] SOURCE_TASK = {
        {"records_restored", "Records acknowledged as written to the target."},
        {"bytes_restored", "Key, value and header bytes of the records handed to Connect."},
        {"partitions", "Partitions assigned to this task."},
        {"partitions_done", "Partitions whose every backed-up record is acknowledged."},
        {"groups_committed", "Consumer groups committed on the target (per partition)."},
        {"groups_pending", "Consumer-group commits still waiting (per partition)."},
        {"groups_refused", "Consumer-group commits refused because the group has active members."},
        {"groups_failed", "Consumer-group commits that failed."},
        {"finished", "1 once this task's restore is finished."},
    };
    /** Source per topic-partition metrics (the original topic). */
    public static final String[][] SOURCE_PARTITION = {
        {"records_restored", "Records of this partition acknowledged as written."},
        {"acked_offset", "Every backed-up record up to this original offset is acknowledged (-1: none)."},
        {"last_offset", "Last backed-up original offset (-1: none)."},
        {"remaining_offsets", "Last backed-up offset minus the acknowledged one (0 when done)."},
        {"done", "1 once every backed-up record of the partition is acknowledged."},
        {"groups_committed", "Consumer groups committed on the target."},
        {"groups_pending", "Consumer-group commits still waiting."},
        {"groups_refused", "Consumer-group commits refused because the group has active members."},
        {"groups_failed", "Consumer-group commits that failed."},
    };

    /** Where gauges go; the plugin-metrics implementation, or a map in tests. */
    public interface Registry {
        void add(String name, String description, LinkedHashMap<String, String> tags, DoubleSupplier value);

        void remove(String name, LinkedHashMap<String, String> tags);
    }

    private final Registry registry;
    private final Supplier<byte[]> fetch;
    private final String[][] taskMetrics;
    private final String[][] partitionMetrics;
    private final Map<TopicPartition, Boolean> registered = new HashMap<>();
    private Map<String, Object> snapshot = Collections.emptyMap();
    private Map<TopicPartition, Map<String, Object>> byPartition = Collections.emptyMap();
    private long snapshotAt; // 0: never (System.currentTimeMillis() is far past it)

    TaskMetrics(Registry registry, Supplier<byte[]> fetch, String[][] taskMetrics, String[][] partitionMetrics) {
        this.registry = registry;
        this.fetch = fetch;
        this.taskMetrics = taskMetrics;
        this.partitionMetrics = partitionMetrics;
        for (String[] m : taskMetrics) {
            String key = m[0];
            registry.add(kebab(key), m[1], new LinkedHashMap<>(), () -> number(snapshot().get(key)));
        }
    }

    /**
     * Metrics for a task whose context is {@code context} (a SinkTaskContext or
     * SourceTaskContext), or null when the worker has no plugin metrics (Kafka before 4.1).
     * {@code fetch} answers the core's JSON snapshot, or null once the task is stopped.
     */
    public static TaskMetrics create(Class<?> contextType, Object context, Supplier<byte[]> fetch,
                                     String[][] taskMetrics, String[][] partitionMetrics) {
        Object pluginMetrics;
        try {
            // Looked up on the interface: the worker's class may not be public, and an older
            // connect-api on the worker's classpath has no such method at all.
            Method m = contextType.getMethod("pluginMetrics");
            pluginMetrics = m.invoke(context);
        } catch (NoSuchMethodException e) {
            log.info("this Connect worker has no plugin metrics (KIP-877, Kafka 4.1+): kbackup runs without metrics");
            return null;
        } catch (ReflectiveOperationException | RuntimeException | LinkageError e) {
            Throwable cause = e.getCause() != null ? e.getCause() : e;
            log.info("plugin metrics are not available on this worker ({}): kbackup runs without metrics", cause.toString());
            return null;
        }
        if (pluginMetrics == null) {
            return null;
        }
        try {
            return new TaskMetrics(new PluginRegistry(pluginMetrics), fetch, taskMetrics, partitionMetrics);
        } catch (LinkageError | RuntimeException e) {
            log.warn("could not register kbackup's metrics ({}); the task runs without them", e.toString());
            return null;
        }
    }

    /** For tests: metrics into any registry. */
    static TaskMetrics withRegistry(Registry registry, Supplier<byte[]> fetch, String[][] taskMetrics,
                                    String[][] partitionMetrics) {
        return new TaskMetrics(registry, fetch, taskMetrics, partitionMetrics);
    }

    /** Registers the per-partition gauges of newly assigned partitions. */
    public synchronized void partitionsOpened(Collection<TopicPartition> partitions) {
        for (TopicPartition tp : partitions) {
            if (registered.put(tp, Boolean.TRUE) != null) {
                continue;
            }
            for (String[] m : partitionMetrics) {
                String key = m[0];
                registry.add(kebab(key), m[1], tags(tp), () -> number(partition(tp).get(key)));
            }
        }
    }

    /** Removes the per-partition gauges of revoked partitions. */
    public synchronized void partitionsClosed(Collection<TopicPartition> partitions) {
        for (TopicPartition tp : partitions) {
            if (registered.remove(tp) == null) {
                continue;
            }
            for (String[] m : partitionMetrics) {
                try {
                    registry.remove(kebab(m[0]), tags(tp));
                } catch (RuntimeException e) {
                    log.debug("could not remove metric {} of {}: {}", m[0], tp, e.toString());
                }
            }
        }
    }

    /** Removes every gauge (the worker also drops them when the task stops). */
    public synchronized void close() {
        partitionsClosed(new ArrayList<>(registered.keySet()));
        for (String[] m : taskMetrics) {
            try {
                registry.remove(kebab(m[0]), new LinkedHashMap<>());
            } catch (RuntimeException e) {
                log.debug("could not remove metric {}: {}", m[0], e.toString());
            }
        }
    }

    /** The cached snapshot, refreshed by one native call when older than {@link #CACHE_MS}. */
    synchronized Map<String, Object> snapshot() {
        long now = System.currentTimeMillis();
        if (now - snapshotAt < CACHE_MS) {
            return snapshot;
        }
        snapshotAt = now;
        try {
            byte[] json = fetch.get();
            if (json == null) {
                snapshot = Collections.emptyMap();
                byPartition = Collections.emptyMap();
                return snapshot;
            }
            @SuppressWarnings("unchecked")
            Map<String, Object> parsed = (Map<String, Object>) Json.parse(json);
            Map<TopicPartition, Map<String, Object>> parts = new HashMap<>();
            Object list = parsed.get("partition_metrics");
            if (list instanceof List) {
                for (Object o : (List<?>) list) {
                    @SuppressWarnings("unchecked")
                    Map<String, Object> p = (Map<String, Object>) o;
                    parts.put(new TopicPartition((String) p.get("topic"), ((Number) p.get("partition")).intValue()), p);
                }
            }
            snapshot = parsed;
            byPartition = parts;
        } catch (RuntimeException e) {
            // A task stopping under a scrape, say: the gauges show nothing rather than fail JMX.
            log.debug("kbackup metrics snapshot failed: {}", e.toString());
            snapshot = Collections.emptyMap();
            byPartition = Collections.emptyMap();
        }
        return snapshot;
    }

    private synchronized Map<String, Object> partition(TopicPartition tp) {
        snapshot();
        Map<String, Object> p = byPartition.get(tp);
        return p == null ? Collections.emptyMap() : p;
    }

    private static double number(Object o) {
        return o instanceof Number ? ((Number) o).doubleValue() : Double.NaN;
    }

    static String kebab(String key) {
        return key.replace('_', '-');
    }

    private static LinkedHashMap<String, String> tags(TopicPartition tp) {
        LinkedHashMap<String, String> t = new LinkedHashMap<>();
        t.put("topic", tp.topic());
        t.put("partition", Integer.toString(tp.partition()));
        return t;
    }

    /** The only class that names the plugin-metrics API (Kafka 4.1+). */
    private static final class PluginRegistry implements Registry {
        private final org.apache.kafka.common.metrics.PluginMetrics metrics;

        PluginRegistry(Object pluginMetrics) {
            this.metrics = (org.apache.kafka.common.metrics.PluginMetrics) pluginMetrics;
        }

        @Override
        public void add(String name, String description, LinkedHashMap<String, String> tags, DoubleSupplier value) {
            org.apache.kafka.common.metrics.Measurable m = (config, now) -> value.getAsDouble();
            metrics.addMetric(metrics.metricName(name, description, tags), m);
        }

        @Override
        public void remove(String name, LinkedHashMap<String, String> tags) {
            metrics.removeMetric(metrics.metricName(name, "", tags));
        }
    }
}
