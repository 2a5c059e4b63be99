"""Metrics an on-call engineer can trust, read the way a monitoring system reads them.

Connector metrics are KIP-877 plugin metrics: they are read over JMX from the real worker with
Kafka's own JmxTool (a client we did not write), while a backup runs: the record counts match
what was produced, the lag falls to 0 when the backup caught up and rises while the connector
is paused and a producer writes. The restore's metrics count what was restored and say when it
finished.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from typing import Callable, Optional

import pytest
import yaml

from conftest import REPO, sink_config, unique
from fixtures import source_config
from testbed.procs import TestbedError, wait_until

JMX_TOOL = "org.apache.kafka.tools.JmxTool"
ALERTS = REPO / "docs" / "examples" / "kbackup-alerts.yml"
# Every metric family (`# TYPE` line) a CLI scrape in this module showed.
SCRAPED_FAMILIES: set[str] = set()


def read_jmx(cluster, connector: str) -> dict[tuple, dict[str, float]]:
    """Every plugin metric of `connector` as {(task, topic, partition): {name: value}}; topic and
    partition are None for task-level metrics."""
    proc = cluster.run_tool(JMX_TOOL, "--jmx-url", cluster.worker.jmx_url, "--object-name",
                            f"kafka.connect:type=plugins,connector={connector},*",
                            "--one-time", "true", "--report-format", "properties", timeout=60,
                            check=False)
    out: dict[tuple, dict[str, float]] = {}
    if proc.returncode != 0:  # no MBean of the connector (yet): JmxTool exits 1
        return {"error": {"jmxtool": proc.stderr[-300:]}}
    for line in proc.stdout.splitlines():
        if not line.startswith("kafka.connect:") or "=" not in line:
            continue
        key, value = line.rsplit("=", 1)
        name, attr = key.rsplit(":", 1)
        props = dict(kv.split("=", 1) for kv in name.split(":", 1)[1].split(","))
        part = props.get("partition")
        ident = (props["task"], props.get("topic"), None if part is None else int(part))
        out.setdefault(ident, {})[attr] = float(value)
    return out


def wait_jmx(cluster, connector: str, pred: Callable[[dict], bool], what: str,
             timeout: float = 90) -> dict:
    """Reads the connector's metrics until `pred` holds; the failure shows the last reading."""
    last: list[Optional[dict]] = [None]

    def check():
        last[0] = read_jmx(cluster, connector)
        return last[0] if pred(last[0]) else None

    try:
        return wait_until(check, timeout, what, interval=1.0)
    except TestbedError as e:
        raise AssertionError(f"{e}; last JMX reading: {last[0]}") from None


def test_connector_metrics_over_jmx_count_records_and_follow_the_lag_while_paused(cluster, workdir):
    topic = unique("metrics")
    cluster.kafka.create_topic(topic, 2)
    produced = cluster.kafka.produce(topic, [{"partition": i % 2, "value": b"v" * 100}
                                             for i in range(30)])
    assert len(produced) == 30
    group = unique("metrics-app")
    cluster.kafka.commit_group_offsets(group, {(topic, 0): 5, (topic, 1): 7})
    name = unique("sink-metrics")
    target = workdir / "backup"
    cluster.connect.create_connector(name, sink_config(
        topic, target, cluster.bootstrap, **{"consumer.offsets.sync.interval.ms": 1000}))
    try:
        cluster.connect.wait_for_task_state(name, "RUNNING")
        task, p0, p1 = ("0", None, None), ("0", topic, 0), ("0", topic, 1)

        def caught_up(m, records):
            return (m.get(task, {}).get("records-written") == records
                    and all(m.get(p, {}).get("lag-records") == 0 for p in (p0, p1)))

        m = wait_jmx(cluster, name, lambda m: caught_up(m, 30), "30 records written, lag 0")
        assert m[p0]["records-written"] == m[p1]["records-written"] == 15
        assert m[p0]["durable-offset"] == m[p1]["durable-offset"] == 14
        assert m[p0]["end-offset"] == 15 and m[p0]["lag-ms"] == 0
        assert m[task]["bytes-written"] >= 30 * 100
        assert m[task]["partitions"] == 2 and m[task]["errors"] == 0
        assert m[task]["flushes"] >= 1 and m[task]["fsync-avg-ms"] >= 0
        # the group-offset capture ran and saw the group
        m = wait_jmx(cluster, name, lambda m: m[task].get("groups-captured", 0) >= 1,
                     "a group-offset capture")
        assert m[task]["group-captures"] >= 1
        assert m[task]["group-capture-last-success-ms"] > time.time() * 1000 - 60_000

        cluster.connect.pause(name)
        cluster.connect.wait_for_task_state(name, "PAUSED")
        time.sleep(2)  # a put already in flight lands before the pause takes hold
        cluster.kafka.produce(topic, [{"partition": i % 2, "value": b"late"} for i in range(20)])
        t_paused = time.monotonic()
        m = wait_jmx(cluster, name,
                     lambda m: all(m.get(p, {}).get("lag-records") == 10 for p in (p0, p1)),
                     "lag of 10 records per partition while paused")
        assert m[task]["lag-records"] == 20 and m[task]["records-written"] == 30
        print(f"JMX lag visible {time.monotonic() - t_paused:.1f}s after the writes (paused)")
        time.sleep(1.5)
        m = read_jmx(cluster, name)
        assert m[p0]["lag-ms"] > 0 and m[task]["lag-ms"] >= m[p0]["lag-ms"], m

        cluster.connect.resume(name)
        t_resumed = time.monotonic()
        m = wait_jmx(cluster, name, lambda m: caught_up(m, 50), "caught up again after resume")
        print(f"JMX lag back to 0 {time.monotonic() - t_resumed:.1f}s after resume")
        assert m[p0]["durable-offset"] == m[p1]["durable-offset"] == 24
        assert m[task]["lag-ms"] == 0
    finally:
        cluster.connect.delete_connector(name)

    # The restore's metrics, from the backup just made, into a renamed topic.
    restored = unique("metrics-restored")
    rname = unique("source-metrics")
    cluster.connect.create_connector(rname, source_config(
        topic, target, cluster.bootstrap, **{"topics.rename": f"{topic}:{restored}"}))
    try:
        task = ("0", None, None)
        m = wait_jmx(cluster, rname, lambda m: m.get(task, {}).get("finished") == 1,
                     "the restore to finish")
        assert m[task]["records-restored"] == 50
        assert m[task]["partitions"] == m[task]["partitions-done"] == 2
        assert m[task]["bytes-restored"] == 30 * 100 + 20 * 4
        # the captured group, translated and committed on each of its two partitions
        assert (m[task]["groups-committed"], m[task]["groups-pending"]) == (2, 0), m[task]
        for p in (0, 1):
            pm = m[("0", topic, p)]
            assert (pm["records-restored"], pm["done"], pm["remaining-offsets"]) == (25, 1, 0), pm
            assert pm["acked-offset"] == pm["last-offset"] == 24
        assert sum(len(v) for v in cluster.kafka.consume_topic(restored).values()) == 50
    finally:
        cluster.connect.delete_connector(rname)


# ---------------------------------------------------------------------------------------------
# CLI: --metrics-addr


def scrape(port: int) -> Optional[dict[tuple, float]]:
    """The CLI's Prometheus page as {(name, topic, partition): value}, or None while nothing
    answers. Parsed by prometheus_client's own parser when installed, else line by line."""
    import requests

    try:
        r = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    except requests.ConnectionError:
        return None
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    out: dict[tuple, float] = {}
    for line in r.text.splitlines():
        if line.startswith("# TYPE "):
            SCRAPED_FAMILIES.add(line.split()[2])
        if not line or line.startswith("#"):
            continue
        name_labels, value = line.rsplit(" ", 1)
        labels: dict[str, str] = {}
        name = name_labels
        if "{" in name_labels:
            name, rest = name_labels.split("{", 1)
            for kv in rest.rstrip("}").split(","):
                k, v = kv.split("=", 1)
                labels[k] = v.strip('"')
        part = labels.get("partition")
        out[(name, labels.get("topic"), None if part is None else int(part))] = float(value)
    return out


def wait_scrape(port: int, proc, pred: Callable[[dict], bool], what: str, timeout: float = 60,
                interval: float = 0.5) -> dict:
    last: list[Optional[dict]] = [None]

    def check():
        if proc.poll() is not None:
            raise AssertionError(f"the CLI exited {proc.returncode} before {what}: "
                                 f"{proc.stderr.read()[-2000:]}")
        last[0] = scrape(port)
        return last[0] if last[0] is not None and pred(last[0]) else None

    try:
        return wait_until(check, timeout, what, interval=interval)
    except TestbedError as e:
        raise AssertionError(f"{e}; last scrape: {last[0]}") from None


def test_cli_metrics_addr_serves_backup_and_restore_figures(cluster, kbackup, workdir):
    import signal

    from testbed.procs import free_port

    topic = unique("cli-metrics")
    cluster.kafka.create_topic(topic, 2)
    n, size = 30000, 100  # enough for the restore to take several transactions (below)
    cluster.kafka.produce(topic, [{"partition": i % 2, "value": b"m" * size} for i in range(n)])
    target = workdir / "backup"
    port = free_port()
    backup = subprocess.Popen(
        [str(kbackup.path), "backup", "--bootstrap-server", cluster.bootstrap, "--dir", str(target),
         "--topics", topic, "--continuous", "--metrics-addr", f"127.0.0.1:{port}", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        half = n // 2

        def caught_up(m, ends):
            # Records count as written before the writer thread's fsync makes them durable, and
            # the end offsets are re-read now and then: lag 0 means caught up only once the end
            # offsets read are the real ones and the durable offsets reach them.
            return (m.get(("kbackup_sink_records_written_total", None, None)) == sum(ends)
                    and all(m.get(("kbackup_sink_partition_end_offset", topic, p)) == ends[p]
                            and m.get(("kbackup_sink_partition_durable_offset", topic, p))
                            == ends[p] - 1
                            and m.get(("kbackup_sink_partition_lag_records", topic, p)) == 0
                            for p in (0, 1)))

        m = wait_scrape(port, backup, lambda m: caught_up(m, (half, half)),
                        f"{n} records backed up, lag 0")
        for p in (0, 1):
            assert m[("kbackup_sink_partition_records_written_total", topic, p)] == half
            assert m[("kbackup_sink_partition_durable_offset", topic, p)] == half - 1
            assert m[("kbackup_sink_partition_end_offset", topic, p)] == half
            assert m[("kbackup_sink_partition_lag_seconds", topic, p)] == 0
        assert m[("kbackup_sink_bytes_written_total", None, None)] > n * size
        assert m[("kbackup_sink_lag_records", None, None)] == 0
        assert m[("kbackup_sink_partitions", None, None)] == 2
        assert m[("kbackup_sink_errors_total", None, None)] == 0
        assert m[("kbackup_sink_flushes_total", None, None)] >= 1

        cluster.kafka.produce(topic, [{"partition": 1, "value": b"late%d" % i} for i in range(10)])
        t_more = time.monotonic()
        m = wait_scrape(port, backup, lambda m: caught_up(m, (half, half + 10)),
                        "10 more backed up, lag 0")
        print(f"CLI lag back to 0 {time.monotonic() - t_more:.1f}s after 10 more records")
        assert m[("kbackup_sink_partition_durable_offset", topic, 1)] == half + 9
        backup.send_signal(signal.SIGTERM)
        assert backup.wait(30) == 0, backup.stderr.read()
    finally:
        if backup.poll() is None:
            backup.kill()
            backup.wait()

    # The restore, paced so it runs long enough to be scraped: one record per produce request
    # and one request in flight (some 12 s for 30,000 records when alone; the suite's load made
    # 15,000 finish before a scrape saw it in progress), and the page is renewed every 250 ms.
    # Records count as restored once their transaction commits: it ends after the first engine
    # batch (2000 records) that ends 2 s or more after it began.
    restored = unique("cli-metrics-restored")
    port = free_port()
    restore = subprocess.Popen(
        [str(kbackup.path), "restore", "--bootstrap-server", cluster.bootstrap, "--dir", str(target),
         "--topics", topic, "--rename", f"{topic}:{restored}",
         "--config", "batch.num.messages=1", "--config", "max.in.flight.requests.per.connection=1",
         "--metrics-addr", f"127.0.0.1:{port}", "--json-progress", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    total = n + 10
    seen: list[dict] = []
    try:
        def in_progress(m):
            seen.append(m)
            return 0 < m.get(("kbackup_source_records_restored_total", None, None), 0) < total

        m = wait_scrape(port, restore, in_progress, "a restore in progress", interval=0.1)
        assert m[("kbackup_source_finished", None, None)] == 0
        assert m[("kbackup_source_partitions", None, None)] == 2
        done = m[("kbackup_source_records_restored_total", None, None)]
        assert done % 2000 == 0, "records count once their transaction committed"
        parts = {p: m[("kbackup_source_partition_records_restored_total", topic, p)] for p in (0, 1)}
        assert sum(parts.values()) == done
        remaining = {p: m[("kbackup_source_partition_remaining_offsets", topic, p)] for p in (0, 1)}
        last = {p: m[("kbackup_source_partition_last_offset", topic, p)] for p in (0, 1)}
        assert last == {0: n // 2 - 1, 1: n // 2 + 9}
        for p in (0, 1):  # no gaps in the offsets: remaining = records not yet acknowledged
            assert remaining[p] == last[p] + 1 - parts[p], (remaining, parts)
        assert m[("kbackup_source_bytes_restored_total", None, None)] >= done * size
        out, err = restore.communicate(timeout=120)
        assert restore.returncode == 0, err
    finally:
        if restore.poll() is None:
            restore.kill()
            restore.wait()
    counts = [s.get(("kbackup_source_records_restored_total", None, None), 0) for s in seen]
    assert counts == sorted(counts), f"restored count went down: {counts}"
    # --json-progress: one JSON object per line, progress events, then the summary
    events = [json.loads(line) for line in out.splitlines()]
    progress = [e for e in events if e["event"] == "progress"]
    summary = events[-1]
    assert summary["event"] == "summary" and all(e["event"] == "progress" for e in events[:-1])
    assert progress and progress[-1]["done"] == total and progress[-1]["total"] == total
    assert [e["done"] for e in progress] == sorted(e["done"] for e in progress)
    assert summary["finished"] and summary["records_sent"] == total
    assert sum(len(v) for v in cluster.kafka.consume_topic(restored).values()) == total
    check_alert_rules_name_exported_metrics(SCRAPED_FAMILIES)


def check_alert_rules_name_exported_metrics(families: set[str]) -> None:
    """docs/examples/kbackup-alerts.yml parses as Prometheus rule groups, and every kbackup_*
    name its expressions use is one the CLI exported in the scrapes above."""
    doc = yaml.safe_load(ALERTS.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert len(rules) >= 8
    used: set[str] = set()
    for r in rules:
        assert r["alert"].startswith("Kbackup") and r["labels"]["severity"] in ("page", "warning")
        assert r["annotations"]["summary"] and r["annotations"]["description"]
        used |= set(re.findall(r"\bkbackup_[a-z0-9_]+", r["expr"]))
    assert {"kbackup_sink_partition_lag_seconds", "kbackup_source_finished"} <= used
    assert any(f.startswith("kbackup_sink_") for f in families), families
    assert any(f.startswith("kbackup_source_") for f in families), families
    unknown = sorted(used - families)
    assert not unknown, f"alert rules use metrics the CLI does not export: {unknown}"


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool not installed (Debian: apt-get install prometheus); the "
                           "rules are still parsed and name-checked by the CLI metrics test")
def test_alert_rules_pass_promtool_check_and_unit_tests():
    for args in (["check", "rules", ALERTS.name], ["test", "rules", "kbackup-alerts.test.yml"]):
        proc = subprocess.run(["promtool", *args], cwd=ALERTS.parent, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, f"promtool {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
