package io.kbackup.connect.bench;

import io.kbackup.connect.BackupSinkTask;
import io.kbackup.connect.BackupSourceTask;
import io.kbackup.connect.internal.BatchEncoder;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.metrics.PluginMetrics;
import org.apache.kafka.common.record.TimestampType;
import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.header.ConnectHeaders;
import org.apache.kafka.connect.sink.SinkRecord;
import org.apache.kafka.connect.sink.SinkTaskContext;
import org.apache.kafka.connect.source.SourceRecord;
import org.apache.kafka.connect.source.SourceTaskContext;
import org.apache.kafka.connect.storage.OffsetStorageReader;

import java.io.IOException;
import java.lang.management.GarbageCollectorMXBean;
import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.stream.Stream;

/**
 * The in-process ceiling of kbackup's own code (issue 12, item 4): the REAL sink task
 * ({@link BackupSinkTask} -> NativeSink -> JNI -> Rust core) fed synthetic {@link SinkRecord}
 * batches into real segment files, and the REAL source task ({@link BackupSourceTask#poll}
 * through JNI) reading that backup back, with no Kafka at all. Test code: it is not in the
 * plugin jar. Run by {@code tests/bench/inprocess.py} ({@code make bench-inprocess}, and
 * {@code make bench}), which builds the classpath and keeps the JSON this writes.
 *
 * <p>Per record size, in this order: (1) the disk's own sequential write rate with an
 * fdatasync every flush block ({@code FileChannel.force(false)} is fdatasync on Linux), (2)
 * the sink into the same disk with {@code preCommit} (the task's flush: fsync of every
 * segment and index written) every flush block, (3) the sink into tmpfs ({@code
 * --tmpfs-dir}) with the same flushes: the core has no switch to skip fsync, and fsync on
 * tmpfs returns at once, so this is the "fsync excluded" figure, (4) the source task polling
 * the backup of (2) back (page cache warm), acknowledging every record as a producer would.
 * A warm-up pass of each task runs first (JIT), into a directory of its own.
 */
public final class InProcessBench {
    private static final long MIB = 1024L * 1024;
    /** Connect's default max.poll.records: a put() gets at most this many records. */
    private static final int MAX_BATCH = 500;
    /** Bytes per put() for large records: what 6 partitions x max.partition.fetch.bytes (1 MiB) give. */
    private static final long MAX_BATCH_BYTES = 6 * MIB;
    /** Distinct value arrays cycled through, so values are not all in the CPU cache. */
    private static final long VALUE_POOL_BYTES = 64 * MIB;
    /** An address that fails at once: the tasks need a cluster setting, the bench has no Kafka. */
    private static final String NO_KAFKA = "kbackup-bench-no-kafka.invalid:9092";
    /** CPU time of the calling thread: the JNI calls run on it, so this is our code's CPU without the wait for a core. */
    private static final ThreadMXBean THREADS = ManagementFactory.getThreadMXBean();
    /** --cases of main. */
    private static Set<String> CASES_OVERRIDE;
    /** --compression of main: the sink's compression.type (null: the sink's default). */
    private static String COMPRESSION;

    private final Path diskDir;
    private final Path tmpfsDir;
    private final long mibPerCase;
    private final long flushMib;
    private final long warmupMib;
    private final int partitions;
    /** Which cases run (all by default; fewer to profile one, e.g. --cases sink_tmpfs). */
    private Set<String> cases = Set.of("encode_only", "disk_fdatasync", "tmpfs_write", "sink_disk_fsync",
            "sink_tmpfs", "source_disk");

    private InProcessBench(Path diskDir, Path tmpfsDir, long mibPerCase, long flushMib, long warmupMib,
                           int partitions) {
        this.diskDir = diskDir;
        this.tmpfsDir = tmpfsDir;
        this.mibPerCase = mibPerCase;
        this.flushMib = flushMib;
        this.warmupMib = warmupMib;
        this.partitions = partitions;
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> a = new HashMap<>();
        for (int i = 0; i + 1 < args.length; i += 2) {
            if (!args[i].startsWith("--")) {
                throw new IllegalArgumentException("expected --flag value pairs, got " + args[i]);
            }
            a.put(args[i].substring(2), args[i + 1]);
        }
        if (!a.containsKey("out") || !a.containsKey("dir")) {
            System.err.println("usage: InProcessBench --dir DISK_DIR --out RESULT.json [--tmpfs-dir /dev/shm/x] "
                    + "[--record-sizes 100,1024,65536] [--mib 512] [--flush-mib 64] [--warmup-mib 64] [--partitions 6] "
                    + "[--cases a,b] [--compression none|zstd|lz4]");
            System.exit(2);
        }
        List<Integer> sizes = new ArrayList<>();
        for (String s : a.getOrDefault("record-sizes", "100,1024,65536").split(",")) {
            sizes.add(Integer.parseInt(s.trim()));
        }
        if (a.containsKey("cases")) {
            CASES_OVERRIDE = Set.of(a.get("cases").split(","));
        }
        COMPRESSION = a.get("compression");
        Map<String, Object> out = run(Paths.get(a.get("dir")),
                a.containsKey("tmpfs-dir") ? Paths.get(a.get("tmpfs-dir")) : null, sizes,
                Long.parseLong(a.getOrDefault("mib", "512")), Long.parseLong(a.getOrDefault("flush-mib", "64")),
                Long.parseLong(a.getOrDefault("warmup-mib", "64")), Integer.parseInt(a.getOrDefault("partitions", "6")));
        Files.write(Paths.get(a.get("out")), json(out).getBytes(java.nio.charset.StandardCharsets.UTF_8));
    }

    /** Runs every case for every size; the answer is the result JSON's content. */
    public static Map<String, Object> run(Path diskDir, Path tmpfsDir, List<Integer> sizes, long mibPerCase,
                                          long flushMib, long warmupMib, int partitions) throws Exception {
        InProcessBench b = new InProcessBench(diskDir, tmpfsDir, mibPerCase, flushMib, warmupMib, partitions);
        if (CASES_OVERRIDE != null) {
            b.cases = CASES_OVERRIDE;
        }
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("java", System.getProperty("java.vm.name") + " " + System.getProperty("java.version"));
        out.put("jvm_args", ManagementFactory.getRuntimeMXBean().getInputArguments());
        out.put("disk_dir", diskDir.toString());
        out.put("tmpfs_dir", tmpfsDir == null ? null : tmpfsDir.toString());
        out.put("mib_per_case", mibPerCase);
        out.put("flush_mib", flushMib);
        out.put("partitions", partitions);
        out.put("load_at_start", loadavg());
        Map<String, Object> bySize = new LinkedHashMap<>();
        for (int size : sizes) {
            bySize.put(String.valueOf(size), b.runSize(size));
        }
        out.put("sizes", bySize);
        out.put("load_at_end", loadavg());
        return out;
    }

    private Map<String, Object> runSize(int size) throws Exception {
        Map<String, Object> r = new LinkedHashMap<>();
        long records = Math.max(partitions, mibPerCase * MIB / size);
        int batch = (int) Math.max(1, Math.min(MAX_BATCH, MAX_BATCH_BYTES / size));
        long flushBytes = flushMib * MIB;
        r.put("record_size", size);
        r.put("records", records);
        r.put("records_per_put", batch);
        byte[][] values = valuePool(size);
        long warm = Math.max(partitions, warmupMib * MIB / size);

        Path warmDir = diskDir.resolve("warmup-" + size);
        sink(warmDir, values, warm, batch, flushBytes);
        source(warmDir, warm);
        delete(warmDir);

        if (cases.contains("encode_only")) {
            r.put("encode_only", encodeOnly(values, records, batch));
        }
        long total = records * (long) size;
        Path plain = diskDir.resolve("disk-" + size + ".dat");
        boolean disk = cases.contains("disk_fdatasync");
        // Before and after the sink into the same disk: other writers on a shared disk move it.
        Map<String, Object> diskBefore = disk ? diskRate(plain, total, flushBytes) : null;
        if (tmpfsDir != null && cases.contains("tmpfs_write")) {
            // The same plain write into tmpfs: the floor for the tmpfs sink (its fdatasync returns at once).
            r.put("tmpfs_write", diskRate(tmpfsDir.resolve("plain-" + size + ".dat"), total, flushBytes));
        }
        Path backup = diskDir.resolve("backup-" + size);
        boolean sinkDisk = cases.contains("sink_disk_fsync") || cases.contains("source_disk");
        if (sinkDisk) {
            r.put("sink_disk_fsync", sink(backup, values, records, batch, flushBytes));
        }
        if (disk) {
            Map<String, Object> diskAfter = diskRate(plain, total, flushBytes);
            Map<String, Object> d = new LinkedHashMap<>(diskBefore);
            d.put("mb_per_s", ((double) diskBefore.get("mb_per_s") + (double) diskAfter.get("mb_per_s")) / 2);
            d.put("mb_per_s_before", diskBefore.get("mb_per_s"));
            d.put("mb_per_s_after", diskAfter.get("mb_per_s"));
            d.put("load_after", diskAfter.get("load"));
            r.put("disk_fdatasync", d);
        }
        if (tmpfsDir != null && cases.contains("sink_tmpfs")) {
            Path shm = tmpfsDir.resolve("backup-" + size);
            r.put("sink_tmpfs", sink(shm, values, records, batch, flushBytes));
            delete(shm);
        }
        if (sinkDisk && cases.contains("source_disk")) {
            r.put("source_disk", source(backup, records));
        }
        delete(backup);
        return r;
    }

    private static byte[][] valuePool(int size) {
        int n = (int) Math.max(1, Math.min(100_000, VALUE_POOL_BYTES / size));
        byte[][] pool = new byte[n][size];
        Random rnd = new Random(42);
        for (byte[] v : pool) {
            rnd.nextBytes(v);
        }
        return pool;
    }

    /** A plain sequential write of {@code total} bytes in 1 MiB writes with fdatasync every {@code block}. */
    private static Map<String, Object> diskRate(Path file, long total, long block) throws IOException {
        Files.createDirectories(file.getParent());
        ByteBuffer chunk = ByteBuffer.allocateDirect((int) MIB);
        for (int i = 0; i < chunk.capacity(); i++) {
            chunk.put(i, (byte) (i * 31 + 7));
        }
        List<Double> load = loadavg();
        long syncNs = 0;
        long writeCpuNs = 0;
        long t0 = System.nanoTime();
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE, StandardOpenOption.TRUNCATE_EXISTING,
                StandardOpenOption.WRITE)) {
            long written = 0;
            long sinceSync = 0;
            while (written < total) {
                chunk.clear();
                chunk.limit((int) Math.min(chunk.capacity(), total - written));
                long c = THREADS.getCurrentThreadCpuTime();
                while (chunk.hasRemaining()) {
                    written += ch.write(chunk);
                }
                writeCpuNs += THREADS.getCurrentThreadCpuTime() - c;
                sinceSync += chunk.limit();
                if (sinceSync >= block || written >= total) {
                    long s = System.nanoTime();
                    ch.force(false);
                    syncNs += System.nanoTime() - s;
                    sinceSync = 0;
                }
            }
        } finally {
            Files.deleteIfExists(file);
        }
        double s = (System.nanoTime() - t0) / 1e9;
        Map<String, Object> r = new LinkedHashMap<>();
        r.put("bytes", total);
        r.put("block_bytes", block);
        r.put("wall_s", s);
        r.put("mb_per_s", total / (double) MIB / s);
        r.put("fdatasync_s", syncNs / 1e9);
        // CPU of the write(2) calls alone (the kernel copying into the page cache): a floor
        // for any writer of these bytes, ours included.
        r.put("write_cpu_s", writeCpuNs / 1e9);
        r.put("write_cpu_mb_per_s", total / (double) MIB / (writeCpuNs / 1e9));
        r.put("load", load);
        return r;
    }

    /** Sink task: puts of {@code batch} records, one partition per put (as Connect's fetches come), preCommit every flush block. */
    private Map<String, Object> sink(Path dir, byte[][] values, long records, int batch, long flushBytes) {
        List<Double> load = loadavg();
        long gc0 = gcMillis();
        BackupSinkTask task = new BackupSinkTask();
        BenchSinkContext ctx = new BenchSinkContext();
        task.initialize(ctx);
        Map<String, String> props = new HashMap<>();
        props.put("name", "inprocess-bench");
        props.put("target.dir", dir.toString());
        props.put("cluster.bootstrap.servers", NO_KAFKA);
        // No group-offset capture attempts during the run (they would only fail: no Kafka).
        props.put("consumer.offsets.sync.interval.ms", "3600000");
        if (COMPRESSION != null) {
            props.put("compression.type", COMPRESSION);
        }
        long tStart = System.nanoTime();
        task.start(props);
        List<TopicPartition> tps = new ArrayList<>();
        for (int p = 0; p < partitions; p++) {
            tps.add(new TopicPartition("bench", p));
        }
        task.open(tps);
        long startNs = System.nanoTime() - tStart;
        int size = values[0].length;
        long[] next = new long[partitions];
        long putNs = 0;
        long putCpuNs = 0;
        long flushNs = 0;
        int flushes = 0;
        long sinceFlush = 0;
        long done = 0;
        int vi = 0;
        long t0 = System.nanoTime();
        long firstPutEnd = -1;
        int p = 0;
        while (done < records) {
            int n = (int) Math.min(batch, records - done);
            List<SinkRecord> recs = new ArrayList<>(n);
            for (int i = 0; i < n; i++) {
                long off = next[p]++;
                recs.add(new SinkRecord("bench", p, null, null, Schema.OPTIONAL_BYTES_SCHEMA, values[vi], off,
                        1_700_000_000_000L + done + i, TimestampType.CREATE_TIME, new ConnectHeaders()));
                vi = vi + 1 == values.length ? 0 : vi + 1;
            }
            long c = THREADS.getCurrentThreadCpuTime();
            long s = System.nanoTime();
            task.put(recs);
            long e = System.nanoTime();
            putCpuNs += THREADS.getCurrentThreadCpuTime() - c;
            putNs += e - s;
            if (firstPutEnd < 0) {
                firstPutEnd = e;
            }
            done += n;
            sinceFlush += (long) n * size;
            p = p + 1 == partitions ? 0 : p + 1;
            if (sinceFlush >= flushBytes) {
                flushNs += preCommit(task, tps);
                flushes++;
                sinceFlush = 0;
            }
        }
        long lastPutEnd = System.nanoTime();
        long finalFlush = preCommit(task, tps);
        flushNs += finalFlush;
        flushes++;
        long wallNs = System.nanoTime() - t0;
        task.close(tps);
        task.stop();
        long gc = gcMillis() - gc0;
        double bytes = (double) records * size;
        Map<String, Object> r = new LinkedHashMap<>();
        r.put("records", records);
        r.put("start_s", startNs / 1e9);
        r.put("wall_s", wallNs / 1e9);
        r.put("put_s", putNs / 1e9);
        r.put("flush_s", flushNs / 1e9);
        r.put("flushes", flushes);
        r.put("final_flush_s", finalFlush / 1e9);
        r.put("first_put_s", (firstPutEnd - t0) / 1e9);
        r.put("puts_until_last_s", (lastPutEnd - t0) / 1e9);
        // Our code's time: encode + JNI + core append (put) plus the flushes; the synthetic
        // SinkRecords' construction (Connect's work) is left out of ns/record and MB/s.
        double oursNs = putNs + flushNs;
        r.put("ns_per_record", oursNs / records);
        r.put("mb_per_s", bytes / MIB / (oursNs / 1e9));
        r.put("put_only_mb_per_s", bytes / MIB / (putNs / 1e9));
        r.put("put_ns_per_record", (double) putNs / records);
        // put() on CPU: what a whole free core would give (the machine is shared).
        r.put("put_cpu_s", putCpuNs / 1e9);
        r.put("put_cpu_ns_per_record", (double) putCpuNs / records);
        r.put("put_cpu_mb_per_s", bytes / MIB / (putCpuNs / 1e9));
        r.put("wall_mb_per_s", bytes / MIB / (wallNs / 1e9));
        r.put("segment_bytes", segmentBytes(dir));
        r.put("gc_ms", gc);
        r.put("load", load);
        return r;
    }

    /** The Java half of put() alone: BatchEncoder over the same batches, no native call. */
    private Map<String, Object> encodeOnly(byte[][] values, long records, int batch) {
        List<Double> load = loadavg();
        long[] next = new long[partitions];
        long done = 0;
        long cpuNs = 0;
        long bytesOut = 0;
        int vi = 0;
        int p = 0;
        while (done < records) {
            int n = (int) Math.min(batch, records - done);
            List<SinkRecord> recs = new ArrayList<>(n);
            for (int i = 0; i < n; i++) {
                recs.add(new SinkRecord("bench", p, null, null, Schema.OPTIONAL_BYTES_SCHEMA, values[vi], next[p]++,
                        1_700_000_000_000L + done + i, TimestampType.CREATE_TIME, new ConnectHeaders()));
                vi = vi + 1 == values.length ? 0 : vi + 1;
            }
            long c = THREADS.getCurrentThreadCpuTime();
            bytesOut += BatchEncoder.encodeSinkBatch(recs).length;
            cpuNs += THREADS.getCurrentThreadCpuTime() - c;
            done += n;
            p = p + 1 == partitions ? 0 : p + 1;
        }
        Map<String, Object> r = new LinkedHashMap<>();
        r.put("records", records);
        r.put("batch_bytes", bytesOut);
        r.put("cpu_s", cpuNs / 1e9);
        r.put("cpu_ns_per_record", (double) cpuNs / records);
        r.put("cpu_mb_per_s", (double) records * values[0].length / MIB / (cpuNs / 1e9));
        r.put("load", load);
        return r;
    }

    private static long preCommit(BackupSinkTask task, List<TopicPartition> tps) {
        long s = System.nanoTime();
        Map<TopicPartition, org.apache.kafka.clients.consumer.OffsetAndMetadata> committed = task.preCommit(Map.of());
        long ns = System.nanoTime() - s;
        if (committed.size() > tps.size()) {
            throw new IllegalStateException("preCommit answered unknown partitions: " + committed);
        }
        return ns;
    }

    /** Source task over the backup in {@code dir}: polls until every record came, acknowledging each. */
    private Map<String, Object> source(Path dir, long records) throws InterruptedException {
        List<Double> load = loadavg();
        long gc0 = gcMillis();
        BackupSourceTask task = new BackupSourceTask();
        task.initialize(new BenchSourceContext());
        Map<String, String> props = new HashMap<>();
        props.put("name", "inprocess-bench-restore-" + System.nanoTime());
        props.put("source.dir", dir.toString());
        props.put("topics", "bench");
        props.put("topics.rename", "bench:bench-restored");
        props.put("cluster.bootstrap.servers", NO_KAFKA);
        props.put("restore.group.offsets", "false");
        StringBuilder assigned = new StringBuilder();
        for (int p = 0; p < partitions; p++) {
            assigned.append(p == 0 ? "" : ",").append("bench:").append(p);
        }
        props.put("kbackup.task.partitions", assigned.toString());
        props.put("kbackup.task.index", "0");
        long tStart = System.nanoTime();
        task.start(props);
        long startNs = System.nanoTime() - tStart;
        long got = 0;
        long bytes = 0;
        long pollNs = 0;
        long pollCpuNs = 0;
        long ackNs = 0;
        int polls = 0;
        int empty = 0;
        long[] newOffset = new long[partitions];
        long t0 = System.nanoTime();
        long firstAt = -1;
        long deadline = t0 + 600_000_000_000L;
        while (got < records) {
            long c = THREADS.getCurrentThreadCpuTime();
            long s = System.nanoTime();
            List<SourceRecord> batch = task.poll();
            long e = System.nanoTime();
            pollCpuNs += THREADS.getCurrentThreadCpuTime() - c;
            pollNs += e - s;
            polls++;
            if (batch == null || batch.isEmpty()) {
                empty++;
                if (e > deadline) {
                    throw new IllegalStateException("source task polled " + got + " of " + records + " records in 600 s");
                }
                continue;
            }
            if (firstAt < 0) {
                firstAt = e;
            }
            // What the producer's callbacks do once the records are written.
            long a0 = System.nanoTime();
            for (SourceRecord r : batch) {
                int p = r.kafkaPartition();
                byte[] v = (byte[]) r.value();
                bytes += v == null ? 0 : v.length;
                task.commitRecord(r, new RecordMetadata(new TopicPartition(r.topic(), p), newOffset[p]++, 0,
                        r.timestamp() == null ? -1 : r.timestamp(), -1, v == null ? -1 : v.length));
            }
            ackNs += System.nanoTime() - a0;
            got += batch.size();
        }
        long wallNs = System.nanoTime() - t0;
        task.stop();
        long gc = gcMillis() - gc0;
        if (got != records) {
            throw new IllegalStateException("source task handed out " + got + " records, expected " + records);
        }
        Map<String, Object> r = new LinkedHashMap<>();
        r.put("records", got);
        r.put("value_bytes", bytes);
        r.put("start_s", startNs / 1e9);
        r.put("wall_s", wallNs / 1e9);
        r.put("poll_s", pollNs / 1e9);
        r.put("ack_s", ackNs / 1e9);
        r.put("polls", polls);
        r.put("empty_polls", empty);
        r.put("first_batch_s", firstAt < 0 ? null : (firstAt - t0) / 1e9);
        r.put("ns_per_record", (double) wallNs / got);
        r.put("mb_per_s", bytes / (double) MIB / (wallNs / 1e9));
        r.put("poll_ns_per_record", (double) pollNs / got);
        r.put("poll_cpu_s", pollCpuNs / 1e9);
        r.put("poll_cpu_ns_per_record", (double) pollCpuNs / got);
        r.put("poll_cpu_mb_per_s", bytes / (double) MIB / (pollCpuNs / 1e9));
        r.put("gc_ms", gc);
        r.put("load", load);
        return r;
    }

    /** The result as JSON (the shim's Json writes no doubles; the bench needs only these types). */
    static String json(Object v) {
        StringBuilder b = new StringBuilder();
        json(v, b, "");
        return b.append('\n').toString();
    }

    private static void json(Object v, StringBuilder b, String indent) {
        if (v instanceof Map<?, ?>) {
            b.append("{");
            String sep = "\n";
            for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) {
                b.append(sep).append(indent).append("  ");
                json(String.valueOf(e.getKey()), b, indent);
                b.append(": ");
                json(e.getValue(), b, indent + "  ");
                sep = ",\n";
            }
            b.append("\n").append(indent).append("}");
        } else if (v instanceof Collection<?>) {
            b.append("[");
            String sep = "";
            for (Object o : (Collection<?>) v) {
                b.append(sep);
                json(o, b, indent);
                sep = ", ";
            }
            b.append("]");
        } else if (v instanceof Double || v instanceof Float) {
            double d = ((Number) v).doubleValue();
            b.append(Double.isFinite(d) ? String.valueOf(d) : "null");
        } else if (v instanceof Number || v instanceof Boolean) {
            b.append(v);
        } else if (v == null) {
            b.append("null");
        } else {
            b.append('"');
            for (char c : v.toString().toCharArray()) {
                if (c == '"' || c == '\\') {
                    b.append('\\').append(c);
                } else if (c < 0x20) {
                    b.append(String.format("\\u%04x", (int) c));
                } else {
                    b.append(c);
                }
            }
            b.append('"');
        }
    }

    private static long segmentBytes(Path dir) {
        try (Stream<Path> files = Files.walk(dir)) {
            return files.filter(f -> f.toString().endsWith(".segment")).mapToLong(f -> f.toFile().length()).sum();
        } catch (IOException e) {
            return -1;
        }
    }

    private static void delete(Path dir) {
        if (!Files.exists(dir)) {
            return;
        }
        try (Stream<Path> files = Files.walk(dir)) {
            files.sorted(Comparator.reverseOrder()).forEach(f -> f.toFile().delete());
        } catch (IOException e) {
            throw new IllegalStateException("could not remove " + dir + ": " + e, e);
        }
    }

    private static long gcMillis() {
        long ms = 0;
        for (GarbageCollectorMXBean gc : ManagementFactory.getGarbageCollectorMXBeans()) {
            ms += Math.max(0, gc.getCollectionTime());
        }
        return ms;
    }

    static List<Double> loadavg() {
        try {
            String[] f = new String(Files.readAllBytes(Paths.get("/proc/loadavg"))).trim().split("\\s+");
            return List.of(Double.parseDouble(f[0]), Double.parseDouble(f[1]), Double.parseDouble(f[2]));
        } catch (IOException | RuntimeException e) {
            return List.of();
        }
    }

    /** What the worker gives a sink task, minus everything the bench does not need. */
    private static final class BenchSinkContext implements SinkTaskContext {
        private final Set<TopicPartition> assignment = new HashSet<>();

        @Override
        public Map<String, String> configs() {
            return Map.of();
        }

        @Override
        public void offset(Map<TopicPartition, Long> offsets) {
        }

        @Override
        public void offset(TopicPartition tp, long offset) {
        }

        @Override
        public void timeout(long timeoutMs) {
        }

        @Override
        public Set<TopicPartition> assignment() {
            return assignment;
        }

        @Override
        public void pause(TopicPartition... partitions) {
        }

        @Override
        public void resume(TopicPartition... partitions) {
        }

        @Override
        public void requestCommit() {
        }

        @Override
        public PluginMetrics pluginMetrics() {
            return null;
        }
    }

    /** A source context with no committed offsets (a first restore). */
    private static final class BenchSourceContext implements SourceTaskContext {
        @Override
        public Map<String, String> configs() {
            return Map.of();
        }

        @Override
        public OffsetStorageReader offsetStorageReader() {
            return new OffsetStorageReader() {
                @Override
                public <T> Map<String, Object> offset(Map<String, T> partition) {
                    return null;
                }

                @Override
                public <T> Map<Map<String, T>, Map<String, Object>> offsets(Collection<Map<String, T>> partitions) {
                    return Map.of();
                }
            };
        }

        @Override
        public PluginMetrics pluginMetrics() {
            return null;
        }
    }
}
