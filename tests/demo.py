#!/usr/bin/env python3
"""`make demo`: the whole kbackup story on a real Kafka 4.3.1 + Connect, without Docker.

1. A source cluster gets a topic with keys, headers and a transaction (one aborted), and a
   consumer group that has read part of it.
2. The BackupSinkConnector backs the topic and the group's position up to plain files.
3. The source cluster is destroyed.
4. A NEW cluster gets the BackupSourceConnector: the topic comes back, and the group's offset
   is translated to the new offsets, so the group resumes at the first record it had not read.
Everything the demo starts is stopped at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from testbed.cluster import Cluster  # noqa: E402
from testbed.connect import BYTE_ARRAY_CONVERTER  # noqa: E402
from testbed.procs import wait_until  # noqa: E402
from testbed.tools import CONSUMER_GROUPS  # noqa: E402

KBACKUP = REPO / "dist" / "kbackup"
TOPIC, GROUP, PARTITIONS = "orders", "billing", 3
CONVERTERS = {f"{k}.converter": BYTE_ARRAY_CONVERTER for k in ("key", "value", "header")}


def step(msg: str) -> None:
    print(f"\n== {msg}", flush=True)


def kbackup(*args: str) -> str:
    out = subprocess.run([str(KBACKUP), *args], check=True, capture_output=True, text=True).stdout
    return out


def main() -> int:
    backup_dir = Path(tempfile.mkdtemp(prefix="kbackup-demo-")) / "backup"
    source = Cluster("demo-source", plugin_path=REPO / "dist")
    target = Cluster("demo-target", plugin_path=REPO / "dist")
    try:
        step("start a Kafka 4.3.1 broker and a Connect worker (the source cluster)")
        source.start()
        k = source.kafka
        k.create_topic(TOPIC, partitions=PARTITIONS)
        step("produce 300 orders with keys and headers, then a committed and an aborted transaction")
        k.produce(TOPIC, ({"partition": i % PARTITIONS, "key": f"customer-{i % 7}".encode(),
                           "value": f"order-{i}".encode(), "headers": [("source", b"web")]}
                          for i in range(300)))
        k.produce_transaction(TOPIC, [{"partition": p, "value": f"tx-ok-{p}".encode()}
                                      for p in range(PARTITIONS)])
        k.produce_transaction(TOPIC, [{"partition": p, "value": f"tx-aborted-{p}".encode()}
                                      for p in range(PARTITIONS)], abort=True)
        k.produce(TOPIC, ({"partition": i % PARTITIONS, "value": f"late-order-{i}".encode()}
                          for i in range(30)))
        ends = {p: k.watermarks(TOPIC, p)[1] for p in range(PARTITIONS)}
        # The group stands behind the transactions: its offset must shift on restore, since
        # the aborted records and the transaction markers are not restored.
        pos = {(TOPIC, p): ends[p] - 5 for p in range(PARTITIONS)}
        k.commit_group_offsets(GROUP, pos)
        print(f"group {GROUP!r} has read up to {dict((p, o) for (_, p), o in pos.items())} "
              f"of log ends {ends}")

        step("POST the backup connector")
        source.connect.create_connector("backup-orders", {
            "connector.class": "io.kbackup.connect.BackupSinkConnector",
            "topics": TOPIC, "target.dir": str(backup_dir), "tasks.max": "2",
            "cluster.bootstrap.servers": source.bootstrap,
            "consumer.override.isolation.level": "read_committed",
            "consumer.offsets.sync.interval.ms": "1000", **CONVERTERS})
        expected = 300 + PARTITIONS + 30  # the aborted transaction is not backed up

        def backed_up() -> bool:
            try:
                s = json.loads(kbackup("inspect", str(backup_dir), "--json"))
            except subprocess.CalledProcessError:
                return False
            total = sum(p.get("records", 0) for t in s.get("topics", [])
                        for p in t.get("partitions", []))
            groups = json.loads(kbackup("offsets", str(backup_dir), "--json"))
            return total >= expected and GROUP in json.dumps(groups)

        wait_until(backed_up, 120, "backup of every record and the group's offsets")
        print(kbackup("inspect", str(backup_dir)))
        print(kbackup("offsets", str(backup_dir)))
        source.connect.delete_connector("backup-orders")

        step("the source cluster is lost")
        source.destroy()

        step("start a NEW broker and worker, and POST the restore connector")
        target.start()
        target.connect.create_connector("restore-orders", {
            "connector.class": "io.kbackup.connect.BackupSourceConnector",
            "source.dir": str(backup_dir), "topics": TOPIC, "tasks.max": "2",
            "cluster.bootstrap.servers": target.bootstrap, **CONVERTERS})

        def restored() -> bool:
            try:
                st = json.loads(kbackup("restore-status", str(backup_dir), "--json"))
            except subprocess.CalledProcessError:
                return False
            restores = st.get("restores", [])
            return bool(restores) and all(r["status"]["finished"] for r in restores)

        wait_until(restored, 180, "restore of every record and the group's translated offsets")
        print(kbackup("restore-status", str(backup_dir)))

        step("Kafka's own kafka-consumer-groups on the NEW cluster")
        print(target.run_tool(CONSUMER_GROUPS, "--bootstrap-server", target.bootstrap,
                              "--describe", "--group", GROUP).stdout)
        step(f"group {GROUP!r} resumes where it stood: the first records it reads per partition")
        for p in range(PARTITIONS):
            off = target.kafka.group_offsets(GROUP)[(TOPIC, p)]
            recs = target.kafka.consume_partition(TOPIC, p, start=off)
            print(f"partition {p}: resumes at new offset {off}: "
                  f"{[r.value.decode() for r in recs[:3]]} ... ({len(recs)} records left)")
        print("\nDemo finished: the topic and the group's position survived the loss of the cluster.")
        return 0
    finally:
        target.cleanup()
        source.cleanup()


if __name__ == "__main__":
    sys.exit(main())
