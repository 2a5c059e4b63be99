package io.kbackup.connect.internal;

import io.kbackup.connect.KbackupException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.connect.header.Header;
import org.apache.kafka.connect.sink.SinkRecord;

import java.util.Collection;
import java.util.Map;

/**
 * Encodes what Java hands to the bridge ({@code docs/jni.md}): one buffer per batch, never one
 * JNI call per record.
 */
public final class BatchEncoder {
    private BatchEncoder() {
    }

    /** Encodes every record of one {@code put()} into one batch. */
    public static byte[] encodeSinkBatch(Collection<SinkRecord> records) {
        // Sized exactly in a first pass, so the buffer never grows and is handed over as is.
        BufferWriter w = new BufferWriter(sinkBatchSize(records));
        String lastTopic = null;
        byte[] lastTopicUtf8 = null;
        w.u8(WireFormat.MAGIC);
        w.u8(WireFormat.VERSION);
        w.u8(0);
        w.i32(records.size());
        for (SinkRecord r : records) {
            // The original coordinates: Connect tracks offsets by them even after transforms.
            String topic = r.originalTopic();
            Integer partition = r.originalKafkaPartition();
            long offset = r.originalKafkaOffset();
            if (partition == null) {
                throw new KbackupException("record of topic " + topic + " at offset " + offset
                        + " has no partition: kbackup backs up records exactly as Kafka delivers them; "
                        + "remove transforms that clear the partition");
            }
            if (topic != lastTopic) { // same String instance for a whole batch of a partition
                lastTopic = topic;
                lastTopicUtf8 = WireFormat.utf8(topic, "topic");
            }
            w.utf8(lastTopicUtf8);
            w.i32(partition);
            w.i64(offset);
            Long ts = r.timestamp();
            w.i64(ts == null ? -1L : ts);
            w.u8(ts == null ? 0 : WireFormat.timestampTypeCode(r.timestampType()));
            w.bytes32(bytesOf(r.key(), "key", "key.converter", r));
            w.bytes32(bytesOf(r.value(), "value", "value.converter", r));
            int countPos = w.reserveI32();
            int headers = 0;
            for (Header h : r.headers()) {
                w.str16(h.key(), "header key");
                w.bytes32(bytesOf(h.value(), "header '" + h.key() + "' value", "header.converter", r));
                headers++;
            }
            w.putI32At(countPos, headers);
        }
        return w.toBytes();
    }

    /** Exact size of {@link #encodeSinkBatch}'s buffer (a lower bound if a record will be refused). */
    private static int sinkBatchSize(Collection<SinkRecord> records) {
        long size = 7;
        String lastTopic = null;
        int lastTopicLen = 0;
        for (SinkRecord r : records) {
            String topic = r.originalTopic();
            if (topic != lastTopic) {
                lastTopic = topic;
                lastTopicLen = topic == null ? 0 : WireFormat.utf8Length(topic);
            }
            size += 2 + lastTopicLen + 4 + 8 + 8 + 1 + 4 + 4 + 4 + byteLength(r.key()) + byteLength(r.value());
            for (Header h : r.headers()) {
                size += 2 + (h.key() == null ? 0 : WireFormat.utf8Length(h.key())) + 4 + byteLength(h.value());
            }
        }
        return (int) Math.min(size, Integer.MAX_VALUE - 16);
    }

    private static int byteLength(Object o) {
        return o instanceof byte[] ? ((byte[]) o).length : 0;
    }

    /** Encodes a partitions buffer. */
    public static byte[] encodePartitions(Collection<TopicPartition> partitions) {
        BufferWriter w = new BufferWriter(4 + partitions.size() * 32);
        w.i32(partitions.size());
        for (TopicPartition tp : partitions) {
            w.str16(tp.topic(), "topic");
            w.i32(tp.partition());
        }
        return w.toBytes();
    }

    /** Encodes an offsets buffer (iteration order kept). */
    public static byte[] encodeOffsets(Map<TopicPartition, Long> offsets) {
        BufferWriter w = new BufferWriter(4 + offsets.size() * 40);
        w.i32(offsets.size());
        for (Map.Entry<TopicPartition, Long> e : offsets.entrySet()) {
            w.str16(e.getKey().topic(), "topic");
            w.i32(e.getKey().partition());
            w.i64(e.getValue());
        }
        return w.toBytes();
    }

    private static byte[] bytesOf(Object o, String what, String converterKey, SinkRecord r) {
        if (o == null || o instanceof byte[]) {
            return (byte[]) o;
        }
        throw new KbackupException("record " + r.originalTopic() + "-" + r.originalKafkaPartition() + "@"
                + r.originalKafkaOffset() + " has a " + what + " of type " + o.getClass().getName()
                + " instead of byte[]: set \"" + converterKey + "\": \"" + ConfigChecks.BYTE_ARRAY_CONVERTER
                + "\" in the connector config (and remove transforms that change it) so the backup keeps the "
                + "original bytes");
    }
}
