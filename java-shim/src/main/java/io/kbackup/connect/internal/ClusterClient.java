package io.kbackup.connect.internal;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.ConsumerGroupListing;
import org.apache.kafka.clients.admin.CreateTopicsOptions;
import org.apache.kafka.clients.admin.DescribeConfigsOptions;
import org.apache.kafka.clients.admin.DescribeTopicsOptions;
import org.apache.kafka.clients.admin.ListConsumerGroupOffsetsSpec;
import org.apache.kafka.clients.admin.ListConsumerGroupsOptions;
import org.apache.kafka.clients.admin.ListOffsetsOptions;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.IsolationLevel;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.AuthenticationException;
import org.apache.kafka.common.errors.AuthorizationException;
import org.apache.kafka.common.errors.GroupNotEmptyException;
import org.apache.kafka.common.errors.RebalanceInProgressException;
import org.apache.kafka.common.errors.RetriableException;
import org.apache.kafka.common.errors.TimeoutException;
import org.apache.kafka.common.errors.UnknownMemberIdException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.record.TimestampType;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

import java.io.ByteArrayOutputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

/**
 * The Kafka calls of the Rust core on the Connect path, made with Kafka's own Java clients and
 * the connector's Java client properties, so every authentication the worker's clients support
 * works here too (JAAS, JKS/PKCS12 stores, OAuth and IAM callback handlers, Kerberos, config
 * providers). The core calls {@link #call} from its threads over JNI (see docs/jni.md, "Cluster
 * calls"); the secrets never leave Java.
 *
 * <p>Every answer is one status byte (0 ok, 1 error) and a payload; nothing is thrown back into
 * the native code.
 */
public final class ClusterClient implements AutoCloseable {
    private static final byte OK = 0;
    private static final byte ERROR = 1;

    private final Map<String, Object> props;
    private Admin admin;

    /** A client for the cluster the Java client properties {@code props} describe (created lazily). */
    public ClusterClient(Map<String, String> props) {
        this.props = new HashMap<>(props);
    }

    private synchronized Admin admin() {
        if (admin == null) {
            Map<String, Object> c = only(props, AdminClientConfig.configNames());
            admin = Admin.create(c);
        }
        return admin;
    }

    /** The entries of {@code props} a client of that kind knows (no "unknown config" warnings). */
    private static Map<String, Object> only(Map<String, Object> props, Set<String> known) {
        Map<String, Object> out = new HashMap<>();
        for (Map.Entry<String, Object> e : props.entrySet()) {
            // Prefixed listener/mechanism keys (e.g. sasl.login.*) and config providers pass as well.
            if (known.contains(e.getKey()) || e.getKey().startsWith("sasl.") || e.getKey().startsWith("ssl.")) {
                out.put(e.getKey(), e.getValue());
            }
        }
        return out;
    }

    @Override
    public synchronized void close() {
        if (admin != null) {
            admin.close(Duration.ofSeconds(5));
            admin = null;
        }
    }

    /** Called by the core: runs {@code op} with the JSON {@code args}. */
    public byte[] call(String op, byte[] args) {
        try {
            @SuppressWarnings("unchecked")
            Map<String, Object> a = (Map<String, Object>) Json.parse(args);
            long timeoutMs = num(a.get("timeout_ms"));
            switch (op) {
                case "describe_topic":
                    return ok(describeTopic(str(a.get("topic")), timeoutMs));
                case "end_offsets":
                    return ok(endOffsets(str(a.get("topic")), timeoutMs));
                case "watermarks":
                    return ok(Map.of("watermarks", watermarks(tps(a.get("tps")), timeoutMs)));
                case "log_end":
                    return ok(Map.of("end", logEnd(str(a.get("topic")), (int) num(a.get("partition")),
                            Boolean.TRUE.equals(a.get("read_committed")), timeoutMs)));
                case "create_topic":
                    createTopic(str(a.get("topic")), (int) num(a.get("partitions")), strings(a.get("configs")),
                            timeoutMs);
                    return ok(Map.of());
                case "alter_topic_configs":
                    alterTopicConfigs(str(a.get("topic")), strings(a.get("configs")), timeoutMs);
                    return ok(Map.of());
                case "consumer_groups":
                    return ok(Map.of("groups", consumerGroups(timeoutMs)));
                case "group_offsets":
                    return ok(Map.of("offsets", groupOffsets(str(a.get("group")), tps(a.get("tps")), timeoutMs)));
                case "commit_group":
                    return ok(commitGroup(str(a.get("group")), a.get("offsets"), timeoutMs));
                case "scan":
                    return okBinary(scan(str(a.get("topic")), (int) num(a.get("partition")), num(a.get("from")),
                            (int) num(a.get("max_records")), timeoutMs));
                default:
                    return error("other", "unknown cluster call " + op, false);
            }
        } catch (Throwable t) {
            return error(t);
        }
    }

    // ------------------------------------------------------------------------------------------
    // Operations

    private Map<String, Object> describeTopic(String topic, long timeoutMs) throws Exception {
        TopicDescription d;
        try {
            d = get(admin().describeTopics(List.of(topic), new DescribeTopicsOptions().timeoutMs((int) timeoutMs))
                    .allTopicNames(), timeoutMs).get(topic);
        } catch (UnknownTopicOrPartitionException e) {
            return Map.of("exists", false);
        }
        ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        Config config = get(admin().describeConfigs(List.of(r), new DescribeConfigsOptions().timeoutMs((int) timeoutMs))
                .all(), timeoutMs).get(r);
        Map<String, Object> configs = new TreeMap<>();
        for (ConfigEntry e : config.entries()) {
            if (e.source() == ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG && !e.isSensitive() && e.value() != null) {
                configs.put(e.name(), e.value());
            }
        }
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("exists", true);
        out.put("partitions", d.partitions().size());
        out.put("configs", configs);
        return out;
    }

    private Map<String, Object> endOffsets(String topic, long timeoutMs) throws Exception {
        TopicDescription d;
        try {
            d = get(admin().describeTopics(List.of(topic), new DescribeTopicsOptions().timeoutMs((int) timeoutMs))
                    .allTopicNames(), timeoutMs).get(topic);
        } catch (UnknownTopicOrPartitionException e) {
            throw new UnknownTopicOrPartitionException("topic " + topic + " does not exist; check the topic name");
        }
        List<TopicPartition> tps = new ArrayList<>();
        d.partitions().forEach(p -> tps.add(new TopicPartition(topic, p.partition())));
        List<Object> out = new ArrayList<>();
        for (List<Object> w : watermarks(tps, timeoutMs)) {
            out.add(List.of(w.get(1), w.get(2), w.get(3)));
        }
        return Map.of("partitions", out);
    }

    /** [topic, partition, log start, last stable offset] per partition. */
    private List<List<Object>> watermarks(List<TopicPartition> tps, long timeoutMs) throws Exception {
        Map<TopicPartition, Long> start = offsets(tps, OffsetSpec.earliest(), IsolationLevel.READ_UNCOMMITTED,
                timeoutMs);
        Map<TopicPartition, Long> end = offsets(tps, OffsetSpec.latest(), IsolationLevel.READ_COMMITTED, timeoutMs);
        List<List<Object>> out = new ArrayList<>();
        for (TopicPartition tp : tps) {
            out.add(List.of(tp.topic(), tp.partition(), start.get(tp), end.get(tp)));
        }
        return out;
    }

    private Map<TopicPartition, Long> offsets(Collection<TopicPartition> tps, OffsetSpec spec, IsolationLevel iso,
                                              long timeoutMs) throws Exception {
        Map<TopicPartition, OffsetSpec> req = new HashMap<>();
        for (TopicPartition tp : tps) {
            req.put(tp, spec);
        }
        Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> res = get(admin().listOffsets(req,
                new ListOffsetsOptions(iso).timeoutMs((int) timeoutMs)).all(), timeoutMs);
        Map<TopicPartition, Long> out = new HashMap<>();
        res.forEach((tp, info) -> out.put(tp, info.offset()));
        return out;
    }

    private long logEnd(String topic, int partition, boolean readCommitted, long timeoutMs) throws Exception {
        TopicPartition tp = new TopicPartition(topic, partition);
        IsolationLevel iso = readCommitted ? IsolationLevel.READ_COMMITTED : IsolationLevel.READ_UNCOMMITTED;
        return offsets(List.of(tp), OffsetSpec.latest(), iso, timeoutMs).get(tp);
    }

    private void createTopic(String topic, int partitions, Map<String, String> configs, long timeoutMs)
            throws Exception {
        NewTopic t = new NewTopic(topic, java.util.Optional.of(partitions), java.util.Optional.empty()).configs(configs);
        get(admin().createTopics(List.of(t), new CreateTopicsOptions().timeoutMs((int) timeoutMs)).all(), timeoutMs);
    }

    /** Makes {@code configs} the topic's whole set of dynamic configs (others go back to their defaults). */
    private void alterTopicConfigs(String topic, Map<String, String> configs, long timeoutMs) throws Exception {
        ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        Config now = get(admin().describeConfigs(List.of(r), new DescribeConfigsOptions().timeoutMs((int) timeoutMs))
                .all(), timeoutMs).get(r);
        List<AlterConfigOp> ops = new ArrayList<>();
        for (ConfigEntry e : now.entries()) {
            if (e.source() == ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG && !configs.containsKey(e.name())) {
                ops.add(new AlterConfigOp(new ConfigEntry(e.name(), null), AlterConfigOp.OpType.DELETE));
            }
        }
        configs.forEach((k, v) -> ops.add(new AlterConfigOp(new ConfigEntry(k, v), AlterConfigOp.OpType.SET)));
        get(admin().incrementalAlterConfigs(Map.of(r, ops)).all(), timeoutMs);
    }

    @SuppressWarnings("deprecation")
    private List<String> consumerGroups(long timeoutMs) throws Exception {
        Collection<ConsumerGroupListing> all = get(admin().listConsumerGroups(
                new ListConsumerGroupsOptions().timeoutMs((int) timeoutMs)).all(), timeoutMs);
        List<String> out = new ArrayList<>();
        for (ConsumerGroupListing g : all) {
            out.add(g.groupId());
        }
        return out;
    }

    private List<List<Object>> groupOffsets(String group, List<TopicPartition> tps, long timeoutMs) throws Exception {
        Map<TopicPartition, OffsetAndMetadata> res = get(admin().listConsumerGroupOffsets(
                Map.of(group, new ListConsumerGroupOffsetsSpec().topicPartitions(tps))).partitionsToOffsetAndMetadata(
                group), timeoutMs);
        List<List<Object>> out = new ArrayList<>();
        for (Map.Entry<TopicPartition, OffsetAndMetadata> e : res.entrySet()) {
            OffsetAndMetadata om = e.getValue();
            if (om != null && om.offset() >= 0) {
                out.add(List.of(e.getKey().topic(), e.getKey().partition(), om.offset(),
                        om.metadata() == null ? "" : om.metadata()));
            }
        }
        return out;
    }

    private Map<String, Object> commitGroup(String group, Object offsets, long timeoutMs) throws Exception {
        // Kafka refuses commits from non-members while a group has members; asking first gives
        // a clearer reason than the protocol error.
        try {
            ConsumerGroupDescription d = get(admin().describeConsumerGroups(List.of(group)).all(), timeoutMs)
                    .get(group);
            if (d != null && !d.members().isEmpty()) {
                return outcome("active", "group has " + d.members().size() + " active member(s)");
            }
        } catch (AuthorizationException e) {
            return outcome("failed", e.getMessage() + ": grant the principal DESCRIBE and READ on group " + group);
        } catch (Exception e) {
            // Best effort: the broker refuses the commit itself if the group has members.
        }
        Map<TopicPartition, OffsetAndMetadata> m = new HashMap<>();
        for (Object o : (List<?>) offsets) {
            List<?> e = (List<?>) o;
            m.put(new TopicPartition(str(e.get(0)), (int) num(e.get(1))),
                    new OffsetAndMetadata(num(e.get(2)), str(e.get(3))));
        }
        try {
            get(admin().alterConsumerGroupOffsets(group, m).all(), timeoutMs);
            return outcome("done", "");
        } catch (UnknownMemberIdException | GroupNotEmptyException | RebalanceInProgressException e) {
            return outcome("active", "the broker refused the commit: " + e.getMessage());
        } catch (AuthorizationException e) {
            return outcome("failed", e.getMessage() + ": grant the principal READ on group " + group
                    + " and on the topic");
        } catch (Exception e) {
            return outcome("retry", e.getClass().getSimpleName() + ": " + e.getMessage());
        }
    }

    /**
     * Reads committed records of a partition from {@code from}: a page of at most {@code max}
     * records, in the binary form of docs/jni.md.
     */
    private byte[] scan(String topic, int partition, long from, int max, long timeoutMs) throws IOException {
        Map<String, Object> c = only(props, ConsumerConfig.configNames());
        c.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        c.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        c.remove(ConsumerConfig.GROUP_ID_CONFIG);
        TopicPartition tp = new TopicPartition(topic, partition);
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        DataOutputStream body = new DataOutputStream(buf);
        int n = 0;
        boolean atEnd = false;
        long next = from;
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(c, new ByteArrayDeserializer(),
                new ByteArrayDeserializer())) {
            consumer.assign(List.of(tp));
            consumer.seek(tp, from);
            long end = consumer.endOffsets(List.of(tp), Duration.ofMillis(timeoutMs)).get(tp);
            long deadline = System.currentTimeMillis() + timeoutMs;
            while (n < max && System.currentTimeMillis() < deadline) {
                if (consumer.position(tp, Duration.ofMillis(timeoutMs)) >= end) {
                    atEnd = true;
                    break;
                }
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(200)).records(tp)) {
                    writeRecord(body, r);
                    n++;
                    next = r.offset() + 1;
                }
            }
            // Every record of each poll was written, so the position is just past the last one.
            next = consumer.position(tp, Duration.ofMillis(timeoutMs));
        }
        ByteArrayOutputStream out = new ByteArrayOutputStream(buf.size() + 16);
        DataOutputStream head = new DataOutputStream(out);
        head.writeByte(atEnd ? 1 : 0);
        head.writeLong(next);
        head.writeInt(n);
        buf.writeTo(out);
        return out.toByteArray();
    }

    private static void writeRecord(DataOutputStream out, ConsumerRecord<byte[], byte[]> r) throws IOException {
        out.writeLong(r.offset());
        out.writeLong(r.timestamp());
        out.writeByte(r.timestampType() == TimestampType.LOG_APPEND_TIME ? 1 : 0);
        writeBytes(out, r.key());
        writeBytes(out, r.value());
        Header[] hs = r.headers().toArray();
        out.writeInt(hs.length);
        for (Header h : hs) {
            writeBytes(out, h.key().getBytes(StandardCharsets.UTF_8));
            writeBytes(out, h.value());
        }
    }

    private static void writeBytes(DataOutputStream out, byte[] b) throws IOException {
        if (b == null) {
            out.writeInt(-1);
        } else {
            out.writeInt(b.length);
            out.write(b);
        }
    }

    // ------------------------------------------------------------------------------------------
    // Plumbing

    private static <T> T get(Future<T> f, long timeoutMs) throws Exception {
        try {
            return f.get(timeoutMs + 2_000, TimeUnit.MILLISECONDS);
        } catch (ExecutionException e) {
            Throwable c = e.getCause();
            if (c instanceof Exception) {
                throw (Exception) c;
            }
            throw e;
        } catch (java.util.concurrent.TimeoutException e) {
            throw new TimeoutException("no answer within " + timeoutMs + " ms");
        }
    }

    private static Map<String, Object> outcome(String outcome, String why) {
        return Map.of("outcome", outcome, "why", why);
    }

    private static byte[] ok(Object json) {
        byte[] body = Json.write(json);
        byte[] out = new byte[body.length + 1];
        out[0] = OK;
        System.arraycopy(body, 0, out, 1, body.length);
        return out;
    }

    private static byte[] okBinary(byte[] body) {
        byte[] out = new byte[body.length + 1];
        out[0] = OK;
        System.arraycopy(body, 0, out, 1, body.length);
        return out;
    }

    private static byte[] error(String kind, String message, boolean retriable) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("kind", kind);
        m.put("message", message);
        m.put("retriable", retriable);
        byte[] body = Json.write(m);
        byte[] out = new byte[body.length + 1];
        out[0] = ERROR;
        System.arraycopy(body, 0, out, 1, body.length);
        return out;
    }

    /** An error answer for {@code t}, classified for the core. */
    static byte[] error(Throwable t) {
        Throwable c = t;
        // Client construction wraps the real problem (a missing truststore, a bad JAAS line).
        while (c instanceof KafkaException && !(c instanceof AuthenticationException)
                && !(c instanceof AuthorizationException) && !(c instanceof RetriableException)
                && !(c instanceof UnknownTopicOrPartitionException) && c.getCause() != null) {
            c = c.getCause();
        }
        String message = describe(t, c);
        if (c instanceof UnknownTopicOrPartitionException) {
            return error("not_found", message, false);
        }
        if (c instanceof AuthenticationException) {
            return error("authentication", message, false);
        }
        if (c instanceof AuthorizationException) {
            return error("authorization", message, false);
        }
        return error("other", message, c instanceof RetriableException);
    }

    private static String describe(Throwable outer, Throwable cause) {
        String m = cause.getClass().getSimpleName() + ": " + cause.getMessage();
        if (outer != cause && outer.getMessage() != null) {
            m = outer.getMessage() + " (" + m + ")";
        }
        return m;
    }

    private static String str(Object o) {
        return o == null ? null : o.toString();
    }

    private static long num(Object o) {
        return o instanceof Number ? ((Number) o).longValue() : 0L;
    }

    private static Map<String, String> strings(Object o) {
        Map<String, String> out = new LinkedHashMap<>();
        if (o instanceof Map) {
            ((Map<?, ?>) o).forEach((k, v) -> out.put(k.toString(), v == null ? null : v.toString()));
        }
        return out;
    }

    private static List<TopicPartition> tps(Object o) {
        List<TopicPartition> out = new ArrayList<>();
        for (Object e : (List<?>) o) {
            List<?> l = (List<?>) e;
            out.add(new TopicPartition(str(l.get(0)), (int) num(l.get(1))));
        }
        return out;
    }
}
