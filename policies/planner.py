"""The planner: the least-cost split of demand over the providers within each provider's SLO
capacity, interval by interval over the hours ahead, with a self-hosted pool planned with it.
Pure: no I/O, no clock (``now`` is an argument).

Per interval (:func:`split_demand`; :func:`plan` repeats it over the hours ahead and plans the pool):

1. every provider gets its ``min_weight`` share;
2. the priced providers are filled cheapest first, each up to the lower of its ``max_weight``
   share and ``margin`` × its SLO capacity (``CheapestWithinSlo``; one held below what its
   price would give it by its capacity says so: ``CapacityForecastLimited``);
3. then the providers without a price, planned by latency only: filled within their capacity
   in the order given (``PriceUnknown``);
4. demand beyond every provider's capacity together is spread so that their utilisation
   (load / capacity) is as even as the ``max_weight`` bounds allow: the worst p95 is then as
   low as it can be (``CapacityExhausted``).

A capacity of None is unknown: that provider is bounded by its ``max_weight`` only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from policies.types import ReasonCode

__all__ = ["Interval", "Offer", "Plan", "Pool", "PoolStep", "Split", "plan", "split_demand"]

_EPS = 1e-9


@dataclass(frozen=True, kw_only=True)
class Offer:
    """One provider in one interval, as the planner sees it."""

    name: str
    min_weight: float
    max_weight: float
    #: SLO capacity in requests per minute (learned, and within the configured RPM/TPM caps);
    #: None when unknown.
    capacity_rpm: float | None
    #: What one request costs in this interval (price windows applied); None: no price.
    price_per_request: float | None


@dataclass(frozen=True)
class Split:
    weights: Mapping[str, float]  # sums to 1
    load_rpm: Mapping[str, float]
    reasons: Mapping[str, tuple[ReasonCode, str]]


def split_demand(demand_rpm: float, offers: Sequence[Offer], margin: float) -> Split:
    """The least-cost split of ``demand_rpm`` (see the module docstring). ``margin`` is the
    share of a provider's SLO capacity the plan uses at most (``capacity_headroom``)."""
    if not offers:
        return Split({}, {}, {})
    demand = max(demand_rpm, _EPS)  # no load: the shares still go cheapest first
    top = {o.name: o.max_weight * demand for o in offers}
    safe = {o.name: min(top[o.name], margin * o.capacity_rpm if o.capacity_rpm is not None else top[o.name])
            for o in offers}
    load = {o.name: o.min_weight * demand for o in offers}
    rest = demand - sum(load.values())
    priced = sorted((o for o in offers if o.price_per_request is not None),
                    key=lambda o: (o.price_per_request, o.name))
    unpriced = [o for o in offers if o.price_per_request is None]
    reasons: dict[str, tuple[ReasonCode, str]] = {}
    for o in [*priced, *unpriced]:
        add = max(0.0, min(rest, safe[o.name] - load[o.name]))
        load[o.name] += add
        rest -= add
        reasons[o.name] = _why(o, load[o.name], safe[o.name], top[o.name], rest, margin,
                               at_floor=add <= _EPS * demand)
    if rest > _EPS * demand:
        rest = _spread_evenly(rest, offers, load, top)
        total_cap = sum(o.capacity_rpm for o in offers if o.capacity_rpm is not None)
        for o in offers:
            reasons[o.name] = (ReasonCode.CapacityExhausted,
                               f"{demand:.0f} rpm is over the {margin:.0%} of {total_cap:.0f} rpm SLO capacity all "
                               f"providers have together; spread to even out their load ({load[o.name]:.0f} rpm here)")
    total = sum(load.values())
    return Split({n: v / total for n, v in load.items()}, load, reasons)


def _why(o: Offer, load: float, safe: float, top: float, rest: float, margin: float, *,
         at_floor: bool) -> tuple[ReasonCode, str]:
    if o.price_per_request is None:
        return (ReasonCode.PriceUnknown,
                f"no price configured: planned by latency only, {load:.0f} rpm within its SLO capacity")
    if at_floor and rest <= _EPS:
        return (ReasonCode.CheapestWithinSlo,
                f"{load:.0f} rpm, its minimum share: cheaper providers take the rest within their SLO capacity")
    if rest > _EPS and safe < top - _EPS and o.capacity_rpm is not None:
        return (ReasonCode.CapacityForecastLimited,
                f"{load:.0f} rpm at ${o.price_per_request:.4g}/request, held at {margin:.0%} of its "
                f"{o.capacity_rpm:.0f} rpm SLO capacity")
    return (ReasonCode.CheapestWithinSlo,
            f"{load:.0f} rpm at ${o.price_per_request:.4g}/request, the cheapest share within its SLO capacity")


def _spread_evenly(rest: float, offers: Sequence[Offer], load: dict[str, float], top: Mapping[str, float]) -> float:
    """Add ``rest`` so that load / capacity rises evenly over the providers with a known
    capacity, each within its ``max_weight`` share (water-filling); what they cannot take
    goes to the providers of unknown capacity. Returns what is left (0 unless every share is
    at its maximum)."""
    for group in ([o for o in offers if o.capacity_rpm], [o for o in offers if not o.capacity_rpm]):
        while rest > _EPS and (room := [o for o in group if top[o.name] - load[o.name] > _EPS]):
            weight = {o.name: o.capacity_rpm or 1.0 for o in room}
            total = sum(weight.values())
            # Raise everyone in proportion to capacity, stopping at the first that fills up.
            step = min(rest, *((top[n] - load[n]) * total / w for n, w in weight.items()))
            for n, w in weight.items():
                load[n] += step * w / total
            rest -= step
    return rest


@dataclass(frozen=True, kw_only=True)
class Interval:
    """One step of the plan: when it starts, the demand to serve (the forecast's upper band net
    of cache hits, requests per minute) and every provider's offer then."""

    at: datetime
    demand_rpm: float
    offers: tuple[Offer, ...]


@dataclass(frozen=True, kw_only=True)
class Pool:
    """A self-hosted pool behind one provider: its capacity is ready units × ``rpm_per_unit``,
    a unit takes ``lead`` to warm up, and costs ``unit_price_per_hour`` warm or busy."""

    provider: str
    rpm_per_unit: float
    unit_price_per_hour: float | None
    min_units: int
    max_units: int
    lead: timedelta
    release_after: timedelta
    #: Units warm now; more cannot be ready before ``now + lead``.
    ready_units: int
    #: Units the load observed now needs (never planned below it).
    needed_now: int


@dataclass(frozen=True)
class PoolStep:
    """Set the pool to ``units`` at ``at`` (its peak minus the warm-up lead), held until ``release_at``."""

    at: datetime
    units: int
    peak_at: datetime
    release_at: datetime


@dataclass(frozen=True)
class Plan:
    splits: tuple[Split, ...]  # one per interval
    units: tuple[int, ...]  # the pool's units in force in each interval (empty without a pool)
    steps: tuple[PoolStep, ...]


def plan(intervals: Sequence[Interval], margin: float, now: datetime, pool: Pool | None = None) -> Plan:
    """The least-cost split of every interval, with the pool planned with it: in an interval
    it can be warm for (``now + lead`` on) the pool offers up to ``max_units``, priced per
    request at full planned use; before that only its ready units. Its units are raised at
    each interval's start minus the lead and held until ``release_after`` past the stretch
    that needed them; never below what the observed load needs now."""
    splits: list[Split] = []
    need: list[int] = []
    for iv in intervals:
        offers = iv.offers
        if pool is not None:
            units = pool.max_units if iv.at >= now + pool.lead else max(pool.ready_units, pool.min_units)
            per_request = None if pool.unit_price_per_hour is None else \
                pool.unit_price_per_hour / (60.0 * pool.rpm_per_unit * margin)
            offers = tuple(
                replace(o, capacity_rpm=units * pool.rpm_per_unit, price_per_request=per_request)
                if o.name == pool.provider else o for o in offers)
        s = split_demand(iv.demand_rpm, offers, margin)
        splits.append(s)
        if pool is not None:
            load = s.load_rpm.get(pool.provider, 0.0)
            need.append(min(pool.max_units, max(pool.min_units, math.ceil(load / (pool.rpm_per_unit * margin) - 1e-9))))
    if pool is None or not intervals:
        return Plan(tuple(splits), (), ())
    held = _held(intervals, need, pool)
    held[0] = max(held[0], pool.needed_now)
    return Plan(tuple(splits), tuple(held), _steps(intervals, held, pool))


def _held(intervals: Sequence[Interval], need: Sequence[int], pool: Pool) -> list[int]:
    """Each interval's units: the most any interval needed over the last ``release_after``."""
    out = []
    for i, iv in enumerate(intervals):
        recent = [need[j] for j in range(i + 1) if intervals[j].at >= iv.at - pool.release_after]
        out.append(max(recent))
    return out


def _steps(intervals: Sequence[Interval], units: Sequence[int], pool: Pool) -> tuple[PoolStep, ...]:
    """One step per change of units: a raise issued ``lead`` before the interval that needs it
    (at the peak minus the lead), a release when the hold ends."""
    steps = []
    for i in range(len(intervals)):
        before = units[i - 1] if i else pool.ready_units
        if units[i] == before:
            continue
        end = next((intervals[j].at for j in range(i + 1, len(intervals)) if units[j] != units[i]),
                   intervals[-1].at)
        at = max(intervals[0].at, intervals[i].at - pool.lead) if units[i] > before else intervals[i].at
        steps.append(PoolStep(at, units[i], intervals[i].at, end))
    return tuple(steps)
