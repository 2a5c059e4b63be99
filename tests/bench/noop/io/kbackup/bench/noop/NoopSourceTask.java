package io.kbackup.bench.noop;

import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.source.SourceRecord;
import org.apache.kafka.connect.source.SourceTask;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;

/**
 * Emits its share of records, one partition per poll batch (as the kbackup source reads a
 * backup partition by partition), with a source offset per record like the kbackup source.
 */
public class NoopSourceTask extends SourceTask {
    private String topic;
    private long left;
    private int partitions;
    private int batch;
    private int partition;
    private long offset;
    private byte[][] values;
    private int vi;
    private Map<String, Object> sourcePartition;

    @Override
    public void start(Map<String, String> props) {
        topic = props.get("topic");
        left = Long.parseLong(props.get("task.records"));
        partitions = Integer.parseInt(props.get("partitions"));
        batch = Integer.parseInt(props.getOrDefault("batch.size", "1000"));
        int size = Integer.parseInt(props.get("record.size"));
        partition = Integer.parseInt(props.get("task.index")) % partitions;
        // Distinct values, as a restore's are (not one array the CPU cache keeps).
        values = new byte[(int) Math.max(1, Math.min(4096, (16L << 20) / size))][size];
        Random rnd = new Random(partition);
        for (byte[] v : values) {
            rnd.nextBytes(v);
        }
        sourcePartition = Map.of("task", props.get("task.index"));
    }

    @Override
    public List<SourceRecord> poll() throws InterruptedException {
        if (left <= 0) {
            Thread.sleep(100);
            return null;
        }
        int n = (int) Math.min(batch, left);
        List<SourceRecord> out = new ArrayList<>(n);
        for (int i = 0; i < n; i++) {
            out.add(new SourceRecord(sourcePartition, Map.of("offset", offset++), topic, partition,
                    Schema.OPTIONAL_BYTES_SCHEMA, null, Schema.OPTIONAL_BYTES_SCHEMA, values[vi]));
            vi = vi + 1 == values.length ? 0 : vi + 1;
        }
        left -= n;
        partition = (partition + 1) % partitions;
        return out;
    }

    @Override
    public void stop() {
    }

    @Override
    public String version() {
        return "bench";
    }
}
