package io.kbackup.connect.internal;

import io.kbackup.connect.KbackupException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.record.TimestampType;
import org.apache.kafka.connect.header.Header;
import org.apache.kafka.connect.sink.SinkRecord;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.BufferUnderflowException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * The Java half of the buffers in {@code docs/jni.md}: one buffer per batch, never one JNI call
 * per record. All integers big-endian, strings UTF-8.
 */
public final class BatchCodec {
    /** First byte of every batch ('K'). */
    public static final byte MAGIC = 0x4B;
    /** Batch layout version. */
    public static final byte VERSION = 1;
    /** Poll flag: every assigned partition is fully restored and acknowledged. */
    public static final int FLAG_FINISHED = 1;
    /** Poll flag: waiting for acknowledgements, nothing to send now. */
    public static final int FLAG_WAITING_FOR_ACKS = 2;

    /** The converter that hands key, value and header bytes through untouched. */
    public static final String BYTE_ARRAY_CONVERTER = "org.apache.kafka.connect.converters.ByteArrayConverter";

    private BatchCodec() {
    }

    /** One record of a poll batch. {@code topic} is the ORIGINAL (backup) topic. */
    public static final class PolledRecord {
        private final String topic;
        private final int partition;
        private final long offset;
        private final long timestamp;
        private final byte timestampType;
        private final byte[] key;
        private final byte[] value;
        private final List<PolledHeader> headers;

        public PolledRecord(String topic, int partition, long offset, long timestamp, byte timestampType,
                            byte[] key, byte[] value, List<PolledHeader> headers) {
            this.topic = topic;
            this.partition = partition;
            this.offset = offset;
            this.timestamp = timestamp;
            this.timestampType = timestampType;
            this.key = key;
            this.value = value;
            this.headers = headers;
        }

        public String topic() {
            return topic;
        }

        public int partition() {
            return partition;
        }

        public long offset() {
            return offset;
        }

        public long timestamp() {
            return timestamp;
        }

        public byte timestampType() {
            return timestampType;
        }

        public byte[] key() {
            return key;
        }

        public byte[] value() {
            return value;
        }

        public List<PolledHeader> headers() {
            return headers;
        }
    }

    /** One header of a polled record; {@code value} may be null. */
    public static final class PolledHeader {
        private final String key;
        private final byte[] value;

        public PolledHeader(String key, byte[] value) {
            this.key = key;
            this.value = value;
        }

        public String key() {
            return key;
        }

        public byte[] value() {
            return value;
        }
    }

    /** A decoded poll response. */
    public static final class PollBatch {
        private final int flags;
        private final List<PolledRecord> records;

        public PollBatch(int flags, List<PolledRecord> records) {
            this.flags = flags;
            this.records = records;
        }

        public int flags() {
            return flags;
        }

        public List<PolledRecord> records() {
            return records;
        }

        public boolean finished() {
            return (flags & FLAG_FINISHED) != 0;
        }
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

        public String topic() {
            return topic;
        }

        public int partition() {
            return partition;
        }

        public long originalOffset() {
            return originalOffset;
        }

        public long newOffset() {
            return newOffset;
        }

        // A value, as the record it replaced was: equal acknowledgements compare equal.
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

    /**
     * The acknowledgements of one partition, gathered on the producer's thread ({@link #add})
     * and handed over by {@link #drainAcks} on the task's thread. Pairs of longs in a reused
     * array: no object per acknowledged record, and the topic is encoded to UTF-8 once.
     */
    public static final class AckBuffer {
        private final String topic;
        private final byte[] topicUtf8;
        private final int partition;
        private long[] pairs = new long[256]; // guarded by this
        private int size; // longs used in pairs; guarded by this
        private long[] spare = new long[256]; // drainAcks's thread only
        private long added; // acknowledgements ever added; guarded by this

        public AckBuffer(String topic, int partition) {
            this.topic = topic;
            this.topicUtf8 = utf8(topic, "topic");
            this.partition = partition;
        }

        public String topic() {
            return topic;
        }

        public int partition() {
            return partition;
        }

        /** Any thread: original offset {@code originalOffset} was written at {@code newOffset} (-1: not written). */
        public synchronized void add(long originalOffset, long newOffset) {
            if (size + 2 > pairs.length) {
                pairs = Arrays.copyOf(pairs, pairs.length * 2);
            }
            pairs[size] = originalOffset;
            pairs[size + 1] = newOffset;
            size += 2;
            added++;
        }

        /** Acknowledgements ever added, drained or not. */
        public synchronized long added() {
            return added;
        }

        /** Swaps in the spare array; answers the filled one, whose used length is {@link #takenSize}. */
        private synchronized long[] take() {
            long[] full = pairs;
            takenSize = size;
            pairs = spare;
            size = 0;
            return full;
        }

        private int takenSize; // set by take(), read by drainAcks on the same thread
    }

    // ---- encoding -------------------------------------------------------------------------

    /** Encodes every record of one {@code put()} into one batch. */
    public static byte[] encodeSinkBatch(Collection<SinkRecord> records) {
        // Sized exactly in a first pass, so the buffer never grows and is handed over as is.
        Writer w = new Writer(sinkBatchSize(records));
        String lastTopic = null;
        byte[] lastTopicUtf8 = null;
        w.u8(MAGIC);
        w.u8(VERSION);
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
                lastTopicUtf8 = utf8(topic, "topic");
            }
            w.utf8(lastTopicUtf8);
            w.i32(partition);
            w.i64(offset);
            Long ts = r.timestamp();
            w.i64(ts == null ? -1L : ts);
            w.u8(ts == null ? 0 : timestampTypeCode(r.timestampType()));
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
                lastTopicLen = topic == null ? 0 : utf8Length(topic);
            }
            size += 2 + lastTopicLen + 4 + 8 + 8 + 1 + 4 + 4 + 4 + byteLength(r.key()) + byteLength(r.value());
            for (Header h : r.headers()) {
                size += 2 + (h.key() == null ? 0 : utf8Length(h.key())) + 4 + byteLength(h.value());
            }
        }
        return (int) Math.min(size, Integer.MAX_VALUE - 16);
    }

    private static int byteLength(Object o) {
        return o instanceof byte[] ? ((byte[]) o).length : 0;
    }

    /** UTF-8 length of {@code s} without encoding it (unpaired surrogates count as '?', as getBytes does). */
    static int utf8Length(String s) {
        int n = 0;
        for (int i = 0, len = s.length(); i < len; i++) {
            char c = s.charAt(i);
            if (c < 0x80) {
                n += 1;
            } else if (c < 0x800) {
                n += 2;
            } else if (Character.isHighSurrogate(c) && i + 1 < len && Character.isLowSurrogate(s.charAt(i + 1))) {
                n += 4;
                i++;
            } else if (Character.isSurrogate(c)) {
                n += 1;
            } else {
                n += 3;
            }
        }
        return n;
    }

    /** Encodes a partitions buffer. */
    public static byte[] encodePartitions(Collection<TopicPartition> partitions) {
        Writer w = new Writer(4 + partitions.size() * 32);
        w.i32(partitions.size());
        for (TopicPartition tp : partitions) {
            w.str16(tp.topic(), "topic");
            w.i32(tp.partition());
        }
        return w.toBytes();
    }

    /** Encodes an offsets buffer (iteration order kept). */
    public static byte[] encodeOffsets(Map<TopicPartition, Long> offsets) {
        Writer w = new Writer(4 + offsets.size() * 40);
        w.i32(offsets.size());
        for (Map.Entry<TopicPartition, Long> e : offsets.entrySet()) {
            w.str16(e.getKey().topic(), "topic");
            w.i32(e.getKey().partition());
            w.i64(e.getValue());
        }
        return w.toBytes();
    }

    /**
     * Takes every acknowledgement gathered in {@code buffers} (leaving them empty) and encodes
     * them as one acks buffer, partition by partition, each partition's in the order added.
     */
    public static byte[] drainAcks(List<AckBuffer> buffers) {
        int n = buffers.size();
        long[][] taken = new long[n][];
        int count = 0;
        int bytes = 4;
        for (int i = 0; i < n; i++) {
            AckBuffer a = buffers.get(i);
            taken[i] = a.take();
            int acks = a.takenSize / 2;
            count += acks;
            bytes += acks * (2 + a.topicUtf8.length + 4 + 8 + 8);
        }
        Writer w = new Writer(bytes);
        w.i32(count);
        for (int i = 0; i < n; i++) {
            AckBuffer a = buffers.get(i);
            long[] pairs = taken[i];
            for (int j = 0; j < a.takenSize; j += 2) {
                w.utf8(a.topicUtf8);
                w.i32(a.partition);
                w.i64(pairs[j]);
                w.i64(pairs[j + 1]);
            }
            a.spare = pairs; // only this thread touches spare; take() hands it back under the lock
        }
        return w.toBytes();
    }

    /** Encodes an acks buffer. */
    public static byte[] encodeAcks(List<Ack> acks) {
        Writer w = new Writer(4 + acks.size() * 48);
        w.i32(acks.size());
        for (Ack a : acks) {
            w.str16(a.topic(), "topic");
            w.i32(a.partition());
            w.i64(a.originalOffset());
            w.i64(a.newOffset());
        }
        return w.toBytes();
    }

    // ---- decoding -------------------------------------------------------------------------

    /** Decodes an offsets buffer answered by the bridge, in its order. */
    public static Map<TopicPartition, Long> decodeOffsets(byte[] buf) {
        if (buf == null) {
            return Collections.emptyMap();
        }
        ByteBuffer b = ByteBuffer.wrap(buf);
        try {
            int n = count(b, "offsets");
            Map<TopicPartition, Long> out = new LinkedHashMap<>(n * 2);
            for (int i = 0; i < n; i++) {
                String topic = str16(b);
                int partition = b.getInt();
                out.put(new TopicPartition(topic, partition), b.getLong());
            }
            requireEnd(b, "offsets");
            return out;
        } catch (BufferUnderflowException e) {
            throw malformed("offsets", b, "truncated");
        }
    }

    /** Decodes a partitions buffer (tests and symmetry with the bridge). */
    public static List<TopicPartition> decodePartitions(byte[] buf) {
        ByteBuffer b = ByteBuffer.wrap(buf);
        try {
            int n = count(b, "partitions");
            List<TopicPartition> out = new ArrayList<>(n);
            for (int i = 0; i < n; i++) {
                String topic = str16(b);
                out.add(new TopicPartition(topic, b.getInt()));
            }
            requireEnd(b, "partitions");
            return out;
        } catch (BufferUnderflowException e) {
            throw malformed("partitions", b, "truncated");
        }
    }

    /** Decodes a batch (a poll response, or a sink batch in tests). */
    public static PollBatch decodeBatch(byte[] buf) {
        ByteBuffer b = ByteBuffer.wrap(buf);
        try {
            byte magic = b.get();
            byte version = b.get();
            if (magic != MAGIC || version != VERSION) {
                throw malformed("batch", b, "magic/version " + magic + "/" + version + ", expected " + MAGIC + "/"
                        + VERSION + " (the jar and its native library do not match)");
            }
            int flags = b.get() & 0xFF;
            int n = count(b, "batch");
            List<PolledRecord> records = new ArrayList<>(n);
            // Records come partition by partition: reuse the previous topic's String (and its
            // cached hash) instead of decoding the same bytes for every record.
            String topic = null;
            int topicAt = -1;
            int topicLen = -1;
            for (int i = 0; i < n; i++) {
                int len = b.getShort();
                if (len < 0 || len > b.remaining()) {
                    throw malformed("string", b, "length " + len);
                }
                int at = b.position();
                if (topic == null || len != topicLen
                        || !Arrays.equals(buf, at, at + len, buf, topicAt, topicAt + len)) {
                    topic = new String(buf, at, len, StandardCharsets.UTF_8);
                    topicAt = at;
                    topicLen = len;
                }
                b.position(at + len);
                int partition = b.getInt();
                long offset = b.getLong();
                long timestamp = b.getLong();
                byte tt = b.get();
                byte[] key = bytes32(b);
                byte[] value = bytes32(b);
                int hc = count(b, "headers");
                List<PolledHeader> headers = hc == 0 ? List.of() : new ArrayList<>(hc);
                for (int j = 0; j < hc; j++) {
                    String hk = str16(b);
                    headers.add(new PolledHeader(hk, bytes32(b)));
                }
                records.add(new PolledRecord(topic, partition, offset, timestamp, tt, key, value, headers));
            }
            requireEnd(b, "batch");
            return new PollBatch(flags, records);
        } catch (BufferUnderflowException e) {
            throw malformed("batch", b, "truncated");
        }
    }

    /** Contract code of a Kafka timestamp type: 0 none, 1 CreateTime, 2 LogAppendTime. */
    public static byte timestampTypeCode(TimestampType t) {
        if (t == null) {
            return 0;
        }
        switch (t) {
            case CREATE_TIME:
                return 1;
            case LOG_APPEND_TIME:
                return 2;
            default:
                return 0;
        }
    }

    // ---- helpers --------------------------------------------------------------------------

    private static byte[] bytesOf(Object o, String what, String converterKey, SinkRecord r) {
        if (o == null || o instanceof byte[]) {
            return (byte[]) o;
        }
        throw new KbackupException("record " + r.originalTopic() + "-" + r.originalKafkaPartition() + "@"
                + r.originalKafkaOffset() + " has a " + what + " of type " + o.getClass().getName()
                + " instead of byte[]: set \"" + converterKey + "\": \"" + BYTE_ARRAY_CONVERTER
                + "\" in the connector config (and remove transforms that change it) so the backup keeps the "
                + "original bytes");
    }

    /** UTF-8 of a string the contract stores with a 16-bit length. */
    private static byte[] utf8(String s, String what) {
        byte[] u = s.getBytes(StandardCharsets.UTF_8);
        if (u.length > Short.MAX_VALUE) {
            throw new KbackupException("a " + what + " is " + u.length + " bytes of UTF-8, more than the 32767 "
                    + "kbackup can store: shorten it");
        }
        return u;
    }

    private static int count(ByteBuffer b, String what) {
        int n = b.getInt();
        if (n < 0 || n > b.remaining()) {
            throw malformed(what, b, "count " + n + " exceeds the buffer");
        }
        return n;
    }

    private static String str16(ByteBuffer b) {
        int len = b.getShort();
        if (len < 0 || len > b.remaining()) {
            throw malformed("string", b, "length " + len);
        }
        String s = new String(b.array(), b.position(), len, StandardCharsets.UTF_8);
        b.position(b.position() + len);
        return s;
    }

    private static byte[] bytes32(ByteBuffer b) {
        int len = b.getInt();
        if (len == -1) {
            return null;
        }
        if (len < 0 || len > b.remaining()) {
            throw malformed("bytes", b, "length " + len);
        }
        byte[] out = Arrays.copyOfRange(b.array(), b.position(), b.position() + len);
        b.position(b.position() + len);
        return out;
    }

    private static void requireEnd(ByteBuffer b, String what) {
        if (b.hasRemaining()) {
            throw malformed(what, b, b.remaining() + " trailing bytes");
        }
    }

    private static KbackupException malformed(String what, ByteBuffer b, String detail) {
        return new KbackupException("malformed " + what + " buffer from the kbackup native library at byte "
                + b.position() + ": " + detail + "; the jar and its native library do not match or this is a bug, "
                + "please report it");
    }

    /** A growable big-endian writer; cheaper than a stream per record. */
    private static final class Writer {
        /** One big-endian store per field instead of one per byte. */
        private static final VarHandle I32 = MethodHandles.byteArrayViewVarHandle(int[].class, ByteOrder.BIG_ENDIAN);
        private static final VarHandle I64 = MethodHandles.byteArrayViewVarHandle(long[].class, ByteOrder.BIG_ENDIAN);

        private byte[] buf;
        private int pos;

        Writer(int capacity) {
            buf = new byte[Math.max(16, capacity)];
        }

        private void ensure(int n) {
            if (pos + n > buf.length) {
                long want = Math.max((long) buf.length * 2, (long) pos + n);
                if (want > Integer.MAX_VALUE - 16) {
                    throw new KbackupException("a put() batch exceeds 2 GiB: lower consumer.override.max.poll.records "
                            + "or consumer.override.fetch.max.bytes on the connector");
                }
                buf = Arrays.copyOf(buf, (int) want);
            }
        }

        void u8(int v) {
            ensure(1);
            buf[pos++] = (byte) v;
        }

        void i32(int v) {
            ensure(4);
            putI32At(pos, v);
            pos += 4;
        }

        int reserveI32() {
            ensure(4);
            int at = pos;
            pos += 4;
            return at;
        }

        void putI32At(int at, int v) {
            I32.set(buf, at, v);
        }

        void i64(long v) {
            ensure(8);
            I64.set(buf, pos, v);
            pos += 8;
        }

        void str16(String s, String what) {
            utf8(BatchCodec.utf8(s, what));
        }

        /** A string already encoded (and checked) by {@link BatchCodec#utf8}. */
        void utf8(byte[] u) {
            ensure(2 + u.length);
            buf[pos++] = (byte) (u.length >>> 8);
            buf[pos++] = (byte) u.length;
            System.arraycopy(u, 0, buf, pos, u.length);
            pos += u.length;
        }

        void bytes32(byte[] v) {
            if (v == null) {
                i32(-1);
                return;
            }
            ensure(4 + v.length);
            i32(v.length);
            System.arraycopy(v, 0, buf, pos, v.length);
            pos += v.length;
        }

        byte[] toBytes() {
            return pos == buf.length ? buf : Arrays.copyOf(buf, pos);
        }
    }
}
