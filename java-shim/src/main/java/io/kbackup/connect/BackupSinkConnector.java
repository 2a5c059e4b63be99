package io.kbackup.connect;

import io.kbackup.connect.internal.ClusterClient;
import io.kbackup.connect.internal.ConfigChecks;
import io.kbackup.connect.internal.Native;
import io.kbackup.connect.internal.NativeSink;
import org.apache.kafka.common.config.Config;
import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.connect.connector.Task;
import org.apache.kafka.connect.sink.SinkConnector;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.function.Function;
import java.util.stream.Collectors;

/**
 * Backs up the records of {@code topics} / {@code topics.regex} into {@code target.dir}, plus the
 * consumer-group offsets of those partitions. The work is in the tasks; Connect spreads the
 * partitions over them.
 */
public class BackupSinkConnector extends SinkConnector {
    static final String ISOLATION_KEY = "consumer.override.isolation.level";
    private static final String CONSUMER_OVERRIDE = "consumer.override.";

    private Map<String, String> props;

    @Override
    public String version() {
        return Version.get();
    }

    @Override
    public void start(Map<String, String> props) {
        BackupSinkConfig config = new BackupSinkConfig(props); // fail fast on a bad config
        String name = props.getOrDefault("name", "kbackup-sink");
        // Create the backup root (and its marker) once, here, before any task starts: tasks
        // starting together on a new directory would otherwise race to initialize it.
        Native.ensureLoaded();
        try (ClusterClient cluster = new ClusterClient(config.clientProps())) {
            NativeSink.open(config.toNativeJson(name, name + "-connector"), cluster).close();
        }
        this.props = new HashMap<>(props);
    }

    @Override
    public Class<? extends Task> taskClass() {
        return BackupSinkTask.class;
    }

    @Override
    public List<Map<String, String>> taskConfigs(int maxTasks) {
        List<Map<String, String>> out = new ArrayList<>(maxTasks);
        for (int i = 0; i < maxTasks; i++) {
            Map<String, String> c = new HashMap<>(props);
            c.put(BackupSinkConfig.TASK_INDEX_CONFIG, Integer.toString(i));
            out.add(c);
        }
        return out;
    }

    @Override
    public void stop() {
    }

    @Override
    public ConfigDef config() {
        return BackupSinkConfig.CONFIG_DEF;
    }

    /** What validate() asks the backed-up cluster; unit tests without a broker replace it. */
    interface ClusterCheck {
        Map<String, String> problems(Map<String, String> clientProps, Function<String, String> keyOf,
                                     List<String> topics, String bootstrapKey, String topicsKey);
    }

    ClusterCheck clusterCheck = ConfigChecks::clusterProblems;

    @Override
    public Config validate(Map<String, String> props) {
        ConfigChecks.Errors errors = new ConfigChecks.Errors(super.validate(props));
        String dir = props.get(BackupSinkConfig.TARGET_DIR_CONFIG);
        String dirProblem = ConfigChecks.directoryProblem(BackupSinkConfig.TARGET_DIR_CONFIG, dir, props, true,
                true);
        if (dirProblem != null) {
            if (errors.hasErrors(BackupSinkConfig.TARGET_DIR_CONFIG)) {
                errors.replace(BackupSinkConfig.TARGET_DIR_CONFIG, dirProblem);
            } else {
                errors.add(BackupSinkConfig.TARGET_DIR_CONFIG, dirProblem);
            }
        }
        errors.replace(BackupSinkConfig.CLUSTER_BOOTSTRAP_SERVERS_CONFIG, BackupSinkConfig.CLUSTER_BOOTSTRAP_SERVERS_CONFIG
                + " is required: set it to the bootstrap servers of the cluster being backed up (kbackup reads "
                + "topic configs and consumer-group offsets there)");
        if (!errors.hasErrors(BackupSinkConfig.CLUSTER_BOOTSTRAP_SERVERS_CONFIG)) {
            String topics = props.getOrDefault("topics", "").trim();
            List<String> listed = topics.isEmpty() ? List.of()
                    : Arrays.stream(topics.split(",")).map(String::trim).filter(t -> !t.isEmpty())
                            .collect(Collectors.toUnmodifiableList());
            clusterCheck.problems(BackupSinkConfig.clientProps(props, CONSUMER_OVERRIDE),
                    name -> BackupSinkConfig.sourceKey(props, CONSUMER_OVERRIDE, name), listed,
                    BackupSinkConfig.CLUSTER_BOOTSTRAP_SERVERS_CONFIG, "topics").forEach(errors::add);
        }
        ConfigChecks.requireByteArrayConverters(props, errors, "so the backup stores every key, value and header "
                + "byte for byte");
        String isolation = props.get(ISOLATION_KEY);
        if (isolation == null || !isolation.trim().equals("read_committed")) {
            errors.add(ISOLATION_KEY, ISOLATION_KEY + " is " + (isolation == null ? "not set (Connect's consumer "
                    + "reads uncommitted data by default)" : "'" + isolation + "'") + ", but a backup must not "
                    + "contain records of aborted transactions: add \"" + ISOLATION_KEY + "\": \"read_committed\" "
                    + "to the connector config (the worker's connector.client.config.override.policy must allow it; "
                    + "the default, All, does)");
        }
        return errors.toConfig();
    }
}
