"""The restore under faults (issue 8): task restarts with acknowledgements in flight, worker
SIGKILLs with and without exactly-once, CLI SIGKILLs, tasks.max changes and a broker restart.

One backup serves every test: a topic of several partitions written on the shared cluster,
with `retention.ms` set (a restore must hold it off and give it back), consumer groups
committed at many positions, backed up by the CLI with `--group-offsets`. Every restore goes
into a NEW cluster; what it wrote is read back with confluent-kafka (read_committed) and
compared with the original topic, and each group is read by a real consumer from its
translated offset, which must give exactly the records it had not read.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from typing import Callable, Optional

import pytest

from conftest import unique
from fixtures import source_config, wait_restore_finished
from testbed.procs import wait_until

PARTITIONS = 4
RECORDS = 60_000  # in total, spread over the partitions (the SIGKILL loops)
RETENTION_MS = 604_800_000  # 7 days: not the broker default, held at -1 during the restore


class Backup:
    pass


def make_backup(cluster, kbackup, directory, records: int) -> Backup:
    b = Backup()
    b.records = records
    b.topic = unique("rf")
    k = cluster.kafka
    k.create_topic(b.topic, PARTITIONS, {"retention.ms": RETENTION_MS})
    k.produce(b.topic, [{"partition": i % PARTITIONS, "key": b"k%d" % (i % 97),
                         "value": b"rf-%06d-" % i + b"x" * 40,
                         "headers": [("i", b"%d" % i)] if i % 3 == 0 else []}
                        for i in range(records)],
              **{"linger.ms": 20, "batch.size": 256 * 1024})
    b.original = {p: k.consume_partition(b.topic, p, timeout=120) for p in range(PARTITIONS)}
    assert sum(len(v) for v in b.original.values()) == records
    # groups at the start, at many positions in the middle and at the end of each partition
    rnd = random.Random(8)
    b.groups = {}
    for p in range(PARTITIONS):
        n = len(b.original[p])
        for pos in [0, n] + sorted(rnd.sample(range(1, n), 6)):
            g = f"{b.topic}-g{p}-{pos}"
            off = b.original[p][pos].offset if pos < n else k.watermarks(b.topic, p)[1]
            k.commit_group_offsets(g, {(b.topic, p): off})
            b.groups[g] = (p, off)
    b.dir = directory / "backup"
    kbackup.run("backup", "--bootstrap-server", cluster.bootstrap, "--dir", b.dir,
                "--topics", b.topic, "--group-offsets", "-q", timeout=300)
    return b


@pytest.fixture(scope="module")
def bk(cluster, kbackup, tmp_path_factory) -> Backup:
    """The backup the SIGKILL loops restore: large enough to be killed ten times."""
    return make_backup(cluster, kbackup, tmp_path_factory.mktemp("rf-large"), RECORDS)


@pytest.fixture(scope="module")
def small_bk(cluster, kbackup, tmp_path_factory) -> Backup:
    """The backup of the quick regression tests."""
    return make_backup(cluster, kbackup, tmp_path_factory.mktemp("rf-small"), 12_000)


def raw_bytes(kbackup, b: Backup) -> int:
    """The backup's records in uncompressed bytes (`inspect`), to size produce quotas."""
    import json

    return json.loads(kbackup.run("inspect", b.dir, "--json").stdout)["raw_bytes"]


def written(target, topic: str) -> int:
    try:
        return sum(target.kafka.watermarks(topic, p)[1] for p in range(PARTITIONS))
    except Exception:  # noqa: BLE001 - topic not created yet
        return 0


def check_restored(b: Backup, target, topic: Optional[str] = None,
                   allow_duplicates: bool = False) -> int:
    """Every original record restored, in order; returns the number of duplicates (fails on
    any unless `allow_duplicates`, and on any loss or reordering always)."""
    topic = topic or b.topic
    dups = 0
    for p in range(PARTITIONS):
        got = [r.value for r in target.kafka.consume_partition(topic, p, timeout=120)]
        want = [r.value for r in b.original[p]]
        if got == want:
            continue
        first = list(dict.fromkeys(got))
        missing = set(want) - set(got)
        assert not missing, f"partition {p}: {len(missing)} records lost, e.g. {sorted(missing)[:3]}"
        # a resent stretch repeats records; the first copies must still be in order
        assert first == want, f"partition {p}: records out of order"
        dups += len(got) - len(want)
        if not allow_duplicates:
            raise AssertionError(f"partition {p}: {len(got) - len(want)} duplicates")
    return dups


def check_groups_and_configs(b: Backup, target, topic: Optional[str] = None,
                             allow_duplicates: bool = False) -> None:
    """retention.ms is back, and each group's committed offset on the target (read with
    Kafka's admin API) makes it read exactly the records it had not read at backup time."""
    topic = topic or b.topic
    wait_until(lambda: target.kafka.topic_config(topic)["retention.ms"] == str(RETENTION_MS),
               30, "retention.ms of the restored topic given back")
    restored = {p: target.kafka.consume_partition(topic, p, timeout=120)
                for p in range(PARTITIONS)}
    for g, (p, off) in b.groups.items():
        committed = target.kafka.group_offsets(g).get((topic, p))
        assert committed is not None, f"group {g} has no committed offset on {topic}/{p}"
        got = [r.value for r in restored[p] if r.offset >= committed]
        want = [r.value for r in b.original[p] if r.offset >= off]
        if allow_duplicates and got != want:
            # at-least-once: re-reads of duplicated records are allowed, a skipped one is not
            missing = set(want) - set(got)
            assert not missing, f"group {g} skips {len(missing)} unread records"
            continue
        assert got == want, (f"group {g} (backed up at offset {off} of partition {p}, "
                             f"committed {committed}) reads {len(got)} records, should read "
                             f"its {len(want)} unread ones")


def restore_config(b: Backup, target, state, **extra) -> dict:
    return source_config(b.topic, b.dir, target.bootstrap,
                         **{"restore.state.dir": str(state), "restore.group.offsets": "true",
                            **extra})


# ---------------------------------------------------------------------------------------------
# Defect 1: a task stopped with acknowledgements in its buffers


def test_defect1_restart_with_acks_in_flight_finishes_with_groups_and_retention(
        small_bk, kbackup, new_cluster):
    bk = small_bk
    target = new_cluster("rf-restart", worker_overrides={"offset.flush.interval.ms": 500})
    name = unique("rf-restart")
    state = target.root / "state"
    target.connect.create_connector(name, restore_config(bk, target, state,
                                                         **{"batch.size": 200}))
    # Restart the task while records are being acknowledged: at 20%, 50%, and the moment the
    # last record is written (its acknowledgement then sits in the task's buffer).
    restarts = 0
    for frac in (0.2, 0.5, 1.0):
        wait_until(lambda: written(target, bk.topic) >= frac * bk.records, 120,
                   f"{frac:.0%} written", interval=0.01)
        target.connect.restart(name, include_tasks=True)
        restarts += 1
        time.sleep(0.5)
    wait_restore_finished(kbackup, bk.dir, target.connect, name,
                          {(bk.topic, p) for p in range(PARTITIONS)}, state_dir=state,
                          timeout=120)
    check_restored(bk, target)
    check_groups_and_configs(bk, target)
    log = target.worker.log_file.read_text(errors="replace")
    assert "restore finished" in log


# ---------------------------------------------------------------------------------------------
# Worker SIGKILLs through Connect, with and without exactly-once


def kill_loop(target, name: str, b: Backup, kills: int, rnd: random.Random) -> tuple[int, float]:
    """SIGKILLs the worker `kills` times at random moments while the restore writes (after
    each restart it waits for new records first, so each kill lands mid-restore while records
    remain); returns (kills made mid-restore, seconds)."""
    t0 = time.monotonic()
    mid = 0
    for i in range(kills):
        before = written(target, b.topic)
        if before < RECORDS:
            try:
                wait_until(lambda: written(target, b.topic) > before, 90,
                           "the restore to write again after a restart", interval=0.05)
            except AssertionError:
                pass
        time.sleep(rnd.uniform(0.1, 1.5))
        if written(target, b.topic) < RECORDS:
            mid += 1
        target.kill_worker()
        target.restart_worker()
    return mid, time.monotonic() - t0


@pytest.mark.faults
@pytest.mark.parametrize("exactly_once", [True, False], ids=["exactly-once", "at-least-once"])
def test_worker_sigkilled_ten_times_mid_restore(bk, kbackup, new_cluster, exactly_once):
    rnd = random.Random(81 if exactly_once else 82)
    target = new_cluster("rf-kill", exactly_once=exactly_once,
                         worker_overrides={"offset.flush.interval.ms": 1000})
    name = unique("rf-kill")
    state = target.root / "state"
    if exactly_once:
        # a transaction per poll of 100 records paces the restore (some 60 s for 60,000)
        extra = {"batch.size": 100, "producer.override.batch.size": 4096,
                 "exactly.once.support": "required"}
    else:
        # without transactions: small produce requests, one at a time, for the same pace
        extra = {"batch.size": 50, "producer.override.batch.size": 512,
                 "producer.override.max.in.flight.requests.per.connection": 1}
        # and a broker quota, so a fast machine cannot finish before the kills: some 70 s of
        # writing in all, of which the kill loop lets through a few seconds per cycle
        # the records' uncompressed bytes (what the producer sends), not the zstd segments'
        seg_bytes = raw_bytes(kbackup, bk)
        target.run_tool("kafka.admin.ConfigCommand", "--bootstrap-server", target.bootstrap,
                        "--alter", "--add-config", f"producer_byte_rate={max(1, seg_bytes // 70)}",
                        "--entity-type", "clients", "--entity-default")
    t0 = time.monotonic()
    target.connect.create_connector(name, restore_config(bk, target, state, **extra))
    mid, loop_s = kill_loop(target, name, bk, 10, rnd)
    # Kafka 4.3.1's transaction coordinator answers a commit that raced an abort it made itself
    # (a timed-out or fenced transaction) with INVALID_TXN_STATE, which the producer treats as
    # fatal, so Connect fails the task; later Kafka answers PRODUCER_FENCED there (KAFKA-20785),
    # which Connect handles. One CI run of this test met it. The runbook's answer is to restart
    # the failed task (docs/restore.md "Exactly once"); the test does that, at most twice, and
    # the checks below prove the restore is still exactly once afterwards.
    kafka_restarts = 0
    while True:
        try:
            wait_restore_finished(kbackup, bk.dir, target.connect, name,
                                  {(bk.topic, p) for p in range(PARTITIONS)}, state_dir=state,
                                  timeout=180)
            break
        except AssertionError as e:
            if not (exactly_once and "InvalidTxnStateException" in str(e) and kafka_restarts < 2):
                raise
            kafka_restarts += 1
            target.connect.restart(name, include_tasks=True, only_failed=True)
    total_s = time.monotonic() - t0
    dups = check_restored(bk, target, allow_duplicates=not exactly_once)
    check_groups_and_configs(bk, target, allow_duplicates=not exactly_once)
    logs = "".join(f.read_text(errors="replace")
                   for f in target.worker.log_file.parent.glob("*.log*"))
    reconciled = logs.count("(their acknowledgements were lost): not restored again")
    print(f"FIGURES connect exactly_once={exactly_once}: {RECORDS} records, 10 SIGKILLs "
          f"({mid} mid-restore), {dups} duplicates, {reconciled} partition opens reconciled "
          f"from the target, {kafka_restarts} task restarts after Kafka's INVALID_TXN_STATE, "
          f"kill loop {loop_s:.0f}s, total {total_s:.0f}s")
    assert mid >= 5, f"only {mid} of 10 kills landed mid-restore: slow the restore down"


# ---------------------------------------------------------------------------------------------
# The CLI restore SIGKILLed and re-run


@pytest.mark.faults
def test_cli_restore_sigkilled_ten_times_is_exactly_once(bk, kbackup, new_cluster):
    rnd = random.Random(83)
    target = new_cluster("rf-cli", with_worker=False)
    # A transaction spans up to 2 s of writing; a produce quota on the restore's client id
    # stretches the whole restore to some 200 s, so the ten killed runs (about 110 s in all)
    # leave part of it to the last run, which runs without the quota. Each run is killed a
    # random while after its first commit (`written` reads the last stable offsets), so each
    # makes some progress. (At 100 s, one CI run committed everything before the last run.)
    client_id = unique("rf-cli-restore")
    seg_bytes = raw_bytes(kbackup, bk)  # uncompressed: what the producer sends
    quota = ("kafka.admin.ConfigCommand", "--bootstrap-server", target.bootstrap, "--alter",
             "--entity-type", "clients", "--entity-name", client_id)
    target.run_tool(*quota, "--add-config", f"producer_byte_rate={max(1, seg_bytes // 200)}")
    argv = [str(kbackup.path), "restore", "--bootstrap-server", target.bootstrap,
            "--dir", str(bk.dir), "--topics", bk.topic, "--group-offsets", "-q",
            "--config", f"client.id={client_id}", "--state-dir", str(target.root / "state")]
    t0 = time.monotonic()
    kills = mid = 0
    while kills < 10:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        before = written(target, bk.topic)
        deadline = time.monotonic() + 60
        while proc.poll() is None and written(target, bk.topic) <= before \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rnd.uniform(0.05, 4.0))
        if proc.poll() is None:
            mid += 1  # the process exits as soon as the restore finished
            proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        kills += 1
    # Some transactions committed between the kills: the re-run resumes from a partial target.
    committed = sum(len(v) for v in target.kafka.consume_topic(bk.topic).values())
    target.run_tool(*quota, "--delete-config", "producer_byte_rate")
    final = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=300)
    assert final.returncode == 0, final.stderr
    total_s = time.monotonic() - t0
    dups = check_restored(bk, target, allow_duplicates=True)
    print(f"FIGURES cli: {RECORDS} records, 10 SIGKILLs ({mid} mid-restore), {committed} "
          f"records committed before the last run, {dups} duplicates, total {total_s:.0f}s")
    assert dups == 0, f"{dups} duplicates"
    check_groups_and_configs(bk, target)
    assert mid >= 5, f"only {mid} of 10 kills landed mid-restore"
    assert 0 < committed < RECORDS, f"{committed} records committed before the last run"


# ---------------------------------------------------------------------------------------------
# Rebalances: tasks.max changes while the restore runs


@pytest.mark.faults
def test_tasks_max_changes_mid_restore_lose_duplicate_and_hang_nothing(bk, kbackup, new_cluster):
    target = new_cluster("rf-tasks", worker_overrides={"offset.flush.interval.ms": 1000})
    name = unique("rf-tasks")
    state = target.root / "state"
    # Unthrottled, the restore finished in 9 s on one CI run, before the third change. A
    # produce quota on the tasks' shared client id stretches it to some 40 s, so every
    # change lands mid-restore (each rebalance takes a few seconds).
    client_id = unique("rf-tasks-restore")
    target.run_tool("kafka.admin.ConfigCommand", "--bootstrap-server", target.bootstrap,
                    "--alter", "--entity-type", "clients", "--entity-name", client_id,
                    "--add-config", f"producer_byte_rate={max(1, raw_bytes(kbackup, bk) // 40)}")
    cfg = restore_config(bk, target, state, **{"batch.size": 100, "tasks.max": 1,
                                                "producer.override.batch.size": 4096,
                                                "producer.override.client.id": client_id})
    t0 = time.monotonic()
    target.connect.create_connector(name, cfg)
    changes = 0
    for frac, tasks in ((0.15, 3), (0.35, 2), (0.55, 4), (0.75, 1)):
        wait_until(lambda: written(target, bk.topic) >= frac * bk.records, 180,
                   f"{frac:.0%} written", interval=0.05)
        if written(target, bk.topic) < bk.records:
            changes += 1
        target.connect.put_config(name, {**cfg, "tasks.max": tasks})
    wait_restore_finished(kbackup, bk.dir, target.connect, name,
                          {(bk.topic, p) for p in range(PARTITIONS)}, state_dir=state,
                          timeout=180)
    dups = check_restored(bk, target, allow_duplicates=True)
    print(f"FIGURES tasks.max: {bk.records} records, {changes} tasks.max changes mid-restore, "
          f"{dups} duplicates, {time.monotonic() - t0:.0f}s")
    assert dups == 0, f"{dups} duplicates after tasks.max changes (tasks stop gracefully)"
    check_groups_and_configs(bk, target)
    assert changes >= 3, "the restore finished before the tasks.max changes: slow it down"


# ---------------------------------------------------------------------------------------------
# The target broker restarts during a restore


@pytest.mark.faults
def test_broker_restart_mid_restore_is_ridden_out(bk, kbackup, new_cluster):
    target = new_cluster("rf-broker", worker_overrides={"offset.flush.interval.ms": 1000})
    name = unique("rf-broker")
    state = target.root / "state"
    t0 = time.monotonic()
    target.connect.create_connector(name, restore_config(
        bk, target, state, **{"batch.size": 100, "producer.override.batch.size": 4096}))
    wait_until(lambda: written(target, bk.topic) >= 0.3 * bk.records, 180, "30% written",
               interval=0.05)
    at_restart = written(target, bk.topic)
    target.restart_broker(down_s=5)
    wait_restore_finished(kbackup, bk.dir, target.connect, name,
                          {(bk.topic, p) for p in range(PARTITIONS)}, state_dir=state,
                          timeout=240)
    dups = check_restored(bk, target, allow_duplicates=True)
    print(f"FIGURES broker restart: {bk.records} records, broker down 5 s at {at_restart} "
          f"written, {dups} duplicates, {time.monotonic() - t0:.0f}s")
    assert at_restart < bk.records
    check_groups_and_configs(bk, target, allow_duplicates=True)
