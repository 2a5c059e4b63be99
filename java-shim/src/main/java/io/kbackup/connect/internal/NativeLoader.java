package io.kbackup.connect.internal;

import io.kbackup.connect.KbackupException;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;

/**
 * Loads the Rust bridge shipped inside this jar.
 *
 * <p>The library is copied to a UNIQUE temp file (two plugin versions, or two classloaders of
 * the same plugin, must never share or overwrite one path), loaded with {@link System#load},
 * and the file is deleted right away (the mapping stays valid). This happens once per
 * classloader, since the state below lives in this class. A failure is remembered and re-thrown
 * on every later attempt, so each task fails with the same clear message instead of an
 * {@code UnsatisfiedLinkError} from the first native call.
 */
public final class NativeLoader {
    /** Resource path of the x86_64 library inside the jar (HostPlatform picks the host's). */
    public static final String RESOURCE = "native/linux-x86_64/libkbackup_jni.so";
    /** System property naming the directory the library is extracted to. */
    public static final String TMPDIR_PROPERTY = "kbackup.native.tmpdir";
    /** Environment variable naming the directory the library is extracted to. */
    public static final String TMPDIR_ENV = "KBACKUP_NATIVE_TMPDIR";

    private static final Object LOCK = new Object();
    private static boolean loaded;
    private static String failure;
    private static Throwable failureCause;

    private NativeLoader() {
    }

    /** Loads the library if this classloader has not yet; throws the remembered failure otherwise. */
    public static void load() {
        synchronized (LOCK) {
            if (loaded) {
                return;
            }
            if (failure == null) {
                try {
                    extractAndLoad();
                    loaded = true;
                    return;
                } catch (KbackupException e) {
                    failure = e.getMessage();
                    failureCause = e.getCause();
                } catch (IOException | RuntimeException | LinkageError e) {
                    failure = "could not load the kbackup native library: " + e;
                    failureCause = e;
                }
            }
            throw new KbackupException(failure, failureCause);
        }
    }

    /** The directory the library is extracted to: property, then environment, then java.io.tmpdir. */
    static Path extractDir() {
        String dir = System.getProperty(TMPDIR_PROPERTY);
        if (dir == null || dir.isBlank()) {
            dir = System.getenv(TMPDIR_ENV);
        }
        if (dir == null || dir.isBlank()) {
            dir = System.getProperty("java.io.tmpdir");
        }
        return Paths.get(dir);
    }

    private static void extractAndLoad() throws IOException {
        String problem = HostPlatform.problem(HostPlatform.SYSTEM);
        if (problem != null) {
            throw new KbackupException(problem);
        }
        String platform = HostPlatform.platform(HostPlatform.SYSTEM);
        String resource = HostPlatform.resource(platform);
        Path dir = extractDir();
        Path file;
        try (InputStream in = NativeLoader.class.getClassLoader().getResourceAsStream(resource)) {
            if (in == null) {
                if (!RESOURCE.equals(resource)) {
                    throw new KbackupException("this kbackup jar has no native library for " + platform
                            + " (only for linux-x86_64; " + platform + " is planned, see docs/install.md): run the "
                            + "Connect worker on Linux x86_64");
                }
                throw new KbackupException("the kbackup jar has no " + resource
                        + ": it was built without the native library; rebuild it with `make dist` (which builds "
                        + "the native library before Maven)");
            }
            try {
                Files.createDirectories(dir);
                file = Files.createTempFile(dir, "libkbackup_jni-", ".so");
            } catch (IOException e) {
                throw new KbackupException("could not create a temp file for the kbackup native library in " + dir
                        + " (" + e + "): make that directory writable, or choose another one with -D"
                        + TMPDIR_PROPERTY + "=/path in KAFKA_OPTS or the " + TMPDIR_ENV + " environment variable", e);
            }
            try {
                Files.copy(in, file, StandardCopyOption.REPLACE_EXISTING);
                System.load(file.toAbsolutePath().toString());
            } catch (UnsatisfiedLinkError e) {
                throw new KbackupException("could not load the kbackup native library extracted to " + file + " ("
                        + e.getMessage() + "). If " + dir + " is mounted noexec (common for /tmp), choose an "
                        + "executable directory with -D" + TMPDIR_PROPERTY + "=/path in KAFKA_OPTS or the "
                        + TMPDIR_ENV + " environment variable of the worker"
                        + HostPlatform.loadFailureHint(HostPlatform.SYSTEM), e);
            } finally {
                // The loaded mapping stays valid after unlinking; nothing is left behind.
                Files.deleteIfExists(file);
            }
        }
    }
}
