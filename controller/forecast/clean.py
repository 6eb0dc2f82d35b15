"""Before fitting: interpolate short gaps, mask long ones, replace outliers.

The cleaning works on the local grid (see :mod:`controller.forecast.grid`):

1. A robust *expected* value per position: a rolling median level (one season wide) plus
   the median profile of the season (hour-of-day, or hour-of-week from three weeks).
2. Outliers are points whose remainder (value - expected) lies more than ``k`` inter-quartile
   ranges outside the remainder's quartiles, as R's ``tsclean`` does. They are replaced by the
   expected value, so an outage or a spike last Monday does not come back next Monday.
3. Gaps up to ``max_gap`` steps are interpolated linearly. Longer gaps stay masked (NaN) for
   the models that can skip them; models that need a full series see the expected value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from controller.forecast.grid import Grid

#: Outlier fence, in inter-quartile ranges beyond the quartiles of the remainder.
OUTLIER_IQR = 3.0


@dataclass(frozen=True)
class Cleaned:
    values: np.ndarray  # short gaps interpolated, outliers replaced, long gaps NaN
    filled: np.ndarray  # as ``values`` with long gaps set to the expected value
    expected: np.ndarray  # the robust level + seasonal profile
    outliers: np.ndarray  # bool: replaced points
    truth: np.ndarray  # the raw values where they count for choosing a model (NaN elsewhere)
    observed: np.ndarray  # the raw values, outliers included (known anomalies excluded)


def interpolate_short_gaps(values: np.ndarray, max_gap: int) -> np.ndarray:
    """Linear interpolation across interior NaN runs of at most ``max_gap`` points."""
    out = values.copy()
    nan = np.isnan(out)
    if not nan.any() or max_gap < 1:
        return out
    idx = np.flatnonzero(~nan)
    if len(idx) < 2:
        return out
    # Run starts and lengths of NaN stretches.
    edges = np.diff(np.concatenate(([0], nan.view(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    for s, e in zip(starts, ends, strict=True):
        if s == 0 or e == len(out) or e - s > max_gap:
            continue
        left, right = out[s - 1], out[e]
        out[s:e] = left + (right - left) * np.arange(1, e - s + 1) / (e - s + 1)
    return out


def expected_values(grid: Grid, values: np.ndarray, season: int) -> np.ndarray:
    """Rolling median level plus the median seasonal profile, for every position."""
    n = len(values)
    series = pd.Series(values)
    level = series.rolling(season, center=True, min_periods=max(2, (3 * season) // 4)).median()
    # Half a window from either end the window is one-sided: a median of the last weekend
    # alone would read as a level drop. Carry the last full-window level out to the ends.
    half = season // 2
    if n > 2 * half:
        level.iloc[:half] = np.nan
        level.iloc[n - half:] = np.nan
    level = level.interpolate(limit_direction="both").to_numpy(dtype=float)
    if np.isnan(level).all():
        level = np.full(n, np.nanmedian(values) if np.isfinite(values).any() else 0.0)
    slots = grid.slot_of_week(np.arange(n)) % season
    detrended = values - level
    ok = np.isfinite(detrended)
    profile = np.zeros(season)
    if ok.any():
        frame = pd.DataFrame({"slot": slots[ok], "r": detrended[ok]})
        med = frame.groupby("slot")["r"].median()
        profile[med.index.to_numpy()] = med.to_numpy()
    return np.asarray(level + profile[slots], dtype=float)


def clean(grid: Grid, season: int, *, max_gap: int, exclude: np.ndarray | None = None,
          k: float = OUTLIER_IQR) -> Cleaned:
    """Clean ``grid.values`` for a model whose longest season is ``season`` positions."""
    raw = grid.values.astype(float, copy=True)
    if exclude is not None:
        raw[exclude] = np.nan
    interpolated = interpolate_short_gaps(raw, max_gap)
    expected = expected_values(grid, interpolated, season)
    remainder = interpolated - expected
    outliers = np.zeros(len(raw), dtype=bool)
    finite = np.isfinite(remainder)
    if finite.sum() >= 8:
        q1, q3 = np.percentile(remainder[finite], [25, 75])
        iqr = q3 - q1
        if iqr > 0:
            with np.errstate(invalid="ignore"):
                outliers = finite & ((remainder < q1 - k * iqr) | (remainder > q3 + k * iqr))
    values = interpolated.copy()
    values[outliers] = expected[outliers]
    filled = np.where(np.isnan(values), expected, values)
    truth = np.where(outliers, np.nan, raw)
    return Cleaned(values=values, filled=filled, expected=expected, outliers=outliers, truth=truth, observed=raw)
