"""One small backup-and-restore through a Connect worker, for the tests that ask "does the plugin
work HERE" (a worker without OpenSSL, an installed Confluent Hub archive, older and newer
Connect versions) rather than how well it works.

The sink backs up a 2-partition topic of every record shape (tests/integration/fixtures.py);
the source restores it under a new name on the same broker; what a confluent-kafka consumer
reads back must equal the original field by field, and `kbackup cat` must list the same count.
"""

from __future__ import annotations

from pathlib import Path

from conftest import Kbackup, sink_config, unique, wait_backup_complete
from fixtures import assert_restored_equal, fixture_records, source_config, wait_restore_finished
from testbed.cluster import Cluster

PARTITIONS = 2


def backup_and_restore(cluster: Cluster, kb: Kbackup, directory: Path, label: str) -> dict:
    """Runs the sink then the source on `cluster`'s worker; returns counts for reports."""
    topic = unique(label)
    cluster.kafka.create_topic(topic, partitions=PARTITIONS)
    for p in range(PARTITIONS):
        cluster.kafka.produce(topic, fixture_records(p, big=False))
    original = cluster.kafka.consume_topic(topic)
    expected = {p: len(original[p]) for p in range(PARTITIONS)}

    sink = unique(f"{label}-sink")
    cluster.connect.create_connector(sink, sink_config(topic, directory, cluster.bootstrap))
    # a plugin that cannot load its native library fails here at once, with the task's trace
    cluster.connect.wait_for_task_state(sink, "RUNNING", timeout=90)
    wait_backup_complete(kb, directory, topic, expected)
    cluster.connect.delete_connector(sink)
    cluster.connect.wait_deleted(sink)

    restored = unique(f"{label}-restored")
    source = unique(f"{label}-source")
    cluster.connect.create_connector(source, source_config(
        topic, directory, cluster.bootstrap, **{"topics.rename": f"{topic}:{restored}"}))
    wait_restore_finished(kb, directory, cluster.connect, source,
                          [(topic, p) for p in range(PARTITIONS)])
    for p in range(PARTITIONS):
        assert_restored_equal(cluster.kafka.consume_partition(restored, p),
                              [r for r in original[p]], f"{restored}/{p}")
    cluster.connect.delete_connector(source)
    return {"topic": topic, "records": sum(expected.values())}
