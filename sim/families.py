"""World families for the closed-loop benchmark: each family draws worlds over seeds from
parameter ranges (domain randomisation), so that no single scenario can be fitted.

Every world is the benchmark's router (two paid APIs, ``openai`` and ``anthropic``, and a
self-hosted pool, ``selfhosted``) with everything else drawn: the timezone, the demand level,
the Monday surge (hours, size), each API's latency, rate limit and prices, the pool's replica
size, price and warm-up time (2 to 20 minutes). The families differ in what goes wrong:

- ``capacity-busy``: a shared cloud's busy hours *shrink* one API's capacity on weekdays
  (latency and 429s then follow the load it is sent: moving traffic away cures it);
- ``latency-busy``: a busy window multiplies one API's latency whatever it is sent;
- ``cheap-pool``: a warm self-hosted pool is the cheapest per request, and its warm-up is long;
- ``dear-fast``: the fastest API is the dearest, and the pool is dear too;
- ``surprises``: a capacity busy window, plus what history does not announce: the scored
  Monday is a holiday, or a flash crowd comes, or incidents slow a provider at random;
- ``flat``: no seasonality at all and random incidents (the negative control);
- ``smooth``: no cliff anywhere: every provider's latency rises along a curve,
  p95 = base x (1 + k rho^4 / (1 - rho)) (k and the saturation drawn per provider), so its SLO
  capacity is where the curve crosses the SLO, well before its rate limit; a busy window
  shrinks one API's capacity, and 429s are retried on the next provider;
- ``smooth-pool``: the same curves, and the self-hosted pool is the cheapest per request, so
  a cost-only plan loads it up its curve (its latency rises before its rate limit).

``suite(seeds)`` draws every family once per seed: 8 families x 4 seeds = 32 worlds.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from sim.scenarios import BENCH_WEIGHTS, POOL, Scenario, base_world, incidents
from sim.world import BusyWindow, Flash, PoolSpec, ProviderSpec, WorldSpec

__all__ = ["FAMILIES", "draw", "static_replicas", "suite"]

FAMILIES = ("capacity-busy", "latency-busy", "cheap-pool", "dear-fast", "surprises", "flat", "smooth", "smooth-pool")
SMOOTH = ("smooth", "smooth-pool")
ZONES = ("America/New_York", "America/Los_Angeles", "Europe/Berlin", "Asia/Tokyo", "Australia/Sydney", "UTC")
#: Scored Mondays to draw from: ordinary weeks with three weeks before them (none holds a
#: DST change in the zones above, except Sydney's October one, two weeks before).
MONDAYS = (date(2026, 11, 16), date(2026, 11, 23), date(2026, 12, 7), date(2027, 1, 25))


def static_replicas(spec: WorldSpec, weights: dict[str, float] | None = None) -> int:
    """What an operator sizes a static pool for: an ordinary weekday peak (no surge) at the
    router's weights, with the cache hits the router answers left out."""
    pool = next(p.pool for p in spec.providers if p.pool is not None)
    share = (weights or BENCH_WEIGHTS)[POOL]
    misses = 1.0 - spec.cache_hit_base * (1.0 - spec.cache_dip) if spec.cache_bypass else 1.0
    return max(2, math.ceil(spec.peak_rpm * misses * share / pool.rpm_per_replica))


def _api(rng: np.random.Generator, name: str, model: str, weak: str, *, median: float, price: float) -> ProviderSpec:
    """A paid API: ``price`` scales a per-1k-token price list like today's big providers'."""
    return ProviderSpec(name, model, median, float(rng.uniform(0.35, 0.45)), float(rng.uniform(450, 1100)),
                        0.0025 * price, 0.010 * price, weak_model=weak, weak_latency_factor=float(rng.uniform(0.45, 0.6)),
                        weak_price_factor=float(rng.uniform(0.06, 0.3)))


def _pool(rng: np.random.Generator, *, usd_per_request: tuple[float, float], warmup: tuple[int, int]) -> ProviderSpec:
    """The self-hosted pool, priced per request at full use within ``usd_per_request``, warm
    after ``warmup`` minutes (a range)."""
    rpm = float(rng.uniform(30, 120))
    usd = float(rng.uniform(*usd_per_request)) * 60 * rpm
    return ProviderSpec(POOL, "llama-3.3-70b", float(rng.uniform(1.1, 1.6)), 0.40, 0, 0.0, 0.0,
                        weak_model="llama-3.1-8b", weak_latency_factor=0.45,
                        pool=PoolSpec(rpm_per_replica=round(rpm), warmup_minutes=int(rng.integers(*warmup)),
                                      usd_per_replica_hour=round(usd, 2), replicas=6))


def _curve(rng: np.random.Generator, p: ProviderSpec) -> ProviderSpec:
    """``p`` on a smooth latency curve: k in [0.15, 0.6], the saturation 0.85 to 1.1 x its limit."""
    return replace(p, curve_k=float(rng.uniform(0.15, 0.6)), saturation=float(rng.uniform(0.85, 1.1)))


def _busy(rng: np.random.Generator, kind: str, weekdays: tuple[int, ...], start: float) -> tuple[BusyWindow, ...]:
    hours = float(rng.integers(2, 5))
    factor = float(rng.uniform(0.35, 0.6)) if kind == "capacity" else float(rng.uniform(1.8, 2.8))
    return tuple(BusyWindow(d, start, min(24.0, start + hours), factor, kind) for d in weekdays)


def draw(family: str, seed: int) -> Scenario:
    """One world of ``family``, drawn from ``seed``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; one of: {', '.join(FAMILIES)}")
    rng = np.random.default_rng([FAMILIES.index(family), seed, 20261130])
    tz = ZONES[int(rng.integers(len(ZONES)))]
    monday = MONDAYS[int(rng.integers(len(MONDAYS)))]
    surge_start = float(rng.integers(7, 11))
    surge = (surge_start, surge_start + float(rng.integers(2, 5)), float(rng.uniform(1.3, 2.4)))
    fast, slow = float(rng.uniform(0.9, 1.3)), float(rng.uniform(1.4, 2.0))
    cheap, dear = float(rng.uniform(0.5, 1.0)), float(rng.uniform(1.2, 2.5))
    if family == "dear-fast":  # the fast one costs the most
        prices = {"openai": dear, "anthropic": cheap}
        medians = {"openai": fast, "anthropic": slow}
    else:
        order = rng.permutation(2)
        prices = dict(zip(("openai", "anthropic"), (cheap, dear) if order[0] else (dear, cheap), strict=True))
        medians = dict(zip(("openai", "anthropic"), (fast, slow) if order[1] else (slow, fast), strict=True))
    pool_price = {"cheap-pool": (0.0002, 0.0007), "smooth-pool": (0.0002, 0.0007),
                  "dear-fast": (0.004, 0.008)}.get(family, (0.0005, 0.005))
    apis = [_api(rng, "openai", "gpt-4o", "gpt-4o-mini", median=medians["openai"], price=prices["openai"]),
            _api(rng, "anthropic", "claude-sonnet-4", "claude-haiku-3.5", median=medians["anthropic"],
                 price=prices["anthropic"])]
    pool = _pool(rng, usd_per_request=pool_price, warmup=(10, 21) if family in ("cheap-pool", "smooth-pool") else (2, 21))
    victim = int(rng.integers(2))
    weekdays = (0,) if rng.random() < 0.4 else (0, 1, 2, 3, 4)
    busy_start = float(np.clip(surge_start + rng.integers(-1, 2), 0, 21))
    kind = {"capacity-busy": "capacity", "latency-busy": "latency", "surprises": "capacity", "smooth": "capacity",
            "smooth-pool": "capacity"}.get(
        family, "capacity" if rng.random() < 0.5 else "latency")
    if family != "flat":
        apis[victim] = replace(apis[victim], busy=_busy(rng, kind, weekdays, busy_start))
    if family in SMOOTH:  # drawn last, so the other families' worlds stay what they were
        apis = [_curve(rng, p) for p in apis]
        pool = _curve(rng, pool)
    spec = replace(base_world(tz), peak_rpm=float(rng.uniform(600, 1400)), surge_factor=surge[2],
                   surge_start=surge[0], surge_end=surge[1], day_noise=float(rng.uniform(0.03, 0.08)),
                   cache_hit_base=float(rng.uniform(0.2, 0.45)), cache_dip=float(rng.uniform(0.1, 0.5)),
                   providers=(*apis, pool))
    start_scored = datetime(monday.year, monday.month, monday.day, tzinfo=ZoneInfo(tz))
    peaks: tuple[tuple[int, float, float], ...] = ((0, surge[0] - 1, surge[1] + 1),)
    seasonal, what = True, ""
    if family == "surprises":
        pick = int(rng.integers(3))
        if pick == 0:
            spec, what = replace(spec, holidays=(monday,)), "the scored Monday is a holiday"
            seasonal = False
        elif pick == 1:
            day = int(rng.integers(1, 5))
            at = start_scored + timedelta(days=day, hours=float(rng.integers(9, 17)))
            spec = replace(spec, flash=(Flash(at, int(rng.integers(30, 90)), float(rng.uniform(1.5, 2.5))),))
            what = f"a flash crowd on {at:%a %H:%M}"
            peaks = (*peaks, (day, at.hour - 0.5, at.hour + 2.0))
        else:
            spec = replace(spec, incidents=incidents(rng, start_scored - timedelta(weeks=3), 4, factor=(1.8, 2.8)))
            what = "incidents at random times"
    if family == "flat":
        spec = replace(spec, seasonal=False, incidents=incidents(rng, start_scored - timedelta(weeks=3), 4, factor=(1.8, 2.8)))
        seasonal, peaks, what = False, (), "incidents at random times"
    p = pool.pool
    assert p is not None
    busy = apis[victim].busy
    shape = f"Monday surge x{surge[2]:.1f} {surge[0]:02.0f}:00-{surge[1]:02.0f}:00" if spec.seasonal else "flat demand"
    curves = "; latency on curves, k " + "/".join(f"{q.curve_k:.2f}" for q in spec.providers) \
        if family in SMOOTH else ""
    desc = (f"{tz}, {spec.peak_rpm:.0f} rpm peak, {shape}"
            + (f"; {apis[victim].name} {busy[0].kind} x{busy[0].factor:.2f} "
               f"{'Mondays' if len(busy) == 1 else 'weekdays'} {busy[0].start:02.0f}:00-{busy[0].end:02.0f}:00"
               if busy else "")
            + f"; prices openai x{prices['openai']:.2f} anthropic x{prices['anthropic']:.2f}, pool "
              f"${p.usd_per_replica_hour:.2f}/h per {p.rpm_per_replica:.0f} rpm, {p.warmup_minutes} min warm-up"
            + curves + (f"; {what}" if what else ""))
    fixed = static_replicas(spec)
    spec = replace(spec, providers=tuple(replace(q, pool=replace(q.pool, replicas=fixed)) if q.pool is not None else q
                                         for q in spec.providers))
    return Scenario(f"{family}-{seed}", desc, seasonal, spec, monday, peaks=peaks, static_replicas=fixed)


def suite(seeds: int | tuple[int, ...] = 4, families: tuple[str, ...] = FAMILIES) -> list[Scenario]:
    """Every family drawn once per seed (``seeds``: a count from 1, or the seeds)."""
    chosen = tuple(range(1, seeds + 1)) if isinstance(seeds, int) else seeds
    return [draw(f, s) for s in chosen for f in families]
