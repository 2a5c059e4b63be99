"""The end-of-session secret check (tests/conftest.py, issue 14) finds what it must: a
registered secret in a broker/worker log or stdout file or in a CLI output is reported with
file and line and a description, never with the value; Kafka's own storage and the test PKI
(key stores, properties files the tests write on purpose) are not logs and are skipped."""

from __future__ import annotations

import uuid

from testbed import security
from testbed.security import Security


def test_a_registered_secret_in_a_log_is_found_with_file_and_line(tmp_path):
    secret = "leak-check-" + uuid.uuid4().hex
    security.register_secret(secret, "the leak check's own test secret")
    (tmp_path / "broker").mkdir()
    (tmp_path / "broker" / "broker.log").write_text(f"a\nb password={secret}\nc\n")
    (tmp_path / "worker").mkdir()
    (tmp_path / "worker" / "connect.stdout").write_text(f"x {secret}\n")
    (tmp_path / "worker" / "connect.log.bind-failed-1").write_text(f"{secret}\n")
    # not logs: Kafka's storage, the PKI, configuration the test wrote on purpose
    (tmp_path / "broker" / "data").mkdir()
    (tmp_path / "broker" / "data" / "00000000000000000000.log").write_text(secret)
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "x.log").write_text(secret)
    (tmp_path / "broker" / "server.properties").write_text(secret)
    found = security.leaks_in_tree(tmp_path)
    assert sorted(found) == sorted([
        f"{tmp_path}/broker/broker.log:2: the leak check's own test secret",
        f"{tmp_path}/worker/connect.stdout:1: the leak check's own test secret",
        f"{tmp_path}/worker/connect.log.bind-failed-1:1: the leak check's own test secret",
    ]), found
    assert not any(secret in f for f in found)
    assert security.leaks_in_text(f"ok\n{secret}", "`kbackup backup` stdout") == [
        "`kbackup backup` stdout:2: the leak check's own test secret"]


def test_every_security_bed_registers_its_secrets(tmp_path):
    sec = Security(tmp_path / "sec", users={"u1": "pw-" + uuid.uuid4().hex[:10]})
    known = security.registered_secrets()
    assert sec.users["u1"] in known and sec.pki.password in known
    # a private key line, so a key dumped into a log is found too
    key_line = sec.pki.client_key_pem.read_text().splitlines()[2]
    assert key_line in known
    sec.users["late"] = "pw-" + uuid.uuid4().hex[:10]
    assert sec.users["late"] in sec.secret_values()
    assert sec.users["late"] in security.registered_secrets()
