package io.kbackup.connect.internal;

import java.util.Arrays;
import java.util.List;

/**
 * The acknowledgements of one partition, gathered on the producer's thread ({@link #add}) and
 * handed over by {@link #drain} on the task's thread as one acks buffer ({@code docs/jni.md}).
 * Pairs of longs in a reused array: no object per acknowledged record, and the topic is
 * encoded to UTF-8 once.
 */
public final class AckBuffer {
    private final String topic;
    private final byte[] topicUtf8;
    private final int partition;
    private long[] pairs = new long[256]; // guarded by this
    private int size; // longs used in pairs; guarded by this
    private long[] spare = new long[256]; // drain's thread only
    private long added; // acknowledgements ever added; guarded by this
    private int takenSize; // set by take(), read by drain on the same thread

    public AckBuffer(String topic, int partition) {
        this.topic = topic;
        this.topicUtf8 = WireFormat.utf8(topic, "topic");
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

    /**
     * Takes every acknowledgement gathered in {@code buffers} (leaving them empty) and encodes
     * them as one acks buffer, partition by partition, each partition's in the order added.
     * One thread at a time drains a given buffer.
     */
    public static byte[] drain(List<AckBuffer> buffers) {
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
        BufferWriter w = new BufferWriter(bytes);
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
}
