package io.kbackup.connect.internal;

import io.kbackup.connect.KbackupException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.record.TimestampType;
import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.header.ConnectHeaders;
import org.apache.kafka.connect.sink.SinkRecord;
import org.junit.jupiter.api.Test;

import java.nio.ByteBuffer;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

public class WireBuffersTest {
    public static SinkRecord record(String topic, int partition, long offset, Object key, Object value, Long ts,
                             TimestampType tt, ConnectHeaders headers) {
        return new SinkRecord(topic, partition, Schema.OPTIONAL_BYTES_SCHEMA, key, Schema.OPTIONAL_BYTES_SCHEMA, value,
                offset, ts, tt, headers);
    }

    @Test
    void sinkBatchKeepsNullEmptyBytesHeadersAndTimestamps() {
        ConnectHeaders h = new ConnectHeaders();
        h.addBytes("dup", new byte[] {1});
        h.add("nullv", null, Schema.OPTIONAL_BYTES_SCHEMA);
        h.addBytes("dup", new byte[] {2, 3});
        byte[] binary = {0, (byte) 0xFF, 0x7F, (byte) 0x80};
        List<SinkRecord> in = List.of(
                record("t", 0, 5, null, new byte[0], 1000L, TimestampType.CREATE_TIME, h),
                record("t", 0, 9, binary, null, 2000L, TimestampType.LOG_APPEND_TIME, new ConnectHeaders()),
                record("ü-topic", 7, Long.MAX_VALUE, new byte[0], binary, null, TimestampType.NO_TIMESTAMP_TYPE,
                        new ConnectHeaders()));
        byte[] buf = BatchEncoder.encodeSinkBatch(in);
        assertEquals(WireFormat.MAGIC, buf[0]);
        assertEquals(WireFormat.VERSION, buf[1]);

        PollBatch out = BatchDecoder.decodeBatch(buf);
        assertEquals(0, out.flags());
        assertEquals(3, out.records().size());
        PolledRecord r0 = out.records().get(0);
        assertEquals("t", r0.topic());
        assertEquals(5, r0.offset());
        assertEquals(1000L, r0.timestamp());
        assertEquals(1, r0.timestampType());
        assertNull(r0.key());
        assertArrayEquals(new byte[0], r0.value());
        assertEquals(3, r0.headers().size());
        assertEquals("dup", r0.headers().get(0).key());
        assertArrayEquals(new byte[] {1}, r0.headers().get(0).value());
        assertEquals("nullv", r0.headers().get(1).key());
        assertNull(r0.headers().get(1).value());
        assertArrayEquals(new byte[] {2, 3}, r0.headers().get(2).value());

        PolledRecord r1 = out.records().get(1);
        assertArrayEquals(binary, r1.key());
        assertNull(r1.value());
        assertEquals(2, r1.timestampType());

        PolledRecord r2 = out.records().get(2);
        assertEquals("ü-topic", r2.topic());
        assertEquals(7, r2.partition());
        assertEquals(Long.MAX_VALUE, r2.offset());
        assertEquals(-1L, r2.timestamp());
        assertEquals(0, r2.timestampType());
        assertArrayEquals(new byte[0], r2.key());
    }

    @Test
    void layoutIsBigEndianAsDocumented() {
        byte[] buf = BatchEncoder.encodeSinkBatch(List.of(
                record("ab", 3, 258, null, new byte[] {9}, 1L, TimestampType.CREATE_TIME, new ConnectHeaders())));
        ByteBuffer b = ByteBuffer.wrap(buf);
        assertEquals(0x4B, b.get());
        assertEquals(1, b.get());
        assertEquals(0, b.get());
        assertEquals(1, b.getInt());
        assertEquals(2, b.getShort());
        assertEquals('a', b.get());
        assertEquals('b', b.get());
        assertEquals(3, b.getInt());
        assertEquals(258L, b.getLong());
        assertEquals(1L, b.getLong());
        assertEquals(1, b.get());
        assertEquals(-1, b.getInt(), "null key is length -1");
        assertEquals(1, b.getInt());
        assertEquals(9, b.get());
        assertEquals(0, b.getInt(), "header count");
        assertFalse(b.hasRemaining());
    }

    @Test
    void nonBytesValueNamesTheConverterFix() {
        KbackupException e = assertThrows(KbackupException.class, () -> BatchEncoder.encodeSinkBatch(List.of(
                record("t", 0, 1, null, "text", 1L, TimestampType.CREATE_TIME, new ConnectHeaders()))));
        assertTrue(e.getMessage().contains("value.converter"), e.getMessage());
        assertTrue(e.getMessage().contains(ConfigChecks.BYTE_ARRAY_CONVERTER), e.getMessage());
        assertTrue(e.getMessage().contains("t-0@1"), e.getMessage());

        ConnectHeaders h = new ConnectHeaders();
        h.addString("h", "parsed");
        KbackupException he = assertThrows(KbackupException.class, () -> BatchEncoder.encodeSinkBatch(List.of(
                record("t", 0, 1, null, null, 1L, TimestampType.CREATE_TIME, h))));
        assertTrue(he.getMessage().contains("header.converter"), he.getMessage());

        KbackupException ke = assertThrows(KbackupException.class, () -> BatchEncoder.encodeSinkBatch(List.of(
                record("t", 0, 1, 42, null, 1L, TimestampType.CREATE_TIME, new ConnectHeaders()))));
        assertTrue(ke.getMessage().contains("key.converter"), ke.getMessage());
    }

    @Test
    void offsetsPartitionsAndAcksRoundTrip() {
        Map<TopicPartition, Long> offsets = new LinkedHashMap<>();
        offsets.put(new TopicPartition("a", 0), -1L);
        offsets.put(new TopicPartition("b", 12), 1L << 40);
        assertEquals(offsets, BatchDecoder.decodeOffsets(BatchEncoder.encodeOffsets(offsets)));
        assertEquals(List.copyOf(offsets.keySet()),
                TestBuffers.decodePartitions(BatchEncoder.encodePartitions(offsets.keySet())));

        byte[] acks = TestBuffers.encodeAcks(List.of(new TestBuffers.Ack("x", 2, 10, 3)));
        ByteBuffer b = ByteBuffer.wrap(acks);
        assertEquals(1, b.getInt());
        assertEquals(1, b.getShort());
        assertEquals('x', b.get());
        assertEquals(2, b.getInt());
        assertEquals(10L, b.getLong());
        assertEquals(3L, b.getLong());
        assertFalse(b.hasRemaining());
    }

    @Test
    void malformedBuffersAreKbackupExceptionsNotCrashes() {
        byte[] good = BatchEncoder.encodeSinkBatch(List.of(
                record("t", 0, 1, new byte[] {1, 2}, null, 1L, TimestampType.CREATE_TIME, new ConnectHeaders())));
        for (int cut = 0; cut < good.length; cut++) {
            byte[] truncated = Arrays.copyOf(good, cut);
            KbackupException e = assertThrows(KbackupException.class, () -> BatchDecoder.decodeBatch(truncated));
            assertTrue(e.getMessage().contains("malformed"), e.getMessage());
        }
        byte[] badMagic = good.clone();
        badMagic[0] = 0;
        assertThrows(KbackupException.class, () -> BatchDecoder.decodeBatch(badMagic));
        byte[] trailing = Arrays.copyOf(good, good.length + 1);
        assertThrows(KbackupException.class, () -> BatchDecoder.decodeBatch(trailing));
        assertThrows(KbackupException.class, () -> BatchDecoder.decodeOffsets(new byte[] {0, 0, 0, 5}));
    }

    @Test
    void pollFlagsAreExposed() {
        byte[] buf = {0x4B, 1, 3, 0, 0, 0, 0};
        PollBatch b = BatchDecoder.decodeBatch(buf);
        assertTrue(b.finished());
        assertEquals(3, b.flags());
        assertTrue(b.records().isEmpty());
    }

    @Test
    void drainedAckBuffersEncodeExactlyLikeEncodeAcksAndAreReusable() {
        var a = new AckBuffer("orders", 0);
        var b = new AckBuffer("pay\u00e9", 7);
        List<TestBuffers.Ack> expected = new java.util.ArrayList<>();
        for (int i = 0; i < 300; i++) { // past the initial capacity: the array must grow
            a.add(i, 1000 + i);
            expected.add(new TestBuffers.Ack("orders", 0, i, 1000 + i));
        }
        b.add(5, -1); // handled, not written (filtered by a transform)
        b.add(6, 42);
        expected.add(new TestBuffers.Ack("pay\u00e9", 7, 5, -1));
        expected.add(new TestBuffers.Ack("pay\u00e9", 7, 6, 42));

        assertArrayEquals(TestBuffers.encodeAcks(expected), AckBuffer.drain(List.of(a, b)));
        assertArrayEquals(TestBuffers.encodeAcks(List.of()), AckBuffer.drain(List.of(a, b)),
                "a drain leaves the buffers empty");
        a.add(300, 1300);
        assertArrayEquals(TestBuffers.encodeAcks(List.of(new TestBuffers.Ack("orders", 0, 300, 1300))),
                AckBuffer.drain(List.of(a, b)), "buffers are reused after a drain");
        assertEquals(301, a.added());
    }
}
