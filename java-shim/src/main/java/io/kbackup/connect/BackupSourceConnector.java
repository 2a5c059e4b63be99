package io.kbackup.connect;

import io.kbackup.connect.internal.BackupSummary;
import io.kbackup.connect.internal.ClusterClient;
import io.kbackup.connect.internal.ConfigChecks;
import io.kbackup.connect.internal.Json;
import io.kbackup.connect.internal.Native;
import org.apache.kafka.common.config.Config;
import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.common.config.ConfigException;
import org.apache.kafka.connect.connector.Task;
import org.apache.kafka.connect.source.ExactlyOnceSupport;
import org.apache.kafka.connect.source.SourceConnector;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

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
        Native.ensureLoaded();
        Map<String, List<Integer>> inBackup =
                BackupSummary.topicPartitions(config.getString(BackupSourceConfig.SOURCE_DIR_CONFIG));
        List<String> parts = new ArrayList<>();
        for (String topic : config.topics()) {
            List<Integer> ps = inBackup.get(topic);
            if (ps == null) {
                throw new KbackupException("topic '" + topic + "' listed in " + BackupSourceConfig.TOPICS_CONFIG
                        + " is not in the backup " + config.getString(BackupSourceConfig.SOURCE_DIR_CONFIG)
                        + " (it holds " + inBackup.keySet() + "): fix the topic list");
            }
            for (int p : ps) {
                parts.add(topic + ":" + p);
            }
        }
        try (ClusterClient cluster = new ClusterClient(config.clientProps())) {
            Native.sourcePrepare(config.toNativeJson(name, name + "-connector"), cluster);
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

    @Override
    public Config validate(Map<String, String> props) {
        ConfigChecks.Errors errors = new ConfigChecks.Errors(super.validate(props));
        String dirKey = BackupSourceConfig.SOURCE_DIR_CONFIG;
        String dir = props.get(dirKey);
        String dirProblem = ConfigChecks.directoryProblem(dirKey, dir, false, false);
        if (dirProblem != null) {
            if (errors.hasErrors(dirKey)) {
                errors.replace(dirKey, dirProblem);
            } else {
                errors.add(dirKey, dirProblem);
            }
        }
        errors.replace(BackupSourceConfig.CLUSTER_BOOTSTRAP_SERVERS_CONFIG,
                BackupSourceConfig.CLUSTER_BOOTSTRAP_SERVERS_CONFIG + " is required: set it to the bootstrap "
                        + "servers of the cluster restored into (kbackup creates topics and commits group offsets "
                        + "there)");
        errors.replace(BackupSourceConfig.TOPICS_CONFIG, BackupSourceConfig.TOPICS_CONFIG + " is required: list "
                + "the backed-up topics to restore, separated by commas (`kbackup inspect DIR` shows them)");
        ConfigChecks.requireByteArrayConverters(props, errors, "so restored keys, values and headers are the "
                + "original bytes");
        if (!errors.hasErrors(BackupSourceConfig.CLUSTER_BOOTSTRAP_SERVERS_CONFIG)) {
            ConfigChecks.clusterProblems(BackupSinkConfig.clientProps(props, PRODUCER_OVERRIDE),
                    name -> BackupSinkConfig.sourceKey(props, PRODUCER_OVERRIDE, name), List.of(),
                    BackupSourceConfig.CLUSTER_BOOTSTRAP_SERVERS_CONFIG, BackupSourceConfig.TOPICS_CONFIG)
                    .forEach(errors::add);
        }

        Map<String, String> renames = Map.of();
        try {
            renames = BackupSourceConfig.parseRenames(props.get(BackupSourceConfig.TOPICS_RENAME_CONFIG));
        } catch (ConfigException e) {
            errors.add(BackupSourceConfig.TOPICS_RENAME_CONFIG, e.getMessage());
        }
        Set<String> targets = new HashSet<>();
        List<String> topics = listOf(props.get(BackupSourceConfig.TOPICS_CONFIG));
        for (String t : topics) {
            String target = BackupSourceConfig.target(renames, t);
            String problem = ConfigChecks.topicNameProblem(target);
            if (problem != null) {
                String key = renames.containsKey(t) ? BackupSourceConfig.TOPICS_RENAME_CONFIG
                        : BackupSourceConfig.TOPICS_CONFIG;
                errors.add(key, problem + ": choose a valid target name in " + BackupSourceConfig.TOPICS_RENAME_CONFIG);
            } else if (!targets.add(target)) {
                errors.add(BackupSourceConfig.TOPICS_RENAME_CONFIG, "two restored topics would both be written to '"
                        + target + "': give each a different target in " + BackupSourceConfig.TOPICS_RENAME_CONFIG);
            }
        }
        for (String from : renames.keySet()) {
            if (!topics.contains(from)) {
                errors.add(BackupSourceConfig.TOPICS_RENAME_CONFIG, "topic '" + from + "' is renamed but not listed in "
                        + BackupSourceConfig.TOPICS_CONFIG + ": add it there or drop the rename");
            }
        }

        if (dirProblem == null) {
            try {
                Map<String, List<Integer>> inBackup = BackupSummary.topicPartitions(dir);
                for (String t : topics) {
                    if (!inBackup.containsKey(t)) {
                        errors.add(BackupSourceConfig.TOPICS_CONFIG, "topic '" + t + "' is not in the backup " + dir
                                + " (it holds " + inBackup.keySet() + "): fix the topic list");
                    }
                }
                // The core's own checks need a config that parses; they would repeat the above.
                if (nativeChecksPossible(errors)) {
                    BackupSourceConfig config = new BackupSourceConfig(props);
                    String name = props.getOrDefault("name", "kbackup-restore");
                    Object problems = Json.parse(Native.sourceValidate(config.toNativeJson(name, name + "-validate")));
                    if (problems instanceof List<?>) {
                        for (Object p : (List<?>) problems) {
                            if (p instanceof Map<?, ?> && ((Map<?, ?>) p).get("message") != null) {
                                Map<?, ?> m = (Map<?, ?>) p;
                                Object key = m.get("key");
                                errors.add(key == null ? dirKey : key.toString(), m.get("message").toString());
                            }
                        }
                    }
                }
            } catch (ConfigException e) {
                // Already reported by the ConfigDef validation above, under its own key.
            } catch (KbackupException | KbackupRetriableException e) {
                errors.add(dirKey, e.getMessage());
            }
        }
        return errors.toConfig();
    }

    private static boolean nativeChecksPossible(ConfigChecks.Errors errors) {
        return !errors.hasErrors(BackupSourceConfig.TOPICS_CONFIG)
                && !errors.hasErrors(BackupSourceConfig.TOPICS_RENAME_CONFIG)
                && !errors.hasErrors(BackupSourceConfig.CLUSTER_BOOTSTRAP_SERVERS_CONFIG)
                && !errors.hasErrors(BackupSourceConfig.BATCH_SIZE_CONFIG);
    }

    private static List<String> listOf(String value) {
        List<String> out = new ArrayList<>();
        if (value != null) {
            for (String s : value.split(",")) {
                if (!s.trim().isEmpty()) {
                    out.add(s.trim());
                }
            }
        }
        return out;
    }
}
