"""The standalone CLI (`kbackup backup` / `restore` / `prune` / ...) against a real broker.

Why: teams without a Connect cluster run only the CLI from cron, so it must give the same
guarantees as the connectors: byte-exact records, translated group offsets, a consistent
snapshot with --until-caught-up, a prune that leaves a restorable backup, and one clear error
line (never a panic or a wall of client logs) when the cluster, directory or topic is wrong.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from conftest import DIST, Kbackup, unique, wait_backup_complete

# -------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="session")
def cli() -> Kbackup:
    """The CLI alone (dist/kbackup, or $KBACKUP_CLI): these tests need no plugin jar."""
    path = Path(os.environ.get("KBACKUP_CLI", DIST / "kbackup"))
    if not path.exists():
        pytest.fail(f"missing {path}: run `make dist`, or `cargo build --release -p kbackup-cli` "
                    "and copy target/release/kbackup to dist/kbackup", pytrace=False)
    return Kbackup(path)


def fields(r) -> tuple:
    """Everything a restore must reproduce (the offset may change)."""
    return (r.partition, r.key, r.value, tuple(r.headers), r.timestamp, r.timestamp_type)


def error_line(proc) -> str:
    """The single line a failing command prints; fails if there is more than one."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one error line, got {len(lines)}:\n{proc.stderr}"
    assert "panicked" not in proc.stderr and "RUST_BACKTRACE" not in proc.stderr, proc.stderr
    assert lines[0].startswith("kbackup: error: "), lines[0]
    return lines[0]


SPECIALS = [
    {"key": None, "value": b"value with a null key"},
    {"key": b"", "value": b"value with an empty key"},
    {"key": b"null value", "value": None},
    {"key": b"empty value", "value": b""},
    {"key": bytes(range(256)), "value": bytes(range(255, -1, -1))},
    {"key": b"headers", "value": b"x",
     "headers": [("dup", b"1"), ("dup", b"2"), ("null", None), ("empty", b""),
                 ("bin", bytes([0, 255, 10, 13]))]},
    {"key": b"big", "value": os.urandom(300_000)},
]


def produce_fixture(cluster, topic: str, partitions: int) -> None:
    """Every field kind on every partition, plus a committed and an aborted transaction on
    partition 0 (markers and aborted records shift offsets; aborted ones must not come back)."""
    k = cluster.kafka
    records = []
    for p in range(partitions):
        for i, s in enumerate(SPECIALS):
            records.append(dict(s, partition=p, timestamp=1_600_000_000_000 + 1000 * p + i))
        for i in range(40):
            records.append({"partition": p, "key": f"k{p}-{i}".encode(),
                            "value": f"v{p}-{i}".encode(), "timestamp": 1_650_000_000_000 + i})
    k.produce(topic, records)
    tx = k.producer(**{"transactional.id": unique("cli-tx")})
    tx.init_transactions(30)
    tx.begin_transaction()
    k.produce(topic, [{"partition": 0, "key": b"tx-ok", "value": f"c{i}".encode()}
                      for i in range(5)], producer=tx)
    tx.commit_transaction(30)
    tx.begin_transaction()
    k.produce(topic, [{"partition": 0, "key": b"tx-aborted", "value": f"a{i}".encode()}
                      for i in range(5)], producer=tx)
    tx.abort_transaction(30)
    k.produce(topic, [{"partition": p, "key": b"after", "value": f"after-{p}-{i}".encode()}
                      for p in range(partitions) for i in range(10)])


# -------------------------------------------------------------------------------------------
# Backup -> restore into a new broker


def test_cli_backup_then_restore_into_new_broker_is_field_exact_with_translated_groups(
        cluster, new_cluster, cli, workdir):
    topic = unique("cli-fidelity")
    cluster.kafka.create_topic(topic, partitions=3)
    produce_fixture(cluster, topic, 3)
    source = cluster.kafka.consume_topic(topic)
    assert not any(r.key == b"tx-aborted" for rs in source.values() for r in rs)

    # Group "mid" resumes after the transaction (its offset is shifted by markers and the
    # aborted records); group "done" consumed everything.
    mid_record = source[0][-5]
    group_mid, group_done = unique("cli-g-mid"), unique("cli-g-done")
    cluster.kafka.commit_group_offsets(group_mid, {(topic, 0): mid_record.offset})
    end0 = cluster.kafka.watermarks(topic, 0)[1]
    cluster.kafka.commit_group_offsets(group_done, {(topic, 0): end0})

    backup_dir = workdir / "backup"
    out = cli.run("backup", "--bootstrap-server", cluster.bootstrap, "--dir", backup_dir,
                  "--topics", topic, "--group-offsets", "--until-caught-up", "--json").stdout
    summary = json.loads(out)
    assert summary["records"] == sum(len(rs) for rs in source.values())

    offsets = json.loads(cli.run("offsets", backup_dir, "--json").stdout)["offsets"]
    by_group = {(o["group"], o["partition"]): o["committed_offset"] for o in offsets}
    assert by_group[(group_mid, 0)] == mid_record.offset
    assert by_group[(group_done, 0)] == end0

    plan = json.loads(cli.run("restore-plan", backup_dir, "--topics", topic, "--json").stdout)
    p0 = next(p for p in plan["topics"][0]["partition_plans"] if p["partition"] == 0)
    plan_groups = {g["group"]: g for g in p0["groups"]}
    assert plan_groups[group_mid]["resume_at_original"] == mid_record.offset
    assert plan_groups[group_done]["resume_at_log_end"] is True
    assert plan["topics"][0]["partitions"] == 3

    target = new_cluster("cli-restore", with_worker=False)
    cli.run("restore", "--bootstrap-server", target.bootstrap, "--dir", backup_dir,
            "--topics", topic, "--group-offsets", timeout=300)
    assert target.kafka.topics()[topic] == 3
    restored = target.kafka.consume_topic(topic)
    for p in range(3):
        assert [fields(r) for r in restored[p]] == [fields(r) for r in source[p]], f"partition {p}"

    got = target.kafka.group_offsets(group_mid)
    idx = [r.offset for r in source[0]].index(mid_record.offset)
    assert got[(topic, 0)] == restored[0][idx].offset
    assert fields(restored[0][idx]) == fields(mid_record)
    assert target.kafka.group_offsets(group_done)[(topic, 0)] == target.kafka.watermarks(topic, 0)[1]

    status = json.loads(cli.run("restore-status", backup_dir, "--json").stdout)
    assert [r["status"]["finished"] for r in status["restores"]] == [True]

    # Running the same restore again is a no-op that reports finished (resumable state).
    again = cli.run("restore", "--bootstrap-server", target.bootstrap, "--dir", backup_dir,
                    "--topics", topic, "--group-offsets", "--json", timeout=120)
    assert json.loads(again.stdout)["finished"] is True
    assert [len(target.kafka.consume_partition(topic, p)) for p in range(3)] == \
        [len(source[p]) for p in range(3)]


# -------------------------------------------------------------------------------------------
# --until-caught-up: a snapshot while producers keep writing


def test_until_caught_up_ends_on_its_own_at_the_start_time_end_offsets(cluster, cli, workdir):
    topic = unique("cli-snapshot")
    cluster.kafka.create_topic(topic, partitions=2)
    cluster.kafka.produce(topic, [{"partition": i % 2, "key": b"k%d" % i, "value": b"v" * 100}
                                  for i in range(3000)])
    before = {p: cluster.kafka.watermarks(topic, p)[1] for p in range(2)}

    stop = threading.Event()
    produced = [0]

    def keep_writing():
        prod = cluster.kafka.producer(**{"linger.ms": 2})
        while not stop.is_set():
            for i in range(50):
                prod.produce(topic, key=b"live", value=b"w" * 100, partition=i % 2)
                produced[0] += 1
            prod.poll(0)
            time.sleep(0.005)
        prod.flush(30)

    writer = threading.Thread(target=keep_writing, daemon=True)
    writer.start()
    try:
        time.sleep(1.0)  # the producer is writing before and while the backup runs
        start = time.monotonic()
        proc = cli.run("backup", "--bootstrap-server", cluster.bootstrap, "--dir", workdir / "b",
                       "--topics", topic, "--until-caught-up", "--json", timeout=120)
        took = time.monotonic() - start
        time.sleep(1.0)  # let the producer get further ahead of the snapshot
    finally:
        stop.set()
        writer.join(60)
    summary = json.loads(proc.stdout)
    ends = {int(p): o for p, o in summary["end_offsets_at_start"][topic].items()}
    after = {p: cluster.kafka.watermarks(topic, p)[1] for p in range(2)}
    assert produced[0] > 0
    for p in range(2):
        assert before[p] < ends[p] < after[p], (p, before, ends, after)
    assert took < 60
    backed_up = {p: [r["offset"] for r in cli.cat(workdir / "b", topic, p)] for p in range(2)}
    for p in range(2):
        assert backed_up[p] == list(range(ends[p])), f"partition {p}: not exactly 0..{ends[p]}"

    # A second run resumes where the files end: only what was written since, no duplicates.
    proc2 = cli.run("backup", "--bootstrap-server", cluster.bootstrap, "--dir", workdir / "b",
                    "--topics", topic, "--json")
    s2 = json.loads(proc2.stdout)
    assert s2["records"] == sum(after[p] - ends[p] for p in range(2))
    for p in range(2):
        offs = [r["offset"] for r in cli.cat(workdir / "b", topic, p)]
        assert offs == list(range(after[p])), f"partition {p} after resume"


def test_continuous_backup_follows_new_records_until_sigterm(cluster, cli, workdir):
    import signal
    import subprocess

    prefix = unique("cli-cont")
    topics = [f"{prefix}-a", f"{prefix}-b"]
    for t in topics:
        cluster.kafka.create_topic(t, partitions=2)
        cluster.kafka.produce(t, [{"partition": i % 2, "value": b"first %d" % i} for i in range(20)])
    d = workdir / "b"
    proc = subprocess.Popen([str(cli.path), "backup", "--bootstrap-server", cluster.bootstrap,
                             "--dir", str(d), "--topics-regex", f"{prefix}-.*", "--continuous",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Records produced while it runs are picked up (and flushed within seconds).
        time.sleep(2)
        for t in topics:
            cluster.kafka.produce(t, [{"partition": i % 2, "value": b"later %d" % i}
                                      for i in range(30)])
        for t in topics:
            wait_backup_complete(cli, d, t, {0: 25, 1: 25}, timeout=60)
        assert proc.poll() is None, "--continuous must keep running"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["stopped_by_signal"] is True
    assert sorted(summary["topics"]) == topics
    assert summary["records"] == 100
    assert summary["next_offsets"] == {t: {"0": 25, "1": 25} for t in topics}
    assert "backup: 100 records" in err


# -------------------------------------------------------------------------------------------
# prune


def test_prune_drops_old_segments_and_the_rest_restores_correctly(cluster, cli, workdir):
    topic = unique("cli-prune")
    cluster.kafka.create_topic(topic, partitions=1)
    now = int(time.time() * 1000)
    old = [{"partition": 0, "key": b"old%d" % i, "value": b"o" * 200,
            "timestamp": now - 90 * 86_400_000 + i} for i in range(60)]
    new = [{"partition": 0, "key": b"new%d" % i, "value": b"n" * 200, "timestamp": now + i}
           for i in range(60)]
    cluster.kafka.produce(topic, old + new)
    source = cluster.kafka.consume_partition(topic, 0)
    group = unique("cli-g-pruned")
    cluster.kafka.commit_group_offsets(group, {(topic, 0): 10})  # inside the pruned range

    d = workdir / "b"
    cli.run("backup", "--bootstrap-server", cluster.bootstrap, "--dir", d, "--topics", topic,
            "--group-offsets", "--max-segment-bytes", "3000")
    seg_dir = d / "topics" / topic / "0"
    segments_before = sorted(seg_dir.glob("*.segment"))
    assert len(segments_before) > 5

    dry = json.loads(cli.run("prune", d, "--older-than", "30d", "--dry-run", "--json").stdout)
    assert dry["removed_segments"] > 0
    assert sorted(seg_dir.glob("*.segment")) == segments_before

    res = json.loads(cli.run("prune", d, "--older-than", "30d", "--json").stdout)
    assert res["removed_segments"] == dry["removed_segments"]
    remaining = sorted(seg_dir.glob("*.segment"))
    assert len(remaining) == len(segments_before) - res["removed_segments"]
    # Nothing newer than the cutoff went; only whole old segments, so <= 60 records.
    assert 0 < res["removed_records"] <= 60
    assert not list(seg_dir.glob(f"{0:020}.*")), "index files of the first segment remain"
    cli.run("verify", d)

    first_left = res["removed_records"]  # offsets are dense here: 0..n-1 were removed
    target_topic = unique("cli-pruned-restored")
    cli.run("restore", "--bootstrap-server", cluster.bootstrap, "--dir", d, "--topics", topic,
            "--rename", f"{topic}:{target_topic}", "--group-offsets", timeout=300)
    restored = cluster.kafka.consume_partition(target_topic, 0)
    assert [fields(r) for r in restored] == [fields(r) for r in source[first_left:]]
    assert all(r.key.startswith(b"new") for r in restored[-60:])
    # The group sat in the pruned range: it resumes at the first restored record.
    assert cluster.kafka.group_offsets(group)[(target_topic, 0)] == restored[0].offset


# -------------------------------------------------------------------------------------------
# Errors: one line, non-zero exit, never a panic


def test_unreachable_bootstrap_fails_fast_with_one_line_and_exit_3(cli, tmp_path):
    start = time.monotonic()
    proc = cli.run("backup", "--bootstrap-server", "127.0.0.1:1", "--dir", tmp_path / "b",
                   "--topics", "t", check=False, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert time.monotonic() - start < 30
    line = error_line(proc)
    assert "127.0.0.1:1" in line and "bootstrap" in line
    assert not (tmp_path / "b").exists(), "a failed connection must not create the backup dir"

    proc = cli.run("restore", "--bootstrap-server", "127.0.0.1:1", "--dir", tmp_path / "none",
                   "--topics", "t", check=False, timeout=60)
    assert proc.returncode != 0
    error_line(proc)


def test_missing_directory_gives_one_line_and_nonzero_exit(cli, tmp_path):
    missing = tmp_path / "no-such-backup"
    for args in (["offsets", missing], ["prune", missing, "--older-than", "1d"],
                 ["restore-plan", missing, "--topics", "t"], ["restore-status", missing]):
        proc = cli.run(*args, check=False)
        assert proc.returncode == 1, (args, proc.stderr)
        assert "does not exist" in error_line(proc), args


def test_unknown_topic_gives_one_line_and_nonzero_exit(cluster, cli, workdir):
    proc = cli.run("backup", "--bootstrap-server", cluster.bootstrap, "--dir", workdir / "b",
                   "--topics", unique("no-such-topic"), check=False, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "does not exist" in error_line(proc)

    topic = unique("cli-known")
    cluster.kafka.create_topic(topic)
    cluster.kafka.produce(topic, [{"key": b"k", "value": b"v"}])
    cli.run("backup", "--bootstrap-server", cluster.bootstrap, "--dir", workdir / "b",
            "--topics", topic)
    proc = cli.run("restore", "--bootstrap-server", cluster.bootstrap, "--dir", workdir / "b",
                   "--topics", "not-in-backup", check=False, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "not-in-backup" in proc.stderr and "panicked" not in proc.stderr


def test_a_low_open_file_soft_limit_is_raised_and_an_exhausted_one_is_named(
        cluster, cli, workdir):
    """A backup keeps 4 files open per partition. Under a soft open-file limit of 128 (hard
    limit left as it is) a backup of 100 partitions works, because the CLI raises its soft
    limit to the hard one, as the JVM does for a worker. With the hard limit at 128 too it
    cannot: it exits 1, its error naming the limit and the fix."""
    import resource
    import subprocess

    topic = unique("cli-fds")
    cluster.kafka.create_topic(topic, partitions=100)
    cluster.kafka.produce(topic, [{"partition": p, "key": b"k", "value": b"v%d" % p}
                                  for p in range(100)])
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard == resource.RLIM_INFINITY or hard > 1024, hard

    def backup(directory, soft: int, hard_limit: int):
        return subprocess.run(
            [str(cli.path), "backup", "--bootstrap-server", cluster.bootstrap, "--dir",
             str(directory), "--topics", topic, "--until-caught-up", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard_limit)))
    ok = backup(workdir / "raised", 128, hard)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["records"] == 100
    cut = backup(workdir / "exhausted", 128, 128)
    assert cut.returncode == 1, cut.stderr
    assert "panicked" not in cut.stderr, cut.stderr
    line = cut.stderr.strip().splitlines()[-1]  # after the partition's own log line
    assert line.startswith("kbackup: error: ") and "ulimit -n" in line, line
    assert "too many open files" in line.lower() and "4 per partition" in line, line


def test_help_lists_every_subcommand_and_each_help_works(cli):
    top = cli.run("--help").stdout
    verbs = ["backup", "restore", "inspect", "cat", "verify", "reindex", "offsets",
             "restore-plan", "restore-status", "prune"]
    for v in verbs:
        assert v in top, v
        h = cli.run(v, "--help").stdout
        assert "Usage: kbackup " + v in h, h
    assert "--until-caught-up" in cli.run("backup", "--help").stdout
    assert "--older-than" in cli.run("prune", "--help").stdout
    bad = cli.run("backup", "--dir", "x", check=False)
    assert bad.returncode == 2


def test_object_store_url_is_never_written_to_a_local_s3_directory(cluster, cli, workdir):
    """`--dir s3://...` once wrote a backup into ./s3:/bucket and reported success. Today
    every verb, `backup` included, goes to the store itself (tests/integration/test_copy.py,
    test_s3_backup.py): here one that cannot reach it fails naming the store, and nothing
    local is made."""
    import os
    import subprocess

    url = "s3://kbackup-bucket/prefix"
    # an endpoint nobody listens on
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL="http://127.0.0.1:1", AWS_ALLOW_HTTP="true",
               AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s", AWS_REGION="us-east-1")
    topic = unique("cli-url")
    cluster.kafka.create_topic(topic, 1)
    for argv in (["backup", "--bootstrap-server", cluster.bootstrap, "--topics", topic,
                  "--dir", url], ["inspect", url]):
        r = subprocess.run([str(cli.path), *argv], cwd=workdir, capture_output=True,
                           text=True, timeout=120, env=env)
        assert r.returncode == 1, (argv, r.returncode, r.stderr)
        assert "could not reach the object store at http://127.0.0.1:1" in r.stderr, r.stderr
    # a mistyped URL is refused, naming what it looks like
    for argv in (["inspect", "s3:kbackup-bucket"], ["restore", "--bootstrap-server",
                                                     "127.0.0.1:1", "--topics", "t", "--dir",
                                                     "s3:kbackup-bucket"]):
        r = subprocess.run([str(cli.path), *argv], cwd=workdir, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 2 and "looks like a URL" in r.stderr, (argv, r.stderr)
    assert not (workdir / "s3:").exists(), "a local directory named s3: was made"


# -------------------------------------------------------------------------------------------
# Restore resumes after a crash


def test_restore_killed_midway_resumes_without_loss(cluster, cli, workdir):
    import signal
    import subprocess

    topic = unique("cli-crash")
    cluster.kafka.create_topic(topic, partitions=2)
    n = 60_000
    cluster.kafka.produce(topic, [{"partition": i % 2, "key": b"k%06d" % i, "value": b"x" * 300}
                                  for i in range(n)])
    source = cluster.kafka.consume_topic(topic)
    group = unique("cli-g-crash")
    mid = source[1][len(source[1]) // 2]
    cluster.kafka.commit_group_offsets(group, {(topic, 1): mid.offset})
    d = workdir / "b"
    cli.run("backup", "--bootstrap-server", cluster.bootstrap, "--dir", d, "--topics", topic,
            "--group-offsets")

    target = unique("cli-crash-restored")
    # A restore transaction spans up to 2 s of writing: a produce quota on the first run's
    # client id (the broker lets some 10 s of quota through before it throttles) makes that run
    # take far longer, so the kill lands after a commit and before the end.
    client_id = unique("cli-crash-client")
    cluster.run_tool("kafka.admin.ConfigCommand", "--bootstrap-server", cluster.bootstrap,
                     "--alter", "--add-config", "producer_byte_rate=500000",
                     "--entity-type", "clients", "--entity-name", client_id)
    argv = [str(cli.path), "restore", "--bootstrap-server", cluster.bootstrap, "--dir", str(d),
            "--topics", topic, "--rename", f"{topic}:{target}", "--group-offsets", "-q"]
    proc = subprocess.Popen(argv + ["--config", f"client.id={client_id}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def saved_progress() -> int:
        """Records acknowledged in the restore state files saved so far."""
        total = 0
        for f in (d / "restore-state").glob(f"*/partitions/{topic}/*.json"):
            try:
                total += json.loads(f.read_text())["records_restored"]
            except (ValueError, KeyError, OSError):
                pass  # being replaced right now
        return total

    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and saved_progress() == 0:
            time.sleep(0.01)
        if proc.poll() is not None:
            pytest.fail(f"the restore ended (exit {proc.returncode}) before it could be killed: "
                        "make the fixture larger")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    status = json.loads(cli.run("restore-status", d, "--json").stdout)
    assert [r["status"]["finished"] for r in status["restores"]] == [False]
    saved = saved_progress()
    assert 0 < saved < n

    cli.run("restore", *argv[2:], timeout=300)
    duplicates = 0
    for p in range(2):
        keys = [r.key for r in cluster.kafka.consume_partition(target, p)]
        first_copies = list(dict.fromkeys(keys))
        assert first_copies == [r.key for r in source[p]], f"partition {p}: lost or reordered"
        duplicates += len(keys) - len(first_copies)
    # Only what was not yet saved as acknowledged at the kill is sent again, not everything.
    assert duplicates < n
    # The group resumes at a copy of its record and, from there, reads every later record
    # (the translation uses the first acknowledgement the restore state kept).
    committed = cluster.kafka.group_offsets(group)[(target, 1)]
    rest = [r.key for r in cluster.kafka.consume_partition(target, 1, start=committed)]
    assert rest[0] == mid.key
    want = [r.key for r in source[1] if r.offset >= mid.offset]
    assert list(dict.fromkeys(rest)) == want


# -------------------------------------------------------------------------------------------
# Cross-path: a backup written by one path is restored by the other (needs dist/ with the
# plugin jar, like the connector tests).


def test_cross_path_sink_connector_backup_is_restored_by_the_cli(cluster, kbackup, new_cluster,
                                                                 workdir):
    from conftest import sink_config, wait_backup_complete
    from fixtures import MIB, assert_restored_equal, fixture_records

    topic = unique("x-sink-to-cli")
    cluster.kafka.create_topic(topic, 3, {"max.message.bytes": 4 * MIB})
    for p in range(3):
        cluster.kafka.produce(topic, fixture_records(p, big=(p == 1)))
    original = cluster.kafka.consume_topic(topic)
    d = workdir / "sink-backup"
    name = unique("x-sink")
    cluster.connect.create_connector(name, sink_config(topic, d, cluster.bootstrap))
    try:
        wait_backup_complete(kbackup, d, topic, {p: len(original[p]) for p in range(3)})
    finally:
        cluster.connect.delete_connector(name)
        cluster.connect.wait_deleted(name)

    target = new_cluster("x-cli-restore", with_worker=False)
    kbackup.run("restore", "--bootstrap-server", target.bootstrap, "--dir", d, "--topics", topic,
                "--config", f"message.max.bytes={8 * MIB}", timeout=300)
    for p in range(3):
        assert_restored_equal(target.kafka.consume_partition(topic, p), original[p],
                              f"{topic}/{p}")


def test_cross_path_cli_backup_is_restored_by_the_source_connector(cluster, kbackup, workdir):
    from fixtures import (MIB, assert_restored_equal, fixture_records, source_config,
                          wait_restore_finished)

    topic = unique("x-cli-to-source")
    cluster.kafka.create_topic(topic, 3, {"max.message.bytes": 4 * MIB})
    for p in range(3):
        cluster.kafka.produce(topic, fixture_records(p, big=(p == 1)))
    original = cluster.kafka.consume_topic(topic)
    d = workdir / "cli-backup"
    kbackup.run("backup", "--bootstrap-server", cluster.bootstrap, "--dir", d, "--topics", topic,
                "--config", f"fetch.message.max.bytes={8 * MIB}")

    renamed = unique("x-restored")
    name = unique("x-source")
    cluster.connect.create_connector(name, source_config(
        topic, d, cluster.bootstrap, **{"topics.rename": f"{topic}:{renamed}"}))
    try:
        wait_restore_finished(kbackup, d, cluster.connect, name, [(topic, p) for p in range(3)])
    finally:
        cluster.connect.delete_connector(name)
        cluster.connect.wait_deleted(name)
    for p in range(3):
        got = cluster.kafka.consume_partition(renamed, p)
        assert_restored_equal(got, original[p], f"{renamed}/{p}")
