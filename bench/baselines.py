"""What users run today, behind one interface with diurnal (:class:`Policy`).

Every tick a policy looks at the simulated router (:meth:`SimulatedRouter.recent` is what
a router knows of its own calls: per provider, attempts, 429s and mean latency per minute)
and returns the knobs to set. The baselines:

- ``static``: the router's configured weights and a pool sized by hand for an ordinary peak;
- ``reactive-routing``: LiteLLM's latency-based routing: the providers whose recent mean
  latency is within ``buffer`` of the lowest share the traffic, a deployment's RPM limit is
  respected, and a deployment answering mostly 429s is cooled down; the pool stays static;
- ``hpa``: static weights and a HorizontalPodAutoscaler on the pool (requests per replica,
  a metrics lag, scale-down stabilization, replicas ready only after their warm-up);
- ``reactive``: both of the above together, the strongest reactive setup;
- ``cron``: ``hpa`` plus a schedule an operator wrote after looking at the dashboards: a
  higher replica floor over the Monday surge, and share moved off a provider over its busy
  windows (each half an hour wider on both sides), in local time;
- ``oracle``: the least-cost plan with perfect foresight: it knows the arrivals, the busy
  windows and incidents, each provider's true latency model (so its true SLO capacity) and
  the prices, and splits every minute with the planner's own least-cost split, the pool
  scaled one warm-up ahead of the load it plans for it. The gap to it is what forecasting
  and learning leave on the table.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import numpy as np

from policies.planner import Offer, split_demand
from sim import SimulatedRouter
from sim.scenarios import BENCH_WEIGHTS, POOL, Scenario, pool_spec
from sim.world import PoolSpec, ProviderSpec, WorldSpec, slo_capacity_rpm


@dataclass
class Knobs:
    """What a policy sets on the router; None leaves a knob as it is."""

    weights: dict[str, float] | None = None
    escalation: float | None = None
    replicas: int | None = None  # the pool's desired replicas


class Policy(Protocol):
    name: str

    def start(self, world: SimulatedRouter, scenario: Scenario) -> None: ...

    def tick(self, now: datetime, world: SimulatedRouter) -> Knobs: ...

    def close(self) -> None: ...


def apply(world: SimulatedRouter, knobs: Knobs) -> None:
    if knobs.weights is not None:
        world.set_weights(knobs.weights)
    if knobs.escalation is not None:
        world.set_escalation(knobs.escalation)
    if knobs.replicas is not None and knobs.replicas != world.pools()[POOL][1]:
        world.scale(POOL, knobs.replicas)


@dataclass
class HPA:
    """A HorizontalPodAutoscaler on requests per replica (autoscaling/v2 semantics)."""

    target_rpm_per_replica: float
    min_replicas: int = 2
    max_replicas: int = 60
    tolerance: float = 0.1
    metric_lag_minutes: int = 1  # scrape + rate() window of the metrics pipeline
    scale_down_stabilization_minutes: int = 5
    _recommendations: deque[int] = field(default_factory=deque)

    def desired(self, world: SimulatedRouter, floor: int = 0) -> int:
        recent = world.recent(1 + self.metric_lag_minutes)
        load = float(recent[f"attempts_{POOL}"][0])  # the lagged minute
        ready, current = world.pools()[POOL]
        want = math.ceil(load / self.target_rpm_per_replica - 1e-9)
        if current and abs(load / (current * self.target_rpm_per_replica) - 1.0) <= self.tolerance:
            want = current
        want = max(self.min_replicas, floor, min(self.max_replicas, want))
        self._recommendations.append(want)
        while len(self._recommendations) > self.scale_down_stabilization_minutes:
            self._recommendations.popleft()
        return want if want >= current else max(self._recommendations)


class Static:
    name = "static"

    def __init__(self) -> None:
        self.replicas = 0

    def start(self, world: SimulatedRouter, scenario: Scenario) -> None:
        self.replicas = scenario.static_replicas

    def tick(self, now: datetime, world: SimulatedRouter) -> Knobs:
        return Knobs(dict(BENCH_WEIGHTS), replicas=self.replicas)

    def close(self) -> None:
        pass


class LatencyRouting:
    """LiteLLM's ``latency-based-routing`` with a ``lowest_latency_buffer``, per-deployment
    ``rpm`` limits and cooldowns (allowed fails exceeded: skipped for ``cooldown`` minutes).
    A latency is remembered for ``ttl`` (LiteLLM's default: an hour); a deployment that got no
    traffic since has no latency again and is tried as if it were the fastest."""

    def __init__(self, buffer: float = 0.5, cooldown_minutes: int = 1, headroom: float = 0.9,
                 ttl: timedelta = timedelta(hours=1)) -> None:
        self.buffer = buffer
        self.cooldown = cooldown_minutes
        self.headroom = headroom
        self.ttl = ttl
        self._latency: dict[str, float] = {}
        self._seen: dict[str, datetime] = {}
        self._cool_until: dict[str, datetime] = {}

    def weights(self, now: datetime, world: SimulatedRouter) -> dict[str, float]:
        last = {c: v[-1] for c, v in world.recent(1).items()}
        names = [p.name for p in world.spec.providers]
        for n in names:
            lat = float(last[f"latency_{n}"])
            if not math.isnan(lat):
                self._latency[n], self._seen[n] = lat, now
            elif n in self._seen and now - self._seen[n] >= self.ttl:
                del self._latency[n], self._seen[n]
            attempts, rejected = float(last[f"attempts_{n}"]), float(last[f"rejected_{n}"])
            if attempts > 3 and rejected > 0.5 * attempts:
                self._cool_until[n] = now + timedelta(minutes=self.cooldown)
        live = [n for n in names if self._cool_until.get(n, now) <= now] or names
        # A deployment without latency data yet counts as the fastest (LiteLLM explores it).
        order = sorted(live, key=lambda n: self._latency.get(n, 0.0))
        best = self._latency.get(order[0], 0.0)
        load = float(last["requests"] - last["cache_hits"]) if world.spec.cache_bypass else float(last["requests"])
        limits = {p.name: p.rpm_limit * self.headroom for p in world.spec.providers if p.pool is None}
        share = dict.fromkeys(names, 0.0)
        within = [n for n in order if self._latency.get(n, 0.0) <= best * (1 + self.buffer)]
        left = max(load, 1.0)
        for group in (within, [n for n in order if n not in within]):
            while group and left > 1e-9:
                each = left / len(group)
                capped = [n for n in group if n in limits and limits[n] - share[n] < each]
                if not capped:
                    for n in group:
                        share[n] += each
                    left = 0.0
                    break
                for n in capped:
                    room = max(0.0, limits[n] - share[n])
                    share[n] += room
                    left -= room
                group = [n for n in group if n not in capped]
        if left > 1e-9:  # everything at its limit: spread the rest by the limits
            for n in names:
                share[n] += left / len(names)
        total = sum(share.values())
        return {n: v / total for n, v in share.items()}


class ReactiveRouting:
    name = "reactive-routing"

    def __init__(self) -> None:
        self.router = LatencyRouting()
        self.replicas = 0

    def start(self, world: SimulatedRouter, scenario: Scenario) -> None:
        self.replicas = scenario.static_replicas

    def tick(self, now: datetime, world: SimulatedRouter) -> Knobs:
        return Knobs(self.router.weights(now, world), replicas=self.replicas)

    def close(self) -> None:
        pass


def pool_hpa(world: SimulatedRouter) -> HPA:
    return HPA(target_rpm_per_replica=pool_spec(world.spec).rpm_per_replica * 0.7)


class Autoscaled:
    name = "hpa"

    def __init__(self) -> None:
        self.hpa: HPA | None = None

    def start(self, world: SimulatedRouter, scenario: Scenario) -> None:
        self.hpa = pool_hpa(world)

    def tick(self, now: datetime, world: SimulatedRouter) -> Knobs:
        assert self.hpa is not None
        return Knobs(dict(BENCH_WEIGHTS), replicas=self.hpa.desired(world))

    def close(self) -> None:
        pass


class Reactive(Autoscaled):
    name = "reactive"

    def __init__(self) -> None:
        super().__init__()
        self.router = LatencyRouting()

    def tick(self, now: datetime, world: SimulatedRouter) -> Knobs:
        assert self.hpa is not None
        return Knobs(self.router.weights(now, world), replicas=self.hpa.desired(world))


class Cron(Autoscaled):
    """``hpa`` plus an operator's schedule (CronJobs with ``timeZone`` set), written from what
    the dashboards show: over the Monday surge (half an hour wider each side) a replica floor
    for the surge at the router's weights; over each provider's busy windows (as wide), its
    share down to 10%, the others taking it by their weights."""

    name = "cron"
    slack = 0.5  # hours added on both sides of a window

    def __init__(self) -> None:
        super().__init__()
        self.scenario: Scenario | None = None
        self.floor = 0

    def start(self, world: SimulatedRouter, scenario: Scenario) -> None:
        super().start(world, scenario)
        self.scenario = scenario
        spec = scenario.spec
        misses = 1.0 - spec.cache_hit_base * (1.0 - spec.cache_dip) if spec.cache_bypass else 1.0
        surge = spec.peak_rpm * spec.surge_factor * misses * BENCH_WEIGHTS[POOL]
        self.floor = math.ceil(surge / pool_spec(spec).rpm_per_replica)

    def _inside(self, weekday: int, hour: float, day: int, start: float, end: float) -> bool:
        return weekday == day and start - self.slack <= hour < end + self.slack

    def tick(self, now: datetime, world: SimulatedRouter) -> Knobs:
        assert self.hpa is not None and self.scenario is not None
        spec = self.scenario.spec
        local = now.astimezone(self.scenario.tz)
        hour = local.hour + local.minute / 60
        surge = spec.seasonal and self._inside(local.weekday(), hour, 0, spec.surge_start, spec.surge_end)
        weights = dict(BENCH_WEIGHTS)
        busy = {p.name for p in spec.providers
                for b in p.busy if self._inside(local.weekday(), hour, b.weekday, b.start, b.end)}
        if busy and len(busy) < len(weights):
            moved = sum(weights[n] - 0.1 for n in busy)
            rest = sum(w for n, w in weights.items() if n not in busy)
            weights = {n: 0.1 if n in busy else w + moved * w / rest for n, w in weights.items()}
        return Knobs(weights, replicas=self.hpa.desired(world, floor=self.floor if surge else 0))


#: The oracle's margin under each provider's true SLO capacity: it knows the arrivals, not
#: each minute's latency draws.
ORACLE_MARGIN = 0.9
#: The most replicas the oracle orders (diurnal's prewarm action is bounded the same).
ORACLE_MAX_REPLICAS = 60


def true_capacity_rpm(spec: WorldSpec, p: ProviderSpec, limit: float, latency_factor: float) -> float:
    """``p``'s true SLO capacity under the world's latency model (:func:`sim.world.slo_capacity_rpm`)."""
    return slo_capacity_rpm(p, limit, latency_factor, spec.slo_seconds)


def price_per_request(spec: WorldSpec, p: ProviderSpec, escalation: float) -> float:
    """What one request costs on an API: its token prices at the world's mean token sizes,
    with the weak model's discount on the share not escalated."""
    tok = spec.tokens
    strong = (tok.input_mean * p.usd_per_1k_input + tok.output_mean * p.usd_per_1k_output) / 1000
    if p.weak_model is None:
        return strong
    return strong * (escalation + (1 - escalation) * p.weak_price_factor)


class Oracle:
    """The least-cost plan with perfect foresight (see the module docstring)."""

    name = "oracle"

    def __init__(self, look_minutes: int = 10) -> None:
        self.look = look_minutes
        self.spec: WorldSpec | None = None
        self.pool: PoolSpec | None = None

    def start(self, world: SimulatedRouter, scenario: Scenario) -> None:
        self.spec = world.spec
        self.pool = pool_spec(world.spec)

    def _misses(self, world: SimulatedRouter, arrivals: np.ndarray) -> np.ndarray:
        return arrivals * (1.0 - world.hit_ratio(arrivals)) if world.spec.cache_bypass else arrivals

    def _split(self, world: SimulatedRouter, at: datetime, minutes: int, pool_units: float
               ) -> tuple[dict[str, float], float]:
        """The least-cost split of the busiest minute of ``[at, at + minutes)`` with the pool
        at ``pool_units``, and the load it sends the pool."""
        spec = self.spec
        assert spec is not None
        end = at + timedelta(minutes=minutes)
        load = self._misses(world, world.demand_ahead(at, end))
        slow = world.busy_factors(at, end).max(axis=0)
        shrink = world.capacity_factors(at, end).min(axis=0)
        offers = []
        for j, p in enumerate(spec.providers):
            if p.pool is not None:
                limit = pool_units * p.pool.rpm_per_replica * shrink[j]
                price = p.pool.usd_per_replica_hour / (60.0 * p.pool.rpm_per_replica * ORACLE_MARGIN)
            else:
                limit = p.rpm_limit * shrink[j]
                price = price_per_request(spec, p, world.escalation)
            offers.append(Offer(name=p.name, min_weight=0.0, max_weight=1.0, baseline_weight=BENCH_WEIGHTS[p.name],
                                capacity_rpm=true_capacity_rpm(spec, p, limit, float(slow[j])),
                                price_per_request=price))
        split = split_demand(float(load.max()) if len(load) else 0.0, offers, ORACLE_MARGIN)
        return dict(split.weights), split.load_rpm.get(POOL, 0.0)

    def _units(self, load: float) -> int:
        assert self.pool is not None
        return math.ceil(load / (self.pool.rpm_per_replica * ORACLE_MARGIN) - 1e-9)

    def tick(self, now: datetime, world: SimulatedRouter) -> Knobs:
        assert self.pool is not None
        ready, current = world.pools()[POOL]
        weights, _ = self._split(world, now, self.look, ready)
        # One warm-up ahead: the replicas the least-cost split then sends load to, with every
        # replica it could have; never dropping what the coming warm-up needs.
        _, later = self._split(world, now + timedelta(minutes=self.pool.warmup_minutes), 2, ORACLE_MAX_REPLICAS)
        _, soon = self._split(world, now, self.pool.warmup_minutes + 1, current)
        want = max(2, self._units(later), min(current, self._units(soon)))
        return Knobs(weights, replicas=min(ORACLE_MAX_REPLICAS, want))

    def close(self) -> None:
        pass


BASELINES = {cls.name: cls for cls in (Static, ReactiveRouting, Autoscaled, Reactive, Cron, Oracle)}
REACTIVE = ("reactive-routing", "hpa", "reactive")
