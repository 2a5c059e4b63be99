package io.kbackup.connect.internal;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentMap;
import java.util.function.Consumer;

/**
 * Every native method of the Rust bridge ({@code crates/kbackup-jni}), and nothing else.
 *
 * <p>The contract (buffers, handles, exceptions, logging) is {@code docs/jni.md}. Each method
 * throws {@link io.kbackup.connect.KbackupException} or
 * {@link io.kbackup.connect.KbackupRetriableException}; handles are opaque and checked by the
 * bridge on every call. Call {@link #ensureLoaded()} before the first native call so a load
 * failure surfaces as a clear exception instead of an {@code UnsatisfiedLinkError}.
 */
public final class Native {
    private static final String LOG_PREFIX = "io.kbackup.native.";
    private static final ConcurrentMap<String, Logger> LOGGERS = new ConcurrentHashMap<>();

    /** Sees every forwarded line as "level target: message"; tests set it to check the path. */
    static volatile Consumer<String> tapForTests;

    private Native() {
    }

    /** Loads the bridge (once per classloader) or re-throws the remembered load failure. */
    public static void ensureLoaded() {
        NativeLoader.load();
    }

    /** Core version and format version. */
    public static native String version();

    /** Opens a sink (backup) writer for one task; answers its handle. */
    public static native long sinkOpen(byte[] sinkConfigJson, ClusterClient cluster);

    /** Opens partitions; answers an offsets buffer: next offset to fetch, or -1 when nothing is on disk. */
    public static native byte[] sinkOpenPartitions(long handle, byte[] partitions);

    /** Appends one batch (every record of one {@code put()}). */
    public static native void sinkPut(long handle, byte[] batch);

    /** Makes everything appended durable; answers an offsets buffer of durable next offsets. */
    public static native byte[] sinkFlush(long handle);

    /** Closes the writers of these partitions. */
    public static native void sinkClosePartitions(long handle, byte[] partitions);

    /**
     * Monitoring snapshot of a sink task as JSON (docs/operations.md); refreshes the cluster
     * end offsets behind the lag when they are a few seconds old.
     */
    public static native byte[] sinkMetrics(long handle);

    /** Closes the sink; safe twice. */
    public static native void sinkClose(long handle);

    /**
     * The local directory of a {@code target.dir}/{@code source.dir} value (a path or file:// URL); throws
     * {@code KbackupException} naming the fix for an object-store URL or another scheme.
     */
    public static native String localDir(byte[] locationUtf8);

    /**
     * {@code null} when a {@code target.dir}/{@code source.dir} value is a local directory; {@code ""} when it
     * is an object-store location that answers now (and, with {@code write}, takes a probe object); throws
     * {@code KbackupException} naming the problem and the fix otherwise.
     */
    public static native String checkLocation(byte[] locationUtf8, byte[] storageJson, boolean write);

    /**
     * Topics and partitions of a backup directory, as JSON
     * {@code {"topics":[{"topic":T,"partitions":[P,...]}]}}; reads directory names only.
     */
    public static native byte[] listPartitions(byte[] dirUtf8, byte[] storageJson);

    /** Problems with a source config, as a JSON list of {@code {"key","message"}}. */
    public static native byte[] sourceValidate(byte[] sourceConfigJson);

    /** Creates or checks the target topics (connector start). */
    public static native void sourcePrepare(byte[] sourceConfigJson, ClusterClient cluster);

    /** Opens a restore reader for one task; {@code assignment} is an offsets buffer. */
    public static native long sourceOpen(byte[] sourceConfigJson, byte[] assignment, ClusterClient cluster);

    /** Hands over acknowledgements and answers the next batch (possibly empty, see flags). */
    public static native byte[] sourcePoll(long handle, byte[] acks, int maxRecords);

    /** Hands over acknowledgements and saves the restore state at once (before {@link #sourceClose}). */
    public static native void sourceAck(long handle, byte[] acks);

    /** Restore progress, as JSON. */
    public static native byte[] sourceStatus(long handle);

    /** Monitoring snapshot of a source task as JSON (docs/operations.md). */
    public static native byte[] sourceMetrics(long handle);

    /** Closes the restore reader; safe twice. */
    public static native void sourceClose(long handle);

    /** Test only: panics inside the bridge on purpose, which must arrive as a KbackupException. */
    public static native void panicForTest();

    /**
     * Called FROM the bridge, on the thread of a native call, to forward the core's log lines.
     * Levels: 1=error 2=warn 3=info 4=debug 5=trace.
     */
    static void log(int level, String target, String message) {
        String name = target == null || target.isEmpty() ? "core" : target.replace("::", ".");
        Logger logger = LOGGERS.computeIfAbsent(name, n -> LoggerFactory.getLogger(LOG_PREFIX + n));
        switch (level) {
            case 1:
                logger.error(message);
                break;
            case 2:
                logger.warn(message);
                break;
            case 3:
                logger.info(message);
                break;
            case 4:
                logger.debug(message);
                break;
            default:
                logger.trace(message);
                break;
        }
        Consumer<String> tap = tapForTests;
        if (tap != null) {
            tap.accept(level + " " + name + ": " + message);
        }
    }
}
