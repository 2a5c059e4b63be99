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
