"""Fixture data and restore helpers shared by the sink, source and group-offset tests.

Why a module of its own: the restore tests must back up exactly the records the backup tests
check (the "issue 2 fixture"), and several test modules wait for a restore the same way
(`kbackup restore-status --json`, failing at once when a task FAILED). Fixtures that start
processes stay in tests/conftest.py; this file only builds data and polls.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any, Iterable, Optional

from testbed.clients import Record
from testbed.connect import BYTE_ARRAY_CONVERTER, ConnectError, ConnectRest
from testbed.procs import wait_until

SOURCE = "io.kbackup.connect.BackupSourceConnector"
MIB = 1024 * 1024
CREATE_TS_BASE = 1_600_000_000_000  # explicit CreateTime timestamps, far from "now"


def fixture_records(partition: int, big: bool) -> list[dict[str, Any]]:
    """Every shape of record the backup must keep apart, for one partition: null key, null
    value, both null, empty (not null) key and value, binary bytes, duplicate/null/binary/
    non-ASCII headers, optionally one 1 MiB value, and explicit CreateTime timestamps.

    Same data as test_sink.py's builder of the same name, so a backup made by either module
    is the issue-2 fixture."""
    rnd = random.Random(1000 + partition)
    recs: list[dict[str, Any]] = [
        {"key": None, "value": b"null key %d" % partition},
        {"key": b"null value", "value": None},
        {"key": None, "value": None},
        {"key": b"", "value": b""},                                   # empty, not null
        {"key": bytes(range(256)), "value": bytes(rnd.randrange(256) for _ in range(3000))},
        {"key": b"\x00", "value": b"\x00\xff\x00",
         "headers": [("dup", b"1"), ("dup", None), ("dup", b""), ("bin", b"\x00\xff\x80"),
                     ("dup", b"2"), ("\u043a\u043b\u044e\u0447", "\u0437\u043d\u0430\u0447".encode())]},
        {"key": b"only-null-header", "value": b"v", "headers": [("n", None)]},
    ]
    if big:
        recs.append({"key": b"one MiB", "value": rnd.randbytes(MIB)})
    recs += [{"key": b"k%d" % (i % 7), "value": b"value %d/%d" % (partition, i)} for i in range(40)]
    for i, r in enumerate(recs):
        r["partition"] = partition
        r["timestamp"] = CREATE_TS_BASE + partition * 100_000 + i * 7
        r.setdefault("headers", [])
    return recs


def config_with(base: dict[str, Any], **kv: Any) -> dict[str, Any]:
    """A copy of a connector config with keys set (`a__b=v` sets `a.b`) or removed (`=None`)."""
    c = dict(base)
    for key, v in kv.items():
        key = key.replace("__", ".")
        if v is None:
            c.pop(key, None)
        else:
            c[key] = v
    return c


def source_config(topics: str, source_dir: Path, bootstrap: str, **extra: Any) -> dict[str, Any]:
    """A BackupSourceConnector (restore) config as docs/config-source.md tells users to write it.
    Records above 1 MiB need a larger producer request size (docs/restore.md), so it is raised."""
    cfg: dict[str, Any] = {
        "connector.class": SOURCE,
        "tasks.max": 1,
        "topics": topics,
        "source.dir": str(source_dir),
        "cluster.bootstrap.servers": bootstrap,
        "key.converter": BYTE_ARRAY_CONVERTER,
        "value.converter": BYTE_ARRAY_CONVERTER,
        "header.converter": BYTE_ARRAY_CONVERTER,
        "producer.override.max.request.size": 8 * MIB,
    }
    cfg.update(extra)
    return cfg


def restore_status(kb, source_dir: Path, state_dir: Optional[Path] = None) -> Optional[dict]:
    """`kbackup restore-status DIR [--state-dir D] --json` parsed, or None while it fails
    (e.g. no state written yet)."""
    args = ["restore-status", source_dir]
    if state_dir is not None:
        args += ["--state-dir", state_dir]
    proc = kb.run(*args, "--json", check=False)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout)


def status_of(doc: Optional[dict], connector: str) -> Optional[dict]:
    """The `status` object of the restore named `connector` in a restore-status document."""
    for r in (doc or {}).get("restores", []):
        if r["status"].get("connector_name") == connector:
            return r["status"]
    return None


def _raise_if_failed(connect: ConnectRest, name: str) -> None:
    try:
        st = connect.status(name)
    except ConnectError as e:
        if e.status == 404:
            return
        raise
    if st["connector"]["state"] == "FAILED":
        raise AssertionError(f"connector {name} FAILED: {st['connector'].get('trace', '')[:4000]}")
    for t in st.get("tasks", []):
        if t["state"] == "FAILED":
            raise AssertionError(f"task {name}-{t['id']} FAILED: {t.get('trace', '')[:4000]}")


def wait_restore_finished(kb, source_dir: Path, connect: ConnectRest, name: str,
                          expected: Iterable[tuple[str, int]], state_dir: Optional[Path] = None,
                          timeout: float = 180) -> dict:
    """Polls restore-status until the restore `name` reports finished with every expected
    (original topic, partition) present and done; fails at once if a task FAILED.
    Returns the restore's status object."""
    want = set(expected)
    deadline = time.monotonic() + timeout
    last: Optional[dict] = None
    while True:
        _raise_if_failed(connect, name)
        st = status_of(restore_status(kb, source_dir, state_dir), name)
        if st is not None:
            last = st
            parts = {(p["topic"], p["partition"]): p for p in st["partitions"]}
            if st["finished"] and want <= set(parts):
                assert all(parts[tp]["done"] for tp in want), st
                return st
        if time.monotonic() > deadline:
            summary = None if last is None else {
                "finished": last["finished"],
                "partitions": [(p["topic"], p["partition"], p["records_restored"], p["done"])
                               for p in last["partitions"]]}
            raise AssertionError(f"restore {name} did not finish in {timeout:.0f}s; expected "
                                 f"partitions {sorted(want)}; last restore-status: {summary}")
        time.sleep(1.0)


def same_record(got: Record, want: Record, check_ts_type: bool = True) -> list[str]:
    """The fields of a restored record that differ from the original (offset excluded: the
    restore gives new offsets)."""
    diffs = []
    for f in ("partition", "key", "value", "headers", "timestamp"):
        if getattr(got, f) != getattr(want, f):
            diffs.append(f)
    if check_ts_type and got.timestamp_type != want.timestamp_type:
        diffs.append("timestamp_type")
    return diffs


def assert_restored_equal(got: list[Record], want: list[Record], where: str,
                          check_ts_type: bool = True) -> None:
    """Same records, same order, field by field; the message names the first difference."""
    def short(v):
        s = repr(v)
        return s if len(s) <= 160 else s[:160] + f"...({len(s)} chars)"

    for i, (g, w) in enumerate(zip(got, want)):
        diffs = same_record(g, w, check_ts_type)
        if diffs:
            raise AssertionError(
                f"{where}: restored record #{i} (original offset {w.offset}, new offset "
                f"{g.offset}) differs in {diffs}: "
                + "; ".join(f"{f}: got {short(getattr(g, f))} want {short(getattr(w, f))}"
                            for f in diffs))
    assert len(got) == len(want), (f"{where}: {len(got)} records restored, {len(want)} backed "
                                   f"up; first extra/missing: "
                                   f"{(got[len(want):] or want[len(got):])[:2]}")


def captured_offsets(kb, backup: Path, group: str) -> dict[tuple[str, int], int]:
    """{(topic, partition): offset} of `group` in the backup's offsets logs (`kbackup offsets`)."""
    out = json.loads(kb.run("offsets", backup, "--json").stdout)["offsets"]
    return {(o["topic"], o["partition"]): o["committed_offset"]
            for o in out if o["group"] == group}


def wait_captured(kb, backup: Path, group: str, want: dict[tuple[str, int], int],
                  timeout: float = 60) -> None:
    """Waits until the backup holds exactly `want` as `group`'s captured positions."""
    wait_until(lambda: captured_offsets(kb, backup, group) == want, timeout,
               f"group {group} captured at {want}")


def wait_committed(kafka, group: str, want: dict[tuple[str, int], int],
                   timeout: float = 60) -> None:
    """Waits until `group`'s committed offsets on the cluster of `kafka` include `want`."""
    def check():
        got = kafka.group_offsets(group)
        return all(tp in got for tp in want) and got
    got = wait_until(check, timeout, f"group {group} committed")
    assert {tp: got[tp] for tp in want} == want, got
