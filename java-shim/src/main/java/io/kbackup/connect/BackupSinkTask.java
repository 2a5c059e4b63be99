package io.kbackup.connect;

import io.kbackup.connect.internal.ClusterClient;
import io.kbackup.connect.internal.Native;
import io.kbackup.connect.internal.NativeSink;
import io.kbackup.connect.internal.TaskMetrics;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.connect.sink.SinkRecord;
import org.apache.kafka.connect.sink.SinkTask;
import org.apache.kafka.connect.sink.SinkTaskContext;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Map;
import java.util.Set;

/**
 * Forwards Connect's sink calls to the core, one native call each. The backup files, not
 * Connect's committed offsets, decide where a partition resumes ({@link #open}), and only
 * durable offsets are committed ({@link #preCommit}).
 */
public class BackupSinkTask extends SinkTask {
    private static final Logger log = LoggerFactory.getLogger(BackupSinkTask.class);

    private volatile NativeSink sink;
    private ClusterClient cluster;
    /** Plugin metrics (null on workers without KIP-877); gauges read the core on JMX threads. */
    private TaskMetrics metrics;
    private final Set<TopicPartition> assigned = new HashSet<>();

    @Override
    public String version() {
        return Version.get();
    }

    @Override
    public void start(Map<String, String> props) {
        BackupSinkConfig config = new BackupSinkConfig(props);
        String name = props.getOrDefault("name", "kbackup-sink");
        String taskId = name + "-" + props.getOrDefault(BackupSinkConfig.TASK_INDEX_CONFIG, "0");
        Native.ensureLoaded();
        cluster = new ClusterClient(config.clientProps());
        NativeSink opened = NativeSink.open(config.toNativeJson(name, taskId), cluster);
        sink = opened;
        metrics = TaskMetrics.create(SinkTaskContext.class, context, opened::metricsJson,
                TaskMetrics.SINK_TASK, TaskMetrics.SINK_PARTITION);
        log.info("kbackup sink task {} started, writing to {} ({})", taskId,
                config.getString(BackupSinkConfig.TARGET_DIR_CONFIG), Native.version());
    }

    @Override
    public void open(Collection<TopicPartition> partitions) {
        if (partitions.isEmpty()) {
            return;
        }
        Map<TopicPartition, Long> resume = sink.open(partitions);
        assigned.addAll(partitions);
        if (metrics != null) {
            metrics.partitionsOpened(partitions);
        }
        for (Map.Entry<TopicPartition, Long> e : resume.entrySet()) {
            if (e.getValue() >= 0) {
                context.offset(e.getKey(), e.getValue());
            }
        }
    }

    @Override
    public void put(Collection<SinkRecord> records) {
        // Also when empty: the core then reports a group-offset capture that keeps failing,
        // which fails the task instead of leaving it RUNNING without group positions.
        sink.put(records);
    }

    @Override
    public Map<TopicPartition, OffsetAndMetadata> preCommit(Map<TopicPartition, OffsetAndMetadata> currentOffsets) {
        Map<TopicPartition, Long> durable = sink.flush();
        Map<TopicPartition, OffsetAndMetadata> out = new HashMap<>();
        for (Map.Entry<TopicPartition, Long> e : durable.entrySet()) {
            if (e.getValue() >= 0 && assigned.contains(e.getKey())) {
                out.put(e.getKey(), new OffsetAndMetadata(e.getValue()));
            }
        }
        return out;
    }

    @Override
    public void close(Collection<TopicPartition> partitions) {
        NativeSink s = sink;
        if (s == null || partitions.isEmpty()) {
            return;
        }
        assigned.removeAll(partitions);
        if (metrics != null) {
            metrics.partitionsClosed(partitions);
        }
        s.close(partitions);
    }

    @Override
    public void stop() {
        NativeSink s = sink;
        sink = null;
        assigned.clear();
        if (metrics != null) {
            metrics.close();
            metrics = null;
        }
        try {
            if (s != null) {
                s.close();
            }
        } finally {
            if (cluster != null) {
                cluster.close();
                cluster = null;
            }
        }
    }
}
