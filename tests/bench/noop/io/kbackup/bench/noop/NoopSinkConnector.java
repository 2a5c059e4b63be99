package io.kbackup.bench.noop;

import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.connect.connector.Task;
import org.apache.kafka.connect.sink.SinkConnector;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The Connect ceiling of a sink (tests/bench, built by bench.py, never shipped): consumes and
 * discards. Each task writes its running record count to {@code count.dir}/{@code <task>} so
 * the bench sees when every record went through, as it sees the kbackup sink's files.
 */
public class NoopSinkConnector extends SinkConnector {
    private Map<String, String> props;

    @Override
    public void start(Map<String, String> props) {
        this.props = props;
    }

    @Override
    public Class<? extends Task> taskClass() {
        return NoopSinkTask.class;
    }

    @Override
    public List<Map<String, String>> taskConfigs(int maxTasks) {
        List<Map<String, String>> out = new ArrayList<>();
        for (int i = 0; i < maxTasks; i++) {
            Map<String, String> p = new HashMap<>(props);
            p.put("task.index", String.valueOf(i));
            out.add(p);
        }
        return out;
    }

    @Override
    public void stop() {
    }

    @Override
    public ConfigDef config() {
        return new ConfigDef().define("count.dir", ConfigDef.Type.STRING, ConfigDef.Importance.HIGH,
                "where each task writes its record count");
    }

    @Override
    public String version() {
        return "bench";
    }
}
