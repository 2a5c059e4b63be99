"""A real S3 server for the test bed: versitygw (Apache-2.0) with its posix backend.

Why: kbackup's object-storage guarantees (visible only when complete, conditional create,
multipart abort) only mean something against a real server's behaviour, not a mock. `make
s3-server` builds versitygw 1.8.0 from the Go module proxy into .cache/; this module starts it
on a free loopback port over a temporary directory, in its own process group with a log file,
creates a bucket, and stops it (SIGTERM, then SIGKILL) on exit, so nothing outlives a run.

    from testbed.s3 import S3Server
    with S3Server() as s3:
        s3.env()   # AWS_* variables that point kbackup and object_store at it

The process itself is a `procs.Process`: own process group, log file, registered so nothing
outlives the run, SIGTERM then SIGKILL on stop.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Optional

from .procs import Process, TestbedError, free_port, tail

REPO = Path(__file__).resolve().parents[2]
VERSITYGW_VERSION = "1.8.0"
VERSITYGW = REPO / ".cache" / f"versitygw-{VERSITYGW_VERSION}" / "bin" / "versitygw"
REGION = "us-east-1"


def sigv4_request(method: str, endpoint: str, path: str, access: str, secret: str,
                  params: Optional[dict[str, str]] = None, body: bytes = b"",
                  headers: Optional[dict[str, str]] = None) -> tuple[int, dict[str, str], bytes]:
    """One SigV4-signed S3 request (CreateBucket, ListMultipartUploads, conditional probes).
    `headers` (If-None-Match, ...) are sent unsigned. Returns status, headers and body."""
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    host = endpoint.split("://", 1)[1]
    query = "&".join(f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
                     for k, v in sorted((params or {}).items()))
    payload = hashlib.sha256(body).hexdigest()
    signed_headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    signed = ";".join(sorted(signed_headers))
    canonical = "\n".join([method, path, query,
                           *(f"{k}:{signed_headers[k]}" for k in sorted(signed_headers)),
                           "", signed, payload])
    scope = f"{day}/{REGION}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (day, REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    req = urllib.request.Request(
        f"{endpoint}{path}" + (f"?{query}" if query else ""), method=method, data=body or None,
        headers={**signed_headers, **(headers or {}),
                 "Authorization": f"AWS4-HMAC-SHA256 Credential={access}/{scope}, "
                                  f"SignedHeaders={signed}, Signature={sig}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class S3Server:
    """versitygw on 127.0.0.1:<free port>, posix backend on a temp dir, one bucket created."""

    def __init__(self, bucket: str = "kbackup-test", work: Optional[Path] = None,
                 binary: Path = VERSITYGW):
        if not binary.exists():
            raise RuntimeError(f"{binary} is missing; fix: run `make s3-server` (builds versitygw "
                               f"{VERSITYGW_VERSION} with Go into .cache/)")
        self.binary = binary
        self.bucket = bucket
        self.access_key = "kbackup-test-access"
        self.secret_key = "kbackup-test-secret-" + os.urandom(6).hex()
        self.dir = Path(tempfile.mkdtemp(prefix="kbackup-s3-", dir=work))
        self.root = self.dir / "root"
        self.root.mkdir()
        self.log_file = self.dir / "versitygw.log"
        self.port = 0
        self.proc: Optional[Process] = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point a client at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
        }

    def start(self, timeout: float = 30) -> "S3Server":
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VGW_", "ROOT_"))}
        env.update(ROOT_ACCESS_KEY_ID=self.access_key, ROOT_SECRET_ACCESS_KEY=self.secret_key)
        self.proc = Process(
            "versitygw",
            [str(self.binary), "--port", f"127.0.0.1:{self.port}", "--region", REGION,
             "--quiet", "posix", str(self.root)],
            stdout_file=self.log_file, cwd=self.dir, env=env)
        try:
            # Ready once it answers a signed CreateBucket (which also makes the bucket).
            self.proc.start_and_wait(lambda: self._create_bucket() == 200, timeout,
                                     f"versitygw on 127.0.0.1:{self.port} creating its bucket")
        except TestbedError:
            self.stop()
            raise
        return self

    def _create_bucket(self) -> Optional[int]:
        try:
            return self.request("PUT")[0]
        except OSError:
            return None  # not listening yet

    def request(self, method: str, key: str = "", **kw) -> tuple[int, dict[str, str], bytes]:
        """A signed request on the bucket (`key` empty) or one of its objects."""
        path = f"/{self.bucket}" + (f"/{urllib.parse.quote(key)}" if key else "")
        return sigv4_request(method, self.endpoint, path, self.access_key, self.secret_key, **kw)

    def pending_uploads(self) -> list[str]:
        """Keys of multipart uploads started and neither completed nor aborted."""
        status, _, body = self.request("GET", params={"uploads": ""})
        if status != 200:
            raise RuntimeError(f"ListMultipartUploads answered {status}: {body[:500]!r}")
        return re.findall(r"<Key>([^<]*)</Key>", body.decode())

    def list_keys(self, prefix: str = "") -> dict[str, int]:
        """Every object under `prefix` as the server lists it (ListObjectsV2), key -> size."""
        out: dict[str, int] = {}
        token: Optional[str] = None
        while True:
            params = {"list-type": "2", "prefix": prefix}
            if token:
                params["continuation-token"] = token
            status, _, body = self.request("GET", params=params)
            if status != 200:
                raise RuntimeError(f"ListObjectsV2 answered {status}: {body[:500]!r}")
            text = body.decode()
            for item in re.findall(r"<Contents>(.*?)</Contents>", text, re.S):
                key = re.search(r"<Key>([^<]*)</Key>", item).group(1)
                out[key] = int(re.search(r"<Size>(\d+)</Size>", item).group(1))
            m = re.search(r"<NextContinuationToken>([^<]*)</NextContinuationToken>", text)
            if not m:
                return out
            token = m.group(1)

    def log(self) -> str:
        return tail(self.log_file)

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM the process group, SIGKILL after `timeout`; removes the data. Safe twice."""
        if self.proc is not None:
            self.proc.stop(timeout)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "S3Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
