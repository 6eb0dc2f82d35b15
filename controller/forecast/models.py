"""The candidate models. Each maps cleaned history on the local grid to ``h`` next values.

All work on positions of the local wall-clock grid (see :mod:`controller.forecast.grid`), so a
"period" is a number of positions: ``per_day`` or ``per_week``.

- ``seasonal_naive``: the value one period ago; a gap falls back one more period (up to 3).
- ``seasonal_median``: the median of the same slot over the last 3 periods.
- ``mstl``: statsmodels MSTL (daily, and weekly from three weeks) with ``seasonal_deg=0``;
  the seasonal parts are carried forward, the trend is extrapolated with a damped slope and
  the remainder decays as an AR(1). statsmodels is imported here, lazily.
- ``level``: no seasonality at all, flat at the mean of the last day. It is the yardstick for
  "is there seasonality to act on", and the right answer for a series of noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Fallback depth for gaps, and the window of the seasonal median, in periods.
SEASONS_BACK = 3
#: Trend damping per day: the slope's effect halves in about 3 days.
TREND_DAMPING_PER_DAY = 0.8
#: Largest AR(1) coefficient allowed for the remainder.
MAX_AR = 0.95


@dataclass(frozen=True)
class Inputs:
    """Cleaned history up to a forecast origin."""

    values: np.ndarray  # long gaps NaN
    filled: np.ndarray  # no NaN
    per_day: int

    def upto(self, n: int) -> Inputs:
        return Inputs(self.values[:n], self.filled[:n], self.per_day)

    @property
    def per_week(self) -> int:
        return 7 * self.per_day


def _seasonal(inp: Inputs, h: int, period: int, combine: str) -> np.ndarray:
    n = len(inp.values)
    ext = np.concatenate([inp.values, np.full(h, np.nan)])
    fill = np.concatenate([inp.filled, np.full(h, np.nan)])
    for b in range(n, n + h, period):
        k = np.arange(b, min(b + period, n + h))
        lags = [k - j * period for j in range(1, SEASONS_BACK + 1) if (k - j * period >= 0).all()]
        if not lags:  # under one period of history: repeat what there is
            vals = fill[np.maximum(k - period, 0) % max(n, 1)]
        else:
            stack = np.vstack([ext[i] for i in lags])
            if combine == "median":
                with np.errstate(all="ignore"):
                    vals = np.full(len(k), np.nan)
                    some = np.isfinite(stack).any(axis=0)
                    vals[some] = np.nanmedian(stack[:, some], axis=0)
            else:  # the first season back that has a value
                vals = stack[0].copy()
                for row in stack[1:]:
                    vals = np.where(np.isnan(vals), row, vals)
            vals = np.where(np.isnan(vals), fill[lags[0]], vals)
        ext[k] = vals
        fill[k] = vals
    return ext[n:]


def seasonal_naive(inp: Inputs, h: int, period: int) -> np.ndarray:
    return _seasonal(inp, h, period, "first")


def seasonal_median(inp: Inputs, h: int, period: int) -> np.ndarray:
    return _seasonal(inp, h, period, "median")


def level(inp: Inputs, h: int) -> np.ndarray:
    """Flat at the mean of the last day: it follows level shifts as a trend model would, but
    has no daily or weekly shape, so beating it takes seasonality."""
    recent = inp.values[-inp.per_day:]
    recent = recent[np.isfinite(recent)]
    value = float(np.mean(recent)) if len(recent) else float(inp.filled[-1])
    return np.full(h, value)


@dataclass(frozen=True)
class Decomposition:
    """MSTL components on the grid positions of the fitted span (the last ``len(trend)``)."""

    trend: np.ndarray
    daily: np.ndarray
    weekly: np.ndarray
    residual: np.ndarray


def decompose(inp: Inputs, weekly: bool) -> Decomposition:
    """MSTL with ``seasonal_deg=0``, so the last season (carried forward) is not bent by
    end-of-sample noise; the loess jumps keep it to tens of milliseconds for 8 weeks hourly."""
    from statsmodels.tsa.seasonal import MSTL  # lazy: a 1-3 s import, kept off the hot path

    periods = tuple(p for p in ((inp.per_day, inp.per_week) if weekly else (inp.per_day,)) if len(inp.filled) > 2 * p)
    if not periods:
        raise ValueError(f"MSTL needs over two days of history, got {len(inp.filled)} steps")
    jump = max(1, round(inp.per_day * 0.4))
    kwargs: dict[str, Any] = {"seasonal_deg": 0, "trend_jump": jump, "low_pass_jump": jump}
    res = MSTL(inp.filled, periods=periods, stl_kwargs=kwargs).fit()
    seasonal = np.asarray(res.seasonal, dtype=float)
    if seasonal.ndim == 1:
        seasonal = seasonal[:, None]
    daily = seasonal[:, 0]
    week = seasonal[:, 1] if seasonal.shape[1] > 1 else np.zeros_like(daily)
    return Decomposition(np.asarray(res.trend, dtype=float), daily, week, np.asarray(res.resid, dtype=float))


def _carry(component: np.ndarray, period: int, h: int) -> np.ndarray:
    last = component[-period:]
    return np.asarray(last[np.arange(h) % period], dtype=float)


def mstl_forecast(dec: Decomposition, per_day: int, h: int) -> np.ndarray:
    per_week = 7 * per_day
    season = _carry(dec.daily, per_day, h) + _carry(dec.weekly, per_week, h)
    trend = dec.trend
    slope = (trend[-1] - trend[-1 - per_day]) / per_day if len(trend) > per_day else 0.0
    phi = TREND_DAMPING_PER_DAY ** (1.0 / per_day)
    steps = np.arange(1, h + 1)
    damped = phi * (1 - phi**steps) / (1 - phi)
    rem = dec.residual[-2 * per_week:]
    ar = 0.0
    if len(rem) > 2 and np.std(rem[:-1]) > 0 and np.std(rem[1:]) > 0:
        ar = float(np.corrcoef(rem[:-1], rem[1:])[0, 1])
        ar = min(MAX_AR, max(0.0, ar)) if math.isfinite(ar) else 0.0
    remainder = dec.residual[-1] * ar**steps
    return np.asarray(trend[-1] + slope * damped + season + remainder, dtype=float)
