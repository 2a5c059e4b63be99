"""`python tests/testbed up|down|status` (or `python -m testbed ...` from tests/): a bed for
demos, benchmarks and debugging, in the foreground or detached."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):  # run as `python tests/testbed`: make `testbed` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testbed.cluster import (  # noqa: E402
    DEFAULT_PLUGIN_PATH,
    DEFAULT_WORK,
    STATE_FILE_NAME,
    Cluster,
    run_id,
)
from testbed.procs import cmdline, pid_alive, stop_pid_group  # noqa: E402

# --------------------------------------------------------------------------------------------
# Command line: up (foreground or --detach), down, status


def _find_states(work: Path, detached_only: bool = False) -> list[Path]:
    # `down` only touches beds made by `up --detach`: a running test session's beds are its own
    return sorted(work.glob(f"{'detached-' if detached_only else ''}*/*/{STATE_FILE_NAME}"))


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
                    work_dir=work / (run_id() if not args.detach else f"detached-{run_id()}"),
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
                    p.forget()
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
                stop_pid_group(pid, state["root"])
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
            alive = [p for p in state.get("pids", []) if pid_alive(p) and state["root"] in cmdline(p)]
            print(json.dumps({**state, "alive_pids": alive}))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
