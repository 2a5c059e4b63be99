package io.kbackup.connect.internal;

import java.util.List;

/** One record of a poll batch. {@code topic} is the ORIGINAL (backup) topic. */
public final class PolledRecord {
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

    /** {@link WireFormat#timestampTypeCode}: 0 none, 1 CreateTime, 2 LogAppendTime. */
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
