"""A real Apache Kafka 4.3.1 test bed: single-node KRaft broker + distributed Connect worker.

Why: kbackup's invariants (fidelity, no loss, group offsets) only mean something against the
real broker and the real Connect runtime, so tests, `make demo` and benchmarks all start the
actual jars resolved by tests/testbed/pom.xml. Every process the bed starts runs in its own
process group and is stopped (SIGTERM, then SIGKILL) at exit, on SIGTERM/SIGINT and when a
test fails, so nothing outlives a run.

Use as a module:

    from testbed.kafka import Cluster
    with Cluster(plugin_path="/work/main/dist") as c:
        c.kafka.create_topic("t", partitions=3)
        c.connect.create_connector("n", {...})

or from a shell (`python tests/testbed/kafka.py up|down|status`, see `--help`).
"""

from __future__ import annotations

import argparse
import atexit
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

REPO = Path(__file__).resolve().parents[2]
# The Kafka (broker, tools, Connect) version the bed runs; KBACKUP_KAFKA_VERSION or
# Cluster(kafka_version=...) picks another release from Maven Central (e.g. 3.9.2, 4.4.0).
KAFKA_VERSION = os.environ.get("KBACKUP_KAFKA_VERSION", "4.3.1")
DEFAULT_LIBS = REPO / ".cache" / f"kafka-{KAFKA_VERSION}" / "libs"
DEFAULT_WORK = REPO / "tests" / ".work"
DEFAULT_PLUGIN_PATH = REPO / "dist"
STATE_FILE_NAME = "bed.json"

# Main classes of Kafka 4.3.1's own tools (checked with `unzip -l` on the 4.3.1 jars).
STORAGE_TOOL = "kafka.tools.StorageTool"
KAFKA_MAIN = "kafka.Kafka"
CONNECT_DISTRIBUTED = "org.apache.kafka.connect.cli.ConnectDistributed"
CONSOLE_CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"
CONSOLE_PRODUCER = "org.apache.kafka.tools.ConsoleProducer"
CONSUMER_GROUPS = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
DELETE_RECORDS = "org.apache.kafka.tools.DeleteRecordsCommand"
PRODUCER_PERF = "org.apache.kafka.tools.ProducerPerformance"
CONSUMER_PERF = "org.apache.kafka.tools.ConsumerPerformance"
TOPICS = "org.apache.kafka.tools.TopicCommand"
GET_OFFSET_SHELL = "org.apache.kafka.tools.GetOffsetShell"
TRANSACTIONS = "org.apache.kafka.tools.TransactionsCommand"

BYTE_ARRAY_CONVERTER = "org.apache.kafka.connect.converters.ByteArrayConverter"


class TestbedError(RuntimeError):
    """A test-bed step failed; the message says which and where its log is."""

    __test__ = False  # not a pytest test class despite the name


# --------------------------------------------------------------------------------------------
# Jars, ports, files


def kafka_libs(version: Optional[str] = None) -> Path:
    """Directory holding the Kafka jars (4.3.1 unless `version`/KBACKUP_KAFKA_VERSION says
    otherwise); resolves them with Maven on first use.

    `KBACKUP_KAFKA_LIBS` overrides the location of the default version (then nothing is
    downloaded).
    """
    if version is not None and version != KAFKA_VERSION:
        libs = REPO / ".cache" / f"kafka-{version}" / "libs"
        if not (libs / f"kafka_2.13-{version}.jar").exists():
            _resolve_kafka(version)
        return libs
    override = os.environ.get("KBACKUP_KAFKA_LIBS")
    if override:
        libs = Path(override)
        if not list(libs.glob("kafka_2.13-*.jar")):
            raise TestbedError(
                f"KBACKUP_KAFKA_LIBS={libs} holds no kafka_2.13 jar: point it at a directory of "
                "Kafka 4.3.1 jars or unset it to let the test bed resolve them with Maven"
            )
        return libs
    if not (DEFAULT_LIBS / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
        _resolve_kafka(KAFKA_VERSION)
    return DEFAULT_LIBS


def _resolve_kafka(version: str) -> None:
    pom = REPO / "tests" / "testbed" / "pom.xml"
    proc = subprocess.run(
        ["mvn", "-q", "-B", "-f", str(pom), "package", f"-Dkafka.version={version}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if proc.returncode != 0:
        raise TestbedError(
            f"resolving Kafka {version} jars failed (mvn -f tests/testbed/pom.xml package "
            f"-Dkafka.version={version}): {proc.stdout[-2000:]}\nfix: check network access to "
            "Maven Central and that the version exists"
        )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_props(path: Path, props: dict[str, Any]) -> None:
    lines = [f"{k}={v}" for k, v in props.items() if v is not None]
    path.write_text("\n".join(lines) + "\n")


def _log4j2_config(path: Path, log_file: Path, root_level: str = "INFO",
                   quiet: Iterable[str] = ()) -> None:
    """A log4j2 XML config sending everything to one file (XML needs no extra jar)."""
    loggers = "\n".join(
        f'    <Logger name="{name}" level="WARN"/>' for name in quiet
    )
    path.write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <File name="file" fileName="{log_file}" append="true">
      <PatternLayout pattern="[%d{{ISO8601}}] %p [%t] %c: %m%n"/>
    </File>
  </Appenders>
  <Loggers>
{loggers}
    <Root level="{root_level}"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
""")


def tail(path: Path, lines: int = 60) -> str:
    """Last lines of a log file ('' if it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def log_errors(path: Path, limit: int = 20) -> str:
    """The first ERROR/FATAL lines of a log: why a JVM died is rarely in its shutdown tail."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    lines = [ln for ln in text.splitlines() if " ERROR " in ln or " FATAL " in ln]
    return "\n".join(lines[:limit])


def _bind_failed(log_file: Path) -> bool:
    """True if the JVM logged that a port it was given is taken; the log is set aside so a
    retry starts with a clean one. The JMX agent says so on the JVM's stdout (`*.stdout`
    beside the log) before any logging starts."""
    try:
        failed = "Address already in use" in log_file.read_text(errors="replace")
    except OSError:
        failed = False
    for out in log_file.parent.glob("*.stdout"):
        try:
            if "Port already in use" in out.read_text(errors="replace"):
                out.rename(out.with_name(out.name + f".bind-failed-{time.time_ns()}"))
                failed = True
        except OSError:
            pass
    if failed and log_file.exists():
        log_file.rename(log_file.with_name(log_file.name + f".bind-failed-{time.time_ns()}"))
    return failed


def wait_until(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll `pred` until it returns something truthy; raise TestbedError naming `what`.
    TestbedError and AssertionError from `pred` mean "this will never succeed" (a process
    died, a task FAILED, a duplicate showed up) and propagate at once; other errors are
    retried until the timeout."""
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    while True:
        try:
            value = pred()
            if value:
                return value
        except (TestbedError, AssertionError):
            raise
        except Exception as e:  # noqa: BLE001 - polled conditions fail until they succeed
            last_exc = e
        if time.monotonic() > deadline:
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            raise TestbedError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# Process management: every child gets its own process group; a global registry stops them.

_REGISTRY_LOCK = threading.Lock()
_REGISTRY: list["JavaProcess"] = []
_STARTED: list["JavaProcess"] = []  # every JVM ever started here, for leak checks
_HANDLERS_INSTALLED = False


def _stop_all_registered() -> None:
    with _REGISTRY_LOCK:
        procs = list(_REGISTRY)
    for p in reversed(procs):
        try:
            p.stop(timeout=10)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def _install_handlers() -> None:
    global _HANDLERS_INSTALLED
    if _HANDLERS_INSTALLED:
        return
    _HANDLERS_INSTALLED = True
    atexit.register(_stop_all_registered)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous = signal.getsignal(sig)

        def handler(signum, frame, _previous=previous):
            _stop_all_registered()
            if callable(_previous):
                _previous(signum, frame)
            else:
                # like Ctrl-C: pytest stops the session and runs teardown (which removes dirs)
                raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(sig, handler)
    # SIGINT stays Python's KeyboardInterrupt: pytest then runs fixture teardown and atexit.


def _set_pdeathsig() -> None:
    """In the child: get SIGKILL when the thread that started it dies, even by SIGKILL, so a
    killed test run leaves no JVM behind (start clusters from a thread that outlives them).
    SIGKILL, not SIGTERM: nobody is left to escalate if a JVM hangs in its shutdown hooks."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # noqa: BLE001 - not Linux: atexit still covers normal exits
        pass


def leaked_processes() -> list["JavaProcess"]:
    """JVMs started by this Python process that are still running (should be [] at the end)."""
    with _REGISTRY_LOCK:
        return [p for p in _STARTED if p.running()]


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


class JavaProcess:
    """One JVM started by the bed, in its own session/process group."""

    def __init__(self, name: str, argv: list[str], log_file: Path, stdout_file: Path,
                 die_with_parent: bool = True):
        self.name = name
        self.argv = argv
        self.log_file = log_file
        self.stdout_file = stdout_file
        self.die_with_parent = die_with_parent
        self.proc: Optional[subprocess.Popen] = None

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        _install_handlers()
        out = open(self.stdout_file, "ab")
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_set_pdeathsig if self.die_with_parent else None,
                cwd=str(self.stdout_file.parent),
            )
        finally:
            out.close()
        with _REGISTRY_LOCK:
            _REGISTRY.append(self)
            _STARTED.append(self)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start_and_wait(self, ready: Callable[[], Any], timeout: float, what: str) -> None:
        """Starts the JVM and waits until `ready()` is true; a timeout names `what` and shows
        the tails of the log and of stdout."""
        self.start()
        try:
            wait_until(ready, timeout, what, interval=0.5)
        except TestbedError as e:
            raise TestbedError(f"{e}\n--- {self.log_file} ---\n{tail(self.log_file)}\n"
                               f"--- stdout ---\n{tail(self.stdout_file)}") from None

    def check_alive(self) -> None:
        """Raises at once, with the errors it logged, if the JVM has exited (for `ready()`)."""
        if not self.running():
            code = self.proc.returncode if self.proc else None
            raise TestbedError(
                f"{self.name} exited with {code}; errors logged:\n{log_errors(self.log_file)}\n"
                f"log tail:\n{tail(self.log_file)}\nstdout:\n{tail(self.stdout_file)}")

    def _signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the whole process group at once (crash simulation)."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGKILL)
        self.proc.wait()
        self._unregister()

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Safe to call twice."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait()
        # the leader is gone; anything else left in its group gets SIGKILL
        self._signal_group(signal.SIGKILL)
        self._unregister()

    def _unregister(self) -> None:
        with _REGISTRY_LOCK:
            if self in _REGISTRY:
                _REGISTRY.remove(self)


def jmx_flags(port: int) -> list[str]:
    """JVM flags for a remote JMX endpoint on loopback `port` (registry and RMI on the same
    port, no authentication or TLS: test beds only)."""
    return ["-Dcom.sun.management.jmxremote",
            f"-Dcom.sun.management.jmxremote.port={port}",
            f"-Dcom.sun.management.jmxremote.rmi.port={port}",
            "-Dcom.sun.management.jmxremote.host=127.0.0.1",
            "-Djava.rmi.server.hostname=127.0.0.1",
            "-Dcom.sun.management.jmxremote.authenticate=false",
            "-Dcom.sun.management.jmxremote.ssl=false"]


def java_argv(libs: Path, main_class: str, args: list[str], heap: str = "512m",
              log4j: Optional[Path] = None, extra_jvm: Iterable[str] = ()) -> list[str]:
    java = os.environ.get("JAVA", "java")
    if os.environ.get("JAVA_HOME") and "JAVA" not in os.environ:
        java = str(Path(os.environ["JAVA_HOME"]) / "bin" / "java")
    argv = [java, f"-Xmx{heap}", "-Xms64m", "-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true"]
    if log4j is not None:
        argv.append(f"-Dlog4j2.configurationFile={log4j}")
    argv += list(extra_jvm)
    argv += ["-cp", f"{libs}/*", main_class] + list(args)
    return argv


# --------------------------------------------------------------------------------------------
# Broker


def _start_moving_ports(service: Any, timeout: float, new_ports: Callable[[], None]) -> None:
    """Starts a Broker or ConnectWorker. If another program took a free port between our check
    and the bind, a service that never ran yet moves to new ports (up to 3 attempts)."""
    for attempt in range(3):
        try:
            service._start_once(timeout)
            service.started_once = True
            return
        except TestbedError:
            if service.started_once or attempt == 2 or not _bind_failed(service.log_file):
                raise
            service.stop()
            new_ports()


class Broker:
    """A single-node KRaft broker (broker+controller) on 127.0.0.1."""

    def __init__(self, root: Path, libs: Path, overrides: Optional[dict[str, Any]] = None,
                 die_with_parent: bool = True):
        self.root = root
        self.libs = libs
        self.dir = root / "broker"
        self.data_dir = self.dir / "data"
        self.log_file = self.dir / "broker.log"
        self.port = free_port()
        self.controller_port = free_port()
        self.overrides = overrides or {}
        self.die_with_parent = die_with_parent
        self.process: Optional[JavaProcess] = None
        self.started_once = False
        # testbed.security.Security: SASL and SSL listeners, SCRAM users, ACLs (None: PLAINTEXT)
        self.security: Any = None
        # Kafka's own form (base64url of a UUID), but never starting with "-": the storage
        # tool's argument parser would take such an id for an option (1 run in 64 failed).
        self.cluster_id = "k" + base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")[1:]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _config(self) -> dict[str, Any]:
        props: dict[str, Any] = {
            "process.roles": "broker,controller",
            "node.id": 1,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "log.dirs": str(self.data_dir),
            "num.partitions": 1,
            "default.replication.factor": 1,
            "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": 5,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "transaction.state.log.num.partitions": 5,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "group.initial.rebalance.delay.ms": 0,
            # tests create every topic on purpose; auto-creation would hide a restore that forgot to
            "auto.create.topics.enable": "false",
            "num.network.threads": 2,
            "num.io.threads": 4,
            "log.flush.interval.messages": None,
        }
        if self.security is not None:
            props.update(self.security.broker_props(self.port, self.controller_port))
        props.update(self.overrides)
        return props

    def format(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.props_file = self.dir / "server.properties"
        _write_props(self.props_file, self._config())
        self.log4j = self.dir / "log4j2.xml"
        _log4j2_config(self.log4j, self.log_file, quiet=[
            "kafka.request.logger", "kafka.log.LogCleaner", "state.change.logger",
            "org.apache.kafka.storage.internals.log", "kafka.log",
        ])
        if (self.data_dir / "meta.properties").exists():
            return  # restart of a formatted broker
        argv = java_argv(self.libs, STORAGE_TOOL,
                         ["format", "--cluster-id", self.cluster_id, "--config",
                          str(self.props_file), "--standalone",
                          *(self.security.format_args() if self.security else [])],
                         heap="256m", log4j=self.log4j)
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise TestbedError(f"formatting KRaft storage failed ({' '.join(argv)}):\n{proc.stdout}")

    def start(self, timeout: float = 90) -> None:
        _start_moving_ports(self, timeout, self._new_ports)

    def _new_ports(self) -> None:
        # the ports are in the formatted voter set, so a moved broker is formatted again
        self.port, self.controller_port = free_port(), free_port()
        if self.security is not None:
            self.security.new_ports()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def _start_once(self, timeout: float) -> None:
        if self.process and self.process.running():
            return
        self.format()
        argv = java_argv(self.libs, KAFKA_MAIN, [str(self.props_file)], heap="512m",
                         log4j=self.log4j, extra_jvm=[f"-Dkafka.logs.dir={self.dir}"])
        self.process = JavaProcess("broker", argv, self.log_file, self.dir / "broker.stdout",
                                   die_with_parent=self.die_with_parent)
        self.process.start_and_wait(self._ready, timeout, f"broker at {self.bootstrap}")

    def _ready(self) -> bool:
        self.process.check_alive()
        from confluent_kafka.admin import AdminClient

        # log_level 0: "connection refused" while the broker boots is expected, not news
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 2000,
                             "log_level": 0})
        md = admin.list_topics(timeout=2)
        return bool(md.brokers)

    def stop(self, timeout: float = 30) -> None:
        if self.process:
            self.process.stop(timeout)

    def kill(self) -> None:
        if self.process:
            self.process.kill()


# --------------------------------------------------------------------------------------------
# Connect worker


class ConnectWorker:
    """A distributed-mode Connect worker with its own group and internal topics."""

    def __init__(self, root: Path, libs: Path, bootstrap: str, plugin_path: Path,
                 exactly_once: bool = False, overrides: Optional[dict[str, Any]] = None,
                 name: str = "worker", die_with_parent: bool = True):
        self.root = root
        self.libs = libs
        self.name = name
        self.dir = root / name
        self.log_file = self.dir / "connect.log"
        self.bootstrap = bootstrap
        self.plugin_path = Path(plugin_path)
        self.rest_port = free_port()
        # JMX on loopback, no auth/TLS: tests read the plugin metrics with Kafka's JmxTool.
        self.jmx_port = free_port()
        self.exactly_once = exactly_once
        self.overrides = overrides or {}
        self.die_with_parent = die_with_parent
        self.group_id = f"connect-{uuid.uuid4().hex[:10]}"
        self.process: Optional[JavaProcess] = None
        self.started_once = False
        self.rest = ConnectRest(self.url)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def _config(self) -> dict[str, Any]:
        g = self.group_id
        props: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "group.id": g,
            "config.storage.topic": f"{g}-configs",
            "offset.storage.topic": f"{g}-offsets",
            "status.storage.topic": f"{g}-status",
            "config.storage.replication.factor": 1,
            "offset.storage.replication.factor": 1,
            "status.storage.replication.factor": 1,
            "offset.storage.partitions": 3,
            "status.storage.partitions": 1,
            "key.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "offset.flush.interval.ms": 2000,
            "listeners": f"http://127.0.0.1:{self.rest_port}",
            "rest.advertised.host.name": "127.0.0.1",
            "rest.advertised.port": self.rest_port,
            "plugin.path": str(self.plugin_path),
            "connector.client.config.override.policy": "All",
            # a crashed worker's tasks go back to the restarted one at once, not after 5 minutes
            "scheduled.rebalance.max.delay.ms": 0,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
            "task.shutdown.graceful.timeout.ms": 10000,
        }
        if self.exactly_once:
            props["exactly.once.source.support"] = "enabled"
        props.update(self.overrides)
        return props

    def start(self, timeout: float = 120) -> None:
        _start_moving_ports(self, timeout, self._new_ports)

    def _new_ports(self) -> None:
        self.rest_port = free_port()
        self.jmx_port = free_port()
        self.rest = ConnectRest(self.url)

    @property
    def jmx_url(self) -> str:
        return f"service:jmx:rmi:///jndi/rmi://127.0.0.1:{self.jmx_port}/jmxrmi"

    def _start_once(self, timeout: float) -> None:
        if self.process and self.process.running():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self.props_file = self.dir / "connect-distributed.properties"
        _write_props(self.props_file, self._config())
        self.log4j = self.dir / "log4j2.xml"
        _log4j2_config(self.log4j, self.log_file, quiet=[
            "org.apache.kafka.clients", "org.apache.kafka.common", "org.reflections",
            "org.eclipse.jetty", "org.glassfish", "org.apache.kafka.connect.runtime.isolation",
        ])
        argv = java_argv(self.libs, CONNECT_DISTRIBUTED, [str(self.props_file)], heap="512m",
                         log4j=self.log4j, extra_jvm=[f"-Dkafka.logs.dir={self.dir}",
                                                      *jmx_flags(self.jmx_port)])
        self.process = JavaProcess(self.name, argv, self.log_file, self.dir / "connect.stdout",
                                   die_with_parent=self.die_with_parent)
        self.process.start_and_wait(self._ready, timeout, f"Connect worker REST at {self.url}")

    def _ready(self) -> bool:
        self.process.check_alive()
        import requests

        plugins = requests.get(f"{self.url}/connector-plugins", timeout=2)
        if plugins.status_code != 200:
            return False
        # /connectors goes through the herder: it answers once the worker has joined its group
        return requests.get(f"{self.url}/connectors", timeout=5).status_code == 200

    def stop(self, timeout: float = 30) -> None:
        if self.process:
            self.process.stop(timeout)

    def kill(self) -> None:
        if self.process:
            self.process.kill()


# --------------------------------------------------------------------------------------------
# Connect REST client


class ConnectError(RuntimeError):
    """A Connect REST call answered with an unexpected status."""

    def __init__(self, method: str, url: str, status: int, body: str):
        super().__init__(f"{method} {url} -> {status}: {body}")
        self.status = status
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


class ConnectRest:
    """Thin client for the Connect REST API (raises ConnectError on unexpected status)."""

    def __init__(self, url: str):
        self.url = url

    def request(self, method: str, path: str, body: Any = None, ok: Iterable[int] = (200, 201, 202, 204),
                retry_conflict: float = 60) -> Any:
        """Calls the API; retries 409 (rebalance in progress) and connection errors for a while."""
        import requests

        url = f"{self.url}{path}"
        deadline = time.monotonic() + retry_conflict
        while True:
            try:
                r = requests.request(method, url, json=body, timeout=60)
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
                continue
            if r.status_code == 409 and time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            if r.status_code not in ok:
                raise ConnectError(method, url, r.status_code, r.text)
            if not r.text:
                return None
            try:
                return r.json()
            except ValueError:
                return r.text

    def plugins(self) -> list[dict]:
        return self.request("GET", "/connector-plugins?connectorsOnly=false")

    def connectors(self) -> list[str]:
        return self.request("GET", "/connectors")

    def create_connector(self, name: str, config: dict[str, Any]) -> Any:
        """POST /connectors; raises ConnectError (status 400 for invalid config)."""
        return self.request("POST", "/connectors", {"name": name, "config": _strs(config)})

    def put_config(self, name: str, config: dict[str, Any]) -> Any:
        return self.request("PUT", f"/connectors/{name}/config", _strs(config))

    def get_config(self, name: str) -> dict[str, str]:
        return self.request("GET", f"/connectors/{name}/config")

    def validate(self, plugin_class: str, config: dict[str, Any],
                 name: Optional[str] = "validate-only") -> dict:
        """PUT /connector-plugins/<class>/config/validate; the parsed response. Connect
        demands a `name` like a real create does; pass name=None to leave it out."""
        cfg = dict(_strs(config))
        cfg.setdefault("connector.class", plugin_class)
        if name is not None:
            cfg.setdefault("name", name)
        short = plugin_class.rsplit(".", 1)[-1]
        return self.request("PUT", f"/connector-plugins/{short}/config/validate", cfg)

    def status(self, name: str) -> dict:
        return self.request("GET", f"/connectors/{name}/status")

    def tasks(self, name: str) -> list[dict]:
        return self.request("GET", f"/connectors/{name}/tasks")

    def delete_connector(self, name: str) -> None:
        self.request("DELETE", f"/connectors/{name}", ok=(200, 204, 404))

    def pause(self, name: str) -> None:
        self.request("PUT", f"/connectors/{name}/pause")

    def resume(self, name: str) -> None:
        self.request("PUT", f"/connectors/{name}/resume")

    def restart(self, name: str, include_tasks: bool = True) -> None:
        self.request("POST", f"/connectors/{name}/restart?includeTasks={str(include_tasks).lower()}")

    def offsets(self, name: str) -> dict:
        return self.request("GET", f"/connectors/{name}/offsets")

    def wait_for_task_state(self, name: str, state: str = "RUNNING", count: Optional[int] = None,
                            timeout: float = 60) -> dict:
        """Waits until the connector and all its tasks (and at least `count` of them) are in
        `state`. A FAILED task while waiting for anything else raises at once with its trace."""

        def check() -> Optional[dict]:
            try:
                st = self.status(name)
            except ConnectError as e:
                if e.status == 404:
                    return None
                raise
            tasks = st.get("tasks", [])
            for t in tasks:
                if t["state"] == "FAILED" and state != "FAILED":
                    raise TestbedError(f"task {name}-{t['id']} FAILED: {t.get('trace', '')[:4000]}")
            if st["connector"]["state"] == "FAILED" and state != "FAILED":
                raise TestbedError(f"connector {name} FAILED: {st['connector'].get('trace', '')[:4000]}")
            want = count if count is not None else 1
            if len(tasks) >= want and all(t["state"] == state for t in tasks) \
                    and (state == "FAILED" or st["connector"]["state"] == state):
                return st
            return None

        return wait_until(check, timeout, f"connector {name} tasks to be {state}", interval=0.5)

    def wait_deleted(self, name: str, timeout: float = 30) -> None:
        wait_until(lambda: name not in self.connectors(), timeout, f"connector {name} to be gone")


def validation_errors(response: dict) -> dict[str, list[str]]:
    """{config name: [errors]} for every config with errors in a validate response."""
    out: dict[str, list[str]] = {}
    for c in response.get("configs", []):
        errs = c["value"].get("errors") or []
        if errs:
            out[c["value"]["name"]] = errs
    return out


def _strs(config: dict[str, Any]) -> dict[str, str]:
    return {k: (v if isinstance(v, str) else json.dumps(v) if isinstance(v, bool) else str(v))
            for k, v in config.items()}


# --------------------------------------------------------------------------------------------
# Kafka helper (confluent-kafka)


class Record:
    """One consumed record with everything kbackup must keep."""

    __slots__ = ("topic", "partition", "offset", "timestamp", "timestamp_type", "key", "value",
                 "headers")

    def __init__(self, topic, partition, offset, timestamp, timestamp_type, key, value, headers):
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.timestamp = timestamp
        self.timestamp_type = timestamp_type  # "CreateTime" | "LogAppendTime" | None
        self.key = key
        self.value = value
        self.headers = headers  # list of (str, bytes|None), in order

    def as_tuple(self):
        return (self.topic, self.partition, self.offset, self.timestamp, self.timestamp_type,
                self.key, self.value, tuple(self.headers))

    def __eq__(self, other):
        return isinstance(other, Record) and self.as_tuple() == other.as_tuple()

    def __repr__(self):
        def short(b):
            return b if b is None or len(b) <= 40 else b[:40] + b"...(%d bytes)" % len(b)
        return (f"Record({self.topic}/{self.partition}@{self.offset} ts={self.timestamp} "
                f"{self.timestamp_type} key={short(self.key)!r} value={short(self.value)!r} "
                f"headers={[(k, short(v)) for k, v in self.headers]!r})")


def _ts_type_name(t: int) -> Optional[str]:
    from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME

    return {TIMESTAMP_CREATE_TIME: "CreateTime", TIMESTAMP_LOG_APPEND_TIME: "LogAppendTime"}.get(t)


class KafkaHelper:
    """Produce, consume and administer topics and groups on one broker."""

    def __init__(self, bootstrap: str):
        self.bootstrap = bootstrap

    def admin(self):
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.bootstrap})

    def create_topic(self, name: str, partitions: int = 1, config: Optional[dict[str, Any]] = None,
                     timeout: float = 30) -> None:
        from confluent_kafka.admin import NewTopic

        nt = NewTopic(name, num_partitions=partitions, replication_factor=1,
                      config={k: str(v) for k, v in (config or {}).items()})
        admin = self.admin()  # keep a reference: a collected client fails its futures
        for _, fut in admin.create_topics([nt], operation_timeout=timeout).items():
            fut.result(timeout)
        wait_until(lambda: self._has_leaders(name, partitions), timeout, f"topic {name} leaders")

    def _has_leaders(self, name: str, partitions: int) -> bool:
        md = self.admin().list_topics(name, timeout=5)
        t = md.topics.get(name)
        return bool(t and not t.error and len(t.partitions) == partitions
                    and all(p.leader >= 0 for p in t.partitions.values()))

    def topics(self) -> dict[str, int]:
        """{topic: partition count} for every topic the broker lists."""
        md = self.admin().list_topics(timeout=10)
        return {n: len(t.partitions) for n, t in md.topics.items()}

    def topic_config(self, name: str) -> dict[str, str]:
        from confluent_kafka.admin import ConfigResource, ResourceType

        res = ConfigResource(ResourceType.TOPIC, name)
        admin = self.admin()
        entries = list(admin.describe_configs([res]).values())[0].result(30)
        return {k: e.value for k, e in entries.items()}

    def producer(self, **conf):
        from confluent_kafka import Producer

        base = {"bootstrap.servers": self.bootstrap, "enable.idempotence": True,
                "linger.ms": 5, "message.max.bytes": 8 * 1024 * 1024}
        base.update(conf)
        return Producer(base)

    def produce(self, topic: str, records: Iterable[dict], producer=None, **conf) -> list[dict]:
        """Produces records given as dicts with optional keys partition, key, value, headers
        (list of (str, bytes|None)), timestamp (ms). Returns, in order, one dict per record with
        the delivered partition, offset, timestamp and timestamp_type (as the producer saw it)."""
        p = producer or self.producer(**conf)
        results: list[Optional[dict]] = []
        errors: list[str] = []

        def cb(i):
            def on_delivery(err, msg):
                if err is not None:
                    errors.append(f"record {i}: {err}")
                    return
                tt, ts = msg.timestamp()
                results[i] = {"partition": msg.partition(), "offset": msg.offset(),
                              "timestamp": ts, "timestamp_type": _ts_type_name(tt)}
            return on_delivery

        for i, r in enumerate(records):
            results.append(None)
            kwargs: dict[str, Any] = {"on_delivery": cb(i)}
            for k in ("partition", "key", "value", "headers", "timestamp"):
                if k in r:
                    kwargs[k] = r[k]
            while True:
                try:
                    p.produce(topic, **kwargs)
                    break
                except BufferError:
                    p.poll(0.1)
            p.poll(0)
        left = p.flush(60)
        if left or errors:
            raise TestbedError(f"produce to {topic} failed: {left} undelivered; {errors[:5]}")
        return results  # type: ignore[return-value]

    def produce_transaction(self, topic: str, records: Iterable[dict], abort: bool = False,
                            transactional_id: Optional[str] = None) -> list[dict]:
        """Produces `records` (as in `produce`) in ONE transaction, committed or aborted.
        Returns the delivery results (offsets the records took, aborted or not)."""
        p = self.producer(**{"transactional.id": transactional_id or f"tb-tx-{uuid.uuid4().hex}"})
        p.init_transactions(30)
        p.begin_transaction()
        res = self.produce(topic, records, producer=p)
        if abort:
            p.abort_transaction(30)
        else:
            p.commit_transaction(30)
        return res

    def group_members(self, group: str) -> list[list[tuple[str, int]]]:
        """Per member of a consumer group, the partitions assigned to it."""
        admin = self.admin()
        desc = list(admin.describe_consumer_groups([group]).values())[0].result(30)
        return [sorted((tp.topic, tp.partition) for tp in m.assignment.topic_partitions)
                for m in desc.members]

    def consume_partition(self, topic: str, partition: int,
                          isolation_level: str = "read_committed", start: int = 0,
                          timeout: float = 60) -> list[Record]:
        """Every record of one partition from `start` to the current end (for read_committed,
        the last stable offset), in order."""
        from confluent_kafka import Consumer, KafkaError, TopicPartition

        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"tb-{uuid.uuid4().hex}",
                      "enable.auto.commit": False, "enable.partition.eof": True,
                      "isolation.level": isolation_level,
                      "fetch.message.max.bytes": 8 * 1024 * 1024,
                      "receive.message.max.bytes": 64 * 1024 * 1024})
        out: list[Record] = []
        try:
            c.assign([TopicPartition(topic, partition, start)])
            deadline = time.monotonic() + timeout
            while True:
                if time.monotonic() > deadline:
                    raise TestbedError(f"consuming {topic}/{partition} did not reach the end in "
                                       f"{timeout}s ({len(out)} records read)")
                msg = c.poll(0.5)
                if msg is None:
                    continue
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        break
                    raise TestbedError(f"consuming {topic}/{partition}: {msg.error()}")
                tt, ts = msg.timestamp()
                out.append(Record(msg.topic(), msg.partition(), msg.offset(), ts, _ts_type_name(tt),
                                  msg.key(), msg.value(), list(msg.headers() or [])))
        finally:
            c.close()
        return out

    def consume_topic(self, topic: str, isolation_level: str = "read_committed") -> dict[int, list[Record]]:
        """{partition: records} for every partition of a topic."""
        n = self.topics()[topic]
        return {p: self.consume_partition(topic, p, isolation_level) for p in range(n)}

    def watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"tb-{uuid.uuid4().hex}"})
        try:
            return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        finally:
            c.close()

    def commit_group_offsets(self, group: str, offsets: dict[tuple[str, int], int]) -> None:
        """Commits offsets for a group that has no active members (through a consumer)."""
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group,
                      "enable.auto.commit": False})
        try:
            c.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                     asynchronous=False)
        finally:
            c.close()

    def group_offsets(self, group: str) -> dict[tuple[str, int], int]:
        """{(topic, partition): committed offset} of a consumer group ({} if none)."""
        from confluent_kafka import ConsumerGroupTopicPartitions

        admin = self.admin()
        futs = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])
        res = list(futs.values())[0].result(30)
        return {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions
                if tp.offset >= 0}

    def wait_for_group_offsets(self, group: str, at_least: dict[tuple[str, int], int],
                               timeout: float = 60) -> dict[tuple[str, int], int]:
        """Waits until the group's committed offset of each listed partition is >= the value."""

        def check():
            got = self.group_offsets(group)
            if all(got.get(tp, -1) >= o for tp, o in at_least.items()):
                return got
            return None

        return wait_until(check, timeout, f"group {group} to commit {at_least}", interval=0.5)


# --------------------------------------------------------------------------------------------
# Cluster = broker + worker(s)


_RUN_ID: Optional[str] = None


def _run_id() -> str:
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
                 security: Any = None, kafka_version: Optional[str] = None):
        self.libs = kafka_libs(kafka_version)
        base = Path(work_dir or os.environ.get("KBACKUP_TESTBED_DIR") or DEFAULT_WORK / _run_id())
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
                                        die_with_parent=die_with_parent)
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
                          die_with_parent=first.die_with_parent)
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
        """Runs one of Kafka's own CLI tools (a main class, e.g. CONSOLE_CONSUMER)."""
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


_TOOLS_LOG4J: Optional[Path] = None


def run_tool(main_class: str, *args: str, timeout: float = 120, check: bool = True,
             input: Optional[str] = None, libs: Optional[Path] = None,
             heap: str = "256m") -> subprocess.CompletedProcess:
    """Runs a Kafka tool main class with the 4.3.1 jars; stdout/stderr captured as text.
    Tool logging goes to stderr at WARN. Raises TestbedError on non-zero exit if `check`."""
    global _TOOLS_LOG4J
    libs = libs or kafka_libs()
    if _TOOLS_LOG4J is None or not _TOOLS_LOG4J.exists():
        import tempfile

        fd, name = tempfile.mkstemp(prefix="kbackup-tools-log4j2-", suffix=".xml")
        os.close(fd)
        _TOOLS_LOG4J = Path(name)
        _TOOLS_LOG4J.write_text("""<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders><Console name="err" target="SYSTEM_ERR"><PatternLayout pattern="%p %c: %m%n"/></Console></Appenders>
  <Loggers><Root level="WARN"><AppenderRef ref="err"/></Root></Loggers>
</Configuration>
""")
        atexit.register(lambda p=_TOOLS_LOG4J: p.unlink(missing_ok=True))
    argv = java_argv(libs, main_class, list(args), heap=heap, log4j=_TOOLS_LOG4J)
    proc = subprocess.run(argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL,
                          start_new_session=True)
    if check and proc.returncode != 0:
        raise TestbedError(f"{main_class} {' '.join(args)} exited {proc.returncode}:\n"
                           f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-4000:]}")
    return proc


# --------------------------------------------------------------------------------------------
# Command line: up (foreground or --detach), down, status


def _find_states(work: Path, detached_only: bool = False) -> list[Path]:
    # `down` only touches beds made by `up --detach`: a running test session's beds are its own
    return sorted(work.glob(f"{'detached-' if detached_only else ''}*/*/{STATE_FILE_NAME}"))


def _stop_pid(pid: int, root: str, timeout: float = 30) -> None:
    """Stops a bed JVM found in a state file, only if its command line still names its dir
    (never a process the bed did not start)."""
    if not pid_alive(pid) or root not in _cmdline(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pid_alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="testbed",
        description="Real Kafka 4.3.1 broker + Connect worker for kbackup tests and demos.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a broker and a Connect worker")
    up.add_argument("--name", default="bed")
    up.add_argument("--plugin-path", default=str(DEFAULT_PLUGIN_PATH))
    up.add_argument("--work-dir", default=str(DEFAULT_WORK), help="parent of the cluster dir")
    up.add_argument("--no-worker", action="store_true", help="broker only")
    up.add_argument("--exactly-once", action="store_true",
                    help="exactly.once.source.support=enabled on the worker")
    up.add_argument("--detach", action="store_true",
                    help="leave it running and return (stop with `down`); default: run in the "
                         "foreground until Ctrl-C")
    up.add_argument("--env-file", help="also write BOOTSTRAP=... and CONNECT_URL=... here")
    down = sub.add_parser("down", help="stop beds started with --detach (and remove their dirs "
                                       "unless KBACKUP_KEEP_TESTBED=1)")
    down.add_argument("--work-dir", default=str(DEFAULT_WORK))
    st = sub.add_parser("status", help="list beds found under the work dir")
    st.add_argument("--work-dir", default=str(DEFAULT_WORK))
    args = ap.parse_args(argv)

    work = Path(args.work_dir)
    if args.cmd == "up":
        c = Cluster(args.name, plugin_path=args.plugin_path,
                    work_dir=work / (_run_id() if not args.detach else f"detached-{_run_id()}"),
                    exactly_once=args.exactly_once, with_worker=not args.no_worker,
                    die_with_parent=not args.detach)
        c.start()
        info = {"bootstrap": c.bootstrap, "connect_url": c.worker.url if c.worker else None,
                "root": str(c.root), "pids": c.pids()}
        print(json.dumps(info), flush=True)
        if args.env_file:
            Path(args.env_file).write_text(
                f"BOOTSTRAP={c.bootstrap}\nCONNECT_URL={info['connect_url'] or ''}\n"
                f"TESTBED_ROOT={c.root}\n")
        if args.detach:
            # the JVMs must outlive us: forget them so atexit does not stop them
            for p in (c.broker.process, c.worker.process if c.worker else None):
                if p is not None:
                    p._unregister()
            return 0
        try:
            while all(p.process.running() for p in (c.broker, c.worker) if p is not None):
                time.sleep(1)
            print("a bed process exited on its own; stopping", file=sys.stderr)
            print(c.log_tails(), file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
        finally:
            c.cleanup()
    if args.cmd == "down":
        n = 0
        for sf in _find_states(work, detached_only=True):
            state = json.loads(sf.read_text())
            for pid in reversed(state.get("pids", [])):
                _stop_pid(pid, state["root"])
            n += 1
            if os.environ.get("KBACKUP_KEEP_TESTBED") != "1":
                shutil.rmtree(state["root"], ignore_errors=True)
                try:
                    Path(state["root"]).parent.rmdir()
                except OSError:
                    pass
        print(f"stopped {n} bed(s)")
        return 0
    if args.cmd == "status":
        for sf in _find_states(work):
            state = json.loads(sf.read_text())
            alive = [p for p in state.get("pids", []) if pid_alive(p) and state["root"] in _cmdline(p)]
            print(json.dumps({**state, "alive_pids": alive}))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
