package io.kbackup.connect.internal;

import org.apache.kafka.common.config.Config;
import org.apache.kafka.common.config.ConfigValue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.InvalidPathException;
import java.nio.file.Path;
import java.nio.file.Paths;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ListTopicsOptions;

import java.util.ArrayList;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Checks shared by both connectors' {@code validate()}. Errors are attached to the key they are
 * about, even keys outside the connector's ConfigDef (converters, client overrides): Connect's
 * AbstractHerder counts those too, so they show in {@code PUT .../config/validate} and make
 * {@code POST /connectors} fail.
 */
public final class ConfigChecks {
    /** The converter keys that must all be ByteArrayConverter. */
    public static final List<String> CONVERTER_KEYS = List.of("key.converter", "value.converter", "header.converter");

    private ConfigChecks() {
    }

    /** Collects errors per key on top of the ConfigDef's own validation result. */
    public static final class Errors {
        private final Map<String, ConfigValue> values = new LinkedHashMap<>();
        public Errors(Config base) {
            for (ConfigValue v : base.configValues()) {
                values.put(v.name(), v);
            }
        }

        /** Adds an error to {@code key}, creating its ConfigValue when the connector does not define it. */
        public void add(String key, String message) {
            // Value null on purpose: Connect renders a value by the type of ITS definition of the
            // key (key.converter is a CLASS there), so a String here would break the response.
            ConfigValue v = values.computeIfAbsent(key, k -> new ConfigValue(k, null, new ArrayList<>(),
                    new ArrayList<>()));
            v.addErrorMessage(message);
        }

        /** Replaces the ConfigDef's messages for {@code key} (for clearer wording), if it has any. */
        public void replace(String key, String message) {
            ConfigValue v = values.get(key);
            if (v != null && !v.errorMessages().isEmpty()) {
                ConfigValue clearer = new ConfigValue(key, v.value(), v.recommendedValues(),
                        new ArrayList<>(List.of(message)));
                clearer.visible(v.visible());
                values.put(key, clearer);
            }
        }

        public boolean hasErrors(String key) {
            ConfigValue v = values.get(key);
            return v != null && !v.errorMessages().isEmpty();
        }

        public Config toConfig() {
            return new Config(new ArrayList<>(values.values()));
        }
    }

    /** Requires key, value and header converters to be exactly ByteArrayConverter. */
    public static void requireByteArrayConverters(Map<String, String> props, Errors errors, String why) {
        for (String key : CONVERTER_KEYS) {
            String v = props.get(key);
            if (v != null && v.trim().equals(BatchCodec.BYTE_ARRAY_CONVERTER)) {
                continue;
            }
            String now = v == null ? "not set, so the worker's default would apply" : "set to " + v;
            errors.add(key, key + " is " + now + ", but it must be " + BatchCodec.BYTE_ARRAY_CONVERTER + " " + why
                    + ": add \"" + key + "\": \"" + BatchCodec.BYTE_ARRAY_CONVERTER + "\" to the connector config");
        }
    }

    /**
     * Checks that {@code dir} exists (creating it when {@code create}) and is writable, by
     * writing and deleting a probe file. Returns the problem, or null.
     */
    public static String directoryProblem(String key, String dir, boolean create, boolean needWrite) {
        if (dir == null || dir.isBlank()) {
            return key + " is required: set it to an absolute directory path that every Connect worker can reach";
        }
        Path p;
        try {
            p = Paths.get(dir);
        } catch (InvalidPathException e) {
            return key + " '" + dir + "' is not a valid path (" + e.getMessage() + "): fix the value";
        }
        String user = System.getProperty("user.name");
        if (!Files.isDirectory(p)) {
            if (!create) {
                return key + " '" + dir + "' does not exist or is not a directory on this worker: check the path "
                        + "(it must be reachable from every Connect worker)";
            }
            try {
                Files.createDirectories(p);
            } catch (IOException | SecurityException e) {
                return key + " '" + dir + "' does not exist and cannot be created by the Connect worker (user "
                        + user + "): " + e + "; create it and make it writable by that user, or choose another "
                        + "directory";
            }
        }
        if (needWrite) {
            try {
                Path probe = Files.createTempFile(p, ".kbackup-probe-", ".tmp");
                Files.write(probe, new byte[] {1});
                Files.delete(probe);
            } catch (IOException | SecurityException e) {
                return key + " '" + dir + "' is not writable by the Connect worker (user " + user + "): " + e
                        + "; fix its permissions or choose another directory";
            }
        }
        return null;
    }

    /** Why {@code name} is not a valid Kafka topic name, or null when it is. */
    public static String topicNameProblem(String name) {
        if (name == null || name.isEmpty()) {
            return "a topic name must not be empty";
        }
        if (name.length() > 249) {
            return "topic name '" + name + "' is " + name.length() + " characters long; Kafka allows at most 249";
        }
        if (name.equals(".") || name.equals("..")) {
            return "topic name '" + name + "' is not allowed by Kafka";
        }
        for (int i = 0; i < name.length(); i++) {
            char c = name.charAt(i);
            boolean ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.'
                    || c == '_' || c == '-';
            if (!ok) {
                return "topic name '" + name + "' contains '" + c + "'; Kafka allows only letters, digits, '.', '_' "
                        + "and '-'";
            }
        }
        return null;
    }

    /** How long validate() waits for the backed-up cluster to answer. */
    private static final int CLUSTER_TIMEOUT_MS = 10_000;

    /**
     * Connects to the cluster being backed up ({@code cluster.*} settings, prefix removed) and
     * reports, per config key, what is wrong: the cluster does not answer
     * ({@code bootstrapKey}), or topics listed in {@code topicsKey} do not exist there.
     */
    public static Map<String, String> clusterProblems(Map<String, String> cluster, List<String> topics,
                                                      String bootstrapKey, String topicsKey) {
        Properties props = new Properties();
        props.putAll(cluster);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, CLUSTER_TIMEOUT_MS);
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, CLUSTER_TIMEOUT_MS);
        Map<String, String> problems = new LinkedHashMap<>();
        String bootstrap = cluster.get(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG);
        try (Admin admin = Admin.create(props)) {
            Set<String> existing = admin.listTopics(new ListTopicsOptions().timeoutMs(CLUSTER_TIMEOUT_MS))
                    .names().get(CLUSTER_TIMEOUT_MS + 1000L, TimeUnit.MILLISECONDS);
            Set<String> missing = new TreeSet<>(topics);
            missing.removeAll(existing);
            if (!missing.isEmpty()) {
                problems.put(topicsKey, "topic(s) " + String.join(", ", missing) + " do not exist on the cluster at "
                        + bootstrap + ": create them first or fix " + topicsKey + " (topics.regex also picks up "
                        + "topics created later)");
            }
        } catch (TimeoutException | ExecutionException | RuntimeException e) {
            Throwable cause = e instanceof ExecutionException && e.getCause() != null ? e.getCause() : e;
            problems.put(bootstrapKey, "the cluster at " + bootstrap + " did not answer within "
                    + CLUSTER_TIMEOUT_MS / 1000 + " s (" + cause.getClass().getSimpleName() + ": " + cause.getMessage()
                    + "): check " + bootstrapKey + " and the cluster.* security settings");
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            problems.put(bootstrapKey, "interrupted while checking the cluster at " + bootstrap);
        }
        return problems;
    }
}
