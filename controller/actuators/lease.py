"""Leader election through a Kubernetes Lease (``coordination.k8s.io/v1``), with the
semantics client-go's leaderelection package relies on:

- the record is read, then written with its ``resourceVersion``: a concurrent writer gets
  409 Conflict, so at most one candidate wins a round;
- a candidate takes the lease only when the record has not changed for
  ``leaseDurationSeconds`` *as observed on its own clock* (the holder's ``renewTime`` is
  another machine's clock, so it is not trusted);
- the holder renews every ``retry_period``; it stops acting once ``renew_deadline`` has passed
  since the start of its last successful renewal. ``renew_deadline`` < ``lease_duration``, so
  it stops before anyone else can take the lease: never two actors.

:class:`LeaderElector` runs the loop in a thread; :meth:`LeaderElector.is_leader` is what
actuators ask right before they act.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from collectors.errors import DiurnalError
from collectors.redact import redact
from controller.httpclient import bounded_client

log = logging.getLogger("diurnal.lease")

__all__ = ["LeaderElector", "LeaseClient", "LeaseConflict", "LeaseError", "LeaseRecord"]


class LeaseError(DiurnalError):
    """The Lease could not be read or written (the API is down, refused, or answered garbage)."""


class LeaseConflict(LeaseError):
    """Someone else wrote the Lease first (HTTP 409)."""


def _micro(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseRecord:
    holder: str
    duration_seconds: int
    acquire_time: str | None
    renew_time: str | None
    transitions: int
    resource_version: str | None = None

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> LeaseRecord:
        spec = obj.get("spec") or {}
        return cls(holder=str(spec.get("holderIdentity") or ""),
                   duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
                   acquire_time=spec.get("acquireTime"), renew_time=spec.get("renewTime"),
                   transitions=int(spec.get("leaseTransitions") or 0),
                   resource_version=(obj.get("metadata") or {}).get("resourceVersion"))

    def to_object(self, namespace: str, name: str) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": name, "namespace": namespace}
        if self.resource_version is not None:
            metadata["resourceVersion"] = self.resource_version
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata,
                "spec": {"holderIdentity": self.holder or None, "leaseDurationSeconds": self.duration_seconds,
                         "acquireTime": self.acquire_time, "renewTime": self.renew_time,
                         "leaseTransitions": self.transitions}}


class LeaseClient:
    """GET, create and update one Lease with httpx and the pod's service-account token."""

    def __init__(self, api_url: str, namespace: str, name: str, token_path: Path, *, timeout: float = 2.0,
                 verify: Any = True, transport: httpx.BaseTransport | None = None) -> None:
        self.namespace, self.name = namespace, name
        self.base = f"{api_url.rstrip('/')}/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self.token_path = token_path
        self._client = bounded_client(timeout, verify=verify, transport=transport)

    def _call(self, method: str, url: str, body: dict[str, Any] | None = None) -> httpx.Response:
        try:
            token = self.token_path.read_text().strip()
        except OSError as exc:
            raise LeaseError(f"cannot read the service-account token at {self.token_path}: {exc}") from exc
        try:
            return self._client.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:
            raise LeaseError(redact(f"{method} {url}: {type(exc).__name__}")) from exc

    def _record(self, resp: httpx.Response, what: str) -> LeaseRecord:
        if resp.status_code == 409:
            raise LeaseConflict(f"{what}: conflict (written by another replica first)")
        if resp.status_code >= 300:
            raise LeaseError(f"{what}: HTTP {resp.status_code} {resp.text[:200]}")
        try:
            return LeaseRecord.from_object(resp.json())
        except (ValueError, TypeError, AttributeError) as exc:
            raise LeaseError(f"{what}: an answer that is not a Lease") from exc

    def get(self) -> LeaseRecord | None:
        resp = self._call("GET", f"{self.base}/{self.name}")
        if resp.status_code == 404:
            return None
        return self._record(resp, f"get lease {self.namespace}/{self.name}")

    def create(self, record: LeaseRecord) -> LeaseRecord:
        body = replace(record, resource_version=None).to_object(self.namespace, self.name)
        return self._record(self._call("POST", self.base, body), f"create lease {self.namespace}/{self.name}")

    def update(self, record: LeaseRecord) -> LeaseRecord:
        return self._record(self._call("PUT", f"{self.base}/{self.name}", record.to_object(self.namespace, self.name)),
                            f"update lease {self.namespace}/{self.name}")

    def close(self) -> None:
        self._client.close()


class LeaderElector:
    """Campaigns for the Lease and keeps it. ``clock`` is monotonic seconds (the local
    observations and the renew deadline), ``wall`` Unix seconds (what is written)."""

    def __init__(self, client: LeaseClient, identity: str, *, lease_duration: float = 15.0,
                 renew_deadline: float = 10.0, retry_period: float = 2.0,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 on_change: Callable[[bool], None] | None = None) -> None:
        if not 0 < retry_period < renew_deadline < lease_duration:
            raise ValueError("need 0 < retry_period < renew_deadline < lease_duration")
        self.client = client
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._clock, self._wall = clock, wall
        self._on_change = on_change
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0  # local time the record last changed, as seen here
        self._renewed_at: float | None = None  # local time the last successful renewal started
        self._leading = False
        self.holder: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def is_leader(self) -> bool:
        """Whether this replica may act now: it holds the Lease and renewed it less than
        ``renew_deadline`` ago (counted from the start of that renewal)."""
        with self._lock:
            return (self._leading and self._renewed_at is not None
                    and self._clock() - self._renewed_at < self.renew_deadline)

    def try_acquire_or_renew(self) -> bool:
        """One round: read the Lease, and write it if it is ours or has expired by our
        observation. Returns whether this replica holds it now."""
        started = self._clock()
        record = self.client.get()
        now = self._wall()
        if record is None:
            mine = LeaseRecord(self.identity, int(self.lease_duration), _micro(now), _micro(now), 0)
            self._succeeded(self.client.create(mine), started)
            return True
        if self._observed is None or record.resource_version != self._observed.resource_version:
            self._observed, self._observed_at = record, started
        self.holder = record.holder or None
        if record.holder and record.holder != self.identity and \
                started < self._observed_at + max(record.duration_seconds, 1):
            return False  # held by another, and not expired as seen from here
        ours = record.holder == self.identity
        mine = replace(record, holder=self.identity, duration_seconds=int(self.lease_duration),
                       renew_time=_micro(now), acquire_time=record.acquire_time if ours else _micro(now),
                       transitions=record.transitions if ours else record.transitions + 1)
        self._succeeded(self.client.update(mine), started)
        return True

    def _succeeded(self, written: LeaseRecord, started: float) -> None:
        self._observed, self._observed_at = written, started
        self.holder = self.identity
        with self._lock:
            self._renewed_at = started
            became = not self._leading
            self._leading = True
        if became:
            log.info("this replica (%s) holds the lease %s/%s and acts", self.identity, self.client.namespace,
                     self.client.name)
            if self._on_change is not None:
                self._on_change(True)

    def _lost(self, why: str, level: int = logging.WARNING) -> None:
        with self._lock:
            was, self._leading = self._leading, False
        if was:
            log.log(level, "this replica (%s) stopped acting: %s", self.identity, why)
            if self._on_change is not None:
                self._on_change(False)

    def step(self) -> None:
        """One round of the loop, errors handled: a leader that cannot renew within the
        renew deadline stops acting."""
        try:
            held = self.try_acquire_or_renew()
        except LeaseConflict:
            held = False
        except LeaseError as exc:
            held = False
            log.debug("lease round failed: %s", exc)
        if not held:
            if self._leading and self.holder not in (None, self.identity):
                self._lost(f"the lease is held by {self.holder}")
            elif self._leading and not self.is_leader():
                self._lost(f"no renewal of the lease for {self.renew_deadline:.0f}s (the API is unreachable?)")

    def run(self) -> None:
        while not self._stop.is_set():
            self.step()
            if self._leading and not self.is_leader():
                self._lost(f"no renewal of the lease for {self.renew_deadline:.0f}s")
            self._stop.wait(self.retry_period)

    def start(self) -> LeaderElector:
        self._thread = threading.Thread(target=self.run, name="leader-election", daemon=True)
        self._thread.start()
        return self

    def stop(self, release: bool = True) -> None:
        """Stop campaigning; with ``release``, hand the Lease back (an empty holder) so another
        replica takes over without waiting out its duration."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.retry_period + 5)
        was_leader = self.is_leader()
        self._lost("shutting down", logging.INFO)
        if release and was_leader and self._observed is not None:
            try:
                self.client.update(replace(self._observed, holder="", renew_time=_micro(self._wall())))
            except LeaseError as exc:
                log.warning("could not release the lease: %s", exc)
        self.client.close()
