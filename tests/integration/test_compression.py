"""Compressed backups (issue 11, segment format version 2), against the real broker and worker.

A zstd backup of the issue-2 fixture made by the SINK CONNECTOR restores byte-exact into a new
cluster, through the source connector and through the CLI, with the consumer groups translated;
a flipped bit inside a compressed block is named (file and byte) by `kbackup verify` and refused
by the restore. Records are read back with confluent-kafka and compared with what it read from
the originals; docs/format.md "Blocks".
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from conftest import failed_trace, sink_config, unique, wait_backup_complete
from fixtures import (
    MIB,
    assert_restored_equal,
    fixture_records,
    source_config,
    wait_captured,
    wait_restore_finished,
)
from testbed.connect import ConnectError
from testbed.procs import wait_until


def blocks(segment: Path) -> tuple[int, list[tuple[int, int]]]:
    """(segment version, [(block position, codec id)]) of a segment (docs/format.md)."""
    data = segment.read_bytes()
    version = struct.unpack(">H", data[4:6])[0]
    pos = struct.unpack(">H", data[6:8])[0]
    out = []
    while pos < len(data):
        n = struct.unpack(">I", data[pos:pos + 4])[0]
        out.append((pos, data[pos + 12]))
        pos += 12 + n
    assert pos == len(data), f"{segment}: frames do not end at the end of the file"
    return version, out


def expected_group_offsets(original, restored, ends, positions):
    """Where each group position lands after a restore: the new offset of the first restored
    record at or after it, or the new end (docs/offsets.md)."""
    out = {}
    for (tp, o) in positions.items():
        later = [i for i, r in enumerate(original[tp]) if r.offset >= o]
        out[tp] = restored[tp][later[0]].offset if later else ends[tp]
    return out


def test_a_zstd_sink_backup_of_the_fixture_restores_byte_exact_with_groups_translated(
        cluster, kbackup, new_cluster, workdir):
    k = cluster.kafka
    ct, at = unique("z-create"), unique("z-append")
    k.create_topic(ct, 2, {"max.message.bytes": 4 * MIB})
    k.create_topic(at, 2, {"message.timestamp.type": "LogAppendTime"})
    for p in range(2):
        k.produce(ct, fixture_records(p, big=(p == 1)))
        k.produce(at, fixture_records(p, big=False))
    # Transaction markers and an aborted transaction take offsets: the groups must move.
    k.produce_transaction(ct, [{"partition": 0, "key": b"tx", "value": b"committed %d" % i}
                               for i in range(5)])
    k.produce_transaction(ct, [{"partition": 0, "key": b"ab", "value": b"aborted %d" % i}
                               for i in range(3)], abort=True)
    k.produce(ct, [{"partition": 0, "key": b"after", "value": b"after the transactions %d" % i}
                   for i in range(5)])
    tps = [(t, p) for t in (ct, at) for p in range(2)]
    original = {tp: k.consume_partition(*tp) for tp in tps}
    assert not any(r.value and b"aborted" in r.value for r in original[(ct, 0)])
    group = unique("z-group")
    positions = {(ct, 0): original[(ct, 0)][-3].offset, (ct, 1): original[(ct, 1)][8].offset,
                 (at, 0): original[(at, 0)][5].offset, (at, 1): k.watermarks(at, 1)[1]}
    k.commit_group_offsets(group, positions)

    backup = workdir / "backup"
    sink = unique("z-sink")
    cluster.connect.create_connector(sink, sink_config(
        f"{ct},{at}", backup, cluster.bootstrap,
        **{"tasks.max": 2, "compression.type": "zstd", "compression.level": 5,
           "consumer.offsets.sync.interval.ms": 1000}))
    try:
        for t in (ct, at):
            wait_backup_complete(kbackup, backup, t, {p: len(original[(t, p)]) for p in range(2)})
        wait_captured(kbackup, backup, group, positions)
    finally:
        cluster.connect.delete_connector(sink)
        cluster.connect.wait_deleted(sink)

    # The backup really is version 2 with zstd blocks, and smaller than its records.
    segs = sorted(backup.rglob("*.segment"))
    found = [blocks(s) for s in segs]
    assert {v for v, _ in found} == {2}, [(s.name, v) for s, (v, _) in zip(segs, found)]
    assert any(codec == 1 for _, bs in found for _, codec in bs), found
    doc = json.loads(kbackup.run("inspect", backup, "--json").stdout)
    by_topic = {t["topic"]: t for t in doc["topics"]}
    assert by_topic[at]["raw_bytes"] > by_topic[at]["bytes"] and by_topic[at]["ratio"] < 0.9, \
        by_topic[at]
    text = kbackup.run("inspect", backup).stdout
    assert "raw, ratio" in text, text
    kbackup.run("verify", backup)

    dst = new_cluster("zstd-target")
    # 1. The source connector.
    name = unique("z-restore")
    state = workdir / "state"
    dst.connect.create_connector(name, source_config(
        f"{ct},{at}", backup, dst.bootstrap, **{"tasks.max": 2, "restore.state.dir": str(state)}))
    wait_restore_finished(kbackup, backup, dst.connect, name, set(tps), state_dir=state)
    dst.connect.delete_connector(name)
    restored = {tp: dst.kafka.consume_partition(*tp) for tp in tps}
    for (t, p) in tps:
        assert_restored_equal(restored[(t, p)], original[(t, p)], f"connector {t}/{p}",
                              check_ts_type=(t == ct))
    big = [r for r in restored[(ct, 1)] if r.key == b"one MiB"]
    assert len(big) == 1 and len(big[0].value) == MIB
    ends = {tp: dst.kafka.watermarks(*tp)[1] for tp in tps}
    want = expected_group_offsets(original, restored, ends, positions)
    assert want[(ct, 0)] != positions[(ct, 0)], "the scenario must move the group"
    committed = wait_until(lambda: {tp: o for tp, o in dst.kafka.group_offsets(group).items()
                                    if tp in want} or None, 60, "group committed on target")
    assert committed == want, (committed, want, positions)

    # 2. The CLI, from the same backup into renamed topics of the same new cluster.
    renamed = {ct: unique("z-create-cli"), at: unique("z-append-cli")}
    kbackup.run("restore", "--bootstrap-server", dst.bootstrap, "--dir", backup,
                "--topics", f"{ct},{at}", "--rename", ",".join(f"{a}:{b}" for a, b in
                                                               renamed.items()),
                "--group-offsets", "-q", timeout=300)
    cli = {(t, p): dst.kafka.consume_partition(renamed[t], p) for (t, p) in tps}
    for (t, p) in tps:
        assert_restored_equal(cli[(t, p)], original[(t, p)], f"cli {t}/{p}",
                              check_ts_type=(t == ct))
    cli_ends = {(t, p): dst.kafka.watermarks(renamed[t], p)[1] for (t, p) in tps}
    want_cli = {(renamed[t], p): o for (t, p), o in
                expected_group_offsets(original, cli, cli_ends, positions).items()}
    got_cli = {tp: o for tp, o in dst.kafka.group_offsets(group).items() if tp in want_cli}
    assert got_cli == want_cli, (got_cli, want_cli)


def test_a_flipped_bit_in_a_compressed_block_is_named_by_verify_and_refused_by_restore(
        cluster, kbackup, workdir):
    topic = unique("zflip")
    cluster.kafka.create_topic(topic, 1)
    values = [b"record-%05d-" % i + b"payload " * 25 for i in range(2000)]
    cluster.kafka.produce(topic, [{"partition": 0, "value": v} for v in values])
    backup = workdir / "backup"
    # No --compression: the CLI's default is zstd.
    kbackup.run("backup", "--bootstrap-server", cluster.bootstrap, "--dir", str(backup),
                "--topics", topic, "--until-caught-up", "-q")
    segment = next((backup / "topics" / topic / "0").glob("*.segment"))
    version, bs = blocks(segment)
    assert version == 2 and len(bs) >= 2 and all(c == 1 for _, c in bs), bs
    # Inside the stored (compressed) bytes of the second block.
    victim, end = bs[1][0], (bs[2][0] if len(bs) > 2 else segment.stat().st_size)
    data = bytearray(segment.read_bytes())
    data[(victim + 12 + 33 + end) // 2] ^= 0x08
    segment.write_bytes(bytes(data))
    where = f"{segment} at byte {victim}"

    res = kbackup.run("verify", str(backup), check=False)
    assert res.returncode == 4, res.stdout + res.stderr
    assert f"error: {where}:" in res.stdout, res.stdout

    target = unique("zflip-cli")
    res = kbackup.run("restore", "--bootstrap-server", cluster.bootstrap, "--dir", str(backup),
                      "--topics", topic, "--rename", f"{topic}:{target}", "-q", check=False)
    assert res.returncode == 4 and where in res.stderr, res.stdout + res.stderr
    got = ([r.value for r in cluster.kafka.consume_partition(target, 0, timeout=30)]
           if target in cluster.kafka.topics() else [])
    # At most the first block, never a record of the damaged one or after it.
    assert got == values[:len(got)] and len(got) < 2000, len(got)

    conn_target = unique("zflip-connect")
    name = unique("zflip-restore")
    try:
        cluster.connect.create_connector(name, source_config(
            topic, backup, cluster.bootstrap,
            **{"topics.rename": f"{topic}:{conn_target}",
               "restore.state.dir": str(workdir / "state")}))
    except ConnectError as e:  # refused at validation, which reads the backup
        assert e.status == 400 and where in e.body, e.body
        return
    try:
        trace = failed_trace(cluster.connect, name)
        assert where in trace, trace[:3000]
    finally:
        cluster.connect.delete_connector(name)
        cluster.connect.wait_deleted(name)


def test_a_v1_fixture_and_a_mixed_v1_v2_partition_restore_the_same_records(
        cluster, kbackup, workdir):
    """The golden v1 backup, and the v2 fixture's partition upgraded mid-backup (version 1
    segments, then zstd segments) holding the same records as v1's partition 1, both restored
    by the CLI into the real broker: read back with confluent-kafka, the two agree field for
    field, in order, and v1's partitions hold every record the fixture has."""
    import shutil

    golden = Path(__file__).resolve().parents[1] / "golden"
    v1, v2 = workdir / "v1", workdir / "v2"
    shutil.copytree(golden / "v1", v1)
    shutil.copytree(golden / "v2", v2)
    t1, tm = unique("golden-v1"), unique("golden-mixed")
    kbackup.run("restore", "--bootstrap-server", cluster.bootstrap, "--dir", v1,
                "--topics", "golden", "--rename", f"golden:{t1}", "-q", timeout=120)
    kbackup.run("restore", "--bootstrap-server", cluster.bootstrap, "--dir", v2,
                "--topics", "golden-mixed", "--rename", f"golden-mixed:{tm}", "-q", timeout=120)
    versions = {blocks(s)[0] for s in (v2 / "topics" / "golden-mixed" / "0").glob("*.segment")}
    assert versions == {1, 2}, f"the mixed partition's segment versions: {versions}"

    def fields(recs):
        return [(r.key, r.value, r.headers, r.timestamp) for r in recs]

    k = cluster.kafka
    restored_v1 = k.consume_topic(t1)
    total = json.loads(kbackup.run("inspect", v1, "--json").stdout)["records"]
    assert sum(len(v) for v in restored_v1.values()) == total > 0
    # v1's partition 1 as the fixture defines it (crates/kbackup-core/tests/golden.rs)
    want = [(b"key-%d" % i, bytes([i]) * 50, [], 1_700_000_100_000 + i * 1000) for i in range(40)]
    assert fields(restored_v1[1]) == want
    mixed = k.consume_partition(tm, 0)
    assert fields(mixed) == want
