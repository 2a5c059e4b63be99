package io.kbackup.connect;

import io.kbackup.connect.internal.ConfigChecks;
import io.kbackup.connect.internal.PolledHeader;
import io.kbackup.connect.internal.PolledRecord;
import org.apache.kafka.common.TopicPartition;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class SourceConfigTest {
    @TempDir
    Path tmp;

    static Map<String, String> valid(Path dir) {
        Map<String, String> p = new HashMap<>();
        p.put("name", "r1");
        p.put("source.dir", dir.toString());
        p.put("topics", "a,b");
        p.put("cluster.bootstrap.servers", "localhost:9092");
        p.put("key.converter", ConfigChecks.BYTE_ARRAY_CONVERTER);
        p.put("value.converter", ConfigChecks.BYTE_ARRAY_CONVERTER);
        p.put("header.converter", ConfigChecks.BYTE_ARRAY_CONVERTER);
        return p;
    }

    /** The connector forwards the raw properties; a malformed topics.rename is reported by the core under its key. */
    @Test
    void validateReportsMalformedRenamesFromTheCore() {
        Map<String, String> p = valid(tmp.resolve("nope"));
        p.put("topics.rename", "a:x:y");
        Map<String, List<String>> e = SinkConfigTest.errors(new BackupSourceConnector().validate(p));
        assertEquals(1, e.get("topics.rename").size(), e.toString());
        assertTrue(e.get("topics.rename").get(0).contains("'a:x:y' is not from:to"), e.toString());
    }

    @Test
    void validateRejectsMissingDirBadRenameAndConverters() {
        Map<String, String> p = valid(tmp.resolve("does-not-exist"));
        p.put("topics.rename", "a:bad name");
        p.put("key.converter", "org.apache.kafka.connect.storage.StringConverter");
        Map<String, List<String>> e = SinkConfigTest.errors(new BackupSourceConnector().validate(p));
        assertTrue(e.get("source.dir").get(0).contains("does not exist"), e.toString());
        assertTrue(e.get("topics.rename").get(0).contains("bad name"), e.toString());
        assertTrue(e.get("key.converter").get(0).contains(ConfigChecks.BYTE_ARRAY_CONVERTER), e.toString());
    }

    @Test
    void validateRejectsRenameCollisionsAndUnlistedRenames() {
        Map<String, String> p = valid(tmp.resolve("nope"));
        p.put("topics.rename", "a:b,c:d");
        Map<String, List<String>> e = SinkConfigTest.errors(new BackupSourceConnector().validate(p));
        String all = e.get("topics.rename").toString();
        // The core's wording (kbackup_core::restore::validate), as the CLI shows it.
        assertTrue(all.contains("would both be restored into \"b\""), all);
        assertTrue(all.contains("renames \"c\", which is not listed in topics"), all);
    }

    @Test
    void missingRequiredKeysNameTheFix() {
        Map<String, List<String>> e = SinkConfigTest.errors(new BackupSourceConnector().validate(new HashMap<>()));
        assertTrue(e.get("source.dir").get(0).contains("source.dir is required"), e.toString());
        assertTrue(e.get("topics").get(0).contains("kbackup inspect"), e.toString());
        assertTrue(e.get("cluster.bootstrap.servers").get(0).contains("restored into"), e.toString());
    }

    /**
     * docs/security.md: no Kafka credential reaches the native library, though the core gets the raw properties;
     * the object-store ones do (the core makes those requests).
     */
    @Test
    void coreGetsTheRawPropertiesButNoCredentialOrClientSetting() {
        Map<String, String> p = valid(tmp);
        p.put("topics.rename", "a:a2");
        p.put("kbackup.task.index", "3");
        p.put("cluster.sasl.jaas.config", "secret-jaas");
        p.put("cluster.ssl.keystore.password", "secret-pw");
        p.put("cluster.security.protocol", "SASL_SSL");
        p.put("producer.override.sasl.jaas.config", "secret-jaas-2");
        // the object-store credentials are the core's to use: it makes those requests itself
        p.put("storage.secret.access.key", "s3-key-for-the-core");
        Map<String, String> core = BackupSourceConfig.coreProps(p);
        assertEquals("s3-key-for-the-core", core.get("storage.secret.access.key"));
        assertEquals("a:a2", core.get("topics.rename"));
        assertEquals("r1", core.get("name"));
        assertEquals("3", core.get("kbackup.task.index"));
        assertEquals("localhost:9092", core.get("cluster.bootstrap.servers"));
        assertTrue(core.values().stream().noneMatch(v -> v.contains("secret")), core.toString());
        assertNull(core.get("cluster.security.protocol"));
        assertNull(core.get("key.converter"));
    }

    @Test
    void taskAssignmentParses() {
        assertEquals(List.of(new TopicPartition("a", 0), new TopicPartition("b.c", 12)),
                BackupSourceTask.parseAssignment("a:0,b.c:12"));
        assertEquals(List.of(), BackupSourceTask.parseAssignment(""));
        assertThrows(KbackupException.class, () -> BackupSourceTask.parseAssignment("a"));
        assertThrows(KbackupException.class, () -> BackupSourceTask.parseAssignment("a:x"));
    }

    @Test
    void polledRecordsBecomeSourceRecordsOnTheRenamedTopic() {
        BackupSourceTask task = new BackupSourceTask();
        // Only the parts of start() that need no native library: the core answers the targets.
        task.renames = Map.of("a", "a2");
        var r = new PolledRecord("a", 3, 17, 1234, (byte) 1, null, new byte[] {1},
                List.of(new PolledHeader("h", null), new PolledHeader("h", new byte[] {2})));
        var sr = task.toSourceRecord(r);
        assertEquals("a2", sr.topic());
        assertEquals(3, sr.kafkaPartition());
        assertEquals(1234L, sr.timestamp());
        assertNull(sr.key());
        assertEquals(Map.of("topic", "a", "partition", 3), sr.sourcePartition());
        assertEquals(Map.of("offset", 17L), sr.sourceOffset());
        assertEquals(2, sr.headers().size());
        var it = sr.headers().iterator();
        var h1 = it.next();
        var h2 = it.next();
        assertEquals("h", h1.key());
        assertNull(h1.value());
        assertEquals(org.apache.kafka.connect.data.Schema.OPTIONAL_BYTES_SCHEMA, h1.schema());
        assertTrue(java.util.Arrays.equals(new byte[] {2}, (byte[]) h2.value()));

        var noTs = new PolledRecord("b", 0, 1, -1, (byte) 0, null, null, List.of());
        assertNull(task.toSourceRecord(noTs).timestamp());
        assertEquals("b", task.toSourceRecord(noTs).topic());
    }

    /** Regression: Connect finds committed source offsets by the serialized key; Map.of's
     *  per-JVM order made a restarted worker miss them and restore everything again. */
    @Test
    void sourcePartitionKeyHasTheSameFieldOrderInEveryJvm() {
        var key = BackupSourceTask.sourcePartitionKey(new TopicPartition("orders", 3));
        assertEquals(List.of("partition", "topic"), List.copyOf(key.keySet()));
        assertEquals(3, key.get("partition"));
        assertEquals("orders", key.get("topic"));
    }
}
