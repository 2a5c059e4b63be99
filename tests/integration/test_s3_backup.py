"""Backing up straight into a bucket (issue 9): the CLI writer against a real S3 server.

Why: where kbackup's users keep a cold copy is object storage, and objects cannot be appended
to, renamed or locked. So the writer streams each segment as a multipart upload that becomes
visible only when complete, creates it only if no other writer did (the fence against a task
that lost its partition but keeps writing), keeps group positions as numbered chunk objects
created the same way, and resumes after a crash from what the server lists, aborting the
upload the crash orphaned. Every check here reads the server's own listing and its list of
multipart uploads (tests/testbed/s3.py), not kbackup's view of them, and the restored records
are read back with confluent-kafka.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from conftest import unique
from conftest import sink_config, wait_backup_complete
from fixtures import (MIB, assert_restored_equal, fixture_records, source_config, wait_captured,
                      wait_restore_finished)
from test_group_offsets import _read_as_group
from testbed.connect import validation_errors
from testbed.procs import wait_until
from testbed.s3 import S3Server
from testbed.s3faults import FaultProxy


SINK = "io.kbackup.connect.BackupSinkConnector"


def _segments(keys: dict[str, int]) -> list[str]:
    return sorted(k for k in keys if k.endswith(".segment"))


def assert_restored_with_group(target, topic: str, original: dict, group: str, pos: dict,
                               how: str) -> None:
    """Each partition of `topic` on `target` holds exactly `original`'s records, and `group`
    reads from its translated offsets exactly the records it had not read (`pos`)."""
    for p in sorted(original):
        assert_restored_equal(target.kafka.consume_partition(topic, p), original[p],
                              f"{topic}/{p} {how}")
    read = _read_as_group(target.bootstrap, group, [topic], {(topic, p) for p in original})
    for p in sorted(original):
        assert read[(topic, p)] == [r.value for r in original[p] if r.offset >= pos[p]], \
            f"group {group} on partition {p} reads what it had not read"


def _cat_offsets(kbackup, url: str, topic: str, env: dict) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for line in kbackup.run("cat", url, "--topic", topic, "--format", "jsonl",
                            env=env).stdout.splitlines():
        r = json.loads(line)
        out.setdefault(r["partition"], []).append(r["offset"])
    return out


def test_cli_backup_to_a_bucket_restores_byte_exact_with_groups_translated(
        cluster, new_cluster, kbackup, tmp_path):
    k = cluster.kafka
    topic = unique("s3b")
    k.create_topic(topic, 2, {"max.message.bytes": 4 * MIB})
    for p in (0, 1):
        k.produce(topic, fixture_records(p, big=(p == 0)))
    # more than one 8 MiB part in partition 0's first segment: the multipart path, fenced by
    # a conditional copy from its staging key
    k.produce(topic, [{"partition": 0, "key": b"bulk-%d" % i, "value": os.urandom(300_000)}
                      for i in range(40)])
    tx = [{"partition": 1, "key": b"tx-%d" % i, "value": b"in a transaction %d" % i}
          for i in range(10)]
    k.produce_transaction(topic, tx, transactional_id=unique("s3b-tx"))
    k.produce_transaction(topic, [dict(r, value=b"aborted") for r in tx], abort=True,
                          transactional_id=unique("s3b-ab"))
    original = k.consume_topic(topic)
    pos = {0: 20, 1: original[1][-3].offset}
    group = unique("s3b-g")
    k.commit_group_offsets(group, {(topic, p): o for p, o in pos.items()})

    with S3Server() as s3:
        url = f"s3://{s3.bucket}/prod/kafka"
        env = s3.env()
        out = json.loads(kbackup.run("backup", "--bootstrap-server", cluster.bootstrap, "--dir",
                                     url, "--topics", topic, "--group-offsets", "--json",
                                     "-q", env=env, timeout=300).stdout)
        assert out["records"] == sum(len(v) for v in original.values()), out
        # every record durable at the end of the run: the open segments were completed
        assert out["next_offsets"][topic] == {str(p): original[p][-1].offset + 1 for p in (0, 1)}, \
            out
        keys = s3.list_keys("prod/kafka/")
        segs = _segments(keys)
        assert len(segs) == 2 and keys[segs[0]] > 8 * MIB, keys
        for seg in segs:
            stem = seg.removesuffix(".segment")
            assert f"{stem}.offset-index" in keys and f"{stem}.time-index" in keys, keys
        assert "prod/kafka/kbackup.json" in keys
        assert [k_ for k_ in keys if "group-offsets." in k_], "group positions are stored"
        assert not [k_ for k_ in keys if ".kbackup-uploads/" in k_], keys
        assert s3.pending_uploads() == [], "no upload is left open"
        kbackup.run("verify", url, "-q", env=env)

        # an incremental run continues after what the bucket holds: new segments, no duplicate
        k.produce(topic, [{"partition": 1, "key": b"later", "value": b"later %d" % i}
                          for i in range(15)])
        k.commit_group_offsets(group, {(topic, 0): pos[0]})  # unchanged: no new chunk needed
        # a writer that died between completing a segment and storing its indexes: the next
        # writer of the partition rebuilds them from the segment
        stem = [seg for seg in segs if "/1/" in seg][-1].removesuffix(".segment")
        for ext in ("offset-index", "time-index"):
            assert s3.request("DELETE", f"{stem}.{ext}")[0] == 204
        run = kbackup.run("backup", "--bootstrap-server", cluster.bootstrap, "--dir", url,
                          "--topics", topic, "--group-offsets", "-q", env=env, timeout=300)
        assert "rebuilt its index objects" in run.stderr, run.stderr
        keys = s3.list_keys("prod/kafka/")
        assert f"{stem}.offset-index" in keys and f"{stem}.time-index" in keys
        assert len(_segments(keys)) == 3
        original = k.consume_topic(topic)
        offsets = _cat_offsets(kbackup, url, topic, env)
        assert offsets == {p: [r.offset for r in original[p]] for p in (0, 1)}, \
            "every record exactly once, in order"
        kbackup.run("verify", url, "-q", env=env)
        # a copy into a directory reads the same group positions (the chunks come along)
        local = tmp_path / "copy"
        kbackup.run("copy", url, local, "-q", env=env)

        def offsets(where):
            doc = json.loads(kbackup.run("offsets", where, "--json", env=env).stdout)
            doc.pop("dir")
            return doc
        assert offsets(local) == offsets(url) and offsets(url)["offsets"], offsets(url)

        target = new_cluster("s3b-target", with_worker=False)
        kbackup.run("restore", "--bootstrap-server", target.bootstrap, "--dir", url, "--topics",
                    topic, "--group-offsets", "--state-dir", tmp_path / "state", env=env,
                    timeout=300)
    assert_restored_with_group(target, topic, original, group, pos,
                               "backed up to and restored from the bucket")


def test_a_backup_killed_mid_upload_resumes_exactly_once_and_aborts_the_orphan(
        cluster, kbackup):
    """SIGKILL while a segment is being uploaded in parts: nothing of it is visible, the next
    run aborts the orphaned upload (the server lists none after it), writes every record
    exactly once and verify is clean."""
    k = cluster.kafka
    topic = unique("s3kill")
    k.create_topic(topic, 1)
    for batch in range(6):
        k.produce(topic, [{"partition": 0, "key": b"%d-%d" % (batch, i),
                           "value": os.urandom(200_000)} for i in range(50)])
    with S3Server() as s3, FaultProxy(s3) as proxy:
        url = f"s3://{s3.bucket}/kill"
        env = s3.env()
        # parts travel slowly through the proxy, so the kill lands mid-upload
        proxy.rule = lambda n, method, path: ("delay", 1.0) if "partNumber" in path else "pass"
        argv = [str(kbackup.path), "backup", "--bootstrap-server", cluster.bootstrap, "--dir",
                url, "--topics", topic, "-q"]
        proc = subprocess.Popen(argv, env={**os.environ, **proxy.env()},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while not s3.pending_uploads():
                assert proc.poll() is None, f"finished before an upload was seen: " \
                                            f"{proc.stderr.read().decode()}"
                assert time.monotonic() < deadline, "no multipart upload started"
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
            proc.stderr.close()
        assert s3.pending_uploads(), "the kill left the upload open"
        assert not _segments(s3.list_keys("kill/")), "nothing of an unfinished segment is seen"

        kbackup.run("backup", "--bootstrap-server", cluster.bootstrap, "--dir", url, "--topics",
                    topic, "-q", env=env, timeout=300)
        assert s3.pending_uploads() == [], "the orphaned upload was aborted"
        keys = s3.list_keys("kill/")
        assert not [k_ for k_ in keys if ".kbackup-uploads/" in k_], keys
        assert _cat_offsets(kbackup, url, topic, env) == {0: list(range(300))}
        kbackup.run("verify", url, "-q", env=env)


def test_a_stale_writer_cannot_overwrite_what_the_new_owner_wrote(cluster, kbackup):
    """Two writers on one partition (the stale task that lost it, the new owner): the stale one
    holds its open segment while the other backs the partition up and completes the same
    segment key; when the stale one then completes, it loses, fails naming the cause, and the
    bucket keeps the new owner's segment byte for byte."""
    k = cluster.kafka
    topic = unique("s3stale")
    k.create_topic(topic, 1)
    k.produce(topic, [{"partition": 0, "key": b"k%d" % i, "value": b"v%d" % i}
                      for i in range(100)])
    with S3Server() as s3:
        url = f"s3://{s3.bucket}/stale"
        env = s3.env()
        stale = subprocess.Popen(
            [str(kbackup.path), "backup", "--bootstrap-server", cluster.bootstrap, "--dir", url,
             "--topics", topic, "--continuous", "--max-segment-age", "1h", "-q"],
            env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            time.sleep(5)  # it has read the records into its open segment
            assert stale.poll() is None, stale.stderr.read().decode()
            assert not _segments(s3.list_keys("stale/")), "an open segment is not visible"
            kbackup.run("backup", "--bootstrap-server", cluster.bootstrap, "--dir", url,
                        "--topics", topic, "-q", env=env, timeout=120)
            keys = s3.list_keys("stale/")
            (seg,) = _segments(keys)
            owner_bytes = s3.request("GET", seg)[2]
            stale.send_signal(signal.SIGTERM)  # stops: completes its open segment
            _, err = stale.communicate(timeout=60)
        finally:
            if stale.poll() is None:
                stale.kill()
                stale.wait()
        err = err.decode()
        assert stale.returncode not in (0, None), err
        assert "another writer stored a segment" in err and "Run one backup per location" in err, \
            err
        assert s3.request("GET", seg)[2] == owner_bytes, "the new owner's segment is untouched"
        assert s3.pending_uploads() == []
        assert _cat_offsets(kbackup, url, topic, env) == {0: list(range(100))}
        kbackup.run("verify", url, "-q", env=env)


def test_connectors_back_up_to_and_restore_from_a_bucket(new_cluster, kbackup, tmp_path):
    """The sink connector with target.dir=s3://... and the source connector restoring from the
    same URL into a NEW cluster: the sink tests' fixture (nulls, headers, a 1 MiB value, both
    timestamp types) and a committed and an aborted transaction, byte-exact, with the consumer
    group translated. The backing-up worker gets the standard AWS_* variables; the restoring
    one none: its connector reaches the bucket through storage.* keys."""
    with S3Server() as s3:
        env = s3.env()
        kb = kbackup.with_env(env)
        src = new_cluster("s3c-src", worker_env=env)
        k = src.kafka
        create, append = unique("s3c-create"), unique("s3c-append")
        k.create_topic(create, 2, {"max.message.bytes": 4 * MIB})
        k.create_topic(append, 1, {"message.timestamp.type": "LogAppendTime"})
        for p in (0, 1):
            k.produce(create, fixture_records(p, big=(p == 1)))
        k.produce(append, fixture_records(0, big=False))
        tx = [{"partition": 0, "key": b"tx-%d" % i, "value": b"committed %d" % i}
              for i in range(10)]
        k.produce_transaction(create, tx, transactional_id=unique("s3c-tx"))
        k.produce_transaction(create, [dict(r, value=b"aborted") for r in tx], abort=True,
                              transactional_id=unique("s3c-ab"))
        original = {(t, p): k.consume_partition(t, p)
                    for t, ps in ((create, (0, 1)), (append, (0,))) for p in ps}
        group = unique("s3c-g")
        pos = {(create, 0): original[(create, 0)][-4].offset, (create, 1): 3, (append, 0): 7}
        k.commit_group_offsets(group, pos)

        url = f"s3://{s3.bucket}/connect/nightly"
        # validate() reaches the bucket: a good one passes, a missing one is named with the fix
        ok = src.connect.validate(SINK, sink_config(create, url, src.bootstrap))
        assert ok["error_count"] == 0, validation_errors(ok)
        bad = src.connect.validate(SINK, sink_config(create, "s3://no-such-bucket/x",
                                                     src.bootstrap))
        errs = validation_errors(bad).get("target.dir", [])
        assert any("no-such-bucket" in m and "does not exist" in m for m in errs), errs
        sink = unique("s3c-sink")
        # a segment older than 2 s is completed at the next commit: what bounds the data a
        # crash would make Kafka send again (docs/storage.md)
        src.connect.create_connector(sink, sink_config(
            f"{create},{append}", url, src.bootstrap,
            **{"tasks.max": 2, "max.segment.age.ms": 2000, "offsets.sync.interval.ms": 1000}))
        src.connect.wait_for_task_state(sink, "RUNNING", count=2, timeout=90)
        for t, ps in ((create, (0, 1)), (append, (0,))):
            wait_backup_complete(kb, url, t, {p: len(original[(t, p)]) for p in ps}, timeout=120)

        wait_captured(kb, url, group, pos)
        src.connect.delete_connector(sink)
        src.connect.wait_deleted(sink)
        assert s3.pending_uploads() == [], "a stopped sink leaves no upload open"
        kb.run("verify", url, "-q")

        # the new cluster's worker has no AWS_* variables: the store is reached through the
        # connector's storage.* keys, the secret a password-type key; the restore's progress is
        # kept beside the backup, in the bucket, written with the same keys
        dst = new_cluster("s3c-dst")
        source = unique("s3c-source")
        dst.connect.create_connector(source, source_config(
            f"{create},{append}", url, dst.bootstrap, **{
                "storage.endpoint": s3.endpoint,
                "storage.region": "us-east-1", "storage.allow.http": "true",
                "storage.access.key.id": s3.access_key,
                "storage.secret.access.key": s3.secret_key}))
        wait_restore_finished(kb, url, dst.connect, source,
                              [(create, 0), (create, 1), (append, 0)])
        state_keys = s3.list_keys("connect/nightly/restore-state/")
        assert {k.split("/", 4)[-1] for k in state_keys} >= \
            {"connector.json", f"partitions/{create}/0.json", f"partitions/{create}/1.json",
             f"partitions/{append}/0.json", f"topics/{create}.json"}, state_keys
        assert s3.secret_key not in dst.worker.log_file.read_text(errors="replace"), \
            "the secret access key never reaches the worker log"
    for (t, p), want in original.items():
        assert_restored_equal(dst.kafka.consume_partition(t, p), want, f"{t}/{p}",
                              check_ts_type=(t == create))
    read = _read_as_group(dst.bootstrap, group, [create, append], set(pos))
    for tp, at in pos.items():
        assert read[tp] == [r.value for r in original[tp] if r.offset >= at], \
            f"group {group} on {tp} reads what it had not read"


def test_two_workers_one_sigkilled_mid_upload_bucket_holds_every_record_once(
        new_cluster, kbackup):
    """Two Connect workers in one group, tasks.max=4, backing up into the bucket while a
    producer writes; one worker is SIGKILLed while segments are being uploaded in parts, then
    started again. The bucket holds every record exactly once (against what a consumer reads
    from the broker), verify is clean, and the uploads the killed worker left were aborted by
    the tasks that took its partitions over: none is open once the connector stops."""
    from test_backup_faults import (Producer, fast_sink, live_rest, wait_connector_running,
                                    workers)

    with S3Server() as s3:
        env = s3.env()
        kb = kbackup.with_env(env)
        c = new_cluster("s3-kill", worker_env=env)
        c.add_worker()
        k = c.kafka
        topic = unique("s3-kill")
        k.create_topic(topic, 4)
        url = f"s3://{s3.bucket}/two-workers"
        name = unique("s3-sink-kill")
        with Producer(k, topic, 4) as prod:
            live_rest(c).create_connector(name, fast_sink(topic, url, c.bootstrap, 4, **{
                "max.segment.size.bytes": 64 * MIB, "max.segment.age.ms": 20000}))
            wait_connector_running(c, name, 4)
            # Once each task's consumer holds one partition (the first task to join holds
            # them all for a while), 12 MiB per partition: every partition's segment is then
            # uploaded in several 8 MiB parts by its own task, and the worker whose task holds
            # partition 0 is killed with that upload open.
            held = wait_until(lambda: len(set(k.partition_owners(f"connect-{name}").values()))
                              == 4 and k.partition_owners(f"connect-{name}"), 120,
                              "each of the four tasks holding a partition")
            for p in range(4):
                k.produce(topic, [{"partition": p, "key": b"big-%d-%d" % (p, i),
                                   "value": os.urandom(100_000)} for i in range(120)])
            wait_until(lambda: {int(key.split("/")[-2]) for key in s3.pending_uploads()}
                       == {0, 1, 2, 3}, 120, "all four partitions uploading in parts",
                       interval=0.05)
            assert k.partition_owners(f"connect-{name}") == held, "no rebalance meanwhile"
            task = int(held[(topic, 0)].rsplit("-", 1)[-1])
            port = next(t["worker_id"].rsplit(":", 1)[-1]
                        for t in live_rest(c).status(name)["tasks"] if t["id"] == task)
            victim = next(w for w in workers(c) if str(w.rest_port) == port)
            victim.kill()
            left = s3.pending_uploads()
            assert left, "the kill left uploads open"
            time.sleep(3)
            victim.start()
            wait_connector_running(c, name, 4)
            time.sleep(8)  # the producer keeps writing through the rebalance
            prod.stop()
        want = {p: [r.offset for r in k.consume_partition(topic, p)] for p in range(4)}
        wait_backup_complete(kb, url, topic, {p: len(o) for p, o in want.items()}, timeout=180)
        assert _cat_offsets(kbackup, url, topic, env) == want, "every record exactly once"
        live_rest(c).delete_connector(name)
        live_rest(c).wait_deleted(name)
        assert s3.pending_uploads() == [], f"orphaned uploads remain (killed with {left})"
        assert not [key for key in s3.list_keys("two-workers/") if ".kbackup-uploads/" in key]
        kb.run("verify", url, "-q")
        log = "".join(w.log_file.read_text(errors="replace") for w in workers(c))
        notes = [ln for ln in log.splitlines()
                 if "upload" in ln or "resuming after" in ln or "rebuilt" in ln]
        assert "upload(s) left by an earlier writer" in log, \
            "the new owners aborted them:\n" + "\n".join(notes[-40:])

        # Restored by the source connector on the same two workers from the bucket, with no
        # restore.state.dir: the tasks on both workers keep their progress in the bucket, and
        # the topic the restore created gets its configs back only once every partition is
        # done, which a task learns from the other worker's state objects there.
        restored = topic + "-restored"
        source = unique("s3-source-2w")
        live_rest(c).create_connector(source, source_config(
            topic, url, c.bootstrap, **{"tasks.max": 4, "topics.rename": f"{topic}:{restored}"}))
        st = wait_restore_finished(kb, url, live_rest(c), source,
                                   [(topic, p) for p in range(4)], timeout=240)
        hosts = {t["worker_id"] for t in live_rest(c).status(source)["tasks"]}
        assert len(hosts) == 2, f"the restore's tasks ran on both workers: {hosts}"
        assert [t["configs_restored"] for t in st["topics"]] == [True], st["topics"]
        digests = {k.split("/")[2] for k in s3.list_keys("two-workers/restore-state/")}
        assert len(digests) == 1, digests
        for p in range(4):
            assert_restored_equal(k.consume_partition(restored, p),
                                  k.consume_partition(topic, p), f"{restored}/{p}")
        live_rest(c).delete_connector(source)


def test_a_cli_restore_from_a_bucket_killed_mid_way_resumes_from_its_state_there(
        cluster, new_cluster, kbackup, tmp_path):
    """A restore from a bucket keeps its progress in the bucket (restore-state/<digest>/): the
    CLI restore is SIGKILLed while it writes, and the same command run again (no --state-dir
    anywhere) resumes from that state: the target topic it created, now holding records, is
    known as its own (the same rerun with an empty state elsewhere is refused for exactly
    that), every record lands exactly once and the group reads exactly what it had not read."""
    k = cluster.kafka
    topic = unique("s3r")
    k.create_topic(topic, 2)
    # random values: the quota below counts bytes after compression
    k.produce(topic, [{"partition": i % 2, "key": b"k%d" % i,
                       "value": b"r-%06d-" % i + os.urandom(150)} for i in range(20_000)],
              **{"linger.ms": 20})
    original = k.consume_topic(topic)
    pos = {0: original[0][4_000].offset, 1: original[1][7_000].offset}
    group = unique("s3r-g")
    k.commit_group_offsets(group, {(topic, p): o for p, o in pos.items()})
    with S3Server() as s3:
        env = s3.env()
        url = f"s3://{s3.bucket}/resume"
        kbackup.run("backup", "--bootstrap-server", cluster.bootstrap, "--dir", url, "--topics",
                    topic, "--group-offsets", "-q", env=env, timeout=300)
        target = new_cluster("s3r-dst", with_worker=False)
        # a produce quota stretches the first run to minutes, so the kill lands mid-way
        client_id = unique("s3r-restore")
        quota = ("kafka.admin.ConfigCommand", "--bootstrap-server", target.bootstrap, "--alter",
                 "--entity-type", "clients", "--entity-name", client_id)
        target.run_tool(*quota, "--add-config", "producer_byte_rate=20000")
        argv = [str(kbackup.path), "restore", "--bootstrap-server", target.bootstrap, "--dir",
                url, "--topics", topic, "--group-offsets", "-q", "--config",
                f"client.id={client_id}"]

        def written() -> int:
            try:
                return sum(target.kafka.watermarks(topic, p)[1] for p in (0, 1))
            except Exception:  # noqa: BLE001 - not created yet
                return 0
        proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            wait_until(lambda: written() > 0 or proc.poll() is not None, 120,
                       "the restore writing", interval=0.1)
            time.sleep(1)
            assert proc.poll() is None, "the restore finished before the kill"
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
        state = {key.split("/", 3)[-1] for key in s3.list_keys("resume/restore-state/")}
        assert {f"topics/{topic}.json", f"partitions/{topic}/0.json"} <= state, state
        assert 0 < written() < 20_000, "killed mid-way"
        # what the bucket's state is worth: without it the target is someone else's topic
        lost = kbackup.run(*argv[1:], "--state-dir", tmp_path / "empty-state", env=env,
                           check=False)
        assert lost.returncode == 2 and "already holds records" in lost.stderr, lost.stderr
        target.run_tool(*quota, "--delete-config", "producer_byte_rate")
        kbackup.run(*argv[1:], env=env, timeout=300)
        st = json.loads(kbackup.run("restore-status", url, "--json", env=env).stdout)
        assert [r["status"]["finished"] for r in st["restores"]] == [True], st
    assert_restored_with_group(target, topic, original, group, pos, "restored in two runs")
