"""Shared fixtures for kbackup's integration tests against a real Kafka 4.3.1 + Connect.

Why one file: every test module gets the same session cluster (starting a broker and a worker
costs seconds, so it happens once), the same way to build fresh clusters for restore tests,
and the same access to the built artifacts in dist/. Each test isolates itself with `unique()`
topic, connector and directory names instead of its own cluster.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest

from testbed import security
from testbed.cluster import DEFAULT_WORK, Cluster, run_id
from testbed.connect import BYTE_ARRAY_CONVERTER
from testbed.procs import TestbedError, leaked_processes, wait_until

REPO = Path(__file__).resolve().parents[1]
DIST = Path(os.environ.get("KBACKUP_DIST", REPO / "dist"))
PLUGIN_JAR = "kbackup-connect.jar"

# Every Cluster the fixtures started, so a failing test's report gets their log tails.
_LIVE_CLUSTERS: list[Cluster] = []
_counter = itertools.count(1)
_RUN = uuid.uuid4().hex[:6]


def unique(name: str) -> str:
    """A topic/connector/directory name no other test in this run (or an earlier run on a
    kept broker) uses: `name-<run>-<n>`."""
    return f"{name}-{_RUN}-{next(_counter)}"


def _track(c: Cluster) -> Cluster:
    _LIVE_CLUSTERS.append(c)
    return c


def _untrack(c: Cluster) -> None:
    if c in _LIVE_CLUSTERS:
        _LIVE_CLUSTERS.remove(c)


def _plugin_path() -> Path:
    """dist/ when it exists (so the worker can load the kbackup jar); otherwise an empty dir,
    which is enough for tests of the bed itself."""
    if DIST.is_dir():
        return DIST
    empty = REPO / "tests" / ".work" / "empty-plugin-path"
    empty.mkdir(parents=True, exist_ok=True)
    return empty


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """One broker + one distributed Connect worker shared by the whole session."""
    c = _track(Cluster("shared", plugin_path=_plugin_path()))
    try:
        c.start()
        yield c
    finally:
        c.cleanup()
        _untrack(c)


@pytest.fixture
def new_cluster() -> Iterator[Callable[..., Cluster]]:
    """Factory for fresh, started clusters (e.g. the new cluster a restore goes into); they are
    stopped and removed after the test. Keyword arguments go to `Cluster`."""
    made: list[Cluster] = []

    def make(name: str = "fresh", **kwargs: Any) -> Cluster:
        kwargs.setdefault("plugin_path", _plugin_path())
        c = _track(Cluster(name, **kwargs))
        made.append(c)
        c.start()
        return c

    yield make
    for c in reversed(made):
        c.cleanup()
        _untrack(c)


@pytest.fixture(scope="session")
def dist_dir() -> Path:
    """dist/ holding the plugin jar and the CLI; fails clearly when `make dist` was not run."""
    jar = DIST / PLUGIN_JAR
    cli = DIST / "kbackup"
    missing = [str(p) for p in (jar, cli) if not p.exists()]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run `make dist` first (it builds the "
                    "Connect plugin jar and the kbackup CLI into dist/)", pytrace=False)
    return DIST


_cli_runs = itertools.count(1)


class Kbackup:
    """The `kbackup` CLI from dist/, with parsed outputs."""

    def __init__(self, path: Path, env: Optional[dict[str, str]] = None):
        self.path = path
        self.env = env or {}

    def with_env(self, env: dict[str, str]) -> "Kbackup":
        """The same CLI, every run with these variables added (e.g. an S3 server's AWS_*), so
        helpers that poll a backup work on a bucket URL too."""
        return Kbackup(self.path, {**self.env, **env})

    def run(self, *args: str, check: bool = True, timeout: float = 120,
            env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess:
        """Runs the CLI; `env` adds variables to this process's environment (e.g. an S3
        server's AWS_* settings)."""
        env = {**self.env, **(env or {})}
        proc = subprocess.run([str(self.path), *map(str, args)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=timeout,
                              env={**os.environ, **env} if env else None)
        # every output goes through the end-of-session secret check
        where = f"`kbackup {args[0] if args else ''}` (CLI run {next(_cli_runs)})"
        security.record_leaks(security.leaks_in_text(proc.stdout, f"{where} stdout")
                              + security.leaks_in_text(proc.stderr, f"{where} stderr"))
        if check and proc.returncode != 0:
            raise AssertionError(f"kbackup {' '.join(map(str, args))} exited {proc.returncode}:\n"
                                 f"stderr: {proc.stderr[-4000:]}\nstdout: {proc.stdout[-2000:]}")
        return proc

    def inspect(self, directory: Path) -> Any:
        return json.loads(self.run("inspect", directory, "--json").stdout)

    def cat(self, directory: Path, topic: str, partition: Optional[int] = None,
            from_offset: Optional[int] = None) -> list[dict]:
        """`kbackup cat DIR --topic T [--partition P] [--from-offset N] --format jsonl`, one
        dict per record."""
        args = ["cat", directory, "--topic", topic, "--format", "jsonl"]
        if partition is not None:
            args += ["--partition", str(partition)]
        if from_offset is not None:
            args += ["--from-offset", str(from_offset)]
        out = self.run(*args).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def kbackup(dist_dir: Path) -> Kbackup:
    return Kbackup(dist_dir / "kbackup")


@pytest.fixture(scope="session")
def plugin_dir(dist_dir: Path) -> Path:
    """The directory to use as Connect plugin.path (holds kbackup-connect.jar)."""
    return dist_dir


@pytest.fixture
def workdir(cluster: Cluster, request) -> Path:
    """A fresh directory inside the shared cluster's dir (removed with it), e.g. a target.dir."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:40].strip("-")
    d = cluster.root / "dirs" / unique(safe)
    d.mkdir(parents=True)
    return d


# ---------------------------------------------------------------------------------------------
# Record helpers shared by the sink, source and group-offset tests


def b64(b: Optional[bytes]) -> Optional[str]:
    return None if b is None else base64.b64encode(b).decode()


def record_to_cat_json(r) -> dict:
    """A testbed Record as `kbackup cat --format jsonl` must print it."""
    return {
        "topic": r.topic,
        "partition": r.partition,
        "offset": r.offset,
        "timestamp": r.timestamp,
        "timestamp_type": r.timestamp_type,
        "key": b64(r.key),
        "value": b64(r.value),
        "headers": [{"key": k, "value": b64(v)} for k, v in r.headers],
    }


def sink_config(topics: str, target_dir: Path, bootstrap: str, **extra: Any) -> dict[str, Any]:
    """A BackupSinkConnector config as the docs tell users to write it."""
    cfg: dict[str, Any] = {
        "connector.class": "io.kbackup.connect.BackupSinkConnector",
        "tasks.max": 1,
        "topics": topics,
        "target.dir": str(target_dir),
        "key.converter": BYTE_ARRAY_CONVERTER,
        "value.converter": BYTE_ARRAY_CONVERTER,
        "header.converter": BYTE_ARRAY_CONVERTER,
        "consumer.override.isolation.level": "read_committed",
        "cluster.bootstrap.servers": bootstrap,
    }
    cfg.update(extra)
    return cfg


def wait_backup_complete(kb: Kbackup, directory: Path, topic: str, expected: dict[int, int],
                         timeout: float = 120) -> dict[int, list[dict]]:
    """Polls `kbackup cat` until each partition's backup holds `expected[p]` records (never more:
    more is a duplicate and fails at once). Returns {partition: records}."""

    def check():
        if isinstance(directory, Path) and (not directory.exists()
                                            or not any(directory.iterdir())):
            return None
        try:
            recs = kb.cat(directory, topic)
        except AssertionError:
            return None  # nothing of this topic written yet
        by_p: dict[int, list[dict]] = {p: [] for p in expected}
        for r in recs:
            by_p.setdefault(r["partition"], []).append(r)
        for p, rs in by_p.items():
            if len(rs) > expected.get(p, 0):
                raise AssertionError(f"{topic}/{p}: backup holds {len(rs)} records, expected "
                                     f"{expected.get(p, 0)} (duplicates?): offsets "
                                     f"{[r['offset'] for r in rs][:50]}")
        if all(len(by_p[p]) == n for p, n in expected.items()):
            return by_p
        return None

    try:
        return wait_until(check, timeout, f"backup of {topic} to hold {expected}", interval=1.0)
    except TestbedError as e:
        got = {}
        try:
            for r in kb.cat(directory, topic):
                got[r["partition"]] = got.get(r["partition"], 0) + 1
        except AssertionError as err:
            got = {"cat failed": str(err)[:500]}
        raise AssertionError(f"{e}; backup holds {got}") from None


# ---------------------------------------------------------------------------------------------
# Reporting and leftovers


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    # a pytest.fail() from a fixture (e.g. "run make dist") says it all; broker logs are noise
    explained = call.excinfo is not None and call.excinfo.errisinstance(pytest.fail.Exception)
    if rep.failed and _LIVE_CLUSTERS and not explained:
        for c in _LIVE_CLUSTERS:
            rep.sections.append((f"testbed {c.name} ({c.root})", c.log_tails(80)))


def pytest_sessionfinish(session, exitstatus):
    # Fixtures are torn down by now; any JVM of ours still alive is a leak: say so and fail.
    leftovers = leaked_processes()
    if leftovers:
        print("\nERROR: test-bed JVMs still running after the session: "
              + ", ".join(f"{p.name} pid {p.pid}" for p in leftovers))
        for p in leftovers:
            p.stop(timeout=10)
        session.exitstatus = 1
    check_no_secret_leaked(session)


def check_no_secret_leaked(session) -> None:
    """Issue 14: no password, key or JAAS line in any log or output of the run. Every secret
    the bed made (testbed.security registers them) is looked for in every broker and worker log
    and stdout (grepped when each cluster is cleaned up, and here for what is left) and in every
    `kbackup` output; a hit fails the session naming the file and line, never the value."""
    run_dir = Path(os.environ.get("KBACKUP_TESTBED_DIR") or DEFAULT_WORK / run_id())
    found = security.recorded_leaks()
    if run_dir.is_dir():
        found += security.leaks_in_tree(run_dir)
    found = list(dict.fromkeys(found))
    if found:
        print(f"\nERROR: test secrets found in {len(found)} log/output lines "
              "(file:line: which secret):\n  " + "\n  ".join(found[:50]))
        session.exitstatus = 1


def failed_trace(rest, name: str, timeout: float = 120) -> str:
    """Waits for a task of connector `name` to fail and returns its stack trace."""
    import time

    from testbed.connect import ConnectError

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = rest.status(name)
        except ConnectError:  # 404 until the herder has written the first status
            last = None
        for t in (last or {}).get("tasks", []):
            if t.get("state") == "FAILED":
                return t.get("trace", "")
        time.sleep(0.5)
    raise AssertionError(f"no task of {name} failed within {timeout}s: {last}")
