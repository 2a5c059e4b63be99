package io.kbackup.connect.internal;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Own JVM (reuseForks=false): checks where the library is extracted and that nothing is left. */
class NativeLoaderTest {
    @TempDir
    Path tmp;

    @Test
    void extractsIntoTheOverrideDirLoadsOnceAndLeavesNothingBehind() throws Exception {
        System.setProperty(NativeLoader.TMPDIR_PROPERTY, tmp.resolve("native").toString());
        try {
            NativeLoader.load();
            NativeLoader.load(); // once per class loader: the second call is a no-op
            assertTrue(Native.version().contains("kbackup-core"));
            assertTrue(Files.isDirectory(tmp.resolve("native")), "the override directory was used");
            try (Stream<Path> left = Files.list(tmp.resolve("native"))) {
                assertEquals(0, left.count(), "the extracted file is deleted after loading");
            }
        } finally {
            System.clearProperty(NativeLoader.TMPDIR_PROPERTY);
        }
    }
}
