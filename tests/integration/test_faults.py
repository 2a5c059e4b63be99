"""Faults a backup must survive without losing or duplicating a record: a full disk.

The sink writes into a small tmpfs (mounted by the test; needs root, as CI runs). When the
disk fills, the task fails with a message that names the problem and the fix; once space is
freed and the task restarted, the backup holds every record exactly once and verifies clean.
"""

from __future__ import annotations

import base64
import os
import subprocess

import pytest

from conftest import failed_trace, sink_config, unique, wait_backup_complete
from testbed.connect import ConnectError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def small_disk(workdir):
    mnt = workdir / "small-disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)




def test_full_disk_fails_clearly_and_loses_nothing_after_space_is_freed(
        cluster, kbackup, small_disk):
    topic = unique("full-disk")
    cluster.kafka.create_topic(topic, 1)
    values = [os.urandom(20_000) for _ in range(200)]  # ~4 MB: twice the disk
    cluster.kafka.produce(topic, [{"partition": 0, "key": b"%d" % i, "value": v}
                                  for i, v in enumerate(values)])
    name = unique("sink-full-disk")
    target = small_disk / "backup"
    cluster.connect.create_connector(name, sink_config(
        topic, target, cluster.bootstrap, **{"max.segment.size.bytes": 512 * 1024}))
    try:
        trace = failed_trace(cluster.connect, name)
        print(next((ln for ln in trace.splitlines() if "disk is full" in ln), ""))
        assert "disk is full" in trace and str(target) in trace, trace[:2000]

        # The operator frees space (here: grows the volume) and restarts the task.
        subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
        cluster.connect.restart(name, include_tasks=True)
        got = wait_backup_complete(kbackup, target, topic, {0: len(values)}, timeout=120)
        assert [r["offset"] for r in got[0]] == list(range(len(values)))
        assert [base64.b64decode(r["value"]) for r in got[0]] == values
        verify = kbackup.run("verify", str(target), check=False)
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        cluster.connect.delete_connector(name)
        cluster.connect.wait_deleted(name)


def test_a_corrupt_segment_is_never_restored_silently(cluster, kbackup, workdir):
    """A bit flip in the middle of a backed-up segment stops both restore paths with the file
    and position; what they restored before it is an exact prefix of the originals."""
    from fixtures import source_config

    topic = unique("corrupt")
    cluster.kafka.create_topic(topic, 1)
    values = [b"record-%04d-" % i + b"x" * 200 for i in range(300)]
    cluster.kafka.produce(topic, [{"partition": 0, "value": v} for v in values])
    backup = workdir / "backup"
    # Version 1 segments: the damage is aimed at one record's value (found as plain text).
    kbackup.run("backup", "--bootstrap-server", cluster.bootstrap, "--dir", str(backup),
                "--topics", topic, "--until-caught-up", "--compression", "none", "-q")
    segment = next((backup / "topics" / topic / "0").glob("*.segment"))
    data = bytearray(segment.read_bytes())
    pos = data.index(b"record-0150-") + 5  # inside record 150's value
    data[pos] ^= 0x01
    segment.write_bytes(bytes(data))

    def restored(t: str) -> list[bytes]:
        if t not in cluster.kafka.topics():
            return []
        return [r.value for r in cluster.kafka.consume_partition(t, 0, timeout=30)]

    # The CLI: exit 4 (corruption), one line naming the segment file.
    cli_target = unique("corrupt-cli")
    res = kbackup.run("restore", "--bootstrap-server", cluster.bootstrap, "--dir", str(backup),
                      "--topics", topic, "--rename", f"{topic}:{cli_target}", "-q", check=False)
    assert res.returncode == 4, res.stdout + res.stderr
    assert segment.name in res.stderr, res.stderr
    got = restored(cli_target)
    assert got == values[:len(got)] and len(got) <= 150, len(got)

    # The source connector: refused at validation (it reads the backup's summary) or, if the
    # damage is only met while restoring, the task fails; either way naming the file.
    name = unique("restore-corrupt")
    conn_target = unique("corrupt-connect")
    cfg = source_config(topic, backup, cluster.bootstrap,
                        **{"topics.rename": f"{topic}:{conn_target}",
                           "restore.state.dir": str(workdir / "state")})
    try:
        cluster.connect.create_connector(name, cfg)
    except ConnectError as e:
        assert e.status == 400 and segment.name in e.body and "CRC" in e.body, e.body
        assert conn_target not in cluster.kafka.topics()
        return
    try:
        trace = failed_trace(cluster.connect, name)
        assert segment.name in trace and "CRC" in trace.upper(), trace[:3000]
        got = restored(conn_target)
        assert got == values[:len(got)] and len(got) <= 150, len(got)
    finally:
        cluster.connect.delete_connector(name)
        cluster.connect.wait_deleted(name)
