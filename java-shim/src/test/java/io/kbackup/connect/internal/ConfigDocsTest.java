package io.kbackup.connect.internal;

import org.junit.jupiter.api.Test;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** docs/config-*.md must match the ConfigDefs; -Dkbackup.docs.write=true regenerates them. */
class ConfigDocsTest {
    private static final Path DOCS = Path.of(System.getProperty("user.dir")).resolve("../docs").normalize();

    private static void check(String file, String generated) throws Exception {
        Path p = DOCS.resolve(file);
        if (Boolean.getBoolean("kbackup.docs.write")) {
            Files.writeString(p, generated, StandardCharsets.UTF_8);
        }
        assertTrue(Files.exists(p), p + " is missing: " + regenerate());
        assertEquals(generated, Files.readString(p, StandardCharsets.UTF_8), p + " is out of date: " + regenerate());
    }

    private static String regenerate() {
        return "run mvn -q -B -f java-shim/pom.xml test -Dtest=ConfigDocsTest -Dkbackup.docs.write=true";
    }

    @Test
    void sinkReferenceIsUpToDate() throws Exception {
        String md = ConfigDocs.sink();
        assertTrue(md.contains("`target.dir`") && md.contains("consumer.override.isolation.level"));
        check("config-sink.md", md);
    }

    @Test
    void sourceReferenceIsUpToDate() throws Exception {
        String md = ConfigDocs.source();
        assertTrue(md.contains("`source.dir`") && md.contains("`topics.rename`"));
        check("config-source.md", md);
    }
}
