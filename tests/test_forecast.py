from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from controller.forecast import ForecastError, forecast

TZ = "America/New_York"


def weekly_series(start: str, end: str, *, noise: float = 0.0, seed: int = 0) -> pd.Series:
    """Hourly, with a daily shape and a spike at Monday 09:00 local."""
    idx = pd.date_range(start, end, freq="h", tz=TZ, inclusive="left").tz_convert("UTC")
    local = idx.tz_convert(TZ)
    base = 5 + 3 * np.sin((local.hour.to_numpy() - 6) / 24 * 2 * np.pi)
    spike = np.where((local.day_of_week == 0) & (local.hour == 9), 20.0, 0.0)
    rng = np.random.default_rng(seed)
    return pd.Series(base + spike + rng.normal(0, noise, len(idx)), index=idx)


def test_contract_shape_and_columns() -> None:
    hist = weekly_series("2026-05-04", "2026-05-25", noise=0.3)
    fc = forecast(hist, 24, tz=TZ)
    assert list(fc.columns) == ["mean", "lower", "upper"]
    assert len(fc) == 24
    assert fc.index[0] == hist.index[-1] + pd.Timedelta(hours=1)
    assert (fc["lower"] <= fc["mean"]).all() and (fc["mean"] <= fc["upper"]).all()
    assert fc.attrs["model"] == "seasonal_naive_weekly"


@pytest.mark.parametrize(
    ("end", "model"),
    [
        pytest.param("2026-05-06", "none", id="2-days-no-forecast"),
        pytest.param("2026-05-08", "seasonal_naive_daily", id="4-days-hour-of-day"),
        pytest.param("2026-05-18", "seasonal_naive_weekly", id="2-weeks-hour-of-week"),
        pytest.param("2026-06-15", "seasonal_naive_weekly", id="6-weeks-hour-of-week"),
    ],
)
def test_history_staging(end: str, model: str) -> None:
    fc = forecast(weekly_series("2026-05-04", end), 24, tz=TZ)
    assert fc.attrs["model"] == model
    assert fc["mean"].isna().all() == (model == "none")


@pytest.mark.parametrize(
    ("start", "end"),
    [
        pytest.param("2026-02-16", "2026-03-09", id="dst-spring-forward"),  # forecast Mon 2026-03-09
        pytest.param("2026-10-12", "2026-11-02", id="dst-fall-back"),       # forecast Mon 2026-11-02
    ],
)
def test_monday_spike_stays_at_nine_local_after_dst(start: str, end: str) -> None:
    hist = weekly_series(start, end)
    fc = forecast(hist, 24, tz=TZ)
    peak_local = fc["mean"].idxmax().tz_convert(TZ)
    assert (peak_local.day_of_week, peak_local.hour) == (0, 9)


def test_gaps_fall_back_to_an_earlier_season() -> None:
    hist = weekly_series("2026-05-04", "2026-05-25")
    hist[(hist.index >= pd.Timestamp("2026-05-18", tz=TZ)) & (hist.index < pd.Timestamp("2026-05-19", tz=TZ))] = np.nan
    fc = forecast(hist, 24, tz=TZ)
    assert not fc["mean"].isna().any()
    two_weeks_back = hist[pd.Timestamp("2026-05-11 09:00", tz=TZ)]
    assert fc["mean"].max() == pytest.approx(two_weeks_back)  # the spike, taken from two weeks back
    assert fc["mean"].idxmax().tz_convert(TZ).hour == 9


@pytest.mark.parametrize(
    "history",
    [
        pytest.param(pd.Series([1.0, 2.0], index=pd.date_range("2026-01-01", periods=2, freq="h")), id="naive-index"),
        pytest.param(pd.Series([1.0, 2.0, 3.0], index=pd.DatetimeIndex(
            ["2026-01-01 00:00", "2026-01-01 01:00", "2026-01-01 03:30"], tz="UTC")), id="irregular"),
        pytest.param(pd.Series([1.0], index=pd.date_range("2026-01-01", periods=1, freq="h", tz="UTC")), id="one-point"),
    ],
)
def test_unusable_history_is_a_clear_error(history: pd.Series) -> None:
    with pytest.raises(ForecastError):
        forecast(history, 3, tz=TZ)


def test_bands_cover_about_eighty_percent() -> None:
    hist = weekly_series("2026-01-05", "2026-03-02", noise=1.0, seed=3)
    future = weekly_series("2026-03-02", "2026-03-03", noise=1.0, seed=4)
    fc = forecast(hist, 24, tz="UTC")
    fc_local = forecast(hist, 24, tz=TZ)
    assert len(fc) == len(fc_local) == 24
    inside = ((future.to_numpy() >= fc_local["lower"].to_numpy()) & (future.to_numpy() <= fc_local["upper"].to_numpy()))
    assert 0.5 <= inside.mean() <= 1.0


def test_min_history_is_configurable() -> None:
    hist = weekly_series("2026-05-04", "2026-05-08")
    assert forecast(hist, 3, tz=TZ).attrs["model"] == "seasonal_naive_daily"
    assert forecast(hist, 3, tz=TZ, min_history=pd.Timedelta(days=5)).attrs["model"] == "none"
