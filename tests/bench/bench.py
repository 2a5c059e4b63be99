#!/usr/bin/env python3
"""`make bench`: kbackup's throughput and memory next to Kafka's own perf tools, in ONE run.

Why one run: on a shared 2-core machine absolute MB/s move with whatever else is running, so
every kbackup figure is reported as a ratio to the Kafka tool measured minutes earlier on the
same broker, the same data and the same load (backups against ConsumerPerformance, restores
against ProducerPerformance). What each phase measures is in docs/benchmarks.md.

Everything started here (broker, Connect worker, kbackup processes, temp dirs) is stopped or
removed in `finally`, also on Ctrl-C or SIGTERM, and every wait has a timeout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, Union

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from testbed.cluster import Cluster  # noqa: E402
from testbed.connect import BYTE_ARRAY_CONVERTER, ConnectError  # noqa: E402
from testbed.procs import Process, TestbedError, run, wait_until  # noqa: E402
from testbed.tools import CONSUMER_PERF, PRODUCER_PERF, tool_argv  # noqa: E402

import inprocess  # noqa: E402  (tests/bench/inprocess.py, beside this file)

KBACKUP = REPO / "dist" / "kbackup"
MIB = 1024 * 1024
CONVERTERS = {f"{k}.converter": BYTE_ARRAY_CONVERTER for k in ("key", "value", "header")}
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A bench phase failed or timed out; the message names the phase."""


# --------------------------------------------------------------------------------------------
# Processes: CPU and memory of the JVMs the bed runs, and of the commands we run ourselves


def proc_cpu_seconds(pid: Optional[int]) -> float:
    """user+system CPU seconds a process (all its threads) has used so far; 0 if gone."""
    if not pid:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def proc_status_kib(pid: Optional[int], key: str) -> Optional[int]:
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM), or None if the process is gone."""
    return proc_status_all(pid).get(key)


def proc_status_all(pid: Optional[int]) -> dict[str, int]:
    """Every `kB` field of /proc/PID/status ({} if the process is gone)."""
    out: dict[str, int] = {}
    if not pid:
        return out
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3 and parts[2] == "kB":
                    out[parts[0].rstrip(":")] = int(parts[1])
    except (OSError, ValueError):
        return {}
    return out


def proc_fd_count(pid: Optional[int]) -> Optional[int]:
    """Open file descriptors of a process (entries of /proc/PID/fd), None if it is gone."""
    if not pid:
        return None
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


# Resident memory split: anonymous (heap, buffers: what the process really needs) and
# file-backed (mapped backup segments, shared libraries: reclaimable page cache).
RSS_FIELDS = ("VmRSS", "RssAnon", "RssFile")


class RssSampler:
    """Samples VmRSS, RssAnon and RssFile of named processes; keeps the peak per (phase, name).

    Why sampling and not only VmHWM: the JVMs live through every phase, so their lifetime
    peak cannot say which phase needed the memory; and VmHWM does not say whether the peak
    was heap or mapped files."""

    def __init__(self, pids: dict[str, Any], interval: float = 0.5):
        # name -> pid, or a callable returning the pid (a process that starts later)
        self.pids = {k: v for k, v in pids.items() if v}
        self.interval = interval
        self.phase = "start"
        self.peaks: dict[str, dict[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> "RssSampler":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        phase = self.phase
        for name, pid in self.pids.items():
            pid = pid() if callable(pid) else pid
            st = proc_status_all(pid)
            d = self.peaks.setdefault(phase, {})
            for field in RSS_FIELDS:
                if field in st:
                    key = name if field == "VmRSS" else f"{name}.{field}"
                    d[key] = max(d.get(key, 0), st[field])
            fds = proc_fd_count(pid)
            if fds is not None:
                d[f"{name}.fds"] = max(d.get(f"{name}.fds", 0), fds)

    def set_phase(self, phase: str) -> None:
        self.sample()  # the last sample of the previous phase
        self.phase = phase

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def worth_inspecting(n: int, expect_bytes: int, stable: dict[str, float],
                     first: dict[str, float]) -> bool:
    """A sink phase's cheap poll of its files' size (n bytes): True once a full `inspect`
    (which reads every record) is worth running, so the check does not eat the CPU being
    measured: the files hold nearly as many bytes as the CLI's backup of the same records, or
    stopped growing for a second. Nearly: compressed blocks end where each writer flushed, so
    two backups of the same records differ by a little (waiting for equal bytes, then for 5 s
    without growth, added up to 5 s to the sink's time at 100 B). Notes the first bytes' time
    in `first["t"]`; `stable` holds the last size and since when."""
    now = time.monotonic()
    if n > 0 and "t" not in first:
        first["t"] = now
    if n != stable["bytes"]:
        stable.update(bytes=n, since=now)
    return n > 0 and (n >= expect_bytes * 0.98 or now - stable["since"] >= 1)


def run_measured(argv: list[str], timeout: float, what: str,
                 stdout_to_null: bool = False,
                 env: Optional[dict[str, str]] = None) -> dict[str, Any]:
    """Runs a command in its own process group and returns wall seconds, stdout, and the
    command's peak RSS and CPU seconds from wait4(2): the same figures `/usr/bin/time -v`
    prints, without a wrapper process in between that a kill would miss. The command is a
    testbed.procs.Process (own process group, dies with the bench); any exception (timeout,
    Ctrl-C, SIGTERM) kills its whole group before it propagates."""
    with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
        t0 = time.monotonic()
        cmd = Process(what, argv, env=env)
        cmd.start(stdout=subprocess.DEVNULL if stdout_to_null else out_f, stderr=err_f)
        p = cmd.proc
        assert p is not None
        sampler = RssSampler({"cmd": p.pid}, interval=0.1).start()
        try:
            deadline = t0 + timeout
            while True:
                pid, status, ru = os.wait4(p.pid, os.WNOHANG)
                if pid == p.pid:
                    wall = time.monotonic() - t0
                    p.returncode = os.waitstatus_to_exitcode(status)
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"{what}: no result after {timeout:.0f}s (killed): "
                                     f"{' '.join(argv)}\nfix: raise --phase-timeout or lower "
                                     "--records")
                time.sleep(0.01)
        except BaseException:
            cmd.kill()
            raise
        finally:
            sampler.stop()
            cmd.stop()  # reaped above or killed: SIGKILL for anything left in its group
        out_f.seek(0)
        err_f.seek(0)
        out = out_f.read().decode("utf-8", "replace")
        err = err_f.read().decode("utf-8", "replace")
    peaks = sampler.peaks.get("start", {})
    res: dict[str, Any] = {"wall_s": wall, "stdout": out, "stderr": err, "rc": p.returncode,
                           "cpu_s": ru.ru_utime + ru.ru_stime,
                           "max_rss_kib": ru.ru_maxrss,  # kilobytes on Linux
                           "sampled_peak_anon_kib": peaks.get("cmd.RssAnon"),
                           "sampled_peak_file_kib": peaks.get("cmd.RssFile"),
                           "sampled_peak_fds": peaks.get("cmd.fds")}
    if p.returncode != 0:
        raise BenchError(f"{what} exited {p.returncode}: {' '.join(argv)}\n"
                         f"stderr: {err[-3000:]}")
    return res


def kbackup_json(*args: str, timeout: float = 120,
                 env: Optional[dict[str, str]] = None) -> dict:
    proc = run([str(KBACKUP), *args], timeout=timeout, env=env)
    if proc.returncode != 0:
        raise BenchError(f"kbackup {' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


# --------------------------------------------------------------------------------------------
# Kafka side: watermarks, perf tool output


class Watermarks:
    """One long-lived consumer for cheap end-offset polls (a consumer per call costs more than
    the poll, and the poll runs while kbackup is being measured)."""

    def __init__(self, bootstrap: str):
        self.bootstrap = bootstrap
        self.c = self._consumer()

    def _consumer(self):
        from confluent_kafka import Consumer

        return Consumer({"bootstrap.servers": self.bootstrap, "group.id": "kbackup-bench-wm",
                         "enable.auto.commit": False, "log_level": 0})

    def total(self, topic: str, partitions: int) -> int:
        """Sum of high watermarks (records, as the topics here start at 0 with no gaps).
        Raises while the topic does not exist yet."""
        from confluent_kafka import TopicPartition

        n = 0
        try:
            for p in range(partitions):
                lo, hi = self.c.get_watermark_offsets(TopicPartition(topic, p), timeout=5,
                                                      cached=False)
                n += hi - lo
        except Exception:
            # librdkafka keeps "unknown topic" in its metadata cache for minutes: a topic
            # created after the first query stays invisible to this client, so start afresh
            self.c.close()
            self.c = self._consumer()
            raise
        return n

    def committed_records(self, topic: str, partitions: int, timeout: float = 300) -> int:
        """Records a read_committed consumer reads from `topic` (not the offsets: a
        transactional restore's commit markers take offsets too). Runs after the timed phase."""
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "kbackup-bench-count",
                      "enable.auto.commit": False, "isolation.level": "read_committed",
                      "enable.partition.eof": True, "log_level": 0})
        try:
            c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
            n, at_end = 0, set()
            deadline = time.monotonic() + timeout
            while len(at_end) < partitions:
                if time.monotonic() > deadline:
                    raise BenchError(f"counting {topic}: no end of partitions after {timeout}s")
                for m in c.consume(10000, timeout=1.0):
                    if m.error() is None:
                        n += 1
                    elif m.error().code() == -191:  # _PARTITION_EOF
                        at_end.add(m.partition())
                    else:
                        raise BenchError(f"counting {topic}: {m.error()}")
            return n
        finally:
            c.close()

    def close(self) -> None:
        self.c.close()


def parse_producer_perf(out: str) -> dict[str, float]:
    """The final summary line of ProducerPerformance:
    `N records sent, R records/sec (M MB/sec), A ms avg latency, X ms max latency, ...`."""
    m = None
    for m in re.finditer(r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), "
                         r"([\d.]+) ms avg latency, ([\d.]+) ms max latency", out):
        pass
    if m is None:
        raise BenchError(f"ProducerPerformance printed no summary line:\n{out[-2000:]}")
    return {"records": int(m.group(1)), "records_per_s": float(m.group(2)),
            "mb_per_s": float(m.group(3)), "avg_latency_ms": float(m.group(4)),
            "max_latency_ms": float(m.group(5))}


def parse_consumer_perf(out: str) -> dict[str, float]:
    """ConsumerPerformance's CSV header + one data line (field names from its header)."""
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if ln.startswith("start.time") and i + 1 < len(lines):
            names = [x.strip() for x in ln.split(",")]
            vals = [x.strip() for x in lines[i + 1].split(",")]
            row = dict(zip(names, vals))
            return {k: float(v) for k, v in row.items() if k not in ("start.time", "end.time")}
    raise BenchError(f"ConsumerPerformance printed no result line:\n{out[-2000:]}")


# --------------------------------------------------------------------------------------------
# Machine info


def machine_info() -> dict[str, Any]:
    def first(cmd: list[str]) -> str:
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
            return (p.stdout or p.stderr).strip().splitlines()[0]
        except Exception as e:  # noqa: BLE001 - informational only
            return f"unknown ({e})"

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])  # MemTotal, first line
    except (OSError, ValueError, IndexError):
        pass
    return {"hostname": platform.node(), "cpus": os.cpu_count(), "cpu_model": cpu,
            "mem_total_mib": mem_kib // 1024, "kernel": platform.release(),
            "java": first(["java", "-version"]), "kbackup": first([str(KBACKUP), "--version"]),
            "git_head": first(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
            "python": platform.python_version()}


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


# --------------------------------------------------------------------------------------------
# Time to first record and end of steady state of a timed command


class ProgressWatch:
    """Polls `progress()` (bytes in files, records in a topic) from a thread while a timed
    command runs, so its wall clock splits into time to first record, steady state and the
    tail to its durable end (the command's exit, after its fsync or last commit)."""

    def __init__(self, progress: Callable[[], int], interval: float = 0.1):
        self.progress = progress
        self.interval = interval
        self.t0 = time.monotonic()
        self.first: Optional[float] = None
        self.last_change: Optional[float] = None
        self.value = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress-watch", daemon=True)

    def start(self) -> "ProgressWatch":
        self.t0 = time.monotonic()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                v = self.progress()
            except Exception:  # noqa: BLE001 - not there yet (no topic, no file)
                v = 0
            now = time.monotonic()
            if v > 0 and self.first is None:
                self.first = now
            if v != self.value:
                self.value, self.last_change = v, now
            self._stop.wait(self.interval)

    def stop(self, records: int) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(timeout=10)
        first = None if self.first is None else self.first - self.t0
        last = None if self.last_change is None else self.last_change - self.t0
        steady = (records / (last - first)) if first is not None and last and last > first else None
        return {"first_record_s": first, "last_progress_s": last, "steady_records_per_s": steady}


class TaskThreadSampler:
    """Samples the state (R running, S sleeping, D in uninterruptible I/O such as fsync) and
    CPU of the worker's threads whose name starts with `prefix` (Connect names a task's thread
    `task-thread-<connector>-<n>`), every `interval` s: where a connector's task spends its
    time, from /proc, without touching the worker."""

    def __init__(self, pid: Optional[int], prefix: str, interval: float = 0.02):
        self.pid, self.prefix, self.interval = pid, prefix[:15], interval
        self.states: dict[str, int] = {}
        self.cpu0: dict[str, float] = {}
        self.cpu1: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="task-thread-sampler", daemon=True)

    def _threads(self) -> dict[str, tuple[str, float]]:
        out: dict[str, tuple[str, float]] = {}
        if not self.pid:
            return out
        try:
            tids = os.listdir(f"/proc/{self.pid}/task")
        except OSError:
            return out
        for tid in tids:
            try:
                with open(f"/proc/{self.pid}/task/{tid}/stat") as f:
                    raw = f.read()
                name = raw[raw.index("(") + 1:raw.rindex(")")]
                if not name.startswith(self.prefix):
                    continue
                fields = raw.rsplit(")", 1)[1].split()
                out[tid] = (fields[0], (int(fields[11]) + int(fields[12])) / CLK_TCK)
            except (OSError, ValueError, IndexError):
                continue
        return out

    def start(self) -> "TaskThreadSampler":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            for tid, (state, cpu) in self._threads().items():
                self.states[state] = self.states.get(state, 0) + 1
                self.cpu0.setdefault(tid, cpu)
                self.cpu1[tid] = cpu
            self._stop.wait(self.interval)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(timeout=5)
        n = sum(self.states.values())
        return {"task_thread_states": {k: round(v / n, 3) for k, v in sorted(self.states.items())}
                if n else {},
                "task_thread_cpu_s": round(sum(self.cpu1[t] - self.cpu0[t] for t in self.cpu1), 2)}


class HeapSampler:
    """The worker's Java heap while a phase runs: `jstat -gc PID <ms>` (the JDK's tool, which
    reads the JVM's perf-data file and never stops the worker) prints a line per interval;
    the bench keeps the peak of used heap (young + old) and of the old generation, whose use
    is what survives collections. One small JVM for the whole phase, started and answering
    before the phase begins, so its start-up is not in the phase."""

    COLUMNS = ("S0C", "S1C", "EC", "OC", "S0U", "S1U", "EU", "OU", "YGC", "FGC")

    def __init__(self, pid: Optional[int], interval_ms: int = 250):
        self.pid, self.interval_ms = pid, interval_ms
        self.out = tempfile.TemporaryFile()
        self.proc: Optional[Process] = None
        self.error: Optional[str] = None

    def start(self, timeout: float = 30) -> "HeapSampler":
        jstat = shutil.which("jstat")
        if not self.pid or not jstat:
            self.error = "no worker pid or no jstat on PATH"
            return self
        self.proc = Process("jstat", [jstat, "-gc", str(self.pid), str(self.interval_ms)])
        self.proc.start(stdout=self.out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while len(self._rows()) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        return self

    def _rows(self) -> list[dict[str, float]]:
        self.out.seek(0)
        lines = self.out.read().decode("utf-8", "replace").split("\n")[:-1]  # last may be partial
        rows, head = [], None
        for ln in lines:
            f = ln.split()
            if f and f[0] == "S0C":
                head = f
            elif head and len(f) == len(head):
                row = dict(zip(head, f))
                try:  # only the columns used (CGC/CGCT are "-" with the serial collector)
                    rows.append({k: float(row[k]) for k in self.COLUMNS})
                except (KeyError, ValueError):
                    continue
        return rows

    def stop(self) -> dict[str, Any]:
        if self.proc:
            self.proc.stop()
        rows = self._rows()
        self.out.close()
        if not rows:
            return {"heap_error": self.error or "jstat printed nothing"}

        def used(r: dict[str, float]) -> float:
            return r["S0U"] + r["S1U"] + r["EU"] + r["OU"]

        mib = 1024.0  # jstat prints KB
        return {"heap_used_peak_mib": round(max(used(r) for r in rows) / mib, 1),
                "heap_old_used_start_mib": round(rows[0]["OU"] / mib, 1),
                "heap_old_used_peak_mib": round(max(r["OU"] for r in rows) / mib, 1),
                "heap_old_used_end_mib": round(rows[-1]["OU"] / mib, 1),
                "heap_committed_peak_mib": round(max(r["S0C"] + r["S1C"] + r["EC"] + r["OC"]
                                                     for r in rows) / mib, 1),
                "young_gcs": int(rows[-1]["YGC"] - rows[0]["YGC"]),
                "full_gcs": int(rows[-1]["FGC"] - rows[0]["FGC"]),
                "heap_samples": len(rows)}



# --------------------------------------------------------------------------------------------
# The Connect ceiling: a no-op sink and source (tests/bench/noop), compiled by the bench


NOOP_SRC = Path(__file__).resolve().parent / "noop"


def build_noop_plugin(dest: Path, libs: Path) -> Path:
    """Compiles tests/bench/noop into dest/kbackup-bench-noop/kbackup-bench-noop.jar (a
    plugin.path entry of its own; never part of dist/)."""
    classes = dest / "classes"
    plugin = dest / "kbackup-bench-noop"
    classes.mkdir(parents=True, exist_ok=True)
    plugin.mkdir(parents=True, exist_ok=True)
    cp = os.pathsep.join(str(libs / j) for j in ("connect-api-4.3.1.jar", "kafka-clients-4.3.1.jar"))
    sources = [str(p) for p in NOOP_SRC.rglob("*.java")]
    p = subprocess.run(["javac", "--release", "11", "-d", str(classes), "-cp", cp, *sources],
                       capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise BenchError(f"could not compile the no-op connectors:\n{p.stderr[-3000:]}")
    services = classes / "META-INF" / "services"
    services.mkdir(parents=True, exist_ok=True)
    pkg = "io.kbackup.bench.noop"
    (services / "org.apache.kafka.connect.sink.SinkConnector").write_text(f"{pkg}.NoopSinkConnector\n")
    (services / "org.apache.kafka.connect.source.SourceConnector").write_text(
        f"{pkg}.NoopSourceConnector\n")
    jar = plugin / "kbackup-bench-noop.jar"
    p = subprocess.run(["jar", "cf", str(jar), "-C", str(classes), "."], capture_output=True,
                       text=True, timeout=120)
    if p.returncode != 0:
        raise BenchError(f"could not build {jar}: {p.stderr[-2000:]}")
    return plugin


# --------------------------------------------------------------------------------------------
# The bench


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.base = args
        self.a = args
        # The whole run's report; self.results is the current record size's part of it.
        self.report: dict[str, Any] = {"sizes": {}}
        self.results: dict[str, Any] = {"phases": {}}
        self.cluster: Optional[Cluster] = None
        self.s3: Any = None  # testbed.s3.S3Server while the S3 phases can run
        self.sampler: Optional[RssSampler] = None
        self.wm: Optional[Watermarks] = None
        self.tmp = Path(tempfile.mkdtemp(prefix="kbackup-bench-", dir=args.work_dir))
        self.connectors: list[str] = []
        self.noop_plugin: Optional[Path] = None
        self.phase_prefix: Optional[str] = None  # scale mode: the case's name

    def for_size(self, size: int, records: int, name: Optional[str] = None) -> None:
        """Points every phase at one record size: its own topic, backups and figures (`name`
        instead of the size in their names: the worker warm-up)."""
        self.a = argparse.Namespace(**{**vars(self.base), "record_size": size, "records": records})
        name = name or str(size)
        self.topic = f"bench-{name}"
        self.payload_mb = records * size / MIB
        self.results = {"phases": {}}
        self.cli_dir = self.tmp / f"backup-cli-{name}"
        self.sink_dir = self.tmp / f"backup-sink-{name}"
        self.count_dir = self.tmp / f"noop-counts-{name}"

    # -- helpers ------------------------------------------------------------------------------

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def jvm_cpu(self) -> dict[str, float]:
        c = self.cluster
        assert c is not None
        return {"broker": proc_cpu_seconds(c.broker.process.pid),
                "worker": proc_cpu_seconds(c.worker.process.pid if c.worker else None)}

    def phase(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Runs one phase; adds the broker's and worker's CPU seconds and peak RSS during it."""
        assert self.sampler is not None
        self.log(f"phase {name} ...")
        # the sampler's peaks per size (or scale case) and phase
        key = f"{self.phase_prefix or self.a.record_size}:{name}"
        self.sampler.set_phase(key)
        cpu0 = self.jvm_cpu()
        res = fn()
        cpu1 = self.jvm_cpu()
        self.sampler.set_phase(f"after-{key}")
        res["broker_cpu_s"] = round(cpu1["broker"] - cpu0["broker"], 2)
        res["worker_cpu_s"] = round(cpu1["worker"] - cpu0["worker"], 2)
        peaks = self.sampler.peaks.get(key, {})
        for who in ("broker", "worker"):
            res[f"{who}_peak_rss_mib"] = round(peaks.get(who, 0) / 1024, 1) or None
            res[f"{who}_peak_anon_mib"] = round(peaks.get(f"{who}.RssAnon", 0) / 1024, 1) or None
            res[f"{who}_peak_file_mib"] = round(peaks.get(f"{who}.RssFile", 0) / 1024, 1) or None
            res[f"{who}_peak_fds"] = peaks.get(f"{who}.fds")
        res.pop("stdout", None)
        res.pop("stderr", None)
        self.results["phases"][name] = res
        self.log(f"phase {name}: {self._short(res)}")
        return res

    @staticmethod
    def _short(res: dict[str, Any]) -> str:
        keys = ("wall_s", "records_per_s", "mb_per_s", "file_mb_per_s", "ratio", "max_rss_kib")
        return ", ".join(f"{k}={res[k]:.2f}" if isinstance(res.get(k), float) else f"{k}={res[k]}"
                         for k in keys if res.get(k) is not None)

    def rates(self, seconds: float, records: Optional[int] = None) -> dict[str, float]:
        n = self.a.records if records is None else records
        return {"records_per_s": n / seconds if seconds > 0 else 0.0,
                "mb_per_s": n * self.a.record_size / MIB / seconds if seconds > 0 else 0.0}

    def wait(self, pred: Callable[[], Any], what: str, interval: float = 0.5) -> Any:
        return wait_until(pred, self.a.phase_timeout, what, interval=interval)

    def connector_failed(self, name: str) -> None:
        """Raises at once if the connector or a task FAILED (so a broken run does not wait out
        the whole timeout)."""
        assert self.cluster is not None
        try:
            st = self.cluster.connect.status(name)
        except ConnectError as e:
            if e.status == 404:
                return
            raise
        for t in [st["connector"], *st.get("tasks", [])]:
            if t["state"] == "FAILED":
                raise TestbedError(f"connector {name} FAILED: {t.get('trace', '')[:3000]}")

    def wait_committed(self, name: str, t0: float) -> float:
        """Seconds from `t0` until sink connector `name`'s group committed every record (the
        same end for our sink, which commits what is durable, and the no-op sink, which
        commits what it was given: both at the worker's offset flush interval)."""
        a, c = self.a, self.cluster
        assert c is not None
        group = f"connect-{name}"

        def committed() -> Optional[int]:
            got = c.kafka.group_offsets(group)
            n = sum(got.get((self.topic, p), 0) for p in range(a.partitions))
            return n if n >= a.records else None

        self.wait(committed, f"group {group} to commit {a.records} offsets", interval=0.2)
        return time.monotonic() - t0

    def kafka_tool(self, main_class: str, *args: str) -> dict[str, Any]:
        """Runs one of Kafka's tools with the test bed's command line (same jars, heap, GC and
        logging as run_tool), measured like kbackup's commands (run_measured)."""
        assert self.cluster is not None
        argv = tool_argv(main_class, *args, libs=self.cluster.libs)
        return run_measured(argv, self.a.phase_timeout, main_class.rsplit(".", 1)[-1])

    # -- phases -------------------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        a, c = self.a, self.cluster
        assert c is not None
        c.kafka.create_topic(self.topic, partitions=a.partitions)
        r = self.kafka_tool(PRODUCER_PERF, "--topic", self.topic, "--num-records", str(a.records),
                            "--record-size", str(a.record_size), "--throughput", "-1",
                            "--producer-props", f"bootstrap.servers={c.bootstrap}")
        res = {"tool": "ProducerPerformance", **r, **parse_producer_perf(r["stdout"])}
        assert self.wm is not None
        have = self.wm.total(self.topic, a.partitions)
        if have != a.records:
            raise BenchError(f"load: topic {self.topic} holds {have} records, expected {a.records}")
        return res

    def consumer_perf(self) -> dict[str, Any]:
        a, c = self.a, self.cluster
        assert c is not None
        r = self.kafka_tool(CONSUMER_PERF, "--bootstrap-server", c.bootstrap, "--topic",
                            self.topic, "--num-records", str(a.records), "--timeout", "30000",
                            "--command-property", "isolation.level=read_committed")
        row = parse_consumer_perf(r["stdout"])
        if int(row.get("data.consumed.in.nMsg", 0)) < a.records:
            raise BenchError(f"ConsumerPerformance read {row.get('data.consumed.in.nMsg')} of "
                             f"{a.records} records")
        # The tool's fetch.* rates leave out its group join: the strictest reference.
        return {"tool": "ConsumerPerformance", **r,
                "records_per_s": row["fetch.nMsg.sec"], "mb_per_s": row["fetch.MB.sec"],
                "incl_join_records_per_s": row["nMsg.sec"], "incl_join_mb_per_s": row["MB.sec"],
                "rebalance_ms": row.get("rebalance.time.ms"), "fetch_ms": row.get("fetch.time.ms"),
                "raw": row}

    def cli_backup(self) -> dict[str, Any]:
        c = self.cluster
        assert c is not None
        watch = ProgressWatch(lambda: self.segment_bytes(self.cli_dir)).start()
        try:
            r = self._cli_backup_cmd()
        finally:
            progress = watch.stop(self.a.records)
        summary = json.loads(r["stdout"])
        if summary.get("records") != self.a.records:
            raise BenchError(f"kbackup backup wrote {summary.get('records')} records, expected "
                             f"{self.a.records}: {summary}")
        return {**r, **self.rates(r["wall_s"]), "reported_seconds": summary.get("seconds"),
                "records": summary["records"], **progress}

    def _cli_backup_cmd(self) -> dict[str, Any]:
        c = self.cluster
        assert c is not None
        return run_measured([str(KBACKUP), "backup", "--bootstrap-server", c.bootstrap,
                             "--dir", str(self.cli_dir), "--topics", self.topic,
                             "--until-caught-up", "--json", "-q",
                             *(["--compression", self.a.codec] if self.a.codec else []),
                             *[x for kv in self.a.backup_config for x in ("--config", kv)]],
                            self.a.phase_timeout, "kbackup backup")

    def inspect(self, d: Union[Path, str], env: Optional[dict[str, str]] = None) -> dict[str, Any]:
        t0 = time.monotonic()
        doc = kbackup_json("inspect", str(d), "--json", timeout=self.a.phase_timeout, env=env)
        return {"records": doc["records"], "bytes": doc["bytes"],
                "inspect_s": time.monotonic() - t0}

    def segment_bytes(self, d: Path) -> int:
        n = 0
        for root, _, files in os.walk(d):
            for f in files:
                if f.endswith(".segment"):
                    try:
                        n += os.path.getsize(os.path.join(root, f))
                    except OSError:
                        pass
        return n

    def sink_backup(self, name: str = "bench-sink", target: Optional[str] = None,
                    size: Optional[Callable[[], int]] = None, extra: Optional[dict] = None,
                    env: Optional[dict[str, str]] = None) -> dict[str, Any]:
        """The sink connector backing the topic up into `target` (the local sink directory by
        default; a bucket URL for the S3 phase, whose segment bytes `size` reads from the
        server's listing), timed until `inspect` counts every record."""
        a, c = self.a, self.cluster
        assert c is not None
        target = target or str(self.sink_dir)
        size = size or (lambda: self.segment_bytes(self.sink_dir))
        expect_bytes = self.results["backup_cli_files"]["bytes"]
        t0 = time.monotonic()
        threads = TaskThreadSampler(c.worker.process.pid if c.worker else None,
                                    f"task-thread-{name}").start()
        c.connect.create_connector(name, {
            "connector.class": "io.kbackup.connect.BackupSinkConnector",
            "tasks.max": a.tasks, "topics": self.topic, "target.dir": target,
            "cluster.bootstrap.servers": c.bootstrap,
            "consumer.override.isolation.level": "read_committed", **CONVERTERS,
            **({"compression.type": a.codec} if a.codec else {}), **(extra or {})})
        self.connectors.append(name)
        inspections = 0
        stable = {"bytes": -1, "since": time.monotonic()}
        first: dict[str, float] = {}

        def done() -> Optional[dict[str, Any]]:
            nonlocal inspections
            self.connector_failed(name)
            if not worth_inspecting(size(), expect_bytes, stable, first):
                return None
            inspections += 1
            ins = self.inspect(target, env)
            return ins if ins["records"] >= a.records else None

        try:
            ins = self.wait(done, f"sink connector to back up {a.records} records", interval=0.25)
        finally:
            task_threads = threads.stop()
        wall = time.monotonic() - t0
        # Durable and committed: the sink commits only offsets whose records are fsynced.
        committed_s = self.wait_committed(name, t0)
        if ins["records"] != a.records:
            raise BenchError(f"{name} holds {ins['records']} records, expected {a.records}")
        start_s = first.get("t", t0) - t0
        return {"wall_s": wall, **self.rates(wall), "tasks": a.tasks,
                "startup_s": start_s,
                "steady_records_per_s": a.records / (wall - start_s) if wall > start_s else None,
                "last_inspect_s": ins["inspect_s"], "inspections": inspections,
                "bytes": ins["bytes"], "committed_wall_s": committed_s, **task_threads,
                "worker_hwm_mib": (proc_status_kib(c.worker.process.pid, "VmHWM") or 0) / 1024
                if c.worker else None}

    def compression_matrix(self) -> dict[str, Any]:
        """Issue 11: what block compression costs and saves. For producer batches compressed
        with none and with zstd (text-like JSON records from a payload file, closer to real
        topics than ProducerPerformance's random letters), back up with each codec (CLI,
        timed, CPU from wait4) and restore the none and zstd backups; stored/raw bytes from
        `inspect`. docs/benchmarks.md "Compression"."""
        import random

        a, c = self.a, self.cluster
        assert c is not None and self.wm is not None
        # six backups and two restores: bounded, so a full run's large sizes stay affordable
        n = min(a.records, 200_000, max(1, (128 << 20) // a.record_size))
        rnd = random.Random(11)
        events = ["page_view", "add_to_cart", "checkout", "login", "search"]
        lines = []
        # at most 64 MiB of payload lines: ProducerPerformance holds them all in its 256 MiB
        # heap (5,000 lines of 64 KiB ended it with OutOfMemoryError)
        for i in range(min(5000, max(100, (64 << 20) // max(a.record_size, 40)))):
            line = (f'{{"id":{rnd.randrange(10**9)},"user":"user-{rnd.randrange(50000)}",'
                    f'"event":"{rnd.choice(events)}","path":"/products/{rnd.randrange(10**5)}",'
                    f'"ts":{1_700_000_000_000 + i * 37},"score":{rnd.random():.4f}}}')
            lines.append((line + " " * a.record_size)[:max(a.record_size, 40)])
        payload = self.tmp / "payload.txt"
        payload.write_text("\n".join(lines))
        out: dict[str, Any] = {"load_at_start": loadavg(), "records": n}
        for pc in ("none", "zstd"):
            topic = f"bench-z-{a.record_size}-{pc}"
            c.kafka.create_topic(topic, partitions=a.partitions)
            self.kafka_tool(PRODUCER_PERF, "--topic", topic, "--num-records", str(n),
                            "--payload-file", str(payload), "--throughput", "-1",
                            "--producer-props", f"bootstrap.servers={c.bootstrap}",
                            f"compression.type={pc}")
            for bc in ("none", "zstd", "lz4"):
                d = self.tmp / f"z-{a.record_size}-{pc}-{bc}"
                r = run_measured([str(KBACKUP), "backup", "--bootstrap-server", c.bootstrap,
                                  "--dir", str(d), "--topics", topic, "--until-caught-up",
                                  "--compression", bc, "--json", "-q"],
                                 a.phase_timeout, f"kbackup backup --compression {bc}")
                doc = kbackup_json("inspect", str(d), "--json", timeout=a.phase_timeout)
                row = {"wall_s": round(r["wall_s"], 2), "cpu_s": round(r["cpu_s"], 2),
                       "records_per_s": round(n / r["wall_s"]),
                       "bytes": doc["bytes"], "raw_bytes": doc["raw_bytes"],
                       "ratio": doc["ratio"], "load": loadavg()}
                if pc == "none" and bc in ("none", "zstd"):
                    target = f"{topic}-r-{bc}"
                    rr = run_measured([str(KBACKUP), "restore", "--bootstrap-server",
                                       c.bootstrap, "--dir", str(d), "--topics", topic,
                                       "--rename", f"{topic}:{target}", "--json", "-q"],
                                      a.phase_timeout, f"kbackup restore ({bc} backup)")
                    have = self.wm.committed_records(target, a.partitions)
                    if have != n:
                        raise BenchError(f"restore of the {bc} backup: {have} records")
                    row.update(restore_wall_s=round(rr["wall_s"], 2),
                               restore_cpu_s=round(rr["cpu_s"], 2),
                               restore_records_per_s=round(n / rr["wall_s"]))
                out[f"producer_{pc}/backup_{bc}"] = row
                self.log(f"compression producer={pc} backup={bc}: {row}")
                shutil.rmtree(d, ignore_errors=True)
        out["load_at_end"] = loadavg()
        return out

    def stop_connector(self, name: str) -> None:
        assert self.cluster is not None
        self.cluster.connect.delete_connector(name)
        self.cluster.connect.wait_deleted(name, timeout=60)
        self.connectors.remove(name)

    def cli_restore(self) -> dict[str, Any]:
        return self._cli_restore(f"{self.topic}-cli", str(self.cli_dir))

    def _cli_restore(self, target: str, source: str, extra: tuple[str, ...] = (),
                     env: Optional[dict[str, str]] = None) -> dict[str, Any]:
        a, c = self.a, self.cluster
        assert c is not None and self.wm is not None
        wm = Watermarks(c.bootstrap)  # its own client: the watch polls from another thread
        watch = ProgressWatch(lambda: wm.total(target, a.partitions), interval=0.25).start()
        try:
            r = self._cli_restore_cmd(target, source, extra, env)
        finally:
            progress = watch.stop(a.records)
            wm.close()
        summary = json.loads(r["stdout"])
        # One transaction per batch: each commit marker takes an offset, so count records.
        have = self.wm.committed_records(target, a.partitions)
        if have != a.records or not summary.get("finished"):
            raise BenchError(f"kbackup restore: {target} holds {have} records (expected "
                             f"{a.records}), finished={summary.get('finished')}")
        # last_progress_s: the end offsets stop moving (commit markers included).
        return {**r, **self.rates(r["wall_s"]), "records_sent": summary.get("records_sent"),
                **progress}

    def _cli_restore_cmd(self, target: str, source: Optional[str] = None,
                         extra: tuple[str, ...] = (),
                         env: Optional[dict[str, str]] = None) -> dict[str, Any]:
        a, c = self.a, self.cluster
        assert c is not None
        return run_measured([str(KBACKUP), "restore", "--bootstrap-server", c.bootstrap,
                             "--dir", source or str(self.cli_dir), "--topics", self.topic,
                             "--rename", f"{self.topic}:{target}", "--json", "-q", *extra,
                             *[x for kv in self.a.restore_config for x in ("--config", kv)]],
                            a.phase_timeout, "kbackup restore", env=env)

    # -- a backup in object storage (issue 9): the CLI's backup copied to a real S3 server -----

    def s3_phases(self) -> None:
        """The CLI backup copied into versitygw on loopback, then restored and read straight
        from the bucket: ratios against the same phases on the local directory. Skipped with a
        note when versitygw is not built (`make s3-server`)."""
        if self.s3 is None:
            self.log("s3 phases skipped: versitygw missing (make s3-server)")
            return
        P = self.results["phases"]
        s3 = self.s3
        self.s3_url = f"s3://{s3.bucket}/bench-{self.a.record_size}"
        self.s3_env = {**os.environ, **s3.env()}
        self.phase("s3_copy", self.s3_copy)
        self.phase("restore_cli_s3", self.cli_restore_s3)
        self.phase("cat_jsonl_s3", self.cat_s3)
        self.phase("backup_cli_s3", self.cli_backup_s3)
        self.phase("backup_sink_s3", self.sink_backup_s3)
        self.stop_connector("bench-sink-s3")
        self.phase("restore_source_s3", self.source_restore_s3)
        self.stop_connector("bench-source-s3")
        for ph, local in (("restore_cli_s3", "restore_cli"), ("cat_jsonl_s3", "cat_jsonl"),
                          ("backup_cli_s3", "backup_cli"), ("backup_sink_s3", "backup_sink"),
                          ("restore_source_s3", "restore_source")):
            if P.get(local, {}).get("records_per_s") and P.get(ph, {}).get("records_per_s"):
                P[ph]["ratio"] = P[ph]["records_per_s"] / P[local]["records_per_s"]
                P[ph]["reference"] = f"{local} (local directory)"
        b, lb = P.get("backup_cli_s3", {}), P.get("backup_cli", {})
        if b.get("max_rss_kib") and lb.get("max_rss_kib"):
            # the bound of docs/storage.md: one upload part per partition being written
            b["part_bound_mib"] = 8 * self.a.partitions
            b["rss_over_local_mib"] = round((b["max_rss_kib"] - lb["max_rss_kib"]) / 1024, 1)

    def _s3_segment_bytes(self, prefix: str) -> int:
        assert self.s3 is not None
        return sum(n for k, n in self.s3.list_keys(prefix).items() if k.endswith(".segment"))

    def cli_backup_s3(self) -> dict[str, Any]:
        """The CLI backing the topic up straight into the bucket (segments streamed in 8 MiB
        parts, completed only if absent): rate and peak RSS against the local backup."""
        c = self.cluster
        assert c is not None
        url = f"{self.s3_url}-cli-direct"
        r = run_measured([str(KBACKUP), "backup", "--bootstrap-server", c.bootstrap,
                          "--dir", url, "--topics", self.topic, "--until-caught-up", "--json",
                          "-q", *[x for kv in self.a.backup_config for x in ("--config", kv)]],
                         self.a.phase_timeout, "kbackup backup (s3)", env=self.s3_env)
        summary = json.loads(r["stdout"])
        if summary.get("records") != self.a.records:
            raise BenchError(f"kbackup backup to S3 wrote {summary.get('records')} records, "
                             f"expected {self.a.records}: {summary}")
        ins = self.inspect(url, self.s3_env)
        if ins["records"] != self.a.records:
            raise BenchError(f"the bucket holds {ins['records']} records, expected "
                             f"{self.a.records}")
        return {**r, **self.rates(r["wall_s"]), "bytes": ins["bytes"]}

    def sink_backup_s3(self) -> dict[str, Any]:
        """The sink connector into the bucket. A segment is durable (and visible) once
        complete, so segments are completed at most 5 s after they start
        (max.segment.age.ms), as an operator would set the RPO."""
        url = f"{self.s3_url}-sink"
        prefix = url.split("/", 3)[3] + "/"
        self.sink_s3_url = url
        return self.sink_backup("bench-sink-s3", url, lambda: self._s3_segment_bytes(prefix),
                                {"max.segment.age.ms": 5000}, self.s3_env)

    def source_restore_s3(self) -> dict[str, Any]:
        return self.source_restore("bench-source-s3", self.sink_s3_url,
                                   self.tmp / f"s3-source-state-{self.a.record_size}",
                                   self.s3_env)

    def s3_copy(self) -> dict[str, Any]:
        r = run_measured([str(KBACKUP), "copy", str(self.cli_dir), self.s3_url, "--json", "-q"],
                         self.a.phase_timeout, "kbackup copy", env=self.s3_env)
        return {**r, **self.rates(r["wall_s"]), **self.file_rate(r["wall_s"])}

    def cli_restore_s3(self) -> dict[str, Any]:
        return self._cli_restore(f"{self.topic}-cli-s3", self.s3_url,
                                 ("--state-dir", str(self.tmp / f"s3-state-{self.a.record_size}")),
                                 self.s3_env)

    def cat_s3(self) -> dict[str, Any]:
        r = run_measured([str(KBACKUP), "cat", self.s3_url, "--topic", self.topic,
                          "--format", "jsonl"], self.a.phase_timeout, "kbackup cat (s3)",
                         stdout_to_null=True, env=self.s3_env)
        return {**r, **self.rates(r["wall_s"]), **self.file_rate(r["wall_s"])}

    def source_restore(self, name: str = "bench-source", source: Optional[str] = None,
                       state_dir: Optional[Path] = None,
                       env: Optional[dict[str, str]] = None) -> dict[str, Any]:
        """The source connector restoring the sink's backup (a bucket URL for the S3 phase,
        with its restore state in `state_dir`) under a new topic name."""
        a, c = self.a, self.cluster
        assert c is not None and self.wm is not None
        target = f"{self.topic}-connect" + ("" if source is None else "-s3")
        source = source or str(self.sink_dir)
        state = {} if state_dir is None else {"restore.state.dir": str(state_dir)}
        t0 = time.monotonic()
        c.connect.create_connector(name, {
            "connector.class": "io.kbackup.connect.BackupSourceConnector",
            "tasks.max": a.tasks, "topics": self.topic, "source.dir": source,
            "topics.rename": f"{self.topic}:{target}",
            "cluster.bootstrap.servers": c.bootstrap, **CONVERTERS, **state})
        self.connectors.append(name)

        first: dict[str, float] = {}

        def landed() -> bool:
            self.connector_failed(name)
            try:
                n = self.wm.total(target, a.partitions)
            except Exception:  # noqa: BLE001 - the topic does not exist yet
                return False
            if n > 0 and "t" not in first:
                first["t"] = time.monotonic()
            return n >= a.records

        self.wait(landed, f"{a.records} records in {target}", interval=0.25)
        landed_s = time.monotonic() - t0

        def finished() -> bool:
            self.connector_failed(name)
            doc = kbackup_json("restore-status", source, "--json",
                               *(() if state_dir is None else ("--state-dir", str(state_dir))),
                               env=env)
            return any(r["status"].get("connector_name") == name and r["status"].get("finished")
                       for r in doc.get("restores", []))

        self.wait(finished, f"restore {name} to report finished", interval=0.5)
        finished_s = time.monotonic() - t0
        have = self.wm.total(target, a.partitions)
        if have != a.records:
            raise BenchError(f"source restore: {target} holds {have} records, expected {a.records}"
                             " (duplicates?)")
        start_s = first.get("t", t0) - t0
        return {"wall_s": landed_s, **self.rates(landed_s), "finished_wall_s": finished_s,
                "tasks": a.tasks, "startup_s": start_s,
                "steady_records_per_s": a.records / (landed_s - start_s)
                if landed_s > start_s else None,
                "worker_hwm_mib": (proc_status_kib(c.worker.process.pid, "VmHWM") or 0) / 1024
                if c.worker else None}

    def verify(self) -> dict[str, Any]:
        r = run_measured([str(KBACKUP), "verify", str(self.cli_dir), "--json"],
                         self.a.phase_timeout, "kbackup verify")
        doc = json.loads(r["stdout"])
        if not doc.get("ok") or doc.get("records") != self.a.records:
            raise BenchError(f"kbackup verify: ok={doc.get('ok')} records={doc.get('records')} "
                             f"problems={doc.get('problems', [])[:5]}")
        return {**r, **self.rates(r["wall_s"]), **self.file_rate(r["wall_s"])}

    def cat(self) -> dict[str, Any]:
        r = run_measured([str(KBACKUP), "cat", str(self.cli_dir), "--topic", self.topic,
                          "--format", "jsonl"], self.a.phase_timeout, "kbackup cat",
                         stdout_to_null=True)
        return {**r, **self.rates(r["wall_s"]), **self.file_rate(r["wall_s"])}

    def file_rate(self, seconds: float) -> dict[str, float]:
        b = self.results["backup_cli_files"]["bytes"]
        return {"file_mb_per_s": b / MIB / seconds if seconds > 0 else 0.0}

    # -- run ----------------------------------------------------------------------------------

    # -- the Connect ceiling: the same topic and tasks through connectors that do nothing -------

    def noop_counts(self) -> int:
        n = 0
        for f in self.count_dir.glob("sink-*"):
            if not f.name.endswith(".tmp"):
                try:
                    n += int(f.read_text() or 0)
                except (OSError, ValueError):
                    pass
        return n

    def noop_sink(self) -> dict[str, Any]:
        a, c = self.a, self.cluster
        assert c is not None
        name = "bench-noop-sink"
        self.count_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        threads = TaskThreadSampler(c.worker.process.pid if c.worker else None,
                                    f"task-thread-{name}").start()
        c.connect.create_connector(name, {
            "connector.class": "io.kbackup.bench.noop.NoopSinkConnector",
            "tasks.max": a.tasks, "topics": self.topic, "count.dir": str(self.count_dir),
            "consumer.override.isolation.level": "read_committed", **CONVERTERS})
        self.connectors.append(name)
        first: dict[str, float] = {}

        def done() -> bool:
            self.connector_failed(name)
            n = self.noop_counts()
            if n > 0 and "t" not in first:
                first["t"] = time.monotonic()
            return n >= a.records

        try:
            self.wait(done, f"no-op sink to consume {a.records} records", interval=0.25)
        finally:
            task_threads = threads.stop()
        wall = time.monotonic() - t0
        start_s = first.get("t", t0) - t0
        committed_s = self.wait_committed(name, t0)
        return {"wall_s": wall, **self.rates(wall), "tasks": a.tasks, "startup_s": start_s,
                "steady_records_per_s": a.records / (wall - start_s) if wall > start_s else None,
                "committed_wall_s": committed_s, **task_threads}

    def noop_source(self) -> dict[str, Any]:
        a, c = self.a, self.cluster
        assert c is not None and self.wm is not None
        name = "bench-noop-source"
        target = f"{self.topic}-noop"
        c.kafka.create_topic(target, partitions=a.partitions)
        t0 = time.monotonic()
        c.connect.create_connector(name, {
            "connector.class": "io.kbackup.bench.noop.NoopSourceConnector",
            "tasks.max": a.tasks, "topic": target, "records": a.records,
            "record.size": a.record_size, "partitions": a.partitions,
            "batch.size": 1000,  # BackupSourceConfig's batch.size default
            **CONVERTERS})
        self.connectors.append(name)
        first: dict[str, float] = {}

        def landed() -> bool:
            self.connector_failed(name)
            try:
                n = self.wm.total(target, a.partitions)
            except Exception:  # noqa: BLE001 - metadata not there yet
                return False
            if n > 0 and "t" not in first:
                first["t"] = time.monotonic()
            return n >= a.records

        self.wait(landed, f"{a.records} records in {target}", interval=0.25)
        wall = time.monotonic() - t0
        have = self.wm.total(target, a.partitions)
        if have != a.records:
            raise BenchError(f"no-op source: {target} holds {have} records, expected {a.records}")
        start_s = first.get("t", t0) - t0
        return {"wall_s": wall, **self.rates(wall), "tasks": a.tasks, "startup_s": start_s,
                "steady_records_per_s": a.records / (wall - start_s) if wall > start_s else None}

    # -- run ----------------------------------------------------------------------------------

    def inprocess_phase(self) -> dict[str, Any]:
        """The in-process bench (tests/bench/inprocess.py) before Kafka starts: no broker or
        worker competes with it for the 2 cores."""
        a = self.base
        self.log("phase inprocess (no Kafka) ...")
        res = inprocess.run_inprocess(a.record_sizes, mib=a.inprocess_mib,
                                      warmup_mib=min(64, a.inprocess_mib),
                                      partitions=a.partitions, work_dir=a.work_dir,
                                      tmpfs_dir=inprocess.default_tmpfs(),
                                      timeout=a.phase_timeout * 3, log=self.log)
        res["summary"] = inprocess.summary_rows(res)
        print(inprocess.table(res), flush=True)
        return res

    def records_for(self, size: int) -> int:
        """--records if given, else --mib-per-size of payload (fixed costs under 10 % of a phase)."""
        if self.base.records:
            return self.base.records
        return max(1_000, self.base.mib_per_size * MIB // size)

    def run(self) -> dict[str, Any]:
        a = self.base
        R = self.report
        R["started_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        R["load_at_start"] = loadavg()
        R["uptime_at_start"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        R["machine"] = machine_info()
        R["params"] = {"record_sizes": a.record_sizes,
                       "records": {str(s): self.records_for(s) for s in a.record_sizes},
                       "partitions": a.partitions, "tasks": a.tasks, "worker_heap": "-Xmx512m",
                       "phase_timeout_s": a.phase_timeout, "ceiling": not a.no_ceiling,
                       "inprocess_mib": None if a.no_inprocess else a.inprocess_mib,
                       "backup_config": a.backup_config, "restore_config": a.restore_config,
                       "codec": a.codec}
        self.log(f"load at start: {R['uptime_at_start']}")
        t_start = time.monotonic()
        if not a.no_inprocess and not a.compression_only:
            R["inprocess"] = self.inprocess_phase()
        overrides = {}
        if not a.no_ceiling and not a.scale_no_sink:
            self.noop_plugin = build_noop_plugin(self.tmp / "noop-build", inprocess.LIBS)
            overrides["plugin.path"] = f"{REPO / 'dist'},{self.noop_plugin}"
        # the S3 server first, so the worker gets its AWS_* variables (the sink/source phases
        # into the bucket); skipped with a note when versitygw is not built
        from testbed.s3 import VERSITYGW, S3Server
        if not a.no_s3 and VERSITYGW.exists():
            self.s3 = S3Server(work=self.tmp).start()
        self.cluster = Cluster("bench", plugin_path=REPO / "dist", worker_overrides=overrides,
                               worker_env=self.s3.env() if self.s3 else None)
        t0 = time.monotonic()
        self.cluster.start()
        R["cluster_start_s"] = round(time.monotonic() - t0, 1)
        c = self.cluster
        self.sampler = RssSampler({"broker": c.broker.process.pid,
                                   "worker": c.worker.process.pid if c.worker else None}).start()
        self.wm = Watermarks(c.bootstrap)
        if a.warmup_records and not a.compression_only:
            R["warmup"] = self.worker_warmup()
        for size in a.record_sizes:
            self.for_size(size, self.records_for(size))
            R["sizes"][str(size)] = self.results
            if a.compression_only:
                self.phase("compression", self.compression_matrix)
            else:
                self.run_size()
        R["worker_vm_hwm_mib"] = round((proc_status_kib(c.worker.process.pid, "VmHWM") or 0)
                                       / 1024, 1) if c.worker else None
        R["broker_vm_hwm_mib"] = round((proc_status_kib(c.broker.process.pid, "VmHWM") or 0)
                                       / 1024, 1)
        R["load_at_end"] = loadavg()
        R["total_s"] = round(time.monotonic() - t_start, 1)
        return R

    def worker_warmup(self) -> dict[str, Any]:
        """Every Kafka phase once over a small topic before the measured ones, left out of the
        tables: a fresh worker JVM spends seconds of CPU compiling Connect's, the consumer's
        and the producer's code, and without this the first connector phase of the first
        record size (ours: they run before the no-op ones) would pay it alone. Measured
        2026-12-03: the same sink over 2,684,354 records of 100 B used 7.0 worker CPU s in a
        fresh worker and 3.4-4.4 s once warm; the worker's C2 compiler threads took a quarter
        to a third of its CPU samples during the first runs."""
        a = self.base
        self.log(f"worker warm-up: every phase over {a.warmup_records} records of 100 B "
                 "(not in the tables)")
        t0 = time.monotonic()
        self.for_size(100, a.warmup_records, name="warmup")
        prefix, self.phase_prefix = self.phase_prefix, "warmup"  # its own RSS peaks
        try:
            res = self.run_size(warmup=True)
        finally:
            self.phase_prefix = prefix
        return {"records": a.warmup_records, "record_size": 100,
                "total_s": round(time.monotonic() - t0, 1),
                "wall_s": {k: round(v.get("wall_s", 0), 2) for k, v in res["phases"].items()
                           if isinstance(v, dict)}}

    def run_size(self, warmup: bool = False) -> dict[str, Any]:
        """Every Kafka phase for the current record size (self.for_size); `warmup`: not the
        object-storage and compression phases."""
        a = self.a
        R = self.results
        R["params"] = {"records": a.records, "record_size": a.record_size,
                       "partitions": a.partitions, "tasks": a.tasks,
                       "payload_mib": round(self.payload_mb, 1)}
        R["load_at_start"] = loadavg()
        self.log(f"{a.records} records x {a.record_size} B = {self.payload_mb:.1f} MiB over "
                 f"{a.partitions} partitions; connector tasks.max={a.tasks}; work dir {self.tmp}")
        t_start = time.monotonic()
        load = self.phase("load", self.load)
        cons = self.phase("consumer_perf", self.consumer_perf)
        b = self.phase("backup_cli", self.cli_backup)
        R["backup_cli_files"] = self.inspect(self.cli_dir)
        s = self.phase("backup_sink", self.sink_backup)
        self.stop_connector("bench-sink")
        if self.noop_plugin:
            self.phase("noop_sink", self.noop_sink)
            self.stop_connector("bench-noop-sink")
        self.phase("restore_cli", self.cli_restore)
        self.phase("restore_source", self.source_restore)
        self.stop_connector("bench-source")
        if self.noop_plugin:
            self.phase("noop_source", self.noop_source)
            self.stop_connector("bench-noop-source")
        self.phase("verify", self.verify)
        self.phase("cat_jsonl", self.cat)
        if not self.a.no_s3 and not warmup:
            self.s3_phases()
        if not warmup:
            self.phase("compression", self.compression_matrix)

        P = R["phases"]
        for ph, ref in (("backup_cli", cons), ("backup_sink", cons), ("restore_cli", load),
                        ("restore_source", load)):
            p = P[ph]
            p["ratio"] = p["records_per_s"] / ref["records_per_s"] if ref["records_per_s"] else None
            p["reference"] = ref["tool"]
        # The Connect ceiling: our connectors against no-op ones in the same worker and topic.
        for ph, noop in (("backup_sink", "noop_sink"), ("restore_source", "noop_source")):
            if noop in P and P[noop]["records_per_s"]:
                P[ph]["ratio_vs_noop"] = P[ph]["records_per_s"] / P[noop]["records_per_s"]
                st, nst = P[ph].get("steady_records_per_s"), P[noop].get("steady_records_per_s")
                P[ph]["steady_ratio_vs_noop"] = st / nst if st and nst else None
                # The same end for both: every offset committed (the sink phase's wall ends
                # when `inspect` counts every record, after the flush that writes the last
                # blocks; the no-op sink's when its tasks were handed every record).
                cw, ncw = P[ph].get("committed_wall_s"), P[noop].get("committed_wall_s")
                P[ph]["committed_ratio_vs_noop"] = ncw / cw if cw and ncw else None
        b["ratio_vs_consumer_perf_wall"] = cons["wall_s"] / b["wall_s"]
        s["same_bytes_as_cli_backup"] = s["bytes"] == R["backup_cli_files"]["bytes"]
        R["load_at_end"] = loadavg()
        R["total_s"] = round(time.monotonic() - t_start, 1)
        return R

    # -- scale mode (issue 12 item 3): cost against partitions ---------------------------------

    def run_scale(self) -> dict[str, Any]:
        """`--scale P,...` and `--scale-topics T`: for each case a fresh topic set (one topic of
        P partitions, or T topics of one partition), loaded with the same records, then read by
        ConsumerPerformance, backed up by the CLI and by the sink connector, with records/s,
        peak RSS, open file descriptors and CPU per record of each. docs/benchmarks.md
        "Scale"."""
        a = self.base
        R = self.report
        R["started_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        R["load_at_start"] = loadavg()
        R["uptime_at_start"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        R["machine"] = machine_info()
        R["params"] = {"mode": "scale", "scale": a.scale, "scale_topics": a.scale_topics,
                       "records": a.scale_records, "record_size": a.scale_record_size,
                       "tasks": a.tasks, "worker_heap": "-Xmx512m",
                       "phase_timeout_s": a.phase_timeout, "backup_config": a.backup_config,
                       "compression": a.scale_compression or "zstd (the default)",
                       "sink": not a.scale_no_sink, "ceiling": not a.no_ceiling}
        R["cases"] = {}
        self.log(f"load at start: {R['uptime_at_start']}")
        t_start = time.monotonic()
        overrides = {}
        if not a.no_ceiling:
            self.noop_plugin = build_noop_plugin(self.tmp / "noop-build", inprocess.LIBS)
            overrides["plugin.path"] = f"{REPO / 'dist'},{self.noop_plugin}"
        self.cluster = Cluster("bench-scale", plugin_path=REPO / "dist",
                               worker_overrides=overrides)
        t0 = time.monotonic()
        self.cluster.start()
        R["cluster_start_s"] = round(time.monotonic() - t0, 1)
        c = self.cluster
        assert c.worker is not None
        worker = c.worker
        # a callable: the worker is restarted before each connector phase
        self.sampler = RssSampler({"broker": c.broker.process.pid,
                                   "worker": lambda: worker.process.pid}).start()
        self.wm = Watermarks(c.bootstrap)
        cases = [(f"p{p}", [f"scale-p{p}"], p) for p in a.scale]
        if a.scale_topics:
            t = a.scale_topics
            cases.append((f"t{t}", [f"scale-t{t}-{i:04d}" for i in range(t)], 1))
        for name, topics, parts in cases:
            R["cases"][name] = self.scale_case(name, topics, parts)
        R["worker_vm_hwm_mib"] = round((proc_status_kib(c.worker.process.pid, "VmHWM") or 0)
                                       / 1024, 1) if c.worker else None
        R["load_at_end"] = loadavg()
        R["total_s"] = round(time.monotonic() - t_start, 1)
        return R

    def scale_case(self, name: str, topics: list[str], parts: int) -> dict[str, Any]:
        a, c = self.base, self.cluster
        assert c is not None and self.wm is not None
        n, size = a.scale_records, a.scale_record_size
        total_parts = len(topics) * parts
        self.a = argparse.Namespace(**{**vars(a), "record_size": size, "records": n,
                                       "partitions": total_parts})
        self.results = {"phases": {}}
        R = self.results
        self.phase_prefix = name
        self.report["cases"][name] = R  # kept in the JSON also if a later phase fails
        self.topics, self.parts_per_topic = topics, parts
        # one topic: its name; many: a regex for the CLI, ConsumerPerformance and the sink
        self.topic = topics[0]
        self.topic_regex = None if len(topics) == 1 else f"scale-t{len(topics)}-.*"
        self.payload_mb = n * size / MIB
        self.cli_dir = self.tmp / f"scale-cli-{name}"
        self.sink_dir = self.tmp / f"scale-sink-{name}"
        R["params"] = {"topics": len(topics), "partitions_per_topic": parts,
                       "partitions": total_parts, "records": n, "record_size": size,
                       "payload_mib": round(self.payload_mb, 1), "tasks": a.tasks}
        R["load_at_start"] = loadavg()
        self.log(f"scale case {name}: {n} records x {size} B = {self.payload_mb:.0f} MiB over "
                 f"{len(topics)} topic(s) x {parts} partition(s)")
        t_start = time.monotonic()
        if len(topics) > 1:  # one topic: created by the load phase, as in the default run
            t0 = time.monotonic()
            self.create_topics(topics, parts)
            R["create_topics_s"] = round(time.monotonic() - t0, 1)
        load = self.phase("load", self.scale_load)
        cons = self.phase("consumer_perf", self.scale_consumer_perf)
        b = self.phase("backup_cli", self.scale_cli_backup)
        R["backup_cli_files"] = self.inspect(self.cli_dir)
        if a.scale_no_sink:  # CLI only: what a client setting, codec or binary changes
            # --cli-alt: the same backup by another binary, alternating with ours (ours, alt,
            # ours, alt, ...: --cli-rounds runs of each); without it, --cli-rounds runs of ours
            order = []
            for i in range(a.cli_rounds):
                order.append((str(KBACKUP), "backup_cli" if i == 0 else f"backup_cli_r{i + 1}"))
                if a.cli_alt:
                    order.append((a.cli_alt, f"backup_cli_alt_r{i + 1}"))
            runs = [b]
            for binary, key in order[1:]:
                shutil.rmtree(self.cli_dir, ignore_errors=True)
                runs.append(self.phase(key, lambda binary=binary:
                                       self.scale_cli_backup(Path(binary))))
            for p in runs:
                p["ratio"] = p["records_per_s"] / cons["records_per_s"] if cons["records_per_s"] else None
                p["reference"] = cons["tool"]
                p["cpu_s_per_m_records"] = p["cpu_s"] / n * 1e6
            cons["cpu_s_per_m_records"] = cons["cpu_s"] / n * 1e6
            shutil.rmtree(self.cli_dir, ignore_errors=True)
            self.delete_topics(topics)
            R["load_at_end"] = loadavg()
            R["total_s"] = round(time.monotonic() - t_start, 1)
            return R
        self.fresh_worker()
        s = self.phase("backup_sink", lambda: self.scale_sink_backup(
            "bench-scale-sink", "io.kbackup.connect.BackupSinkConnector",
            {"target.dir": str(self.sink_dir), "cluster.bootstrap.servers": c.bootstrap,
             **({"compression.type": a.scale_compression} if a.scale_compression else {})}))
        s.update(self.live_heap())
        self.stop_connector("bench-scale-sink")
        if self.noop_plugin:
            count_dir = self.tmp / f"scale-noop-{name}"
            count_dir.mkdir(parents=True, exist_ok=True)
            self.count_dir = count_dir
            self.fresh_worker()
            ns = self.phase("noop_sink", lambda: self.scale_sink_backup(
                "bench-scale-noop", "io.kbackup.bench.noop.NoopSinkConnector",
                {"count.dir": str(count_dir)}))
            ns.update(self.live_heap())
            self.stop_connector("bench-scale-noop")
            ns["cpu_s_per_m_records"] = ns["worker_cpu_s"] / n * 1e6
            ns["ratio"] = ns["records_per_s"] / cons["records_per_s"] if cons["records_per_s"] else None
            ns["reference"] = cons["tool"]
            s["ratio_vs_noop"] = s["records_per_s"] / ns["records_per_s"] if ns["records_per_s"] else None
            shutil.rmtree(count_dir, ignore_errors=True)
        for p in (b, s):
            p["ratio"] = p["records_per_s"] / cons["records_per_s"] if cons["records_per_s"] else None
            p["reference"] = cons["tool"]
        b["cpu_s_per_m_records"] = b["cpu_s"] / n * 1e6
        s["cpu_s_per_m_records"] = s["worker_cpu_s"] / n * 1e6  # the worker runs the sink
        cons["cpu_s_per_m_records"] = cons["cpu_s"] / n * 1e6
        s["same_bytes_as_cli_backup"] = s["bytes"] == R["backup_cli_files"]["bytes"]
        # free the disk and the broker before the next case
        shutil.rmtree(self.cli_dir, ignore_errors=True)
        shutil.rmtree(self.sink_dir, ignore_errors=True)
        self.delete_topics(topics)
        R["load_at_end"] = loadavg()
        R["total_s"] = round(time.monotonic() - t_start, 1)
        self.log(f"scale case {name}: load {load['records_per_s']:,.0f} rec/s, "
                 f"ConsumerPerformance {cons['records_per_s']:,.0f} rec/s, total {R['total_s']}s")
        return R

    def create_topics(self, topics: list[str], parts: int) -> None:
        """All topics of a case in a few CreateTopics calls, then one wait for every leader."""
        from confluent_kafka.admin import NewTopic

        assert self.cluster is not None
        admin = self.cluster.kafka.admin()
        for i in range(0, len(topics), 200):
            futs = admin.create_topics([NewTopic(t, num_partitions=parts, replication_factor=1)
                                        for t in topics[i:i + 200]], operation_timeout=120)
            for f in futs.values():
                f.result(180)
        want = set(topics)

        def ready() -> bool:
            md = admin.list_topics(timeout=30)
            ok = {t for t, tm in md.topics.items() if t in want and not tm.error
                  and len(tm.partitions) == parts
                  and all(p.leader >= 0 for p in tm.partitions.values())}
            return ok == want

        self.wait(ready, f"leaders of {len(topics)} topic(s) of {parts} partition(s)", interval=1)

    def delete_topics(self, topics: list[str]) -> None:
        assert self.cluster is not None
        admin = self.cluster.kafka.admin()
        for i in range(0, len(topics), 200):
            for f in admin.delete_topics(topics[i:i + 200], operation_timeout=120).values():
                try:
                    f.result(180)
                except Exception as e:  # noqa: BLE001 - the next case has its own topics
                    self.log(f"delete topics: {e}")

    def scale_total(self) -> int:
        assert self.wm is not None
        return sum(self.wm.total(t, self.parts_per_topic) for t in self.topics)

    def scale_load(self) -> dict[str, Any]:
        """One topic: ProducerPerformance, as the default run. Many topics: ProducerPerformance
        writes one topic only, so a librdkafka producer in this process spreads the records
        round-robin over them (values of random capital letters, like ProducerPerformance's);
        its rate is not comparable with the tool's. Every value is a different slice of 64 MiB
        of random capital letters, as ProducerPerformance draws a new random value per record:
        repeated values would let the backup's zstd blocks shrink to almost nothing."""
        a, c = self.a, self.cluster
        assert c is not None
        if len(self.topics) == 1:
            res = self.load()
        else:
            import random

            from confluent_kafka import Producer

            rnd = random.Random(12)
            letters = bytes(65 + b % 26 for b in range(256))
            pool = os.urandom(64 * MIB).translate(letters)
            span = len(pool) - a.record_size
            p = Producer({"bootstrap.servers": c.bootstrap, "linger.ms": 20,
                          "batch.size": 1 << 20, "log_level": 0})
            t0 = time.monotonic()
            topics, nt = self.topics, len(self.topics)
            for i in range(a.records):
                while True:
                    try:
                        off = rnd.randrange(span)
                        p.produce(topics[i % nt], pool[off:off + a.record_size], partition=0)
                        break
                    except BufferError:
                        p.poll(0.05)
                if i % 5000 == 0:
                    p.poll(0)
            left = p.flush(a.phase_timeout)
            wall = time.monotonic() - t0
            if left:
                raise BenchError(f"load: {left} records not delivered")
            res = {"tool": "confluent_kafka Producer (librdkafka), round-robin over topics",
                   "wall_s": wall, **self.rates(wall)}
        have = self.scale_total()
        if have != a.records:
            raise BenchError(f"load: {len(self.topics)} topic(s) hold {have} records, expected "
                             f"{a.records}")
        return res

    def scale_consumer_perf(self) -> dict[str, Any]:
        if self.topic_regex is None:
            return self.consumer_perf()
        a, c = self.a, self.cluster
        assert c is not None
        r = self.kafka_tool(CONSUMER_PERF, "--bootstrap-server", c.bootstrap, "--include",
                            self.topic_regex, "--num-records", str(a.records), "--timeout",
                            "60000", "--command-property", "isolation.level=read_committed")
        row = parse_consumer_perf(r["stdout"])
        if int(row.get("data.consumed.in.nMsg", 0)) < a.records:
            raise BenchError(f"ConsumerPerformance read {row.get('data.consumed.in.nMsg')} of "
                             f"{a.records} records")
        return {"tool": "ConsumerPerformance", **r,
                "records_per_s": row["fetch.nMsg.sec"], "mb_per_s": row["fetch.MB.sec"],
                "incl_join_records_per_s": row["nMsg.sec"], "incl_join_mb_per_s": row["MB.sec"],
                "rebalance_ms": row.get("rebalance.time.ms"), "fetch_ms": row.get("fetch.time.ms"),
                "raw": row}

    def scale_cli_backup(self, binary: Path = KBACKUP) -> dict[str, Any]:
        c = self.cluster
        assert c is not None
        sel = (["--topics", self.topic] if self.topic_regex is None
               else ["--topics-regex", self.topic_regex])
        r = run_measured([str(binary), "backup", "--bootstrap-server", c.bootstrap,
                          "--dir", str(self.cli_dir), *sel, "--until-caught-up", "--json", "-q",
                          *(["--compression", self.a.scale_compression]
                            if self.a.scale_compression else []),
                          *[x for kv in self.a.backup_config for x in ("--config", kv)]],
                         self.a.phase_timeout, "kbackup backup")
        summary = json.loads(r["stdout"])
        if summary.get("records") != self.a.records:
            raise BenchError(f"kbackup backup wrote {summary.get('records')} records, expected "
                             f"{self.a.records}: {summary}")
        return {**r, **self.rates(r["wall_s"]), "reported_seconds": summary.get("seconds"),
                "records": summary["records"]}

    def fresh_worker(self) -> None:
        """Restarts the worker, so each connector phase starts from the same JVM state: its
        RSS and heap never shrink back after a phase (serial GC), and the cases run one after
        the other in the same worker otherwise."""
        assert self.cluster is not None
        t0 = time.monotonic()
        self.cluster.restart_worker()
        self.log(f"worker restarted in {time.monotonic() - t0:.1f}s")
        time.sleep(2)  # past the start-up's own allocation burst

    def live_heap(self) -> dict[str, Any]:
        """After the phase, with the connector still running (partitions assigned, idle): a
        full GC (`jcmd GC.run`), then the old generation's use from jstat, i.e. the heap that
        is live. Costs a second of CPU; runs outside the timed phase."""
        assert self.cluster is not None and self.cluster.worker is not None
        pid = str(self.cluster.worker.process.pid)
        try:
            run(["jcmd", pid, "GC.run"], timeout=60)
            out = run(["jstat", "-gc", pid], timeout=60).stdout.split("\n")
            row = dict(zip(out[0].split(), out[1].split()))
            used = sum(float(row[k]) for k in ("S0U", "S1U", "EU", "OU"))
            return {"heap_live_after_gc_mib": round(used / 1024, 1),
                    "worker_rss_after_gc_mib": round(
                        (proc_status_kib(int(pid), "VmRSS") or 0) / 1024, 1)}
        except Exception as e:  # noqa: BLE001 - informational
            return {"heap_live_error": str(e)[:300]}

    def scale_sink_backup(self, name: str, cls: str, extra: dict[str, Any]) -> dict[str, Any]:
        """A sink connector (ours, or the no-op one) over the case's topics (`topics`, or
        `topics.regex` for many), until every record is in files (ours: `inspect` counts them)
        or counted (no-op), and the group committed every offset; the worker's fds and heap
        (jstat) before and during the phase."""
        a, c = self.a, self.cluster
        assert c is not None and c.worker is not None
        noop = "Noop" in cls
        wpid = c.worker.process.pid
        expect_bytes = 0 if noop else self.results["backup_cli_files"]["bytes"]
        before = {"worker_rss_before_mib": round((proc_status_kib(wpid, "VmRSS") or 0) / 1024, 1),
                  "worker_anon_before_mib": round((proc_status_kib(wpid, "RssAnon") or 0) / 1024, 1),
                  "worker_fds_before": proc_fd_count(wpid)}
        heap = HeapSampler(wpid).start()
        sel = ({"topics": self.topic} if self.topic_regex is None
               else {"topics.regex": self.topic_regex})
        t0 = time.monotonic()
        try:
            c.connect.create_connector(name, {
                "connector.class": cls, "tasks.max": a.tasks, **sel, **extra,
                "consumer.override.isolation.level": "read_committed", **CONVERTERS})
            self.connectors.append(name)
            stable = {"bytes": -1, "since": time.monotonic()}
            first: dict[str, float] = {}

            def done() -> Optional[dict[str, Any]]:
                self.connector_failed(name)
                if noop:
                    k = self.noop_counts()
                    if k > 0 and "t" not in first:
                        first["t"] = time.monotonic()
                    return {"records": k, "bytes": None, "inspect_s": None} \
                        if k >= a.records else None
                if not worth_inspecting(self.segment_bytes(self.sink_dir), expect_bytes,
                                        stable, first):
                    return None
                ins = self.inspect(self.sink_dir)
                return ins if ins["records"] >= a.records else None

            ins = self.wait(done, f"sink connector to back up {a.records} records",
                            interval=0.25)
            wall = time.monotonic() - t0
        finally:
            heap_res = heap.stop()
        group = f"connect-{name}"
        want = set(self.topics)

        def committed() -> Optional[int]:
            got = c.kafka.group_offsets(group)
            k = sum(v for (t, _), v in got.items() if t in want)
            return k if k >= a.records else None

        self.wait(committed, f"group {group} to commit {a.records} offsets", interval=0.5)
        committed_s = time.monotonic() - t0
        if ins["records"] != a.records:
            raise BenchError(f"sink backup holds {ins['records']} records, expected {a.records}")
        start_s = first.get("t", t0) - t0
        return {"wall_s": wall, **self.rates(wall), "tasks": a.tasks, "startup_s": start_s,
                "steady_records_per_s": a.records / (wall - start_s) if wall > start_s else None,
                "last_inspect_s": ins["inspect_s"], "bytes": ins["bytes"],
                "committed_wall_s": committed_s, **before, **heap_res}

    def cleanup(self) -> None:
        # the measured commands are gone already: run_measured kills them on any exception
        if self.sampler:
            self.sampler.stop()
        if self.wm:
            try:
                self.wm.close()
            except Exception:  # noqa: BLE001 - best effort
                pass
        if self.cluster:
            for name in list(self.connectors):
                try:
                    self.cluster.connect.delete_connector(name)
                except Exception:  # noqa: BLE001 - the worker is stopped right after anyway
                    pass
            self.cluster.cleanup()
        if self.s3 is not None:
            self.s3.stop()
        if not self.a.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            print(f"kept backups in {self.tmp}", flush=True)


# --------------------------------------------------------------------------------------------
# Report


def fmt(v: Any, spec: str = ".1f") -> str:
    if v is None:
        return "-"
    if isinstance(v, (int, float)):
        return format(v, spec)
    return str(v)


def table(R: dict[str, Any]) -> str:
    P = R["phases"]
    rows = [
        ("produce (ProducerPerformance)", "load", None),
        ("read (ConsumerPerformance)", "consumer_perf", None),
        ("backup, CLI", "backup_cli", "ConsumerPerf"),
        ("backup, sink connector", "backup_sink", "ConsumerPerf"),
        ("no-op sink (ceiling)", "noop_sink", None),
        ("restore, CLI", "restore_cli", "ProducerPerf"),
        ("restore, source connector", "restore_source", "ProducerPerf"),
        ("no-op source (ceiling)", "noop_source", None),
        ("verify (CLI)", "verify", None),
        ("cat --format jsonl (CLI)", "cat_jsonl", None),
        ("copy to S3 (versitygw)", "s3_copy", None),
        ("restore from S3, CLI", "restore_cli_s3", "local dir"),
        ("cat jsonl from S3 (CLI)", "cat_jsonl_s3", "local dir"),
        ("backup to S3, CLI", "backup_cli_s3", "local dir"),
        ("backup to S3, sink connector", "backup_sink_s3", "local dir"),
        ("restore from S3, source conn.", "restore_source_s3", "local dir"),
    ]
    head = (f"{'phase':<30} {'wall s':>7} {'rec/s':>10} {'MB/s':>7} {'file MB/s':>9} "
            f"{'ratio':>6} {'vs':<12} {'RSS MiB':>8} {'anon':>6} {'CPU s':>6} {'brk CPU':>7} "
            f"{'wkr CPU':>7} {'wkr RSS':>7} {'anon':>6}")
    out = [head, "-" * len(head)]
    for label, key, ref in rows:
        p = P.get(key)
        if not p:
            continue
        rss = p.get("max_rss_kib")
        anon = p.get("sampled_peak_anon_kib")
        out.append(
            f"{label:<30} {fmt(p.get('wall_s')):>7} {fmt(p.get('records_per_s'), ',.0f'):>10} "
            f"{fmt(p.get('mb_per_s')):>7} {fmt(p.get('file_mb_per_s')):>9} "
            f"{fmt(p.get('ratio'), '.2f'):>6} {ref or '':<12} "
            f"{fmt(rss / 1024 if rss else None):>8} {fmt(anon / 1024 if anon else None):>6} "
            f"{fmt(p.get('cpu_s')):>6} "
            f"{fmt(p.get('broker_cpu_s')):>7} {fmt(p.get('worker_cpu_s')):>7} "
            f"{fmt(p.get('worker_peak_rss_mib'), '.0f'):>7} "
            f"{fmt(p.get('worker_peak_anon_mib'), '.0f'):>6}")
    return "\n".join(out)


def scale_table(R: dict[str, Any]) -> str:
    """One row per case and phase: what a partition more costs (docs/benchmarks.md "Scale")."""
    head = (f"{'case':<6} {'parts':>5} {'phase':<14} {'wall s':>6} {'rec/s':>9} {'ratio':>5} "
            f"{'RSS MiB':>7} {'anon':>6} {'fds':>5} {'CPU s/M':>7} {'heap pk':>7} "
            f"{'old pk':>6} {'live':>7} {'brk CPU':>7}")
    out = [head, "-" * len(head)]
    for case, C in R.get("cases", {}).items():
        parts = C.get("params", {}).get("partitions")
        phases = C.get("phases", {})
        cli_runs = [(("backup, CLI" if k == "backup_cli" else
                      "CLI " + k.removeprefix("backup_cli_")), k)
                    for k in phases if k.startswith("backup_cli")]
        for label, key in (("read (CPerf)", "consumer_perf"), *cli_runs,
                           ("backup, sink", "backup_sink"), ("no-op sink", "noop_sink")):
            p = phases.get(key)
            if not p:
                continue
            if key in ("backup_sink", "noop_sink"):  # the worker's figures are the sink's
                rss, anon, fds = (p.get("worker_peak_rss_mib"), p.get("worker_peak_anon_mib"),
                                  p.get("worker_peak_fds"))
            else:
                rss = p["max_rss_kib"] / 1024 if p.get("max_rss_kib") else None
                anon = (p["sampled_peak_anon_kib"] / 1024 if p.get("sampled_peak_anon_kib")
                        else None)
                fds = p.get("sampled_peak_fds")
            out.append(
                f"{case:<6} {fmt(parts, 'd'):>5} {label:<14} {fmt(p.get('wall_s')):>6} "
                f"{fmt(p.get('records_per_s'), ',.0f'):>9} {fmt(p.get('ratio'), '.2f'):>5} "
                f"{fmt(rss, '.0f'):>7} {fmt(anon, '.0f'):>6} {fmt(fds, 'd'):>5} "
                f"{fmt(p.get('cpu_s_per_m_records'), '.1f'):>7} "
                f"{fmt(p.get('heap_used_peak_mib'), '.0f'):>7} "
                f"{fmt(p.get('heap_old_used_peak_mib'), '.0f'):>6} "
                f"{fmt(p.get('heap_live_after_gc_mib'), '.0f'):>7} "
                f"{fmt(p.get('broker_cpu_s')):>7}")
    return "\n".join(out)


def notes(R: dict[str, Any]) -> str:
    P = R["phases"]
    lines = []
    if "backup_sink" in P:
        s = P["backup_sink"]
        lines.append(f"sink: first bytes on disk {s['startup_s']:.1f}s after the POST, then "
                     f"{fmt(s['steady_records_per_s'], ',.0f')} records/s; "
                     f"all records in files after {s['wall_s']:.1f}s (last inspect took "
                     f"{s['last_inspect_s']:.1f}s), offsets committed after "
                     f"{s['committed_wall_s']:.1f}s; same bytes as CLI backup: "
                     f"{s.get('same_bytes_as_cli_backup')}")
    if "restore_source" in P:
        s = P["restore_source"]
        lines.append(f"source: first records in the target {s['startup_s']:.1f}s after the POST, "
                     f"then {fmt(s['steady_records_per_s'], ',.0f')} records/s; "
                     f"all records in the target after {s['wall_s']:.1f}s, restore-status "
                     f"finished after {s['finished_wall_s']:.1f}s")
    for ph, what in (("backup_cli", "files"), ("restore_cli", "target")):
        if ph in P and P[ph].get("first_record_s") is not None:
            p = P[ph]
            lines.append(f"{ph}: first records in the {what} {p['first_record_s']:.1f}s after "
                         f"start, then {fmt(p['steady_records_per_s'], ',.0f')} records/s until "
                         f"{fmt(p['last_progress_s'])}s; process exit (durable end) "
                         f"{p['wall_s']:.1f}s")
    for ph in ("backup_sink", "noop_sink"):
        if P.get(ph, {}).get("task_thread_states"):
            lines.append(f"{ph} task threads: states {P[ph]['task_thread_states']} (R running, "
                         f"S waiting, D in I/O such as fsync), {P[ph]['task_thread_cpu_s']} CPU s")
    for ph, noop in (("backup_sink", "noop_sink"), ("restore_source", "noop_source")):
        if P.get(ph, {}).get("ratio_vs_noop") is not None:
            lines.append(f"{ph} vs the no-op connector in the same worker: "
                         f"{P[ph]['ratio_vs_noop']:.2f} (wall), "
                         f"{fmt(P[ph].get('steady_ratio_vs_noop'), '.2f')} (steady state); no-op "
                         f"first record {P[noop]['startup_s']:.1f}s, "
                         f"{fmt(P[noop]['steady_records_per_s'], ',.0f')} records/s steady")
    if "consumer_perf" in P:
        cp = P["consumer_perf"]
        lines.append(f"ConsumerPerformance incl. group join: {cp['incl_join_mb_per_s']:.1f} MB/s; "
                     f"JVM wall clock {cp['wall_s']:.1f}s")
    lines.append(f"backup files: {R['backup_cli_files']['bytes'] / MIB:.1f} MiB for "
                 f"{R['params']['payload_mib']} MiB of payload"
                 if "backup_cli_files" in R else "")
    for k, row in P.get("compression", {}).items():
        if isinstance(row, dict) and "ratio" in row:
            lines.append(f"compression {k}: stored/raw {row['ratio']}, backup "
                         f"{row['records_per_s']:,} rec/s {row['cpu_s']} CPU s"
                         + (f", restore {row['restore_records_per_s']:,} rec/s "
                            f"{row['restore_cpu_s']} CPU s" if "restore_wall_s" in row else "")
                         + f" (load {row['load']})")
    if R.get("worker_vm_hwm_mib"):
        lines.append(f"JVM lifetime peak RSS (VmHWM): worker {R.get('worker_vm_hwm_mib')} MiB, "
                     f"broker {R.get('broker_vm_hwm_mib')} MiB")
    lines.append(f"load average at start {R.get('load_at_start')}, at end {R.get('load_at_end')}; "
                 f"total {R.get('total_s')}s")
    return "\n".join(ln for ln in lines if ln)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="bench.py",
        description="kbackup throughput and memory against Kafka's own perf tools, one run.")
    ap.add_argument("--records", type=int, default=None,
                    help="records to produce per record size (default: --mib-per-size of payload)")
    ap.add_argument("--mib-per-size", type=int, default=1024,
                    help="payload MiB per record size when --records is not given (1024)")
    ap.add_argument("--record-sizes", default="100,1024,65536",
                    help="comma-separated value sizes in bytes, each a run of every phase "
                         "(100,1024,65536)")
    ap.add_argument("--record-size", type=int, default=None,
                    help="one value size only (same as --record-sizes B)")
    ap.add_argument("--no-ceiling", action="store_true",
                    help="skip the no-op sink and source connectors (the Connect ceiling)")
    ap.add_argument("--no-s3", action="store_true",
                    help="skip the phases through a local S3 server (versitygw)")
    ap.add_argument("--no-inprocess", action="store_true",
                    help="skip the in-process phases (tests/bench/inprocess.py, no Kafka)")
    ap.add_argument("--inprocess-mib", type=int, default=512,
                    help="payload MiB per case of the in-process phases (512)")
    ap.add_argument("--warmup-records", type=int, default=1_000_000,
                    help="records of 100 B that every phase moves once before the measured "
                         "ones, to warm the worker's JIT up (1000000; 0: no warm-up)")
    ap.add_argument("--partitions", type=int, default=6, help="partitions of the topic (6)")
    ap.add_argument("--tasks", type=int, default=2,
                    help="tasks.max of the sink and source connectors (2: one per core here)")
    ap.add_argument("--phase-timeout", type=float, default=900,
                    help="seconds any one phase may take before the bench fails (900: the "
                         "default 1 GiB of 100-byte records takes the CLI restore about 10 "
                         "minutes at its current 18,500 records/s)")
    ap.add_argument("--work-dir", default=None,
                    help="parent of the temporary backup directories (default: system temp)")
    ap.add_argument("--out", default=None,
                    help="result JSON (default tests/bench/results-<UTC date-time>.json)")
    ap.add_argument("--keep", action="store_true", help="keep the backup directories")
    ap.add_argument("--backup-config", action="append", default=[], metavar="KEY=VALUE",
                    help="extra `--config` for `kbackup backup` (repeatable), to try client tuning")
    ap.add_argument("--restore-config", action="append", default=[], metavar="KEY=VALUE",
                    help="extra `--config` for `kbackup restore` (repeatable)")
    ap.add_argument("--codec", default=None, choices=("none", "zstd", "lz4"),
                    help="codec of the CLI backup (--compression) and of the sink connector "
                         "(compression.type) in the record-size phases; default: theirs (zstd)")
    ap.add_argument("--compression-only", action="store_true",
                    help="run only the compression phase (codecs x producer compression)")
    ap.add_argument("--scale", default="", metavar="P,...",
                    help="scale mode: for each partition count, a topic of P partitions backed "
                         "up by the CLI and by the sink (e.g. 6,60,600); no other phases run")
    ap.add_argument("--scale-topics", type=int, default=0, metavar="T",
                    help="scale mode: also T topics of 1 partition each (e.g. 1000)")
    ap.add_argument("--scale-records", type=int, default=524_288,
                    help="records per scale case (524288: 512 MiB of 1 KiB records)")
    ap.add_argument("--scale-record-size", type=int, default=1024,
                    help="value size in bytes of the scale cases (1024)")
    ap.add_argument("--cli-alt", default=None, metavar="PATH",
                    help="scale mode with --scale-no-sink: also back up with this kbackup "
                         "binary, alternating with dist/kbackup (an A/B in one run)")
    ap.add_argument("--cli-rounds", type=int, default=1, metavar="N",
                    help="scale mode with --scale-no-sink: runs of each CLI backup (1)")
    ap.add_argument("--scale-no-sink", action="store_true",
                    help="scale mode: skip the sink and no-op sink phases (CLI experiments)")
    ap.add_argument("--scale-compression", default=None, choices=("none", "zstd", "lz4"),
                    help="codec of the scale cases' CLI backup (--compression) and sink "
                         "(compression.type); default: theirs (zstd)")
    args = ap.parse_args(argv)
    try:
        args.scale = [int(x) for x in args.scale.split(",") if x.strip()]
    except ValueError:
        ap.error("--scale takes comma-separated partition counts, e.g. 6,60,600")
    scale_mode = bool(args.scale or args.scale_topics)
    if scale_mode and (min(args.scale or [1]) < 1 or args.scale_topics < 0
                       or args.scale_records < 1 or args.scale_record_size < 1):
        ap.error("--scale, --scale-topics, --scale-records and --scale-record-size must be "
                 "positive")
    args.record_sizes = ([args.record_size] if args.record_size else
                         [int(x) for x in args.record_sizes.split(",") if x.strip()])
    if ((args.records is not None and args.records < 1) or min(args.record_sizes) < 1
            or args.partitions < 1 or args.tasks < 1 or args.mib_per_size < 1):
        ap.error("--records, --record-sizes, --mib-per-size, --partitions and --tasks must be at "
                 "least 1")
    if not KBACKUP.exists() or not (REPO / "dist" / "kbackup-connect.jar").exists():
        print(f"bench: {KBACKUP} or dist/kbackup-connect.jar missing; fix: run `make dist`",
              file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else (
        REPO / "tests" / "bench" / f"results-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.json")

    bench = Bench(args)
    results: Optional[dict[str, Any]] = None
    failed: Optional[BaseException] = None
    try:
        results = bench.run_scale() if scale_mode else bench.run()
    except (BenchError, TestbedError, ConnectError, subprocess.TimeoutExpired) as e:
        failed = e
        print(f"bench: FAILED: {e}", file=sys.stderr)
        if bench.cluster:
            print(bench.cluster.log_tails(30), file=sys.stderr)
    finally:
        bench.cleanup()
    R = results or bench.report
    R["ok"] = failed is None
    if failed is not None:
        R["error"] = str(failed)[:4000]
    out.write_text(json.dumps(R, indent=2, default=str) + "\n")
    print()
    if R.get("inprocess"):
        print("in-process (no Kafka): sink and source tasks through JNI into files")
        print(inprocess.table(R["inprocess"]))
        print()
    if R.get("cases"):
        prm = R.get("params", {})
        print(f"kbackup bench, scale: {prm.get('records')} records x {prm.get('record_size')} B "
              f"per case, connector tasks.max={args.tasks}; load {R.get('load_at_start')} -> "
              f"{R.get('load_at_end')}")
        print(scale_table(R))
        print("RSS/anon/fds: the CLI process, or the worker's peak during the sink phase; "
              "CPU s/M: CPU seconds per million records (the worker's for the sink); heap pk / "
              "old pk: the worker's peak used heap and old generation (jstat); live: its "
              "heap after a full GC at the end of the phase, the connector still running; "
              "the worker is restarted before each connector phase")
        print()
    for size, S in R.get("sizes", {}).items():
        prm = S.get("params", {})
        print(f"kbackup bench: {prm.get('records')} records x {size} B, {args.partitions} "
              f"partitions, connector tasks.max={args.tasks}"
              + (f", backup codec {args.codec}" if args.codec else "")
              + (f", backup --config {args.backup_config}" if args.backup_config else "")
              + (f", restore --config {args.restore_config}" if args.restore_config else "")
              + f"; load {S.get('load_at_start')} -> {S.get('load_at_end')}")
        print(table(S))
        if R["ok"]:
            print(notes(S))
        print()
    print(f"machine: {R.get('machine', {}).get('cpus')} x {R.get('machine', {}).get('cpu_model')}, "
          f"{R.get('machine', {}).get('mem_total_mib')} MiB; {R.get('uptime_at_start', '')}; "
          f"total {R.get('total_s')}s")
    print(f"results: {out}")
    return 0 if failed is None else 1


if __name__ == "__main__":
    sys.exit(main())
