"""The local wall-clock grid every model works on.

A history arrives in UTC. Each instant is mapped to its wall-clock time in the operator's
timezone, and each wall-clock time to a position on a regular grid of the history's step.
On that grid a day is always ``per_day`` positions and a week ``per_week``, so "the same hour
last week" is a fixed lag even across DST changes:

- the hour skipped in spring is a grid position with no data (a one-step gap, interpolated);
- the hour repeated in autumn is two instants on one position (their mean).

A 23-hour or 25-hour day in UTC is a 24-hour day on the grid, so Monday 09:00 local stays
Monday 09:00 local in the weeks after a transition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from collectors.errors import DiurnalError

DAY = 86400
WEEK = 7 * DAY
#: Day 0 of the naive epoch (1970-01-01) was a Thursday: weekday 3 when Monday is 0.
_EPOCH_WEEKDAY = 3


class ForecastError(DiurnalError, ValueError):
    """The history given to the forecaster is not usable (not aware, not regular, ...)."""


def step_seconds(index: pd.Index) -> int:
    """The regular step of ``index`` in seconds; a clear error when there is none."""
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        raise ForecastError("history needs a timezone-aware DatetimeIndex (store UTC)")
    if len(index) < 2:
        raise ForecastError("history needs at least two points to infer its step")
    ns = index.as_unit("ns").asi8
    diffs = np.diff(ns)
    if diffs.min() <= 0:
        raise ForecastError("history index must be strictly increasing")
    step = int(diffs.min())
    if np.any(diffs % step):
        raise ForecastError("history must be regular (NaN marks a gap; do not drop rows)")
    if step % 1_000_000_000 or DAY % (step // 1_000_000_000):
        raise ForecastError(f"the step ({pd.Timedelta(step, unit='ns')}) must divide a day evenly, e.g. 1h or 15min")
    return step // 1_000_000_000


def wall_clock_seconds(index: pd.DatetimeIndex, tz: str) -> np.ndarray:
    """Local wall-clock time of each instant, as seconds of a naive local epoch."""
    return np.asarray(index.tz_convert(tz).tz_localize(None).as_unit("s").asi8, dtype=np.int64)


@dataclass(frozen=True)
class Grid:
    """Values on the local wall-clock grid. Position 0 is the first instant of the history."""

    step: int
    anchor: int
    values: np.ndarray

    @property
    def per_day(self) -> int:
        return DAY // self.step

    @property
    def per_week(self) -> int:
        return WEEK // self.step

    def __len__(self) -> int:
        return len(self.values)

    def slot_of_week(self, positions: np.ndarray) -> np.ndarray:
        """Slot within the local week (0 = Monday 00:00) of each grid position."""
        base = self.anchor // self.step + positions
        return np.asarray((base + _EPOCH_WEEKDAY * self.per_day) % self.per_week, dtype=np.int64)

    def positions(self, index: pd.DatetimeIndex, tz: str) -> np.ndarray:
        """Grid position of each instant (a repeated autumn hour shares one position)."""
        return np.asarray((wall_clock_seconds(index, tz) - self.anchor) // self.step, dtype=np.int64)


def to_grid(history: pd.Series, tz: str, step: int) -> Grid:
    """Lay ``history`` (already trimmed to start at an observation) on the local grid."""
    wall = wall_clock_seconds(pd.DatetimeIndex(history.index), tz)
    anchor = int(wall[0])
    pos = (wall - anchor) // step
    values = history.to_numpy(dtype=float)
    ok = np.isfinite(values)
    size = int(pos.max()) + 1
    sums = np.bincount(pos, weights=np.where(ok, values, 0.0), minlength=size)
    counts = np.bincount(pos, weights=ok.astype(float), minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        grid = np.where(counts > 0, sums / np.maximum(counts, 1.0), np.nan)
    return Grid(step=step, anchor=anchor, values=grid)
