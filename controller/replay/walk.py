"""Walk a stored period minute by minute through the controller, as it would have run.

The store's history before ``since`` is copied to a scratch store (SQLite's backup, then
everything from ``since`` on is deleted), and a :class:`~controller.loop.Controller` is
opened on it in ``act`` mode with its actuators off. Then, for each minute of the period,
the minute's stored cells are handed to it (:meth:`Controller.ingest_cells`) and it steps
with its clock at the minute's end. Every refit, forecast, learned capacity and learned
headroom therefore uses only data from before that minute: no look-ahead.

Minutes no longer kept (the store keeps minutes for ``minute_retention``, hours far longer)
are walked from their hour's rollup, spread evenly over its minutes; the walk counts them
and the report says so.

What it records per minute: the router's observed totals per provider (for the estimate of
each policy, :mod:`controller.replay.estimate`), the weights in force after the guardrails
and each prewarm action's amount in force.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import numpy as np

from collectors.hour_of_week import local_hour_start_at
from collectors.intervals import MinuteCell
from collectors.mapping import HISTOGRAM_SIGNALS, SeriesKey
from collectors.quantile import bucket_quantile
from collectors.store import Store
from controller.errors import ConfigError
from controller.replay.scratch import scratch_dir
from controller.settings import Settings

if TYPE_CHECKING:
    from controller.loop import Controller

__all__ = ["COUNTED", "Walk", "new_walk", "observe", "read_minutes", "record_decision", "walk"]

MINUTE = 60
DAY = 86400
#: The counters the estimate reads per provider and minute.
COUNTED = ("requests", "retries", "errors_429", "errors_5xx", "cache_hits", "cache_misses", "input_tokens",
           "output_tokens", "spend")

Cells = dict[int, dict[SeriesKey, MinuteCell]]


@dataclass
class Walk:
    """What the walk saw and decided, one entry per minute of ``[start, end)``."""

    start: int
    end: int
    providers: list[str]
    minutes: np.ndarray
    #: counter -> provider -> per-minute total (0 where none).
    observed: dict[str, dict[str, np.ndarray]]
    #: provider -> the minute's p95 latency in seconds (NaN without answered requests).
    p95: dict[str, np.ndarray]
    #: provider -> diurnal's weight in force (after the guardrails), per minute.
    weights: dict[str, np.ndarray]
    #: prewarm action -> the amount in force, per minute (NaN before its first decision).
    units: dict[str, np.ndarray]
    #: Minutes walked from an hour rollup (no minutes kept for them).
    from_hours: np.ndarray
    #: Minutes with no data at all.
    empty: np.ndarray
    #: Minutes walked (less than the period if interrupted).
    walked: int = 0
    interrupted: bool = False
    #: Decisions that changed a weight or a prewarm amount.
    changes: int = 0
    seconds: float = 0.0
    #: (minute, action, amount): each change of a prewarm amount.
    prewarm_changes: list[tuple[int, str, float]] = field(default_factory=list)


def _copy_before(source: Store, since: int, into: Path) -> None:
    """The source store's file with everything from ``since`` on deleted (and its journal of
    open minutes, the learned headroom and the fleet cursor: the walk learns them again)."""
    into.mkdir(parents=True, exist_ok=True)
    dest = into / "diurnal.db"
    src = sqlite3.connect(f"file:{source.path}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)
            for table in ("minute_counter", "minute_hist", "hour_counter", "hour_hist"):
                dst.execute(f"DELETE FROM {table} WHERE ts >= ?", (since,))
            with contextlib.suppress(sqlite3.OperationalError):  # a store made before the journal
                dst.execute("DELETE FROM open_cell")
            with contextlib.suppress(sqlite3.OperationalError):  # the walk keeps its own decisions
                dst.execute("DELETE FROM decided_minute WHERE ts >= ?", (since,))
            dst.execute("DELETE FROM meta WHERE key IN ('planner_headroom', 'fleet_window_end')")
            dst.commit()
        finally:
            dst.close()
    finally:
        src.close()


def _read(source: Store, signals: list[str], start: int, end: int, tz: str) -> tuple[Cells, set[int]]:
    """The stored cells of ``[start, end)`` per minute, and the minutes taken from hour
    rollups (hours of the span with no minute kept)."""
    cells: Cells = defaultdict(dict)
    for sig in signals:
        if sig in HISTOGRAM_SIGNALS:
            for h in source.histograms(sig, start, end):
                cells[h.ts][h.key] = MinuteCell(count=h.count, sum=h.sum, buckets=dict(h.buckets))
        else:
            for c in source.counters(sig, start, end):
                cells[c.ts][c.key] = MinuteCell(value=c.value)
    covered = {local_hour_start_at(ts, tz) for ts in cells}
    spread: set[int] = set()
    lo = local_hour_start_at(start, tz)
    hours: list[tuple[int, SeriesKey, MinuteCell]] = []
    for sig in signals:
        if sig in HISTOGRAM_SIGNALS:
            hours += [(h.ts, h.key, MinuteCell(count=h.count, sum=h.sum, buckets=dict(h.buckets)))
                      for h in source.hour_histograms(sig, lo, end) if h.ts not in covered]
        else:
            hours += [(c.ts, c.key, MinuteCell(value=c.value)) for c in source.hour_counters(sig, lo, end)
                      if c.ts not in covered]
    for hour, key, whole in hours:  # an hour's rollup, spread evenly over its minutes
        for m in range(max(hour, start), min(hour + 3600, end), MINUTE):
            cell = MinuteCell()
            cell.merge(whole, 1.0 / 60)
            cells[m][key] = cell
            spread.add(m)
    return cells, spread


def new_walk(start: int, end: int, providers: list[str], actions: list[str]) -> Walk:
    """An empty record of ``[start, end)``: nothing observed, no weight or amount decided."""
    n = (end - start) // MINUTE
    return Walk(start=start, end=end, providers=providers, minutes=start + MINUTE * np.arange(n, dtype=np.int64),
                observed={c: {p: np.zeros(n) for p in providers} for c in COUNTED},
                p95={p: np.full(n, np.nan) for p in providers},
                weights={p: np.full(n, np.nan) for p in providers},
                units={a: np.full(n, np.nan) for a in actions},
                from_hours=np.zeros(n, dtype=bool), empty=np.zeros(n, dtype=bool))


def observe(out: Walk, i: int, minute: dict[SeriesKey, MinuteCell], *, from_hours: bool) -> None:
    """Record the router's stored cells of the walk's ``i``-th minute."""
    out.from_hours[i] = from_hours
    out.empty[i] = not minute
    for key, cell in minute.items():
        if key.signal in out.observed and key.provider in out.observed[key.signal]:
            out.observed[key.signal][key.provider][i] += cell.value
    for p in out.providers:
        out.p95[p][i] = _p95(minute, p)


def read_minutes(source: Store, signals: list[str], start: int, end: int, tz: str) -> Iterator[tuple[int, int, dict[SeriesKey, MinuteCell], bool]]:
    """``(index, minute, cells, from an hour rollup)`` for each minute of ``[start, end)``,
    read a day at a time."""
    for chunk in range(start, end, DAY):
        chunk_end = min(end, chunk + DAY)
        cells, spread = _read(source, signals, chunk, chunk_end, tz)
        for m in range(chunk, chunk_end, MINUTE):
            yield (m - start) // MINUTE, m, cells.get(m, {}), m in spread


def _p95(cells: dict[SeriesKey, MinuteCell], provider: str) -> float:
    """The 95th percentile of a minute's latency histogram cells of ``provider``."""
    buckets: dict[float, float] = defaultdict(float)
    for key, cell in cells.items():
        if key.signal == "latency" and key.provider == provider:
            for le, c in cell.buckets.items():
                buckets[le] += c
    return bucket_quantile(0.95, buckets) if buckets else float("nan")


class _Progress:
    """One line on stderr, rewritten: the simulated day, the share done and an ETA."""

    def __init__(self, start: int, end: int, tz: str, out: Callable[[str], None] | None) -> None:
        self.start, self.end, self.tz = start, end, tz
        self.out = out
        self.began = time.monotonic()
        self.last = 0.0

    def __call__(self, at: int, *, final: bool = False) -> None:
        if self.out is None:
            return
        now = time.monotonic()
        if not final and now - self.last < 0.5:
            return
        self.last = now
        done = (at - self.start) / max(1, self.end - self.start)
        spent = now - self.began
        eta = spent * (1 - done) / done if done > 0 else float("nan")
        day = datetime.fromtimestamp(at, UTC).astimezone(ZoneInfo(self.tz))
        bar = "#" * int(done * 30)
        left = "" if final or eta != eta else f", ETA {_duration(eta)}"
        self.out(f"\rreplay [{bar:<30}] {done:4.0%} {day:%a %Y-%m-%d %H:%M}{left} ")
        if final:
            self.out("\n")


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def stderr_progress(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


#: The walk's own store lives in a directory of this prefix in the temp dir.
SCRATCH_PREFIX = "diurnal-replay-"


@contextlib.contextmanager
def _scratch(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        yield keep
        return
    with scratch_dir(SCRATCH_PREFIX) as path:
        yield path


def walk(settings: Settings, source: Store, since: int, until: int, *,
         progress: Callable[[str], None] | None = None, scratch: Path | None = None) -> Walk:
    """Walk ``[since, until)`` (UTC seconds, floored to the local hour and the minute) of
    ``source`` through a controller in ``act`` mode with its actuators off. Ctrl-C stops the
    walk where it is: the result holds the minutes walked (``interrupted``)."""
    from controller.loop import Controller

    tz = settings.timezone
    since = local_hour_start_at(since, tz)
    until = until // MINUTE * MINUTE
    if until - since < 3600:
        raise ConfigError(f"the period to replay is {max(0, until - since) // 60} minutes long; give at least an hour")
    providers = sorted({k.provider for k in source.series("requests")})
    if not providers:
        raise ConfigError(f"the store in {source.path.parent} has no request counts to replay (backfill or import "
                          "first)")
    signals = sorted({k.signal for k in source.series()})
    out = new_walk(since, until, providers, [a.name for a in settings.policy.prewarm])
    show = _Progress(since, until, tz, progress)
    began = time.monotonic()
    with _scratch(scratch) as work:
        _copy_before(source, since, work)
        replayed = settings.model_copy(update={
            "data_dir": work, "guardrails": settings.guardrails.model_copy(update={"mode": "act"})})
        clock = [datetime.fromtimestamp(since, UTC)]
        ctl = Controller.from_settings(replayed, clock=lambda: clock[0], journal=False, actuators=False,
                                       write_behind=True)
        ctl.decompose = False  # the trend/daily/weekly split is for dashboards only
        try:
            _run(ctl, source, signals, out, clock, show)
        except KeyboardInterrupt:
            out.interrupted = True
        finally:
            ctl.close()
    out.seconds = time.monotonic() - began
    show(since + out.walked * MINUTE, final=True)
    return out


def _run(ctl: Controller, source: Store, signals: list[str], out: Walk, clock: list[datetime],
         show: _Progress) -> None:
    last: Decided | None = None
    for i, m, minute, spread in read_minutes(source, signals, out.start, out.end, ctl.settings.timezone):
        observe(out, i, minute, from_hours=spread)
        at = datetime.fromtimestamp(m + MINUTE, UTC)
        clock[0] = at
        if minute:
            ctl.ingest_cells({m: minute}, at=at)
        decision = ctl.step(at=at)
        last = record_decision(out, i, decision.weights, ctl.prewarm_in_force, last)
        show(m + MINUTE)


#: A minute's decision as compared for changes: the weights (to 4 places), the amounts.
Decided = tuple[tuple[str, float], ...]


def record_decision(out: Walk, i: int, weights: Mapping[str, float], amounts: Mapping[str, float],
                    last: Decided | None) -> Decided:
    """Record the weights and prewarm amounts in force in the walk's ``i``-th minute (counting
    a change from ``last``, the previous minute's); returns this minute's for the next."""
    for p in out.providers:
        out.weights[p][i] = weights.get(p, 0.0)
    for action, amount in amounts.items():
        if action in out.units:
            if i == 0 or out.units[action][i - 1] != amount:
                out.prewarm_changes.append((int(out.minutes[i]), action, amount))
            out.units[action][i] = amount
    now = tuple(sorted((k, round(v, 4)) for k, v in weights.items())) + tuple(sorted(amounts.items()))
    if last is not None and now != last:
        out.changes += 1
    out.walked = i + 1
    return now
