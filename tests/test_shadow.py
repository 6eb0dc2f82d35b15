"""The shadow report while observing: each minute's decision is kept in the store as the tick
makes it (kept across a restart, pruned after 8 days), the report estimates from those and the
router's own counts what acting would have changed, a minute without a decision is held from
the one before and counted, and the API and the metrics serve the latest report."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from bench.closedloop import bench_settings, world
from collectors.store import Store
from controller.entrypoints.api import create_app
from controller.entrypoints.service import refresh_shadow
from controller.errors import ConfigError
from controller.loop import Controller
from controller.replay.shadow import shadow, shadow_report
from sim.scenarios import BENCH_WEIGHTS
from tests.conftest import sidecar_history

WARM_DAYS = 2
OBSERVED_HOURS = 5
GAP = (150, 180)  # minutes into the observed hours when diurnal was not running


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, dict[int, dict[str, float]], datetime]:
    """A store with WARM_DAYS of the router, then OBSERVED_HOURS of diurnal observing with a
    tick a minute (and half an hour not running); the recommended weights of each tick."""
    data_dir = tmp_path_factory.mktemp("shadow")
    got = sidecar_history(data_dir, WARM_DAYS)
    ctl, router, settings = got.ctl, got.router, got.settings
    recommended: dict[int, dict[str, float]] = {}
    try:
        for minute in range(OBSERVED_HOURS * 60):
            got.now += timedelta(minutes=1)
            router.advance(got.now)
            ctl.ingest_exposition(router.exposition(), at=got.now)
            if GAP[0] <= minute < GAP[1]:
                continue
            decision = ctl.step(at=got.now)
            recommended[int(got.now.timestamp()) // 60 * 60 - 60] = dict(decision.recommended_weights)
    finally:
        ctl.close()
    return data_dir, settings, recommended, got.now


def test_each_minutes_recommendation_is_kept_and_survives_a_restart(observed: Any) -> None:
    data_dir, settings, recommended, now = observed
    store = Store(data_dir, tz=settings.timezone, read_only=True)  # a new process: the kept decisions are there
    try:
        kept = store.decided(0, int(now.timestamp()) + 60)
    finally:
        store.close()
    weights = {n.split(":", 1)[1]: dict(s) for n, s in kept.items() if n.startswith("weight:")}
    assert set(weights) == set(BENCH_WEIGHTS)
    assert {ts for s in weights.values() for ts in s} == set(recommended)  # one per minute ticked, none else
    for ts, rec in recommended.items():
        assert {p: weights[p][ts] for p in rec} == pytest.approx(rec)
    assert any(n.startswith("units:") for n in kept)  # the pool's amount in force


def test_the_report_estimates_every_policy_over_the_minutes_observed(observed: Any) -> None:
    data_dir, settings, recommended, now = observed
    store = Store(data_dir, tz=settings.timezone, read_only=True)
    try:
        got = shadow(settings, store, now)
        report = shadow_report(settings, store, now)
    finally:
        store.close()
    w = got.walk
    assert w.start == min(recommended) and w.walked == OBSERVED_HOURS * 60
    # The half hour not running is held from the minute before it, and said.
    gap_start = w.start + (GAP[0] - 1) * 60
    i = (gap_start - w.start) // 60
    for p in w.providers:
        assert (w.weights[p][i:i + GAP[1] - GAP[0] + 1] == w.weights[p][i]).all()
        assert w.weights[p][i] == pytest.approx(recommended[gap_start - 60][p])
    assert any(f"{GAP[1] - GAP[0]} minutes have no decision of their own" in c for c in report["caveats"])
    assert any("covers 0.2 days" in c for c in report["caveats"])
    # Diurnal's split is its kept weights applied to the demand; actual is what the router did.
    assert set(report["policies"]) == {"actual", "static", "reactive", "diurnal"}
    est = got.estimate
    share = {p: float(est.outcomes["diurnal"].load[p].sum() / est.demand.sum()) for p in w.providers}
    mean = {p: float(np.average(w.weights[p][:w.walked], weights=est.demand)) for p in w.providers}
    assert share == pytest.approx(mean, abs=1e-6)
    requests = {p: float(w.observed["requests"][p][:w.walked].sum()) for p in w.providers}
    assert report["policies"]["actual"]["share"] == pytest.approx(
        {p: r / sum(requests.values()) for p, r in requests.items()}, abs=1e-3)
    assert report["would_save_usd"] == pytest.approx(
        report["policies"]["actual"]["cost_usd"] - report["policies"]["diurnal"]["cost_usd"], abs=0.011)
    assert report["computed_at"] == now.isoformat()


def test_too_few_decisions_is_one_line(tmp_path: Path) -> None:
    scenario = world("capacity-busy-1", 1)
    settings = bench_settings(scenario, tmp_path, "observe")
    store = Store(tmp_path, tz=settings.timezone)
    try:
        with pytest.raises(ConfigError, match="no decision is kept yet"):
            shadow(settings, store, scenario.scored_start)
        t = int(scenario.scored_start.timestamp())
        for m in range(10):
            store.put_decided(t + 60 * m, {"weight:a": 1.0})
        with pytest.raises(ConfigError, match="10 minutes of decisions are kept; the report needs 60"):
            shadow(settings, store, scenario.scored_start + timedelta(minutes=10))
    finally:
        store.close()


def test_kept_decisions_are_pruned_after_eight_days(tmp_path: Path) -> None:
    store = Store(tmp_path, minute_retention=86400)
    try:
        t = 1_800_000_000
        store.put_decided(t, {"weight:a": 0.5, "units:pool": float("nan")})  # a non-finite value is left out
        store.put_decided(t + 9 * 86400, {"weight:a": 0.25})
        store.prune(t + 9 * 86400)
        assert store.decided(0, t + 10 * 86400) == {"weight:a": [(t + 9 * 86400, 0.25)]}
    finally:
        store.close()


def test_the_api_and_the_metrics_serve_the_latest_report(observed: Any, tmp_path: Path) -> None:
    data_dir, settings, _, now = observed
    ctl = Controller.from_settings(settings.model_copy(update={"data_dir": data_dir}), clock=lambda: now,
                                   refit_in_step=False)
    try:
        client = TestClient(create_app(ctl))
        missing = client.get("/v1/report")
        assert missing.status_code == 404 and "not computed yet" in missing.json()["detail"]
        assert ctl.registry.get_sample_value("diurnal_replay_would_save_usd") is None
        refresh_shadow(ctl)
        body = client.get("/v1/report").json()
        assert body["period"]["minutes"] == OBSERVED_HOURS * 60
        assert ctl.registry.get_sample_value("diurnal_replay_would_save_usd") == body["would_save_usd"]
        for policy, o in body["policies"].items():
            assert ctl.registry.get_sample_value("diurnal_replay_cost_usd", {"policy": policy}) == o["cost_usd"]
            assert ctl.registry.get_sample_value("diurnal_replay_slo_risk_seconds",
                                                 {"policy": policy}) == 60 * o["slo_risk_minutes"]
    finally:
        ctl.close()
