package io.kbackup.connect.internal;

import io.kbackup.connect.KbackupException;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteOrder;
import java.util.Arrays;

/** A growable big-endian writer of the {@code docs/jni.md} buffers; cheaper than a stream per record. */
final class BufferWriter {
    /** One big-endian store per field instead of one per byte. */
    private static final VarHandle I32 = MethodHandles.byteArrayViewVarHandle(int[].class, ByteOrder.BIG_ENDIAN);
    private static final VarHandle I64 = MethodHandles.byteArrayViewVarHandle(long[].class, ByteOrder.BIG_ENDIAN);

    private byte[] buf;
    private int pos;

    BufferWriter(int capacity) {
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
        utf8(WireFormat.utf8(s, what));
    }

    /** A string already encoded (and checked) by {@link WireFormat#utf8}. */
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
