package io.kbackup.connect.internal;

import org.junit.jupiter.api.Test;

import java.util.Arrays;
import java.util.HashSet;
import java.util.Set;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The musl and platform checks, against hosts played by a fake probe. */
class HostPlatformTest {
    private static final String GLIBC_MAPS =
            "7f00-7f01 r-xp 00000000 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
            + "7f02-7f03 r-xp 00000000 08:01 2 /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2\n";
    private static final String MUSL_MAPS =
            "7f00-7f01 r-xp 00000000 08:01 1 /lib/ld-musl-x86_64.so.1\n"
            + "7f02-7f03 r-xp 00000000 08:01 2 /opt/java/openjdk/lib/server/libjvm.so\n";

    private static HostPlatform.Probe host(String os, String arch, String maps, String... files) {
        Set<String> present = new HashSet<>(Arrays.asList(files));
        return new HostPlatform.Probe() {
            @Override
            public String osName() {
                return os;
            }

            @Override
            public String osArch() {
                return arch;
            }

            @Override
            public String processMaps() {
                return maps;
            }

            @Override
            public boolean exists(String path) {
                return present.contains(path);
            }
        };
    }

    @Test
    void glibcHostIsFine() {
        assertNull(HostPlatform.problem(host("Linux", "amd64", GLIBC_MAPS, "/lib64/ld-linux-x86-64.so.2")));
    }

    @Test
    void glibcHostWithMuslInstalledBesideItIsFine() {
        // Debian's musl package installs musl's loader next to glibc's; the JVM still runs on glibc.
        assertNull(HostPlatform.problem(host("Linux", "amd64", GLIBC_MAPS,
                "/lib64/ld-linux-x86-64.so.2", "/lib/ld-musl-x86_64.so.1")));
        assertNull(HostPlatform.problem(host("Linux", "amd64", "",
                "/lib64/ld-linux-x86-64.so.2", "/lib/ld-musl-x86_64.so.1")));
    }

    @Test
    void muslJvmFailsWithOneLineSayingWhatToDo() {
        String problem = HostPlatform.problem(host("Linux", "amd64", MUSL_MAPS, "/lib/ld-musl-x86_64.so.1"));
        assertTrue(problem != null && problem.contains("musl"), String.valueOf(problem));
        assertTrue(problem.contains("gcompat"), problem);
        assertTrue(problem.contains("docker/Dockerfile"), problem);
        assertFalse(problem.contains("\n"), problem);
    }

    @Test
    void muslHostIsDetectedFromTheFilesWhenProcIsUnreadable() {
        assertTrue(HostPlatform.problem(host("Linux", "amd64", "", "/lib/ld-musl-x86_64.so.1")).contains("musl"));
    }

    @Test
    void muslJvmWithAGlibcCompatibilityLayerIsLetThroughAndAFailedLoadSaysWhy() {
        HostPlatform.Probe alpineWithGcompat = host("Linux", "amd64", MUSL_MAPS,
                "/lib/ld-musl-x86_64.so.1", "/lib/ld-linux-x86-64.so.2");
        assertNull(HostPlatform.problem(alpineWithGcompat));
        assertTrue(HostPlatform.loadFailureHint(alpineWithGcompat).contains("glibc-based"));
        assertEquals("", HostPlatform.loadFailureHint(host("Linux", "amd64", GLIBC_MAPS)));
    }

    @Test
    void otherSystemsAndCpusAreNamed() {
        String mac = HostPlatform.problem(host("Mac OS X", "aarch64", ""));
        assertTrue(mac.contains("Mac OS X/aarch64"), mac);
        String ppc = HostPlatform.problem(host("Linux", "ppc64le", GLIBC_MAPS));
        assertTrue(ppc.contains("ppc64le"), ppc);
    }

    @Test
    void platformDirectories() {
        assertEquals("linux-x86_64", HostPlatform.platform(host("Linux", "amd64", "")));
        assertEquals("linux-aarch64", HostPlatform.platform(host("Linux", "aarch64", "")));
        assertEquals(NativeLoader.RESOURCE, HostPlatform.resource("linux-x86_64"));
        // aarch64 passes the host check; the jar then says it has no library for it yet.
        assertNull(HostPlatform.problem(host("Linux", "aarch64", GLIBC_MAPS, "/lib/ld-linux-aarch64.so.1")));
    }

    @Test
    void theRealHostOfTheseTestsIsGlibc() {
        assertNull(HostPlatform.problem(HostPlatform.SYSTEM));
    }
}
