package io.kbackup.connect;

import io.kbackup.connect.internal.Json;
import io.kbackup.connect.internal.StorageSettings;
import org.apache.kafka.common.config.AbstractConfig;
import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.common.config.ConfigDef.Importance;
import org.apache.kafka.common.config.ConfigDef.Type;
import org.apache.kafka.common.config.ConfigException;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;

/**
 * Configuration of {@link BackupSinkConnector} and its tasks: one ConfigDef, shared by both, and
 * the source of docs/config-sink.md. {@code topics} / {@code topics.regex} and the converters are
 * Connect's own keys and are checked in {@link BackupSinkConnector#validate}.
 */
public class BackupSinkConfig extends AbstractConfig {
    public static final String TARGET_DIR_CONFIG = "target.dir";
    private static final String TARGET_DIR_DOC = "Where the backup is written: a directory (one sub-directory per "
            + "topic and partition) reachable and writable from every Connect worker, for example a shared volume, "
            + "created if missing; or an object-store URL (s3://bucket/prefix, gs://bucket/prefix, "
            + "az://container/prefix) with its settings and credentials from the worker's standard environment "
            + "variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL, ...). In an object "
            + "store a segment is durable once complete, so max.segment.age.ms bounds what a crash can make Kafka "
            + "send again (docs/storage.md).";

    public static final String MAX_SEGMENT_SIZE_BYTES_CONFIG = "max.segment.size.bytes";
    private static final String MAX_SEGMENT_SIZE_BYTES_DOC = "A partition's open segment file is closed and a "
            + "new one started once it reaches this size.";
    public static final long MAX_SEGMENT_SIZE_BYTES_DEFAULT = 1024L * 1024 * 1024;

    public static final String MAX_SEGMENT_AGE_MS_CONFIG = "max.segment.age.ms";
    private static final String MAX_SEGMENT_AGE_MS_DOC = "A partition's open segment is closed and a new one "
            + "started once its first record was written this long ago, so old data can be pruned by age in "
            + "whole segments. Default one hour.";
    public static final long MAX_SEGMENT_AGE_MS_DEFAULT = 60L * 60 * 1000;

    public static final String INDEX_INTERVAL_BYTES_CONFIG = "index.interval.bytes";
    private static final String INDEX_INTERVAL_BYTES_DOC = "Bytes of segment data between two entries of the "
            + "sparse offset and time indexes. Smaller means faster seeks and larger index files.";
    public static final int INDEX_INTERVAL_BYTES_DEFAULT = 4096;

    public static final String CLUSTER_PREFIX = "cluster.";
    public static final String CLUSTER_BOOTSTRAP_SERVERS_CONFIG = "cluster.bootstrap.servers";
    private static final String CLUSTER_BOOTSTRAP_SERVERS_DOC = "Bootstrap servers of the cluster being backed "
            + "up. kbackup connects there itself to record topic manifests (partition count, topic configs) and "
            + "consumer-group offsets. Every other cluster.* key (Java client settings, for example "
            + "cluster.security.protocol, cluster.sasl.jaas.config) is passed to that client with the prefix removed; "
            + "without them the connector's consumer.override.* settings apply.";

    /**
     * The secret-bearing client keys under {@code cluster.}: declared PASSWORD so Connect shows
     * them as [hidden] in its logs and REST answers. Other cluster.* keys pass through as given.
     */
    public static final List<String> CLUSTER_SECRET_KEYS = List.of("sasl.jaas.config", "ssl.keystore.password",
            "ssl.key.password", "ssl.truststore.password", "ssl.keystore.key", "ssl.keystore.certificate.chain",
            "ssl.truststore.certificates", "sasl.oauthbearer.client.credentials.client.secret");
    private static final String CLUSTER_SECRET_DOC = "Java Kafka client setting for kbackup's own connection "
            + "to the cluster (with the cluster. prefix removed). Secret: shown as [hidden]. When no cluster.* "
            + "security setting is given, the connector's consumer.override.* (sink) or producer.override.* "
            + "(source) settings are used, so one set of credentials is enough.";

    public static final String OFFSETS_SYNC_INTERVAL_MS_CONFIG = "consumer.offsets.sync.interval.ms";
    private static final String OFFSETS_SYNC_INTERVAL_MS_DOC = "How often the committed offsets of consumer "
            + "groups are read for the backed-up partitions and changes appended to the backup's offsets log.";
    public static final long OFFSETS_SYNC_INTERVAL_MS_DEFAULT = 5000L;

    public static final String GROUPS_INCLUDE_CONFIG = "groups.include";
    private static final String GROUPS_INCLUDE_DOC = "Regular expression (whole-name match) of the consumer "
            + "groups whose offsets are backed up.";
    public static final String GROUPS_INCLUDE_DEFAULT = ".*";

    public static final String GROUPS_EXCLUDE_CONFIG = "groups.exclude";
    private static final String GROUPS_EXCLUDE_DOC = "Regular expression (whole-name match) of consumer groups "
            + "NOT backed up, applied after groups.include. Empty: exclude none. The connector's own group "
            + "(connect-<name>) is never backed up.";

    public static final String FILE_MODE_CONFIG = "file.mode";
    private static final String FILE_MODE_DOC = "Mode of the files kbackup creates in the backup, in octal like "
            + "chmod (directories get the same bits plus search where read is allowed). The default keeps the "
            + "backup owner-only: it holds every record of the backed-up topics. Must include owner read and "
            + "write, no execute or special bits, for example 0640 to let the owner's group read.";
    public static final String FILE_MODE_DEFAULT = "0600";

    public static final String COMPRESSION_TYPE_CONFIG = "compression.type";
    private static final String COMPRESSION_TYPE_DOC = "Codec of the blocks new segments are written in: "
            + "zstd (segment format version 2; a fifth of the records' size for the JSON-like records of "
            + "make bench, for a quarter to 40% more writer CPU, docs/benchmarks.md), lz4 (larger) or none "
            + "(format version 1, readable by every kbackup release). Records are compressed in blocks of up to "
            + "256 KiB inside a segment, never whole segments. Changing it affects only new segments; a backup "
            + "may mix versions. Producer batch compression does not matter (the connector receives records "
            + "decompressed); a block that does not shrink (values compressed by the application) is stored "
            + "raw.";
    public static final String COMPRESSION_TYPE_DEFAULT = "zstd";

    public static final String COMPRESSION_LEVEL_CONFIG = "compression.level";
    private static final String COMPRESSION_LEVEL_DOC = "zstd level, 1 (fastest) to 22 (smallest); ignored by "
            + "the other codecs.";
    public static final int COMPRESSION_LEVEL_DEFAULT = 1;

    public static final String BUFFER_MEMORY_BYTES_CONFIG = "buffer.memory.bytes";
    private static final String BUFFER_MEMORY_BYTES_DOC = "Upper bound of the record bytes a task holds in "
            + "open compression blocks over all its partitions. A block is written when it reaches 256 KiB or at "
            + "a flush; above this bound the largest open blocks are written early (smaller blocks, nothing lost), "
            + "so a task's memory for blocks is bounded by this setting, not by its partition count. Not used "
            + "with compression.type=none.";
    public static final long BUFFER_MEMORY_BYTES_DEFAULT = 32L * 1024 * 1024;

    /** Set by the connector in each task config: the task's index, for the task id. */
    public static final String TASK_INDEX_CONFIG = "kbackup.task.index";

    public static final ConfigDef CONFIG_DEF = StorageSettings.define(withClusterSecrets(new ConfigDef()))
            .define(TARGET_DIR_CONFIG, Type.STRING, ConfigDef.NO_DEFAULT_VALUE, new ConfigDef.NonEmptyString(),
                    Importance.HIGH, TARGET_DIR_DOC)
            .define(CLUSTER_BOOTSTRAP_SERVERS_CONFIG, Type.STRING, ConfigDef.NO_DEFAULT_VALUE,
                    new ConfigDef.NonEmptyString(), Importance.HIGH, CLUSTER_BOOTSTRAP_SERVERS_DOC)
            .define(MAX_SEGMENT_SIZE_BYTES_CONFIG, Type.LONG, MAX_SEGMENT_SIZE_BYTES_DEFAULT,
                    ConfigDef.Range.atLeast(1024), Importance.MEDIUM, MAX_SEGMENT_SIZE_BYTES_DOC)
            .define(MAX_SEGMENT_AGE_MS_CONFIG, Type.LONG, MAX_SEGMENT_AGE_MS_DEFAULT, ConfigDef.Range.atLeast(1),
                    Importance.MEDIUM, MAX_SEGMENT_AGE_MS_DOC)
            .define(INDEX_INTERVAL_BYTES_CONFIG, Type.INT, INDEX_INTERVAL_BYTES_DEFAULT, ConfigDef.Range.atLeast(1),
                    Importance.LOW, INDEX_INTERVAL_BYTES_DOC)
            .define(OFFSETS_SYNC_INTERVAL_MS_CONFIG, Type.LONG, OFFSETS_SYNC_INTERVAL_MS_DEFAULT,
                    ConfigDef.Range.atLeast(100), Importance.MEDIUM, OFFSETS_SYNC_INTERVAL_MS_DOC)
            .define(GROUPS_INCLUDE_CONFIG, Type.STRING, GROUPS_INCLUDE_DEFAULT, new RegexValidator(),
                    Importance.MEDIUM, GROUPS_INCLUDE_DOC)
            .define(GROUPS_EXCLUDE_CONFIG, Type.STRING, "", new RegexValidator(), Importance.MEDIUM,
                    GROUPS_EXCLUDE_DOC)
            .define(FILE_MODE_CONFIG, Type.STRING, FILE_MODE_DEFAULT, new FileModeValidator(), Importance.MEDIUM,
                    FILE_MODE_DOC)
            .define(COMPRESSION_TYPE_CONFIG, Type.STRING, COMPRESSION_TYPE_DEFAULT,
                    ConfigDef.ValidString.in("none", "zstd", "lz4"), Importance.MEDIUM,
                    COMPRESSION_TYPE_DOC)
            .define(COMPRESSION_LEVEL_CONFIG, Type.INT, COMPRESSION_LEVEL_DEFAULT, ConfigDef.Range.between(1, 22),
                    Importance.LOW, COMPRESSION_LEVEL_DOC)
            .define(BUFFER_MEMORY_BYTES_CONFIG, Type.LONG, BUFFER_MEMORY_BYTES_DEFAULT,
                    ConfigDef.Range.atLeast(1024L * 1024), Importance.LOW, BUFFER_MEMORY_BYTES_DOC);

    public BackupSinkConfig(Map<String, String> props) {
        super(CONFIG_DEF, props);
    }

    /** Declares the {@link #CLUSTER_SECRET_KEYS} (PASSWORD, optional) on {@code def}. */
    static ConfigDef withClusterSecrets(ConfigDef def) {
        for (String k : CLUSTER_SECRET_KEYS) {
            def.define(CLUSTER_PREFIX + k, Type.PASSWORD, null, Importance.LOW, CLUSTER_SECRET_DOC);
        }
        return def;
    }

    /** The {@code cluster.*} keys with the prefix removed, as strings. */
    public Map<String, String> clusterConfig() {
        return clusterConfig(originalsStrings());
    }

    /** The Java client properties of kbackup's own cluster client (see {@link #clientProps(Map, String)}). */
    public Map<String, String> clientProps() {
        return clientProps(originalsStrings(), "consumer.override.");
    }

    /**
     * Java client properties for kbackup's own connection: the connector's client overrides
     * ({@code fallbackPrefix}, e.g. consumer.override.) so one set of credentials is enough,
     * then {@code admin.override.*}, then {@code cluster.*}, each winning over the one before.
     */
    static Map<String, String> clientProps(Map<String, String> props, String fallbackPrefix) {
        Map<String, String> out = new LinkedHashMap<>();
        for (String prefix : List.of(fallbackPrefix, "admin.override.", CLUSTER_PREFIX)) {
            for (Map.Entry<String, String> e : props.entrySet()) {
                if (e.getKey().startsWith(prefix) && e.getValue() != null) {
                    out.put(e.getKey().substring(prefix.length()), e.getValue());
                }
            }
        }
        return out;
    }

    /** The key a client setting {@code name} came from under {@link #clientProps(Map, String)}'s rules. */
    static String sourceKey(Map<String, String> props, String fallbackPrefix, String name) {
        for (String prefix : List.of(CLUSTER_PREFIX, "admin.override.", fallbackPrefix)) {
            if (props.get(prefix + name) != null) {
                return prefix + name;
            }
        }
        return CLUSTER_PREFIX + name;
    }

    /**
     * What the core is told about the cluster: its bootstrap servers, nothing secret (every
     * Kafka call of the core goes through {@link io.kbackup.connect.internal.ClusterClient}).
     */
    static Map<String, String> nativeCluster(Map<String, String> props) {
        Map<String, String> out = new LinkedHashMap<>();
        String servers = props.get(CLUSTER_BOOTSTRAP_SERVERS_CONFIG);
        if (servers != null) {
            out.put("bootstrap.servers", servers);
        }
        return out;
    }

    static Map<String, String> clusterConfig(Map<String, String> props) {
        Map<String, String> out = new LinkedHashMap<>();
        for (Map.Entry<String, String> e : props.entrySet()) {
            if (e.getKey().startsWith(CLUSTER_PREFIX) && e.getValue() != null) {
                out.put(e.getKey().substring(CLUSTER_PREFIX.length()), e.getValue());
            }
        }
        return out;
    }

    /** The sink config JSON of docs/jni.md. */
    public byte[] toNativeJson(String connectorName, String taskId) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("connector_name", connectorName);
        m.put("task_id", taskId);
        m.put("target_dir", getString(TARGET_DIR_CONFIG));
        m.put("max_segment_size_bytes", getLong(MAX_SEGMENT_SIZE_BYTES_CONFIG));
        m.put("max_segment_age_ms", getLong(MAX_SEGMENT_AGE_MS_CONFIG));
        m.put("index_interval_bytes", getInt(INDEX_INTERVAL_BYTES_CONFIG));
        m.put("cluster", nativeCluster(originalsStrings()));
        m.put("consumer_group_id", "connect-" + connectorName);
        m.put("offsets_sync_interval_ms", getLong(OFFSETS_SYNC_INTERVAL_MS_CONFIG));
        m.put("groups_include", getString(GROUPS_INCLUDE_CONFIG));
        String exclude = getString(GROUPS_EXCLUDE_CONFIG);
        m.put("groups_exclude", exclude == null || exclude.isEmpty() ? null : exclude);
        m.put("file_mode", getString(FILE_MODE_CONFIG));
        m.put("compression_type", getString(COMPRESSION_TYPE_CONFIG).toLowerCase(java.util.Locale.ROOT));
        m.put("compression_level", getInt(COMPRESSION_LEVEL_CONFIG));
        m.put("buffer_memory_bytes", getLong(BUFFER_MEMORY_BYTES_CONFIG));
        m.put("storage", StorageSettings.of(originalsStrings()));
        return Json.write(m);
    }

    /** Accepts what the core accepts as a file mode (checked again there, naming the key). */
    static final class FileModeValidator implements ConfigDef.Validator {
        @Override
        public void ensureValid(String name, Object value) {
            String v = value == null ? "" : value.toString().trim();
            if (v.startsWith("0o")) {
                v = v.substring(2);
            }
            int mode;
            try {
                mode = Integer.parseInt(v, 8);
            } catch (NumberFormatException e) {
                throw new ConfigException(name, value, "not an octal file mode; write it like chmod does, for "
                        + "example 0600 (owner only, the default) or 0640 (owner and group may read)");
            }
            if ((mode & ~0666) != 0 || (mode & 0600) != 0600) {
                throw new ConfigException(name, value, "not a usable file mode: it must include owner read and "
                        + "write (0600) and no execute or special bits, for example 0600 or 0640");
            }
        }

        @Override
        public String toString() {
            return "an octal file mode such as 0600 or 0640";
        }
    }

    /** Accepts a Java regular expression (the core's regex crate accepts the common subset). */
    static final class RegexValidator implements ConfigDef.Validator {
        @Override
        public void ensureValid(String name, Object value) {
            if (value == null || value.toString().isEmpty()) {
                return;
            }
            try {
                Pattern.compile(value.toString());
            } catch (PatternSyntaxException e) {
                throw new ConfigException(name, value, "not a valid regular expression (" + e.getDescription()
                        + " at index " + e.getIndex() + "): fix the pattern");
            }
        }

        @Override
        public String toString() {
            return "a regular expression";
        }
    }
}
