"""Consumer-group offsets survive a cluster loss (issue 4), against real brokers and workers.

The source cluster is built so that offsets can NOT line up after a restore: transaction
commit markers take offsets, an aborted transaction is not backed up, and
`kafka-delete-records` moves log starts above 0. Groups stand in the middle of partitions (on
a record, on a commit marker, inside the aborted transaction), at the end, and before the first
backed-up record. The sink captures them, the source cluster is destroyed, the restore
connector writes everything into a NEW cluster and commits translated offsets. Each group's
consumer on the new cluster must then read exactly what it had not consumed at backup time,
compared by payload with what the original cluster held.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError

from conftest import sink_config, unique, wait_backup_complete
from fixtures import source_config, wait_restore_finished
from testbed.procs import wait_until
from testbed.tools import CONSUMER_GROUPS, DELETE_RECORDS


def _recs(topic: str, p: int, tag: str, n: int) -> list[dict]:
    return [{"partition": p, "key": b"%s-%d" % (tag.encode(), i),
             "value": b"%s/p%d/%s/%d" % (topic.encode(), p, tag.encode(), i)} for i in range(n)]


def _delete_records(cluster, tmp: Path, topic: str, partition: int, offset: int) -> None:
    spec = tmp / f"delete-{topic}-{partition}.json"
    spec.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": topic, "partition": partition, "offset": offset}]}))
    cluster.run_tool(DELETE_RECORDS, "--bootstrap-server", cluster.bootstrap,
                     "--offset-json-file", str(spec))


def _read_as_group(bootstrap: str, group: str, topics: list[str],
                   tps: set[tuple[str, int]], timeout: float = 60) -> dict[tuple[str, int], list[bytes]]:
    """Joins `group` (subscribe, as an application would) and reads every assigned partition
    from the group's committed offset to the end. auto.offset.reset=error: a partition without
    a committed offset is an error, not a silent jump."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "enable.auto.commit": False, "auto.offset.reset": "error",
                  "enable.partition.eof": True, "isolation.level": "read_committed",
                  "session.timeout.ms": 6000})
    got: dict[tuple[str, int], list[bytes]] = {tp: [] for tp in tps}
    eof: set[tuple[str, int]] = set()
    try:
        c.subscribe(topics)
        deadline = time.monotonic() + timeout
        while eof != tps:
            if time.monotonic() > deadline:
                raise AssertionError(f"group {group!r}: reading did not reach the end of "
                                     f"{sorted(tps - eof)} in {timeout}s")
            m = c.poll(0.5)
            if m is None:
                continue
            tp = (m.topic(), m.partition())
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(tp)
                    continue
                raise AssertionError(f"group {group!r} consuming {tp}: {m.error()}")
            got.setdefault(tp, []).append(m.value())
    finally:
        c.close()
    return got


class ActiveMember:
    """A consumer that stays a member of `group` (polling in a thread) until stopped."""

    def __init__(self, bootstrap: str, group: str, topic: str):
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                           "enable.auto.commit": False, "session.timeout.ms": 10000})
        self.c.subscribe([topic])
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop_event.is_set():
            self.c.poll(0.2)

    def stop(self):
        self.stop_event.set()
        self.thread.join(10)
        self.c.close()


def _describe_offsets(cluster, group: str) -> dict[tuple[str, int], str]:
    """{(topic, partition): CURRENT-OFFSET column} from Kafka's own `kafka-consumer-groups
    --describe`. The group column is cut off by its known text (ids may contain spaces)."""
    out = cluster.run_tool(CONSUMER_GROUPS, "--bootstrap-server", cluster.bootstrap,
                           "--describe", "--group", group).stdout
    rows = {}
    for line in out.splitlines():
        if not line.startswith(group + " "):
            continue
        cols = line[len(group):].split()
        if len(cols) >= 3 and cols[1].isdigit():
            rows[(cols[0], int(cols[1]))] = cols[2]
    assert rows, f"kafka-consumer-groups --describe --group {group!r} printed no rows:\n{out}"
    return rows


def test_groups_resume_exactly_where_they_stood_after_restore_into_a_new_cluster(
        new_cluster, kbackup, tmp_path):
    src = new_cluster("groups-source")
    k = src.kafka
    A, B = unique("go-a"), unique("go-b")
    k.create_topic(A, 3)
    k.create_topic(B, 1)

    # A/0: committed tx, aborted tx, committed tx (each ends with a marker), then plain records
    tx1 = k.produce_transaction(A, _recs(A, 0, "tx1", 10), transactional_id=unique("tx0"))
    ab0 = k.produce_transaction(A, _recs(A, 0, "aborted", 5), abort=True,
                                transactional_id=unique("tx0"))
    tx3 = k.produce_transaction(A, _recs(A, 0, "tx3", 10), transactional_id=unique("tx0"))
    k.produce(A, _recs(A, 0, "plain", 5))
    assert ab0[0]["offset"] == tx1[-1]["offset"] + 2, "the commit marker must take an offset"
    # A/1: plain records, head deleted (log start 15)
    k.produce(A, _recs(A, 1, "plain", 40))
    _delete_records(src, tmp_path, A, 1, 15)
    # A/2: committed tx, aborted tx, plain; head deleted into the aborted transaction
    tx2 = k.produce_transaction(A, _recs(A, 2, "tx1", 10), transactional_id=unique("tx2"))
    ab2 = k.produce_transaction(A, _recs(A, 2, "aborted", 4), abort=True,
                                transactional_id=unique("tx2"))
    plain2 = k.produce(A, _recs(A, 2, "plain", 20))
    _delete_records(src, tmp_path, A, 2, ab2[1]["offset"])
    # B/0: plain records: offsets line up, the control case
    k.produce(B, _recs(B, 0, "plain", 30))

    tps = {(A, 0), (A, 1), (A, 2), (B, 0)}
    marks = {tp: k.watermarks(*tp) for tp in tps}
    assert marks[(A, 1)][0] == 15 and marks[(A, 2)][0] == ab2[1]["offset"], marks
    # The reference: what a read_committed consumer of the original cluster sees
    ref = {tp: k.consume_partition(tp[0], tp[1], start=marks[tp][0]) for tp in tps}
    assert not any(b"aborted" in r.value for rs in ref.values() for r in rs)
    assert len(ref[(A, 1)]) == 25 and ref[(A, 1)][0].offset == 15
    assert ref[(A, 2)][0].offset == plain2[0]["offset"]

    ends = {tp: marks[tp][1] for tp in tps}
    g_exact, g_marker, g_aborted = unique("go-exact"), unique("go marker/grp é"), unique("go-aborted")
    g_end, g_before, g_active = unique("go-end"), unique("go-before"), unique("go-active")
    groups = {
        # on a record
        g_exact: {(A, 0): tx1[5]["offset"], (A, 1): 20, (A, 2): plain2[3]["offset"], (B, 0): 10},
        # on a transaction commit marker (A/0, A/2)
        g_marker: {(A, 0): tx1[-1]["offset"] + 1, (A, 1): 30, (A, 2): tx2[-1]["offset"] + 1,
                   (B, 0): 15},
        # inside an aborted transaction (A/0)
        g_aborted: {(A, 0): ab0[2]["offset"], (A, 1): 16, (A, 2): plain2[12]["offset"], (B, 0): 20},
        # fully caught up
        g_end: dict(ends),
        # before the first backed-up record on every partition (A/1, A/2: below log start)
        g_before: {tp: 0 for tp in tps},
        # will have an active member on the target: must NOT be moved
        g_active: {(A, 0): tx3[3]["offset"], (A, 1): 25, (A, 2): plain2[10]["offset"], (B, 0): 5},
    }
    for g, offs in groups.items():
        k.commit_group_offsets(g, offs)
        assert k.group_offsets(g) == offs, g

    # Back up with group capture every second; wait for the records and every group's offsets
    backup = tmp_path / "backup"
    sink = unique("sink-groups")
    src.connect.create_connector(sink, sink_config(
        f"{A},{B}", backup, src.bootstrap,
        **{"tasks.max": 2, "consumer.offsets.sync.interval.ms": 1000}))
    for t, n in ((A, 3), (B, 1)):
        wait_backup_complete(kbackup, backup, t, {p: len(ref[(t, p)]) for p in range(n)})

    want_rows = {(g, t, p): o for g, offs in groups.items() for (t, p), o in offs.items()}

    def captured():
        doc = json.loads(kbackup.run("offsets", backup, "--json").stdout)
        rows = {(r["group"], r["topic"], r["partition"]): r["committed_offset"]
                for r in doc["offsets"]}
        return rows if all(rows.get(key) == o for key, o in want_rows.items()) else None

    try:
        wait_until(captured, 60, "kbackup offsets to show every group", interval=1.0)
    except Exception:
        doc = kbackup.run("offsets", backup, "--json").stdout
        raise AssertionError(f"the backup did not capture every group offset {want_rows}; "
                             f"`kbackup offsets --json`: {doc[:3000]}") from None
    src.connect.delete_connector(sink)
    src.destroy()  # the original cluster is gone for good

    # New cluster; g_active has a live member there before the restore starts
    dst = new_cluster("groups-target")
    dummy = unique("go-dummy")
    dst.kafka.create_topic(dummy, 1)
    member = ActiveMember(dst.bootstrap, g_active, dummy)
    try:
        wait_until(lambda: dst.kafka.group_members(g_active), 60, f"{g_active} to have a member")
        state = tmp_path / "restore-state"
        name = unique("restore-groups")
        dst.connect.create_connector(name, source_config(
            f"{A},{B}", backup, dst.bootstrap,
            **{"tasks.max": 2, "restore.state.dir": str(state)}))
        st = wait_restore_finished(kbackup, backup, dst.connect, name, tps, state_dir=state)

        # The restored records themselves (precondition of everything below)
        restored = {tp: dst.kafka.consume_partition(*tp) for tp in tps}
        for tp in tps:
            assert [r.value for r in restored[tp]] == [r.value for r in ref[tp]], \
                f"{tp}: restored payloads differ from the original"
        new_offset = {r.value: r.offset for rs in restored.values() for r in rs}
        new_end = {tp: dst.kafka.watermarks(*tp)[1] for tp in tps}

        def expected_offset(tp, o):
            later = [r for r in ref[tp] if r.offset >= o]
            return new_offset[later[0].value] if later else new_end[tp]

        def unread(tp, o):
            return [r.value for r in ref[tp] if r.offset >= o]

        # the scenario means something only if offsets really moved on the gapped partitions
        moved = {tp for offs in groups.values() for tp, o in offs.items()
                 if expected_offset(tp, o) != o}
        assert {(A, 0), (A, 1), (A, 2)} <= moved and (B, 0) not in moved, moved

        problems: list[str] = []
        # 1. restore-status: committed (or refused) at the translated offset
        by_tp = {(p["topic"], p["partition"]): p for p in st["partitions"]}
        for g, offs in groups.items():
            for tp, o in offs.items():
                entry = [x for x in by_tp[tp]["groups"] if x["group"] == g]
                want_state = "refused" if g == g_active else "committed"
                want = {"state": want_state, "offset": expected_offset(tp, o)}
                if not entry:
                    problems.append(f"restore-status: {g!r} missing on {tp}")
                    continue
                got = {k2: entry[0]["commit"].get(k2) for k2 in ("state", "offset")}
                if got != want or entry[0]["backed_up_offset"] != o:
                    problems.append(f"restore-status {g!r} {tp}: backed_up_offset "
                                    f"{entry[0]['backed_up_offset']} (want {o}), commit "
                                    f"{entry[0]['commit']} (want {want})")
        active_entries = [x for p in by_tp.values() for x in p["groups"] if x["group"] == g_active]
        if not all("member" in x["commit"].get("reason", "") for x in active_entries):
            problems.append(f"the refusal must say the group has active members: {active_entries}")

        # 2. committed offsets on the new cluster, then 3. a consumer of each group reads
        # exactly what it had not consumed, 4. Kafka's own tool shows the translated offsets
        for g, offs in groups.items():
            committed = {tp: o for tp, o in dst.kafka.group_offsets(g).items() if tp in tps}
            if g == g_active:
                if committed:
                    problems.append(f"{g!r} has active members but was moved: {committed}")
                continue
            want_committed = {tp: expected_offset(tp, o) for tp, o in offs.items()}
            if committed != want_committed:
                problems.append(f"{g!r}: committed offsets on the new cluster {committed}, "
                                f"want {want_committed} (original {offs})")
                continue
            read = _read_as_group(dst.bootstrap, g, [A, B], tps)
            for tp, o in offs.items():
                want_vals = unread(tp, o)
                got_vals = read.get(tp, [])
                if got_vals != want_vals:
                    missing = [v for v in want_vals if v not in got_vals]
                    extra = [v for v in got_vals if v not in want_vals]
                    problems.append(f"{g!r} {tp} (original offset {o}): read {len(got_vals)} "
                                    f"records, want {len(want_vals)}; missing {missing[:3]}, "
                                    f"repeated/extra {extra[:3]}")
            described = _describe_offsets(dst, g)
            want_desc = {tp: str(v) for tp, v in want_committed.items()}
            if {tp: described.get(tp) for tp in tps} != want_desc:
                problems.append(f"kafka-consumer-groups --describe {g!r}: {described}, "
                                f"want {want_desc}")

        assert not problems, "\n".join(problems)
        # the group with a member is reported, everyone else was committed: the restore finished
        assert st["finished"] is True
    finally:
        member.stop()
    # once its member is gone, the group is still where it was (never moved behind its back)
    assert not {tp for tp in dst.kafka.group_offsets(g_active) if tp in tps}
