package io.kbackup.connect.internal;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.Locale;

/**
 * Which native library this JVM's host needs, and why a host cannot load the one we ship.
 *
 * <p>The library is built for glibc; on a musl host (Alpine, the official {@code apache/kafka}
 * image) {@link System#load} fails with an obscure "Error relocating ... symbol not found", so
 * the loader asks here first and fails with one line that says what to do. Everything the host
 * is asked goes through {@link Probe}, so tests can play any host.
 */
final class HostPlatform {
    /** What the checks read from the host. */
    interface Probe {
        String osName();

        String osArch();

        /** The JVM process's memory map (/proc/self/maps), or "" when it cannot be read. */
        String processMaps();

        boolean exists(String path);
    }

    /** The real host. */
    static final Probe SYSTEM = new Probe() {
        @Override
        public String osName() {
            return System.getProperty("os.name", "");
        }

        @Override
        public String osArch() {
            return System.getProperty("os.arch", "");
        }

        @Override
        public String processMaps() {
            try {
                return new String(Files.readAllBytes(Paths.get("/proc/self/maps")), StandardCharsets.ISO_8859_1);
            } catch (IOException | RuntimeException e) {
                return "";
            }
        }

        @Override
        public boolean exists(String path) {
            return Files.exists(Paths.get(path));
        }
    };

    static final String GLIBC_IMAGE_HINT = "use a glibc-based Connect image such as the one docker/Dockerfile builds";

    private HostPlatform() {
    }

    /** "linux-x86_64" or "linux-aarch64" (the jar's resource directory), or null for other CPUs. */
    static String platform(Probe probe) {
        String arch = probe.osArch().toLowerCase(Locale.ROOT);
        if (arch.equals("amd64") || arch.equals("x86_64")) {
            return "linux-x86_64";
        }
        if (arch.equals("aarch64") || arch.equals("arm64")) {
            return "linux-aarch64";
        }
        return null;
    }

    /** The glibc dynamic loader's path for the platform; a glibc compatibility layer provides it too. */
    static String[] glibcLoaders(String platform) {
        if ("linux-aarch64".equals(platform)) {
            return new String[] {"/lib/ld-linux-aarch64.so.1", "/lib64/ld-linux-aarch64.so.1"};
        }
        return new String[] {"/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-x86-64.so.2"};
    }

    /**
     * True when this JVM runs on musl libc: its own memory map shows musl's loader (the precise
     * answer), or, when /proc cannot be read, musl's loader is installed and glibc's is not.
     */
    static boolean runsOnMusl(Probe probe, String platform) {
        String maps = probe.processMaps();
        if (!maps.isEmpty()) {
            return maps.contains("/ld-musl-") || maps.contains("/libc.musl-");
        }
        String cpu = "linux-aarch64".equals(platform) ? "aarch64" : "x86_64";
        return probe.exists("/lib/ld-musl-" + cpu + ".so.1") && !hasGlibcLoader(probe, platform);
    }

    static boolean hasGlibcLoader(Probe probe, String platform) {
        for (String loader : glibcLoaders(platform)) {
            if (probe.exists(loader)) {
                return true;
            }
        }
        return false;
    }

    /**
     * Null when the shipped library can be tried on this host; otherwise the one line to show.
     * A musl JVM with a glibc compatibility layer installed is let through: the load decides.
     */
    static String problem(Probe probe) {
        String os = probe.osName().toLowerCase(Locale.ROOT);
        String platform = platform(probe);
        if (!os.contains("linux") || platform == null) {
            return "kbackup ships its native library for Linux x86_64 (glibc 2.17 or newer) only, but this JVM "
                    + "runs on " + probe.osName() + "/" + probe.osArch()
                    + ": run the Connect worker on Linux x86_64 (docs/install.md lists the supported hosts)";
        }
        if (runsOnMusl(probe, platform) && !hasGlibcLoader(probe, platform)) {
            return "kbackup's native library needs glibc, but this Connect worker runs on musl libc (Alpine, "
                    + "e.g. the apache/kafka image): install the glibc compatibility package (`apk add gcompat`) "
                    + "or " + GLIBC_IMAGE_HINT + " (docs/install.md)";
        }
        return null;
    }

    /** Extra words for a failed load on a musl host that has a compatibility layer. */
    static String loadFailureHint(Probe probe) {
        String platform = platform(probe);
        if (platform != null && runsOnMusl(probe, platform)) {
            return "; this worker runs on musl libc and the glibc compatibility layer did not suffice: "
                    + GLIBC_IMAGE_HINT;
        }
        return "";
    }

    /** For messages: the resource path of the library for a platform. */
    static String resource(String platform) {
        return "native/" + platform + "/libkbackup_jni.so";
    }
}
