"""An object store on a bad day (issue 9: S3 errors are retried with backoff, then fail with
a clear message; nothing is taken for done that is not).

A fault-injecting proxy (tests/testbed/s3faults.py) stands between kbackup and a real S3
server (versitygw): it answers some requests 503 SlowDown itself, holds others back for
seconds, or drops connections without an answer, by request number. What lands is checked
from the server's own listing, not through the proxy or kbackup.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from test_s3_backup import _cat_offsets
from testbed.procs import wait_until
from testbed.s3 import S3Server
from testbed.s3faults import FaultProxy

GOLDEN_V2 = Path(__file__).resolve().parents[1] / "golden" / "v2"


def _backup_files(root: Path) -> dict[str, int]:
    """The files a copy carries (lock files are not data), by key, with their sizes."""
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith(".lock")}


def test_503s_and_slow_answers_are_ridden_out(kbackup, tmp_path):
    want = _backup_files(GOLDEN_V2)
    with S3Server() as s3, FaultProxy(s3) as proxy:
        # every third request refused with SlowDown, every tenth held back 0.8 s
        proxy.rule = lambda n, method, path: (
            "503" if n % 3 == 0 else ("delay", 0.8) if n % 10 == 0 else "pass")
        url = f"s3://{s3.bucket}/busy"
        rep = json.loads(kbackup.run("copy", GOLDEN_V2, url, "--json", "-q",
                                     env=proxy.env(), timeout=300).stdout)
        assert rep["segments"] == sum(k.endswith(".segment") for k in want), rep
        assert proxy.counts["503"] >= 10 and proxy.counts["delay"] >= 3, proxy.counts
        # the server holds the whole backup, byte counts exact, nothing half uploaded
        assert {k.removeprefix("busy/"): v for k, v in s3.list_keys("busy/").items()} == want
        assert s3.pending_uploads() == []
        # reading through the same weather: every record checked, the same as the directory
        found = json.loads(kbackup.run("verify", url, "--json", "-q", env=proxy.env(),
                                       timeout=300).stdout)
        assert found["ok"] and found["problems"] == [], found
        assert found["records"] == json.loads(
            kbackup.run("verify", GOLDEN_V2, "--json", "-q").stdout)["records"]
        for topic in ("golden", "golden-lz4"):
            assert kbackup.run("cat", url, "--topic", topic, env=proxy.env()).stdout == \
                kbackup.run("cat", GOLDEN_V2, "--topic", topic).stdout


def test_a_store_that_goes_away_mid_copy_fails_clearly_and_the_copy_resumes(kbackup, tmp_path):
    src = tmp_path / "golden"
    shutil.copytree(GOLDEN_V2, src)
    want = _backup_files(src)
    with S3Server() as s3, FaultProxy(s3) as proxy:
        url = f"s3://{s3.bucket}/away"
        # the gateway answers 12 requests, then drops every connection unanswered
        proxy.rule = lambda n, method, path: "pass" if n <= 12 else "drop"
        started = time.monotonic()
        proc = kbackup.run("copy", src, url, "-q", env=proxy.env(), check=False, timeout=300)
        took = time.monotonic() - started
        assert proc.returncode == 1, (proc.returncode, proc.stderr)
        assert f"could not reach the object store at {proxy.endpoint}" in proc.stderr, \
            proc.stderr
        assert "AWS_ENDPOINT_URL" in proc.stderr, "the message names where to look"
        assert proxy.counts["drop"] >= 2, f"retried before giving up: {proxy.counts}"
        assert took < 150, f"gave up after {took:.0f}s: retries are bounded"
        landed = {k.removeprefix("away/") for k in s3.list_keys("away/")}
        assert 0 < len(landed) < len(want), landed
        assert "kbackup.json" not in landed, "a half copy must never look like a backup"
        proc = kbackup.run("inspect", url, env=s3.env(), check=False)
        assert proc.returncode == 1 and "is not a kbackup backup" in proc.stderr, proc.stderr

        # back again: the same command finishes the copy, keeping what had landed intact
        proxy.rule = lambda n, method, path: "pass"
        rep = json.loads(kbackup.run("copy", src, url, "--json", "-q", env=proxy.env()).stdout)
        assert rep["unchanged"] >= 1 and rep["written"] >= 1, rep
        assert {k.removeprefix("away/"): v for k, v in s3.list_keys("away/").items()} == want
        found = json.loads(kbackup.run("verify", url, "--json", "-q", env=s3.env()).stdout)
        assert found["ok"] and found["problems"] == [], found


def test_a_backup_into_a_failing_store_rides_out_errors_or_fails_clearly_and_resumes(
        cluster, kbackup):
    """`kbackup backup` straight into the bucket: through 503s and slow answers it finishes
    exact; with the store gone in the middle of a multi-part segment it stops with exit 1
    naming the endpoint, reporting nothing durable it did not complete; once the store is back
    the same command finishes, every record exactly once, no upload left open."""
    import os
    from conftest import unique

    k = cluster.kafka
    topic = unique("s3-weather")
    k.create_topic(topic, 2)
    for p in (0, 1):
        k.produce(topic, [{"partition": p, "key": b"%d-%d" % (p, i), "value": os.urandom(60_000)}
                          for i in range(200)])  # 12 MB per partition: several 8 MiB parts
    want = {p: [r.offset for r in k.consume_partition(topic, p)] for p in (0, 1)}
    argv = ("backup", "--bootstrap-server", cluster.bootstrap, "--topics", topic, "--json", "-q")
    with S3Server() as s3, FaultProxy(s3) as proxy:
        proxy.rule = lambda n, method, path: (
            "503" if n % 3 == 0 else ("delay", 0.8) if n % 10 == 0 else "pass")
        url = f"s3://{s3.bucket}/busy-backup"
        out = json.loads(kbackup.run(*argv, "--dir", url, env=proxy.env(), timeout=300).stdout)
        assert out["records"] == 400 and proxy.counts["503"] >= 5, (out, proxy.counts)
        assert _cat_offsets(kbackup, url, topic, s3.env()) == want
        assert s3.pending_uploads() == []

        # the store goes away once the first parts are up: connections dropped unanswered
        url = f"s3://{s3.bucket}/gone"
        parts = {"n": 0}

        def rule(n, method, path):
            if "partNumber" in path:
                parts["n"] += 1
            return "drop" if parts["n"] > 2 else "pass"
        proxy.rule = rule
        proc = kbackup.run(*argv, "--dir", url, env=proxy.env(), check=False, timeout=300)
        assert proc.returncode == 1, (proc.returncode, proc.stderr)
        assert f"could not reach the object store at {proxy.endpoint}" in proc.stderr, \
            proc.stderr
        assert proc.stdout.strip() == "", "nothing is reported after a failed run"
        held = json.loads(kbackup.run("inspect", url, "--json", env=s3.env()).stdout)["records"]
        assert s3.pending_uploads(), "the failed run left its upload open (aborted on resume)"
        proxy.rule = lambda n, method, path: "pass"
        out = json.loads(kbackup.run(*argv, "--dir", url, env=proxy.env(), timeout=300).stdout)
        assert out["records"] == 400 - held, (out, held)
        assert _cat_offsets(kbackup, url, topic, s3.env()) == want, "exactly once after resuming"
        assert s3.pending_uploads() == [], "the orphaned upload was aborted by the rerun"
        found = json.loads(kbackup.run("verify", url, "--json", "-q", env=s3.env()).stdout)
        assert found["ok"] and found["problems"] == [], found


def test_a_sink_task_whose_store_goes_away_fails_clearly_and_resumes_exactly(
        new_cluster, kbackup):
    """The sink connector writing into a bucket whose endpoint stops answering in the middle
    of a multi-part segment: the requests are retried, then the task FAILS with a message
    naming the endpoint and what to do; Connect's committed offsets never pass what the bucket
    holds complete. Restarted once the store is back, the task resumes after the last complete
    segment, aborts the orphaned upload, and the bucket holds every record exactly once."""
    import os
    from conftest import failed_trace, sink_config, unique, wait_backup_complete

    with S3Server() as s3, FaultProxy(s3) as proxy:
        c = new_cluster("s3-gone", worker_env=proxy.env())
        k = c.kafka
        topic = unique("s3-gone")
        k.create_topic(topic, 1)
        k.produce(topic, [{"partition": 0, "key": b"a-%d" % i, "value": os.urandom(50_000)}
                          for i in range(40)])  # a first, small segment completes (age 2 s)
        url = f"s3://{s3.bucket}/gone-sink"
        name = unique("s3-gone-sink")
        c.connect.create_connector(name, sink_config(topic, url, c.bootstrap, **{
            "max.segment.age.ms": 2000}))
        wait_until(lambda: any(key.endswith(".segment") for key in s3.list_keys("gone-sink/")),
                   60, "a first segment complete in the bucket", interval=0.5)
        parts = {"n": 0}

        def rule(n, method, path):
            if "partNumber" in path:
                parts["n"] += 1
            return "drop" if parts["n"] > 1 else "pass"
        proxy.rule = rule
        k.produce(topic, [{"partition": 0, "key": b"b-%d" % i, "value": os.urandom(100_000)}
                          for i in range(200)])  # 20 MB: a multi-part segment
        trace = failed_trace(c.connect, name, timeout=240)
        assert f"could not reach the object store at {proxy.endpoint}" in trace, trace[:3000]
        assert "restart the task" in trace and "nothing of it was reported durable" in trace, \
            trace[:3000]
        # nothing reported durable that is not: Connect committed at most the bucket's end
        held = _cat_offsets(kbackup, url, topic, s3.env()).get(0, [])
        committed = k.group_offsets(f"connect-{name}").get((topic, 0), 0)
        assert held and committed <= held[-1] + 1, (committed, held[-1])
        assert s3.pending_uploads(), "the failed task left its upload open"

        proxy.rule = lambda n, method, path: "pass"
        c.connect.restart(name)
        want = [r.offset for r in k.consume_partition(topic, 0)]
        wait_backup_complete(kbackup.with_env(s3.env()), url, topic, {0: len(want)}, timeout=180)
        assert _cat_offsets(kbackup, url, topic, s3.env()) == {0: want}
        c.connect.delete_connector(name)
        c.connect.wait_deleted(name)
        assert s3.pending_uploads() == [], "the restarted task aborted the orphaned upload"
        found = json.loads(kbackup.run("verify", url, "--json", "-q", env=s3.env()).stdout)
        assert found["ok"] and found["problems"] == [], found
