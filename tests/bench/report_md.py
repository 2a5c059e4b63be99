"""Renders a `bench.py` results JSON as the tables of docs/benchmarks.md, "Latest run per
record size": `.venv/bin/python tests/bench/report_md.py tests/bench/results-<time>.json`."""

import json
import sys
from typing import Any, Optional

ROWS = [("produce (ProducerPerformance)", "load", None),
        ("read (ConsumerPerformance)", "consumer_perf", None),
        ("backup, CLI", "backup_cli", None),
        ("backup, sink connector", "backup_sink", "sink"),
        ("no-op sink (ceiling)", "noop_sink", None),
        ("restore, CLI", "restore_cli", None),
        ("restore, source connector", "restore_source", "source"),
        ("no-op source (ceiling)", "noop_source", None)]


def f(v: Optional[float], spec: str) -> str:
    return "-" if v is None else format(v, spec)


def size_table(size: str, S: dict[str, Any]) -> str:
    P = S["phases"]
    out = [f"**{size} B records**: {S['params']['records']:,} records "
           f"({S['params']['payload_mib']:.1f} MiB), load {S['load_at_start'][0]} -> "
           f"{S['load_at_end'][0]}", "",
           "| phase | wall s | rec/s | MB/s | ratio | vs no-op (wall / steady / committed) | first record s "
           "| steady rec/s | CPU s (worker for connectors) |",
           "|---|---:|---:|---:|---|---|---:|---:|---:|"]
    for label, key, kind in ROWS:
        p = P.get(key)
        if not p:
            continue
        ratio = (f"{p['ratio']:.2f} {p['reference'].replace('Performance', 'Perf')}"
                 if p.get("ratio") is not None else "-")
        noop = (f"{p['ratio_vs_noop']:.2f} / {f(p.get('steady_ratio_vs_noop'), '.2f')}"
                + (f" / {p['committed_ratio_vs_noop']:.2f}"
                   if p.get("committed_ratio_vs_noop") is not None else "")
                if kind and p.get("ratio_vs_noop") is not None else "-")
        first = p.get("startup_s", p.get("first_record_s"))
        cpu = p.get("worker_cpu_s") if kind or key.startswith("noop") else p.get("cpu_s")
        out.append(f"| {label} | {p['wall_s']:.1f} | {p['records_per_s']:,.0f} | "
                   f"{p['mb_per_s']:.1f} | {ratio} | {noop} | {f(first, '.1f')} | "
                   f"{f(p.get('steady_records_per_s'), ',.0f')} | {f(cpu, '.1f')} |")
    return "\n".join(out)


def inprocess_table(ip: dict[str, Any]) -> str:
    """The in-process figures (`inprocess.py`, bench.py's first phases), one row per size."""
    out = [f"In-process (no Kafka), {ip['mib_per_case']} MiB per case, flush every "
           f"{ip['flush_mib']} MiB, load {ip['load_at_start'][0]} at the start:", "",
           "| record | sink, tmpfs (fsync excluded): MB/s, ns/record | put CPU MB/s | plain write "
           "to tmpfs MB/s | sink, disk, fsync every flush: MB/s | disk write + fdatasync MB/s "
           "| ratio | source: MB/s, ns/record |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for size, x in ip["sizes"].items():
        t, d, src = x["sink_tmpfs"], x["sink_disk_fsync"], x["source_disk"]
        ref = x["disk_fdatasync"]["mb_per_s"]
        out.append(f"| {size} B | {t['mb_per_s']:,.0f}, {t['ns_per_record']:,.0f} | "
                   f"{t['put_cpu_mb_per_s']:,.0f} | {x['tmpfs_write']['mb_per_s']:,.0f} | "
                   f"{d['mb_per_s']:,.0f} | {ref:,.0f} | {d['mb_per_s'] / ref:.2f} | "
                   f"{src['mb_per_s']:,.0f}, {src['ns_per_record']:,.0f} |")
    return "\n".join(out)


def main() -> int:
    R = json.load(open(sys.argv[1]))
    m = R["machine"]
    print(f"Command: see the run's `params` ({R['params']}), started {R['started_at']}, git "
          f"{m.get('git_head')}, {m.get('kbackup')}; machine {m['cpus']} x {m['cpu_model']}, "
          f"{m['mem_total_mib']} MiB, {m['java']}; load average at start {R['load_at_start']}, "
          f"at end {R['load_at_end']}; total {R['total_s']} s.\n")
    if R.get("inprocess"):
        print(inprocess_table(R["inprocess"]) + "\n")
    for size, S in R["sizes"].items():
        print(size_table(size, S) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
