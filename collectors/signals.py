"""Derived signals: what the forecaster, the profiles and the policies look at.

Each derived signal is computed from stored minute aggregates over a window (a local hour,
or the last few minutes), so quantiles are taken from merged histogram buckets, never by
averaging per-minute quantiles.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

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


def rows_value(signal: str, counters: Iterable[CounterPoint], hist: Iterable[HistPoint]) -> float:
    """The derived signal over the given minute points (already filtered to one window),
    e.g. the controller's last few minutes, kept in memory."""
    d = _lookup(signal)
    sums: dict[str, float] = defaultdict(float)
    seen: set[int] = set()
    buckets: dict[float, float] = defaultdict(float)
    if d.histogram is not None:
        for h in hist:
            if h.key.signal == d.histogram:
                _merge_buckets(buckets, h.buckets)
    for p in counters:
        name = p.key.signal
        if name in d.counters:
            sums[name] += p.value
            if d.sets_coverage(name):
                seen.add(p.ts)
    return _combine(d, sums, len(seen), buckets)


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
    buckets: dict[int, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    if d.histogram is not None:
        for h in store.hour_histograms(d.histogram, lo, hi, provider):
            _merge_buckets(buckets[h.ts], h.buckets)
    for name in d.counters:
        for p in store.hour_counters(name, lo, hi, provider):
            sums[p.ts][name] += p.value
            if d.sets_coverage(name):
                # Series of one signal are scraped together: the hour's coverage is the best one.
                minutes[p.ts] = max(minutes[p.ts], p.minutes)
    values = [
        _combine(d, sums.get(b, {}), minutes.get(b, 0), buckets.get(b, {}))
        for b in (int(t.timestamp()) for t in grid)
    ]
    return pd.Series(values, index=grid, dtype=float, name=signal)
