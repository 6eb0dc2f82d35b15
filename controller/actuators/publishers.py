"""Publishers: push each new decision where a router reads it (in ``act`` mode only).

- :class:`FilePublisher`: an atomic write of JSON or YAML, for a router that hot-reloads a
  mounted file; ``shape="litellm"`` writes a LiteLLM proxy config fragment (deployment
  weights in ``model_list``, ``router_settings``).
- :class:`WebhookPublisher`: POST with httpx from one background thread. Each decision has
  bounded attempts with exponential backoff and full jitter, and carries its ETag as the
  ``Idempotency-Key``; a newer decision replaces one still waiting, so a target that is down
  sees at most one request in flight and never a backlog (no retry storms), and the control
  loop never waits for it.

Polling ``GET /v1/decision`` (with ETag) needs no publisher.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx
import yaml

from collectors.redact import redact
from controller.actuators.atomic import atomic_write
from controller.errors import ErrorThrottle
from controller.httpclient import bounded_client

__all__ = ["FilePublisher", "LatestWins", "Publisher", "Report", "WebhookPublisher", "build_publishers",
           "litellm_config"]

log = logging.getLogger("diurnal.publish")

T = TypeVar("T")

#: Called with (publisher, result) after each publish attempt outcome, for metrics.
Report = Callable[[str, str], None]


class LatestWins(Generic[T]):
    """One background thread handling items one at a time, where an item not yet started is
    replaced by a newer one: a slow or failing consumer never builds a backlog, and the
    producer (the control loop) never waits. ``newer`` is set while an item waits, so a
    handler can cut a backoff short."""

    def __init__(self, handle: Callable[[T], None], name: str) -> None:
        self._handle = handle
        self._name = name
        self._cond = threading.Condition()
        self._pending: T | None = None
        self._closed = False
        self._idle = threading.Event()
        self._idle.set()
        self.newer = threading.Event()
        self._thread: threading.Thread | None = None

    def put(self, item: T) -> None:
        with self._cond:
            self._pending = item
            self._idle.clear()
            self.newer.set()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every item put was handled (tests, shutdown)."""
        return self._idle.wait(timeout)

    def _take(self) -> T | None:
        with self._cond:
            while self._pending is None and not self._closed:
                self._idle.set()
                self._cond.wait()
            if self._closed:
                self._idle.set()
                return None
            item, self._pending = self._pending, None
            self.newer.clear()
            return item

    def _run(self) -> None:
        while (item := self._take()) is not None:
            try:
                self._handle(item)
            except Exception:  # the thread must outlive any one failure
                log.exception("%s failed; going on with the next item", self._name)

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._closed = True
            self.newer.set()
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)


def litellm_config(weights: Mapping[str, float], model_providers: Mapping[str, str], group: str) -> dict[str, Any]:
    """A LiteLLM config fragment: each deployment of a provider gets an equal part of its
    provider's weight (LiteLLM's simple-shuffle picks deployments of one model_name by weight)."""
    by_provider: dict[str, list[str]] = {}
    for model, provider in sorted(model_providers.items()):
        by_provider.setdefault(provider, []).append(model)
    model_list = []
    for provider, weight in sorted(weights.items()):
        models = by_provider.get(provider, [])
        for model in models:
            model_list.append({"model_name": group,
                               "litellm_params": {"model": model, "weight": round(weight / len(models), 6)}})
    return {"model_list": model_list, "router_settings": {"routing_strategy": "simple-shuffle"}}


class FilePublisher:
    name = "file"

    def __init__(self, path: Path, fmt: str = "json", shape: str = "decision",
                 model_providers: Mapping[str, str] | None = None, group: str = "diurnal",
                 report: Report | None = None) -> None:
        self.path = path
        self.fmt = fmt
        self.shape = shape
        self.model_providers = dict(model_providers or {})
        self.group = group
        self._report = report or (lambda *_: None)
        self._failed: tuple[str, float] | None = None
        #: Failures said once, then when they change or recover (counted by ``report``).
        self._errors = ErrorThrottle(f"writing the decision to {path}", every=None)

    def retry_due(self, etag: str) -> bool:
        """Whether the write of this decision failed (a full disk) and is worth trying again."""
        return self._failed is not None and self._failed[0] == etag and time.monotonic() - self._failed[1] >= 5.0

    def render(self, body: Mapping[str, Any]) -> bytes:
        doc: Any = body
        if self.shape == "litellm":
            weights = body.get("weights", {})
            doc = litellm_config(weights, self.model_providers, self.group)
        if self.fmt == "yaml":
            return yaml.safe_dump(doc, sort_keys=False).encode()
        return (json.dumps(doc, indent=2, sort_keys=False) + "\n").encode()

    def publish(self, body: Mapping[str, Any], etag: str) -> None:
        try:
            atomic_write(self.path, self.render(body))
        except OSError as exc:
            self._report(self.name, "error")
            self._errors.failed(str(exc))
            self._failed = (etag, time.monotonic())
            return
        self._failed = None
        self._errors.succeeded()
        self._report(self.name, "ok")

    def close(self) -> None:
        return None


class WebhookPublisher:
    name = "webhook"

    def __init__(self, url: str, *, bearer_token: str | None = None, timeout: float = 5.0, max_attempts: int = 4,
                 backoff: float = 1.0, max_backoff: float = 30.0, report: Report | None = None,
                 transport: httpx.BaseTransport | None = None, sleep: Callable[[float], None] | None = None) -> None:
        self.url = url
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._report = report or (lambda *_: None)
        self._errors = ErrorThrottle(f"webhook {redact(url)}", every=None, meanwhile="the decision in force is "
                                     "sent again while it is current")
        headers = {"Content-Type": "application/json", "User-Agent": "diurnal"}
        if bearer_token:
            headers["Authorization"] = f"Bearer {bearer_token}"
        self._client = bounded_client(timeout, headers=headers, transport=transport)
        self._sleep = sleep
        #: The decision last given up on, and when: sent again while it is current.
        self._failed: tuple[str, float] | None = None
        self.redeliver_after = min(max_backoff, backoff * 2 ** max_attempts)
        self._queue: LatestWins[tuple[Mapping[str, Any], str]] = LatestWins(
            lambda item: self._deliver(*item), "webhook-publisher")

    def publish(self, body: Mapping[str, Any], etag: str) -> None:
        """Queue ``body``; returns at once. A decision still waiting is replaced."""
        self._queue.put((body, etag))

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every queued decision was delivered or given up (tests, shutdown)."""
        return self._queue.wait_idle(timeout)

    def retry_due(self, etag: str) -> bool:
        """Whether this decision was given up on ``redeliver_after`` seconds ago or more: a
        receiver that was down gets the decision in force once it is back, though the
        decision has not changed since."""
        failed = self._failed
        return failed is not None and failed[0] == etag and time.monotonic() - failed[1] >= self.redeliver_after

    def _pause(self, seconds: float) -> bool:
        """Back off; False when a newer decision (or close) cut the wait short."""
        if self._sleep is not None:
            self._sleep(seconds)
            return not self._queue.newer.is_set()
        return not self._queue.newer.wait(seconds)

    def _deliver(self, body: Mapping[str, Any], etag: str) -> None:
        data = json.dumps(body).encode()
        for attempt in range(1, self.max_attempts + 1):
            retry_after: float | None = None
            try:
                resp = self._client.post(self.url, content=data, headers={"Idempotency-Key": etag.strip('"')})
                if resp.status_code < 300:
                    self._failed = None
                    self._errors.succeeded()
                    self._report(self.name, "ok")
                    return
                if resp.status_code < 500 and resp.status_code != 429:
                    self._report(self.name, "rejected")
                    self._errors.failed(f"refused the decision: HTTP {resp.status_code} {resp.text[:200]}")
                    return  # a 4xx will not get better by retrying
                retry_after = _retry_after(resp.headers.get("Retry-After"))
                problem = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                problem = redact(f"{type(exc).__name__}: {exc}")
            if attempt == self.max_attempts:
                self._failed = (etag, time.monotonic())
                self._report(self.name, "failed")
                self._errors.failed(f"gave up on a decision after {attempt} attempts ({problem})")
                return
            self._report(self.name, "retry")
            cap = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
            delay = max(retry_after or 0.0, random.uniform(0, cap))  # full jitter
            if not self._pause(min(delay, self.max_backoff)):
                self._report(self.name, "superseded")
                return  # a newer decision is waiting: send that one instead

    def close(self, timeout: float = 5.0) -> None:
        self._queue.close(timeout)
        self._client.close()


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


Publisher = FilePublisher | WebhookPublisher


def build_publishers(settings: Any, report: Report) -> list[Publisher]:
    """The publishers the settings switch on."""
    p = settings.publish
    out: list[Publisher] = []
    if p.file.path is not None:
        out.append(FilePublisher(Path(p.file.path), p.file.format, p.file.shape, settings.router.model_providers,
                                 p.file.litellm_model_group, report))
    if p.webhook.url is not None:
        w = p.webhook
        out.append(WebhookPublisher(w.url, bearer_token=w.bearer_token.get_secret_value() if w.bearer_token else None,
                                    timeout=w.timeout_seconds, max_attempts=w.max_attempts, backoff=w.backoff_seconds,
                                    max_backoff=w.max_backoff_seconds, report=report))
    return out
