"""A fault-injecting HTTP proxy in front of the test bed's S3 server.

Why: an object store fails in ways a healthy local server never shows: 503 SlowDown under
load, answers that take seconds, a gateway that goes away in the middle of an upload. The
proxy sits on its own loopback port between kbackup and versitygw (tests/testbed/s3.py) and,
per request, passes it through, answers 503 SlowDown itself, delays the answer, or drops the
connection without answering, as a rule the test sets decides. Requests are forwarded byte
for byte (the Host header included), so SigV4 signatures made for the proxy's address still
verify at the server. One request per connection: every answer carries `Connection: close`.

    with S3Server() as s3, FaultProxy(s3) as proxy:
        proxy.rule = lambda n, method, path: "503" if n % 3 == 0 else "pass"
        kbackup.run("copy", src, url, env=proxy.env())
        proxy.counts  # {"pass": ..., "503": ...}
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from typing import Callable, Optional, Union

from .procs import free_port
from .s3 import S3Server

# what to do with the n-th request (from 1): "pass", "503", "drop" or ("delay", seconds)
Action = Union[str, tuple[str, float]]
Rule = Callable[[int, str, str], Action]

SLOW_DOWN = (b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
             b"Connection: close\r\nContent-Length: %d\r\n\r\n%s")
SLOW_DOWN_BODY = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                  b"<Message>Please reduce your request rate.</Message></Error>")


def _read_head(conn: socket.socket) -> tuple[bytes, bytes]:
    """Reads up to the end of an HTTP head; returns (head, bytes read past it)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the end of the head")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head + b"\r\n\r\n", rest


def _header(head: bytes, name: bytes) -> Optional[bytes]:
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == name:
            return v.strip()
    return None


class FaultProxy:
    """Listens on 127.0.0.1:<free port>, forwards to `s3` unless `rule` says otherwise."""

    def __init__(self, s3: S3Server, rule: Optional[Rule] = None):
        self.s3 = s3
        self.rule: Rule = rule or (lambda n, method, path: "pass")
        self.port = free_port()
        self.counts: Counter[str] = Counter()
        self.requests = 0
        self._lock = threading.Lock()
        self._sock: Optional[socket.socket] = None
        self._stopping = False

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The server's AWS variables, pointed at the proxy."""
        return {**self.s3.env(), "AWS_ENDPOINT_URL": self.endpoint}

    def start(self) -> "FaultProxy":
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.listen(64)
        threading.Thread(target=self._accept, name="s3-fault-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping = True
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                head, body = _read_head(conn)
                if _header(head, b"transfer-encoding"):
                    raise ConnectionError("chunked requests are not supported by the proxy")
                length = int(_header(head, b"content-length") or 0)
                while len(body) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed in the middle of the body")
                    body += chunk
                method, path = head.split(b" ", 2)[:2]
                with self._lock:
                    self.requests += 1
                    n = self.requests
                action = self.rule(n, method.decode(), path.decode())
                kind = action if isinstance(action, str) else action[0]
                with self._lock:
                    self.counts[kind] += 1
                if kind == "drop":
                    conn.shutdown(socket.SHUT_RDWR)  # no answer: the gateway went away
                    return
                if kind == "503":
                    conn.sendall(SLOW_DOWN % (len(SLOW_DOWN_BODY), SLOW_DOWN_BODY))
                    return
                if kind == "delay":
                    time.sleep(action[1])
                self._forward(conn, head, body)
            except (OSError, ConnectionError):
                return

    def _forward(self, conn: socket.socket, head: bytes, body: bytes) -> None:
        with socket.create_connection(("127.0.0.1", self.s3.port), timeout=60) as up:
            up.sendall(head + body)
            resp_head, rest = _read_head(up)
            lines = [line for line in resp_head.rstrip(b"\r\n").split(b"\r\n")
                     if not line.lower().startswith(b"connection:")]
            conn.sendall(b"\r\n".join(lines + [b"Connection: close"]) + b"\r\n\r\n" + rest)
            if resp_head.split(b" ", 2)[1] in (b"204", b"304") or head.startswith(b"HEAD "):
                return  # no body, whatever the head says
            # relay the rest of the answer as it comes; the server closes after it only on
            # its own schedule, so stop at the framing the head announces
            length = _header(resp_head, b"content-length")
            if length is not None:
                left = int(length) - len(rest)
                while left > 0:
                    chunk = up.recv(min(65536, left))
                    if not chunk:
                        break
                    conn.sendall(chunk)
                    left -= len(chunk)
                return
            data = rest
            while not (_header(resp_head, b"transfer-encoding") and data.endswith(b"0\r\n\r\n")):
                chunk = up.recv(65536)
                if not chunk:
                    break
                conn.sendall(chunk)
                data = data[-16:] + chunk
