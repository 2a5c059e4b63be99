package io.kbackup.connect.bench;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Smoke test of `make bench-inprocess`: a tiny run of every case writes its JSON (seconds, not a measurement). */
class InProcessBenchTest {
    @TempDir
    Path tmp;

    @Test
    void inProcessBenchRunsEveryCaseAndWritesItsJson() throws Exception {
        Path out = tmp.resolve("result.json");
        InProcessBench.main(new String[] {"--dir", tmp.resolve("disk").toString(), "--tmpfs-dir",
                tmp.resolve("tmpfs").toString(), "--record-sizes", "1024", "--mib", "2", "--flush-mib", "1",
                "--warmup-mib", "1", "--partitions", "2", "--out", out.toString()});
        String json = new String(Files.readAllBytes(out), StandardCharsets.UTF_8);
        for (String key : List.of("\"encode_only\"", "\"disk_fdatasync\"", "\"tmpfs_write\"", "\"sink_disk_fsync\"",
                "\"sink_tmpfs\"", "\"source_disk\"", "\"ns_per_record\"", "\"load_at_end\"")) {
            assertTrue(json.contains(key), key + " missing from " + json);
        }
        // The source read back exactly what the sink wrote: 2 MiB of 1 KiB records.
        Map<String, Object> r = InProcessBench.run(tmp.resolve("d2"), null, List.of(1024), 1, 1, 1, 1);
        @SuppressWarnings("unchecked")
        Map<String, Object> size = (Map<String, Object>) ((Map<String, Object>) r.get("sizes")).get("1024");
        @SuppressWarnings("unchecked")
        Map<String, Object> source = (Map<String, Object>) size.get("source_disk");
        assertEquals(1024L, source.get("records"));
        assertEquals(1024L * 1024, source.get("value_bytes"));
    }
}
