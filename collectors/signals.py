"""Derived signals: what the forecaster, the profiles and the policies look at.

Each derived signal is computed from stored minute aggregates over a window (a local hour,
or the last few minutes), so quantiles are taken from merged histogram buckets, never by
averaging per-minute quantiles.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from collectors.hour_of_week import local_hour_start_at
from collectors.mapping import COUNTER_SIGNALS, HISTOGRAM_SIGNALS
from collectors.quantile import bucket_quantile
from collectors.store import CounterPoint, HistPoint, Store


@dataclass(frozen=True)
class Derived:
    name: str
    unit: str
    help: str
    counters: tuple[str, ...] = ()
    histogram: str | None = None
    quantile: float | None = None
    #: An imported level (not a counter): the value is the mean of the stored points.
    gauge: bool = False

    def sets_coverage(self, counter: str) -> bool:
        """Whether points of ``counter`` count as minutes covered (the denominator of a rate)."""
        return counter == self.counters[0] or self.name == "cache_hit_ratio"


def _merge_buckets(target: dict[float, float], buckets: dict[float, float]) -> None:
    for le, c in buckets.items():
        target[le] += c


DERIVED: dict[str, Derived] = {
    d.name: d
    for d in (
        Derived("request_rate", "requests per second", "Requests per second.", counters=("requests",)),
        Derived("demand_rate", "requests per second",
                "Requests per second net of retries (a retried request counts once): the demand the providers "
                "must serve, which the routing does not change.", counters=("requests", "retries")),
        Derived("latency_p50", "seconds", "Median request latency.", histogram="latency", quantile=0.5),
        Derived("latency_p95", "seconds", "95th percentile request latency.", histogram="latency", quantile=0.95),
        Derived("latency_p99", "seconds", "99th percentile request latency.", histogram="latency", quantile=0.99),
        Derived("ttft_p50", "seconds", "Median time to first token.", histogram="ttft", quantile=0.5),
        Derived("ttft_p95", "seconds", "95th percentile time to first token.", histogram="ttft", quantile=0.95),
        Derived("retry_ratio", "ratio", "Retries per request.", counters=("retries", "requests")),
        Derived("cache_hit_ratio", "ratio", "Cache hits / (hits + misses).", counters=("cache_hits", "cache_misses")),
        Derived("error_429_ratio", "ratio", "Share of requests that failed with 429.", counters=("errors_429", "requests")),
        Derived("error_5xx_ratio", "ratio", "Share of requests that failed with 5xx.", counters=("errors_5xx", "requests")),
        Derived("spend_rate", "currency per hour", "Spend per hour.", counters=("spend",)),
        Derived("input_token_rate", "tokens per second", "Input tokens per second.", counters=("input_tokens",)),
        Derived("output_token_rate", "tokens per second", "Output tokens per second.", counters=("output_tokens",)),
    )
}


def _combine(d: Derived, sums: dict[str, float], minutes: int, buckets: dict[float, float]) -> float:
    if d.gauge:
        return sums.get(d.name, 0.0) / minutes if minutes > 0 else math.nan
    if d.histogram is not None:
        assert d.quantile is not None
        return bucket_quantile(d.quantile, buckets) if buckets else math.nan
    if minutes <= 0:
        return math.nan
    seconds = minutes * 60.0
    if d.name == "cache_hit_ratio":
        total = sums.get("cache_hits", 0.0) + sums.get("cache_misses", 0.0)
        return sums.get("cache_hits", 0.0) / total if total > 0 else math.nan
    if d.name == "demand_rate":
        return max(0.0, sums.get("requests", 0.0) - sums.get("retries", 0.0)) / seconds
    if d.name in ("error_429_ratio", "error_5xx_ratio", "retry_ratio"):
        req = sums.get("requests", 0.0)
        return sums.get(d.counters[0], 0.0) / req if req > 0 else math.nan
    if d.name == "spend_rate":
        return sums.get("spend", 0.0) / seconds * 3600.0
    return sums.get(d.counters[0], 0.0) / seconds


#: Names the store uses for raw router signals; an imported series may not take them.
RESERVED = frozenset(DERIVED) | frozenset(COUNTER_SIGNALS) | frozenset(HISTOGRAM_SIGNALS)


def gauge(name: str) -> Derived:
    """An imported series (``diurnal import-csv``): stored points averaged per window."""
    return Derived(name, "as imported", f"Imported series {name}.", counters=(name,), gauge=True)


def _lookup(signal: str) -> Derived:
    got = DERIVED.get(signal)
    if got is not None:
        return got
    if signal in RESERVED:
        raise ValueError(f"{signal!r} is a raw signal; ask for a derived one: {', '.join(sorted(DERIVED))}")
    return gauge(signal)


def known_signals(store: Store) -> list[str]:
    """What can be read from ``store``: the derived signals, then the imported series it holds."""
    imported = sorted({k.signal for k in store.series() if k.signal not in RESERVED})
    return [*sorted(DERIVED), *imported]


@dataclass
class WindowTotals:
    """Minute points of one window summed once, for every derived signal to read: per raw
    counter its sum and the minutes it covers, per histogram its merged buckets."""

    sums: dict[str, float] = field(default_factory=dict)
    minutes: dict[str, set[int]] = field(default_factory=dict)
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)

    @classmethod
    def of(cls, counters: Iterable[CounterPoint], hist: Iterable[HistPoint]) -> WindowTotals:
        out = cls()
        for h in hist:
            _merge_buckets(out.buckets.setdefault(h.key.signal, defaultdict(float)), h.buckets)
        for p in counters:
            name = p.key.signal
            out.sums[name] = out.sums.get(name, 0.0) + p.value
            out.minutes.setdefault(name, set()).add(p.ts)
        return out

    def value(self, signal: str) -> float:
        """The derived ``signal`` over the window."""
        d = _lookup(signal)
        seen: set[int] = set()
        for name in d.counters:
            if d.sets_coverage(name):
                seen |= self.minutes.get(name, set())
        buckets = self.buckets.get(d.histogram, {}) if d.histogram is not None else {}
        return _combine(d, {n: self.sums[n] for n in d.counters if n in self.sums}, len(seen), buckets)


def rows_value(signal: str, counters: Iterable[CounterPoint], hist: Iterable[HistPoint]) -> float:
    """The derived signal over the given minute points (already filtered to one window),
    e.g. the controller's last few minutes, kept in memory. To read several signals of the
    same points, sum them once with :class:`WindowTotals`."""
    d = _lookup(signal)
    return WindowTotals.of((p for p in counters if p.key.signal in d.counters),
                           (h for h in hist if h.key.signal == d.histogram)).value(signal)


def _hour_grid(start: int, end: int, tz: str) -> pd.DatetimeIndex:
    first = local_hour_start_at(start, tz)
    if first < start:
        first += 3600
    last = local_hour_start_at(end - 1, tz) if end > start else first
    if last < first:
        return pd.DatetimeIndex([], tz="UTC")
    return pd.date_range(pd.Timestamp(first, unit="s", tz="UTC"), pd.Timestamp(last, unit="s", tz="UTC"), freq="h")


def hourly(store: Store, signal: str, tz: str, start: int, end: int, provider: str | None = None) -> pd.Series:
    """The derived signal per local hour over ``[start, end)``, on a regular hourly grid.

    Read from the store's hour rollups. The index holds the UTC instant each local hour
    began; hours without data are NaN. ``provider=None`` combines every provider.
    """
    if tz != store.tz:
        raise ValueError(f"the store rolls up hours in {store.tz}, not {tz}; open it with tz={tz!r}")
    d = _lookup(signal)
    grid = _hour_grid(start, end, tz)
    if len(grid) == 0:
        return pd.Series([], index=grid, dtype=float, name=signal)
    lo, hi = int(grid[0].timestamp()), int(grid[-1].timestamp()) + 3600
    sums: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    minutes: dict[int, int] = defaultdict(int)
    buckets: dict[int, dict[float, float]] = {}
    if d.histogram is not None:
        buckets.update(store.hour_histogram_totals(d.histogram, lo, hi, provider))
    for name in d.counters:
        for ts, total, covered in store.hour_counter_totals(name, lo, hi, provider):
            sums[ts][name] += total
            if d.sets_coverage(name):
                # Series of one signal are scraped together: the hour's coverage is the best one.
                minutes[ts] = max(minutes[ts], covered)
    values = [
        _combine(d, sums.get(b, {}), minutes.get(b, 0), buckets.get(b, {}))
        for b in (int(t.timestamp()) for t in grid)
    ]
    return pd.Series(values, index=grid, dtype=float, name=signal)
