"""A Kubernetes API server on loopback that implements what leader election relies on for
``coordination.k8s.io/v1`` Leases: GET, POST (409 when it exists), PUT with
``metadata.resourceVersion`` (409 when it is not the current one; every write bumps it), and a
partition: requests carrying a given bearer token hang until the client gives up."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["LeaseAPI"]

_PATH = re.compile(r"^/apis/coordination\.k8s\.io/v1/namespaces/([^/]+)/leases(?:/([^/]+))?$")


class LeaseAPI:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._leases: dict[tuple[str, str], dict[str, Any]] = {}
        self._version = 0
        self._lock = threading.Lock()
        self.partitioned: set[str] = set()  # bearer tokens whose requests hang
        self.writes = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self) -> tuple[str, str | None] | None:
                token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                if token in api.partitioned:
                    time.sleep(30)  # the client's deadline ends it first
                    return None
                m = _PATH.match(self.path)
                if m is None:
                    self._reply(404, {"kind": "Status", "code": 404})
                    return None
                return m.group(1), m.group(2)

            def _body(self) -> dict[str, Any]:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"{}")  # type: ignore[no-any-return]

            def do_GET(self) -> None:  # noqa: N802
                route = self._route()
                if route is None:
                    return
                with api._lock:
                    obj = api._leases.get((route[0], route[1] or ""))
                if obj is None:
                    self._reply(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                else:
                    self._reply(200, obj)

            def do_POST(self) -> None:  # noqa: N802
                route = self._route()
                if route is None:
                    return
                obj = self._body()
                name = obj.get("metadata", {}).get("name", "")
                with api._lock:
                    if (route[0], name) in api._leases:
                        self._reply(409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"})
                        return
                    stored = api._store(route[0], name, obj)
                self._reply(201, stored)

            def do_PUT(self) -> None:  # noqa: N802
                route = self._route()
                if route is None:
                    return
                obj = self._body()
                key = (route[0], route[1] or "")
                with api._lock:
                    current = api._leases.get(key)
                    if current is None:
                        self._reply(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                        return
                    if obj.get("metadata", {}).get("resourceVersion") != current["metadata"]["resourceVersion"]:
                        self._reply(409, {"kind": "Status", "code": 409, "reason": "Conflict"})
                        return
                    stored = api._store(key[0], key[1], obj)
                self._reply(200, stored)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True

    def _store(self, namespace: str, name: str, obj: dict[str, Any]) -> dict[str, Any]:
        self._version += 1
        self.writes += 1
        stored = {**obj, "metadata": {**obj.get("metadata", {}), "name": name, "namespace": namespace,
                                      "resourceVersion": str(self._version)}}
        self._leases[(namespace, name)] = stored
        return stored

    def lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._leases.get((namespace, name))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> LeaseAPI:
        threading.Thread(target=self._server.serve_forever, name="lease-api", daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> LeaseAPI:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()
