package io.kbackup.connect;

import io.kbackup.connect.internal.ConfigChecks;
import io.kbackup.connect.internal.Json;
import org.apache.kafka.common.config.Config;
import org.apache.kafka.common.config.ConfigException;
import org.apache.kafka.common.config.ConfigValue;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class SinkConfigTest {
    @TempDir
    Path tmp;

    static Map<String, String> valid(Path dir) {
        Map<String, String> p = new HashMap<>();
        p.put("name", "b1");
        p.put("connector.class", BackupSinkConnector.class.getName());
        p.put("topics", "a,b");
        p.put("target.dir", dir.toString());
        p.put("cluster.bootstrap.servers", "localhost:9092");
        p.put("cluster.security.protocol", "PLAINTEXT");
        p.put("key.converter", ConfigChecks.BYTE_ARRAY_CONVERTER);
        p.put("value.converter", ConfigChecks.BYTE_ARRAY_CONVERTER);
        p.put("header.converter", ConfigChecks.BYTE_ARRAY_CONVERTER);
        p.put("consumer.override.isolation.level", "read_committed");
        return p;
    }

    static Map<String, List<String>> errors(Config c) {
        Map<String, List<String>> out = new HashMap<>();
        for (ConfigValue v : c.configValues()) {
            if (!v.errorMessages().isEmpty()) {
                out.put(v.name(), v.errorMessages());
            }
        }
        return out;
    }

    @Test
    void defaultsAndNativeJson() {
        BackupSinkConfig c = new BackupSinkConfig(valid(tmp));
        assertEquals(1L << 30, c.getLong(BackupSinkConfig.MAX_SEGMENT_SIZE_BYTES_CONFIG));
        assertEquals(3_600_000L, c.getLong(BackupSinkConfig.MAX_SEGMENT_AGE_MS_CONFIG));
        assertEquals(4096, c.getInt(BackupSinkConfig.INDEX_INTERVAL_BYTES_CONFIG));
        assertEquals(5000L, c.getLong(BackupSinkConfig.OFFSETS_SYNC_INTERVAL_MS_CONFIG));
        assertEquals(Map.of("bootstrap.servers", "localhost:9092", "security.protocol", "PLAINTEXT"),
                c.clusterConfig());

        @SuppressWarnings("unchecked")
        Map<String, Object> json = (Map<String, Object>) Json.parse(c.toNativeJson("b1", "b1-0"));
        assertEquals("b1", json.get("connector_name"));
        assertEquals("b1-0", json.get("task_id"));
        assertEquals(tmp.toString(), json.get("target_dir"));
        assertEquals(1L << 30, json.get("max_segment_size_bytes"));
        assertEquals(3_600_000L, json.get("max_segment_age_ms"));
        assertEquals(4096L, json.get("index_interval_bytes"));
        assertEquals("connect-b1", json.get("consumer_group_id"));
        assertEquals(5000L, json.get("offsets_sync_interval_ms"));
        assertEquals(".*", json.get("groups_include"));
        assertTrue(json.containsKey("groups_exclude"));
        assertNull(json.get("groups_exclude"));
        // The core learns where the cluster is and nothing else: its Kafka calls go through Java.
        assertEquals(Map.of("bootstrap.servers", "localhost:9092"), json.get("cluster"));
        assertEquals("PLAINTEXT", c.clientProps().get("security.protocol"));
    }

    @Test
    void fileModeDefaultsToOwnerOnlyAndRejectsUnusableModes() {
        BackupSinkConfig c = new BackupSinkConfig(valid(tmp));
        @SuppressWarnings("unchecked")
        Map<String, Object> json = (Map<String, Object>) Json.parse(c.toNativeJson("b1", "b1-0"));
        assertEquals("0600", json.get("file_mode"));
        Map<String, String> p = valid(tmp);
        p.put("file.mode", "0640");
        assertEquals("0640", new BackupSinkConfig(p).getString("file.mode"));
        for (String bad : new String[] {"0755", "0400", "rw-r-----", "4600"}) {
            p.put("file.mode", bad);
            ConfigException e = assertThrows(ConfigException.class, () -> new BackupSinkConfig(p), bad);
            assertTrue(e.getMessage().contains("file.mode"), e.getMessage());
        }
    }

    @Test
    void compressionDefaultsToZstdAndRejectsUnknownCodecsNamingTheChoices() {
        BackupSinkConfig c = new BackupSinkConfig(valid(tmp));
        @SuppressWarnings("unchecked")
        Map<String, Object> json = (Map<String, Object>) Json.parse(c.toNativeJson("b1", "b1-0"));
        assertEquals("zstd", json.get("compression_type"));
        assertEquals(1L, json.get("compression_level"));
        Map<String, String> p = valid(tmp);
        p.put("compression.type", "lz4");
        @SuppressWarnings("unchecked")
        Map<String, Object> lz4 = (Map<String, Object>) Json.parse(new BackupSinkConfig(p).toNativeJson("b1", "b1-0"));
        assertEquals("lz4", lz4.get("compression_type"));
        p.put("compression.type", "snappy");
        p.put("compression.level", "30");
        Map<String, List<String>> e = errors(offline().validate(p));
        assertTrue(e.get("compression.type").get(0).contains("zstd"), e.toString());
        assertTrue(e.containsKey("compression.level"), e.toString());
    }

    @Test
    void clientPropsFallBackToConsumerOverridesAndNoSecretReachesTheCore() {
        Map<String, String> p = valid(tmp);
        p.remove("cluster.security.protocol");
        p.put("consumer.override.security.protocol", "SASL_PLAINTEXT");
        p.put("consumer.override.sasl.mechanism", "SCRAM-SHA-512");
        p.put("consumer.override.sasl.jaas.config", "x required username=\"u\" password=\"s3cret-override\";");
        p.put("cluster.sasl.mechanism", "PLAIN");
        BackupSinkConfig c = new BackupSinkConfig(p);
        Map<String, String> client = c.clientProps();
        assertEquals("SASL_PLAINTEXT", client.get("security.protocol"));
        assertEquals("PLAIN", client.get("sasl.mechanism"), "cluster.* wins over the override");
        assertTrue(client.get("sasl.jaas.config").contains("s3cret-override"));
        assertEquals("consumer.override.sasl.jaas.config",
                BackupSinkConfig.sourceKey(p, "consumer.override.", "sasl.jaas.config"));
        assertEquals("cluster.sasl.mechanism", BackupSinkConfig.sourceKey(p, "consumer.override.", "sasl.mechanism"));
        String nativeJson = new String(c.toNativeJson("b1", "b1-0"), java.nio.charset.StandardCharsets.UTF_8);
        assertFalse(nativeJson.contains("s3cret"), nativeJson);
        assertEquals(org.apache.kafka.common.config.ConfigDef.Type.PASSWORD,
                BackupSinkConfig.CONFIG_DEF.configKeys().get("cluster.sasl.jaas.config").type);
    }

    @Test
    void validConfigHasNoErrors() {
        assertEquals(Map.of(), errors(offline().validate(valid(tmp))));
    }

    @Test
    void missingTargetDirNamesTheFix() {
        Map<String, String> p = valid(tmp);
        p.remove("target.dir");
        Map<String, List<String>> e = errors(offline().validate(p));
        assertEquals(1, e.get("target.dir").size(), e.toString());
        assertTrue(e.get("target.dir").get(0).contains("target.dir is required"), e.toString());
    }

    @Test
    void targetDirIsCreatedWhenMissing() {
        Path sub = tmp.resolve("x/y");
        assertEquals(Map.of(), errors(offline().validate(valid(sub))));
        assertTrue(Files.isDirectory(sub));
        try (var s = Files.list(sub)) {
            assertEquals(0, s.count(), "the probe file is deleted");
        } catch (java.io.IOException ex) {
            throw new AssertionError(ex);
        }
    }

    @Test
    void uncreatableTargetDirIsRejected() throws Exception {
        Path file = Files.writeString(tmp.resolve("plain-file"), "x");
        Map<String, List<String>> e = errors(offline().validate(valid(file.resolve("sub"))));
        String msg = e.get("target.dir").get(0);
        assertTrue(msg.contains("cannot be created"), msg);
        assertTrue(msg.contains(file.resolve("sub").toString()), msg);
    }

    @Test
    void unwritableTargetDirIsRejected() throws Exception {
        if (System.getProperty("user.name").equals("root")) {
            // root writes anywhere; a directory that is a file is unwritable for everyone.
            Path file = Files.writeString(tmp.resolve("f"), "x");
            Map<String, List<String>> e = errors(offline().validate(valid(file)));
            assertTrue(e.get("target.dir").get(0).contains("cannot be created"), e.toString());
            return;
        }
        Path ro = Files.createDirectory(tmp.resolve("ro"));
        ro.toFile().setWritable(false);
        Map<String, List<String>> e = errors(offline().validate(valid(ro)));
        assertTrue(e.get("target.dir").get(0).contains("not writable"), e.toString());
    }

    @Test
    void convertersMustAllBeByteArray() {
        Map<String, String> p = valid(tmp);
        p.remove("header.converter");
        p.put("value.converter", "org.apache.kafka.connect.json.JsonConverter");
        Map<String, List<String>> e = errors(offline().validate(p));
        assertEquals(2, e.size(), e.toString());
        assertTrue(e.get("header.converter").get(0).contains("not set"), e.toString());
        assertTrue(e.get("header.converter").get(0).contains(ConfigChecks.BYTE_ARRAY_CONVERTER), e.toString());
        assertTrue(e.get("value.converter").get(0).contains("JsonConverter"), e.toString());
    }

    @Test
    void isolationLevelMustBeReadCommitted() {
        Map<String, String> p = valid(tmp);
        p.put("consumer.override.isolation.level", "read_uncommitted");
        String msg = errors(offline().validate(p)).get("consumer.override.isolation.level").get(0);
        assertTrue(msg.contains("aborted transactions") && msg.contains("read_committed"), msg);
        p.remove("consumer.override.isolation.level");
        assertTrue(errors(offline().validate(p)).containsKey("consumer.override.isolation.level"));
    }

    @Test
    void badRegexAndRangesAreRejected() {
        Map<String, String> p = valid(tmp);
        p.put("groups.include", "(unclosed");
        p.put("max.segment.size.bytes", "10");
        Map<String, List<String>> e = errors(offline().validate(p));
        assertTrue(e.get("groups.include").get(0).contains("regular expression"), e.toString());
        assertTrue(e.containsKey("max.segment.size.bytes"), e.toString());
        assertThrows(ConfigException.class, () -> new BackupSinkConfig(p));
    }

    @Test
    void startInitializesTheBackupRootAndTaskConfigsAreCopiesWithTaskIndex() {
        BackupSinkConnector c = new BackupSinkConnector();
        c.start(valid(tmp));
        assertTrue(Files.exists(tmp.resolve("kbackup.json")), "the connector created the backup root marker");
        List<Map<String, String>> tasks = c.taskConfigs(3);
        assertEquals(3, tasks.size());
        for (int i = 0; i < 3; i++) {
            assertEquals(Integer.toString(i), tasks.get(i).get(BackupSinkConfig.TASK_INDEX_CONFIG));
            assertEquals(tmp.toString(), tasks.get(i).get("target.dir"));
        }
    }

    /** A connector whose cluster check answers "fine": these tests run without a broker; the
     *  real check (unknown topic, unreachable cluster) is tested against the real broker in
     *  tests/integration/test_sink.py. */
    private static BackupSinkConnector offline() {
        BackupSinkConnector c = new BackupSinkConnector();
        c.clusterCheck = (cluster, keyOf, topics, bootstrapKey, topicsKey) -> Map.of();
        return c;
    }
}
