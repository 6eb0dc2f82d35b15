"""Cumulative counters -> per-interval deltas -> 1-minute aggregates.

Deltas follow Prometheus ``increase()``: a value lower than the previous one is a counter
reset, and the new value is the increase since the reset. The first sighting of a counter
only sets its baseline. A delta covering several minutes (a slow scrape, an outage) is
spread over them in proportion to overlap, so totals are conserved at any scrape interval.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from collectors.mapping import Matched, SeriesKey

MINUTE = 60
#: A delta spanning more than this is put into its last minute instead of being spread
#: (it is still counted; a week-long outage should not create 10k rows).
MAX_SPREAD_SECONDS = 6 * 3600
#: A counter that grew by more than this between two scrapes is not believed (a corrupted or
#: hostile exposition): the delta is dropped and counted as absurd. No router signal (requests,
#: tokens, spend, seconds) moves by 10^15 in one scrape, and with the bound no sum can overflow.
MAX_DELTA = 1e15


@dataclass
class IngestStats:
    """What one ingest did. Counts are added to the controller's metrics."""

    samples: int = 0
    matched: int = 0
    counter_resets: int = 0
    non_finite: int = 0
    out_of_order: int = 0
    new_series: int = 0
    absurd: int = 0

    def add(self, other: IngestStats) -> None:
        for f in ("samples", "matched", "counter_resets", "non_finite", "out_of_order", "new_series", "absurd"):
            setattr(self, f, getattr(self, f) + getattr(other, f))


@dataclass
class MinuteCell:
    """One series in one minute: a counter delta, or a histogram's deltas."""

    value: float = 0.0
    count: float = 0.0
    sum: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count delta

    def merge(self, other: MinuteCell, fraction: float = 1.0) -> None:
        """Add ``fraction`` of ``other`` to this cell."""
        self.value += other.value * fraction
        self.count += other.count * fraction
        self.sum += other.sum * fraction
        buckets = self.buckets
        for le, c in other.buckets.items():
            buckets[le] = buckets.get(le, 0.0) + c * fraction


@dataclass(frozen=True)
class MinuteRow:
    ts: int  # start of the minute, Unix seconds UTC
    key: SeriesKey
    cell: MinuteCell


class DeltaTracker:
    """Remembers the last value of every raw counter and turns new values into deltas."""

    def __init__(self) -> None:
        self._last: dict[tuple[object, ...], tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self._last)

    def update(self, raw_id: tuple[object, ...], value: float, at: float, stats: IngestStats) -> tuple[float, float] | None:
        """Return ``(delta, previous_ts)`` or None when there is no delta to record."""
        if not math.isfinite(value):
            stats.non_finite += 1
            return None
        prev = self._last.get(raw_id)
        if prev is None:
            self._last[raw_id] = (at, value)
            stats.new_series += 1
            return None
        prev_at, prev_value = prev
        if at <= prev_at:
            stats.out_of_order += 1
            return None
        self._last[raw_id] = (at, value)
        delta = value if value < prev_value else value - prev_value
        if delta > MAX_DELTA:
            stats.absurd += 1
            return None
        if value < prev_value:
            stats.counter_resets += 1
        return delta, prev_at


def _add_part(cell: MinuteCell, m: Matched, amount: float) -> None:
    if m.part == "counter":
        cell.value += amount
    elif m.part == "count":
        cell.count += amount
    elif m.part == "sum":
        cell.sum += amount
    elif m.le is not None:
        cell.buckets[m.le] = cell.buckets.get(m.le, 0.0) + amount


def _overlaps(start: float, end: float) -> list[tuple[int, float]]:
    """The minutes that ``(start, end]`` covers, each with the fraction of the span in it."""
    if end - start > MAX_SPREAD_SECONDS:
        start = end - MINUTE
    span = end - start
    out = []
    minute = int(start // MINUTE) * MINUTE
    while minute < end:
        overlap = min(end, minute + MINUTE) - max(start, minute)
        if overlap > 0:
            out.append((minute, overlap / span))
        minute += MINUTE
    return out


def merge_cells(target: dict[int, dict[SeriesKey, MinuteCell]], cells: dict[int, dict[SeriesKey, MinuteCell]],
                key_map: Callable[[SeriesKey], SeriesKey | None] | None = None) -> None:
    """Merge minute cells into ``target`` (minute -> series -> cell). ``key_map`` may rename a
    key (cells that land on one key are merged) or drop it (None)."""
    for minute, per_key in cells.items():
        into = target.setdefault(minute, {})
        for key, cell in per_key.items():
            kept = key if key_map is None else key_map(key)
            if kept is None:
                continue
            dest = into.get(kept)
            if dest is None:
                into[kept] = cell
            else:
                dest.merge(cell)


class MinuteAggregator:
    """Accumulates deltas into open minutes; closed minutes are handed to the store.

    With ``track_changes``, it also keeps what the scrapes added since the last
    :meth:`take_changes` (the collector's checkpoint appends just that to the journal); cells
    added with :meth:`add_cells` are journaled by their caller and not tracked."""

    def __init__(self, *, track_changes: bool = False) -> None:
        self.tracker = DeltaTracker()
        self._open: dict[int, dict[SeriesKey, MinuteCell]] = defaultdict(dict)
        self._track = track_changes
        self._changed: dict[int, dict[SeriesKey, MinuteCell]] = defaultdict(dict)

    def __len__(self) -> int:
        """Open series-minutes."""
        return sum(len(per_key) for per_key in self._open.values())

    def ingest(self, matched: list[Matched], at: float) -> IngestStats:
        stats = IngestStats(matched=len(matched))
        # Sum this scrape's deltas per series and covered interval first, then spread each
        # series once (a histogram has dozens of bucket samples but one interval).
        pending: dict[float, dict[SeriesKey, MinuteCell]] = defaultdict(dict)
        for m in matched:
            got = self.tracker.update(m.raw_id, m.value, at, stats)
            if got is None:
                continue
            delta, prev_at = got
            cells = pending[prev_at]
            cell = cells.get(m.key)
            if cell is None:
                cell = cells[m.key] = MinuteCell()
            _add_part(cell, m, delta)
        for prev_at, cells in pending.items():
            for minute, fraction in _overlaps(prev_at, at):
                _spread(self._open[minute], cells, fraction)
                if self._track:
                    _spread(self._changed[minute], cells, fraction)
        return stats

    def add_cells(self, cells: dict[int, dict[SeriesKey, MinuteCell]],
                  key_map: Callable[[SeriesKey], SeriesKey | None] | None = None) -> None:
        """Merge already-aggregated minute cells (pushed events) into the open minutes
        (see :func:`merge_cells`)."""
        merge_cells(self._open, cells, key_map)

    def oldest(self) -> int | None:
        """The start of the oldest open minute."""
        return min(self._open) if self._open else None

    def close_before(self, ts: float) -> list[MinuteRow]:
        """Hand over every minute that ends at or before ``ts``. What they gained since the
        last :meth:`take_changes` stays tracked until :meth:`settled` says they were stored."""
        limit = int(ts // MINUTE) * MINUTE
        done = sorted(m for m in self._open if m < limit)
        return [MinuteRow(m, k, c) for m in done for k, c in self._open.pop(m).items()]

    def settled(self, before: int | None) -> None:
        """The minutes before ``before`` (all: None) were stored: forget their changes."""
        for m in [m for m in self._changed if before is None or m < before]:
            del self._changed[m]

    def take_changes(self) -> dict[int, dict[SeriesKey, MinuteCell]]:
        """What the scrapes added to open minutes since the last call (for a checkpoint that
        appends only that); the tracking starts afresh. Give it back with
        :meth:`restore_changes` if the checkpoint failed."""
        changed, self._changed = dict(self._changed), defaultdict(dict)
        return {m: per_key for m, per_key in changed.items() if per_key}

    def restore_changes(self, changed: dict[int, dict[SeriesKey, MinuteCell]]) -> None:
        merge_cells(self._changed, changed)

    def snapshot(self) -> dict[int, dict[SeriesKey, MinuteCell]]:
        """A copy of the open minutes (for a compaction of the journal)."""
        return {m: {k: MinuteCell(c.value, c.count, c.sum, dict(c.buckets)) for k, c in per_key.items()}
                for m, per_key in self._open.items()}

    def close_all(self) -> list[MinuteRow]:
        done = sorted(self._open)
        return [MinuteRow(m, k, c) for m in done for k, c in self._open.pop(m).items()]


def _spread(target: dict[SeriesKey, MinuteCell], cells: dict[SeriesKey, MinuteCell], fraction: float) -> None:
    for key, cell in cells.items():
        dest = target.get(key)
        if dest is None:
            dest = target[key] = MinuteCell()
        dest.merge(cell, fraction)
