package io.kbackup.bench.noop;

import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.connect.sink.SinkRecord;
import org.apache.kafka.connect.sink.SinkTask;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.util.Collection;
import java.util.Map;

/** Counts the records of each put() and drops them; the count goes to a file every 100 ms. */
public class NoopSinkTask extends SinkTask {
    private Path countFile;
    private long count;
    private long lastWrite;
    private long written = -1;

    @Override
    public void start(Map<String, String> props) {
        countFile = Paths.get(props.get("count.dir"), "sink-" + props.get("task.index"));
        writeCount();
    }

    @Override
    public void put(Collection<SinkRecord> records) {
        for (SinkRecord r : records) {
            if (r.value() != null) {
                count++;
            }
        }
        // Connect calls put() with nothing once the topic is drained: the final count goes out then.
        long now = System.currentTimeMillis();
        if (now - lastWrite >= 100 || (records.isEmpty() && count != written)) {
            writeCount();
        }
    }

    @Override
    public Map<TopicPartition, OffsetAndMetadata> preCommit(Map<TopicPartition, OffsetAndMetadata> current) {
        writeCount();
        return current;
    }

    private void writeCount() {
        lastWrite = System.currentTimeMillis();
        written = count;
        try {
            Path tmp = countFile.resolveSibling(countFile.getFileName() + ".tmp");
            Files.write(tmp, Long.toString(count).getBytes(StandardCharsets.UTF_8));
            Files.move(tmp, countFile, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (IOException e) {
            throw new org.apache.kafka.connect.errors.ConnectException("cannot write " + countFile, e);
        }
    }

    @Override
    public void stop() {
    }

    @Override
    public String version() {
        return "bench";
    }
}
