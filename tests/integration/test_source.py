"""Restore source connector end to end (issue 3), against the real broker and Connect worker.

The backup is made by the sink connector on the shared cluster; restores go into NEW clusters
(nothing of the original there) or, for checks that do not care, into the shared cluster under
new topic names. Restored records are read back with confluent-kafka (never kbackup's reader)
and compared with what confluent-kafka read from the ORIGINAL topics.
"""

from __future__ import annotations

import os
import re
import time

import pytest

from conftest import sink_config, unique, wait_backup_complete
from fixtures import (
    MIB,
    SOURCE,
    assert_restored_equal,
    config_with,
    fixture_records,
    source_config,
    status_of,
    restore_status,
    wait_restore_finished,
)
from testbed.connect import ConnectError, validation_errors
from testbed.procs import wait_until


class Backup:
    pass


@pytest.fixture(scope="module")
def fx(cluster, kbackup) -> Backup:
    """The issue-2 fixture (2 topics x 3 partitions, CreateTime and LogAppendTime) plus a
    compacted 4-partition topic, backed up by the sink on the shared cluster."""
    k = cluster.kafka
    b = Backup()
    b.create_topic = unique("rs-create")
    b.append_topic = unique("rs-append")
    b.compact_topic = unique("rs-compact")
    k.create_topic(b.create_topic, 3, {"max.message.bytes": 4 * MIB, "retention.ms": -1})
    k.create_topic(b.append_topic, 3, {"message.timestamp.type": "LogAppendTime",
                                       "retention.ms": -1})
    b.compact_config = {"cleanup.policy": "compact", "min.compaction.lag.ms": 3_600_000,
                        "delete.retention.ms": 123_456}
    k.create_topic(b.compact_topic, 4, b.compact_config)
    for topic in (b.create_topic, b.append_topic):
        for p in range(3):
            k.produce(topic, fixture_records(p, big=(topic == b.create_topic and p == 1)))
    k.produce(b.compact_topic, [{"partition": i % 4, "key": b"key-%d" % (i % 10),
                                 "value": b"compact %d" % i} for i in range(80)])
    b.topics = (b.create_topic, b.append_topic, b.compact_topic)
    b.partitions = {b.create_topic: 3, b.append_topic: 3, b.compact_topic: 4}
    # Kafka's own view of the originals is the reference
    b.original = {(t, p): k.consume_partition(t, p)
                  for t, n in b.partitions.items() for p in range(n)}

    b.dir = cluster.root / "dirs" / unique("source-fixture-backup")
    name = unique("sink-for-restore")
    cfg = sink_config(",".join(b.topics), b.dir, cluster.bootstrap,
                      **{"tasks.max": 3, "max.segment.size.bytes": MIB})
    cluster.connect.create_connector(name, cfg)
    try:
        for t, n in b.partitions.items():
            wait_backup_complete(kbackup, b.dir, t,
                                 {p: len(b.original[(t, p)]) for p in range(n)}, timeout=120)
    finally:
        # the backup is complete: stop the sink so restores read a backup nobody writes to
        cluster.connect.delete_connector(name)
        cluster.connect.wait_deleted(name)
    return b


def partitions_of(b: Backup, *topics: str) -> set[tuple[str, int]]:
    return {(t, p) for t in topics for p in range(b.partitions[t])}


# ---------------------------------------------------------------------------------------------
# (a) byte-exact restore into a new broker and worker


def test_restore_into_a_new_cluster_is_field_by_field_equal(fx, kbackup, new_cluster):
    target = new_cluster("restore-new")
    name = unique("restore-new")
    topics = (fx.create_topic, fx.append_topic)
    # default state dir (inside source.dir), found through restore-status by connector name
    target.connect.create_connector(name, source_config(",".join(topics), fx.dir,
                                                        target.bootstrap, **{"tasks.max": 2}))
    st = wait_restore_finished(kbackup, fx.dir, target.connect, name, partitions_of(fx, *topics))

    assert {t: n for t, n in target.kafka.topics().items() if t in topics} == \
        {t: 3 for t in topics}, "restored topics must have the backed-up partition count"
    for t in topics:
        for p in range(3):
            got = target.kafka.consume_partition(t, p)
            want = fx.original[(t, p)]
            # A producer cannot write LogAppendTime; docs/restore.md: the original timestamp is
            # kept (type CreateTime), only the type differs.
            assert_restored_equal(got, want, f"{t}/{p}", check_ts_type=(t == fx.create_topic))
            if t == fx.append_topic:
                assert all(r.timestamp_type == "CreateTime" for r in got), got[:2]
    big = [r for r in target.kafka.consume_partition(fx.create_topic, 1) if r.key == b"one MiB"]
    assert len(big) == 1 and len(big[0].value) == MIB

    by_tp = {(p["topic"], p["partition"]): p for p in st["partitions"]}
    for tp in partitions_of(fx, *topics):
        assert by_tp[tp]["records_restored"] == len(fx.original[tp]), by_tp[tp]
    # the LogAppendTime topic gets its carried timestamp type back once the restore finished
    wait_until(lambda: target.kafka.topic_config(fx.append_topic)["message.timestamp.type"]
               == "LogAppendTime", 30, "LogAppendTime config restored on the target topic")
    assert target.kafka.topic_config(fx.create_topic)["max.message.bytes"] == str(4 * MIB)


# ---------------------------------------------------------------------------------------------
# (b) topics.rename writes to the renamed topic only


def test_rename_writes_only_to_the_renamed_topic(fx, kbackup, new_cluster):
    target = new_cluster("restore-rename")
    name = unique("restore-rename")
    renamed = unique("renamed")
    cfg = source_config(fx.create_topic, fx.dir, target.bootstrap,
                        **{"topics.rename": f"{fx.create_topic}:{renamed}"})
    target.connect.create_connector(name, cfg)
    st = wait_restore_finished(kbackup, fx.dir, target.connect, name,
                               partitions_of(fx, fx.create_topic))
    topics = target.kafka.topics()
    assert fx.create_topic not in topics, f"original name must not exist on the target: {topics}"
    assert topics.get(renamed) == 3
    for p in range(3):
        assert_restored_equal(target.kafka.consume_partition(renamed, p),
                              fx.original[(fx.create_topic, p)], f"{renamed}/{p}")
    assert {p["target_topic"] for p in st["partitions"]} == {renamed}


# ---------------------------------------------------------------------------------------------
# (c) a compacted topic is re-created compacted, with the same partition count


def test_compacted_topic_is_recreated_compacted_with_the_same_partitions(fx, kbackup, cluster):
    name = unique("restore-compact")
    target_topic = unique("compact-restored")
    state = cluster.root / "dirs" / unique("state-compact")
    cfg = source_config(fx.compact_topic, fx.dir, cluster.bootstrap,
                        **{"topics.rename": f"{fx.compact_topic}:{target_topic}",
                           "restore.state.dir": str(state)})
    cluster.connect.create_connector(name, cfg)
    try:
        wait_restore_finished(kbackup, fx.dir, cluster.connect, name,
                              partitions_of(fx, fx.compact_topic), state_dir=state)
        assert cluster.kafka.topics()[target_topic] == 4

        def carried():
            conf = cluster.kafka.topic_config(target_topic)
            return conf if all(conf[k] == str(v) for k, v in fx.compact_config.items()) else None

        try:
            conf = wait_until(carried, 30, "carried configs on the restored compacted topic")
        except Exception:
            raise AssertionError(f"restored topic configs: "
                                 f"{ {k: cluster.kafka.topic_config(target_topic)[k] for k in fx.compact_config} } "
                                 f"want {fx.compact_config}") from None
        assert conf["cleanup.policy"] == "compact"
        for p in range(4):
            assert_restored_equal(cluster.kafka.consume_partition(target_topic, p),
                                  fx.original[(fx.compact_topic, p)], f"{target_topic}/{p}")
    finally:
        cluster.connect.delete_connector(name)


# ---------------------------------------------------------------------------------------------
# (d) the worker dies mid-restore; after a restart the restore completes


BIG_RECORDS = 200_000


@pytest.fixture(scope="module")
def big_backup(cluster, kbackup) -> Backup:
    b = Backup()
    b.topic = unique("rs-big")
    cluster.kafka.create_topic(b.topic, 2)
    b.values = [b"big-%07d" % i for i in range(BIG_RECORDS)]
    cluster.kafka.produce(b.topic, [{"partition": i % 2, "key": b"%d" % (i % 1000), "value": v}
                                    for i, v in enumerate(b.values)],
                          **{"linger.ms": 50, "batch.size": 512 * 1024})
    b.dir = cluster.root / "dirs" / unique("big-backup")
    name = unique("sink-big")
    cluster.connect.create_connector(name, sink_config(b.topic, b.dir, cluster.bootstrap,
                                                       **{"tasks.max": 2}))
    try:
        wait_backup_complete(kbackup, b.dir, b.topic, {0: BIG_RECORDS // 2, 1: BIG_RECORDS // 2},
                             timeout=300)
    finally:
        cluster.connect.delete_connector(name)
        cluster.connect.wait_deleted(name)
    return b


def test_killed_worker_resumes_and_every_record_is_restored(big_backup, kbackup, new_cluster):
    b = big_backup
    # frequent source-offset commits, so the kill lands after one even on a fast restore
    target = new_cluster("restore-kill", worker_overrides={"offset.flush.interval.ms": 300})
    name = unique("restore-kill")
    state = target.root / "restore-state"
    target.connect.create_connector(name, source_config(
        b.topic, b.dir, target.bootstrap,
        # small producer batches slow the restore down enough to kill it in the middle
        **{"batch.size": 200, "restore.state.dir": str(state),
           "producer.override.batch.size": 512}))

    def written() -> int:
        try:
            return sum(target.kafka.watermarks(b.topic, p)[1] for p in range(2))
        except Exception:  # noqa: BLE001 - topic not created yet
            return 0

    def committed_some():
        # kill once Connect has committed source offsets, so the restart has some to resume
        # from (the worker log says so; GET /connectors/<name>/offsets is not used: it shows
        # null offsets whenever the stored key's field order differs from a re-serialized one)
        n = written()
        if n < BIG_RECORDS // 20:
            return None
        # Connect logs "Committing offsets" BEFORE writing them; commits run one after the
        # other, so a second line means the first one was written
        log = target.worker.log_file.read_text(errors="replace")
        return n if log.count(f"WorkerSourceTask{{id={name}-0}} Committing offsets for") >= 2 \
            else None

    seen = wait_until(committed_some, 120, f"the restore to write {BIG_RECORDS // 20} records "
                      "and Connect to commit a source offset", interval=0.1)
    target.kill_worker()
    assert seen < BIG_RECORDS, (f"the restore wrote all {BIG_RECORDS} records before the kill "
                                "(test proves nothing): raise BIG_RECORDS")
    at_kill = written()
    target.restart_worker()

    wait_restore_finished(kbackup, b.dir, target.connect, name, {(b.topic, 0), (b.topic, 1)},
                          state_dir=state, timeout=300)
    per_p = {p: [r.value for r in target.kafka.consume_partition(b.topic, p, timeout=120)]
             for p in range(2)}
    got = per_p[0] + per_p[1]
    missing = set(b.values) - set(got)
    assert not missing, f"{len(missing)} records lost by the crash, e.g. {sorted(missing)[:5]}"
    # order within a partition is kept apart from the re-sent stretch: the last copy of each
    # record is in original order
    for p in range(2):
        last = {}
        for i, v in enumerate(per_p[p]):
            last[v] = i
        ordered = sorted(last, key=last.get)
        assert ordered == b.values[p::2], f"partition {p}: records out of order after the resume"
    dups = len(got) - BIG_RECORDS
    print(f"killed with {at_kill} of {BIG_RECORDS} written; {dups} duplicates")
    assert dups < at_kill, (f"{dups} duplicates for {at_kill} records written before the kill: "
                            "the restarted task started over instead of resuming from Connect's "
                            "committed source offset")


# ---------------------------------------------------------------------------------------------
# (e) validate rejects bad configs with a message naming the fix


def _bad_source_configs(fx, base: dict) -> dict[str, tuple[dict, str, str]]:
    """case -> (config, key that must carry the error, text the error must contain)."""
    def with_(**kv):
        return config_with(base, **kv)

    missing = str(fx.dir) + "-does-not-exist"
    return {
        "source.dir unset": (with_(source__dir=None), "source.dir", "source.dir"),
        "source.dir missing": (with_(source__dir=missing), "source.dir", missing),
        "topic not in backup": (with_(topics=f"{fx.create_topic},no-such-topic-xyz"), "topics",
                                "no-such-topic-xyz"),
        "rename to invalid name": (with_(topics__rename=f"{fx.create_topic}:bad/name!"),
                                   "topics.rename", "bad/name!"),
        "value.converter JSON": (with_(value__converter="org.apache.kafka.connect.json.JsonConverter"),
                                 "value.converter", "ByteArrayConverter"),
        "header.converter unset": (with_(header__converter=None), "header.converter",
                                   "ByteArrayConverter"),
    }


BAD = ["source.dir unset", "source.dir missing", "topic not in backup", "rename to invalid name",
       "value.converter JSON", "header.converter unset"]


def test_valid_source_config_passes_validation(fx, cluster):
    # Connect's validate endpoint checks the connector name too, as POST /connectors does
    cfg = source_config(fx.create_topic, fx.dir, cluster.bootstrap, name=unique("restore-valid"))
    resp = cluster.connect.validate(SOURCE, cfg)
    assert resp["error_count"] == 0, validation_errors(resp)


@pytest.mark.parametrize("case", BAD)
def test_bad_source_config_is_rejected_with_a_clear_message(fx, cluster, case):
    name = unique("restore-invalid")
    base = source_config(fx.create_topic, fx.dir, cluster.bootstrap, name=name)
    cfg, key, must = _bad_source_configs(fx, base)[case]
    resp = cluster.connect.validate(SOURCE, cfg)
    errs = validation_errors(resp)
    hits = [m for m in errs.get(key, []) if must in m]
    assert hits, f"{case}: no error on {key} mentioning {must!r}: {errs}"
    with pytest.raises(ConnectError) as exc:
        cluster.connect.create_connector(name, cfg)
    assert exc.value.status == 400 and must in exc.value.body, exc.value.body
    assert name not in cluster.connect.connectors()


# ---------------------------------------------------------------------------------------------
# (f) tasks.max > 1 spreads partitions, finishes, and stays quiet after the end


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_three_tasks_spread_partitions_finish_and_do_not_spin(fx, kbackup, cluster):
    name = unique("restore-3tasks")
    state = cluster.root / "dirs" / unique("state-3tasks")
    rename = {fx.create_topic: unique("t3-create"), fx.append_topic: unique("t3-append")}
    cfg = source_config(f"{fx.create_topic},{fx.append_topic}", fx.dir, cluster.bootstrap,
                        **{"tasks.max": 3, "restore.state.dir": str(state),
                           "topics.rename": ",".join(f"{a}:{b}" for a, b in rename.items())})
    cluster.connect.create_connector(name, cfg)
    try:
        cluster.connect.wait_for_task_state(name, "RUNNING", count=3, timeout=90)
        assigned = [t["config"].get("kbackup.task.partitions", "")
                    for t in cluster.connect.tasks(name)]
        assert len(assigned) == 3 and all(assigned), assigned
        flat = [e for a in assigned for e in a.split(",")]
        want = {f"{t}:{p}" for t in rename for p in range(3)}
        assert sorted(flat) == sorted(want), f"each partition in exactly one task: {assigned}"

        st = wait_restore_finished(kbackup, fx.dir, cluster.connect, name,
                                   partitions_of(fx, *rename), state_dir=state)
        assert all(p["done"] for p in st["partitions"])
        for (t, p), target in ((tp, rename[tp[0]]) for tp in partitions_of(fx, *rename)):
            assert_restored_equal(cluster.kafka.consume_partition(target, p),
                                  fx.original[(t, p)], f"{target}/{p}",
                                  check_ts_type=(t == fx.create_topic))

        # after the finish: tasks stay RUNNING, nothing more is written, the worker idles
        ends = {(t, p): cluster.kafka.watermarks(t, p)[1] for t in rename.values()
                for p in range(3)}
        pid = cluster.worker.process.pid
        cpu0, t0 = _cpu_seconds(pid), time.monotonic()
        time.sleep(6)
        cpu = (_cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
        assert cpu < 0.5, f"worker used {cpu:.2f} CPU cores while the restore was finished: spin?"
        status = cluster.connect.status(name)
        assert [t["state"] for t in status["tasks"]] == ["RUNNING"] * 3, status
        assert {tp: cluster.kafka.watermarks(*tp)[1] for tp in ends} == ends
        log = cluster.worker.log_file.read_text(errors="replace")
        finished_lines = [ln for ln in log.splitlines()
                          if name in ln and re.search(r"restore finished", ln)]
        assert len(finished_lines) >= 3, "each task logs that it finished"
        assert len(finished_lines) <= 6, f"finish logged too often: {finished_lines[:8]}"
        assert status_of(restore_status(kbackup, fx.dir, state), name)["finished"] is True
    finally:
        cluster.connect.delete_connector(name)
