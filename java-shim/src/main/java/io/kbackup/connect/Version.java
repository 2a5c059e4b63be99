package io.kbackup.connect;

import java.io.IOException;
import java.io.InputStream;
import java.util.Properties;

/** The plugin version, from the jar (Maven fills it in), without loading the native library. */
final class Version {
    private static final String VERSION = load();

    private Version() {
    }

    static String get() {
        return VERSION;
    }

    private static String load() {
        try (InputStream in = Version.class.getClassLoader().getResourceAsStream("kbackup-connect.properties")) {
            if (in != null) {
                Properties p = new Properties();
                p.load(in);
                return p.getProperty("version", "unknown");
            }
        } catch (IOException e) {
            // Fall through: the version is informational only.
        }
        return "unknown";
    }
}
