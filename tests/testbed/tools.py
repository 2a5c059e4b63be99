"""Kafka's own command-line tools, run by main class from the bed's jars.

Why: tests check kbackup's results with clients we did not write, and the bench measures
Kafka's perf tools next to kbackup; both run them with the same jars, heap and logging.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

from testbed.jars import kafka_libs
from testbed.jvm import java_argv
from testbed.procs import TestbedError, run

# Main classes of Kafka 4.3.1's own tools (checked with `unzip -l` on the 4.3.1 jars).
STORAGE_TOOL = "kafka.tools.StorageTool"
CONSOLE_CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"
CONSOLE_PRODUCER = "org.apache.kafka.tools.ConsoleProducer"
CONSUMER_GROUPS = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
DELETE_RECORDS = "org.apache.kafka.tools.DeleteRecordsCommand"
PRODUCER_PERF = "org.apache.kafka.tools.ProducerPerformance"
CONSUMER_PERF = "org.apache.kafka.tools.ConsumerPerformance"
TOPICS = "org.apache.kafka.tools.TopicCommand"
GET_OFFSET_SHELL = "org.apache.kafka.tools.GetOffsetShell"
TRANSACTIONS = "org.apache.kafka.tools.TransactionsCommand"

TOOL_HEAP = "256m"
_TOOLS_LOG4J: Optional[Path] = None


def _tools_log4j() -> Path:
    """A log4j2 config (made once per run) sending tool logging to stderr at WARN."""
    global _TOOLS_LOG4J
    if _TOOLS_LOG4J is None or not _TOOLS_LOG4J.exists():
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
    return _TOOLS_LOG4J


def tool_argv(main_class: str, *args: str, libs: Optional[Path] = None,
              heap: str = TOOL_HEAP) -> list[str]:
    """The java command line of a Kafka tool (the bed's jars, a capped heap, WARN logging to
    stderr)."""
    return java_argv(libs or kafka_libs(), main_class, list(args), heap=heap,
                     log4j=_tools_log4j())


def run_tool(main_class: str, *args: str, timeout: float = 120, check: bool = True,
             input: Optional[str] = None, libs: Optional[Path] = None,
             heap: str = TOOL_HEAP) -> subprocess.CompletedProcess:
    """Runs a Kafka tool main class with the 4.3.1 jars; stdout/stderr captured as text.
    Tool logging goes to stderr at WARN. Raises TestbedError on non-zero exit if `check`."""
    argv = tool_argv(main_class, *args, libs=libs, heap=heap)
    proc = run(argv, timeout=timeout, input=input, name=main_class.rsplit(".", 1)[-1])
    if check and proc.returncode != 0:
        raise TestbedError(f"{main_class} {' '.join(args)} exited {proc.returncode}:\n"
                           f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-4000:]}")
    return proc
