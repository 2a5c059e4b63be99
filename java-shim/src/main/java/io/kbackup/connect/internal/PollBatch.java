package io.kbackup.connect.internal;

import java.util.List;

/** A decoded poll response: the records to hand to Connect and the restore's flags. */
public final class PollBatch {
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

    /** Every assigned partition is fully restored and acknowledged. */
    public boolean finished() {
        return (flags & WireFormat.FLAG_FINISHED) != 0;
    }
}
