package io.kbackup.connect.internal;

import io.kbackup.connect.KbackupException;
import org.apache.kafka.common.TopicPartition;

import java.nio.BufferUnderflowException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Decodes what the bridge answers ({@code docs/jni.md}); a buffer that does not follow the
 * contract is a {@link KbackupException} naming the byte, never a wrong value.
 */
public final class BatchDecoder {
    private BatchDecoder() {
    }

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

    /** Decodes a batch (a poll response, or a sink batch in tests). */
    public static PollBatch decodeBatch(byte[] buf) {
        ByteBuffer b = ByteBuffer.wrap(buf);
        try {
            byte magic = b.get();
            byte version = b.get();
            if (magic != WireFormat.MAGIC || version != WireFormat.VERSION) {
                throw malformed("batch", b, "magic/version " + magic + "/" + version + ", expected "
                        + WireFormat.MAGIC + "/" + WireFormat.VERSION + " (the jar and its native library do not match)");
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

    static int count(ByteBuffer b, String what) {
        int n = b.getInt();
        if (n < 0 || n > b.remaining()) {
            throw malformed(what, b, "count " + n + " exceeds the buffer");
        }
        return n;
    }

    static String str16(ByteBuffer b) {
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

    static void requireEnd(ByteBuffer b, String what) {
        if (b.hasRemaining()) {
            throw malformed(what, b, b.remaining() + " trailing bytes");
        }
    }

    static KbackupException malformed(String what, ByteBuffer b, String detail) {
        return new KbackupException("malformed " + what + " buffer from the kbackup native library at byte "
                + b.position() + ": " + detail + "; the jar and its native library do not match or this is a bug, "
                + "please report it");
    }
}
