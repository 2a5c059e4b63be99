package io.kbackup.connect.internal;

import io.kbackup.connect.BackupSinkConfig;
import io.kbackup.connect.BackupSourceConfig;
import org.apache.kafka.common.config.ConfigDef;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

/**
 * Generates docs/config-sink.md and docs/config-source.md from the ConfigDefs, so the reference
 * cannot drift from the code. ConfigDocsTest fails when the committed files differ and rewrites
 * them when run with {@code -Dkbackup.docs.write=true}.
 */
public final class ConfigDocs {
    private ConfigDocs() {
    }

    public static void main(String[] args) {
        System.out.print(args.length > 0 && args[0].equals("source") ? source() : sink());
    }

    /** docs/config-sink.md */
    public static String sink() {
        StringBuilder sb = new StringBuilder();
        sb.append("# Backup sink connector configuration\n\n")
          .append("`connector.class`: `io.kbackup.connect.BackupSinkConnector`\n\n")
          .append(generatedNote())
          .append("Besides the keys below, choose the topics with Connect's own `topics` (a list) or ")
          .append("`topics.regex`, and set these Connect keys, which `validate()` requires:\n\n")
          .append("| key | required value | why |\n|---|---|---|\n")
          .append(converterRows("the backup stores every key, value and header byte for byte"))
          .append("| `consumer.override.isolation.level` | `read_committed` | Connect's consumer reads ")
          .append("uncommitted data by default; a backup must not contain records of aborted transactions ")
          .append("(the worker's `connector.client.config.override.policy` must allow the override; the ")
          .append("default, `All`, does) |\n\n")
          .append(clusterKeys("consumer.override.*"))
          .append("`target.dir` is checked (created if missing, then a probe file written and deleted) on the ")
          .append("worker that answers the validate request; every worker that may run a task must reach it.\n\n")
          .append("`validate()` also connects to `cluster.bootstrap.servers` (with kbackup's own client ")
          .append("settings, 10 s at most): a cluster that does not answer, failed authentication (on the key ")
          .append("holding the credentials or store), or a topic listed in `topics` that does not exist there or ")
          .append("may not be described, is an error naming it. Use `topics.regex` for topics created later.\n\n")
          .append("Group-offset capture that keeps failing fails the task with the cause (refused credentials ")
          .append("or ACLs after ten capture intervals, at least 60 s; an unreachable cluster after ten times ")
          .append("that): a RUNNING task is one whose group positions are being backed up.\n\n")
          .append("## Example\n\n```json\n")
          .append("{\n  \"name\": \"backup-orders\",\n  \"config\": {\n")
          .append("    \"connector.class\": \"io.kbackup.connect.BackupSinkConnector\",\n")
          .append("    \"tasks.max\": \"3\",\n    \"topics\": \"orders,payments\",\n")
          .append("    \"target.dir\": \"/backups/prod\",\n")
          .append("    \"cluster.bootstrap.servers\": \"broker1:9092\",\n")
          .append("    \"key.converter\": \"").append(ConfigChecks.BYTE_ARRAY_CONVERTER).append("\",\n")
          .append("    \"value.converter\": \"").append(ConfigChecks.BYTE_ARRAY_CONVERTER).append("\",\n")
          .append("    \"header.converter\": \"").append(ConfigChecks.BYTE_ARRAY_CONVERTER).append("\",\n")
          .append("    \"consumer.override.isolation.level\": \"read_committed\"\n  }\n}\n```\n\n")
          .append("## Keys\n\n")
          .append(table(BackupSinkConfig.CONFIG_DEF));
        return sb.toString();
    }

    private static String clusterKeys(String fallback) {
        return "kbackup's own Kafka calls (topic manifests, group offsets, topic creation, group commits) use "
                + "Kafka's Java clients inside the worker, configured with Java client properties: the "
                + "connector's `" + fallback + "` settings, then `admin.override.*`, then `cluster.*` (prefix "
                + "removed), each winning over the one before. So credentials given once for the connector's own "
                + "client are enough, and anything the worker's clients accept works (`sasl.jaas.config`, JKS or "
                + "PKCS12 stores, OAuth/IAM callback handlers, Kerberos, `${file:...}` config providers). The "
                + "secret-bearing `cluster.*` keys below are PASSWORD-typed: Connect shows them as [hidden]. "
                + "docs/security.md lists the ACLs.\n\n";
    }

    /** docs/config-source.md */
    public static String source() {
        StringBuilder sb = new StringBuilder();
        sb.append("# Restore source connector configuration\n\n")
          .append("`connector.class`: `io.kbackup.connect.BackupSourceConnector`\n\n")
          .append(generatedNote())
          .append("`validate()` also requires these Connect keys:\n\n")
          .append("| key | required value | why |\n|---|---|---|\n")
          .append(converterRows("restored keys, values and headers are the original bytes"))
          .append("\n`validate()` checks that `source.dir` exists, that every listed topic is in the backup, and ")
          .append("that every target name (after `topics.rename`) is a valid Kafka topic name (1 to 249 ")
          .append("characters of letters, digits, `.`, `_`, `-`; not `.` or `..`), that a restore state in a ")
          .append("bucket (the default for a backup in one) can be written, plus what the core checks.\n\n")
          .append("Records keep their partition number, key, value, headers and timestamp. A SourceRecord ")
          .append("cannot carry a timestamp type: the original timestamp is written with type CreateTime ")
          .append("(the topic is held at CreateTime during the restore; a backed-up LogAppendTime setting is ")
          .append("applied when the restore finishes, see docs/restore.md).\n\n")
          .append(clusterKeys("producer.override.*"))
          .append("`validate()` connects to `cluster.bootstrap.servers` the same way and names the key of a ")
          .append("failed authentication. A group commit refused for good (ACLs) fails the task with the cause; ")
          .append("one failing with transient errors for 5 minutes does too. Restart the task after the fix: ")
          .append("the commit is retried.\n\n")
          .append("## Example\n\n```json\n")
          .append("{\n  \"name\": \"restore-orders\",\n  \"config\": {\n")
          .append("    \"connector.class\": \"io.kbackup.connect.BackupSourceConnector\",\n")
          .append("    \"tasks.max\": \"3\",\n    \"source.dir\": \"/backups/prod\",\n")
          .append("    \"topics\": \"orders,payments\",\n")
          .append("    \"topics.rename\": \"orders:orders-restored\",\n")
          .append("    \"cluster.bootstrap.servers\": \"newbroker1:9092\",\n")
          .append("    \"key.converter\": \"").append(ConfigChecks.BYTE_ARRAY_CONVERTER).append("\",\n")
          .append("    \"value.converter\": \"").append(ConfigChecks.BYTE_ARRAY_CONVERTER).append("\",\n")
          .append("    \"header.converter\": \"").append(ConfigChecks.BYTE_ARRAY_CONVERTER).append("\"\n  }\n}\n```\n\n")
          .append("## Keys\n\n")
          .append(table(BackupSourceConfig.CONFIG_DEF));
        return sb.toString();
    }

    private static String generatedNote() {
        return "<!-- Generated from the ConfigDef by io.kbackup.connect.internal.ConfigDocs; do not edit by hand.\n"
                + "     Regenerate: mvn -q -B -f java-shim/pom.xml test -Dtest=ConfigDocsTest -Dkbackup.docs.write=true -->\n\n";
    }

    private static String converterRows(String why) {
        StringBuilder sb = new StringBuilder();
        for (String k : ConfigChecks.CONVERTER_KEYS) {
            sb.append("| `").append(k).append("` | `").append(ConfigChecks.BYTE_ARRAY_CONVERTER).append("` | ")
              .append(why).append(" |\n");
        }
        return sb.toString();
    }

    private static String table(ConfigDef def) {
        StringBuilder sb = new StringBuilder();
        sb.append("| key | type | default | valid values | importance | description |\n")
          .append("|---|---|---|---|---|---|\n");
        // Required keys first, then by importance, then by name (ConfigDef's own doc order).
        List<ConfigDef.ConfigKey> keys = new ArrayList<>(def.configKeys().values());
        keys.sort(Comparator.comparing((ConfigDef.ConfigKey k) -> k.hasDefault())
                .thenComparing(k -> k.importance)
                .thenComparing(k -> k.name));
        for (ConfigDef.ConfigKey k : keys) {
            String dflt;
            if (!k.hasDefault()) {
                dflt = "required";
            } else if (k.defaultValue == null || k.defaultValue.toString().isEmpty()) {
                dflt = "\"\"";
            } else {
                dflt = "`" + ConfigDef.convertToString(k.defaultValue, k.type) + "`";
            }
            sb.append("| `").append(k.name).append("` | ").append(k.type.toString().toLowerCase())
              .append(" | ").append(dflt)
              .append(" | ").append(k.validator == null ? "" : k.validator.toString().replace("|", "\\|"))
              .append(" | ").append(k.importance.toString().toLowerCase())
              .append(" | ").append(k.documentation.replace("|", "\\|")).append(" |\n");
        }
        return sb.toString();
    }
}
