"""diurnal's hook for a LiteLLM proxy: it applies the weights diurnal publishes to the
proxy's deployments while the proxy runs, with no restart and no database.

This file stands alone (the standard library, httpx, and LiteLLM itself): copy it next to
the proxy's ``config.yaml`` as ``diurnal_litellm.py`` (``diurnal litellm-hook >
diurnal_litellm.py``) and list it among the proxy's callbacks::

    litellm_settings:
      callbacks: ["prometheus", "diurnal_litellm.hook"]

The proxy's environment configures it:

- ``DIURNAL_URL``: diurnal's API, e.g. ``http://127.0.0.1:8787``. Unset: the hook does nothing.
- ``DIURNAL_TOKEN``: a bearer token, if diurnal's API sits behind one (optional).
- ``DIURNAL_POLL_SECONDS``: how often ``GET /v1/decision`` is polled (default 5).
- ``DIURNAL_STALE_AFTER_SECONDS``: how long the weights last applied outlive diurnal's last
  answer (default 300); then the configured weights come back.
- ``DIURNAL_MODEL_GROUPS``: comma-separated model groups to steer (default: every group).

What it does. A thread polls ``GET /v1/decision`` with ``If-None-Match`` (a 304 costs no
body). diurnal's ``weights`` are per provider, named as LiteLLM's metrics name them (the
``api_provider`` label). In each model group, every deployment gets its provider's weight,
split among that provider's deployments in the group in proportion to their configured
``weight`` (1 when unset), as ``litellm_params.weight``: what LiteLLM's default
``simple-shuffle`` routing picks by. A group with a deployment whose provider the decision
does not weigh keeps its configured weights, as every group does while diurnal is in
``observe`` mode.

When diurnal is down or answers errors, the weights last applied stay for
``DIURNAL_STALE_AFTER_SECONDS`` after its last answer, then the configured weights come back
until it answers again. (diurnal itself publishes its baseline when its own inputs go stale.)

The proxy's ``/metrics`` (with the ``prometheus`` callback) gains
``diurnal_hook_following`` (1 while diurnal's weights are applied),
``diurnal_hook_weight{model_group,model_id,provider}`` and
``diurnal_hook_polls_total{result}``.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx

try:  # inside the proxy; the hook must be a CustomLogger to be accepted as a callback
    from litellm.integrations.custom_logger import CustomLogger as _Base
except ImportError:  # pragma: no cover - diurnal's own tests run it without LiteLLM
    _Base = object

__all__ = ["DiurnalWeights", "hook"]

log = logging.getLogger("diurnal.litellm")

Deployment = dict[str, Any]


def _deployment_provider(params: Mapping[str, Any]) -> str:
    """The provider LiteLLM's metrics give a deployment (``api_provider``)."""
    model = str(params.get("model", ""))
    try:
        from litellm import get_llm_provider

        return str(get_llm_provider(model=model, custom_llm_provider=params.get("custom_llm_provider"),
                                    api_base=params.get("api_base"))[1])
    except Exception:  # noqa: BLE001 - LiteLLM absent or the model unknown to it
        return str(params.get("custom_llm_provider") or (model.split("/", 1)[0] if "/" in model else ""))


def _proxy_router() -> Any:
    """The running proxy's router (None before the proxy has loaded its config)."""
    server = sys.modules.get("litellm.proxy.proxy_server")
    return getattr(server, "llm_router", None)


def _valid_weights(value: object) -> dict[str, float] | None:
    if not isinstance(value, dict) or not value:
        return None
    out: dict[str, float] = {}
    for k, v in value.items():
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, int | float):
            return None
        if not math.isfinite(v) or v < 0:
            return None
        out[k] = float(v)
    return out if any(v > 0 for v in out.values()) else None


class DiurnalWeights(_Base):  # type: ignore[misc]
    """The hook. ``router`` returns the proxy's router (tests pass their own); ``clock`` is
    monotonic seconds."""

    def __init__(self, url: str | None = None, *, token: str | None = None, poll_seconds: float = 5.0,
                 stale_after_seconds: float = 300.0, model_groups: Iterable[str] = (),
                 router: Callable[[], Any] = _proxy_router, clock: Callable[[], float] = time.monotonic,
                 transport: httpx.BaseTransport | None = None, start: bool = True) -> None:
        super().__init__()
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("DIURNAL_URL must be an http(s) URL")
        self.url = url.rstrip("/") if url else None
        self.poll_seconds = poll_seconds
        self.stale_after_seconds = stale_after_seconds
        self.model_groups = frozenset(model_groups)
        self._router = router
        self._clock = clock
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(headers=headers, timeout=min(poll_seconds, 5.0), transport=transport)
        self._etag: str | None = None
        self._weights: dict[str, float] | None = None  # diurnal's, while following it
        self._contact: float | None = None  # when diurnal last answered
        self._configured: dict[str, Any] = {}  # deployment id -> its configured weight (None: unset)
        self._written: dict[str, float] = {}  # deployment id -> the weight this hook set
        self._providers: dict[str, str] = {}
        self._skipped: set[str] = set()
        self._warned: set[str] = set()
        self.following = False
        self.applied: dict[tuple[str, str, str], float] = {}  # (group, id, provider) -> weight
        self.polls: dict[str, int] = {"ok": 0, "not_modified": 0, "error": 0}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        _register_metrics(self)
        if start and self.url:
            self._thread = threading.Thread(target=self._run, name="diurnal-litellm-hook", daemon=True)
            self._thread.start()

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> DiurnalWeights:
        return cls(env.get("DIURNAL_URL") or None, token=env.get("DIURNAL_TOKEN") or None,
                   poll_seconds=float(env.get("DIURNAL_POLL_SECONDS", "5")),
                   stale_after_seconds=float(env.get("DIURNAL_STALE_AFTER_SECONDS", "300")),
                   model_groups=[g.strip() for g in env.get("DIURNAL_MODEL_GROUPS", "").split(",") if g.strip()])

    # ---- the poll -------------------------------------------------------------------------

    def _run(self) -> None:
        log.info("diurnal hook: polling %s/v1/decision every %.0fs (stale after %.0fs)", self.url,
                 self.poll_seconds, self.stale_after_seconds)
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the proxy must never lose its thread to a bug here
                log.exception("diurnal hook: poll failed")
            self._stop.wait(self.poll_seconds)

    def poll(self) -> None:
        """One poll of diurnal, then the weights applied accordingly."""
        assert self.url is not None
        headers = {"If-None-Match": self._etag} if self._etag else {}
        weights: dict[str, float] | None = None
        try:
            resp = self._client.get(f"{self.url}/v1/decision", headers=headers)
        except httpx.HTTPError as exc:
            self._failed(f"unreachable ({type(exc).__name__})")
        else:
            if resp.status_code == 304:
                self.polls["not_modified"] += 1
                self._contact = self._clock()
            elif resp.status_code == 200:
                try:
                    body = resp.json()
                except ValueError:
                    body = None
                weights = _valid_weights(body.get("weights")) if isinstance(body, dict) else None
                if weights is None:
                    self._failed("a decision without valid weights")
                else:
                    self.polls["ok"] += 1
                    self._contact = self._clock()
                    self._etag = resp.headers.get("etag")
                    act = body.get("mode") == "act"
                    if act and weights != self._weights:
                        log.info("diurnal hook: following diurnal's weights %s", weights)
                    elif not act and self._weights is not None:
                        log.info("diurnal hook: diurnal is in %s mode; configured weights", body.get("mode"))
                    self._weights = weights if act else None
            else:
                self._failed(f"HTTP {resp.status_code}")
        self.apply()

    def _failed(self, why: str) -> None:
        self.polls["error"] += 1
        if self._weights is not None and self._stale():
            log.warning("diurnal hook: diurnal %s and last answered %s; configured weights restored", why,
                        "never" if self._contact is None else f"{self._clock() - self._contact:.0f}s ago")
            self._weights = None
            self._etag = None

    def _stale(self) -> bool:
        return self._contact is None or self._clock() - self._contact > self.stale_after_seconds

    # ---- the proxy's deployments ---------------------------------------------------------

    def apply(self) -> None:
        """Set every steered deployment's weight: diurnal's while it is followed, else the
        configured one."""
        if self._weights is not None and self._stale():
            self._weights = None
        router = self._router()
        if router is None:
            return
        with self._lock:
            strategy = getattr(router, "routing_strategy", None)
            if strategy not in (None, "simple-shuffle"):
                self._warn_once("strategy", "the proxy routes by %r, which ignores deployment weights: diurnal's "
                                "weights are set but change nothing (router_settings.routing_strategy: "
                                "simple-shuffle honours them)", strategy)
            groups: dict[str, list[Deployment]] = {}
            listed = list(getattr(router, "model_list", None) or [])
            for d in listed:
                if isinstance(d, dict) and isinstance(d.get("litellm_params"), dict):
                    groups.setdefault(str(d.get("model_name", "")), []).append(d)
            if listed and not groups:
                self._warn_once("shape", "the proxy's model list holds no deployment this hook can read "
                                "(%s); nothing is steered", type(listed[0]).__name__)
            applied: dict[tuple[str, str, str], float] = {}
            for group, deployments in groups.items():
                if self.model_groups and group not in self.model_groups:
                    continue
                for d in deployments:
                    self._remember(d)
                target = self._targets(group, deployments) if self._weights is not None else None
                for d in deployments:
                    ident = self._ident(d)
                    if target is None:
                        self._restore(d)
                    else:
                        d["litellm_params"]["weight"] = self._written[ident] = target[ident]
                        applied[(group, ident, self._providers[ident])] = target[ident]
            self.applied = applied
            self.following = bool(applied)

    def _warn_once(self, kind: str, message: str, *args: object) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning("diurnal hook: " + message, *args)

    @staticmethod
    def _ident(d: Deployment) -> str:
        info = d.get("model_info")
        return str(info.get("id")) if isinstance(info, dict) and info.get("id") else str(d["litellm_params"].get("model"))

    def _remember(self, d: Deployment) -> None:
        """The configured weight, taken before this hook first writes one (and again when
        the proxy replaced the one written, e.g. on a config reload)."""
        ident = self._ident(d)
        current = d["litellm_params"].get("weight")
        if ident not in self._configured or (ident in self._written and current != self._written[ident]):
            self._configured[ident] = current
            self._written.pop(ident, None)
        if ident not in self._providers:
            self._providers[ident] = _deployment_provider(d["litellm_params"])

    def _restore(self, d: Deployment) -> None:
        ident = self._ident(d)
        if ident not in self._written:
            return
        configured = self._configured.get(ident)
        if configured is None:
            d["litellm_params"].pop("weight", None)
        else:
            d["litellm_params"]["weight"] = configured
        del self._written[ident]

    def _targets(self, group: str, deployments: list[Deployment]) -> dict[str, float] | None:
        """Each deployment's weight in ``group``; None when the decision does not weigh
        every provider in it (the group keeps its configuration)."""
        assert self._weights is not None
        by_provider: dict[str, list[str]] = {}
        for d in deployments:
            ident = self._ident(d)
            by_provider.setdefault(self._providers[ident], []).append(ident)
        unknown = sorted(set(by_provider) - set(self._weights))
        if unknown:
            if group not in self._skipped:
                self._skipped.add(group)
                log.warning("diurnal hook: model group %r keeps its configured weights: diurnal has no weight "
                            "for %s", group, ", ".join(unknown))
            return None
        self._skipped.discard(group)
        out: dict[str, float] = {}
        for provider, idents in by_provider.items():
            parts = {i: _configured_part(self._configured.get(i)) for i in idents}
            total = sum(parts.values())
            for i in idents:
                share = parts[i] / total if total > 0 else 1 / len(idents)
                out[i] = round(self._weights[provider] * share, 6)
        return out if sum(out.values()) > 0 else None

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.poll_seconds + 6)
        self._client.close()


def _configured_part(weight: object) -> float:
    if weight is None or isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
        return 1.0
    return max(0.0, float(weight))


class _Metrics:
    """The hook's state on the proxy's /metrics (prometheus_client's default registry):
    registered once per process, reading the newest hook."""

    def __init__(self) -> None:
        self.hook: DiurnalWeights | None = None

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        h = self.hook
        if h is None:
            return
        yield GaugeMetricFamily("diurnal_hook_following", "1 while diurnal's weights are applied; 0: the configured "
                                "ones.", value=1.0 if h.following else 0.0)
        weight = GaugeMetricFamily("diurnal_hook_weight", "The weight the hook set on a deployment.",
                                   labels=["model_group", "model_id", "provider"])
        for (group, ident, provider), w in sorted(h.applied.items()):
            weight.add_metric([group, ident, provider], w)
        yield weight
        polls = CounterMetricFamily("diurnal_hook_polls", "Polls of diurnal's GET /v1/decision, by result.",
                                    labels=["result"])
        for result, n in sorted(h.polls.items()):
            polls.add_metric([result], n)
        yield polls


def _register_metrics(h: DiurnalWeights) -> None:
    try:
        from prometheus_client import REGISTRY
    except ImportError:  # pragma: no cover - the prometheus callback needs it anyway
        return
    holder = getattr(REGISTRY, "_diurnal_hook_metrics", None)
    if holder is None:
        holder = _Metrics()
        REGISTRY.register(holder)
        REGISTRY._diurnal_hook_metrics = holder  # type: ignore[attr-defined]
    holder.hook = h


#: The instance the proxy's config names (``diurnal_litellm.hook``).
hook = DiurnalWeights.from_env() if __name__ != "controller.actuators.litellm_hook" else None
