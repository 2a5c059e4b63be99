"""Starting Kafka's JVMs: the java command line, their config files, and a service base
that moves to new ports when another program took one before the bind.

Why apart from procs.py: procs.py starts and stops any process; this module knows what a
Kafka JVM needs (class path, heap cap, log4j2 file, JMX flags, port retries).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from testbed.procs import Process, TestbedError


def java_argv(libs: Path, main_class: str, args: list[str], heap: str = "512m",
              log4j: Optional[Path] = None, extra_jvm: Iterable[str] = ()) -> list[str]:
    """The java command line running `main_class` from the jars in `libs`, heap capped."""
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


def write_props(path: Path, props: dict[str, Any]) -> None:
    """A Java .properties file; keys whose value is None are left out."""
    lines = [f"{k}={v}" for k, v in props.items() if v is not None]
    path.write_text("\n".join(lines) + "\n")


def log4j2_config(path: Path, log_file: Path, root_level: str = "INFO",
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


def bind_failed(log_file: Path) -> bool:
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


class JvmService:
    """A broker or worker JVM: `_start_once` starts it on its current ports and waits until
    it is ready, `_new_ports` picks others. It lives in `dir`, logs to `log_file`."""

    dir: Path
    libs: Path
    log_file: Path
    die_with_parent: bool = True
    process: Optional[Process] = None
    # variables added to the JVM's environment (e.g. an S3 server's AWS_* settings)
    env: Optional[dict[str, str]] = None
    started_once = False

    def _write_config(self, props_name: str, props: dict[str, Any], quiet: Iterable[str]) -> None:
        """Writes its properties file and a log4j2 file logging to `log_file` (`quiet`
        loggers at WARN)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.props_file = self.dir / props_name
        write_props(self.props_file, props)
        self.log4j = self.dir / "log4j2.xml"
        log4j2_config(self.log4j, self.log_file, quiet=quiet)

    def _launch(self, name: str, main_class: str, stdout_name: str, ready: Callable[[], Any],
                timeout: float, what: str, extra_jvm: Iterable[str] = ()) -> None:
        """Runs `main_class` on its properties file and waits until `ready()`."""
        argv = java_argv(self.libs, main_class, [str(self.props_file)], heap="512m",
                         log4j=self.log4j, extra_jvm=[f"-Dkafka.logs.dir={self.dir}", *extra_jvm])
        env = {**os.environ, **self.env} if self.env else None
        self.process = Process(name, argv, stdout_file=self.dir / stdout_name,
                               log_file=self.log_file, env=env,
                               die_with_parent=self.die_with_parent)
        self.process.start_and_wait(ready, timeout, what)

    def _start_once(self, timeout: float) -> None:
        raise NotImplementedError

    def _new_ports(self) -> None:
        raise NotImplementedError

    def start(self, timeout: float) -> None:
        """Starts the service. If another program took a free port between our check and the
        bind, a service that never ran yet moves to new ports (up to 3 attempts)."""
        for attempt in range(3):
            try:
                self._start_once(timeout)
                self.started_once = True
                return
            except TestbedError:
                if self.started_once or attempt == 2 or not bind_failed(self.log_file):
                    raise
                self.stop()
                self._new_ports()

    def stop(self, timeout: float = 30) -> None:
        if self.process:
            self.process.stop(timeout)

    def kill(self) -> None:
        if self.process:
            self.process.kill()
