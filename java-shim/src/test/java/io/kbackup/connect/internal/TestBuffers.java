package io.kbackup.connect.internal;

import org.apache.kafka.common.TopicPartition;

import java.nio.BufferUnderflowException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;

/** Test-only halves of the {@code docs/jni.md} buffers: what the shim never sends or reads itself. */
public final class TestBuffers {
    private TestBuffers() {
    }

    /** An acknowledgement: original offset {@code originalOffset} was written at {@code newOffset}. */
    public static final class Ack {
        private final String topic;
        private final int partition;
        private final long originalOffset;
        private final long newOffset;

        public Ack(String topic, int partition, long originalOffset, long newOffset) {
            this.topic = topic;
            this.partition = partition;
            this.originalOffset = originalOffset;
            this.newOffset = newOffset;
        }

        @Override
        public boolean equals(Object o) {
            if (this == o) {
                return true;
            }
            if (!(o instanceof Ack)) {
                return false;
            }
            Ack a = (Ack) o;
            return partition == a.partition && originalOffset == a.originalOffset && newOffset == a.newOffset
                    && Objects.equals(topic, a.topic);
        }

        @Override
        public int hashCode() {
            return Objects.hash(topic, partition, originalOffset, newOffset);
        }

        @Override
        public String toString() {
            return "Ack[topic=" + topic + ", partition=" + partition + ", originalOffset=" + originalOffset
                    + ", newOffset=" + newOffset + "]";
        }
    }

    /** Encodes an acks buffer one object per acknowledgement (the reference {@link AckBuffer#drain} must match). */
    public static byte[] encodeAcks(List<Ack> acks) {
        BufferWriter w = new BufferWriter(4 + acks.size() * 48);
        w.i32(acks.size());
        for (Ack a : acks) {
            w.str16(a.topic, "topic");
            w.i32(a.partition);
            w.i64(a.originalOffset);
            w.i64(a.newOffset);
        }
        return w.toBytes();
    }

    /** Decodes a partitions buffer (the bridge's side of {@link BatchEncoder#encodePartitions}). */
    public static List<TopicPartition> decodePartitions(byte[] buf) {
        ByteBuffer b = ByteBuffer.wrap(buf);
        try {
            int n = BatchDecoder.count(b, "partitions");
            List<TopicPartition> out = new ArrayList<>(n);
            for (int i = 0; i < n; i++) {
                String topic = BatchDecoder.str16(b);
                out.add(new TopicPartition(topic, b.getInt()));
            }
            BatchDecoder.requireEnd(b, "partitions");
            return out;
        } catch (BufferUnderflowException e) {
            throw BatchDecoder.malformed("partitions", b, "truncated");
        }
    }
}
