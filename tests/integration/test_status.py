"""`kbackup status` tells a fresh backup from a stale one, against the live cluster.

The done-when of the freshness check: a backup whose sink connector was paused while writes
continued is reported stale (exit 5, with how many records and how old), and fresh again
(exit 0) once the connector caught up. Records are counted read_committed, so a log ending in
a transaction marker is caught up although its end offset is one past the last record.
"""

from __future__ import annotations

import json
import time

from conftest import sink_config, unique, wait_backup_complete

EXIT_STALE = 5


def status(kbackup, *args):
    proc = kbackup.run("status", *map(str, args), "--json", check=False)
    assert proc.returncode in (0, EXIT_STALE), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def behind(report) -> dict[int, int]:
    return {p["partition"]: p["behind"]["records"] for p in report["partitions"]}


def test_status_is_stale_while_the_sink_is_paused_and_fresh_once_it_caught_up(
        cluster, kbackup, workdir):
    topic = unique("status")
    cluster.kafka.create_topic(topic, 2)
    cluster.kafka.produce(topic, [{"partition": i % 2, "value": b"v%d" % i} for i in range(40)])
    # the log of partition 0 ends with a commit marker: caught up all the same
    cluster.kafka.produce_transaction(topic, [{"partition": 0, "value": b"tx%d" % i}
                                              for i in range(5)])
    name = unique("sink-status")
    target = workdir / "backup"
    cluster.connect.create_connector(name, sink_config(topic, target, cluster.bootstrap))
    try:
        cluster.connect.wait_for_task_state(name, "RUNNING")
        wait_backup_complete(kbackup, target, topic, {0: 25, 1: 20})
        base = ("--bootstrap-server", cluster.bootstrap, "--max-lag-records", 0)
        rc, report = status(kbackup, target, *base)
        assert rc == 0 and report["fresh"], report["problems"]
        assert behind(report) == {0: 0, 1: 0}
        high0 = cluster.kafka.watermarks(topic, 0)[1]
        assert report["partitions"][0]["backup"]["next_offset"] < high0, "no marker at the end?"

        cluster.connect.pause(name)
        cluster.connect.wait_for_task_state(name, "PAUSED")
        time.sleep(2)  # a put already in flight lands before the pause takes hold
        start_ms = int(time.time() * 1000)
        cluster.kafka.produce(topic, [{"partition": i % 2, "value": b"late%d" % i}
                                      for i in range(30)])
        rc, report = status(kbackup, target, *base)
        assert rc == EXIT_STALE and not report["fresh"]
        assert behind(report) == {0: 15, 1: 15}
        for p in report["partitions"]:
            assert p["behind"]["exact"] and p["behind"]["oldest_missing_timestamp_ms"] >= start_ms - 1000
        assert any("--max-lag-records" in m for m in report["problems"]), report["problems"]
        # a generous threshold passes; the text form names the reason
        rc, _ = status(kbackup, target, "--bootstrap-server", cluster.bootstrap,
                       "--max-lag-records", 100)
        assert rc == 0
        text = kbackup.run("status", target, *map(str, base), check=False)
        assert text.returncode == EXIT_STALE and "STALE:" in text.stdout, text.stdout

        cluster.connect.resume(name)
        wait_backup_complete(kbackup, target, topic, {0: 40, 1: 35})
        rc, report = status(kbackup, target, *base)
        assert rc == 0 and behind(report) == {0: 0, 1: 0}, report
    finally:
        cluster.connect.delete_connector(name)


def test_status_without_a_cluster_and_with_missing_topics_or_partitions(cluster, kbackup, workdir):
    topic = unique("status-files")
    cluster.kafka.create_topic(topic, 1)
    cluster.kafka.produce(topic, [{"partition": 0, "value": b"x%d" % i} for i in range(5)])
    target = workdir / "backup"
    kbackup.run("backup", "--bootstrap-server", cluster.bootstrap, "--dir", target,
                "--topics", topic, "-q")
    rc, report = status(kbackup, target)
    assert rc == 0 and report["partitions"][0]["behind"] is None
    assert report["partitions"][0]["backup"]["next_offset"] == 5
    rc, report = status(kbackup, target, "--max-lag-time", "1ms")
    assert rc == EXIT_STALE and "newest backed-up record" in report["problems"][0]
    rc, report = status(kbackup, target, "--topics", f"{topic},never-backed-up")
    assert rc == EXIT_STALE and report["topics_not_backed_up"] == ["never-backed-up"]
    # a partition added on the cluster after the backup is not in it
    from confluent_kafka.admin import NewPartitions
    admin = cluster.kafka.admin()
    for f in admin.create_partitions([NewPartitions(topic, 2)]).values():
        f.result(30)
    rc, report = status(kbackup, target, "--bootstrap-server", cluster.bootstrap)
    assert rc == EXIT_STALE
    assert any("not in the backup" in m for m in report["problems"]), report["problems"]
