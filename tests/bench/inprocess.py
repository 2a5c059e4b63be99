#!/usr/bin/env python3
"""`make bench-inprocess`: the ceiling of kbackup's own code, no Kafka (issue 12, item 4).

Runs io.kbackup.connect.bench.InProcessBench (java-shim test sources, not in the plugin jar):
the real BackupSinkTask -> NativeSink -> JNI -> Rust core writing synthetic SinkRecord batches
into segment files, the disk's own sequential write + fdatasync rate in the same run, the same
sink into tmpfs (fsync costs nothing there: the core has no switch to skip it) and the real
BackupSourceTask polling the backup back. bench.py runs it too, as its first phases, and puts
the figures into the same results JSON. What the figures mean: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[2]
SHIM = REPO / "java-shim" / "target"
LIBS = REPO / ".cache" / "kafka-4.3.1" / "libs"
MAIN = "io.kbackup.connect.bench.InProcessBench"
JARS = ("connect-api-4.3.1.jar", "kafka-clients-4.3.1.jar", "slf4j-api-2.0.16.jar")
MIB = 1024 * 1024


class InProcessError(RuntimeError):
    """The in-process bench could not run or failed; the message says why and the fix."""


def classpath() -> str:
    need = [SHIM / "classes", SHIM / "test-classes"] + [LIBS / j for j in JARS]
    missing = [str(p) for p in need if not p.exists()]
    bench_class = SHIM / "test-classes" / (MAIN.replace(".", "/") + ".class")
    if missing or not bench_class.exists():
        raise InProcessError(f"missing {missing or [str(bench_class)]}; fix: `make build kafka` and "
                             "`mvn -q -B -f java-shim/pom.xml test-compile` (or `make bench-inprocess`)")
    return os.pathsep.join(str(p) for p in need)


def default_tmpfs() -> Optional[Path]:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


def run_inprocess(record_sizes: list[int], mib: int = 512, flush_mib: int = 64,
                  warmup_mib: int = 64, partitions: int = 6, work_dir: Optional[str] = None,
                  tmpfs_dir: Optional[Path] = None, jvm_args: Optional[list[str]] = None,
                  timeout: float = 900, log=print,
                  compression: Optional[str] = None) -> dict[str, Any]:
    """Runs the Java bench once for every size and answers its JSON (plus wall time). The
    backup directories go to a fresh directory under `work_dir` (a real disk: the system temp
    dir by default) and under `tmpfs_dir`; both are removed at the end, also on failure."""
    cp = classpath()
    disk = Path(tempfile.mkdtemp(prefix="kbackup-inprocess-", dir=work_dir))
    shm = Path(tempfile.mkdtemp(prefix="kbackup-inprocess-", dir=tmpfs_dir)) if tmpfs_dir else None
    out = disk / "result.json"
    argv = ["java", "-Xmx1g", "-XX:+UseSerialGC", *(jvm_args or []), "-cp", cp, MAIN,
            "--dir", str(disk), "--out", str(out), "--record-sizes",
            ",".join(str(s) for s in record_sizes), "--mib", str(mib), "--flush-mib", str(flush_mib),
            "--warmup-mib", str(warmup_mib), "--partitions", str(partitions)]
    if shm:
        argv += ["--tmpfs-dir", str(shm)]
    if compression:
        argv += ["--compression", compression]
    log(f"in-process bench: sizes {record_sizes}, {mib} MiB per case, flush every {flush_mib} MiB, "
        f"disk dir {disk}, tmpfs dir {shm}")
    t0 = time.monotonic()
    # Own session: a timeout or Ctrl-C kills the JVM and nothing else.
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    try:
        text, _ = p.communicate(timeout=timeout)
        if p.returncode != 0 or not out.exists():
            raise InProcessError(f"in-process bench exited {p.returncode}:\n{text[-4000:]}")
        res = json.loads(out.read_text())
        res["wall_s"] = round(time.monotonic() - t0, 1)
        return res
    except subprocess.TimeoutExpired:
        raise InProcessError(f"in-process bench: no result after {timeout:.0f}s (killed); fix: "
                             "lower --inprocess-mib") from None
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        shutil.rmtree(disk, ignore_errors=True)
        if shm:
            shutil.rmtree(shm, ignore_errors=True)


def summary_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per record size with the figures the issue's targets name."""
    rows = []
    for size, r in res["sizes"].items():
        disk, sink_d = r["disk_fdatasync"], r["sink_disk_fsync"]
        tmpfs, sink_t, src = r.get("tmpfs_write"), r.get("sink_tmpfs"), r["source_disk"]
        rows.append({
            "record_size": int(size), "records": r["records"],
            "sink_tmpfs_mb_per_s": sink_t and sink_t["mb_per_s"],
            "sink_tmpfs_ns_per_record": sink_t and sink_t["ns_per_record"],
            "sink_put_cpu_mb_per_s": (sink_t or sink_d)["put_cpu_mb_per_s"],
            "tmpfs_plain_write_mb_per_s": tmpfs and tmpfs["mb_per_s"],
            "sink_disk_mb_per_s": sink_d["mb_per_s"],
            "sink_disk_ns_per_record": sink_d["ns_per_record"],
            "disk_fdatasync_mb_per_s": disk["mb_per_s"],
            "sink_disk_vs_disk": sink_d["mb_per_s"] / disk["mb_per_s"] if disk["mb_per_s"] else None,
            "encode_cpu_ns_per_record": r["encode_only"]["cpu_ns_per_record"],
            "source_mb_per_s": src["mb_per_s"], "source_ns_per_record": src["ns_per_record"],
            "source_poll_cpu_mb_per_s": src["poll_cpu_mb_per_s"],
            "load": sink_d["load"],
        })
    return rows


def table(res: dict[str, Any]) -> str:
    def f(v: Any, spec: str = ",.0f") -> str:
        return "-" if v is None else format(v, spec)

    head = (f"{'size B':>7} {'records':>10} {'sink tmpfs MB/s':>15} {'ns/rec':>7} {'put CPU MB/s':>12} "
            f"{'plain tmpfs':>11} {'sink disk MB/s':>14} {'ns/rec':>7} {'disk fdatasync':>14} "
            f"{'ratio':>5} {'source MB/s':>11} {'ns/rec':>7}  load")
    out = [head, "-" * len(head)]
    for r in summary_rows(res):
        out.append(
            f"{r['record_size']:>7} {r['records']:>10,} {f(r['sink_tmpfs_mb_per_s']):>15} "
            f"{f(r['sink_tmpfs_ns_per_record']):>7} {f(r['sink_put_cpu_mb_per_s']):>12} "
            f"{f(r['tmpfs_plain_write_mb_per_s']):>11} {f(r['sink_disk_mb_per_s']):>14} "
            f"{f(r['sink_disk_ns_per_record']):>7} {f(r['disk_fdatasync_mb_per_s']):>14} "
            f"{f(r['sink_disk_vs_disk'], '.2f'):>5} {f(r['source_mb_per_s']):>11} "
            f"{f(r['source_ns_per_record']):>7}  {r['load']}")
    return "\n".join(out)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="inprocess.py", description=__doc__.splitlines()[0])
    ap.add_argument("--record-sizes", default="100,1024,65536",
                    help="comma-separated value sizes in bytes (100,1024,65536)")
    ap.add_argument("--mib", type=int, default=512, help="payload MiB per case and size (512)")
    ap.add_argument("--flush-mib", type=int, default=64,
                    help="payload MiB between two flushes (preCommit), also the block of the "
                         "plain fdatasync write (64)")
    ap.add_argument("--warmup-mib", type=int, default=64, help="JIT warm-up pass per size (64)")
    ap.add_argument("--partitions", type=int, default=6, help="partitions written (6)")
    ap.add_argument("--work-dir", default=None, help="disk directory (default: system temp)")
    ap.add_argument("--tmpfs-dir", default=None, help="tmpfs directory (default /dev/shm; 'none' skips)")
    ap.add_argument("--jfr", default=None, metavar="FILE", help="record a JFR profile into FILE")
    ap.add_argument("--compression", default=None, choices=("none", "zstd", "lz4"),
                    help="the sink's compression.type (default: the sink's, zstd)")
    ap.add_argument("--out", default=None,
                    help="result JSON (default tests/bench/inprocess-<UTC date-time>.json)")
    a = ap.parse_args(argv)
    tmpfs = None if a.tmpfs_dir == "none" else (Path(a.tmpfs_dir) if a.tmpfs_dir else default_tmpfs())
    jvm = [f"-XX:StartFlightRecording=filename={a.jfr},settings=profile"] if a.jfr else []
    out = Path(a.out) if a.out else (
        REPO / "tests" / "bench" / f"inprocess-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.json")
    try:
        res = run_inprocess([int(s) for s in a.record_sizes.split(",")], a.mib, a.flush_mib,
                            a.warmup_mib, a.partitions, a.work_dir, tmpfs, jvm,
                            compression=a.compression)
    except InProcessError as e:
        print(f"inprocess: FAILED: {e}", file=sys.stderr)
        return 1
    res["summary"] = summary_rows(res)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(table(res))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
