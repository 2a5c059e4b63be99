"""The secured test broker (tests/testbed/security.py) behaves like a production one: SCRAM,
PLAIN and mutual-TLS clients get in with the right credentials and are refused with wrong
ones, a Connect worker whose own clients use SCRAM runs, and StandardAuthorizer enforces ACLs.
The kbackup security tests build on these facts."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from conftest import _plugin_path as plugin_path
from testbed.cluster import Cluster
from testbed.security import Security, grant, worker_client_overrides


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    sec = Security(tmp_path_factory.mktemp("pki"),
                   users={"admin": "admin-" + uuid.uuid4().hex[:8],
                          "backup": "backup-" + uuid.uuid4().hex[:8]},
                   acls=True)
    c = Cluster("secured", security=sec, plugin_path=plugin_path(),
                worker_overrides=worker_client_overrides(sec.java_sasl("admin")))
    try:
        c.start()
        yield c, sec
    finally:
        c.cleanup()


def _list_topics(conf: dict, timeout: float = 10, errors: list | None = None):
    cb = {"error_cb": errors.append} if errors is not None else {}
    return AdminClient({**conf, "log_level": 0, **cb}).list_topics(timeout=timeout)


def _first_error(conf: dict, timeout: float = 15) -> str:
    """The first error a client reports through error_cb (served by poll)."""
    errors: list = []
    p = Producer({**conf, "log_level": 0, "error_cb": errors.append})
    deadline = time.monotonic() + timeout
    while not errors and time.monotonic() < deadline:
        p.poll(0.5)
    assert errors, f"no error within {timeout}s"
    return str(errors[0])


def _roundtrip(conf: dict, topic: str) -> bytes:
    p = Producer({**conf, "log_level": 0})
    p.produce(topic, b"secret-payload")
    assert p.flush(20) == 0
    c = Consumer({**conf, "group.id": "g-" + uuid.uuid4().hex[:6], "auto.offset.reset": "earliest",
                  "log_level": 0})
    c.subscribe([topic])
    try:
        for _ in range(40):
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                return m.value()
    finally:
        c.close()
    raise AssertionError(f"nothing consumed from {topic} with {conf['security.protocol']}")


def test_scram_plain_and_mtls_clients_get_in_and_wrong_credentials_are_refused(secured):
    c, sec = secured
    topic = "sec-" + uuid.uuid4().hex[:6]
    c.kafka.create_topic(topic, 1)
    # admin is a super user on every listener
    assert _roundtrip(sec.librdkafka_sasl("admin"), topic) == b"secret-payload"
    assert _list_topics(sec.librdkafka_sasl("admin", mechanism="PLAIN")).topics
    assert "authentication" in _first_error(sec.librdkafka_sasl("admin", password="wrong")).lower()
    # mutual TLS: the certificate's CN is the principal; it needs ACLs like anyone else
    grant(c.bootstrap, f"User:{sec.pki.client_principal}", "TOPIC", topic, ["DESCRIBE"])
    md = _list_topics(sec.librdkafka_ssl_pem())
    assert topic in md.topics and md.topics[topic].error is None
    no_cert = {k: v for k, v in sec.librdkafka_ssl_pem().items()
               if k not in ("ssl.certificate.location", "ssl.key.location")}
    with pytest.raises(KafkaException):
        _list_topics(no_cert, timeout=8)


def test_acls_are_enforced_for_a_principal_without_grants(secured):
    c, sec = secured
    topic = "acl-" + uuid.uuid4().hex[:6]
    c.kafka.create_topic(topic, 1)
    md = _list_topics(sec.librdkafka_sasl("backup"))
    assert topic not in md.topics, "backup sees a topic it has no ACL for"
    grant(c.bootstrap, "User:backup", "TOPIC", topic, ["DESCRIBE"])
    md = _list_topics(sec.librdkafka_sasl("backup"))
    assert topic in md.topics


def test_worker_whose_own_clients_use_scram_runs(secured):
    c, _ = secured
    assert c.connect.connectors() == []
    assert any(p["class"].endswith("BackupSinkConnector") for p in c.connect.plugins())
