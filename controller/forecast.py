"""The forecaster: ``forecast(history, horizon, tz=...) -> DataFrame``.

Seasonality is counted in local wall-clock time of ``tz``: the value "a week ago" for
Monday 09:00 local is last Monday's 09:00 local, whether or not a DST change lies between.
A fixed 168-step lag would shift it by an hour for the weeks after a transition.

Staging by history: under ``min_history`` (3 days) there is no forecast; under a week the
daily seasonal naive is used; from one week on, the weekly seasonal naive. Bands come from
the empirical quantiles of the chosen model's in-sample errors.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DEFAULT_COVERAGE = 0.8
MIN_HISTORY = pd.Timedelta(days=3)


class ForecastError(ValueError):
    """The history given to :func:`forecast` is not usable (not aware, not regular, ...)."""


def _step(index: pd.DatetimeIndex) -> pd.Timedelta:
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        raise ForecastError("history needs a timezone-aware DatetimeIndex (store UTC)")
    if len(index) < 2:
        raise ForecastError("history needs at least two points to infer its step")
    diffs = np.diff(index.as_unit("ns").asi8)
    if not index.is_monotonic_increasing or diffs.min() <= 0:
        raise ForecastError("history index must be strictly increasing")
    step = int(diffs.min())
    if np.any(diffs % step):
        raise ForecastError("history must be regular (NaN marks a gap; do not drop rows)")
    return pd.Timedelta(step, unit="ns")


def wall_clock_seconds(index: pd.DatetimeIndex, tz: str) -> np.ndarray:
    """Local wall-clock time of each instant, as seconds of a naive local epoch."""
    return np.asarray(index.tz_convert(tz).tz_localize(None).as_unit("s").asi8, dtype=np.int64)


def wall_clock_lag(history: pd.Series, targets: pd.DatetimeIndex, tz: str, lag: pd.Timedelta, step: pd.Timedelta) -> np.ndarray:
    """Values of ``history`` at the same local wall-clock time ``lag`` before each target.

    A wall time that does not exist (the hour skipped in spring) takes the nearest value
    within one step; the repeated autumn hour is the mean of its two occurrences.
    """
    values = np.asarray(history.to_numpy(dtype=float), dtype=float)
    wall = wall_clock_seconds(history.index, tz)
    uniq, inverse = np.unique(wall, return_inverse=True)
    if len(uniq) != len(wall):  # the repeated autumn hour: average its occurrences
        ok = ~np.isnan(values)
        sums = np.bincount(inverse, weights=np.where(ok, values, 0.0), minlength=len(uniq))
        counts = np.bincount(inverse, weights=ok.astype(float), minlength=len(uniq))
        with np.errstate(invalid="ignore"):
            values = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    want = wall_clock_seconds(targets, tz) - int(lag.total_seconds())
    out = np.full(len(want), np.nan)
    if len(uniq) == 0:
        return out
    pos = np.clip(np.searchsorted(uniq, want), 0, len(uniq) - 1)
    exact = uniq[pos] == want
    out[exact] = values[pos[exact]]
    tol = int(step.total_seconds())
    if (~exact).any():  # a wall time that does not exist: nearest within one step
        before = np.clip(pos - 1, 0, len(uniq) - 1)
        for cand in (pos, before):
            near = ~exact & np.isnan(out) & (np.abs(uniq[cand] - want) <= tol)
            out[near] = values[cand[near]]
    return out


def forecast(history: pd.Series, horizon: int, *, tz: str, coverage: float = DEFAULT_COVERAGE,
             min_history: pd.Timedelta = MIN_HISTORY) -> pd.DataFrame:
    """Forecast the next ``horizon`` steps of ``history``.

    Returns a frame indexed by the next steps (UTC) with ``mean``, ``lower`` and ``upper``
    (a ``coverage`` central interval); under ``min_history`` there is no forecast. ``attrs`` holds ``model`` (``"none"`` when history is
    too short, then every value is NaN), ``history_days`` and ``skill`` (NaN until a backtest
    exists).
    """
    if horizon < 1:
        raise ForecastError(f"horizon must be at least 1, got {horizon}")
    step = _step(history.index)
    index = history.index.tz_convert("UTC")
    history = pd.Series(history.to_numpy(dtype=float), index=index)
    targets = pd.date_range(index[-1] + step, periods=horizon, freq=step)
    observed = history.dropna()
    span = (observed.index[-1] - observed.index[0] + step) if len(observed) else pd.Timedelta(0)
    out = pd.DataFrame(index=targets, columns=["mean", "lower", "upper"], dtype=float)
    out.attrs.update(model="none", history_days=span / pd.Timedelta(days=1), skill=float("nan"))
    if span < min_history:
        return out

    lag = pd.Timedelta(days=7) if span >= pd.Timedelta(days=7) else pd.Timedelta(days=1)
    model = "seasonal_naive_weekly" if lag == pd.Timedelta(days=7) else "seasonal_naive_daily"
    mean = wall_clock_lag(history, targets, tz, lag, step)
    # Where last season has a gap, fall back a further season, then to the last value.
    for extra in (2, 3):
        holes = np.isnan(mean)
        if not holes.any():
            break
        mean[holes] = wall_clock_lag(history, targets[holes], tz, lag * extra, step)
    mean[np.isnan(mean)] = float(observed.iloc[-1])

    fitted = wall_clock_lag(history, index, tz, lag, step)
    resid = history.to_numpy(dtype=float) - fitted
    resid = resid[np.isfinite(resid)]
    alpha = (1.0 - coverage) / 2.0
    lo_q, hi_q = (np.quantile(resid, [alpha, 1.0 - alpha]) if resid.size >= 10 else (0.0, 0.0))
    lower, upper = mean + lo_q, mean + hi_q
    if (observed >= 0).all():  # a non-negative signal stays non-negative
        lower = np.maximum(lower, 0.0)
    out["mean"], out["lower"], out["upper"] = mean, np.minimum(lower, mean), np.maximum(upper, mean)
    out.attrs["model"] = model
    return out
