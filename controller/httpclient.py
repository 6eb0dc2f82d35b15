"""HTTP clients whose every request has one overall deadline, however the peer behaves.

httpx's timeouts bound each network operation: a connect, one read, one write. A peer that
sends one byte every two seconds never trips a 5-second read timeout, and keeps a request
open for ever. diurnal talks to peers it does not control (the router, Prometheus, a webhook,
the Kubernetes API), so each request gets a deadline on the whole exchange instead: every
blocking socket operation of the request (connect, TLS, writes, the headers and the body)
waits at most what is left of it, and past it fails with an :class:`httpx.TimeoutException`.

How: the transport wraps httpcore's network backend, whose streams read the deadline of the
request in progress from a context variable. That backend is a public httpcore interface; the
one private hop is where httpx keeps its connection pool, checked when a client is built.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpcore
import httpx

__all__ = ["bounded_client", "BoundedTransport"]

#: The monotonic time by which the request in progress on this thread must be done.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("diurnal_http_deadline", default=None)


def _left(timeout: float | None, expired: type[Exception]) -> float | None:
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("the request ran past its overall deadline")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, _left(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_tcp(host, port, _left(timeout, httpcore.ConnectTimeout),
                                               local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_unix_socket(path, _left(timeout, httpcore.ConnectTimeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _DeadlineBody(httpx.SyncByteStream):
    """The response body, read under the request's deadline."""

    def __init__(self, inner: httpx.SyncByteStream, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def __iter__(self) -> Iterator[bytes]:
        chunks = iter(self._inner)
        while True:
            token = _DEADLINE.set(self._deadline)
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            finally:
                _DEADLINE.reset(token)
            yield chunk

    def close(self) -> None:
        self._inner.close()


class BoundedTransport(httpx.HTTPTransport):
    """An :class:`httpx.HTTPTransport` whose requests each end within ``deadline`` seconds."""

    def __init__(self, deadline: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.deadline = deadline
        pool = getattr(self, "_pool", None)
        if pool is None or not hasattr(pool, "_network_backend"):  # an httpx or httpcore upgrade moved it
            raise RuntimeError("cannot bound HTTP requests with this httpx/httpcore version")
        pool._network_backend = _Backend(pool._network_backend)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        deadline = time.monotonic() + self.deadline
        token = _DEADLINE.set(deadline)
        try:
            response = super().handle_request(request)
        finally:
            _DEADLINE.reset(token)
        assert isinstance(response.stream, httpx.SyncByteStream)
        response.stream = _DeadlineBody(response.stream, deadline)
        return response


def bounded_client(deadline: float, *, transport: httpx.BaseTransport | None = None, verify: Any = True,
                   **kwargs: Any) -> httpx.Client:
    """An :class:`httpx.Client` whose every request ends within ``deadline`` seconds (each
    network operation also within the client's ``timeout``, default the deadline).
    ``transport`` replaces the bounded one (tests' mock transports)."""
    kwargs.setdefault("timeout", deadline)
    return httpx.Client(transport=transport or BoundedTransport(deadline, verify=verify), **kwargs)
