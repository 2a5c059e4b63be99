package io.kbackup.connect;

import io.kbackup.connect.internal.StorageSettings;
import org.apache.kafka.common.config.AbstractConfig;
import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.common.config.ConfigDef.Importance;
import org.apache.kafka.common.config.ConfigDef.Type;

import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * Configuration of {@link BackupSourceConnector} (restore) and its tasks: one ConfigDef, shared
 * by both, and the source of docs/config-source.md. It holds what the worker needs (types,
 * defaults, the Java client settings); the raw properties go to the core, which parses
 * {@code topics.rename} and checks every restore rule ({@code kbackup_core::restore::props}).
 */
public class BackupSourceConfig extends AbstractConfig {
    public static final String SOURCE_DIR_CONFIG = "source.dir";
    private static final String SOURCE_DIR_DOC = "Where the backup to restore is (the target.dir of the "
            + "backup connector, or a copy of it): a directory readable from every Connect worker, or an "
            + "object-store URL (s3://bucket/prefix, gs://..., az://...; settings from the storage.* keys and "
            + "the worker's environment).";

    public static final String TOPICS_CONFIG = "topics";
    private static final String TOPICS_DOC = "Comma-separated list of the backed-up topics to restore. Each must "
            + "exist in the backup. Records keep their partition number, so target topics get the backup's "
            + "partition count.";

    public static final String TOPICS_RENAME_CONFIG = "topics.rename";
    private static final String TOPICS_RENAME_DOC = "Optional renames, as from:to pairs separated by commas "
            + "(orders:orders-restored,payments:payments-restored). Topics not listed keep their name.";

    public static final String BATCH_SIZE_CONFIG = "batch.size";
    private static final String BATCH_SIZE_DOC = "Most records a task hands to Connect per poll().";
    public static final int BATCH_SIZE_DEFAULT = 1000;

    public static final String CLUSTER_PREFIX = BackupSinkConfig.CLUSTER_PREFIX;
    public static final String CLUSTER_BOOTSTRAP_SERVERS_CONFIG = BackupSinkConfig.CLUSTER_BOOTSTRAP_SERVERS_CONFIG;
    private static final String CLUSTER_BOOTSTRAP_SERVERS_DOC = "Bootstrap servers of the cluster restored INTO "
            + "(the one this worker produces to). kbackup connects there itself to create the target topics and "
            + "to commit the translated consumer-group offsets. Every other cluster.* key (Java client "
            + "settings, for example cluster.security.protocol) is passed to that client with the prefix removed; "
            + "without them the connector's producer.override.* settings apply.";

    public static final String RESTORE_STATE_DIR_CONFIG = "restore.state.dir";
    private static final String RESTORE_STATE_DIR_DOC = "Optional place for the restore's own progress "
            + "state (the new offset of each restored record, used to translate group offsets): a directory "
            + "reachable from every worker, or an object-store URL (reached with the storage.* keys). Empty: "
            + "kept beside the backup, under source.dir/restore-state/, in its directory or bucket. Set it when "
            + "the backup is read-only.";

    public static final String ALLOW_NON_EMPTY_TOPICS_CONFIG = "restore.allow.non.empty.topics";
    private static final String ALLOW_NON_EMPTY_TOPICS_DOC = "Allow restoring into target topics that already "
            + "hold records. Off by default, because the restored records would mix with the existing ones and "
            + "group offsets could not be translated safely.";

    public static final String RESTORE_GROUP_OFFSETS_CONFIG = "restore.group.offsets";
    private static final String RESTORE_GROUP_OFFSETS_DOC = "Commit each backed-up consumer group's offset, "
            + "translated to the new offsets, to the target cluster once a partition is fully restored.";

    public static final String RESTORE_TIME_FROM_CONFIG = "restore.time.from";
    private static final String RESTORE_TIME_FROM_DOC = "Point-in-time restore: restore only records whose own "
            + "timestamp (CreateTime or LogAppendTime, as backed up) is at or after this time (inclusive). "
            + "Milliseconds since the epoch or ISO-8601 with a zone (2026-12-01T09:14:00Z, "
            + "2026-12-01T10:14:00+01:00). The restore seeks to it with the time index. Empty: from the start.";

    public static final String RESTORE_TIME_TO_CONFIG = "restore.time.to";
    private static final String RESTORE_TIME_TO_DOC = "Point-in-time restore: restore only records whose own "
            + "timestamp is at or before this time (inclusive), written as restore.time.from. Each consumer "
            + "group resumes where its last position captured AT OR BEFORE this time puts it; a group captured "
            + "only later is not restored (a warning names it). Records after it with older (out-of-order) "
            + "timestamps are still restored. Empty: to the end.";

    public static final String RESTORE_OFFSET_FROM_CONFIG = "restore.offset.from";
    private static final String RESTORE_OFFSET_FROM_DOC = "Restore only records at or after these original "
            + "offsets (inclusive), per topic or partition: topic=offset or topic:partition=offset, separated by "
            + "commas (orders=100,orders:2=250; a partition's entry wins over its topic's). Combines with the "
            + "time bounds. Empty: from the first backed-up record.";

    public static final String RESTORE_OFFSET_TO_CONFIG = "restore.offset.to";
    private static final String RESTORE_OFFSET_TO_DOC = "Restore only records at or before these original "
            + "offsets (inclusive), written as restore.offset.from. Groups positioned after the window resume "
            + "at the end of the restored partition. Empty: to the last backed-up record.";

    /** Set by the connector in each task config: the task's partitions as topic:partition,... */
    public static final String TASK_PARTITIONS_CONFIG = "kbackup.task.partitions";
    /** Set by the connector in each task config: the task's index, for the task id. */
    public static final String TASK_INDEX_CONFIG = BackupSinkConfig.TASK_INDEX_CONFIG;

    public static final ConfigDef CONFIG_DEF =
            StorageSettings.define(BackupSinkConfig.withClusterSecrets(new ConfigDef()))
            .define(SOURCE_DIR_CONFIG, Type.STRING, ConfigDef.NO_DEFAULT_VALUE, new ConfigDef.NonEmptyString(),
                    Importance.HIGH, SOURCE_DIR_DOC)
            .define(TOPICS_CONFIG, Type.LIST, ConfigDef.NO_DEFAULT_VALUE, Importance.HIGH, TOPICS_DOC)
            .define(CLUSTER_BOOTSTRAP_SERVERS_CONFIG, Type.STRING, ConfigDef.NO_DEFAULT_VALUE,
                    new ConfigDef.NonEmptyString(), Importance.HIGH, CLUSTER_BOOTSTRAP_SERVERS_DOC)
            .define(TOPICS_RENAME_CONFIG, Type.STRING, "", Importance.MEDIUM, TOPICS_RENAME_DOC)
            .define(BATCH_SIZE_CONFIG, Type.INT, BATCH_SIZE_DEFAULT, ConfigDef.Range.between(1, 1_000_000),
                    Importance.LOW, BATCH_SIZE_DOC)
            .define(RESTORE_STATE_DIR_CONFIG, Type.STRING, "", Importance.LOW, RESTORE_STATE_DIR_DOC)
            .define(ALLOW_NON_EMPTY_TOPICS_CONFIG, Type.BOOLEAN, false, Importance.MEDIUM,
                    ALLOW_NON_EMPTY_TOPICS_DOC)
            .define(RESTORE_GROUP_OFFSETS_CONFIG, Type.BOOLEAN, true, Importance.MEDIUM, RESTORE_GROUP_OFFSETS_DOC)
            .define(RESTORE_TIME_FROM_CONFIG, Type.STRING, "", Importance.MEDIUM, RESTORE_TIME_FROM_DOC)
            .define(RESTORE_TIME_TO_CONFIG, Type.STRING, "", Importance.MEDIUM, RESTORE_TIME_TO_DOC)
            .define(RESTORE_OFFSET_FROM_CONFIG, Type.STRING, "", Importance.LOW, RESTORE_OFFSET_FROM_DOC)
            .define(RESTORE_OFFSET_TO_CONFIG, Type.STRING, "", Importance.LOW, RESTORE_OFFSET_TO_DOC);

    public BackupSourceConfig(Map<String, String> props) {
        super(CONFIG_DEF, props);
    }

    /** The topics to restore, in the order given (the core checks them: kbackup_core::restore::props). */
    public List<String> topics() {
        return getList(TOPICS_CONFIG);
    }

    /**
     * The properties the core reads (docs/jni.md): the keys this ConfigDef defines except the
     * Kafka passwords, plus the connector name and the task index. Kafka client settings and
     * credentials stay in Java: none reaches the native library (docs/security.md); the
     * object-store ones ({@code storage.*}) do, the core makes those requests.
     */
    public static Map<String, String> coreProps(Map<String, String> props) {
        Map<String, String> out = new TreeMap<>();
        for (Map.Entry<String, String> e : props.entrySet()) {
            String k = e.getKey();
            ConfigDef.ConfigKey def = CONFIG_DEF.configKeys().get(k);
            // the cluster.* secrets stay in Java (its own clients use them); the storage.* ones go
            // to the core, which reaches the bucket and never shows a value (StorageSettings)
            boolean read = k.equals("name") || k.equals(TASK_INDEX_CONFIG)
                    || (def != null && (def.type != Type.PASSWORD || k.startsWith(StorageSettings.PREFIX)));
            if (read && e.getValue() != null) {
                out.put(k, e.getValue());
            }
        }
        return out;
    }

    /** The {@code cluster.*} keys with the prefix removed, as strings. */
    public Map<String, String> clusterConfig() {
        return BackupSinkConfig.clusterConfig(originalsStrings());
    }

    /** The Java client properties of kbackup's own cluster client (producer overrides as fallback). */
    public Map<String, String> clientProps() {
        return BackupSinkConfig.clientProps(originalsStrings(), "producer.override.");
    }
}
