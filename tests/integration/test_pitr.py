"""Point-in-time restore (issue 11) against a real broker and Connect worker.

Why: "give me the topic as it was at 09:14, before the bad deploy" is the restore operators
ask for most. A topic is written over a time span with explicit CreateTime stamps (so the
test is deterministic and never sleeps for the data): old records, good records, a BAD batch
after the cut, one late record stamped before the cut but written after the bad batch
(out-of-order CreateTime), and good records after. Consumer groups are captured by
`kbackup backup --group-offsets` before the cut and moved and captured again after it. The
backup is pruned (its oldest segments dropped), then restored as of the cut into a NEW cluster
by the CLI and by the source connector: exactly the records whose own timestamp is at or
before the cut (byte-exact, read back with confluent-kafka), and each group reads exactly what
it had not read at the cut. An offset window is restored and planned too.
"""

from __future__ import annotations

import datetime as dt
import json
import time

from conftest import unique
from fixtures import assert_restored_equal, source_config, wait_restore_finished
from test_group_offsets import _read_as_group

HOUR = 3_600_000


def _iso(ms: int, offset_hours: int) -> str:
    """`ms` as ISO-8601 in the zone UTC+offset_hours, e.g. 2026-12-01T10:14:00.123+01:00."""
    tz = dt.timezone(dt.timedelta(hours=offset_hours))
    return dt.datetime.fromtimestamp(ms / 1000, tz).isoformat(timespec="milliseconds")


def _recs(tag: str, n: int, ts0: int, step: int = 1000) -> list[dict]:
    return [{"partition": 0, "key": b"%s-%d" % (tag.encode(), i),
             "value": b"%s value %d " % (tag.encode(), i) + bytes(range(256)) * 2,
             "headers": [("tag", tag.encode()), ("i", b"%d" % i), ("null", None)],
             "timestamp": ts0 + i * step} for i in range(n)]


def test_restore_as_of_a_time_into_a_new_cluster_by_cli_and_connector(
        cluster, new_cluster, kbackup, tmp_path):
    k = cluster.kafka
    topic = unique("pitr")
    k.create_topic(topic, 1)
    now = int(time.time() * 1000)
    # 0..29 ancient (pruned later), 30..69 good (the last hour).
    k.produce(topic, _recs("ancient", 30, now - 3 * HOUR) + _recs("good", 40, now - HOUR))
    g_pruned, g_mid, g_end, g_late = (unique(f"pitr-{n}") for n in ("pruned", "mid", "end", "late"))
    k.commit_group_offsets(g_pruned, {(topic, 0): 5})      # inside what prune drops
    k.commit_group_offsets(g_mid, {(topic, 0): 50})
    k.commit_group_offsets(g_end, {(topic, 0): 70})        # had read everything at the cut

    backup = tmp_path / "backup"
    kbackup.run("backup", "--bootstrap-server", cluster.bootstrap, "--dir", backup, "--topics",
                topic, "--group-offsets", "--max-segment-bytes", "4000")
    time.sleep(0.05)
    cut = int(time.time() * 1000)  # "09:14": after the first capture, before the bad deploy
    time.sleep(1.1)

    # After the cut: the bad batch (70..89), one record stamped BEFORE the cut arriving late
    # (90), good records after (91..100). Groups move on, one group appears.
    k.produce(topic, _recs("bad", 20, cut + 5000, 1) + _recs("late", 1, cut - 200)
              + _recs("after", 10, cut + 60_000))
    k.commit_group_offsets(g_mid, {(topic, 0): 85})
    k.commit_group_offsets(g_end, {(topic, 0): 101})
    k.commit_group_offsets(g_late, {(topic, 0): 80})
    kbackup.run("backup", "--bootstrap-server", cluster.bootstrap, "--dir", backup, "--topics",
                topic, "--group-offsets", "--max-segment-bytes", "4000")
    source = k.consume_partition(topic, 0)
    assert len(source) == 101

    # Prune the ancient segments: the window restore must work on what is left.
    pruned = json.loads(kbackup.run("prune", backup, "--older-than", "2h", "--json").stdout)
    assert pruned["removed_segments"] > 0
    left = [r["offset"] for r in kbackup.cat(backup, topic)]
    first_left = left[0]
    assert 0 < first_left <= 30, left[:5]

    want = [r for r in source if r.offset >= first_left and r.timestamp <= cut]
    assert [r.offset for r in want][-2:] == [69, 90], "the late record is in the window"
    assert not any(r.key.startswith(b"bad") for r in want)

    def reads_for(pos: int) -> list[bytes]:
        """What a group at original position `pos` at the cut has not read, as restored."""
        return [r.value for r in want if r.offset >= pos]

    # restore-plan shows the window and where each group lands, from the backup alone.
    plan = json.loads(kbackup.run("restore-plan", backup, "--topics", topic, "--to-time",
                                  _iso(cut, 1), "--json").stdout)
    p0 = plan["topics"][0]["partition_plans"][0]
    assert (p0["records"], p0["first_offset"], p0["last_offset"]) == (len(want), first_left, 90)
    groups = {g["group"]: g for g in p0["groups"]}
    assert groups[g_mid]["backed_up_offset"] == 50, "the capture at or before the cut"
    assert groups[g_mid]["resume_at_original"] == 50
    assert groups[g_pruned]["resume_at_original"] == first_left
    assert groups[g_end]["resume_at_original"] == 90, "70 resumes at the late record"
    assert p0["groups_not_captured"] == [g_late]

    target = new_cluster("pitr-target")
    tk = target.kafka

    # 1. The CLI, as of the cut written with a +01:00 zone.
    t_cli = unique("pitr-cli")
    kbackup.run("restore", "--bootstrap-server", target.bootstrap, "--dir", backup, "--topics",
                topic, "--rename", f"{topic}:{t_cli}", "--to-time", _iso(cut, 1),
                "--group-offsets", timeout=300)
    # 2. The source connector, as of the cut in epoch milliseconds.
    t_conn = unique("pitr-conn")
    name = unique("pitr-restore")
    target.connect.create_connector(name, source_config(
        topic, backup, target.bootstrap, **{"topics.rename": f"{topic}:{t_conn}",
                                            "restore.time.to": str(cut)}))
    wait_restore_finished(kbackup, backup, target.connect, name, [(topic, 0)])
    target.connect.delete_connector(name)

    for t in (t_cli, t_conn):
        got = tk.consume_partition(t, 0)
        assert_restored_equal(got, want, f"{t} restored as of the cut")
        assert tk.group_offsets(g_late) == {}, "captured only after the cut: not restored"
        for g, pos in ((g_pruned, 5), (g_mid, 50), (g_end, 70)):
            read = _read_as_group(target.bootstrap, g, [t], {(t, 0)})[(t, 0)]
            assert read == reads_for(pos), f"group {g} on {t}: {len(read)} records read, " \
                                           f"{len(reads_for(pos))} not yet read at the cut"


def test_offset_window_restores_exactly_the_named_offsets(cluster, kbackup, tmp_path):
    k = cluster.kafka
    topic = unique("pitr-off")
    k.create_topic(topic, 2)
    now = int(time.time() * 1000)
    recs = _recs("r", 30, now - HOUR)
    k.produce(topic, recs + [dict(r, partition=1) for r in recs])
    g = unique("pitr-off-g")
    k.commit_group_offsets(g, {(topic, 0): 5, (topic, 1): 25})
    backup = tmp_path / "b"
    kbackup.run("backup", "--bootstrap-server", cluster.bootstrap, "--dir", backup, "--topics",
                topic, "--group-offsets")
    source = k.consume_topic(topic)
    window = ["--from-offset", f"{topic}=10,{topic}:1=12", "--to-offset", f"{topic}=19"]

    plan = json.loads(kbackup.run("restore-plan", backup, "--topics", topic, *window,
                                  "--json").stdout)
    pp = {p["partition"]: p for p in plan["topics"][0]["partition_plans"]}
    assert [(pp[p]["first_offset"], pp[p]["last_offset"], pp[p]["records"]) for p in (0, 1)] \
        == [(10, 19, 10), (12, 19, 8)]
    assert pp[0]["groups"][0]["resume_at_original"] == 10, "before the window: its first record"
    assert pp[1]["groups"][0]["resume_at_log_end"] is True, "past the window: the end"

    # A surgical restore: back into the same cluster under another name.
    restored = unique("pitr-off-restored")
    kbackup.run("restore", "--bootstrap-server", cluster.bootstrap, "--dir", backup, "--topics",
                topic, "--rename", f"{topic}:{restored}", *window, "--group-offsets", timeout=300)
    for p, lo in ((0, 10), (1, 12)):
        got = k.consume_partition(restored, p)
        assert_restored_equal(got, [r for r in source[p] if lo <= r.offset <= 19],
                              f"{topic}-{p} offsets {lo}..=19")
    # Past the window: the end of the restored partition (8 records and a commit marker).
    end1 = k.watermarks(restored, 1)[1]
    assert end1 >= 8
    got = {tp: o for tp, o in k.group_offsets(g).items() if tp[0] == restored}
    assert got == {(restored, 0): 0, (restored, 1): end1}

    # A bad bound is one clear line naming the flag, before anything is written.
    bad = kbackup.run("restore", "--bootstrap-server", cluster.bootstrap, "--dir", backup,
                      "--topics", topic, "--to-time", "09:14", check=False)
    assert bad.returncode != 0 and "--to-time" in bad.stderr and "2026-12-01T09:14:00Z" in bad.stderr, bad.stderr
