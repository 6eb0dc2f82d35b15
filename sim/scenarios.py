"""The closed-loop benchmark's worlds: one base world and eight scenarios built on it.

The base world is an LLM router in front of two paid APIs and a self-hosted pool:

- ``openai`` and ``anthropic``: rate-limited (429 past their RPM, retried once on another
  provider), priced per token, each with a strong and a weak model;
- ``selfhosted``: a vLLM-style pool of replicas, each taking ``rpm_per_replica`` requests per
  minute, ready ``warmup_minutes`` after a scale-up (a model load), paid per replica-hour;
- demand with a daily and weekly shape and a Monday 08:00-11:00 surge, a cache whose hit
  ratio dips at peak (hits never reach a provider), and token sizes from the Azure LLM
  inference trace.

Every scenario learns for ``warmup_weeks`` and is scored on the week after. Times are local
to the scenario's timezone. ``seasonal`` tells which target applies: seasonal scenarios must
show gains; the others (holiday, flash crowd, no seasonality) must show no harm.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from sim.world import (
    AZURE_CONV_TOKENS,
    BusyWindow,
    Flash,
    Incident,
    PoolSpec,
    ProviderSpec,
    TokenSizes,
    WorldSpec,
)

POOL = "selfhosted"

BENCH_PROVIDERS = (
    ProviderSpec("openai", "gpt-4o", 1.5, 0.45, 800, 0.0025, 0.010, weak_model="gpt-4o-mini",
                 weak_latency_factor=0.55, weak_price_factor=0.06),
    ProviderSpec("anthropic", "claude-sonnet-4", 1.4, 0.40, 600, 0.0030, 0.015, weak_model="claude-haiku-3.5",
                 weak_latency_factor=0.5, weak_price_factor=0.27),
    ProviderSpec(POOL, "llama-3.3-70b", 1.3, 0.40, 0, 0.0, 0.0, weak_model="llama-3.1-8b",
                 weak_latency_factor=0.45, pool=PoolSpec(rpm_per_replica=60, warmup_minutes=8,
                                                         usd_per_replica_hour=4.0, replicas=6)),
)
#: What the router runs on before any policy: its static configuration.
BENCH_WEIGHTS = {"openai": 0.4, "anthropic": 0.3, POOL: 0.3}
STATIC_REPLICAS = 7  # sized by hand for an ordinary weekday peak, as a static setup would be


def pool_spec(spec: WorldSpec) -> PoolSpec:
    """The self-hosted pool of a benchmark world."""
    pool = next((p.pool for p in spec.providers if p.name == POOL), None)
    if pool is None:
        raise ValueError(f"the world has no {POOL!r} pool")
    return pool


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    #: Seasonal scenarios must beat the reactive baselines; the others must do no harm.
    seasonal: bool
    spec: WorldSpec
    #: Local midnight of the Monday the scored week starts.
    scored_monday: date
    #: Local (weekday, start hour, end hour) windows reported as "peak" minutes.
    peaks: tuple[tuple[int, float, float], ...] = ((0, 7.0, 12.0),)
    warmup_weeks: int = 3
    #: Days scored from the Monday on (7: the week; the quick mode scores the Monday only).
    scored_days: int = 7
    #: The pool's replicas in a static setup (sized by hand for an ordinary weekday peak).
    static_replicas: int = STATIC_REPLICAS

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.spec.tz)

    @property
    def scored_start(self) -> datetime:
        return datetime(self.scored_monday.year, self.scored_monday.month, self.scored_monday.day, tzinfo=self.tz)

    @property
    def scored_end(self) -> datetime:
        return self.scored_start + timedelta(days=self.scored_days)  # wall-clock: DST days have 23 or 25 hours

    @property
    def start(self) -> datetime:
        return self.scored_start - timedelta(weeks=self.warmup_weeks)


def base_world(tz: str = "America/New_York", *, tokens: TokenSizes = AZURE_CONV_TOKENS,
               shape: tuple[float, ...] | None = None) -> WorldSpec:
    return WorldSpec(
        tz=tz, peak_rpm=1000.0, surge_factor=1.6, surge_start=8.0, surge_end=11.0, day_noise=0.05,
        slo_seconds=5.0, error_budget=0.02, cache_hit_base=0.35, cache_dip=0.35, cache_bypass=True,
        retry=True, retry_overhead_seconds=0.5, tokens=tokens, shape=shape, route="chat",
        providers=BENCH_PROVIDERS, escalation_fraction=0.3,
    )


def _busy_openai(spec: WorldSpec, start: float, end: float, factor: float = 2.6) -> WorldSpec:
    providers = tuple(replace(p, busy=(BusyWindow(0, start, end, factor),)) if p.name == "openai" else p
                      for p in spec.providers)
    return replace(spec, providers=providers)


def incidents(rng: np.random.Generator, start: datetime, weeks: int, per_week: int = 3,
              factor: float | tuple[float, float] = 2.6) -> tuple[Incident, ...]:
    """Provider slowdowns at random times (no pattern to learn): 45 to 120 minutes each, latency
    x ``factor`` (or drawn from that range)."""
    out = []
    for _ in range(per_week * weeks):
        at = start + timedelta(minutes=int(rng.integers(0, weeks * 7 * 1440)))
        who = ("openai", "anthropic")[int(rng.integers(0, 2))]
        minutes = int(rng.integers(45, 120))
        x = factor if isinstance(factor, float) else float(rng.uniform(*factor))
        out.append(Incident(who, at, at + timedelta(minutes=minutes), x))
    return tuple(sorted(out, key=lambda i: i.start))


def scenarios(seed: int = 0, *, tokens: TokenSizes = AZURE_CONV_TOKENS,
              shape: tuple[float, ...] | None = None) -> dict[str, Scenario]:
    """The eight scenarios. ``shape`` replaces the built-in hour-of-week demand shape (e.g.
    one taken from a real series); ``tokens`` the token sizes."""
    ny = "America/New_York"
    monday = date(2026, 11, 16)  # three ordinary weeks before it, Thanksgiving after it
    base = base_world(ny, tokens=tokens, shape=shape)
    degrades = _busy_openai(base, 8.0, 11.0)
    made: list[Scenario] = [
        Scenario("monday-peak", "Everyone logs in at once: a Monday 08:00-11:00 surge of x2.2. The self-hosted "
                 "pool and the rate limits are short unless capacity is in place before 08:00.", True,
                 replace(base, surge_factor=2.2), monday),
        Scenario("provider-degrades-at-peak", "The surge, and openai's shared capacity is busy at the same "
                 "time (p95 x2.6, Monday 08:00-11:00).", True, degrades, monday),
        Scenario("cache-dip", "The surge, and the cache hit ratio collapses at peak (new questions): "
                 "provider load grows faster than demand.", True,
                 replace(base, cache_hit_base=0.5, cache_dip=0.75), monday),
        Scenario("dst-week", "provider-degrades-at-peak, scored on the week after the autumn DST change "
                 "(learned in EDT, scored in EST).", True, degrades, date(2026, 11, 2)),
        Scenario("holiday-monday", "provider-degrades-at-peak's history, but the scored Monday is a holiday: "
                 "no surge and no busy window come.", False,
                 replace(degrades, holidays=(date(2026, 11, 16),)), monday),
        Scenario("flash-crowd", "provider-degrades-at-peak, plus a flash crowd (x2.2 for 40 min) on "
                 "Wednesday 14:00 that nothing in the history announces.", False,
                 replace(degrades, flash=(Flash(datetime(2026, 11, 18, 14, 0, tzinfo=ZoneInfo(ny)), 40, 2.2),)),
                 monday, peaks=((0, 7.0, 12.0), (2, 13.5, 15.5))),
    ]
    flat = replace(base, seasonal=False)
    tz = ZoneInfo(ny)
    scored = datetime(monday.year, monday.month, monday.day, tzinfo=tz)
    made.append(Scenario("no-seasonality", "Flat demand and provider slowdowns at random times: the negative "
                         "control, where no forecast is trusted.", False,
                         replace(flat, incidents=incidents(np.random.default_rng([seed, 77]), scored - timedelta(weeks=3), 4)), monday,
                         peaks=()))
    tokyo = _busy_openai(base_world("Asia/Tokyo", tokens=tokens, shape=shape), 9.0, 12.0)
    made.append(Scenario("shifted-timezone", "provider-degrades-at-peak in Asia/Tokyo: the surge and the busy "
                         "window are at 09:00-12:00 JST (00:00-03:00 UTC).", True,
                         replace(tokyo, surge_start=9.0, surge_end=12.0), monday, peaks=((0, 8.0, 13.0),)))
    return {s.name: s for s in made}


NAMES = ("monday-peak", "provider-degrades-at-peak", "cache-dip", "dst-week", "holiday-monday", "flash-crowd",
         "no-seasonality", "shifted-timezone")
QUICK = ("provider-degrades-at-peak", "no-seasonality")
