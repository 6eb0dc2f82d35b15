"""Skill gating end to end: a series of noise is not acted on ahead; a seasonal one is."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from collectors.intervals import MinuteCell, MinuteRow
from collectors.mapping import SeriesKey
from collectors.store import Store
from controller import Controller
from controller.entrypoints.demo import demo_settings
from controller.settings import Settings
from sim import WorldSpec

NY = ZoneInfo("America/New_York")
LES = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, float("inf"))
START = datetime(2026, 9, 7, tzinfo=NY)  # a Monday; five weeks of history follow
NOW = datetime(2026, 10, 14, 13, 5, tzinfo=NY)  # a Wednesday afternoon, far from Monday 08:00


def _hist_cell(rng: np.random.Generator, median: float) -> MinuteCell:
    lat = rng.lognormal(np.log(median), 0.35, 400)
    return MinuteCell(count=float(len(lat)), sum=float(lat.sum()),
                      buckets={le: float((lat <= le).sum()) for le in LES})


def write_history(store: Store, until: datetime) -> None:
    """openai: slow on Monday 08-11 local, every week (seasonal). anthropic: p95 around 6 s
    with no daily or weekly shape at all (noise)."""
    rng = np.random.default_rng(4)
    rows = []
    t = START
    while t < until:
        local = t.astimezone(NY)
        busy = local.weekday() == 0 and 8 <= local.hour < 11
        for minute in (0, 30):
            ts = int(t.timestamp()) + minute * 60
            for provider, median in (("openai", 5.0 if busy else 1.2), ("anthropic", 3.3 * rng.lognormal(0, 0.12)),
                                     ("azure", 1.0)):
                rows.append(MinuteRow(ts, SeriesKey("latency", provider), _hist_cell(rng, median)))
                rows.append(MinuteRow(ts, SeriesKey("requests", provider), MinuteCell(value=400.0)))
        t += timedelta(hours=1)
    store.write(rows)


def controller(settings: Settings) -> Controller:
    store = Store(settings.data_dir, tz=settings.timezone)
    write_history(store, NOW - timedelta(minutes=5))
    return Controller(settings, store=store)


def test_noise_is_gated_and_the_controller_only_reacts_for_it(tmp_path: Path) -> None:
    settings = demo_settings(tmp_path / "data", WorldSpec())
    ctl = controller(settings)
    d = ctl.step(at=NOW)
    noise = d.reasons_for("forecast/latency_p95/anthropic")
    seasonal = d.reasons_for("forecast/latency_p95/openai")
    assert [r.code for r in noise] in (["NotSeasonal"], ["BelowSkillGate"])
    assert "reacting to observations only" in noise[0].message
    assert [r.code for r in seasonal] == ["ForecastTrusted"]
    # The untrusted forecast says "over the SLO" (the noise sits around 6 s), but it is not
    # acted on: no recent observation says so, so anthropic keeps its baseline.
    assert ctl.forecasts()[("latency_p95", "anthropic")].fit.frame["mean"].mean() > settings.policy.latency_slo_seconds
    assert [r.code for r in d.reasons_for("weights/anthropic")] != ["PredictedLatencyBreach"]
    assert d.weights["anthropic"] == pytest.approx(settings.policy.providers["anthropic"].baseline_weight)
    gauge = ctl.registry.get_sample_value
    assert gauge("diurnal_forecast_trusted", {"signal": "latency_p95", "provider": "anthropic"}) == 0
    assert gauge("diurnal_forecast_trusted", {"signal": "latency_p95", "provider": "openai"}) == 1
    assert gauge("diurnal_forecast_skill", {"signal": "latency_p95", "provider": "openai"}) > 0
    ctl.close()


def test_without_the_gate_the_same_noise_would_move_traffic(tmp_path: Path) -> None:
    """The control case: open the gates and the noise forecast is acted on ahead (by the
    heuristic weights policy, the one that acts on p95 forecasts)."""
    settings = demo_settings(tmp_path / "data", WorldSpec(),
                             forecast={"workers": 0, "skill_gate": -10.0, "seasonality_gate": -10.0})
    settings = settings.model_copy(update={"policy": settings.policy.model_copy(
        update={"weights_policy": "heuristic"})})
    ctl = controller(settings)
    d = ctl.step(at=NOW)
    assert [r.code for r in d.reasons_for("forecast/latency_p95/anthropic")] == ["ForecastTrusted"]
    assert [r.code for r in d.reasons_for("weights/anthropic")] == ["PredictedLatencyBreach"]
    ctl.close()


@pytest.mark.parametrize(
    ("days", "noise", "gates", "code"),
    [
        pytest.param(2, False, {}, "InsufficientHistory", id="InsufficientHistory"),
        pytest.param(28, False, {}, "ForecastTrusted", id="ForecastTrusted"),
        pytest.param(28, True, {}, "NotSeasonal", id="NotSeasonal"),
        pytest.param(28, False, {"skill_gate": 0.99}, "BelowSkillGate", id="BelowSkillGate"),
    ],
)
def test_forecast_gate_codes(days: int, noise: bool, gates: dict[str, float], code: str) -> None:
    import pandas as pd

    from controller.forecast import fit, gate

    idx = pd.date_range("2026-05-04", periods=days * 24, freq="h", tz="UTC")
    rng = np.random.default_rng(1)
    shape = 0 if noise else 10 * np.sin(2 * np.pi * np.arange(len(idx)) / 24)
    hist = pd.Series(100 + shape + rng.normal(0, 3, len(idx)), index=idx)
    assert gate(fit(hist, 24, tz="UTC"), **gates)[0] == code


def test_a_flat_load_whose_level_moves_day_to_day_is_not_seasonal() -> None:
    """A 3-week median of the same hour beats the last day's mean on such a series just by
    averaging out the daily level: that is smoothing, not seasonality. (The closed-loop
    benchmark's no-seasonality world showed it: the flat forecast was trusted and prewarm
    held its upper band.)"""
    import pandas as pd

    from controller.forecast import fit, gate

    idx = pd.date_range("2026-05-04", periods=35 * 24, freq="h", tz="UTC")
    rng = np.random.default_rng(4)
    day_level = np.repeat(np.exp(rng.normal(0, 0.05, 35)), 24)
    hist = pd.Series(600 * day_level + rng.normal(0, 3, len(idx)), index=idx)
    code, message = gate(fit(hist, 24, tz="UTC"))
    assert code == "NotSeasonal", message
