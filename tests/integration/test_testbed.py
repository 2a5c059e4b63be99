"""The test bed itself: a real broker and Connect worker that answer, Kafka's own tools that
run against them, and no JVM left behind however the Python side ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import unique
from testbed.connect import BYTE_ARRAY_CONVERTER
from testbed.procs import pid_alive, wait_until
from testbed.tools import (
    CONSOLE_CONSUMER,
    CONSUMER_GROUPS,
    CONSUMER_PERF,
    DELETE_RECORDS,
    PRODUCER_PERF,
)

TESTS = Path(__file__).resolve().parents[1]


def test_produce_then_read_back_with_kafka_console_consumer(cluster):
    topic = unique("bed-console")
    cluster.kafka.create_topic(topic, partitions=2)
    sent = [{"partition": i % 2, "key": f"k{i}".encode(), "value": f"v{i}".encode(),
             "headers": [("h", f"{i}".encode()), ("h", None)], "timestamp": 1_700_000_000_000 + i}
            for i in range(10)]
    delivered = cluster.kafka.produce(topic, sent)
    assert [d["partition"] for d in delivered] == [i % 2 for i in range(10)]

    out = cluster.run_tool(
        CONSOLE_CONSUMER, "--bootstrap-server", cluster.bootstrap, "--topic", topic,
        "--from-beginning", "--max-messages", "10", "--timeout-ms", "30000",
        "--formatter-property", "print.partition=true",
        "--formatter-property", "print.offset=true",
        "--formatter-property", "print.key=true",
        "--formatter-property", "print.headers=true",
        "--formatter-property", "print.timestamp=true",
    ).stdout
    got = set()
    for line in out.strip().splitlines():
        ts, part, off, headers, key, value = line.split("\t")
        got.add((ts, part, off, headers, key, value))
    want = set()
    offsets = {0: 0, 1: 0}
    for i, r in enumerate(sent):
        p = r["partition"]
        want.add((f"CreateTime:{r['timestamp']}", f"Partition:{p}", f"Offset:{offsets[p]}",
                  f"h:{i},h:null", f"k{i}", f"v{i}"))
        offsets[p] += 1
    assert got == want

    # confluent-kafka reads the same records back, headers in order with the null kept
    back = cluster.kafka.consume_partition(topic, 1)
    assert [(r.key, r.value, r.headers, r.timestamp, r.timestamp_type) for r in back] == [
        (s["key"], s["value"], s["headers"], s["timestamp"], "CreateTime")
        for s in sent if s["partition"] == 1]


def test_worker_answers_and_lists_plugins(cluster):
    plugins = cluster.connect.plugins()
    classes = {p["class"] for p in plugins}
    assert BYTE_ARRAY_CONVERTER in classes, sorted(classes)
    assert cluster.connect.connectors() == [] or isinstance(cluster.connect.connectors(), list)
    info = cluster.connect.request("GET", "/")
    assert info["version"] == "4.3.1"


def test_kafka_tools_run_by_main_class(cluster, tmp_path):
    topic = unique("bed-tools")
    cluster.kafka.create_topic(topic, partitions=1)
    cluster.kafka.produce(topic, [{"value": b"x%d" % i} for i in range(20)])

    # DeleteRecordsCommand moves the log start offset
    spec = tmp_path / "delete.json"
    spec.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": topic, "partition": 0, "offset": 5}]}))
    cluster.run_tool(DELETE_RECORDS, "--bootstrap-server", cluster.bootstrap,
                     "--offset-json-file", str(spec))
    assert cluster.kafka.watermarks(topic, 0) == (5, 20)

    # ConsumerGroupCommand shows an offset committed through confluent-kafka
    group = unique("bed-group")
    cluster.kafka.commit_group_offsets(group, {(topic, 0): 12})
    assert cluster.kafka.wait_for_group_offsets(group, {(topic, 0): 12}) == {(topic, 0): 12}
    out = cluster.run_tool(CONSUMER_GROUPS, "--bootstrap-server", cluster.bootstrap,
                           "--describe", "--group", group).stdout
    row = [line.split() for line in out.splitlines() if topic in line]
    assert row and row[0][:5] == [group, topic, "0", "12", "20"], out

    # the perf tools later benchmarks use
    perf_topic = unique("bed-perf")
    cluster.kafka.create_topic(perf_topic, partitions=1)
    out = cluster.run_tool(PRODUCER_PERF, "--topic", perf_topic, "--num-records", "200",
                           "--record-size", "100", "--throughput", "-1", "--command-property",
                           f"bootstrap.servers={cluster.bootstrap}").stdout
    assert "200 records sent" in out, out
    out = cluster.run_tool(CONSUMER_PERF, "--bootstrap-server", cluster.bootstrap,
                           "--topic", perf_topic, "--messages", "200").stdout
    assert out.strip().splitlines()[-1].split(",")[-1].strip() != "", out


def test_kill_restart_and_destroy(new_cluster):
    c = new_cluster("killable")
    url = c.worker.url
    old_pid = c.worker.process.pid
    c.kill_worker()
    assert not pid_alive(old_pid)
    c.restart_worker()
    assert c.worker.url == url and c.worker.process.pid != old_pid
    assert isinstance(c.connect.connectors(), list)
    pids = c.pids()
    c.destroy()
    assert not c.broker.data_dir.exists()
    assert not any(pid_alive(p) for p in pids)


def test_ports_taken_before_the_bind_are_replaced(tmp_path):
    """free_port() can race with other programs: a fresh broker/worker moves to new ports."""
    import socket

    from testbed.cluster import Cluster

    held = []
    for _ in range(3):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        held.append(s)
    c = Cluster("portrace", work_dir=tmp_path, plugin_path=tmp_path)
    c.broker.port = held[0].getsockname()[1]
    c.worker.rest_port = held[1].getsockname()[1]
    c.worker.jmx_port = held[2].getsockname()[1]
    try:
        c.start()
        assert c.broker.port != held[0].getsockname()[1]
        assert c.worker.rest_port != held[1].getsockname()[1]
        assert c.worker.jmx_port != held[2].getsockname()[1]
        assert c.worker.bootstrap == c.bootstrap
        assert isinstance(c.connect.connectors(), list)
        c.kafka.create_topic(unique("moved"), 1)
    finally:
        c.cleanup()
        for s in held:
            s.close()


_CHILD = """
import json, os, sys, time
sys.path.insert(0, {tests!r})
from testbed.cluster import Cluster
c = Cluster("child", work_dir={work!r}, with_worker={worker})
c.start()
print(json.dumps(c.pids()), flush=True)
if {mode!r} == "exit":
    sys.exit(0)          # no cleanup call: atexit must stop the JVMs
time.sleep(600)          # wait to be signalled
"""


@pytest.mark.parametrize("mode,worker", [("exit", True), ("SIGTERM", False), ("SIGKILL", False)])
def test_no_jvm_outlives_its_python(tmp_path, mode, worker):
    """Whether the Python that started the bed exits normally, is terminated or is killed
    outright, every JVM it started goes away."""
    code = _CHILD.format(tests=str(TESTS), work=str(tmp_path), worker=worker, mode=mode)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    pids: list[int] = []
    try:
        line = child.stdout.readline()
        assert line, f"child failed to start a bed: {child.stderr.read()[-3000:]}"
        pids = json.loads(line)
        assert len(pids) == (2 if worker else 1)
        assert all(pid_alive(p) for p in pids)
        if mode != "exit":
            os.kill(child.pid, getattr(signal, mode))
        child.wait(timeout=60)
        wait_until(lambda: not any(pid_alive(p) for p in pids), 45,
                   f"JVMs {pids} to exit after the child's {mode}")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for p in pids:  # only our own child's JVMs, and only if the assertion above failed
            if pid_alive(p):
                os.killpg(p, signal.SIGKILL)
