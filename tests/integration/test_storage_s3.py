"""The storage layer's contract against a real S3 server (versitygw, tests/testbed/s3.py).

The contract itself is Rust (crates/kbackup-core/tests/storage_s3.rs: one suite, run on a
local directory and on S3); this starts the server, runs that test binary against it, and
checks from the server's side what the binary cannot see: no multipart upload left open."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from testbed.s3 import S3Server

REPO = Path(__file__).resolve().parents[2]
# the contract cases (`local::` and `s3::` each) plus the S3-only ones, as in storage_s3.rs
S3_CASES = 11
S3_ONLY = 4


def test_storage_contract_against_versitygw():
    with S3Server() as s3:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(s3.env())
        env.update(KBACKUP_TEST_S3_ENDPOINT=s3.endpoint, KBACKUP_TEST_S3_BUCKET=s3.bucket)
        cargo = os.environ.get("CARGO", "cargo")
        proc = subprocess.run(
            # --workspace: the same feature set as `make unit-test`, so its build is reused
            [cargo, "test", "-q", "--workspace", "--test", "storage_s3", "--",
             "--nocapture", "--test-threads", "4"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-6000:] + "\n--- versitygw log ---\n" + s3.log()
        assert "skipped:" not in out, out[-4000:]
        passed = sum(int(n) for n in re.findall(r"test result: ok\. (\d+) passed", out))
        assert passed >= 2 * S3_CASES + S3_ONLY, out[-4000:]
        # every streamed object was completed or aborted: nothing left open on the server
        assert s3.pending_uploads() == []
        pid = s3.proc.pid
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


def test_s3_server_stops_with_nothing_left():
    s3 = S3Server().start()
    pid = s3.proc.pid
    assert s3.pending_uploads() == []
    s3.stop()
    s3.stop()  # safe twice
    assert not Path(f"/proc/{pid}").exists()
    assert not s3.dir.exists()


def _complete_body(etag: str) -> bytes:
    return (f"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{etag}</ETag>"
            "</Part></CompleteMultipartUpload>").encode()


def _one_part_upload(s3: S3Server, key: str) -> tuple[str, str]:
    status, _, body = s3.request("POST", key, params={"uploads": ""})
    assert status == 200, body
    upload = re.search(r"<UploadId>([^<]+)</UploadId>", body.decode()).group(1)
    status, headers, body = s3.request("PUT", key, params={"partNumber": "1", "uploadId": upload},
                                       body=b"part one")
    assert status == 200, body
    return upload, {k.lower(): v for k, v in headers.items()}["etag"]


def test_versitygw_honours_conditional_writes():
    """What docs/storage.md states about the server: If-None-Match and If-Match on PutObject
    and on CompleteMultipartUpload, and that a refused complete leaves the upload open."""
    with S3Server() as s3:
        assert s3.request("PUT", "obj", body=b"v1")[0] == 200
        status, _, body = s3.request("PUT", "obj", body=b"v2", headers={"If-None-Match": "*"})
        assert status == 412 and b"PreconditionFailed" in body, body
        etag = {k.lower(): v for k, v in s3.request("HEAD", "obj")[1].items()}["etag"]
        assert s3.request("PUT", "obj", body=b"v3", headers={"If-Match": '"0000"'})[0] == 412
        assert s3.request("PUT", "obj", body=b"v4", headers={"If-Match": etag})[0] == 200
        assert s3.request("PUT", "absent", body=b"x", headers={"If-Match": etag})[0] == 404
        assert s3.request("GET", "obj")[2] == b"v4"

        upload, part = _one_part_upload(s3, "obj")
        status, _, body = s3.request("POST", "obj", params={"uploadId": upload},
                                     body=_complete_body(part), headers={"If-None-Match": "*"})
        assert status == 412, body
        assert s3.request("GET", "obj")[2] == b"v4"
        assert s3.pending_uploads() == ["obj"]  # a refused complete leaves the upload open
        assert s3.request("DELETE", "obj", params={"uploadId": upload})[0] == 204
        assert s3.pending_uploads() == []

        upload, part = _one_part_upload(s3, "obj")
        status, _, _ = s3.request("POST", "obj", params={"uploadId": upload},
                                  body=_complete_body(part), headers={"If-Match": '"0000"'})
        assert status == 412
        s3.request("DELETE", "obj", params={"uploadId": upload})

        upload, part = _one_part_upload(s3, "fresh")
        status, _, body = s3.request("POST", "fresh", params={"uploadId": upload},
                                     body=_complete_body(part), headers={"If-None-Match": "*"})
        assert status == 200, body
        assert s3.request("GET", "fresh")[2] == b"part one"
        assert s3.pending_uploads() == []
