package io.kbackup.connect.internal;

import java.util.Map;
import java.util.TreeMap;
import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.common.config.ConfigDef.Importance;
import org.apache.kafka.common.config.ConfigDef.Type;

/**
 * The {@code storage.*} keys of both connectors: how to reach a backup in object storage. Each one left unset
 * falls back to the store's standard environment variable on the worker. Their values go to the core as given
 * (it parses and checks them, docs/storage.md); secrets are password-type keys, so Connect never shows them.
 */
public final class StorageSettings {
    public static final String PREFIX = "storage.";

    private StorageSettings() {
    }

    /** Defines the keys in {@code def} (both connectors define the same ones). */
    public static ConfigDef define(ConfigDef def) {
        return def
                .define("storage.region", Type.STRING, null, Importance.MEDIUM,
                        "Region of the bucket (an object-store target.dir/source.dir). Default: AWS_REGION on the "
                                + "worker, else us-east-1.")
                .define("storage.endpoint", Type.STRING, null, Importance.MEDIUM,
                        "Endpoint of an S3-compatible server, e.g. http://minio:9000. Default: AWS_ENDPOINT_URL on "
                                + "the worker, else AWS S3.")
                .define("storage.virtual.hosted.style", Type.BOOLEAN, null, Importance.LOW,
                        "true: bucket.host requests; default: path-style (host/bucket), what S3-compatible servers "
                                + "expect.")
                .define("storage.allow.http", Type.BOOLEAN, null, Importance.LOW,
                        "true: allow a plain http:// endpoint. Default: AWS_ALLOW_HTTP on the worker, else false.")
                .define("storage.access.key.id", Type.STRING, null, Importance.MEDIUM,
                        "Access key id. Default: AWS_ACCESS_KEY_ID on the worker, then the provider chain (web "
                                + "identity, container or instance credentials).")
                .define("storage.secret.access.key", Type.PASSWORD, null, Importance.MEDIUM,
                        "Secret access key (never shown). Default: AWS_SECRET_ACCESS_KEY on the worker.")
                .define("storage.session.token", Type.PASSWORD, null, Importance.LOW,
                        "Session token of temporary credentials (never shown). Default: AWS_SESSION_TOKEN.")
                .define("storage.part.size.bytes", Type.LONG, null, Importance.LOW,
                        "Part size of streamed uploads, at least 5 MiB (default 8 MiB): a task holds up to one part "
                                + "per partition it writes.")
                .define("storage.options", Type.PASSWORD, null, Importance.LOW,
                        "Further object_store settings as key=value,key=value (e.g. aws_sse_kms_key_id, "
                                + "google_service_account_key, azure_storage_account_name, azure_storage_account_key); "
                                + "never shown.");
    }

    /** The {@code storage.*} entries of a connector's raw properties. */
    public static Map<String, String> of(Map<String, String> props) {
        Map<String, String> out = new TreeMap<>();
        for (Map.Entry<String, String> e : props.entrySet()) {
            if (e.getKey().startsWith(PREFIX) && e.getValue() != null) {
                out.put(e.getKey(), e.getValue());
            }
        }
        return out;
    }

    /** {@link #of} as the JSON object of strings the core reads. */
    public static byte[] json(Map<String, String> props) {
        return Json.write(of(props));
    }
}
