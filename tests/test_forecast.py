"""The forecaster's contract: staging, wall-clock seasonality across DST, gaps, outliers,
known anomalies, bands, skill and the model choice."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

import controller.forecast as fc_mod
from controller.forecast import ForecastError, Selection, fit, forecast

TZ = "America/New_York"


def weekly_series(start: str, end: str, *, noise: float = 0.0, seed: int = 0, tz: str = TZ) -> pd.Series:
    """Hourly (UTC index), with a daily shape, a weekend dip and a spike at Monday 09:00 local."""
    idx = pd.date_range(start, end, freq="h", tz=tz, inclusive="left").tz_convert("UTC")
    local = idx.tz_convert(tz)
    base = 10 + 3 * np.sin((local.hour.to_numpy() - 6) / 24 * 2 * np.pi)
    base = base - np.where(local.day_of_week >= 5, 3.0, 0.0)
    spike = np.where((local.day_of_week == 0) & (local.hour == 9), 20.0, 0.0)
    rng = np.random.default_rng(seed)
    return pd.Series(base + spike + rng.normal(0, noise, len(idx)), index=idx)


def models_of(hist: pd.Series, horizon: int = 24) -> dict[str, pd.DataFrame]:
    """Every candidate of the history's stage, forced in turn (plus the chosen one as "chosen")."""
    chosen = fit(hist, horizon, tz=TZ)
    assert chosen.selection is not None
    out = {"chosen": chosen.frame}
    for name in chosen.selection.scores:
        out[name] = fit(hist, horizon, tz=TZ, selection=replace(chosen.selection, model=name)).frame
    return out


def test_contract_shape_columns_and_attrs() -> None:
    hist = weekly_series("2026-05-04", "2026-06-01", noise=0.3)
    fc = forecast(hist, 24, tz=TZ)
    assert list(fc.columns) == ["mean", "lower", "upper"]
    assert len(fc) == 24
    assert fc.index[0] == hist.index[-1] + pd.Timedelta(hours=1)
    assert (fc["lower"] <= fc["mean"]).all() and (fc["mean"] <= fc["upper"]).all()
    assert fc.attrs["stage"] == "weekly"
    assert fc.attrs["model"] in fc.attrs["scores"]
    assert {"seasonal_naive_weekly", "seasonal_median_weekly", "mstl", "level"} <= set(fc.attrs["scores"])
    assert fc.attrs["skill"] > 0 and fc.attrs["trusted"] is True
    assert fc.attrs["history_days"] == pytest.approx(28.0)


@pytest.mark.parametrize(
    ("end", "stage"),
    [
        pytest.param("2026-05-06", "none", id="2-days-no-forecast"),
        pytest.param("2026-05-07", "daily", id="3-days-hour-of-day"),
        pytest.param("2026-05-18", "daily", id="2-weeks-still-hour-of-day"),
        pytest.param("2026-06-15", "weekly", id="6-weeks-hour-of-week"),
    ],
)
def test_history_staging(end: str, stage: str) -> None:
    hist = weekly_series("2026-05-04", end, noise=0.2)
    fc = forecast(hist, 24, tz=TZ)
    assert fc.attrs["stage"] == stage
    assert fc["mean"].isna().all() == (stage == "none")
    if stage == "none":
        assert fc.attrs["model"] == "none" and not fc.attrs["trusted"]
    elif stage == "daily":
        assert "daily" in fc.attrs["model"] or fc.attrs["model"] == "level"
        # hour of day only: no Monday spike is predicted from days that are not Mondays
        assert fc["mean"].max() < 20
    else:
        peak = fc["mean"].idxmax().tz_convert(TZ)
        assert (peak.day_of_week, peak.hour) == (0, 9)  # the forecast starts Monday 2026-06-15


def test_staging_thresholds_are_parameters() -> None:
    hist = weekly_series("2026-05-04", "2026-05-18")
    assert forecast(hist, 3, tz=TZ, weekly_history=pd.Timedelta(days=14)).attrs["stage"] == "weekly"
    assert forecast(hist, 3, tz=TZ, min_history=pd.Timedelta(days=15)).attrs["model"] == "none"


@pytest.mark.parametrize(
    ("start", "end"),
    [
        pytest.param("2026-02-09", "2026-03-09", id="spring-forward-23h-day"),  # change on Sun 03-08
        pytest.param("2026-10-05", "2026-11-02", id="fall-back-25h-day"),       # change on Sun 11-01
        pytest.param("2026-02-16", "2026-03-16", id="spring-forward-a-week-before"),
        pytest.param("2026-10-12", "2026-11-16", id="fall-back-two-weeks-before"),
    ],
)
def test_monday_nine_local_stays_at_nine_after_dst(start: str, end: str) -> None:
    hist = weekly_series(start, end, noise=0.2)
    for name, frame in models_of(hist).items():
        if name == "level":
            continue
        peak = frame["mean"].idxmax().tz_convert(TZ)
        assert (peak.day_of_week, peak.hour) == (0, 9), name


def test_forecast_across_a_transition_inside_the_horizon() -> None:
    # History ends Saturday 2026-10-31; the 48 h horizon holds the 25-hour Sunday.
    hist = weekly_series("2026-10-03", "2026-10-31", noise=0.1)
    f = forecast(hist, 48, tz=TZ)
    local = f.index.tz_convert(TZ)
    assert len(f) == 48 and f.index.is_monotonic_increasing
    # the same local hour gets the same forecast whether it is EDT or EST
    one_am = f["mean"][(local.day == 1) & (local.hour == 1)]
    assert len(one_am) == 2 and one_am.iloc[0] == pytest.approx(one_am.iloc[1])


def test_short_gaps_are_interpolated_and_long_gaps_masked() -> None:
    hist = weekly_series("2026-05-04", "2026-06-01", noise=0.1)
    truth = weekly_series("2026-06-01", "2026-06-02", noise=0.0)
    holes = hist.copy()
    holes[pd.Timestamp("2026-05-26 10:00", tz=TZ):pd.Timestamp("2026-05-26 11:00", tz=TZ)] = np.nan  # 2 h
    holes[pd.Timestamp("2026-05-25", tz=TZ):pd.Timestamp("2026-05-25 23:00", tz=TZ)] = np.nan  # last Monday
    for name, frame in models_of(holes).items():
        if name == "level":
            continue
        assert not frame["mean"].isna().any(), name
        assert np.abs(frame["mean"].to_numpy() - truth.to_numpy()).mean() < 1.0, name
        peak = frame["mean"].idxmax().tz_convert(TZ)
        assert (peak.day_of_week, peak.hour) == (0, 9), name


def test_an_outage_and_a_spike_last_week_do_not_come_back() -> None:
    hist = weekly_series("2026-05-04", "2026-06-01", noise=0.2, seed=5)
    truth = weekly_series("2026-06-01", "2026-06-02")
    bad = hist.copy()
    last_monday = pd.Timestamp("2026-05-25", tz=TZ)
    bad[last_monday + pd.Timedelta(hours=6):last_monday + pd.Timedelta(hours=12)] = 0.0   # outage: zeros
    bad[last_monday + pd.Timedelta(hours=15)] = 500.0                                    # a one-off spike
    result = fit(bad, 24, tz=TZ)
    assert result.outliers >= 7
    for name, frame in models_of(bad).items():
        if name == "level":
            continue
        err = np.abs(frame["mean"].to_numpy() - truth.to_numpy())
        assert err.max() < 3.0, name  # neither the zeros nor the 500 are repeated
        assert frame["mean"].idxmax().tz_convert(TZ).hour == 9, name


def test_known_anomalies_can_be_excluded() -> None:
    hist = weekly_series("2026-05-04", "2026-06-01", noise=1.0)
    holiday = (datetime.fromisoformat("2026-05-25T00:00-04:00"), datetime.fromisoformat("2026-05-26T00:00-04:00"))
    window = (hist.index >= pd.Timestamp(holiday[0])) & (hist.index < pd.Timestamp(holiday[1]))
    quiet = hist.copy()
    quiet[window] *= 0.85  # a quiet holiday Monday: believable, so no outlier test flags it
    masked = quiet.copy()
    masked[window] = np.nan
    sel = replace(fit(quiet, 24, tz=TZ).selection, model="seasonal_naive_weekly")  # type: ignore[arg-type]
    fooled = fit(quiet, 24, tz=TZ, selection=sel).frame["mean"]
    told = fit(quiet, 24, tz=TZ, selection=sel, exclude=[holiday]).frame["mean"]
    pd.testing.assert_series_equal(told, fit(masked, 24, tz=TZ, selection=sel).frame["mean"])
    truth = weekly_series("2026-06-01", "2026-06-02")
    assert np.abs(told.to_numpy() - truth.to_numpy()).mean() < np.abs(fooled.to_numpy() - truth.to_numpy()).mean()


def test_bands_cover_about_eighty_percent() -> None:
    inside = []
    for seed in range(6):
        series = weekly_series("2026-01-05", "2026-03-09", noise=1.0, seed=seed, tz="UTC")
        for day in range(0, 14, 2):
            cut = pd.Timestamp("2026-02-23", tz="UTC") + pd.Timedelta(days=day)
            hist, future = series[series.index < cut], series[(series.index >= cut)][:24]
            f = forecast(hist, 24, tz="UTC")
            inside.extend((future.to_numpy() >= f["lower"].to_numpy()) & (future.to_numpy() <= f["upper"].to_numpy()))
    assert 0.7 <= np.mean(inside) <= 0.9


def test_noise_is_not_given_seasonality() -> None:
    idx = pd.date_range("2026-05-04", periods=6 * 168, freq="h", tz="UTC")
    noise = pd.Series(np.random.default_rng(11).normal(100, 5, len(idx)), index=idx)
    f = forecast(noise, 24, tz=TZ)
    assert f.attrs["trusted"] is False
    assert f.attrs["seasonality_gain"] < 0.1
    assert f["mean"].std() < 2.5  # no invented daily shape (the noise has sd 5)


def test_the_loss_weighs_under_prediction(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two fake candidates: one 1.0 under the truth, one 1.5 over it."""
    hist = weekly_series("2026-05-04", "2026-06-01")

    def candidates(inp: object, h: int, stage: str, only: str | None = None, dec: object = None) -> dict[str, np.ndarray]:
        values = np.asarray(inp.values)  # type: ignore[attr-defined]
        naive = values[len(values) - 168:len(values) - 168 + h]  # exact: the series repeats weekly
        out = {"seasonal_naive_weekly": naive + 5.0, "low": naive - 1.0, "high": naive + 1.5, "level": naive * 0 + 10}
        return out if only is None else {only: out[only]}

    monkeypatch.setattr(fc_mod, "_predict_all", candidates)
    assert fit(hist, 24, tz=TZ).model == "low"
    assert fit(hist, 24, tz=TZ, under_penalty=2.0).model == "high"


def test_skill_is_relative_to_seasonal_naive() -> None:
    hist = weekly_series("2026-05-04", "2026-06-15", noise=1.0, seed=2)
    sel = fit(hist, 24, tz=TZ).selection
    assert sel is not None
    ref = sel.scores["seasonal_naive_weekly"]
    assert sel.skill == pytest.approx(1 - sel.scores[sel.model] / ref)
    assert sel.skill > 0.1  # averaging several weeks beats last week's noise


def test_decomposition_adds_up() -> None:
    hist = weekly_series("2026-05-04", "2026-06-15", noise=0.5)
    result = fit(hist, 24, tz=TZ, decomposition=True)
    dec = result.decomposition
    assert dec is not None and list(dec.columns) == ["trend", "daily", "weekly", "residual"]
    assert len(dec) == len(hist)
    assert np.allclose(dec.sum(axis=1).to_numpy(), hist.to_numpy(), atol=1e-6)
    monday_nine = dec.index.tz_convert(TZ)
    spike = dec["weekly"][(monday_nine.day_of_week == 0) & (monday_nine.hour == 9)]
    assert spike.mean() > 10  # the Monday spike is weekly seasonality, not trend or noise


def test_a_reused_selection_skips_the_backtest() -> None:
    hist = weekly_series("2026-05-04", "2026-06-01", noise=0.3)
    first = fit(hist, 24, tz=TZ)
    assert first.selection is not None
    forced = Selection("weekly", "seasonal_naive_weekly", 0.5, 0.5, (-1.0, 1.0), 1.0)
    again = fit(hist, 24, tz=TZ, selection=forced)
    assert again.selection is forced and again.model == "seasonal_naive_weekly"
    # a selection from another stage is not reused
    daily = fit(hist, 24, tz=TZ, selection=replace(forced, stage="daily"))
    assert daily.selection is not None and daily.selection.stage == "weekly" and daily.selection is not forced


def test_finer_steps_keep_their_step() -> None:
    idx = pd.date_range("2026-05-04", "2026-05-26", freq="15min", tz=TZ, inclusive="left").tz_convert("UTC")
    local = idx.tz_convert(TZ)
    y = pd.Series(10 + np.where((local.hour == 9) & (local.minute == 30), 5.0, 0.0), index=idx)
    f = forecast(y, 96, tz=TZ)
    assert len(f) == 96 and (f.index[1] - f.index[0]) == pd.Timedelta(minutes=15)
    peak = f["mean"].idxmax().tz_convert(TZ)
    assert (peak.hour, peak.minute) == (9, 30)


@pytest.mark.parametrize(
    ("history", "match"),
    [
        pytest.param(pd.Series([1.0, 2.0], index=pd.date_range("2026-01-01", periods=2, freq="h")), "timezone-aware",
                     id="naive-index"),
        pytest.param(pd.Series([1.0, 2.0, 3.0], index=pd.DatetimeIndex(
            ["2026-01-01 00:00", "2026-01-01 01:00", "2026-01-01 03:30"], tz="UTC")), "regular", id="irregular"),
        pytest.param(pd.Series([1.0], index=pd.date_range("2026-01-01", periods=1, freq="h", tz="UTC")), "two points",
                     id="one-point"),
        pytest.param(pd.Series([1.0, 2.0], index=pd.date_range("2026-01-01", periods=2, freq="7min", tz="UTC")),
                     "divide a day", id="step-not-dividing-a-day"),
    ],
)
def test_unusable_history_is_a_clear_error(history: pd.Series, match: str) -> None:
    with pytest.raises(ForecastError, match=match):
        forecast(history, 3, tz=TZ)


def test_all_nan_and_inf_history_gives_no_forecast() -> None:
    idx = pd.date_range("2026-05-04", periods=200, freq="h", tz="UTC")
    f = forecast(pd.Series(np.where(np.arange(200) % 2, np.nan, np.inf), index=idx), 5, tz=TZ)
    assert f.attrs["model"] == "none" and f["mean"].isna().all()


def test_statsmodels_is_imported_lazily() -> None:
    code = ("import sys, controller.entrypoints.cli, controller.loop, controller.entrypoints.api, controller.forecast; "
            "print('statsmodels' in sys.modules or 'scipy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_before_a_backtest_is_possible_the_naive_is_untrusted_but_banded() -> None:
    hist = weekly_series("2026-05-04", "2026-05-07 12:00", noise=0.5)  # 3.5 days
    f = forecast(hist, 24, tz=TZ)
    assert f.attrs["model"] == "seasonal_naive_daily" and f.attrs["trusted"] is False
    assert (f["upper"] - f["lower"]).min() > 0.5
