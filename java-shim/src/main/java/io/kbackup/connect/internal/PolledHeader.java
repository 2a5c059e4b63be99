package io.kbackup.connect.internal;

/** One header of a polled record; {@code value} may be null. */
public final class PolledHeader {
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
