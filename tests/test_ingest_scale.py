"""Ingest at scale (bench.ingest holds the timings): minutes close as the ingest clock moves,
without ``step()``; a checkpoint appends what changed, so its size does not grow with the
history fed; the journal still replays exactly what was acknowledged; a failure that repeats
on every tick is logged once, again when it changes, and once when it recovers."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from collectors.store import Store
from controller.actuators.prewarm import KubernetesError, PrewarmExecutor
from controller.collect import CollectStage
from controller.loop import Controller
from controller.metrics import Metrics
from controller.settings import Settings, load_settings
from policies.types import PrewarmAction

T0 = datetime(2026, 11, 9, 14, 0, 0, tzinfo=UTC)
MODELS = {f"m{i}": f"p{i % 3}" for i in range(6)}


def exposition(minute: int) -> str:
    """Six deployments, each ``i + 1`` requests a minute, with a latency histogram."""
    lines = ["# TYPE litellm_deployment_total_requests counter",
             *(f'litellm_deployment_total_requests_total{{api_provider="{p}",litellm_model_name="{m}"}} '
               f"{(i + 1) * minute}" for i, (m, p) in enumerate(MODELS.items())),
             "# TYPE litellm_llm_api_latency_metric histogram"]
    for i, m in enumerate(MODELS):
        n = (i + 1) * minute
        lines += [f'litellm_llm_api_latency_metric_bucket{{model="{m}",le="1.0"}} {n / 2}',
                  f'litellm_llm_api_latency_metric_bucket{{model="{m}",le="+Inf"}} {n}',
                  f'litellm_llm_api_latency_metric_sum{{model="{m}"}} {n * 0.8}',
                  f'litellm_llm_api_latency_metric_count{{model="{m}"}} {n}']
    return "\n".join(lines) + "\n"


def stored_requests(store: Store) -> float:
    return sum(p.value for p in store.counters("requests", 0, 2**40))


@pytest.fixture
def scale_settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data", timezone="America/New_York",
                         router={"model_providers": MODELS}, forecast={"workers": 0})


def test_minutes_close_as_the_ingest_clock_moves_without_step(scale_settings: Settings) -> None:
    ctl = Controller.from_settings(scale_settings, clock=lambda: T0)
    series = 12  # 6 deployments x (requests, latency)
    grace_minutes = scale_settings.control.close_grace_seconds / 60
    most_open = 0
    for minute in range(6 * 60 + 1):  # six hours, one scrape a minute, never a step()
        ctl.ingest_exposition(exposition(minute), at=T0 + timedelta(minutes=minute))
        most_open = max(most_open, len(ctl.collect.aggregator))
    # Memory for open minutes is bounded by the grace (closed in batches), not by the history.
    assert most_open <= (2 * grace_minutes + 1) * series
    per_minute = sum(range(1, 7))
    still_open = sum(c.value for per_key in ctl.collect.aggregator.snapshot().values()
                     for k, c in per_key.items() if k.signal == "requests")
    assert 0 < still_open <= 2 * grace_minutes * per_minute
    assert stored_requests(ctl.store) + still_open == pytest.approx(6 * 60 * per_minute)
    ctl.flush()
    assert stored_requests(ctl.store) == pytest.approx(6 * 60 * per_minute)
    ctl.close()


class Ticks:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_checkpoint_appends_what_changed_whatever_the_history(scale_settings: Settings) -> None:
    ticks = Ticks()
    store = Store(scale_settings.data_dir, tz=scale_settings.timezone)
    stage = CollectStage(scale_settings, store, Metrics(CollectorRegistry()), monotonic=ticks)
    appended: list[int] = []
    for minute in range(8 * 60 + 1):  # eight hours, a checkpoint after every scrape
        ticks.t += scale_settings.control.checkpoint_seconds
        before = store.journal_rows
        stage.ingest_exposition(exposition(minute), T0 + timedelta(minutes=minute), None)
        appended.append(store.journal_rows - before)
    # Every checkpoint adds the cells one scrape touched (12 series, one minute each), in the
    # first hour as in the eighth; closing minutes settles theirs; compactions keep the
    # journal within a bound of what is open.
    assert max(appended[1:]) <= 12
    assert store.journal_rows <= 4 * len(stage.aggregator) + 1024
    assert max(appended[-60:]) == max(appended[1:61])
    # Killed now: the journal plus the store hold every scraped request, none twice.
    killed = Store(scale_settings.data_dir, tz=scale_settings.timezone)
    killed.recover_open()
    assert stored_requests(killed) == pytest.approx(8 * 60 * sum(range(1, 7)))
    killed.close()
    store.close()


def test_a_failed_checkpoint_is_appended_by_the_next_one(scale_settings: Settings,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from collectors.errors import StoreError

    ticks = Ticks()
    store = Store(scale_settings.data_dir, tz=scale_settings.timezone)
    stage = CollectStage(scale_settings, store, Metrics(CollectorRegistry()), monotonic=ticks)
    real = store.checkpoint

    def full(*_: object, **__: object) -> None:
        raise StoreError("database or disk is full")

    stage.ingest_exposition(exposition(0), T0, None)
    monkeypatch.setattr(store, "checkpoint", full)
    ticks.t += 10
    stage.ingest_exposition(exposition(1), T0 + timedelta(seconds=30), None)  # this checkpoint fails
    monkeypatch.setattr(store, "checkpoint", real)
    ticks.t += 10
    stage.ingest_exposition(exposition(2), T0 + timedelta(seconds=50), None)  # this one holds both
    killed = Store(scale_settings.data_dir, tz=scale_settings.timezone)
    killed.recover_open()
    assert stored_requests(killed) == pytest.approx(2 * sum(range(1, 7)))
    killed.close()
    store.close()


def test_a_prewarm_failing_on_every_tick_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    results: list[tuple[str, str]] = []
    errors = iter(["not in a cluster: KUBERNETES_SERVICE_HOST is not set"] * 100
                  + ["HTTP 403 from the Kubernetes API"] * 50)

    class Scaler:
        def get_replicas(self, namespace: str, name: str) -> int:
            message = next(errors, None)
            if message is not None:
                raise KubernetesError(message)
            return 1

        def set_replicas(self, namespace: str, name: str, replicas: int) -> None:
            return None

        def close(self) -> None:
            return None

    ex = PrewarmExecutor(lambda: Scaler(), lambda a, r: results.append((a, r)))
    with caplog.at_level(logging.INFO, logger="diurnal"):
        for i in range(151):
            at = T0 + timedelta(minutes=i)
            ex.apply((PrewarmAction("gamma", "llm/gamma", 3, at),), at)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings  # the first failure, and the change of what fails
    assert "KUBERNETES_SERVICE_HOST" in warnings[0] and "HTTP 403" in warnings[1]
    assert any("recovered after 150 failed attempts" in r.getMessage() for r in caplog.records)
    assert results.count(("gamma", "error")) == 150  # each one counted by the metric
    ex.close()
