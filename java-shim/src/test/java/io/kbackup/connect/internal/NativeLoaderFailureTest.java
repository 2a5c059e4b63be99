package io.kbackup.connect.internal;

import io.kbackup.connect.KbackupException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Runs in its own JVM (surefire reuseForks=false): a failed load is remembered for the life of
 * the class loader, so it must not share one with the tests that need the library.
 */
class NativeLoaderFailureTest {
    @TempDir
    Path tmp;

    @Test
    void unusableExtractDirIsNamedWithTheOverrideAndTheFailureIsRemembered() throws Exception {
        Path notADir = Files.writeString(tmp.resolve("file"), "x");
        String before = System.getProperty(NativeLoader.TMPDIR_PROPERTY);
        System.setProperty(NativeLoader.TMPDIR_PROPERTY, notADir.resolve("sub").toString());
        try {
            KbackupException first = assertThrows(KbackupException.class, NativeLoader::load);
            assertTrue(first.getMessage().contains(notADir.resolve("sub").toString()), first.getMessage());
            assertTrue(first.getMessage().contains(NativeLoader.TMPDIR_PROPERTY), first.getMessage());
            assertTrue(first.getMessage().contains(NativeLoader.TMPDIR_ENV), first.getMessage());

            // Even with a good directory now, the remembered failure is re-thrown, not retried.
            System.setProperty(NativeLoader.TMPDIR_PROPERTY, tmp.toString());
            KbackupException again = assertThrows(KbackupException.class, Native::ensureLoaded);
            assertEquals(first.getMessage(), again.getMessage());
        } finally {
            if (before == null) {
                System.clearProperty(NativeLoader.TMPDIR_PROPERTY);
            } else {
                System.setProperty(NativeLoader.TMPDIR_PROPERTY, before);
            }
        }
    }

    @Test
    void extractDirPrefersThePropertyOverTheDefault() {
        String before = System.getProperty(NativeLoader.TMPDIR_PROPERTY);
        try {
            System.setProperty(NativeLoader.TMPDIR_PROPERTY, "/some/where");
            assertEquals(Path.of("/some/where"), NativeLoader.extractDir());
            System.clearProperty(NativeLoader.TMPDIR_PROPERTY);
            if (System.getenv(NativeLoader.TMPDIR_ENV) == null) {
                assertEquals(Path.of(System.getProperty("java.io.tmpdir")), NativeLoader.extractDir());
            }
        } finally {
            if (before != null) {
                System.setProperty(NativeLoader.TMPDIR_PROPERTY, before);
            }
        }
    }
}
