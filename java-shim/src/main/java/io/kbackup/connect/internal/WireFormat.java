package io.kbackup.connect.internal;

import io.kbackup.connect.KbackupException;
import org.apache.kafka.common.record.TimestampType;

import java.nio.charset.StandardCharsets;

/**
 * Constants and field rules of the buffers in {@code docs/jni.md}, shared by the
 * {@link BatchEncoder encoders}, the {@link BatchDecoder decoders} and {@link AckBuffer}:
 * integers big-endian, strings UTF-8 with a 16-bit length.
 */
public final class WireFormat {
    /** First byte of every batch ('K'). */
    public static final byte MAGIC = 0x4B;
    /** Batch layout version. */
    public static final byte VERSION = 1;
    /** Poll flag: every assigned partition is fully restored and acknowledged. */
    public static final int FLAG_FINISHED = 1;
    /** Poll flag: waiting for acknowledgements, nothing to send now. */
    public static final int FLAG_WAITING_FOR_ACKS = 2;

    private WireFormat() {
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

    /** UTF-8 of a string the contract stores with a 16-bit length. */
    static byte[] utf8(String s, String what) {
        byte[] u = s.getBytes(StandardCharsets.UTF_8);
        if (u.length > Short.MAX_VALUE) {
            throw new KbackupException("a " + what + " is " + u.length + " bytes of UTF-8, more than the 32767 "
                    + "kbackup can store: shorten it");
        }
        return u;
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
}
