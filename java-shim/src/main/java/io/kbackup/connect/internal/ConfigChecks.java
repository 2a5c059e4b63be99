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
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.config.SaslConfigs;
import org.apache.kafka.common.config.SslConfigs;
import org.apache.kafka.common.errors.AuthenticationException;
import org.apache.kafka.common.errors.AuthorizationException;
import org.apache.kafka.common.errors.SaslAuthenticationException;
import org.apache.kafka.common.errors.SslAuthenticationException;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.function.Function;
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
    /** The converter that hands key, value and header bytes through untouched. */
    public static final String BYTE_ARRAY_CONVERTER = "org.apache.kafka.connect.converters.ByteArrayConverter";
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
            if (v != null && v.trim().equals(BYTE_ARRAY_CONVERTER)) {
                continue;
            }
            String now = v == null ? "not set, so the worker's default would apply" : "set to " + v;
            errors.add(key, key + " is " + now + ", but it must be " + BYTE_ARRAY_CONVERTER + " " + why
                    + ": add \"" + key + "\": \"" + BYTE_ARRAY_CONVERTER + "\" to the connector config");
        }
    }

    /**
     * Checks that {@code dir} exists (creating it when {@code create}) and is writable, by
     * writing and deleting a probe file. Returns the problem, or null.
     */
    public static String directoryProblem(String key, String dir, boolean create, boolean needWrite) {
        return directoryProblem(key, dir, Map.of(), create, needWrite);
    }

    /**
     * {@link #directoryProblem(String, String, boolean, boolean)} where an object-store location is reached with
     * the connector's {@code storage.*} settings ({@code props}).
     */
    public static String directoryProblem(String key, String dir, Map<String, String> props, boolean create,
                                          boolean needWrite) {
        if (dir == null || dir.isBlank()) {
            return key + " is required: set it to an absolute directory path that every Connect worker can reach, "
                    + "or an object-store URL (s3://bucket/prefix, gs://..., az://...)";
        }
        // The core's one location rule: a directory, file:// or an object-store URL (checked here:
        // reachable, and writable when needed), never a local "s3:" directory.
        Native.ensureLoaded();
        byte[] location = dir.getBytes(java.nio.charset.StandardCharsets.UTF_8);
        String local;
        try {
            if (Native.checkLocation(location, StorageSettings.json(props), needWrite) != null) {
                return null; // an object store that answered
            }
            local = Native.localDir(location);
        } catch (RuntimeException e) {
            return key + ": " + e.getMessage().replaceFirst("^invalid configuration: ", "");
        }
        Path p;
        try {
            p = Paths.get(local);
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

    /** How long validate() waits for the backed-up cluster to answer. */
    private static final int CLUSTER_TIMEOUT_MS = 10_000;

    /**
     * Connects to the cluster with kbackup's own client properties ({@code clientProps}: Java
     * client settings, prefix removed) and reports, per config key, what is wrong: the cluster
     * does not answer ({@code bootstrapKey}), authentication fails (the key holding the
     * credentials or store, found with {@code keyOf}), or topics listed in {@code topicsKey} do
     * not exist there or may not be described (missing ACLs).
     */
    public static Map<String, String> clusterProblems(Map<String, String> clientProps, Function<String, String> keyOf,
                                                      List<String> topics, String bootstrapKey, String topicsKey) {
        Map<String, Object> props = new HashMap<>(clientProps);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, CLUSTER_TIMEOUT_MS);
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, CLUSTER_TIMEOUT_MS);
        Map<String, String> problems = new LinkedHashMap<>();
        String bootstrap = clientProps.get(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG);
        try (Admin admin = Admin.create(props)) {
            Set<String> existing = admin.listTopics(new ListTopicsOptions().timeoutMs(CLUSTER_TIMEOUT_MS))
                    .names().get(CLUSTER_TIMEOUT_MS + 1000L, TimeUnit.MILLISECONDS);
            Set<String> missing = new TreeSet<>(topics);
            missing.removeAll(existing);
            if (!missing.isEmpty()) {
                problems.put(topicsKey, "topic(s) " + String.join(", ", missing) + " do not exist on the cluster at "
                        + bootstrap + ", or the connector's principal may not DESCRIBE them: create them, fix "
                        + topicsKey + " (topics.regex also picks up topics created later) or grant the ACLs in "
                        + "docs/security.md");
            }
            List<String> present = new ArrayList<>(topics);
            present.removeAll(missing);
            if (!present.isEmpty()) {
                List<ConfigResource> rs = new ArrayList<>();
                present.forEach(t -> rs.add(new ConfigResource(ConfigResource.Type.TOPIC, t)));
                admin.describeConfigs(rs).all().get(CLUSTER_TIMEOUT_MS + 1000L, TimeUnit.MILLISECONDS);
            }
        } catch (TimeoutException | ExecutionException | RuntimeException e) {
            Throwable cause = e instanceof ExecutionException && e.getCause() != null ? e.getCause() : e;
            String auth = authProblem(cause, keyOf);
            if (auth != null) {
                problems.put(keyOfProblem(cause, keyOf), auth);
            } else if (cause instanceof AuthorizationException) {
                problems.put(topicsKey, "the connector's principal lacks a permission on the cluster at " + bootstrap
                        + " (" + cause.getMessage() + "): grant the ACLs listed in docs/security.md (topics: "
                        + "DESCRIBE and DESCRIBE_CONFIGS)");
            } else {
                problems.put(bootstrapKey, "the cluster at " + bootstrap + " did not answer within "
                        + CLUSTER_TIMEOUT_MS / 1000 + " s (" + cause.getClass().getSimpleName() + ": "
                        + cause.getMessage() + "): check " + bootstrapKey + " and the cluster.* security settings");
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            problems.put(bootstrapKey, "interrupted while checking the cluster at " + bootstrap);
        }
        return problems;
    }

    /** The config key a failed connection is about. */
    private static String keyOfProblem(Throwable t, Function<String, String> keyOf) {
        String text = chainText(t).toLowerCase(java.util.Locale.ROOT);
        if (t instanceof SaslAuthenticationException || text.contains("jaas") || text.contains("sasl")) {
            return keyOf.apply(SaslConfigs.SASL_JAAS_CONFIG);
        }
        if (text.contains("truststore") || text.contains("trust store") || text.contains("pkix")
                || text.contains("certification path")) {
            return keyOf.apply(SslConfigs.SSL_TRUSTSTORE_LOCATION_CONFIG);
        }
        if (text.contains("keystore") || text.contains("key store") || text.contains("bad_certificate")
                || text.contains("certificate_required")) {
            return keyOf.apply(SslConfigs.SSL_KEYSTORE_LOCATION_CONFIG);
        }
        return keyOf.apply(SslConfigs.SSL_TRUSTSTORE_LOCATION_CONFIG);
    }

    /**
     * A clear message when {@code t} is an authentication or client-setup failure (bad
     * credentials, a missing or unreadable store, a malformed JAAS line), else null. Never
     * repeats a setting's value.
     */
    static String authProblem(Throwable t, Function<String, String> keyOf) {
        Throwable c = t;
        for (int i = 0; c != null && i < 10; i++, c = c.getCause()) {
            if (c instanceof SaslAuthenticationException) {
                return "authentication failed (" + c.getMessage() + "): fix the user name or password in "
                        + keyOf.apply(SaslConfigs.SASL_JAAS_CONFIG) + " (and " + keyOf.apply(SaslConfigs.SASL_MECHANISM)
                        + ")";
            }
            if (c instanceof SslAuthenticationException) {
                return "the TLS handshake failed (" + c.getMessage() + "): check "
                        + keyOf.apply(SslConfigs.SSL_TRUSTSTORE_LOCATION_CONFIG) + " (it must hold the CA of the "
                        + "brokers' certificates) and, for mutual TLS, "
                        + keyOf.apply(SslConfigs.SSL_KEYSTORE_LOCATION_CONFIG);
            }
            if (c instanceof java.nio.file.NoSuchFileException || c instanceof java.io.FileNotFoundException) {
                return "a key or trust store file does not exist on this worker (" + c.getMessage() + "): fix "
                        + keyOfProblem(t, keyOf) + " (the file must exist on every Connect worker)";
            }
            if (c instanceof AuthenticationException) {
                return "authentication failed (" + c.getMessage() + "): fix the credentials in "
                        + keyOf.apply(SaslConfigs.SASL_JAAS_CONFIG) + " or the cluster.ssl.* settings";
            }
            if (c instanceof org.apache.kafka.common.config.ConfigException
                    || c instanceof IllegalArgumentException && chainText(c).toLowerCase(java.util.Locale.ROOT)
                    .contains("jaas")) {
                return "the client settings are not accepted (" + c.getClass().getSimpleName() + ": "
                        + c.getMessage() + "): fix " + keyOfProblem(t, keyOf);
            }
        }
        String text = chainText(t);
        if (text.contains("Failed to load SSL keystore") || text.contains("Failed to create new KafkaAdminClient")) {
            return "the Kafka client could not be created (" + text + "): fix " + keyOfProblem(t, keyOf);
        }
        return null;
    }

    private static String chainText(Throwable t) {
        StringBuilder sb = new StringBuilder();
        for (Throwable c = t; c != null && sb.length() < 2000; c = c.getCause()) {
            if (sb.length() > 0) {
                sb.append(" <- ");
            }
            sb.append(c.getClass().getSimpleName()).append(": ").append(c.getMessage());
        }
        return sb.toString();
    }
}
