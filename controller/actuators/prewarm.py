"""Carrying out prewarm steps (``act`` mode only), and the Kubernetes scale client.

- ``replicas``: the Deployment's ``scale`` subresource, through the in-cluster API with the
  pod's service-account token (re-read each call: projected tokens rotate). A prewarm only
  raises replicas; when a plan is released it goes back down only to the count it found
  before raising, and only if nobody changed the Deployment since (an HPA or a person wins).
  An action with ``scale_in`` is diurnal's own: it is set to the computed amount both ways.
- ``webhook``: POST ``{"action", "target", "amount", "peak_at", "release_at"}`` to the target
  URL, with the same retry rules as the decision webhook.
- ``pool``: nothing to call; the router reads the size from the decision.

The controller hands each decision's steps to :meth:`PrewarmExecutor.submit`, which applies
them on a background thread; a step that failed is retried with the next decision.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections import deque
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from collectors.errors import DiurnalError
from collectors.redact import redact
from controller.actuators.publishers import LatestWins, WebhookPublisher
from controller.errors import ErrorThrottle
from controller.httpclient import bounded_client
from policies import PrewarmAction

if TYPE_CHECKING:
    from controller.settings import KubernetesSettings

__all__ = ["KubernetesError", "KubernetesScaler", "PrewarmExecutor", "ReplicaScaler"]

log = logging.getLogger("diurnal.prewarm")

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubernetesError(DiurnalError, RuntimeError):
    """The Kubernetes API refused or could not be reached."""


class ReplicaScaler(Protocol):
    """What the executor needs of a cluster: :class:`KubernetesScaler` in production; an
    embedding program (the closed-loop benchmark's simulated cluster) may pass its own."""

    def get_replicas(self, namespace: str, name: str) -> int: ...

    def set_replicas(self, namespace: str, name: str, replicas: int) -> int: ...

    def close(self) -> None: ...


class KubernetesScaler:
    def __init__(self, api_url: str, token_path: Path = SA_DIR / "token", ca_path: Path | None = SA_DIR / "ca.crt",
                 *, timeout: float = 5.0, transport: httpx.BaseTransport | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        self.token_path = token_path
        verify: ssl.SSLContext | bool = True
        if transport is None and ca_path is not None and ca_path.exists():
            verify = ssl.create_default_context(cafile=str(ca_path))
        self._client = bounded_client(timeout, verify=verify, transport=transport)

    @classmethod
    def from_settings(cls, k: KubernetesSettings) -> KubernetesScaler:
        """The client ``publish.kubernetes`` asks for: its ``api_url``, else the in-cluster API."""
        if k.api_url:
            return cls(k.api_url, k.token_path, k.ca_path, timeout=k.timeout_seconds)
        return cls.in_cluster(token_path=k.token_path, ca_path=k.ca_path, timeout=k.timeout_seconds)

    @classmethod
    def in_cluster(cls, **kw: Any) -> KubernetesScaler:
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise KubernetesError("not in a cluster: KUBERNETES_SERVICE_HOST is not set (set publish.kubernetes.api_url)")
        return cls(f"https://{host}:{port}", **kw)

    def _path(self, namespace: str, name: str) -> str:
        return f"{self.api_url}/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"

    def _headers(self) -> dict[str, str]:
        try:
            token = self.token_path.read_text().strip()
        except OSError as exc:
            raise KubernetesError(f"cannot read the service-account token at {self.token_path}: {exc}") from exc
        return {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    def _call(self, method: str, url: str, **kw: Any) -> dict[str, Any]:
        try:
            resp = self._client.request(method, url, headers={**self._headers(), **kw.pop("headers", {})}, **kw)
        except httpx.HTTPError as exc:
            raise KubernetesError(redact(f"{method} {url}: {exc}")) from exc
        if resp.status_code >= 300:
            raise KubernetesError(redact(f"{method} {url}: HTTP {resp.status_code} {resp.text[:300]}"))
        body: dict[str, Any] = resp.json()
        return body

    def get_replicas(self, namespace: str, name: str) -> int:
        return int(self._call("GET", self._path(namespace, name)).get("spec", {}).get("replicas", 0))

    def set_replicas(self, namespace: str, name: str, replicas: int) -> int:
        body = self._call("PATCH", self._path(namespace, name), json={"spec": {"replicas": int(replicas)}},
                          headers={"Content-Type": "application/merge-patch+json"})
        return int(body.get("spec", {}).get("replicas", replicas))

    def close(self) -> None:
        self._client.close()


class PrewarmExecutor:
    """Applies the current step of each prewarm action when its amount changes."""

    def __init__(self, scaler_factory: Callable[[], ReplicaScaler] | None = None,
                 report: Callable[[str, str], None] | None = None,
                 webhook_factory: Callable[[str], WebhookPublisher] | None = None,
                 owned: frozenset[str] = frozenset(), scale_in_window: timedelta = timedelta(minutes=5)) -> None:
        self._scaler_factory = scaler_factory
        #: Actions whose Deployment diurnal owns: it scales them in as well as out, to the
        #: highest amount asked for over ``scale_in_window`` (an HPA's scale-down
        #: stabilization), so a dip of a few minutes never cancels replicas still warming up.
        self._owned = owned
        self._scale_in_window = scale_in_window
        self._asked: dict[str, deque[tuple[Any, int]]] = {}
        self._scaler: ReplicaScaler | None = None
        self._report = report or (lambda *_: None)
        self._webhook_factory = webhook_factory or (lambda url: WebhookPublisher(url))
        self._webhooks: dict[str, WebhookPublisher] = {}
        self._applied: dict[str, float] = {}
        #: Per action: its failures said once, then when they change or recover.
        self._errors: dict[str, ErrorThrottle] = {}
        #: replicas found before a prewarm raised them, and what it set: (found, set)
        self._raised: dict[str, tuple[int, int]] = {}
        self._queue: LatestWins[tuple[tuple[PrewarmAction, ...], Any]] = LatestWins(
            lambda item: self.apply(*item), "prewarm-executor")

    def submit(self, steps: tuple[PrewarmAction, ...], now: Any) -> None:
        """Apply in the background (the newest steps replace ones not yet applied), so a slow
        or unreachable Kubernetes API never holds up a control tick."""
        self._queue.put((steps, now))

    def wait_idle(self, timeout: float | None = None) -> bool:
        return self._queue.wait_idle(timeout)

    def apply(self, steps: tuple[PrewarmAction, ...], now: Any) -> None:
        current = {p.action: p for p in steps if p.at <= now}
        for name, p in current.items():
            if self._applied.get(name) == p.amount and name not in self._owned:  # owned: may still scale in
                continue
            try:
                if p.kind == "replicas":
                    self._replicas(p, now)
                elif p.kind == "webhook":
                    self._webhook(p)
                self._applied[name] = p.amount
                self._report(name, "ok")
                self._throttle(name).succeeded()
            except KubernetesError as exc:
                self._report(name, "error")  # diurnal_prewarm_actions_total{result="error"} counts each
                self._throttle(name).failed(str(exc))

    def _throttle(self, name: str) -> ErrorThrottle:
        throttle = self._errors.get(name)
        if throttle is None:
            throttle = self._errors[name] = ErrorThrottle(f"prewarm {name}", every=None,
                                                          meanwhile="retried on every tick")
        return throttle

    def _replicas(self, p: PrewarmAction, now: Any) -> None:
        if self._scaler is None:
            if self._scaler_factory is None:
                raise KubernetesError("no Kubernetes API configured for replicas prewarm")
            self._scaler = self._scaler_factory()
        namespace, name = p.target.split("/", 1)
        have = self._scaler.get_replicas(namespace, name)
        want = int(p.amount)
        if p.action in self._owned:
            asked = self._asked.setdefault(p.action, deque())
            asked.append((now, want))
            while asked and asked[0][0] < now - self._scale_in_window:
                asked.popleft()
            if want < have:  # scale in only as far as every recent ask allows
                want = max(a for _, a in asked)
            if want != have:
                self._scaler.set_replicas(namespace, name, want)
                log.info("prewarm %s: %s scaled %d -> %d", p.action, p.target, have, want)
            return
        raised = self._raised.get(p.action)
        if want > have:
            found = raised[0] if raised is not None and raised[1] == have else have
            self._scaler.set_replicas(namespace, name, want)
            self._raised[p.action] = (found, want)
            log.info("prewarm %s: %s scaled %d -> %d", p.action, p.target, have, want)
        elif raised is not None and want < have:
            found, did = raised
            if have != did:  # someone else changed it since: theirs to manage
                self._raised.pop(p.action)
                return
            back = max(want, found)
            self._scaler.set_replicas(namespace, name, back)
            log.info("prewarm %s released: %s scaled %d -> %d", p.action, p.target, have, back)
            if back == found:
                self._raised.pop(p.action)
            else:
                self._raised[p.action] = (found, back)

    def _webhook(self, p: PrewarmAction) -> None:
        hook = self._webhooks.get(p.target)
        if hook is None:
            hook = self._webhooks[p.target] = self._webhook_factory(p.target)
        body = {"action": p.action, "target": redact(p.target), "amount": p.amount,
                "peak_at": p.peak_at.isoformat() if p.peak_at else None,
                "release_at": p.release_at.isoformat() if p.release_at else None}
        hook.publish(body, f'"{p.action}-{p.amount:g}-{p.at.isoformat()}"')

    def close(self) -> None:
        self._queue.close(10)
        for hook in self._webhooks.values():
            hook.close()
        if self._scaler is not None:
            self._scaler.close()
