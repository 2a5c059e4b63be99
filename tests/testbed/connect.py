"""Kafka Connect for the bed: a distributed-mode worker JVM and a client for its REST API."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Optional

from testbed.jvm import JvmService, jmx_flags
from testbed.procs import Process, TestbedError, free_port, wait_until

CONNECT_DISTRIBUTED = "org.apache.kafka.connect.cli.ConnectDistributed"
BYTE_ARRAY_CONVERTER = "org.apache.kafka.connect.converters.ByteArrayConverter"


class ConnectWorker(JvmService):
    """A distributed-mode Connect worker with its own group and internal topics."""

    def __init__(self, root: Path, libs: Path, bootstrap: str, plugin_path: Path,
                 exactly_once: bool = False, overrides: Optional[dict[str, Any]] = None,
                 name: str = "worker", die_with_parent: bool = True,
                 env: Optional[dict[str, str]] = None):
        self.root = root
        self.env = env
        self.libs = libs
        self.name = name
        self.dir = root / name
        self.log_file = self.dir / "connect.log"
        self.bootstrap = bootstrap
        self.plugin_path = Path(plugin_path)
        self.rest_port = free_port()
        # JMX on loopback, no auth/TLS: tests read the plugin metrics with Kafka's JmxTool.
        self.jmx_port = free_port()
        self.exactly_once = exactly_once
        self.overrides = overrides or {}
        self.die_with_parent = die_with_parent
        self.group_id = f"connect-{uuid.uuid4().hex[:10]}"
        self.process: Optional[Process] = None
        self.started_once = False
        self.rest = ConnectRest(self.url)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def _config(self) -> dict[str, Any]:
        g = self.group_id
        props: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "group.id": g,
            "config.storage.topic": f"{g}-configs",
            "offset.storage.topic": f"{g}-offsets",
            "status.storage.topic": f"{g}-status",
            "config.storage.replication.factor": 1,
            "offset.storage.replication.factor": 1,
            "status.storage.replication.factor": 1,
            "offset.storage.partitions": 3,
            "status.storage.partitions": 1,
            "key.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "offset.flush.interval.ms": 2000,
            "listeners": f"http://127.0.0.1:{self.rest_port}",
            "rest.advertised.host.name": "127.0.0.1",
            "rest.advertised.port": self.rest_port,
            "plugin.path": str(self.plugin_path),
            "connector.client.config.override.policy": "All",
            # a crashed worker's tasks go back to the restarted one at once, not after 5 minutes
            "scheduled.rebalance.max.delay.ms": 0,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
            "task.shutdown.graceful.timeout.ms": 10000,
        }
        if self.exactly_once:
            props["exactly.once.source.support"] = "enabled"
        props.update(self.overrides)
        return props

    def start(self, timeout: float = 120) -> None:
        super().start(timeout)

    def _new_ports(self) -> None:
        self.rest_port = free_port()
        self.jmx_port = free_port()
        self.rest = ConnectRest(self.url)

    @property
    def jmx_url(self) -> str:
        return f"service:jmx:rmi:///jndi/rmi://127.0.0.1:{self.jmx_port}/jmxrmi"

    def _start_once(self, timeout: float) -> None:
        if self.process and self.process.running():
            return
        self._write_config("connect-distributed.properties", self._config(), quiet=[
            "org.apache.kafka.clients", "org.apache.kafka.common", "org.reflections",
            "org.eclipse.jetty", "org.glassfish", "org.apache.kafka.connect.runtime.isolation",
        ])
        self._launch(self.name, CONNECT_DISTRIBUTED, "connect.stdout", self._ready, timeout,
                     f"Connect worker REST at {self.url}", extra_jvm=jmx_flags(self.jmx_port))

    def _ready(self) -> bool:
        import requests

        plugins = requests.get(f"{self.url}/connector-plugins", timeout=2)
        if plugins.status_code != 200:
            return False
        # /connectors goes through the herder: it answers once the worker has joined its group
        return requests.get(f"{self.url}/connectors", timeout=5).status_code == 200


# --------------------------------------------------------------------------------------------
# Connect REST client


class ConnectError(RuntimeError):
    """A Connect REST call answered with an unexpected status."""

    def __init__(self, method: str, url: str, status: int, body: str):
        super().__init__(f"{method} {url} -> {status}: {body}")
        self.status = status
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


class ConnectRest:
    """Thin client for the Connect REST API (raises ConnectError on unexpected status)."""

    def __init__(self, url: str):
        self.url = url

    def request(self, method: str, path: str, body: Any = None, ok: Iterable[int] = (200, 201, 202, 204),
                retry_conflict: float = 60) -> Any:
        """Calls the API; retries 409 (rebalance in progress) and connection errors for a while."""
        import requests

        url = f"{self.url}{path}"
        deadline = time.monotonic() + retry_conflict
        while True:
            try:
                r = requests.request(method, url, json=body, timeout=60)
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
                continue
            if r.status_code == 409 and time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            if r.status_code not in ok:
                raise ConnectError(method, url, r.status_code, r.text)
            if not r.text:
                return None
            try:
                return r.json()
            except ValueError:
                return r.text

    def plugins(self) -> list[dict]:
        return self.request("GET", "/connector-plugins?connectorsOnly=false")

    def connectors(self) -> list[str]:
        return self.request("GET", "/connectors")

    def create_connector(self, name: str, config: dict[str, Any]) -> Any:
        """POST /connectors; raises ConnectError (status 400 for invalid config)."""
        return self.request("POST", "/connectors", {"name": name, "config": _strs(config)})

    def put_config(self, name: str, config: dict[str, Any]) -> Any:
        return self.request("PUT", f"/connectors/{name}/config", _strs(config))

    def get_config(self, name: str) -> dict[str, str]:
        return self.request("GET", f"/connectors/{name}/config")

    def validate(self, plugin_class: str, config: dict[str, Any],
                 name: Optional[str] = "validate-only") -> dict:
        """PUT /connector-plugins/<class>/config/validate; the parsed response. Connect
        demands a `name` like a real create does; pass name=None to leave it out."""
        cfg = dict(_strs(config))
        cfg.setdefault("connector.class", plugin_class)
        if name is not None:
            cfg.setdefault("name", name)
        short = plugin_class.rsplit(".", 1)[-1]
        return self.request("PUT", f"/connector-plugins/{short}/config/validate", cfg)

    def status(self, name: str) -> dict:
        return self.request("GET", f"/connectors/{name}/status")

    def tasks(self, name: str) -> list[dict]:
        return self.request("GET", f"/connectors/{name}/tasks")

    def delete_connector(self, name: str) -> None:
        self.request("DELETE", f"/connectors/{name}", ok=(200, 204, 404))

    def pause(self, name: str) -> None:
        self.request("PUT", f"/connectors/{name}/pause")

    def resume(self, name: str) -> None:
        self.request("PUT", f"/connectors/{name}/resume")

    def restart(self, name: str, include_tasks: bool = True, only_failed: bool = False) -> None:
        self.request("POST", f"/connectors/{name}/restart?includeTasks={str(include_tasks).lower()}"
                             f"&onlyFailed={str(only_failed).lower()}")

    def offsets(self, name: str) -> dict:
        return self.request("GET", f"/connectors/{name}/offsets")

    def wait_for_task_state(self, name: str, state: str = "RUNNING", count: Optional[int] = None,
                            timeout: float = 60) -> dict:
        """Waits until the connector and all its tasks (and at least `count` of them) are in
        `state`. A FAILED task while waiting for anything else raises at once with its trace."""

        def check() -> Optional[dict]:
            try:
                st = self.status(name)
            except ConnectError as e:
                if e.status == 404:
                    return None
                raise
            tasks = st.get("tasks", [])
            for t in tasks:
                if t["state"] == "FAILED" and state != "FAILED":
                    raise TestbedError(f"task {name}-{t['id']} FAILED: {t.get('trace', '')[:4000]}")
            if st["connector"]["state"] == "FAILED" and state != "FAILED":
                raise TestbedError(f"connector {name} FAILED: {st['connector'].get('trace', '')[:4000]}")
            want = count if count is not None else 1
            if len(tasks) >= want and all(t["state"] == state for t in tasks) \
                    and (state == "FAILED" or st["connector"]["state"] == state):
                return st
            return None

        return wait_until(check, timeout, f"connector {name} tasks to be {state}", interval=0.5)

    def wait_deleted(self, name: str, timeout: float = 30) -> None:
        wait_until(lambda: name not in self.connectors(), timeout, f"connector {name} to be gone")


def validation_errors(response: dict) -> dict[str, list[str]]:
    """{config name: [errors]} for every config with errors in a validate response."""
    out: dict[str, list[str]] = {}
    for c in response.get("configs", []):
        errs = c["value"].get("errors") or []
        if errs:
            out[c["value"]["name"]] = errs
    return out


def _strs(config: dict[str, Any]) -> dict[str, str]:
    return {k: (v if isinstance(v, str) else json.dumps(v) if isinstance(v, bool) else str(v))
            for k, v in config.items()}

