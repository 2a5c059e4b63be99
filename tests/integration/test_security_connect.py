"""The Connect path against a secured broker (issue 14): a worker whose own clients use
SASL/SCRAM, and connectors that give their credentials ONCE, as Connect users write them
(`consumer.override.*` for the sink, `producer.override.*` for the source; no `cluster.*`
security keys). kbackup's own Kafka calls (group-offset capture, topic manifests, topic
creation, group commits, reading the target back) run on Kafka's Java clients in the shim with
those same settings, so JAAS lines and JKS stores work. Each test backs up a topic AND a
consumer group and restores both into a renamed topic; the group must resume exactly where it
stood. Wrong credentials and a missing trust store fail validation on the key to fix, and no
secret appears in a REST answer or the worker log."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from conftest import failed_trace, sink_config, unique, wait_backup_complete
from fixtures import source_config, wait_captured, wait_committed, wait_restore_finished
from testbed.cluster import Cluster
from testbed.connect import validation_errors
from testbed.security import SCRAM_LOGIN, Security, prefixed, worker_client_overrides

SINK = "io.kbackup.connect.BackupSinkConnector"
SOURCE = "io.kbackup.connect.BackupSourceConnector"
REAUTH_MS = 5000


@pytest.fixture(scope="module")
def secured(tmp_path_factory, plugin_dir):
    sec = Security(tmp_path_factory.mktemp("pki-connect"),
                   users={"connect": "cn-" + uuid.uuid4().hex[:12],
                          "capture": "cp-" + uuid.uuid4().hex[:12]})
    worker = worker_client_overrides(sec.java_sasl("connect"))
    # Connectors may keep secrets out of their config with Kafka's file config provider.
    worker.update({"config.providers": "file",
                   "config.providers.file.class":
                       "org.apache.kafka.common.config.provider.FileConfigProvider"})
    # Clients re-authenticate every few seconds, so a revoked credential bites at once.
    broker = {"listener.name.sasl_plaintext.connections.max.reauth.ms": REAUTH_MS}
    c = Cluster("secured-connect", plugin_path=plugin_dir, security=sec, worker_overrides=worker,
                broker_overrides=broker)
    try:
        c.start()
        yield c, sec
    finally:
        c.cleanup()


def client(props: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in props.items() if k != "bootstrap.servers"}


def ways(sec: Security, tmp_path) -> dict[str, tuple[str, dict[str, str]]]:
    """name -> (bootstrap, Java client settings) for each way the connectors authenticate."""
    scram = client(sec.java_sasl("connect"))
    secrets_file = tmp_path / "kafka-secrets.properties"
    secrets_file.write_text("jaas=" + scram["sasl.jaas.config"].replace("\\", "\\\\") + "\n")
    secrets_file.chmod(0o600)
    return {
        "scram": (sec.sasl_bootstrap, scram),
        "scram-config-provider": (sec.sasl_bootstrap, {
            **scram, "sasl.jaas.config": "${file:%s:jaas}" % secrets_file}),
        "mtls-jks": (sec.ssl_bootstrap, client(sec.java_ssl("JKS"))),
    }


@pytest.mark.parametrize("way", ["scram", "scram-config-provider", "mtls-jks"])
def test_connect_backs_up_and_restores_data_and_groups_with_credentials_given_once(
        secured, kbackup, tmp_path, way):
    c, sec = secured
    bootstrap, props = ways(sec, tmp_path)[way]
    topic, group = unique(f"csec-{way}"), unique("csec-group")
    c.kafka.create_topic(topic, 2)
    c.kafka.produce(topic, [{"partition": i % 2, "key": b"k%d" % i, "value": b"v%d" % i}
                            for i in range(40)])
    positions = {(topic, 0): 12, (topic, 1): 5}
    c.kafka.commit_group_offsets(group, positions)
    backup = tmp_path / "backup"

    sink = unique(f"csec-sink-{way}")
    cfg = sink_config(topic, backup, bootstrap, **prefixed("consumer.override.", props))
    cfg["consumer.override.bootstrap.servers"] = bootstrap
    c.connect.create_connector(sink, cfg)
    c.connect.wait_for_task_state(sink, "RUNNING", timeout=90)
    wait_backup_complete(kbackup, backup, topic, {0: 20, 1: 20})

    wait_captured(kbackup, backup, group, positions)
    c.connect.delete_connector(sink)
    c.connect.wait_deleted(sink)
    # The manifest came from the Java admin client: partition count known.
    manifest = json.loads((backup / "topics" / topic / "topic.json").read_text())
    assert manifest["partitions"] == 2 and manifest["described"] is True, manifest
    # The backup holds every record: owner-only by default (docs/security.md).
    loose = [(str(p), oct(p.stat().st_mode & 0o777)) for p in backup.rglob("*")
             if p.stat().st_mode & 0o077]
    assert not loose, loose[:10]

    restored = topic + "-r"
    source = unique(f"csec-src-{way}")
    scfg = source_config(topic, backup, bootstrap, **{"topics.rename": f"{topic}:{restored}"},
                         **prefixed("producer.override.", props))
    scfg["producer.override.bootstrap.servers"] = bootstrap
    c.connect.create_connector(source, scfg)
    wait_restore_finished(kbackup, backup, c.connect, source, [(topic, 0), (topic, 1)])
    for p in (0, 1):
        orig = c.kafka.consume_partition(topic, p)
        again = c.kafka.consume_partition(restored, p)
        assert [(r.key, r.value) for r in again] == [(r.key, r.value) for r in orig]
    # Same offsets here (a fresh topic, no gaps): the group reads exactly its unread records.
    wait_committed(c.kafka, group, {(restored, 0): 12, (restored, 1): 5})
    c.connect.delete_connector(source)


def test_wrong_password_and_missing_truststore_fail_validation_on_the_key_to_fix(
        secured, tmp_path):
    c, sec = secured
    topic = unique("csec-val")
    c.kafka.create_topic(topic, 1)
    wrong = client(sec.java_sasl("connect", password="not-the-password-" + uuid.uuid4().hex[:6]))
    cfg = sink_config(topic, tmp_path / "b1", sec.sasl_bootstrap, **prefixed("cluster.", wrong))
    resp = c.connect.validate(SINK, cfg)
    errs = validation_errors(resp)
    assert any("authentication failed" in m for m in errs.get("cluster.sasl.jaas.config", [])), errs
    body = json.dumps(resp)
    assert wrong["sasl.jaas.config"] not in body and "not-the-password" not in body, body

    ssl = client(sec.java_ssl("JKS"))
    ssl["ssl.truststore.location"] = str(tmp_path / "no-such-truststore.jks")
    cfg = sink_config(topic, tmp_path / "b2", sec.ssl_bootstrap, **prefixed("cluster.", ssl))
    errs = validation_errors(c.connect.validate(SINK, cfg))
    assert errs.get("cluster.ssl.truststore.location"), errs


@pytest.mark.faults
def test_capture_whose_credentials_are_revoked_fails_the_task_with_the_cause(
        secured, kbackup, tmp_path):
    """The sink's records flow with the `connect` user while kbackup's own client uses the
    `capture` user (cluster.* wins over the consumer overrides). Revoking `capture` must not
    leave a RUNNING task that silently stops backing up group positions: once captures have
    failed for their whole window (60 s at a 1 s interval) the task FAILS naming the cause."""
    from confluent_kafka.admin import AdminClient, ScramMechanism, UserScramCredentialDeletion

    c, sec = secured
    topic, group = unique("csec-revoke"), unique("csec-revoke-group")
    c.kafka.create_topic(topic, 1)
    c.kafka.produce(topic, [{"partition": 0, "key": b"k%d" % i, "value": b"v"} for i in range(5)])
    c.kafka.commit_group_offsets(group, {(topic, 0): 2})
    backup = tmp_path / "backup"
    cfg = sink_config(topic, backup, sec.sasl_bootstrap,
                      **prefixed("consumer.override.", client(sec.java_sasl("connect"))),
                      **prefixed("cluster.", client(sec.java_sasl("capture"))),
                      **{"consumer.override.bootstrap.servers": sec.sasl_bootstrap,
                         "consumer.offsets.sync.interval.ms": 1000})
    name = unique("csec-revoke-sink")
    c.connect.create_connector(name, cfg)
    wait_backup_complete(kbackup, backup, topic, {0: 5})

    wait_captured(kbackup, backup, group, {(topic, 0): 2})

    admin = AdminClient({"bootstrap.servers": c.bootstrap})
    for f in admin.alter_user_scram_credentials(
            [UserScramCredentialDeletion("capture", ScramMechanism.SCRAM_SHA_512)]).values():
        f.result(30)
    started = time.monotonic()
    trace = failed_trace(c.connect, name, timeout=180)
    waited = time.monotonic() - started
    assert "capture consumer-group offsets" in trace, trace[:3000]
    assert "uthentication" in trace, trace[:3000]
    # Not at once (a broker hiccup is not a failure), and not never.
    assert 50 <= waited <= 170, waited
    c.connect.delete_connector(name)


@pytest.fixture(scope="module")
def ssl_worker(tmp_path_factory, plugin_dir):
    """A worker whose OWN clients use mutual TLS with JKS stores (the other fixture's worker
    uses SCRAM)."""
    sec = Security(tmp_path_factory.mktemp("pki-ssl-worker"))
    worker = worker_client_overrides(sec.java_ssl("JKS"))
    c = Cluster("ssl-worker", plugin_path=plugin_dir, security=sec, worker_overrides=worker)
    try:
        c.start()
        yield c, sec
    finally:
        c.cleanup()


def test_worker_on_mutual_tls_backs_up_and_restores_data_and_groups(ssl_worker, kbackup,
                                                                    tmp_path):
    c, sec = ssl_worker
    props = client(sec.java_ssl("JKS"))
    topic, group = unique("cssl"), unique("cssl-group")
    c.kafka.create_topic(topic, 1)
    c.kafka.produce(topic, [{"partition": 0, "key": b"k%d" % i, "value": b"v"} for i in range(10)])
    c.kafka.commit_group_offsets(group, {(topic, 0): 6})
    backup = tmp_path / "backup"
    sink = unique("cssl-sink")
    c.connect.create_connector(sink, sink_config(topic, backup, sec.ssl_bootstrap,
                                                 **prefixed("consumer.override.", props)))
    wait_backup_complete(kbackup, backup, topic, {0: 10})
    wait_captured(kbackup, backup, group, {(topic, 0): 6})
    c.connect.delete_connector(sink)
    c.connect.wait_deleted(sink)
    restored, source = topic + "-r", unique("cssl-src")
    c.connect.create_connector(source, source_config(
        topic, backup, sec.ssl_bootstrap, **{"topics.rename": f"{topic}:{restored}"},
        **prefixed("producer.override.", props)))
    wait_restore_finished(kbackup, backup, c.connect, source, [(topic, 0)])
    assert ([(r.key, r.value) for r in c.kafka.consume_partition(restored, 0)]
            == [(r.key, r.value) for r in c.kafka.consume_partition(topic, 0)])
    wait_committed(c.kafka, group, {(restored, 0): 6})
    c.connect.delete_connector(source)


def test_no_secret_of_the_secured_runs_in_the_worker_log(secured):
    c, sec = secured
    # Runs after the tests above in this module (pytest keeps file order).
    time.sleep(1)
    text = c.worker.log_file.read_text(errors="replace")
    leaks = [s for s in sec.secret_values() if s in text]
    assert not leaks, f"{len(leaks)} secret(s) in {c.worker.log_file}"
