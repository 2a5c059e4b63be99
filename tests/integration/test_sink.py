"""Backup sink connector end to end, against the real broker and Connect worker.

Each test drives the connector only through Connect's REST API, as a user would, and reads the
backup only through the `kbackup` CLI. The reference for "what the backup must hold" is what
a confluent-kafka consumer reads back from the broker (read_committed), so offsets, broker
assigned LogAppendTime timestamps and transaction gaps are Kafka's own, not the test's guess.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from conftest import (
    Kbackup,
    b64,
    record_to_cat_json,
    sink_config,
    unique,
    wait_backup_complete,
)
from fixtures import MIB, config_with, fixture_records
from testbed.connect import ConnectError, validation_errors
from testbed.procs import TestbedError, wait_until

SINK = "io.kbackup.connect.BackupSinkConnector"


def cat_by_partition(kb: Kbackup, directory: Path, topic: str) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for r in kb.cat(directory, topic):
        out.setdefault(r["partition"], []).append(r)
    return out


def assert_same_records(got: list[dict], want: list[dict], where: str) -> None:
    """Field by field, with a readable first difference instead of a 1 MiB diff."""
    assert len(got) == len(want), f"{where}: {len(got)} records in backup, {len(want)} expected"
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            fields = [k for k in set(g) | set(w) if g.get(k) != w.get(k)]
            short = {k: (str(g.get(k))[:120], str(w.get(k))[:120]) for k in fields}
            raise AssertionError(f"{where}: record #{i} (offset {w['offset']}) differs in "
                                 f"{sorted(fields)} (got, want): {short}")


def inspect_counts(doc: Any) -> dict[tuple[str, int], int]:
    """(topic, partition) -> record count from `kbackup inspect --json`, whatever nesting it
    uses (topics/partitions as lists of objects or as maps keyed by name/number)."""
    out: dict[tuple[str, int], int] = {}

    def walk(node: Any, topic: Any, partition: Any, parent_key: str) -> None:
        if isinstance(node, dict):
            t = node.get("topic", node.get("name"))
            topic = t if isinstance(t, str) else topic
            p = node.get("partition", node.get("id") if parent_key == "partitions" else None)
            partition = p if isinstance(p, int) else partition
            for key in ("records", "record_count", "records_count", "count", "num_records"):
                if isinstance(node.get(key), int) and isinstance(topic, str) \
                        and isinstance(partition, int):
                    out.setdefault((topic, partition), node[key])  # outermost wins over segments
                    break
            for k, v in node.items():
                if parent_key == "topics" and isinstance(v, dict) and not isinstance(t, str):
                    walk(v, k, None, k)  # map keyed by topic name
                elif parent_key == "partitions" and k.isdigit():
                    walk(v, topic, int(k), k)  # map keyed by partition number
                else:
                    walk(v, topic, partition, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, topic, partition if parent_key != "partitions" else None, parent_key)

    walk(doc, None, None, "")
    return out


# ---------------------------------------------------------------------------------------------
# The main fixture: 2 topics x 3 partitions, tasks.max=3


class Backup:
    pass


@pytest.fixture(scope="module")
def fixture_backup(cluster, kbackup) -> Backup:
    k = cluster.kafka
    b = Backup()
    b.create_topic = unique("fx-create")
    b.append_topic = unique("fx-append")
    k.create_topic(b.create_topic, 3, {"max.message.bytes": 4 * MIB, "retention.ms": -1})
    k.create_topic(b.append_topic, 3, {"message.timestamp.type": "LogAppendTime",
                                       "retention.ms": -1})
    b.produced = {}
    before = int(time.time() * 1000)
    for topic in (b.create_topic, b.append_topic):
        for p in range(3):
            recs = fixture_records(p, big=(topic == b.create_topic and p == 1))
            k.produce(topic, recs)
            b.produced[(topic, p)] = recs
    after = int(time.time() * 1000)
    b.window = (before, after)
    # Kafka's own view of the records (offsets, LogAppendTime timestamps) is the reference
    b.readback = {(t, p): k.consume_partition(t, p) for (t, p) in b.produced}
    b.expected = {tp: [record_to_cat_json(r) for r in rs] for tp, rs in b.readback.items()}

    b.dir = cluster.root / "dirs" / unique("fixture-backup")
    b.name = unique("sink-fixture")
    cfg = sink_config(f"{b.create_topic},{b.append_topic}", b.dir, cluster.bootstrap,
                      **{"tasks.max": 3, "max.segment.size.bytes": MIB})
    cluster.connect.create_connector(b.name, cfg)
    b.status = cluster.connect.wait_for_task_state(b.name, "RUNNING", count=3, timeout=90)
    for topic in (b.create_topic, b.append_topic):
        wait_backup_complete(kbackup, b.dir, topic,
                             {p: len(b.expected[(topic, p)]) for p in range(3)}, timeout=120)
    b.kafka = k
    yield b
    cluster.connect.delete_connector(b.name)


def test_plugin_is_listed_by_the_worker(cluster, plugin_dir):
    classes = {p["class"]: p for p in cluster.connect.plugins()}
    assert SINK in classes, f"{SINK} not loaded from plugin.path={plugin_dir}: {sorted(classes)}"
    assert classes[SINK]["type"] == "sink"


def test_broker_kept_what_was_produced(fixture_backup):
    """Sanity of the reference itself: the broker holds exactly what the test sent."""
    b = fixture_backup
    lo, hi = b.window
    for (topic, p), sent in b.produced.items():
        got = b.readback[(topic, p)]
        assert [(r.key, r.value, r.headers) for r in got] == \
            [(s["key"], s["value"], s["headers"]) for s in sent]
        if topic == b.create_topic:
            assert [(r.timestamp, r.timestamp_type) for r in got] == \
                [(s["timestamp"], "CreateTime") for s in sent]
        else:
            assert all(r.timestamp_type == "LogAppendTime" and lo <= r.timestamp <= hi + 1000
                       for r in got), got[:3]


def test_backup_holds_exactly_the_produced_records(fixture_backup, kbackup):
    b = fixture_backup
    for topic in (b.create_topic, b.append_topic):
        by_p = cat_by_partition(kbackup, b.dir, topic)
        assert sorted(by_p) == [0, 1, 2]
        for p in range(3):
            assert_same_records(by_p[p], b.expected[(topic, p)], f"{topic}/{p}")
    # the one MiB value came through whole
    big = [r for r in b.expected[(b.create_topic, 1)] if r["key"] == b64(b"one MiB")]
    assert len(big) == 1 and len(big[0]["value"]) > MIB


def test_cat_filters_by_partition_and_offset(fixture_backup, kbackup):
    b = fixture_backup
    want = b.expected[(b.append_topic, 2)]
    assert kbackup.cat(b.dir, b.append_topic, partition=2) == want
    start = want[10]["offset"]
    assert kbackup.cat(b.dir, b.append_topic, partition=2, from_offset=start) == want[10:]


def test_three_tasks_share_six_partitions(fixture_backup, cluster):
    b = fixture_backup
    tasks = b.status["tasks"]
    assert len(tasks) == 3 and all(t["state"] == "RUNNING" for t in tasks)
    # right after the tasks join, a member can briefly hold everything: wait for the group
    # to settle, then each of the three consumers owns two partitions and none is shared
    seen = []

    def balanced():
        members = b.kafka.group_members(f"connect-{b.name}")
        seen[:] = [members]
        return members if len(members) == 3 and all(len(m) == 2 for m in members) else None

    try:
        members = wait_until(balanced, 30, "three sink consumers with two partitions each")
    except TestbedError as e:
        raise AssertionError(f"{e}: last assignment {seen}") from None
    assigned = [tp for m in members for tp in m]
    assert sorted(assigned) == sorted(b.produced), "each partition owned by exactly one task"


def test_connect_commits_the_durable_end(fixture_backup):
    """preCommit hands Connect the durable offsets: the sink's group ends up exactly at the
    end of each partition, never beyond."""
    b = fixture_backup
    ends = {tp: b.kafka.watermarks(*tp)[1] for tp in b.produced}
    got = b.kafka.wait_for_group_offsets(f"connect-{b.name}", ends, timeout=60)
    assert {tp: got[tp] for tp in ends} == ends


def test_native_log_lines_reach_the_worker_log_through_slf4j(fixture_backup, cluster):
    """The Rust core's `log` lines are forwarded over JNI to SLF4J loggers named
    io.kbackup.native.<module>, so they land in the worker's own log file."""
    b = fixture_backup
    log = cluster.worker.log_file.read_text(errors="replace")
    native = [ln for ln in log.splitlines()
              if " io.kbackup.native.kbackup_core" in ln and f"backup sink {b.name}" in ln]
    assert native, "no line of the native sink in the worker log"
    assert all(" INFO " in ln for ln in native), native[:3]


def test_inspect_json_counts_match(fixture_backup, kbackup):
    b = fixture_backup
    doc = kbackup.inspect(b.dir)
    counts = inspect_counts(doc)
    want = {tp: len(rs) for tp, rs in b.expected.items()}
    assert counts == want, f"inspect --json: {str(doc)[:3000]}"


# ---------------------------------------------------------------------------------------------


def test_aborted_transaction_is_not_backed_up(cluster, kbackup, workdir):
    k = cluster.kafka
    topic = unique("tx")
    k.create_topic(topic, 1)
    txid = unique("tx-producer")
    k.produce_transaction(topic, [{"key": b"c1", "value": b"committed %d" % i} for i in range(3)],
                          transactional_id=txid)
    aborted = k.produce_transaction(topic, [{"key": b"a", "value": b"ABORTED %d" % i}
                                            for i in range(4)], abort=True, transactional_id=txid)
    k.produce_transaction(topic, [{"key": b"c2", "value": b"committed %d" % i} for i in range(3, 5)],
                          transactional_id=txid)
    k.produce(topic, [{"key": b"plain", "value": b"after the transactions"}])

    committed = k.consume_partition(topic, 0, "read_committed")
    everything = k.consume_partition(topic, 0, "read_uncommitted")
    assert len(committed) == 6
    assert len([r for r in everything if r.value.startswith(b"ABORTED")]) == 4, \
        "the broker must hold the aborted records for this test to mean anything"

    name = unique("sink-tx")
    cluster.connect.create_connector(name, sink_config(topic, workdir, cluster.bootstrap))
    try:
        backed = wait_backup_complete(kbackup, workdir, topic, {0: 6})[0]
        assert_same_records(backed, [record_to_cat_json(r) for r in committed], topic)
        aborted_offsets = {d["offset"] for d in aborted}
        assert not aborted_offsets & {r["offset"] for r in backed}
    finally:
        cluster.connect.delete_connector(name)


# ---------------------------------------------------------------------------------------------
# Validation: PUT .../config/validate and POST /connectors


def _bad_configs(base: dict[str, Any], tmp: Path) -> dict[str, tuple[dict[str, Any], str, str]]:
    """case -> (config, config key that is wrong, text the error must contain)."""
    a_file = tmp / "a-regular-file"
    a_file.write_text("not a directory")
    unwritable = a_file / "backup"  # below a regular file: no user, root included, can create it

    def with_(**kv):
        return config_with(base, **kv)

    json_conv = "org.apache.kafka.connect.json.JsonConverter"
    return {
        "value.converter JSON": (with_(value__converter=json_conv), "value.converter",
                                 "ByteArrayConverter"),
        "key.converter String": (with_(key__converter="org.apache.kafka.connect.storage.StringConverter"),
                                 "key.converter", "ByteArrayConverter"),
        "header.converter Simple": (
            with_(header__converter="org.apache.kafka.connect.storage.SimpleHeaderConverter"),
            "header.converter", "ByteArrayConverter"),
        "header.converter unset": (with_(header__converter=None), "header.converter",
                                   "ByteArrayConverter"),
        "target.dir missing": (with_(target__dir=None), "target.dir", "target.dir"),
        "target.dir unwritable": (with_(target__dir=str(unwritable)), "target.dir",
                                  str(unwritable)),
        # a mistyped object-store URL is refused, never taken as a relative directory "s3:"
        "target.dir s3 URL": (with_(target__dir="s3:kbackup-bucket/prefix"), "target.dir",
                              "looks like a URL"),
        "isolation unset": (with_(consumer__override__isolation__level=None),
                            "consumer.override.isolation.level", "read_committed"),
        "isolation read_uncommitted": (
            with_(consumer__override__isolation__level="read_uncommitted"),
            "consumer.override.isolation.level", "read_committed"),
        "topic unknown": (with_(), "topics", base["topics"]),
        "cluster unreachable": (with_(cluster__bootstrap__servers="127.0.0.1:1"),
                                "cluster.bootstrap.servers", "127.0.0.1:1"),
    }


CASES = ["value.converter JSON", "key.converter String", "header.converter Simple",
         "header.converter unset", "target.dir missing", "target.dir unwritable",
         "target.dir s3 URL",
         "isolation unset", "isolation read_uncommitted", "topic unknown", "cluster unreachable"]


def test_valid_config_passes_validation(cluster, workdir, plugin_dir):
    topic = unique("valid")
    cluster.kafka.create_topic(topic, 1)  # validate checks that listed topics exist
    resp = cluster.connect.validate(SINK, sink_config(topic, workdir / "b", cluster.bootstrap))
    assert resp["error_count"] == 0, validation_errors(resp)


@pytest.mark.parametrize("case", CASES)
def test_bad_config_is_rejected_with_a_clear_message(cluster, workdir, plugin_dir, case):
    topic = unique("invalid")
    base = sink_config(topic, workdir / "b", cluster.bootstrap)
    cfg, key, must_contain = _bad_configs(base, workdir)[case]

    resp = cluster.connect.validate(SINK, cfg)
    errs = validation_errors(resp)
    assert resp["error_count"] >= 1, f"{case}: validate reported no error"
    hits = [(k, m) for k, msgs in errs.items() for m in msgs
            if must_contain in m and (k == key or key in m)]
    assert hits, f"{case}: no error on {key} mentioning {must_contain!r}: {errs}"

    name = unique("sink-invalid")
    with pytest.raises(ConnectError) as exc:
        cluster.connect.create_connector(name, cfg)
    assert exc.value.status == 400, exc.value
    assert must_contain in exc.value.body, exc.value.body
    assert name not in cluster.connect.connectors()
    if case == "target.dir unwritable":
        assert not Path(cfg["target.dir"]).exists()
    if case == "target.dir s3 URL":
        made = [str(p) for p in cluster.root.rglob("s3:")]
        assert not made, f"a local directory was made for the URL: {made}"



# ---------------------------------------------------------------------------------------------


def _produce_round(k, topic: str, round_no: int, per_partition: int = 10) -> None:
    k.produce(topic, [{"partition": p, "key": b"r%d-p%d-%d" % (round_no, p, i),
                       "value": b"round %d partition %d record %d" % (round_no, p, i)}
                      for p in range(3) for i in range(per_partition)])


def test_delete_and_recreate_continues_without_duplicates_or_gaps(cluster, kbackup, workdir):
    """The CONNECTOR is deleted and re-created (same name, then a new one) over the same topic
    and target.dir: it continues where the files end. A deleted and re-created TOPIC is the
    opposite case and fails loudly (test_backup_faults.py, issue 8 defect 10)."""
    k = cluster.kafka
    topic = unique("recreate")
    k.create_topic(topic, 3)
    name = unique("sink-recreate")
    cfg = sink_config(topic, workdir, cluster.bootstrap, **{"tasks.max": 2})

    _produce_round(k, topic, 1)
    cluster.connect.create_connector(name, cfg)
    wait_backup_complete(kbackup, workdir, topic, {p: 10 for p in range(3)})
    cluster.connect.delete_connector(name)
    cluster.connect.wait_deleted(name)

    _produce_round(k, topic, 2)
    cluster.connect.create_connector(name, cfg)
    wait_backup_complete(kbackup, workdir, topic, {p: 20 for p in range(3)})
    cluster.connect.delete_connector(name)
    cluster.connect.wait_deleted(name)

    # a connector under a NEW name has no committed offsets: the files alone say where to go on
    _produce_round(k, topic, 3)
    other = unique("sink-recreate-renamed")
    cluster.connect.create_connector(other, cfg)
    try:
        wait_backup_complete(kbackup, workdir, topic, {p: 30 for p in range(3)})
        # once Connect has committed the end, nothing is in flight: a late duplicate would be
        # on disk by now and show up as a 31st record
        k.wait_for_group_offsets(f"connect-{other}", {(topic, p): 30 for p in range(3)})
        backed = wait_backup_complete(kbackup, workdir, topic, {p: 30 for p in range(3)}, timeout=5)
        for p in range(3):
            want = [record_to_cat_json(r) for r in k.consume_partition(topic, p)]
            assert [r["offset"] for r in backed[p]] == list(range(30))
            assert_same_records(backed[p], want, f"{topic}/{p}")
    finally:
        cluster.connect.delete_connector(other)
