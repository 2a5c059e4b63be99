package io.kbackup.bench.noop;

import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.connect.connector.Task;
import org.apache.kafka.connect.source.SourceConnector;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The Connect ceiling of a source (tests/bench, built by bench.py, never shipped): emits
 * {@code records} synthetic records of {@code record.size} bytes (null keys, as
 * ProducerPerformance and the backup have) into {@code topic}, spread over its
 * {@code partitions}, as fast as Connect takes them, split over the tasks.
 */
public class NoopSourceConnector extends SourceConnector {
    private Map<String, String> props;

    @Override
    public void start(Map<String, String> props) {
        this.props = props;
    }

    @Override
    public Class<? extends Task> taskClass() {
        return NoopSourceTask.class;
    }

    @Override
    public List<Map<String, String>> taskConfigs(int maxTasks) {
        long total = Long.parseLong(props.get("records"));
        List<Map<String, String>> out = new ArrayList<>();
        for (int i = 0; i < maxTasks; i++) {
            Map<String, String> p = new HashMap<>(props);
            p.put("task.index", String.valueOf(i));
            p.put("task.count", String.valueOf(maxTasks));
            p.put("task.records", String.valueOf(total / maxTasks + (i < total % maxTasks ? 1 : 0)));
            out.add(p);
        }
        return out;
    }

    @Override
    public void stop() {
    }

    @Override
    public ConfigDef config() {
        return new ConfigDef()
                .define("topic", ConfigDef.Type.STRING, ConfigDef.Importance.HIGH, "target topic")
                .define("records", ConfigDef.Type.LONG, ConfigDef.Importance.HIGH, "records in total")
                .define("record.size", ConfigDef.Type.INT, ConfigDef.Importance.HIGH, "value bytes")
                .define("partitions", ConfigDef.Type.INT, ConfigDef.Importance.HIGH, "partitions of topic")
                .define("batch.size", ConfigDef.Type.INT, 1000, ConfigDef.Importance.LOW, "records per poll");
    }

    @Override
    public String version() {
        return "bench";
    }
}
