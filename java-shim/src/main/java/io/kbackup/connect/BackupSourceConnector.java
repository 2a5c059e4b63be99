package io.kbackup.connect;

import io.kbackup.connect.internal.BackupSummary;
import io.kbackup.connect.internal.ClusterClient;
import io.kbackup.connect.internal.ConfigChecks;
import io.kbackup.connect.internal.NativeSource;
import org.apache.kafka.common.config.Config;
import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.connect.connector.Task;
import org.apache.kafka.connect.source.ExactlyOnceSupport;
import org.apache.kafka.connect.source.SourceConnector;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Restores backed-up topics into the cluster this worker produces to. {@link #start} creates the
 * target topics (through the core); {@link #taskConfigs} spreads the backup's topic-partitions
 * round-robin over the tasks.
 */
public class BackupSourceConnector extends SourceConnector {
    private static final Logger log = LoggerFactory.getLogger(BackupSourceConnector.class);

    private Map<String, String> props;
    private List<String> assignments;

    @Override
    public String version() {
        return Version.get();
    }

    @Override
    public void start(Map<String, String> props) {
        BackupSourceConfig config = new BackupSourceConfig(props);
        String name = props.getOrDefault("name", "kbackup-restore");
        // The core checks the raw properties (every restore rule) before it touches the cluster.
        try (ClusterClient cluster = new ClusterClient(config.clientProps())) {
            NativeSource.prepare(props, cluster);
        }
        String dir = config.getString(BackupSourceConfig.SOURCE_DIR_CONFIG);
        Map<String, List<Integer>> inBackup = BackupSummary.topicPartitions(dir, props);
        List<String> parts = new ArrayList<>();
        for (String topic : config.topics()) {
            if (topic.isBlank()) {
                continue;
            }
            List<Integer> ps = inBackup.get(topic.trim());
            if (ps == null) { // the core found it a moment ago
                throw new KbackupException("topic '" + topic + "' disappeared from the backup " + dir
                        + " while the restore started: keep the backup unchanged during a restore");
            }
            for (int p : ps) {
                parts.add(topic.trim() + ":" + p);
            }
        }
        this.props = new HashMap<>(props);
        this.assignments = parts;
        log.info("kbackup restore {} prepared: {} partitions of {} topics", name, parts.size(), config.topics().size());
    }

    @Override
    public Class<? extends Task> taskClass() {
        return BackupSourceTask.class;
    }

    @Override
    public List<Map<String, String>> taskConfigs(int maxTasks) {
        List<String> lists = spread(assignments, maxTasks);
        List<Map<String, String>> out = new ArrayList<>(lists.size());
        for (int i = 0; i < lists.size(); i++) {
            Map<String, String> c = new HashMap<>(props);
            c.put(BackupSourceConfig.TASK_PARTITIONS_CONFIG, lists.get(i));
            c.put(BackupSourceConfig.TASK_INDEX_CONFIG, Integer.toString(i));
            out.add(c);
        }
        return out;
    }

    /**
     * Deals {@code topic:partition} entries round-robin over at most {@code maxTasks} tasks (no
     * task without work, but at least one task); each task's list is comma-separated.
     */
    static List<String> spread(List<String> parts, int maxTasks) {
        int n = Math.max(1, Math.min(maxTasks, parts.size()));
        List<StringBuilder> lists = new ArrayList<>(n);
        for (int i = 0; i < n; i++) {
            lists.add(new StringBuilder());
        }
        for (int i = 0; i < parts.size(); i++) {
            StringBuilder sb = lists.get(i % n);
            if (sb.length() > 0) {
                sb.append(',');
            }
            sb.append(parts.get(i));
        }
        List<String> out = new ArrayList<>(n);
        lists.forEach(sb -> out.add(sb.toString()));
        return out;
    }

    @Override
    public void stop() {
    }

    @Override
    public ConfigDef config() {
        return BackupSourceConfig.CONFIG_DEF;
    }

    @Override
    public ExactlyOnceSupport exactlyOnceSupport(Map<String, String> connectorConfig) {
        // Source offsets are original offsets, committed in the same transaction as the records.
        return ExactlyOnceSupport.SUPPORTED;
    }

    private static final String PRODUCER_OVERRIDE = "producer.override.";

    /**
     * The ConfigDef's own checks, the converters and the connection to the target cluster stay
     * here (they belong to the worker); every restore rule is the core's, which answers its
     * problems keyed by config key and replaces the ConfigDef's generic messages for those keys.
     */
    @Override
    public Config validate(Map<String, String> props) {
        ConfigChecks.Errors errors = new ConfigChecks.Errors(super.validate(props));
        ConfigChecks.requireByteArrayConverters(props, errors, "so restored keys, values and headers are the "
                + "original bytes");
        if (!errors.hasErrors(BackupSourceConfig.CLUSTER_BOOTSTRAP_SERVERS_CONFIG)) {
            ConfigChecks.clusterProblems(BackupSinkConfig.clientProps(props, PRODUCER_OVERRIDE),
                    name -> BackupSinkConfig.sourceKey(props, PRODUCER_OVERRIDE, name), List.of(),
                    BackupSourceConfig.CLUSTER_BOOTSTRAP_SERVERS_CONFIG, BackupSourceConfig.TOPICS_CONFIG)
                    .forEach(errors::add);
        }
        try {
            for (Map.Entry<String, List<String>> e : NativeSource.validate(props).entrySet()) {
                List<String> messages = e.getValue();
                int from = 0;
                if (errors.hasErrors(e.getKey())) {
                    errors.replace(e.getKey(), messages.get(0));
                    from = 1;
                }
                for (String m : messages.subList(from, messages.size())) {
                    errors.add(e.getKey(), m);
                }
            }
        } catch (KbackupException | KbackupRetriableException e) {
            errors.add(BackupSourceConfig.SOURCE_DIR_CONFIG, e.getMessage());
        }
        return errors.toConfig();
    }
}
