"""Least privilege on the Connect path (issue 14, item 5): a broker with StandardAuthorizer,
where the sink's principal `backup` and the source's principal `restore` hold EXACTLY the ACLs
docs/security.md lists, and nothing more. The worker's own clients run as a super user (its
internal topics are not kbackup's business); each connector gives its principal's credentials
once, in its client overrides. A backup with group capture and a restore with group commits
must work exactly; a missing ACL must fail with one error naming the permission, never a
RUNNING connector that silently skips something."""

from __future__ import annotations

import json
import uuid

import pytest

from conftest import failed_trace, sink_config, unique, wait_backup_complete
from fixtures import source_config, wait_captured, wait_committed, wait_restore_finished
from testbed.cluster import Cluster
from testbed.connect import validation_errors
from testbed.procs import wait_until
from testbed.security import Security, grant, prefixed

SINK = "io.kbackup.connect.BackupSinkConnector"


@pytest.fixture(scope="module")
def locked(tmp_path_factory, plugin_dir):
    sec = Security(tmp_path_factory.mktemp("pki-acl"), acls=True,
                   users={"backup": "bk-" + uuid.uuid4().hex[:12],
                          "restore": "rs-" + uuid.uuid4().hex[:12]})
    c = Cluster("acl-connect", plugin_path=plugin_dir, security=sec)
    try:
        c.start()
        yield c, sec
    finally:
        c.cleanup()


def creds(sec: Security, user: str) -> dict[str, str]:
    return {k: v for k, v in sec.java_sasl(user).items()}


def backup_acls(c: Cluster, topic: str, sink: str, group: str) -> None:
    """docs/security.md, "Backup (sink connector)"."""
    grant(c.bootstrap, "User:backup", "TOPIC", topic, ["READ", "DESCRIBE_CONFIGS"])
    grant(c.bootstrap, "User:backup", "GROUP", f"connect-{sink}", ["READ"])
    grant(c.bootstrap, "User:backup", "GROUP", group, ["DESCRIBE"])


def restore_acls(c: Cluster, target: str, group: str, skip: tuple[str, str] = ("", "")) -> None:
    """docs/security.md, "Restore (source connector)"; `skip` leaves one (resource, op) out."""
    topic_ops = [op for op in ["CREATE", "WRITE", "READ", "DESCRIBE", "DESCRIBE_CONFIGS",
                               "ALTER_CONFIGS"] if ("TOPIC", op) != skip]
    group_ops = [op for op in ["READ", "DESCRIBE"] if ("GROUP", op) != skip]
    grant(c.bootstrap, "User:restore", "TOPIC", target, topic_ops)
    grant(c.bootstrap, "User:restore", "GROUP", group, group_ops)


def backed_up(c: Cluster, sec: Security, kbackup, tmp_path, label: str):
    """Backs up a 2-partition topic and one group with exactly the backup ACLs."""
    topic, group = unique(f"acl-{label}"), unique(f"acl-{label}-g")
    c.kafka.create_topic(topic, 2, config={"retention.ms": "86400000"})
    c.kafka.produce(topic, [{"partition": i % 2, "key": b"k%d" % i, "value": b"v%d" % i}
                            for i in range(20)])
    positions = {(topic, 0): 7, (topic, 1): 3}
    c.kafka.commit_group_offsets(group, positions)
    sink = unique(f"acl-sink-{label}")
    backup_acls(c, topic, sink, group)
    backup = tmp_path / "backup"
    cfg = sink_config(topic, backup, sec.sasl_bootstrap,
                      **prefixed("consumer.override.", creds(sec, "backup")))
    c.connect.create_connector(sink, cfg)
    wait_backup_complete(kbackup, backup, topic, {0: 10, 1: 10})

    wait_captured(kbackup, backup, group, positions)
    manifest = json.loads((backup / "topics" / topic / "topic.json").read_text())
    assert manifest["described"] and manifest["configs"].get("retention.ms") == "86400000", manifest
    c.connect.delete_connector(sink)
    c.connect.wait_deleted(sink)
    return topic, group, backup


def restore_config(sec: Security, topic: str, target: str, backup):
    cfg = source_config(topic, backup, sec.sasl_bootstrap, **{"topics.rename": f"{topic}:{target}"},
                        **prefixed("producer.override.", creds(sec, "restore")))
    return cfg


def test_backup_and_restore_work_with_exactly_the_documented_acls(locked, kbackup, tmp_path):
    c, sec = locked
    topic, group, backup = backed_up(c, sec, kbackup, tmp_path, "ok")
    target = topic + "-r"
    restore_acls(c, target, group)
    source = unique("acl-src-ok")
    c.connect.create_connector(source, restore_config(sec, topic, target, backup))
    wait_restore_finished(kbackup, backup, c.connect, source, [(topic, 0), (topic, 1)])
    for p in (0, 1):
        assert ([(r.key, r.value) for r in c.kafka.consume_partition(target, p)]
                == [(r.key, r.value) for r in c.kafka.consume_partition(topic, p)])
    wait_committed(c.kafka, group, {(target, 0): 7, (target, 1): 3})
    # The held retention came off once the topic finished (ALTER_CONFIGS).
    wait_until(lambda: c.kafka.topic_config(target).get("retention.ms") == "86400000", 60,
               "backed-up retention.ms applied to the restored topic")
    c.connect.delete_connector(source)


def test_a_sink_without_describe_configs_is_refused_at_validate_naming_the_acl(
        locked, tmp_path):
    c, sec = locked
    topic = unique("acl-nodc")
    c.kafka.create_topic(topic, 1)
    grant(c.bootstrap, "User:backup", "TOPIC", topic, ["READ"])
    cfg = sink_config(topic, tmp_path / "b", sec.sasl_bootstrap,
                      **prefixed("consumer.override.", creds(sec, "backup")))
    errs = validation_errors(c.connect.validate(SINK, cfg))
    msgs = " ".join(m for ms in errs.values() for m in ms)
    assert "DESCRIBE_CONFIGS" in msgs and "docs/security.md" in msgs, errs


@pytest.mark.parametrize("missing", [("GROUP", "READ"), ("TOPIC", "ALTER_CONFIGS")])
def test_a_restore_missing_one_acl_fails_the_task_naming_it(locked, kbackup, tmp_path, missing):
    c, sec = locked
    label = "no-" + "-".join(missing).lower().replace("_", "")
    topic, group, backup = backed_up(c, sec, kbackup, tmp_path, label)
    target = topic + "-r"
    restore_acls(c, target, group, skip=missing)
    source = unique(f"acl-src-{label}")
    c.connect.create_connector(source, restore_config(sec, topic, target, backup))
    trace = failed_trace(c.connect, source, timeout=120)
    assert "docs/security.md" in trace or "grant the principal" in trace, trace[:3000]
    word = {"READ": "group", "ALTER_CONFIGS": "config"}[missing[1]]
    assert word in trace.lower(), trace[:3000]
    # The data itself was restored before the failure.
    for p in (0, 1):
        assert len(c.kafka.consume_partition(target, p)) == 10
    c.connect.delete_connector(source)
