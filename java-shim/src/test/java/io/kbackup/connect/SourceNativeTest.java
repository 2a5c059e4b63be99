package io.kbackup.connect;

import io.kbackup.connect.internal.BackupSummary;
import io.kbackup.connect.internal.BatchEncoder;
import io.kbackup.connect.internal.WireBuffersTest;
import io.kbackup.connect.internal.ClusterClient;
import io.kbackup.connect.internal.Json;
import io.kbackup.connect.internal.Native;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.record.TimestampType;
import org.apache.kafka.connect.header.ConnectHeaders;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Restore-side checks that read a real backup through the native library (no Kafka needed). */
class SourceNativeTest {
    @TempDir
    Path tmp;

    private void writeBackup() {
        long h = Native.sinkOpen(Json.write(Map.of("connector_name", "src-test", "task_id", "src-test-0",
                "target_dir", tmp.toString(), "cluster", Map.of())), new ClusterClient(Map.of()));
        try {
            Native.sinkOpenPartitions(h, BatchEncoder.encodePartitions(List.of(
                    new TopicPartition("orders", 0), new TopicPartition("orders", 1))));
            Native.sinkPut(h, BatchEncoder.encodeSinkBatch(List.of(
                    WireBuffersTest.record("orders", 0, 0, null, new byte[] {1}, 1L, TimestampType.CREATE_TIME,
                            new ConnectHeaders()),
                    WireBuffersTest.record("orders", 1, 4, null, new byte[] {2}, 2L, TimestampType.CREATE_TIME,
                            new ConnectHeaders()))));
            Native.sinkFlush(h);
        } finally {
            Native.sinkClose(h);
        }
    }

    @Test
    void inspectListsTopicsAndPartitions() {
        Native.ensureLoaded();
        writeBackup();
        assertEquals(Map.of("orders", List.of(0, 1)), BackupSummary.topicPartitions(tmp.toString()));
    }

    @Test
    void validateNamesTopicsMissingFromTheBackup() {
        Native.ensureLoaded();
        writeBackup();
        Map<String, String> p = SourceConfigTest.valid(tmp);
        p.put("topics", "orders,missing");
        Map<String, List<String>> e = SinkConfigTest.errors(new BackupSourceConnector().validate(p));
        assertTrue(e.get("topics").toString().contains("\"missing\" is not in the backup"), e.toString());
        assertTrue(e.get("topics").toString().contains("[orders]"), e.toString());

        p.put("topics", "orders");
        p.put("topics.rename", "orders:..");
        e = SinkConfigTest.errors(new BackupSourceConnector().validate(p));
        assertTrue(e.get("topics.rename").get(0).contains("not a valid Kafka topic name"), e.toString());
    }

    @Test
    void partitionsAreSpreadRoundRobin() {
        assertEquals(List.of("a:0,a:2,b:1", "a:1,b:0"),
                BackupSourceConnector.spread(List.of("a:0", "a:1", "a:2", "b:0", "b:1"), 2));
        assertEquals(List.of("a:0", "a:1"), BackupSourceConnector.spread(List.of("a:0", "a:1"), 5));
        assertEquals(List.of(""), BackupSourceConnector.spread(List.of(), 3));
    }
}
