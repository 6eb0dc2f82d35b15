"""A misbehaving HTTP peer on loopback, for fault injection: what diurnal must survive from a
router, Prometheus, a webhook receiver or a Kubernetes API it does not control.

    with FaultyPeer(inner_url) as peer:      # proxies to a healthy peer ...
        peer.mode = "trickle"                # ... until told to misbehave

Modes:

- ``ok``: forwards the request to ``upstream`` (if any) and returns its answer, else 200 ``{}``;
- ``slow``: answers correctly, after ``delay`` seconds;
- ``trickle``: sends a valid status line, then one byte every ``delay`` seconds, for ever;
- ``blackhole``: accepts the connection and never answers;
- ``error``: answers HTTP 500;
- ``garbage``: answers 200 with bytes that are no exposition or JSON;
- ``flapping``: alternates ``ok`` and ``error`` request by request;
- ``refuse``: closes each connection at once (a peer that is down).

It counts the requests it saw, and can switch mode after so many (``switch_after``). Only
127.0.0.1.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.request
from typing import Any

MODES = ("ok", "slow", "trickle", "blackhole", "error", "garbage", "flapping", "refuse")


class FaultyPeer:
    def __init__(self, upstream: str | None = None, *, mode: str = "ok", delay: float = 2.0,
                 switch_after: tuple[int, str] | None = None) -> None:
        """``switch_after=(n, mode)``: answer the first ``n`` requests in ``mode``, then
        switch (a Prometheus that goes down in the middle of a backfill)."""
        self.upstream = upstream.rstrip("/") if upstream else None
        self.mode = mode
        self.switch_after = switch_after
        self.delay = delay
        self.requests = 0
        self._flip = False
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._closed = threading.Event()
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultyPeer:
        threading.Thread(target=self._accept, name="faulty-peer", daemon=True).start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _read_request(self, conn: socket.socket) -> tuple[str, str, bytes, dict[str, str]] | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0") or 0)
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        return method, path, body, headers

    def _forward(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
        if self.upstream is None:
            return 200, "application/json", b"{}"
        keep = {k: v for k, v in headers.items() if k in ("accept", "authorization", "content-type")}
        req = urllib.request.Request(self.upstream + path, data=body if method != "GET" else None, method=method,
                                     headers=keep)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.headers.get("content-type", "text/plain"), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("content-type", "text/plain"), exc.read()

    def _handle(self, conn: socket.socket) -> None:
        try:
            mode = self.mode
            if mode == "refuse":
                return
            got = self._read_request(conn)
            if got is None:
                return
            self.requests += 1
            if self.switch_after is not None and self.requests > self.switch_after[0]:
                self.mode = mode = self.switch_after[1]
                if mode == "refuse":
                    return
            if mode == "flapping":
                self._flip = not self._flip
                mode = "ok" if self._flip else "error"
            if mode == "blackhole":
                self._closed.wait()
                return
            if mode == "trickle":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
                while not self._closed.is_set():
                    conn.sendall(b"#")
                    time.sleep(self.delay)
                return
            if mode == "error":
                status, ctype, payload = 500, "text/plain", b"internal error"
            elif mode == "garbage":
                status, ctype, payload = 200, "text/plain", b"\x00\xff{not an exposition\n}}} 12 x\n"
            else:
                if mode == "slow":
                    time.sleep(self.delay)
                status, ctype, payload = self._forward(*got)
            conn.sendall(f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {len(payload)}\r\n"
                         "Connection: close\r\n\r\n".encode() + payload)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()
