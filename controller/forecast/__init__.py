"""The forecaster: ``forecast(history, horizon, *, tz) -> DataFrame``, a stable contract.

How a forecast is made (each step has its own module):

1. **Grid** (:mod:`~controller.forecast.grid`): the UTC history is laid on a regular grid of
   local wall-clock time in ``tz``, so a day is always 24 hours and "Monday 09:00" is the same
   slot on both sides of a DST change.
2. **Stage** by how much history there is: under ``min_history`` (3 days) no forecast; then
   hour-of-day models; from ``weekly_history`` (3 weeks) hour-of-week models.
3. **Clean** (:mod:`~controller.forecast.clean`): short gaps interpolated, long gaps masked,
   outliers and ``exclude`` windows (known anomalies) replaced by the expected value.
4. **Select** (:mod:`~controller.forecast.models` holds the candidates): a rolling-origin
   backtest over the last ``backtest_days`` days, one origin per day at the forecast's own
   time of day, a day ahead each. The loss weighs under-prediction ``under_penalty`` times
   (use >1 for load signals). The lowest loss wins.
5. **Bands**: the chosen model's backtest errors, scaled by the forecast's size, give the
   ``coverage`` interval.

The result carries ``attrs``: ``model``, ``stage``, ``skill`` (1 - MAE/MAE of the stage's
seasonal naive, on the backtest), ``seasonality_gain`` (1 - MAE of the best seasonal model /
MAE of the better flat forecast: the last day's mean, or the mean of a long window), ``trusted`` (both above their gates), ``history_days``,
``outliers`` and ``scores`` (backtest MAE per candidate). :func:`fit` returns the same as a
:class:`Fit`, with the decomposition and a :class:`Selection` that a later refit can reuse to
skip the backtest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import numpy as np
import pandas as pd

from controller.forecast import models
from controller.forecast.clean import Cleaned, clean
from controller.forecast.grid import (
    DAY,
    ForecastError,
    Grid,
    step_seconds,
    to_grid,
    wall_clock_seconds,
)
from policies.types import ReasonCode

__all__ = [
    "DEFAULT_COVERAGE", "MIN_HISTORY", "WEEKLY_HISTORY", "Fit", "ForecastError", "Selection", "fit", "forecast",
    "gate", "wall_clock_seconds",
]

DEFAULT_COVERAGE = 0.8
MIN_HISTORY = pd.Timedelta(days=3)
WEEKLY_HISTORY = pd.Timedelta(weeks=3)
#: Longest history a fit reads; older points are dropped.
MAX_HISTORY = pd.Timedelta(weeks=8)
#: Gaps up to this long are interpolated; longer ones are masked.
MAX_INTERPOLATED_GAP = pd.Timedelta(hours=3)
#: Default gates: a forecast is trusted to act ahead on when both are met.
SKILL_GATE = 0.0
SEASONALITY_GATE = 0.1

Stage = Literal["none", "daily", "weekly"]
Model = Callable[[models.Inputs, int], np.ndarray]


@dataclass(frozen=True)
class Selection:
    """What a backtest chose; reusable by a refit of the same series and stage."""

    stage: Stage
    model: str
    skill: float
    seasonality_gain: float
    band: tuple[float, float]  # quantiles of the scaled errors
    band_floor: float  # the constant part of the error scale
    scores: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Fit:
    """A forecast with everything known about it."""

    frame: pd.DataFrame
    stage: Stage
    selection: Selection | None
    history_days: float
    outliers: int
    decomposition: pd.DataFrame | None = None

    @property
    def model(self) -> str:
        return self.selection.model if self.selection else "none"

    @property
    def skill(self) -> float:
        return self.selection.skill if self.selection else float("nan")


def gate(result: Fit, *, skill_gate: float = SKILL_GATE,
         seasonality_gate: float = SEASONALITY_GATE) -> tuple[ReasonCode, str]:
    """Whether a forecast may be acted on ahead: a reason code and a message.

    ``ForecastTrusted``; ``InsufficientHistory`` (no forecast yet); ``NotSeasonal`` (no
    seasonal model beats a flat forecast by ``seasonality_gate``: a series of noise); or
    ``BelowSkillGate`` (it does not do as well as seasonal naive, by ``skill_gate``).
    """
    sel = result.selection
    if sel is None:
        return ReasonCode.InsufficientHistory, f"{result.history_days:.1f} days of history: too little for a forecast"
    detail = f"model {sel.model} ({result.stage}), skill {sel.skill:+.2f}, seasonality gain {sel.seasonality_gain:+.2f}"
    if not sel.seasonality_gain >= seasonality_gate:
        return ReasonCode.NotSeasonal, f"{detail}: no seasonality beats a flat forecast by {seasonality_gate:g}"
    if not sel.skill >= skill_gate:
        return ReasonCode.BelowSkillGate, f"{detail}: under the skill gate {skill_gate:g}"
    return ReasonCode.ForecastTrusted, f"{detail}: trusted to act ahead"


def _candidates(stage: Stage, per_day: int) -> dict[str, Model]:
    if stage == "daily":
        return {
            "seasonal_naive_daily": lambda i, h: models.seasonal_naive(i, h, per_day),
            "seasonal_median_daily": lambda i, h: models.seasonal_median(i, h, per_day),
            "level": models.level,
        }
    return {
        "seasonal_naive_weekly": lambda i, h: models.seasonal_naive(i, h, 7 * per_day),
        "seasonal_median_weekly": lambda i, h: models.seasonal_median(i, h, 7 * per_day),
        "level": models.level,
    }


def _predict_all(inp: models.Inputs, h: int, stage: Stage, only: str | None = None,
                 dec: models.Decomposition | None = None) -> dict[str, np.ndarray]:
    """Every candidate's forecast (or just ``only``'s), sharing one MSTL fit (``dec`` if given)."""
    cands = _candidates(stage, inp.per_day)
    mstl_name = "mstl" if stage == "weekly" else "mstl_daily"
    median_name = "seasonal_median_weekly" if stage == "weekly" else "seasonal_median_daily"
    combo = f"{mstl_name}+median"
    names = [*cands, mstl_name, combo] if only is None else [only]
    if only is not None and only not in names and only not in cands and only not in (mstl_name, combo):
        raise ForecastError(f"no model {only!r} at stage {stage!r}")
    need = set(names) | ({mstl_name, median_name} if combo in names else set())
    out = {name: fn(inp, h) for name, fn in cands.items() if name in need}
    if mstl_name in need:
        dec = dec if dec is not None else models.decompose(inp, weekly=stage == "weekly")
        out[mstl_name] = models.mstl_forecast(dec, inp.per_day, h)
    if combo in need:
        out[combo] = (out[mstl_name] + out[median_name]) / 2
    return {name: out[name] for name in names}


def _reference(stage: Stage) -> str:
    return "seasonal_naive_weekly" if stage == "weekly" else "seasonal_naive_daily"


def _error_scale(pred: np.ndarray, floor: float) -> np.ndarray:
    return np.asarray(np.abs(pred) + floor, dtype=float)


def _select(cleaned: Cleaned, per_day: int, stage: Stage, *, backtest_days: int, under_penalty: float,
            coverage: float) -> Selection:
    n = len(cleaned.values)
    inp = models.Inputs(cleaned.values, cleaned.filled, per_day)
    h = per_day
    least = 2 * (7 * per_day if stage == "weekly" else per_day) + per_day  # MSTL needs over 2 seasons
    origins = [n - j * per_day for j in range(1, backtest_days + 1) if n - j * per_day >= least]
    floor = 0.1 * float(np.nanmedian(np.abs(cleaned.truth))) if np.isfinite(cleaned.truth).any() else 0.0
    floor = max(floor, 1e-9)
    errors: dict[str, list[np.ndarray]] = {}
    scaled: dict[str, list[np.ndarray]] = {}
    # A second flat reference, for the seasonality gain only: the mean of a long window. On a
    # series without a shape, a seasonal median beats the last day's mean just by averaging
    # out day-to-day noise; it must also beat this to count as seasonal.
    long_window = (7 if stage == "weekly" else 3) * per_day
    flat_long: list[np.ndarray] = []
    for o in origins:
        truth = cleaned.truth[o:o + h]
        ok = np.isfinite(truth)
        actual = cleaned.observed[o:o + h]  # outliers count for the bands: they happen
        seen = np.isfinite(actual)
        if not seen.any():
            continue
        for name, pred in _predict_all(inp.upto(o), len(truth), stage).items():
            errors.setdefault(name, []).append(truth[ok] - pred[ok])
            scaled.setdefault(name, []).append((actual[seen] - pred[seen]) / _error_scale(pred[seen], floor))
        window = cleaned.values[max(0, o - long_window):o]
        window = window[np.isfinite(window)]
        if len(window):
            flat_long.append(truth[ok] - float(np.mean(window)))
    ref = _reference(stage)
    flat = {k: np.concatenate(v) for k, v in errors.items()}
    if not flat or not len(flat[ref]):
        # Too little history for a backtest: the stage's seasonal naive, untested (so never
        # trusted), with bands from its in-sample errors.
        period = 7 * per_day if stage == "weekly" else per_day
        v = cleaned.observed
        e = (v[period:] - v[:-period]) / _error_scale(v[:-period], floor)
        days = [d[np.isfinite(d)] for d in np.array_split(e, max(1, len(e) // per_day))]
        return Selection(stage, ref, float("nan"), float("nan"), _band(days, coverage), floor)
    mae = {k: float(np.mean(np.abs(e))) for k, e in flat.items()}
    loss = {k: float(np.mean(np.where(e > 0, under_penalty * e, -e))) for k, e in flat.items()}
    best = min(loss, key=lambda k: (loss[k], k != ref))
    ref_mae = mae[ref]
    skill = 1.0 - mae[best] / ref_mae if ref_mae > 0 else (0.0 if mae[best] == 0 else float("-inf"))
    seasonal = min(v for k, v in mae.items() if k != "level")
    no_shape = min(mae["level"], float(np.mean(np.abs(np.concatenate(flat_long)))) if flat_long else mae["level"])
    gain = 1.0 - seasonal / no_shape if no_shape > 0 else 0.0
    band = _band(scaled[best], coverage)
    return Selection(stage, best, skill, gain, band, floor, dict(sorted(mae.items())))


def _band(per_origin: list[np.ndarray], coverage: float) -> tuple[float, float]:
    """Quantiles of the scaled backtest errors, widened for how few days they come from.

    Errors within one origin share that day's bias, so the sample is worth about one draw
    per origin, not one per step. As for a prediction interval from ``n`` draws, the spread
    around the median is widened by ``t(n-1)/z * sqrt(1 + 1/n)``.
    """
    from scipy.special import ndtri, stdtrit

    s = np.concatenate(per_origin)
    if len(s) < 10:
        return 0.0, 0.0
    alpha = (1.0 - coverage) / 2.0
    lo, mid, hi = np.quantile(s, [alpha, 0.5, 1.0 - alpha])
    n = len(per_origin)
    widen = float(stdtrit(n - 1, 1 - alpha) / ndtri(1 - alpha) * np.sqrt(1 + 1 / n)) if n > 1 else 2.0
    return float(mid + (lo - mid) * widen), float(mid + (hi - mid) * widen)


def _exclude_mask(history: pd.Series, grid: Grid, tz: str,
                  exclude: Sequence[tuple[datetime, datetime]]) -> np.ndarray | None:
    if not exclude:
        return None
    idx = pd.DatetimeIndex(history.index)
    hit = np.zeros(len(idx), dtype=bool)
    for start, end in exclude:
        hit |= (idx >= pd.Timestamp(start)) & (idx < pd.Timestamp(end))
    mask = np.zeros(len(grid), dtype=bool)
    mask[grid.positions(idx[hit], tz)] = True
    return mask


def _empty(targets: pd.DatetimeIndex) -> pd.DataFrame:
    return pd.DataFrame(np.nan, index=targets, columns=["mean", "lower", "upper"], dtype=float)


def fit(history: pd.Series, horizon: int, *, tz: str, coverage: float = DEFAULT_COVERAGE,
        min_history: pd.Timedelta = MIN_HISTORY, weekly_history: pd.Timedelta = WEEKLY_HISTORY,
        under_penalty: float = 1.0, backtest_days: int = 7,
        exclude: Sequence[tuple[datetime, datetime]] = (), selection: Selection | None = None,
        decomposition: bool = False) -> Fit:
    """Forecast the next ``horizon`` steps of ``history``; see the module doc.

    ``selection`` from an earlier :class:`Fit` of the same series skips the backtest when the
    stage is unchanged. ``decomposition=True`` adds the MSTL components of the history.
    """
    if horizon < 1:
        raise ForecastError(f"horizon must be at least 1, got {horizon}")
    if not 0 < coverage < 1:
        raise ForecastError(f"coverage must be between 0 and 1, got {coverage}")
    step = step_seconds(pd.Index(history.index))
    utc = pd.DatetimeIndex(history.index).tz_convert("UTC")
    values = history.to_numpy(dtype=float)
    values = np.where(np.isfinite(values), values, np.nan)  # inf is no data either
    targets = pd.date_range(utc[-1] + pd.Timedelta(seconds=step), periods=horizon, freq=pd.Timedelta(seconds=step))
    observed = np.flatnonzero(np.isfinite(values))
    span = ((utc[observed[-1]] - utc[observed[0]]) + pd.Timedelta(seconds=step)) if len(observed) else pd.Timedelta(0)
    days = span / pd.Timedelta(days=1)
    if span < min_history:
        return Fit(_empty(targets), "none", None, days, 0)
    keep = utc >= max(utc[observed[0]], utc[-1] - MAX_HISTORY)
    hist = pd.Series(values[keep], index=utc[keep])
    grid = to_grid(hist, tz, step)
    stage: Stage = "weekly" if span >= weekly_history else "daily"
    per_day = DAY // step
    season = 7 * per_day if stage == "weekly" else per_day
    max_gap = max(1, int(MAX_INTERPOLATED_GAP.total_seconds()) // step)
    cleaned = clean(grid, season, max_gap=max_gap, exclude=_exclude_mask(hist, grid, tz, exclude))

    if selection is None or selection.stage != stage:
        selection = _select(cleaned, per_day, stage, backtest_days=backtest_days, under_penalty=under_penalty,
                            coverage=coverage)
    n = len(grid)
    pos = grid.positions(targets, tz)
    h = int(max(pos.max() - n + 1, 1))
    inp = models.Inputs(cleaned.values, cleaned.filled, per_day)
    dec = models.decompose(inp, weekly=stage == "weekly") if decomposition else None
    mean_grid = _predict_all(inp, h, stage, only=selection.model, dec=dec)[selection.model]
    at = np.clip(pos - n, 0, h - 1)  # a target in the repeated autumn hour takes the next slot
    mean = mean_grid[at]
    scale = _error_scale(mean, selection.band_floor)
    lower, upper = mean + selection.band[0] * scale, mean + selection.band[1] * scale
    if np.nanmin(grid.values) >= 0:  # a non-negative signal stays non-negative
        mean, lower = np.maximum(mean, 0.0), np.maximum(lower, 0.0)
    frame = pd.DataFrame({"mean": mean, "lower": np.minimum(lower, mean), "upper": np.maximum(upper, mean)},
                         index=targets)
    components = _decomposition_frame(hist, grid, tz, dec) if dec is not None else None
    return Fit(frame, stage, selection, days, int(cleaned.outliers.sum()), components)


def _decomposition_frame(hist: pd.Series, grid: Grid, tz: str, dec: models.Decomposition) -> pd.DataFrame:
    """Components at each history instant. The residual is against what was observed, so an
    outlier the fit ignored still shows there (NaN where nothing was observed)."""
    pos = grid.positions(pd.DatetimeIndex(hist.index), tz)
    trend, daily, weekly = dec.trend[pos], dec.daily[pos], dec.weekly[pos]
    raw = hist.to_numpy(dtype=float)
    return pd.DataFrame({"trend": trend, "daily": daily, "weekly": weekly,
                         "residual": raw - trend - daily - weekly}, index=hist.index)


def forecast(history: pd.Series, horizon: int, *, tz: str, coverage: float = DEFAULT_COVERAGE,
             min_history: pd.Timedelta = MIN_HISTORY, weekly_history: pd.Timedelta = WEEKLY_HISTORY,
             under_penalty: float = 1.0, exclude: Sequence[tuple[datetime, datetime]] = ()) -> pd.DataFrame:
    """Forecast the next ``horizon`` steps of ``history`` (regular, tz-aware, NaN for gaps).

    Returns ``horizon`` rows at the next steps (UTC) with ``mean``, ``lower`` and ``upper`` (a
    ``coverage`` central interval). Under ``min_history`` every value is NaN and
    ``attrs["model"]`` is ``"none"``. See the module doc for the other ``attrs``.
    """
    result = fit(history, horizon, tz=tz, coverage=coverage, min_history=min_history,
                 weekly_history=weekly_history, under_penalty=under_penalty, exclude=exclude)
    frame = result.frame
    sel = result.selection
    frame.attrs.update(
        model=result.model, stage=result.stage, skill=result.skill, history_days=result.history_days,
        outliers=result.outliers,
        seasonality_gain=sel.seasonality_gain if sel else float("nan"),
        trusted=gate(result)[0] == ReasonCode.ForecastTrusted,
        scores=dict(sel.scores) if sel else {},
    )
    return frame
