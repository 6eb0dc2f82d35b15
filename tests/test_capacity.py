"""The measured knee: where load, not the clock, pushes p95 over the SLO."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from collectors.intervals import MinuteCell, MinuteRow
from collectors.mapping import SeriesKey
from collectors.store import Store
from controller import Controller, load_settings
from controller.forecast.capacity import measured_knee

IDX = pd.date_range("2026-10-05", periods=21 * 24, freq="h", tz="UTC")
RNG = np.random.default_rng(3)
RPS = pd.Series(RNG.uniform(2, 20, len(IDX)), index=IDX)


def p95_of(rps: pd.Series, knee_rps: float = 10.0) -> pd.Series:
    """Flat at 2 s until the knee, then steeply up (5 s SLO crossed just past it)."""
    return pd.Series(2.0 + np.maximum(0.0, rps.to_numpy() - knee_rps) * 1.5, index=rps.index)


def test_a_load_knee_is_found() -> None:
    knee = measured_knee(RPS, p95_of(RPS), 5.0)
    assert knee is not None and 600 <= knee <= 780  # 10-13 rps: p95 crosses 5 s at 12 rps


@pytest.mark.parametrize(
    ("p95", "rps"),
    [
        pytest.param(pd.Series(2.0, index=IDX), RPS, id="never-over-the-slo"),
        pytest.param(pd.Series(9.0, index=IDX), RPS, id="always-over-the-slo"),
        pytest.param(pd.Series(np.where(IDX.hour == 3, 9.0, 2.0) + RPS.to_numpy() * 0, index=IDX),
                     pd.Series(np.where(IDX.hour == 3, 2.0, 15.0), index=IDX), id="slow-when-quiet"),
        pytest.param(p95_of(RPS)[:20], RPS[:20], id="too-few-hours"),
    ],
)
def test_no_knee(p95: pd.Series, rps: pd.Series) -> None:
    assert measured_knee(rps, p95, 5.0) is None


def test_controller_uses_the_knee_as_capacity(tmp_path: Path) -> None:
    les = (1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, float("inf"))
    settings = load_settings(data_dir=tmp_path / "d", forecast={"workers": 0}, policy={
        "latency_slo_seconds": 5.0,
        "providers": {"a": {"baseline_weight": 0.5, "measure_knee": True}, "b": {"baseline_weight": 0.5}}})
    store = Store(settings.data_dir, tz=settings.timezone)
    rows = []
    p95 = p95_of(RPS)
    for ts, rps in RPS.items():
        t = int(ts.timestamp())
        for minute in range(0, 60, 10):  # a few minutes an hour are enough for hourly rollups
            lat = RNG.normal(p95[ts] / 1.3, 0.05, 200)
            rows.append(MinuteRow(t + minute * 60, SeriesKey("latency", "a"),
                                  MinuteCell(count=200.0, sum=float(lat.sum()),
                                             buckets={le: float((lat <= le).sum()) for le in les})))
            rows.append(MinuteRow(t + minute * 60, SeriesKey("requests", "a"), MinuteCell(value=float(rps) * 60)))
    store.write(rows)
    ctl = Controller(settings, store=store)
    ctl.step(at=datetime(2026, 10, 26, 0, 5, tzinfo=ZoneInfo("UTC")) + timedelta(minutes=1))
    cap = ctl.policy_config().providers["a"].capacity_rpm
    assert cap is not None and 500 <= cap <= 800
    assert ctl.policy_config().providers["b"].capacity_rpm is None
    assert ctl.registry.get_sample_value("diurnal_provider_capacity_rpm", {"provider": "a", "source": "measured"}) == cap
    ctl.close()
