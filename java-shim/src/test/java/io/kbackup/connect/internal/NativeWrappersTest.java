package io.kbackup.connect.internal;

import io.kbackup.connect.KbackupException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.record.TimestampType;
import org.apache.kafka.connect.header.ConnectHeaders;
import org.junit.jupiter.api.BeforeAll;
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

/** NativeSink and NativeSource over the real library (-Xcheck:jni): Connect types in, Connect types out. */
class NativeWrappersTest {
    private static final ClusterClient NO_CLUSTER = new ClusterClient(Map.of());
    private static final TopicPartition P0 = new TopicPartition("orders", 0);
    private static final TopicPartition P1 = new TopicPartition("orders", 1);

    @TempDir
    Path tmp;

    @BeforeAll
    static void load() {
        Native.ensureLoaded();
    }

    private NativeSink openSink() {
        return NativeSink.open(Json.write(Map.of("connector_name", "wrap-test", "task_id", "wrap-test-0",
                "target_dir", tmp.toString(), "cluster", Map.of())), NO_CLUSTER);
    }

    private void backUpTwoRecords() {
        try (NativeSink sink = openSink()) {
            assertEquals(Map.of(P0, -1L, P1, -1L), sink.open(List.of(P0, P1)));
            sink.put(List.of(
                    WireBuffersTest.record("orders", 0, 0, null, new byte[] {1}, 1L, TimestampType.CREATE_TIME,
                            new ConnectHeaders()),
                    WireBuffersTest.record("orders", 1, 4, null, new byte[] {2}, 2L, TimestampType.CREATE_TIME,
                            new ConnectHeaders())));
            Map<TopicPartition, Long> durable = sink.flush();
            assertEquals(1L, durable.get(P0));
            assertEquals(5L, durable.get(P1));
            sink.close(List.of(P0, P1));
        }
    }

    @Test
    void sinkSpeaksConnectTypesAndClosesOnceThenRefusesCalls() {
        NativeSink sink = openSink();
        sink.open(List.of(P0));
        assertTrue(sink.metricsJson().length > 0);
        sink.close();
        sink.close(); // safe twice
        assertNull(sink.metricsJson(), "a gauge read after close answers nothing instead of failing");
        KbackupException e = assertThrows(KbackupException.class, sink::flush);
        assertTrue(e.getMessage().contains("sink is closed"), e.getMessage());
        assertThrows(KbackupException.class, () -> sink.put(List.of()));
        assertThrows(KbackupException.class, () -> sink.open(List.of(P0)));
    }

    private Map<String, String> sourceProps() {
        Map<String, String> p = new HashMap<>();
        p.put("name", "wrap-restore");
        p.put("source.dir", tmp.toString());
        p.put("topics", "orders");
        p.put("topics.rename", "orders:orders-restored");
        p.put("cluster.bootstrap.servers", "localhost:1");
        p.put("kbackup.task.index", "0");
        return p;
    }

    @Test
    void sourceValidateTakesTheRawPropertiesAndKeysEveryProblem() {
        backUpTwoRecords();
        assertEquals(Map.of(), NativeSource.validate(sourceProps()));
        Map<String, String> p = sourceProps();
        p.put("topics", "orders,nope");
        p.put("topics.rename", "orders:x,orders:y");
        p.put("batch.size", "many");
        Map<String, List<String>> problems = NativeSource.validate(p);
        assertTrue(problems.get("topics").toString().contains("nope"), problems.toString());
        assertTrue(problems.get("topics.rename").toString().contains("twice"), problems.toString());
        assertTrue(problems.get("batch.size").toString().contains("'many'"), problems.toString());
    }

    @Test
    void sourceOpensFromRawPropertiesAnswersTargetsAndClosesOnce() {
        backUpTwoRecords();
        Map<TopicPartition, Long> assignment = new java.util.LinkedHashMap<>();
        assignment.put(P0, -1L);
        assignment.put(P1, -1L);
        NativeSource source = NativeSource.open(sourceProps(), assignment, NO_CLUSTER);
        assertEquals("orders-restored", source.targetTopic("orders"));
        assertEquals("other", source.targetTopic("other"));
        PollBatch batch = source.poll(List.of(), 10);
        assertEquals(2, batch.records().size());
        AckBuffer acks = new AckBuffer("orders", 0);
        acks.add(0, 0);
        source.close(List.of(acks));
        source.close(); // safe twice
        assertNull(source.metricsJson());
        KbackupException e = assertThrows(KbackupException.class, () -> source.poll(List.of(), 10));
        assertTrue(e.getMessage().contains("restore reader is closed"), e.getMessage());
    }

    @Test
    void sourceOpenRefusesABadConfigNamingTheKey() {
        backUpTwoRecords();
        Map<String, String> p = sourceProps();
        p.put("topics.rename", "orders");
        KbackupException e = assertThrows(KbackupException.class,
                () -> NativeSource.open(p, Map.of(P0, -1L), NO_CLUSTER));
        assertTrue(e.getMessage().contains("topics.rename"), e.getMessage());
    }
}
