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
- ``cron``: ``hpa`` plus a schedule an operator wrote for the Monday window (a higher
  replica floor and share moved off openai, 07:30-11:30 local every Monday);
- ``oracle``: sees the future (arrivals, busy windows, incidents): the upper bound.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import numpy as np

from sim import SimulatedRouter
from sim.scenarios import BENCH_WEIGHTS, POOL, STATIC_REPLICAS, Scenario, pool_spec


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

    def start(self, world: SimulatedRouter, scenario: Scenario) -> None:
        pass

    def tick(self, now: datetime, world: SimulatedRouter) -> Knobs:
        return Knobs(dict(BENCH_WEIGHTS), replicas=STATIC_REPLICAS)

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

    def start(self, world: SimulatedRouter, scenario: Scenario) -> None:
        pass

    def tick(self, now: datetime, world: SimulatedRouter) -> Knobs:
        return Knobs(self.router.weights(now, world), replicas=STATIC_REPLICAS)

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
    """``hpa`` plus an operator's Monday schedule (a CronJob with ``timeZone`` set)."""

    name = "cron"
    floor = 12
    weights = {"openai": 0.2, "anthropic": 0.4, POOL: 0.4}

    def __init__(self) -> None:
        super().__init__()
        self.window = (7.5, 11.5)
        self.scenario: Scenario | None = None

    def start(self, world: SimulatedRouter, scenario: Scenario) -> None:
        super().start(world, scenario)
        self.scenario = scenario
        self.window = (scenario.spec.surge_start - 0.5, scenario.spec.surge_end + 0.5)

    def tick(self, now: datetime, world: SimulatedRouter) -> Knobs:
        assert self.hpa is not None and self.scenario is not None
        local = now.astimezone(self.scenario.tz)
        hour = local.hour + local.minute / 60
        inside = local.weekday() == 0 and self.window[0] <= hour < self.window[1]
        return Knobs(dict(self.weights if inside else BENCH_WEIGHTS),
                     replicas=self.hpa.desired(world, floor=self.floor if inside else 0))


class Oracle:
    """Perfect foresight of arrivals, busy windows and incidents; the same mechanics.

    Weights: a provider that will be slowed (x1.3 or more) over the next minutes keeps only
    5%; the rest share by the baseline, each paid provider within 90% of its RPM limit at the
    load that will come. Pool: replicas ordered exactly one warm-up ahead of the load they
    serve, with 15% headroom, and released as soon as the load passes."""

    name = "oracle"

    def __init__(self, look_minutes: int = 10) -> None:
        self.look = look_minutes
        self.warmup = 0
        self.per_replica = 1.0

    def start(self, world: SimulatedRouter, scenario: Scenario) -> None:
        spec = pool_spec(world.spec)
        self.warmup, self.per_replica = spec.warmup_minutes, spec.rpm_per_replica

    def _misses(self, world: SimulatedRouter, arrivals: np.ndarray) -> np.ndarray:
        return arrivals * (1.0 - world.hit_ratio(arrivals)) if world.spec.cache_bypass else arrivals

    def tick(self, now: datetime, world: SimulatedRouter) -> Knobs:
        names = [p.name for p in world.spec.providers]
        slow = world.busy_factors(now, now + timedelta(minutes=self.look)).max(axis=0)
        soon = self._misses(world, world.demand_ahead(now, now + timedelta(minutes=self.look)))
        base = {n: (0.05 if slow[j] >= 1.3 else BENCH_WEIGHTS[n]) for j, n in enumerate(names)}
        load = float(soon.max()) if len(soon) else 0.0
        weights = _fit_limits(base, load, {p.name: p.rpm_limit * 0.9 for p in world.spec.providers if p.pool is None})
        ahead = self._misses(world, world.demand_ahead(now + timedelta(minutes=self.warmup),
                                                      now + timedelta(minutes=self.warmup + 2)))
        need = float(ahead.max()) * weights[POOL] if len(ahead) else 0.0
        ready_need = float(soon[: self.warmup + 1].max()) * weights[POOL] if len(soon) else 0.0
        current = world.pools()[POOL][1]
        want = max(2, math.ceil(need * 1.15 / self.per_replica))
        # Keep what the next warm-up period needs (a replica dropped now cannot come back in time).
        want = max(want, min(current, math.ceil(ready_need * 1.15 / self.per_replica)))
        return Knobs(weights, replicas=want)

    def close(self) -> None:
        pass


def _fit_limits(base: dict[str, float], load: float, limits: dict[str, float]) -> dict[str, float]:
    """Shares by ``base``, moving any excess over a provider's limit to those with room."""
    total = sum(base.values())
    share = {n: v / total for n, v in base.items()}
    for _ in range(len(share)):
        over = {n: share[n] * load - limits[n] for n in limits if share[n] * load > limits[n]}
        if not over or load <= 0:
            break
        spare = [n for n in share if n not in over]
        if not spare:
            break
        extra = sum(over.values()) / load
        for n, v in over.items():
            share[n] -= v / load
        room = sum(share[n] for n in spare)
        for n in spare:
            share[n] += extra * (share[n] / room if room > 0 else 1 / len(spare))
    return share


BASELINES = {cls.name: cls for cls in (Static, ReactiveRouting, Autoscaled, Reactive, Cron, Oracle)}
REACTIVE = ("reactive-routing", "hpa", "reactive")
