"""A real Apache Kafka 4.3.1 test bed: single-node KRaft broker + distributed Connect worker.

Why: kbackup's invariants (fidelity, no loss, group offsets) only mean something against the
real broker and the real Connect runtime, so tests, `make demo` and benchmarks all start the
actual jars resolved by tests/testbed/pom.xml (testbed.jars). Every process the bed starts is
a testbed.procs.Process: its own process group, stopped (SIGTERM, then SIGKILL) at exit, on
SIGTERM/SIGINT and when a test fails, so nothing outlives a run.

Use as a module:

    from testbed.cluster import Cluster
    with Cluster(plugin_path="/work/main/dist") as c:
        c.kafka.create_topic("t", partitions=3)
        c.connect.create_connector("n", {...})

or from a shell (`python tests/testbed up|down|status`, see `--help`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Optional

from testbed.broker import Broker
from testbed.clients import KafkaHelper
from testbed.connect import ConnectRest, ConnectWorker
from testbed.jars import REPO, kafka_libs
from testbed.procs import tail
from testbed.tools import run_tool

DEFAULT_WORK = REPO / "tests" / ".work"
DEFAULT_PLUGIN_PATH = REPO / "dist"
STATE_FILE_NAME = "bed.json"

_RUN_ID: Optional[str] = None


def run_id() -> str:
    """One directory name per Python process, shared by all clusters it starts."""
    global _RUN_ID
    if _RUN_ID is None:
        _RUN_ID = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    return _RUN_ID


class Cluster:
    """One broker and one Connect worker, with helpers. More than one may run at once."""

    def __init__(self, name: str = "cluster", plugin_path: Optional[os.PathLike] = None,
                 work_dir: Optional[os.PathLike] = None, exactly_once: bool = False,
                 with_worker: bool = True, broker_overrides: Optional[dict[str, Any]] = None,
                 worker_overrides: Optional[dict[str, Any]] = None, die_with_parent: bool = True,
                 security: Any = None, kafka_version: Optional[str] = None,
                 worker_env: Optional[dict[str, str]] = None):
        self.libs = kafka_libs(kafka_version)
        base = Path(work_dir or os.environ.get("KBACKUP_TESTBED_DIR") or DEFAULT_WORK / run_id())
        self.root = base / f"{name}-{uuid.uuid4().hex[:6]}"
        self.root.mkdir(parents=True, exist_ok=False)
        self.name = name
        self.plugin_path = Path(plugin_path or DEFAULT_PLUGIN_PATH)
        self.broker = Broker(self.root, self.libs, broker_overrides, die_with_parent)
        self.broker.security = security
        self.worker: Optional[ConnectWorker] = None
        if with_worker:
            self.worker = ConnectWorker(self.root, self.libs, self.broker.bootstrap,
                                        self.plugin_path, exactly_once, worker_overrides,
                                        die_with_parent=die_with_parent, env=worker_env)
        self.extra_workers: list[ConnectWorker] = []
        self.kafka = KafkaHelper(self.broker.bootstrap)
        self.destroyed = False

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> "Cluster":
        try:
            self.broker.start()
            # the broker may have moved to other ports if its first ones were taken
            self.kafka = KafkaHelper(self.broker.bootstrap)
            if self.worker:
                self.worker.bootstrap = self.broker.bootstrap
                self.worker.start()
        except BaseException:
            self.stop()
            raise
        self._write_state()
        return self

    def stop(self) -> None:
        """Stops the workers, then the broker (data stays)."""
        for w in self.extra_workers:
            w.stop()
        if self.worker:
            self.worker.stop()
        self.broker.stop()

    def destroy(self) -> None:
        """Stops everything and deletes the data: the cluster is lost for good."""
        self.stop()
        shutil.rmtree(self.broker.data_dir, ignore_errors=True)
        self.destroyed = True

    def cleanup(self) -> None:
        """Stops everything and removes the cluster dir unless KBACKUP_KEEP_TESTBED=1."""
        self.stop()
        from testbed import security

        # the logs go with the dir: grep them for the run's secrets first (tests/conftest.py
        # reports what was found at the end of the session)
        security.record_leaks(security.leaks_in_tree(self.root))
        if os.environ.get("KBACKUP_KEEP_TESTBED") != "1":
            shutil.rmtree(self.root, ignore_errors=True)
            try:
                self.root.parent.rmdir()  # the run dir, once its last cluster is gone
            except OSError:
                pass

    def kill_worker(self) -> None:
        """SIGKILL the worker JVM (crash test)."""
        assert self.worker
        self.worker.kill()

    def restart_worker(self, timeout: float = 120) -> None:
        """Stops (gracefully, if still running) and starts the worker with the same config,
        group and REST port, so its connectors come back."""
        assert self.worker
        self.worker.stop()
        self.worker.start(timeout)

    def add_worker(self, timeout: float = 120) -> "ConnectWorker":
        """Starts one more worker in the same Connect group (same internal topics, own REST
        port), so tasks spread over two JVMs and move when one dies."""
        assert self.worker, "add_worker needs a cluster started with its first worker"
        first = self.worker
        w = ConnectWorker(self.root, self.libs, self.broker.bootstrap, self.plugin_path,
                          first.exactly_once, first.overrides,
                          name=f"worker{len(self.extra_workers) + 2}",
                          die_with_parent=first.die_with_parent, env=first.env)
        w.group_id = first.group_id
        self.extra_workers.append(w)
        w.start(timeout)
        self._write_state()
        return w

    def restart_broker(self, down_s: float = 0.0, timeout: float = 90) -> None:
        """Stops the broker gracefully, waits `down_s`, starts it again on the same ports and
        data (clients see the broker go away and come back)."""
        self.broker.stop()
        time.sleep(down_s)
        self.broker._start_once(timeout)

    def __enter__(self) -> "Cluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    # -- conveniences -----------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    @property
    def connect(self) -> ConnectRest:
        assert self.worker, "this cluster was started without a Connect worker"
        return self.worker.rest

    def pids(self) -> list[int]:
        """Pids of the JVMs this cluster started (running or not)."""
        return [p.process.pid for p in (self.broker, self.worker, *self.extra_workers)
                if p is not None and p.process is not None and p.process.pid is not None]

    def run_tool(self, main_class: str, *args: str, timeout: float = 120,
                 check: bool = True, input: Optional[str] = None) -> subprocess.CompletedProcess:
        """Runs one of Kafka's own CLI tools (a main class from testbed.tools, e.g.
        CONSOLE_CONSUMER) with this cluster's jars."""
        return run_tool(main_class, *args, timeout=timeout, check=check, input=input,
                        libs=self.libs)

    def log_tails(self, lines: int = 60) -> str:
        parts = [f"--- broker log {self.broker.log_file} ---\n{tail(self.broker.log_file, lines)}"]
        if self.worker:
            parts.append(f"--- worker log {self.worker.log_file} ---\n"
                         f"{tail(self.worker.log_file, lines)}")
        return "\n".join(parts)

    def _write_state(self) -> None:
        state = {"name": self.name, "root": str(self.root), "bootstrap": self.bootstrap,
                 "connect_url": self.worker.url if self.worker else None,
                 "pids": self.pids(), "plugin_path": str(self.plugin_path),
                 "broker_log": str(self.broker.log_file),
                 "worker_log": str(self.worker.log_file) if self.worker else None}
        (self.root / STATE_FILE_NAME).write_text(json.dumps(state, indent=2) + "\n")

