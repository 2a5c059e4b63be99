package io.kbackup.connect.internal;

import io.kbackup.connect.KbackupException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.record.TimestampType;
import org.apache.kafka.connect.header.ConnectHeaders;
import org.apache.kafka.connect.sink.SinkRecord;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Runs the REAL native library (copied into target/classes by the build, loaded through
 * NativeLoader) under -Xcheck:jni (surefire argLine), so any JNI misuse by the bridge fails here.
 */
class NativeBridgeTest {
    /** No cluster configured: the core makes no Kafka call through it. */
    private static final ClusterClient NO_CLUSTER = new ClusterClient(java.util.Map.of());

    @TempDir
    Path tmp;

    @BeforeAll
    static void load() {
        Native.ensureLoaded();
    }

    private byte[] sinkConfig(Path dir) {
        return Json.write(Map.of(
                "connector_name", "jni-test",
                "task_id", "jni-test-0",
                "target_dir", dir.toString(),
                "max_segment_size_bytes", 1L << 20,
                "max_segment_age_ms", 3_600_000L,
                "index_interval_bytes", 4096,
                "cluster", Map.of(),
                "offsets_sync_interval_ms", 5000L,
                "groups_include", ".*"));
    }

    private static SinkRecord rec(String topic, int partition, long offset, String value) {
        return WireBuffersTest.record(topic, partition, offset, null,
                value == null ? null : value.getBytes(StandardCharsets.UTF_8), 1000L + offset,
                TimestampType.CREATE_TIME, new ConnectHeaders());
    }

    @Test
    void runsUnderXcheckJni() {
        assertTrue(java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments().contains("-Xcheck:jni"),
                "surefire's argLine must keep -Xcheck:jni so the JVM checks every JNI call of the bridge");
    }

    @Test
    void versionNamesCoreAndFormat() {
        String v = Native.version();
        assertTrue(v.contains("kbackup-core") && v.contains("format"), v);
    }

    @Test
    void panicBecomesKbackupExceptionAndTheJvmSurvives() {
        for (int i = 0; i < 3; i++) {
            KbackupException e = assertThrows(KbackupException.class, Native::panicForTest);
            assertTrue(e.getMessage().contains("panicked in panicForTest"), e.getMessage());
            assertTrue(e.getMessage().contains("deliberate panic"), e.getMessage());
        }
        // The bridge still works after the panics.
        assertTrue(Native.version().contains("kbackup-core"));
    }

    @Test
    void closedAndUnknownHandlesThrowAndDoubleCloseIsANoOp() {
        long h = Native.sinkOpen(sinkConfig(tmp), NO_CLUSTER);
        assertNotEquals(0L, h);
        Native.sinkClose(h);
        Native.sinkClose(h); // no-op
        KbackupException e = assertThrows(KbackupException.class, () -> Native.sinkFlush(h));
        assertTrue(e.getMessage().contains("handle " + h + " is closed"), e.getMessage());
        assertThrows(KbackupException.class, () -> Native.sinkPut(h, BatchEncoder.encodeSinkBatch(List.of())));
        assertThrows(KbackupException.class, () -> Native.sinkFlush(987654321L));
        assertThrows(KbackupException.class, () -> Native.sourcePoll(h, TestBuffers.encodeAcks(List.of()), 10),
                "a sink handle is not a source handle");
        assertThrows(KbackupException.class, () -> Native.sourceAck(h, TestBuffers.encodeAcks(List.of())),
                "acks for a sink handle are refused");
        Native.sourceClose(424242L); // closing an unknown handle is a no-op too
    }

    @Test
    void badInputIsAnExceptionNotACrash() {
        KbackupException cfg = assertThrows(KbackupException.class,
                () -> Native.sinkOpen("{not json".getBytes(StandardCharsets.UTF_8), NO_CLUSTER));
        assertTrue(cfg.getMessage().contains("sink config JSON"), cfg.getMessage());
        assertThrows(KbackupException.class, () -> Native.sinkOpen(null, NO_CLUSTER));
        long h = Native.sinkOpen(sinkConfig(tmp), NO_CLUSTER);
        try {
            assertThrows(KbackupException.class, () -> Native.sinkPut(h, new byte[] {0x4B, 1, 0, 0, 0, 0, 9}));
            assertThrows(KbackupException.class, () -> Native.sinkOpenPartitions(h, new byte[] {1}));
        } finally {
            Native.sinkClose(h);
        }
    }

    @Test
    void sinkRoundTripResumesFromTheFiles() throws Exception {
        TopicPartition p0 = new TopicPartition("orders", 0);
        TopicPartition p1 = new TopicPartition("orders", 1);
        long h = Native.sinkOpen(sinkConfig(tmp), NO_CLUSTER);
        try {
            Map<TopicPartition, Long> resume =
                    BatchDecoder.decodeOffsets(Native.sinkOpenPartitions(h, BatchEncoder.encodePartitions(List.of(p0, p1))));
            assertEquals(Map.of(p0, -1L, p1, -1L), resume, "an empty backup resumes nowhere");

            Native.sinkPut(h, BatchEncoder.encodeSinkBatch(List.of(
                    rec("orders", 0, 5, "a"), rec("orders", 0, 6, null), rec("orders", 0, 9, ""),
                    rec("orders", 1, 0, "b"))));
            Map<TopicPartition, Long> durable = BatchDecoder.decodeOffsets(Native.sinkFlush(h));
            assertEquals(10L, durable.get(p0));
            assertEquals(1L, durable.get(p1));

            // Re-delivery of what is on disk is skipped, not an error.
            Native.sinkPut(h, BatchEncoder.encodeSinkBatch(List.of(rec("orders", 0, 6, null), rec("orders", 0, 10, "c"))));
            assertEquals(11L, BatchDecoder.decodeOffsets(Native.sinkFlush(h)).get(p0));
            Native.sinkClosePartitions(h, BatchEncoder.encodePartitions(List.of(p0, p1)));
        } finally {
            Native.sinkClose(h);
        }
        try (Stream<Path> files = Files.walk(tmp)) {
            assertTrue(files.anyMatch(f -> f.toString().contains("orders")), "files were written under target.dir");
        }

        long h2 = Native.sinkOpen(sinkConfig(tmp), NO_CLUSTER);
        try {
            Map<TopicPartition, Long> resume =
                    BatchDecoder.decodeOffsets(Native.sinkOpenPartitions(h2, BatchEncoder.encodePartitions(List.of(p0, p1))));
            assertEquals(11L, resume.get(p0), "resume after the last offset in the files");
            assertEquals(1L, resume.get(p1));
        } finally {
            Native.sinkClose(h2);
        }
    }

    @Test
    void sinkMetricsCountWhatWasWrittenInOneNativeCallPerSnapshot() {
        TopicPartition p0 = new TopicPartition("orders", 0);
        long h = Native.sinkOpen(sinkConfig(tmp), NO_CLUSTER);
        Map<String, java.util.function.DoubleSupplier> gauges = new java.util.concurrent.ConcurrentHashMap<>();
        java.util.concurrent.atomic.AtomicInteger calls = new java.util.concurrent.atomic.AtomicInteger();
        TaskMetrics.Registry registry = new TaskMetrics.Registry() {
            @Override
            public void add(String name, String description, java.util.LinkedHashMap<String, String> tags,
                            java.util.function.DoubleSupplier value) {
                assertTrue(gauges.put(name + tags, value) == null, "registered twice: " + name + tags);
            }

            @Override
            public void remove(String name, java.util.LinkedHashMap<String, String> tags) {
                gauges.remove(name + tags);
            }
        };
        TaskMetrics m = TaskMetrics.withRegistry(registry, () -> {
            calls.incrementAndGet();
            return Native.sinkMetrics(h);
        }, TaskMetrics.SINK_TASK, TaskMetrics.SINK_PARTITION);
        try {
            Native.sinkOpenPartitions(h, BatchEncoder.encodePartitions(List.of(p0)));
            m.partitionsOpened(List.of(p0));
            Native.sinkPut(h, BatchEncoder.encodeSinkBatch(List.of(rec("orders", 0, 5, "a"), rec("orders", 0, 6, "b"))));
            Native.sinkFlush(h);
            String part = "{topic=orders, partition=0}";
            assertEquals(2.0, gauges.get("records-written{}").getAsDouble());
            assertEquals(6.0, gauges.get("durable-offset" + part).getAsDouble());
            assertEquals(2.0, gauges.get("records-written" + part).getAsDouble());
            assertEquals(1.0, gauges.get("flushes{}").getAsDouble());
            assertEquals(-1.0, gauges.get("lag-records" + part).getAsDouble(), "no cluster: lag unknown");
            assertEquals(1, calls.get(), "one native call serves every gauge read within the cache time");
            m.partitionsClosed(List.of(p0));
            assertTrue(gauges.keySet().stream().noneMatch(k -> k.contains("topic=")), gauges.keySet().toString());
        } finally {
            m.close();
            Native.sinkClose(h);
        }
        assertTrue(gauges.isEmpty(), gauges.keySet().toString());
    }

    @Test
    void inspectOfAMissingDirectoryNamesIt() {
        Path missing = tmp.resolve("no-backup-here");
        KbackupException e = assertThrows(KbackupException.class,
                () -> Native.listPartitions(missing.toString().getBytes(StandardCharsets.UTF_8),
                        "{}".getBytes(StandardCharsets.UTF_8)));
        assertTrue(e.getMessage().contains("no-backup-here"), e.getMessage());
    }

    @Test
    void aBadStorageSettingIsAnErrorNamingItNeverShowingASecret() {
        byte[] settings = "{\"storage.secret.access.key\":\"s3cr3t-never-shown\",\"storage.allow.http\":\"maybe\"}"
                .getBytes(StandardCharsets.UTF_8);
        KbackupException e = assertThrows(KbackupException.class,
                () -> Native.checkLocation("s3://bucket/p".getBytes(StandardCharsets.UTF_8), settings, true));
        assertTrue(e.getMessage().contains("storage.allow.http") && e.getMessage().contains("true or false"),
                e.getMessage());
        assertFalse(e.getMessage().contains("s3cr3t"), e.getMessage());
        // a directory is the caller's to check: no store is contacted
        assertNull(Native.checkLocation(tmp.toString().getBytes(StandardCharsets.UTF_8), settings, true));
    }

    @Test
    void nativeLogLinesReachJava() {
        // panicForTest logs a warning before panicking; the bridge must hand it to Native.log on
        // this thread without tripping -Xcheck:jni (a pending exception while calling Java).
        List<String> lines = new java.util.concurrent.CopyOnWriteArrayList<>();
        Native.tapForTests = lines::add;
        try {
            assertThrows(KbackupException.class, Native::panicForTest);
        } finally {
            Native.tapForTests = null;
        }
        assertTrue(lines.stream().anyMatch(l -> l.startsWith("2 kbackup_jni: ") && l.contains("panicking on purpose")),
                lines.toString());
        assertTrue(lines.stream().anyMatch(l -> l.startsWith("1 ") && l.contains("deliberate panic")),
                "the panic itself is logged as an error: " + lines);
    }
}
