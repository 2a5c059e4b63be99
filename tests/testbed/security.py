"""Secured listeners for the test bed: SASL/SCRAM-SHA-512, SASL/PLAIN and SSL (mutual TLS).

Why a module of its own: production clusters are secured, so kbackup's Connect and CLI paths
are tested against a real broker with real authentication and authorization, not PLAINTEXT
only. Everything is made by the test run itself: a CA, a broker and a client certificate
(openssl), JKS and PKCS12 key/trust stores (keytool), PEM files for librdkafka, SCRAM users
written into the KRaft metadata at format time, PLAIN users in the listener's JAAS line, and,
on request, `StandardAuthorizer` with ACLs.

The PLAINTEXT listener stays for the bed's own helpers (topic creation, produce, consume):
its principal (`User:ANONYMOUS`) is a super user, as are the controller's and `admin`.
"""

from __future__ import annotations

import fnmatch
import os
import secrets
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

SCRAM_MECHANISM = "SCRAM-SHA-512"
STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule"
PLAIN_LOGIN = "org.apache.kafka.common.security.plain.PlainLoginModule"


# ---------------------------------------------------------------------------------------------
# Every secret the bed makes is registered here, so one check at the end of the session
# (tests/conftest.py) can grep every log and output of the run for all of them, including
# secrets of tests written later: they get theirs from Security/Pki, which register them.

_SECRETS: dict[str, str] = {}  # secret value -> what it is (printed instead of the value)
_LEAKS: list[str] = []  # "file:line: what" found in logs removed before the session ended
_LOCK = threading.Lock()
# Logs and outputs the bed writes (Kafka's own storage under data/ is not a log: skipped).
LOG_PATTERNS = ("*.log", "*.stdout", "*.stderr", "*.out", "*.log.bind-failed-*")
_SKIP_DIRS = {"data", "pki"}


def register_secret(value: Optional[str], what: str) -> None:
    """Registers a secret for the end-of-session leak check; `what` names it in reports (the
    value itself is never printed). Values under 6 characters would match by chance: refused."""
    if not value:
        return
    if len(value) < 6:
        raise ValueError(f"secret {what!r} is too short to grep for: use 6 characters or more")
    with _LOCK:
        _SECRETS.setdefault(value, what)


def registered_secrets() -> dict[str, str]:
    """value -> description of every secret registered so far."""
    with _LOCK:
        return dict(_SECRETS)


def leaks_in_text(text: str, where: str) -> list[str]:
    """`where:line: <what>` for each line of `text` holding a registered secret."""
    found = []
    known = registered_secrets()
    if not known or not any(v in text for v in known):
        return found
    for n, line in enumerate(text.splitlines(), 1):
        for value, what in known.items():
            if value in line:
                found.append(f"{where}:{n}: {what}")
    return found


def log_files(root: Path) -> Iterable[Path]:
    """The log and output files under `root` (see LOG_PATTERNS)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        for name in filenames:
            if any(fnmatch.fnmatch(name, p) for p in LOG_PATTERNS):
                yield Path(dirpath) / name


def leaks_in_tree(root: Path) -> list[str]:
    """Every registered secret found in the log and output files under `root`."""
    found: list[str] = []
    for f in log_files(root):
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        found += leaks_in_text(text, str(f))
    return found


def record_leaks(found: list[str]) -> None:
    """Keeps leaks for the end-of-session report (e.g. from a directory about to be removed)."""
    with _LOCK:
        _LEAKS.extend(found)


def recorded_leaks() -> list[str]:
    with _LOCK:
        return list(_LEAKS)


def _run(argv: list[str], cwd: Path) -> None:
    proc = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}")


@dataclass
class Pki:
    """A throw-away CA with one broker and one client certificate, in every form a Kafka
    client wants: JKS and PKCS12 stores for Java, PEM for librdkafka."""

    dir: Path
    password: str
    ca_pem: Path
    broker_keystore: Path           # PKCS12
    client_keystore_p12: Path
    client_keystore_jks: Path
    truststore_jks: Path
    truststore_p12: Path
    client_cert_pem: Path
    client_key_pem: Path            # unencrypted PKCS#8
    client_principal: str = "kbclient"

    @staticmethod
    def make(dir: Path, password: Optional[str] = None, client_cn: str = "kbclient") -> "Pki":
        dir.mkdir(parents=True, exist_ok=True)
        pw = password or "pki-" + secrets.token_hex(8)
        ca_key, ca_pem = dir / "ca.key", dir / "ca.pem"
        _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
              "-subj", "/CN=kbackup-test-ca", "-keyout", str(ca_key), "-out", str(ca_pem)], dir)

        def leaf(name: str, cn: str, san: Optional[str]) -> tuple[Path, Path]:
            key, csr, crt = dir / f"{name}.key", dir / f"{name}.csr", dir / f"{name}.pem"
            _run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
                  "-keyout", str(key), "-out", str(csr)], dir)
            ext = dir / f"{name}.ext"
            ext.write_text(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
            _run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_pem), "-CAkey",
                  str(ca_key), "-CAcreateserial", "-days", "2", "-out", str(crt),
                  "-extfile", str(ext)], dir)
            return key, crt

        b_key, b_crt = leaf("broker", "localhost", "DNS:localhost,IP:127.0.0.1")
        c_key, c_crt = leaf("client", client_cn, None)

        def p12(name: str, key: Path, crt: Path) -> Path:
            out = dir / f"{name}.p12"
            _run(["openssl", "pkcs12", "-export", "-in", str(crt), "-inkey", str(key),
                  "-certfile", str(ca_pem), "-name", name, "-out", str(out),
                  "-passout", f"pass:{pw}"], dir)
            return out

        broker_p12 = p12("broker", b_key, b_crt)
        client_p12 = p12("client", c_key, c_crt)
        client_jks = dir / "client.jks"
        _run(["keytool", "-importkeystore", "-noprompt", "-srckeystore", str(client_p12),
              "-srcstoretype", "PKCS12", "-srcstorepass", pw, "-destkeystore", str(client_jks),
              "-deststoretype", "JKS", "-deststorepass", pw, "-destkeypass", pw], dir)
        trust_jks, trust_p12 = dir / "truststore.jks", dir / "truststore.p12"
        for store, kind in ((trust_jks, "JKS"), (trust_p12, "PKCS12")):
            _run(["keytool", "-importcert", "-noprompt", "-alias", "ca", "-file", str(ca_pem),
                  "-keystore", str(store), "-storetype", kind, "-storepass", pw], dir)
        key_pk8 = dir / "client.pk8.pem"
        _run(["openssl", "pkcs8", "-topk8", "-nocrypt", "-in", str(c_key), "-out",
              str(key_pk8)], dir)
        register_secret(pw, f"the key/trust store password of the test PKI in {dir}")
        for name, key in (("broker", b_key), ("client", c_key), ("client PKCS#8", key_pk8)):
            # a line of the private key's body: enough to recognise the key in a log
            body = [ln for ln in key.read_text().splitlines() if not ln.startswith("-----")]
            register_secret(body[1] if len(body) > 1 else None,
                            f"a line of the {name} private key in {dir}")
        return Pki(dir, pw, ca_pem, broker_p12, client_p12, client_jks, trust_jks, trust_p12,
                   c_crt, key_pk8, client_cn)


@dataclass
class Security:
    """Secured listeners for one test broker: give it to `Cluster(security=...)`.

    `users` maps SCRAM/PLAIN user names to passwords (both mechanisms know every user).
    `acls=True` turns on StandardAuthorizer: then only super users may do anything until the
    test grants ACLs (`Cluster.kafka` runs as ANONYMOUS on PLAINTEXT, a super user).
    """

    work_dir: Path
    users: dict[str, str] = field(default_factory=dict)
    acls: bool = False
    pki: Optional[Pki] = None
    sasl_port: int = 0
    ssl_port: int = 0

    def __post_init__(self) -> None:
        from testbed.procs import free_port

        if self.pki is None:
            self.pki = Pki.make(self.work_dir / "pki")
        self._register()
        if not self.sasl_port:
            self.sasl_port, self.ssl_port = free_port(), free_port()

    def new_ports(self) -> None:
        from testbed.procs import free_port

        self.sasl_port, self.ssl_port = free_port(), free_port()

    @property
    def sasl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def ssl_bootstrap(self) -> str:
        return f"localhost:{self.ssl_port}"

    # -- broker side --------------------------------------------------------------------------

    def broker_props(self, plaintext_port: int, controller_port: int) -> dict[str, Any]:
        plain_users = " ".join(f'user_{u}="{p}"' for u, p in self.users.items())
        pki = self.pki
        props: dict[str, Any] = {
            "listeners": (f"PLAINTEXT://127.0.0.1:{plaintext_port},"
                          f"CONTROLLER://127.0.0.1:{controller_port},"
                          f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_port},"
                          f"SSL://localhost:{self.ssl_port}"),
            "advertised.listeners": (f"PLAINTEXT://127.0.0.1:{plaintext_port},"
                                     f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_port},"
                                     f"SSL://localhost:{self.ssl_port}"),
            "listener.security.protocol.map": ("PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
                                               "SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL"),
            "sasl.enabled.mechanisms": f"{SCRAM_MECHANISM},PLAIN",
            "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config":
                f"{SCRAM_LOGIN} required;",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config":
                f"{PLAIN_LOGIN} required {plain_users};",
            "listener.name.ssl.ssl.keystore.location": str(pki.broker_keystore),
            "listener.name.ssl.ssl.keystore.type": "PKCS12",
            "listener.name.ssl.ssl.keystore.password": pki.password,
            "listener.name.ssl.ssl.key.password": pki.password,
            "listener.name.ssl.ssl.truststore.location": str(pki.truststore_p12),
            "listener.name.ssl.ssl.truststore.type": "PKCS12",
            "listener.name.ssl.ssl.truststore.password": pki.password,
            "listener.name.ssl.ssl.client.auth": "required",
            # the SSL principal is the certificate's CN, e.g. User:kbclient
            "ssl.principal.mapping.rules": "RULE:^CN=([^,]*).*$/$1/,DEFAULT",
        }
        if self.acls:
            props["authorizer.class.name"] = STANDARD_AUTHORIZER
            props["super.users"] = "User:ANONYMOUS;User:admin"
            props["allow.everyone.if.no.acl.found"] = "false"
        return props

    def format_args(self) -> list[str]:
        """SCRAM credentials live in the KRaft metadata: written when the storage is formatted."""
        out: list[str] = []
        for u, p in self.users.items():
            out += ["--add-scram", f"{SCRAM_MECHANISM}=[name={u},password={p}]"]
        return out

    # -- client side --------------------------------------------------------------------------

    def java_sasl(self, user: str, password: Optional[str] = None,
                  mechanism: str = SCRAM_MECHANISM) -> dict[str, str]:
        """Java client properties (what a Connect user writes) for the SASL listener."""
        pw = self.users[user] if password is None else password
        module = SCRAM_LOGIN if mechanism.startswith("SCRAM") else PLAIN_LOGIN
        return {
            "bootstrap.servers": self.sasl_bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": mechanism,
            "sasl.jaas.config": f'{module} required username="{user}" password="{pw}";',
        }

    def java_ssl(self, store: str = "JKS") -> dict[str, str]:
        """Java client properties for mutual TLS with a JKS or PKCS12 key and trust store."""
        pki = self.pki
        jks = store.upper() == "JKS"
        return {
            "bootstrap.servers": self.ssl_bootstrap,
            "security.protocol": "SSL",
            "ssl.truststore.location": str(pki.truststore_jks if jks else pki.truststore_p12),
            "ssl.truststore.type": "JKS" if jks else "PKCS12",
            "ssl.truststore.password": pki.password,
            "ssl.keystore.location": str(pki.client_keystore_jks if jks else pki.client_keystore_p12),
            "ssl.keystore.type": "JKS" if jks else "PKCS12",
            "ssl.keystore.password": pki.password,
            "ssl.key.password": pki.password,
        }

    def librdkafka_sasl(self, user: str, password: Optional[str] = None,
                        mechanism: str = SCRAM_MECHANISM) -> dict[str, str]:
        """librdkafka properties (the CLI, confluent-kafka) for the SASL listener."""
        return {
            "bootstrap.servers": self.sasl_bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": mechanism,
            "sasl.username": user,
            "sasl.password": self.users[user] if password is None else password,
        }

    def librdkafka_ssl_pem(self) -> dict[str, str]:
        """librdkafka properties for mutual TLS with PEM files."""
        pki = self.pki
        return {
            "bootstrap.servers": self.ssl_bootstrap,
            "security.protocol": "SSL",
            "ssl.ca.location": str(pki.ca_pem),
            "ssl.certificate.location": str(pki.client_cert_pem),
            "ssl.key.location": str(pki.client_key_pem),
        }

    def _register(self) -> None:
        for user, pw in self.users.items():
            register_secret(pw, f"the SASL password of user {user!r}")

    def secret_values(self) -> list[str]:
        """Every secret this bed made, for tests that grep logs for leaks."""
        self._register()  # users added after construction too
        return [*self.users.values(), self.pki.password]


def prefixed(prefix: str, props: dict[str, str]) -> dict[str, str]:
    """`props` with every key under `prefix` (e.g. "consumer.override.", "cluster.")."""
    return {f"{prefix}{k}": v for k, v in props.items()}


def worker_client_overrides(props: dict[str, str]) -> dict[str, str]:
    """Worker properties making the worker's own clients (group membership, internal topics,
    and the connectors' producers, consumers and admins) use `props`."""
    out = dict(props)
    for p in ("producer.", "consumer.", "admin."):
        out.update(prefixed(p, props))
    return out


def grant(bootstrap: str, principal: str, resource: str, name: str, operations: list[str],
          pattern: str = "LITERAL") -> None:
    """Creates ALLOW ACLs through a super user's PLAINTEXT connection, e.g.
    grant(b, "User:backup", "TOPIC", "orders", ["READ", "DESCRIBE"])."""
    from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType,
                                       AdminClient, ResourcePatternType, ResourceType)

    admin = AdminClient({"bootstrap.servers": bootstrap})
    bindings = [AclBinding(ResourceType[resource], name, ResourcePatternType[pattern], principal,
                           "*", AclOperation[op], AclPermissionType.ALLOW)
                for op in operations]
    for f in admin.create_acls(bindings, request_timeout=30).values():
        f.result(timeout=30)
