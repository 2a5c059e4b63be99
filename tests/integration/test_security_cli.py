"""The kbackup CLI against a secured broker: SASL/SCRAM (librdkafka settings and a Java client
properties file), mutual TLS with PEM files and with a PKCS12 key store. Each backs up a topic
and a consumer group and restores both (into a renamed topic), and no secret reaches the
output. Wrong credentials and Java settings librdkafka cannot use fail with one line naming the
fix (issue 14: the CLI path)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from conftest import unique
from testbed.cluster import Cluster
from testbed.security import SCRAM_LOGIN, Security

EXIT_USAGE, EXIT_KAFKA = 2, 3


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    sec = Security(tmp_path_factory.mktemp("pki"),
                   users={"backup": "bk-" + uuid.uuid4().hex[:12]})
    c = Cluster("secured-cli", security=sec, with_worker=False)
    try:
        c.start()
        yield c, sec
    finally:
        c.cleanup()


def write_props(path: Path, props: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    return path


def variants(sec: Security, d: Path) -> dict[str, tuple[str, Path]]:
    """name -> (bootstrap, --config-file) for each way of authenticating."""
    pki = sec.pki
    java_scram = {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.jaas.config": f'{SCRAM_LOGIN} required username="backup" '
                            f'password="{sec.users["backup"]}";',
    }
    p12 = {"security.protocol": "SSL", "ssl.ca.location": str(pki.ca_pem),
           "ssl.keystore.location": str(pki.client_keystore_p12),
           "ssl.keystore.password": pki.password}
    ssl_pem = {k: v for k, v in sec.librdkafka_ssl_pem().items() if k != "bootstrap.servers"}
    scram = {k: v for k, v in sec.librdkafka_sasl("backup").items() if k != "bootstrap.servers"}
    return {
        "scram": (sec.sasl_bootstrap, write_props(d / "scram.properties", scram)),
        "scram-java-file": (sec.sasl_bootstrap, write_props(d / "java.properties", java_scram)),
        "mtls-pem": (sec.ssl_bootstrap, write_props(d / "pem.properties", ssl_pem)),
        "mtls-pkcs12": (sec.ssl_bootstrap, write_props(d / "p12.properties", p12)),
    }


@pytest.mark.parametrize("variant", ["scram", "scram-java-file", "mtls-pem", "mtls-pkcs12"])
def test_cli_backs_up_and_restores_data_and_groups_over_a_secured_listener(
        secured, kbackup, tmp_path, variant):
    c, sec = secured
    bootstrap, props = variants(sec, tmp_path)[variant]
    topic, group = unique(f"sec-{variant}"), unique("sec-group")
    c.kafka.create_topic(topic, 2)
    c.kafka.produce(topic, [{"partition": i % 2, "key": b"k%d" % i, "value": b"v%d" % i}
                            for i in range(30)])
    c.kafka.commit_group_offsets(group, {(topic, 0): 10, (topic, 1): 4})
    backup = tmp_path / "backup"
    outs = [kbackup.run("backup", "--bootstrap-server", bootstrap, "--config-file", props,
                        "--dir", backup, "--topics", topic, "--group-offsets")]
    restored = topic + "-r"
    outs.append(kbackup.run("restore", "--bootstrap-server", bootstrap, "--config-file", props,
                            "--dir", backup, "--topics", topic, "--rename", f"{topic}:{restored}",
                            "--group-offsets"))
    for p in (0, 1):
        orig = c.kafka.consume_partition(topic, p)
        again = c.kafka.consume_partition(restored, p)
        assert [(r.key, r.value) for r in again] == [(r.key, r.value) for r in orig]
    assert c.kafka.group_offsets(group)[(restored, 0)] == 10
    assert c.kafka.group_offsets(group)[(restored, 1)] == 4
    for o in outs:
        for s in sec.secret_values():
            assert s not in o.stdout + o.stderr


def test_wrong_password_is_one_clear_line_without_the_secret(secured, kbackup, tmp_path):
    c, sec = secured
    topic = unique("sec-wrong")
    c.kafka.create_topic(topic, 1)
    props = write_props(tmp_path / "bad.properties", {
        **{k: v for k, v in sec.librdkafka_sasl("backup").items() if k != "bootstrap.servers"},
        "sasl.password": "not-the-password-42"})
    proc = kbackup.run("backup", "--bootstrap-server", sec.sasl_bootstrap, "--config-file", props,
                       "--dir", tmp_path / "b", "--topics", topic, check=False, timeout=60)
    assert proc.returncode == EXIT_KAFKA, proc.stderr
    assert "not-the-password-42" not in proc.stdout + proc.stderr
    assert "uthenticat" in proc.stderr, proc.stderr


def test_java_settings_the_cli_cannot_use_name_the_key_and_the_fix(secured, kbackup, tmp_path):
    _, sec = secured
    props = write_props(tmp_path / "jks.properties", {
        "security.protocol": "SSL",
        "ssl.truststore.location": str(sec.pki.truststore_jks),
        "ssl.truststore.type": "JKS",
        "ssl.truststore.password": sec.pki.password})
    proc = kbackup.run("backup", "--bootstrap-server", sec.ssl_bootstrap, "--config-file", props,
                       "--dir", tmp_path / "b", "--topics", "t", check=False)
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert "ssl.truststore.location" in proc.stderr and "ssl.ca.location" in proc.stderr
    assert sec.pki.password not in proc.stdout + proc.stderr
