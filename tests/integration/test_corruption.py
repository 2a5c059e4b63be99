"""Damaged backup files are corruption everywhere: `kbackup verify`, `cat`, `restore`, the
restore connector and the sink (connector and CLI `backup`) all refuse them, naming the file and
the byte position, and none of them repairs or skips a complete record.

Only an interrupted last write (a short frame or zero fill) is a torn tail the sink may cut;
docs/format.md "Torn tail versus corruption" and docs/reliability.md.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

from conftest import failed_trace, sink_config, unique
from fixtures import source_config
from testbed.connect import ConnectError


def frames(segment: Path) -> list[int]:
    """Byte positions of every record frame of a segment (docs/format.md, "Segment files")."""
    data = segment.read_bytes()
    pos = struct.unpack(">H", data[6:8])[0]
    out = []
    while pos < len(data):
        out.append(pos)
        pos += 12 + struct.unpack(">I", data[pos:pos + 4])[0]
    assert pos == len(data), f"{segment}: frames do not end at the end of the file"
    return out


def flip(path: Path, pos: int, mask: int = 0x01) -> bytes:
    data = bytearray(path.read_bytes())
    data[pos] ^= mask
    path.write_bytes(bytes(data))
    return bytes(data)




def connector_fails(cluster, name: str, cfg: dict) -> str:
    """Creates a connector, waits for its task to fail and answers the trace; the connector is
    deleted afterwards."""
    cluster.connect.create_connector(name, cfg)
    try:
        return failed_trace(cluster.connect, name)
    finally:
        cluster.connect.delete_connector(name)
        cluster.connect.wait_deleted(name)


def backed_up(cluster, kbackup, workdir: Path, name: str, n: int) -> tuple[str, list[bytes], Path]:
    topic = unique(name)
    cluster.kafka.create_topic(topic, 1)
    values = [b"record-%04d-" % i + b"x" * 200 for i in range(n)]
    cluster.kafka.produce(topic, [{"partition": 0, "value": v} for v in values])
    backup = workdir / "backup"
    # Version 1 segments (one record per frame): these tests damage chosen records;
    # test_compression.py damages compressed blocks.
    kbackup.run("backup", "--bootstrap-server", cluster.bootstrap, "--dir", str(backup),
                "--topics", topic, "--until-caught-up", "--compression", "none", "-q")
    return topic, values, backup


def restored(cluster, topic: str) -> list[bytes]:
    if topic not in cluster.kafka.topics():
        return []
    return [r.value for r in cluster.kafka.consume_partition(topic, 0, timeout=30)]


def test_defect5_bit_flip_in_the_last_record_is_refused_everywhere(cluster, kbackup, workdir):
    """Defect 5: a bit flip in a partition's LAST record was taken for a torn write: verify
    passed with a warning, cat and restore left the record out silently and the sink cut the
    committed record off. Now every path refuses it with file and byte position."""
    topic, values, backup = backed_up(cluster, kbackup, workdir, "last-flip", 300)
    segment = next((backup / "topics" / topic / "0").glob("*.segment"))
    last = frames(segment)[-1]
    damaged = flip(segment, segment.stat().st_size - 50)  # inside record 299's value
    where = f"{segment} at byte {last}"

    res = kbackup.run("verify", str(backup), check=False)
    assert res.returncode == 4, res.stdout + res.stderr
    assert f"error: {where}:" in res.stdout, res.stdout

    res = kbackup.run("cat", str(backup), "--topic", topic, check=False)
    assert res.returncode == 4 and where in res.stderr, res.stderr
    assert len(res.stdout.splitlines()) == 299

    cli_target = unique("last-flip-cli")
    res = kbackup.run("restore", "--bootstrap-server", cluster.bootstrap, "--dir", str(backup),
                      "--topics", topic, "--rename", f"{topic}:{cli_target}", "-q", check=False)
    assert res.returncode == 4 and where in res.stderr, res.stdout + res.stderr
    got = restored(cluster, cli_target)
    assert got == values[:len(got)] and len(got) < 300, len(got)

    conn_target = unique("last-flip-connect")
    trace = connector_fails(cluster, unique("restore-last-flip"), source_config(
        topic, backup, cluster.bootstrap,
        **{"topics.rename": f"{topic}:{conn_target}",
           "restore.state.dir": str(workdir / "state")}))
    assert where in trace, trace[:3000]
    got = restored(cluster, conn_target)
    assert got == values[:len(got)] and len(got) < 300, len(got)

    # The sink connector opening the partition refuses it and leaves the record alone.
    trace = connector_fails(cluster, unique("sink-last-flip"),
                            sink_config(topic, backup, cluster.bootstrap))
    assert where in trace, trace[:3000]
    assert segment.read_bytes() == damaged
    # So does the CLI backup.
    res = kbackup.run("backup", "--bootstrap-server", cluster.bootstrap, "--dir", str(backup),
                      "--topics", topic, "--until-caught-up", "-q", check=False)
    assert res.returncode == 4 and where in res.stderr, res.stdout + res.stderr
    assert segment.read_bytes() == damaged


def log_frames(log: Path) -> list[int]:
    """Entry positions of a version 2 group-offsets log (docs/format.md)."""
    data = log.read_bytes()
    assert data[:6] == b"KBGO\x00\x02", data[:12]
    pos, out = 12, []
    while pos < len(data):
        out.append(pos)
        pos += 12 + struct.unpack(">I", data[pos:pos + 4])[0]
    return out


def all_failed_traces(connect, name: str, tasks: int, timeout: float = 120) -> list[str]:
    deadline = time.monotonic() + timeout
    traces: list[str] = []
    while time.monotonic() < deadline:
        try:
            st = connect.status(name).get("tasks", [])
        except ConnectError:
            st = []
        traces = [t.get("trace", "") for t in st if t.get("state") == "FAILED"]
        if len(traces) == tasks:
            return traces
        time.sleep(0.5)
    raise AssertionError(f"{name}: {len(traces)} of {tasks} tasks failed: {connect.status(name)}")


def test_damage_at_structural_positions_is_refused_by_cli_and_connectors(
        cluster, kbackup, workdir):
    """Issue 8, "Corruption", the paths tests/corruption.rs cannot reach: one backup of four
    topics, each damaged at another structural position (a sealed segment's header CRC, a
    middle record's length CRC in the last segment, whole records cut from a sealed segment,
    a middle entry of the group-offsets log). `kbackup verify` names each file and byte, `kbackup
    restore` refuses each topic, a restore connector with one task per topic fails every task
    naming its damage, and the sink connector refuses the damaged last segment."""
    names = {k: unique(f"dmg-{k}") for k in ("header", "length", "cut", "log")}
    group = unique("dmg-group")
    for t in names.values():
        cluster.kafka.create_topic(t, 1)
        cluster.kafka.produce(t, [{"partition": 0, "value": b"record-%04d-" % i + b"y" * 300}
                                  for i in range(60)])
    cluster.kafka.commit_group_offsets(group, {(names["log"], 0): o for o in [30]})
    backup = workdir / "backup"
    kbackup.run("backup", "--bootstrap-server", cluster.bootstrap, "--dir", str(backup),
                "--topics", ",".join(names.values()), "--max-segment-bytes", "8000",
                "--compression", "none", "--group-offsets", "--until-caught-up", "-q")
    # A second capture with another position, so the log has a middle entry.
    cluster.kafka.commit_group_offsets(group, {(names["log"], 0): 45})
    kbackup.run("backup", "--bootstrap-server", cluster.bootstrap, "--dir", str(backup),
                "--topics", names["log"], "--compression", "none", "--group-offsets",
                "--until-caught-up", "-q")
    cluster.kafka.commit_group_offsets(group, {(names["log"], 0): 50})
    kbackup.run("backup", "--bootstrap-server", cluster.bootstrap, "--dir", str(backup),
                "--topics", names["log"], "--compression", "none", "--group-offsets",
                "--until-caught-up", "-q")

    def segments(t: str) -> list[Path]:
        return sorted((backup / "topics" / t / "0").glob("*.segment"))

    expected: dict[str, tuple[Path, int]] = {}
    seg = segments(names["header"])[0]
    hl = struct.unpack(">H", seg.read_bytes()[6:8])[0]
    flip(seg, hl - 1)
    expected["header"] = (seg, 0)
    seg = segments(names["length"])[-1]
    mid = frames(seg)[len(frames(seg)) // 2]
    flip(seg, mid + 5)
    expected["length"] = (seg, mid)
    first, second = segments(names["cut"])[:2]
    first.write_bytes(first.read_bytes()[:frames(first)[-1]])
    expected["cut"] = (second, 20)  # the next segment's link to the lost record
    log = backup / "topics" / names["log"] / "0" / "group-offsets.log"
    entries = log_frames(log)
    assert len(entries) == 3, entries
    flip(log, entries[1] + 20)
    expected["log"] = (log, entries[1])

    res = kbackup.run("verify", str(backup), check=False)
    assert res.returncode == 4, res.stdout + res.stderr
    for key, (file, pos) in expected.items():
        assert f"error: {file} at byte {pos}:" in res.stdout, (key, res.stdout)

    for key, t in names.items():
        file, pos = expected[key]
        target = unique(f"dmg-cli-{key}")
        res = kbackup.run("restore", "--bootstrap-server", cluster.bootstrap, "--dir",
                          str(backup), "--topics", t, "--rename", f"{t}:{target}",
                          "--group-offsets", "-q", check=False)
        assert res.returncode == 4 and f"{file} at byte {pos}" in res.stderr, (
            key, res.stdout + res.stderr)

    name = unique("restore-damaged")
    cfg = source_config(",".join(names.values()), backup, cluster.bootstrap, **{
        "tasks.max": 4, "restore.state.dir": str(workdir / "state"),
        "topics.rename": ",".join(f"{t}:{t}-restored" for t in names.values())})
    cluster.connect.create_connector(name, cfg)
    try:
        traces = "\n".join(all_failed_traces(cluster.connect, name, 4))
    finally:
        cluster.connect.delete_connector(name)
        cluster.connect.wait_deleted(name)
    for key, (file, pos) in expected.items():
        assert f"{file} at byte {pos}" in traces, (key, traces[:6000])

    file, pos = expected["length"]
    damaged = file.read_bytes()
    trace = connector_fails(cluster, unique("sink-damaged"),
                            sink_config(names["length"], backup, cluster.bootstrap))
    assert f"{file} at byte {pos}" in trace, trace[:3000]
    assert file.read_bytes() == damaged
