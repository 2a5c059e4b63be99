"""Least privilege for the CLI (issue 14, item 5): a broker with StandardAuthorizer, a SCRAM
principal granted EXACTLY the ACLs docs/security.md lists, and nothing more, runs a backup with
--group-offsets and a restore with groups, exactly. Then each documented ACL is taken away in
turn (a fresh principal holding all the others): the command fails promptly with ONE error line
naming the ACL and the fix, never a hang and never a success with data silently missing. The
one case Kafka makes silent (a principal sees only the groups it may DESCRIBE) must warn."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import ConfigResource

from conftest import unique
from testbed.cluster import Cluster
from testbed.security import Security, grant

# (resource type, name, operation, pattern): the ACLs docs/security.md documents. $T is the
# backed-up topic, $R the restore's target topic, $G the consumer group.
BACKUP_ACLS = [
    ("TOPIC", "$T", "READ", "LITERAL"),
    ("TOPIC", "$T", "DESCRIBE_CONFIGS", "LITERAL"),
    ("GROUP", "kbackup-cli-backup", "DESCRIBE", "LITERAL"),
    ("GROUP", "$G", "DESCRIBE", "LITERAL"),
]
RESTORE_ACLS = [
    ("TOPIC", "$R", "CREATE", "LITERAL"),
    ("TOPIC", "$R", "WRITE", "LITERAL"),
    ("TOPIC", "$R", "READ", "LITERAL"),
    ("TOPIC", "$R", "ALTER_CONFIGS", "LITERAL"),
    ("TRANSACTIONAL_ID", "kbackup-restore-", "WRITE", "PREFIXED"),
    ("GROUP", "$G", "READ", "LITERAL"),
]
# what the single error line must name when an ACL is missing (besides "grant")
BACKUP_MISSING = {0: "READ", 1: "DESCRIBE_CONFIGS", 2: "kbackup-cli-backup"}
RESTORE_MISSING = {0: "CREATE", 1: "WRITE", 2: "READ", 3: "ALTER_CONFIGS",
                   4: "transactional id", 5: "READ on group"}
RETENTION = "604800000"
CASES = 1 + len(BACKUP_ACLS) + len(RESTORE_ACLS) + 1


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    users = {f"p{i}": "lp-" + uuid.uuid4().hex[:12] for i in range(CASES)}
    sec = Security(tmp_path_factory.mktemp("pki"), users=users, acls=True)
    c = Cluster("least-privilege", security=sec, with_worker=False)
    try:
        c.start()
        yield c, sec, iter(users)
    finally:
        c.cleanup()


@pytest.fixture(scope="module")
def source(bed):
    """The source topic (with a non-default config, so configs must be described and restored)
    and a group positioned on it."""
    c, _, _ = bed
    topic, group = unique("lp"), unique("lp-group")
    c.kafka.create_topic(topic, 2, config={"retention.ms": RETENTION})
    c.kafka.produce(topic, [{"partition": i % 2, "key": b"k%d" % i, "value": b"v%d" % i}
                            for i in range(40)])
    c.kafka.commit_group_offsets(group, {(topic, 0): 10, (topic, 1): 4})
    return topic, group


def principal(bed, acls, names: dict[str, str], skip: int = -1) -> Path:
    """A fresh SCRAM principal holding `acls` except the one at index `skip`; returns its
    librdkafka --config-file."""
    c, sec, users = bed
    user = next(users)
    for i, (res, name, op, pattern) in enumerate(acls):
        if i != skip:
            for k, v in names.items():
                name = name.replace(k, v)
            grant(c.bootstrap, f"User:{user}", res, name, [op], pattern)
    props = c.root / f"{user}.properties"
    props.write_text("".join(f"{k}={v}\n" for k, v in sec.librdkafka_sasl(user).items()
                             if k != "bootstrap.servers"))
    time.sleep(1.5)  # the ACLs reach the broker through the metadata log
    return props


def backup(kbackup, sec, props, topic, d, check=True):
    return kbackup.run("backup", "--bootstrap-server", sec.sasl_bootstrap, "--config-file", props,
                       "--dir", d, "--topics", topic, "--group-offsets", check=check, timeout=60)


def restore(kbackup, sec, props, topic, target, d, check=True):
    return kbackup.run("restore", "--bootstrap-server", sec.sasl_bootstrap, "--config-file", props,
                       "--dir", d, "--topics", topic, "--rename", f"{topic}:{target}",
                       "--group-offsets", check=check, timeout=90)


def one_error(proc, *must_name: str) -> str:
    """The failing command's single error line, which must name the ACL and say to grant it."""
    assert proc.returncode != 0, f"succeeded without the ACL:\n{proc.stderr}"
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("kbackup: error:")]
    assert len(errors) == 1, proc.stderr
    assert "panicked" not in proc.stderr, proc.stderr
    line = errors[0]
    for s in ("grant", *must_name):
        assert s in line, f"{s!r} not in the error: {line}"
    return line


@pytest.fixture(scope="module")
def full_backup(bed, source, kbackup, tmp_path_factory):
    """A backup by a principal holding exactly BACKUP_ACLS."""
    c, sec, _ = bed
    topic, group = source
    props = principal(bed, BACKUP_ACLS, {"$T": topic, "$G": group})
    d = tmp_path_factory.mktemp("lp") / "backup"
    started = time.time()
    out = backup(kbackup, sec, props, topic, d)
    return d, started, out


def test_backup_and_restore_work_with_exactly_the_documented_acls(bed, source, kbackup,
                                                                   full_backup):
    c, sec, _ = bed
    topic, group = source
    d, started, out = full_backup
    assert "WARN" not in out.stderr and "error" not in out.stderr, out.stderr
    # `kbackup offsets` shows when each group was captured (table and --json)
    doc = json.loads(kbackup.run("offsets", d, "--json").stdout)["offsets"]
    assert {(r["group"], r["partition"], r["committed_offset"]) for r in doc} == {
        (group, 0, 10), (group, 1, 4)}
    assert all(started * 1000 - 5000 <= r["capture_time_ms"] <= time.time() * 1000 for r in doc)
    table = kbackup.run("offsets", d).stdout
    assert "CAPTURED (UTC)" in table and doc[0]["capture_time"] in table
    manifest = json.loads((d / "topics" / topic / "topic.json").read_text())
    assert manifest["described"] and manifest["configs"].get("retention.ms") == RETENTION

    target = topic + "-r"
    props = principal(bed, RESTORE_ACLS, {"$R": target, "$G": group})
    restore(kbackup, sec, props, topic, target, d)
    for p in (0, 1):
        assert ([(r.key, r.value) for r in c.kafka.consume_partition(target, p)]
                == [(r.key, r.value) for r in c.kafka.consume_partition(topic, p)])
    got = c.kafka.group_offsets(group)
    assert (got[(target, 0)], got[(target, 1)]) == (10, 4)
    # the held retention was lifted to the backed-up value
    admin = c.kafka.admin()
    res = admin.describe_configs([ConfigResource("TOPIC", target)])
    assert list(res.values())[0].result(timeout=30)["retention.ms"].value == RETENTION


@pytest.mark.parametrize("missing", sorted(BACKUP_MISSING), ids=lambda i: BACKUP_ACLS[i][2] + "-"
                         + BACKUP_ACLS[i][1].strip("$"))
def test_backup_without_a_documented_acl_fails_with_one_error_naming_it(bed, source, kbackup,
                                                                       tmp_path, missing):
    _, sec, _ = bed
    topic, group = source
    props = principal(bed, BACKUP_ACLS, {"$T": topic, "$G": group}, skip=missing)
    t = time.monotonic()
    proc = backup(kbackup, sec, props, topic, tmp_path / "b", check=False)
    assert time.monotonic() - t < 45, "no hang"
    one_error(proc, BACKUP_MISSING[missing], topic if missing < 2 else "kbackup-cli-backup")


def test_group_capture_without_group_describe_is_a_loud_warning_not_silence(bed, source, kbackup,
                                                                           tmp_path):
    """Kafka lists to a principal only the groups it may DESCRIBE: the group is invisible, not
    an error, so the backup succeeds without it and must say so."""
    _, sec, _ = bed
    topic, group = source
    props = principal(bed, BACKUP_ACLS, {"$T": topic, "$G": group}, skip=3)
    proc = backup(kbackup, sec, props, topic, tmp_path / "b")
    assert "no consumer-group offsets" in proc.stderr and "DESCRIBE" in proc.stderr, proc.stderr
    assert group not in kbackup.run("offsets", tmp_path / "b").stdout


@pytest.mark.parametrize("missing", sorted(RESTORE_MISSING), ids=lambda i: RESTORE_ACLS[i][2] + "-"
                         + RESTORE_ACLS[i][0].lower())
def test_restore_without_a_documented_acl_fails_with_one_error_naming_it(bed, source, kbackup,
                                                                        full_backup, missing):
    c, sec, _ = bed
    topic, group = source
    d = full_backup[0]
    target = f"{topic}-m{missing}"
    props = principal(bed, RESTORE_ACLS, {"$R": target, "$G": group}, skip=missing)
    t = time.monotonic()
    proc = restore(kbackup, sec, props, topic, target, d, check=False)
    assert time.monotonic() - t < 60, "no hang"
    line = one_error(proc, RESTORE_MISSING[missing])
    if RESTORE_ACLS[missing][0] == "TOPIC":
        assert target in line, line
    if missing == 5:
        # the failed commit is retried by a re-run once the ACL is granted
        grant(c.bootstrap, f"User:{props.stem}", "GROUP", group, ["READ"])
        time.sleep(1.5)
        restore(kbackup, sec, props, topic, target, d)
        got = c.kafka.group_offsets(group)
        assert (got[(target, 0)], got[(target, 1)]) == (10, 4)
