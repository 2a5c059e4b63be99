"""A single-node KRaft broker (broker and controller in one JVM) on 127.0.0.1."""

from __future__ import annotations

import base64
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any, Optional

from testbed.jvm import JvmService, java_argv
from testbed.procs import Process, TestbedError, free_port, run
from testbed.tools import STORAGE_TOOL

KAFKA_MAIN = "kafka.Kafka"


class Broker(JvmService):
    """A single-node KRaft broker (broker+controller) on 127.0.0.1."""

    def __init__(self, root: Path, libs: Path, overrides: Optional[dict[str, Any]] = None,
                 die_with_parent: bool = True):
        self.root = root
        self.libs = libs
        self.dir = root / "broker"
        self.data_dir = self.dir / "data"
        self.log_file = self.dir / "broker.log"
        self.port = free_port()
        self.controller_port = free_port()
        self.overrides = overrides or {}
        self.die_with_parent = die_with_parent
        self.process: Optional[Process] = None
        self.started_once = False
        # testbed.security.Security: SASL and SSL listeners, SCRAM users, ACLs (None: PLAINTEXT)
        self.security: Any = None
        # Kafka's own form (base64url of a UUID), but never starting with "-": the storage
        # tool's argument parser would take such an id for an option (1 run in 64 failed).
        self.cluster_id = "k" + base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")[1:]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _config(self) -> dict[str, Any]:
        props: dict[str, Any] = {
            "process.roles": "broker,controller",
            "node.id": 1,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "log.dirs": str(self.data_dir),
            "num.partitions": 1,
            "default.replication.factor": 1,
            "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": 5,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "transaction.state.log.num.partitions": 5,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "group.initial.rebalance.delay.ms": 0,
            # tests create every topic on purpose; auto-creation would hide a restore that forgot to
            "auto.create.topics.enable": "false",
            "num.network.threads": 2,
            "num.io.threads": 4,
            "log.flush.interval.messages": None,
            # Fixtures carry timestamps from 2020-2022: with the 7-day default the retention check
            # (every 5 minutes) could delete a topic's first segment between produce and consume.
            # Tests that exercise retention set retention.ms on their topics.
            "log.retention.ms": -1,
        }
        if self.security is not None:
            props.update(self.security.broker_props(self.port, self.controller_port))
        props.update(self.overrides)
        return props

    def format(self) -> None:
        self._write_config("server.properties", self._config(), quiet=[
            "kafka.request.logger", "kafka.log.LogCleaner", "state.change.logger",
            "org.apache.kafka.storage.internals.log", "kafka.log",
        ])
        if (self.data_dir / "meta.properties").exists():
            return  # restart of a formatted broker
        argv = java_argv(self.libs, STORAGE_TOOL,
                         ["format", "--cluster-id", self.cluster_id, "--config",
                          str(self.props_file), "--standalone",
                          *(self.security.format_args() if self.security else [])],
                         heap="256m", log4j=self.log4j)
        proc = run(argv, stderr=subprocess.STDOUT, name="kafka-storage format")
        if proc.returncode != 0:
            raise TestbedError(f"formatting KRaft storage failed ({' '.join(argv)}):\n{proc.stdout}")

    def start(self, timeout: float = 90) -> None:
        super().start(timeout)

    def _new_ports(self) -> None:
        # the ports are in the formatted voter set, so a moved broker is formatted again
        self.port, self.controller_port = free_port(), free_port()
        if self.security is not None:
            self.security.new_ports()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def _start_once(self, timeout: float) -> None:
        if self.process and self.process.running():
            return
        self.format()
        self._launch("broker", KAFKA_MAIN, "broker.stdout", self._ready, timeout,
                     f"broker at {self.bootstrap}")

    def _ready(self) -> bool:
        from confluent_kafka.admin import AdminClient

        # log_level 0: "connection refused" while the broker boots is expected, not news
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 2000,
                             "log_level": 0})
        md = admin.list_topics(timeout=2)
        return bool(md.brokers)
