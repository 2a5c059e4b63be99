package io.kbackup.connect.internal;

import io.kbackup.connect.KbackupException;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * Which topics and partitions a backup holds ({@code Native.listPartitions}, directory names
 * only, so validate() and taskConfigs() answer at once on a backup of any size).
 */
public final class BackupSummary {
    private BackupSummary() {
    }

    /** Topic -> sorted partition numbers, read from the backup in {@code dir}. */
    public static Map<String, List<Integer>> topicPartitions(String dir) {
        return topicPartitions(dir, Map.of());
    }

    /** {@link #topicPartitions(String)} of a backup a connector's {@code storage.*} settings reach. */
    public static Map<String, List<Integer>> topicPartitions(String dir, Map<String, String> props) {
        Native.ensureLoaded();
        return topicPartitions(Json.parse(Native.listPartitions(dir.getBytes(StandardCharsets.UTF_8),
                StorageSettings.json(props))));
    }

    /**
     * Reads {@code {"topics": [{"topic"|"name": T, "partitions": [{"partition": P, ...} | P]}]}}
     * or {@code {"topics": {T: {"partitions": ...}}}}.
     */
    @SuppressWarnings("unchecked")
    public static Map<String, List<Integer>> topicPartitions(Object listingJson) {
        Map<String, List<Integer>> out = new TreeMap<>();
        if (!(listingJson instanceof Map<?, ?>)) {
            throw unexpected("not an object");
        }
        Map<?, ?> root = (Map<?, ?>) listingJson;
        Object topics = root.get("topics");
        if (topics instanceof List<?>) {
            for (Object t : (List<?>) topics) {
                if (!(t instanceof Map<?, ?>)) {
                    throw unexpected("a topic entry is not an object");
                }
                Map<?, ?> tm = (Map<?, ?>) t;
                Object name = tm.containsKey("topic") ? tm.get("topic") : tm.get("name");
                if (!(name instanceof String)) {
                    throw unexpected("a topic entry has no name");
                }
                out.put((String) name, partitions(tm.get("partitions")));
            }
        } else if (topics instanceof Map<?, ?>) {
            for (Map.Entry<?, ?> e : ((Map<?, ?>) topics).entrySet()) {
                Object v = e.getValue();
                Object parts = v instanceof Map<?, ?> ? ((Map<?, ?>) v).get("partitions") : v;
                out.put(String.valueOf(e.getKey()), partitions(parts));
            }
        } else {
            throw unexpected("no \"topics\"");
        }
        return out;
    }

    private static List<Integer> partitions(Object parts) {
        List<Integer> out = new ArrayList<>();
        if (parts instanceof List<?>) {
            for (Object p : (List<?>) parts) {
                Object n = p instanceof Map<?, ?> ? ((Map<?, ?>) p).get("partition") : p;
                if (!(n instanceof Number)) {
                    throw unexpected("a partition entry has no number");
                }
                out.add(((Number) n).intValue());
            }
        } else if (parts instanceof Map<?, ?>) {
            for (Object k : ((Map<?, ?>) parts).keySet()) {
                try {
                    out.add(Integer.parseInt(String.valueOf(k)));
                } catch (NumberFormatException e) {
                    throw unexpected("partition key " + k + " is not a number");
                }
            }
        } else {
            throw unexpected("a topic has no \"partitions\"");
        }
        out.sort(null);
        return out;
    }

    private static KbackupException unexpected(String what) {
        return new KbackupException("unexpected partition listing from the kbackup native library (" + what
                + "); the jar and its native library do not match or this is a bug, please report it");
    }
}
