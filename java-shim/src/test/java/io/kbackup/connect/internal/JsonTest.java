package io.kbackup.connect.internal;

import io.kbackup.connect.KbackupException;
import org.junit.jupiter.api.Test;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

class JsonTest {
    @Test
    void writesAndParsesBack() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("s", "quote\" back\\ nl\n tab\t ctl\u0001 ü");
        m.put("n", 42L);
        m.put("neg", -7L);
        m.put("b", true);
        m.put("null", null);
        m.put("list", List.of("a", 1L));
        m.put("map", Map.of("k", "v"));
        byte[] json = Json.write(m);
        assertEquals(m, Json.parse(json));
        assertEquals("{\"a\":null,\"b\":[1,2]}",
                new String(Json.write(ordered("a", null, "b", Arrays.asList(1, 2))), StandardCharsets.UTF_8));
    }

    @Test
    void parsesWhitespaceEscapesAndDoubles() {
        Object v = Json.parse(" { \"x\" : [ 1.5 , \"\\u0041\\/\" , false ] } ".getBytes(StandardCharsets.UTF_8));
        assertEquals(Map.of("x", List.of(1.5, "A/", false)), v);
    }

    @Test
    void rejectsGarbageWithAClearError() {
        for (String bad : List.of("", "{", "{\"a\" 1}", "[1,]", "tru", "{} x", "\"\\q\"")) {
            KbackupException e = assertThrows(KbackupException.class,
                    () -> Json.parse(bad.getBytes(StandardCharsets.UTF_8)), bad);
            assertEquals(true, e.getMessage().contains("malformed JSON"), e.getMessage());
        }
    }

    private static Map<String, Object> ordered(Object... kv) {
        Map<String, Object> m = new LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) {
            m.put((String) kv[i], kv[i + 1]);
        }
        return m;
    }
}
