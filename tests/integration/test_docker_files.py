"""The docker/ demo, checked without a Docker engine (none runs on our machines).

The compose file and Dockerfile are parsed and cross-checked against the repository, and the
connector JSON that docker/demo.sh POSTs is validated by the real Connect worker, so the
Docker story cannot drift from what `make demo` proves.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import yaml

from conftest import REPO, unique
from testbed.connect import validation_errors

DOCKER = REPO / "docker"


def compose() -> dict:
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


def worker_properties() -> dict[str, str]:
    props = {}
    for line in (DOCKER / "connect-distributed.properties").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            k, _, v = line.partition("=")
            props[k.strip()] = v.strip()
    return props


def demo_connector_configs() -> dict[str, dict]:
    """The JSON documents docker/demo.sh sends, by connector name."""
    text = (DOCKER / "demo.sh").read_text()
    docs = re.findall(r"<<'JSON'\n(.*?)\nJSON", text, re.S)
    out = {}
    for d in docs:
        parsed = json.loads(d)
        out[parsed["name"]] = parsed["config"]
    return out


def test_compose_has_two_clusters_sharing_the_backup_volume():
    c = compose()
    services = c["services"]
    assert {"kafka", "connect", "kafka-restore", "connect-restore"} <= set(services)
    for name in ("kafka", "kafka-restore"):
        assert services[name]["image"] == "apache/kafka:4.3.1"
    for name in ("connect", "connect-restore"):
        assert "backups:/backups" in services[name]["volumes"]
    assert services["connect"]["build"]["dockerfile"] == "docker/Dockerfile"
    assert "backups" in c["volumes"]


def test_dockerfile_copies_paths_that_exist_and_puts_the_jar_on_the_plugin_path():
    text = (DOCKER / "Dockerfile").read_text()
    for src in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        assert (REPO / src).exists(), f"Dockerfile copies {src}, which the repository lacks"
    plugin_path = worker_properties()["plugin.path"]
    jar_dest = re.search(r"COPY --from=java \S+kbackup-connect\.jar (\S+)", text).group(1)
    assert Path(jar_dest).parent == Path(plugin_path)
    assert worker_properties()["connector.client.config.override.policy"] == "All"


def test_demo_uses_connector_classes_the_jar_registers(dist_dir):
    with zipfile.ZipFile(dist_dir / "kbackup-connect.jar") as jar:
        registered = set()
        for svc in ("org.apache.kafka.connect.sink.SinkConnector",
                    "org.apache.kafka.connect.source.SourceConnector"):
            registered |= {line.strip() for line in
                           jar.read(f"META-INF/services/{svc}").decode().splitlines()
                           if line.strip() and not line.startswith("#")}
    classes = {cfg["connector.class"] for cfg in demo_connector_configs().values()}
    assert classes == {"io.kbackup.connect.BackupSinkConnector",
                       "io.kbackup.connect.BackupSourceConnector"}
    assert classes <= registered


def test_demo_backup_connector_json_passes_validation_on_a_real_worker(cluster, tmp_path):
    topic = unique("docker-demo")
    cluster.kafka.create_topic(topic, partitions=1)
    cfg = dict(demo_connector_configs()["backup-orders"])
    # Same document, pointed at this test's cluster, topic and directory.
    cfg.update({"topics": topic, "target.dir": str(tmp_path / "backup"),
                "cluster.bootstrap.servers": cluster.bootstrap})
    resp = cluster.connect.validate("BackupSinkConnector", cfg)
    assert validation_errors(resp) == {}, validation_errors(resp)


def test_connect_image_is_glibc_based_so_the_native_library_loads():
    """The jar's native library links glibc; the official apache/kafka image is Alpine (musl),
    so the Connect image must not run on it, only borrow Kafka's distribution from it."""
    text = (DOCKER / "Dockerfile").read_text()
    final_base = re.findall(r"^FROM (\S+)", text, re.M)[-1]
    assert "alpine" not in final_base and not final_base.startswith("apache/kafka"), final_base
    assert "COPY --from=kafka /opt/kafka /opt/kafka" in text
