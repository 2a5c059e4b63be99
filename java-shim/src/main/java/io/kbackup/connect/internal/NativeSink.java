package io.kbackup.connect.internal;

import io.kbackup.connect.KbackupException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.connect.sink.SinkRecord;

import java.util.Collection;
import java.util.Map;

/**
 * One native backup writer (a sink task's, or the connector's to initialize the backup root),
 * in Connect's types: the buffers of {@code docs/jni.md} are encoded and decoded here, so the
 * tasks hold no handle and do no codec plumbing. Calls come from the task's thread;
 * {@link #metricsJson} from any thread. {@link #close} is safe twice; any other call after it
 * throws a {@link KbackupException}.
 */
public final class NativeSink implements AutoCloseable {
    private volatile long handle;

    private NativeSink(long handle) {
        this.handle = handle;
    }

    /** Opens a writer for the sink config JSON of docs/jni.md, reaching the cluster through {@code cluster}. */
    public static NativeSink open(byte[] sinkConfigJson, ClusterClient cluster) {
        Native.ensureLoaded();
        return new NativeSink(Native.sinkOpen(sinkConfigJson, cluster));
    }

    /** Opens partitions; answers where each resumes: the next offset to fetch, or -1 when nothing is on disk. */
    public Map<TopicPartition, Long> open(Collection<TopicPartition> partitions) {
        return BatchDecoder.decodeOffsets(Native.sinkOpenPartitions(handle(), BatchEncoder.encodePartitions(partitions)));
    }

    /** Appends every record of one {@code put()}, as one batch. */
    public void put(Collection<SinkRecord> records) {
        Native.sinkPut(handle(), BatchEncoder.encodeSinkBatch(records));
    }

    /** Makes everything appended durable; answers the durable next offset of each partition (-1: none). */
    public Map<TopicPartition, Long> flush() {
        return BatchDecoder.decodeOffsets(Native.sinkFlush(handle()));
    }

    /** Closes the writers of these partitions. */
    public void close(Collection<TopicPartition> partitions) {
        Native.sinkClosePartitions(handle(), BatchEncoder.encodePartitions(partitions));
    }

    /** Monitoring snapshot as JSON (docs/operations.md), or null once closed: gauges may read after a close. */
    public byte[] metricsJson() {
        long h = handle;
        return h == 0 ? null : Native.sinkMetrics(h);
    }

    /** Closes the writer; safe twice. */
    @Override
    public void close() {
        long h;
        synchronized (this) {
            h = handle;
            handle = 0;
        }
        if (h != 0) {
            Native.sinkClose(h);
        }
    }

    private long handle() {
        long h = handle;
        if (h == 0) {
            throw new KbackupException("this kbackup sink is closed (the task was stopped); a call after stop() "
                    + "is a bug in the caller, please report it");
        }
        return h;
    }
}
