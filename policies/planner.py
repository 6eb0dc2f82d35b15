"""The planner: the least-cost split of demand over the providers within each provider's SLO
capacity, interval by interval over the hours ahead, with a self-hosted pool planned with it.
Pure: no I/O, no clock (``now`` is an argument).

Per interval (:func:`split_demand`; :func:`plan` repeats it over the hours ahead and plans the pool):

1. every provider gets its ``min_weight`` share;
2. the priced providers are filled cheapest first (those within ``PRICE_TIE`` of each other
   share by baseline weight), each up to the lower of its ``max_weight`` share and
   its margin × its SLO capacity (``CheapestWithinSlo``; one held below what its
   price would give it by its capacity says so: ``CapacityForecastLimited``);
3. then the providers without a price, planned by latency only: what is left is shared by
   their baseline weights, each within its capacity (``PriceUnknown``);
4. demand beyond every provider's capacity together is spread so that their utilisation
   (load / capacity) is as even as the ``max_weight`` bounds allow: the worst p95 is then as
   low as it can be (``CapacityExhausted``; its words say when the capacity was there and the
   ``max_weight`` bounds kept the demand off it).

A capacity of None is unknown: that provider is bounded by its ``max_weight`` only.

The weights policy built on it is :mod:`policies.planned_weights`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from policies.types import Pool, ReasonCode

__all__ = ["PRICE_TIE", "Interval", "Offer", "Plan", "Pool", "PoolStep", "Split", "plan", "pool_units", "split_demand"]

_EPS = 1e-9
#: Prices within this share of each other are one tier (shared by baseline weight).
PRICE_TIE = 0.02


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
    #: Its share when nothing binds: the providers without a price share what is left by it.
    baseline_weight: float = 1.0
    #: The price window's factor in this interval (1 outside every window).
    price_factor: float = 1.0
    #: Why the capacity is what it is, for the reason when it binds: a code other than
    #: ``CapacityForecastLimited`` (an observed breach, exploration, a configured limit) and words.
    capacity_code: ReasonCode | None = None
    capacity_note: str = ""
    #: The capacity is only a lower bound (never breached up to it): demand beyond what every
    #: provider is known to take goes here first, up to ``limit_rpm``.
    lower_bound: bool = False
    #: Hard cap in requests per minute (RPM or TPM limit); None: none.
    limit_rpm: float | None = None
    #: The share of its SLO capacity to plan at most, where it differs from the plan's margin
    #: (learned from realised breaches: ``controller.headroom``); None: the plan's.
    margin: float | None = None

    def headroom(self, margin: float) -> float:
        return margin if self.margin is None else min(margin, self.margin)


@dataclass(frozen=True)
class Split:
    weights: Mapping[str, float]  # sums to 1
    load_rpm: Mapping[str, float]
    reasons: Mapping[str, tuple[ReasonCode, str]]


def split_demand(demand_rpm: float, offers: Sequence[Offer], margin: float) -> Split:
    """The least-cost split of ``demand_rpm`` (see the module docstring). ``margin`` is the
    share of a provider's SLO capacity the plan uses at most (``capacity_headroom``), for each
    offer without a margin of its own (a learned one)."""
    if not offers:
        return Split({}, {}, {})
    demand = max(demand_rpm, 1.0)  # (almost) no load: the shares of 1 rpm, still cheapest first
    top = {o.name: o.max_weight * demand for o in offers}
    safe = {o.name: min(top[o.name], o.headroom(margin) * o.capacity_rpm if o.capacity_rpm is not None
                        else top[o.name]) for o in offers}
    load = {o.name: o.min_weight * demand for o in offers}
    rest = demand - sum(load.values())
    priced = sorted((o for o in offers if o.price_per_request is not None),
                    key=lambda o: (o.price_per_request, o.name))
    unpriced = [o for o in offers if o.price_per_request is None]
    reasons: dict[str, tuple[ReasonCode, str]] = {}
    for tier in _price_tiers(priced):
        before = {o.name: load[o.name] for o in tier}
        rest = _fill_by_baseline(rest, tier, load, safe)
        for o in tier:
            reasons[o.name] = _why(o, load[o.name], safe[o.name], top[o.name], rest, o.headroom(margin),
                                   at_floor=load[o.name] - before[o.name] <= _EPS * demand)
    if unpriced:
        rest = _fill_by_baseline(rest, unpriced, load, safe)
        for o in unpriced:
            reasons[o.name] = _why(o, load[o.name], safe[o.name], top[o.name], rest, o.headroom(margin),
                                   at_floor=False)
    explorers = [o for o in offers if o.lower_bound]
    if rest > _EPS * demand and explorers:
        # Beyond what is known to be safe, first where no breach was ever seen: it may well
        # take more (up to its hard limit), where a provider that breached will not.
        before = dict(load)
        room = {o.name: min(top[o.name], o.headroom(margin) * o.limit_rpm if o.limit_rpm is not None else top[o.name])
                for o in explorers}
        rest = _spread_evenly(rest, explorers, load, {**top, **room})
        for o in explorers:
            if load[o.name] > before[o.name] + _EPS:
                reasons[o.name] = (ReasonCode.ExploringCapacity,
                                   f"{load[o.name]:.0f} rpm: the demand is over the SLO capacity known for all "
                                   f"providers, and this one never breached up to {o.capacity_rpm:.0f} rpm")
    if rest > _EPS * demand:
        within_bounds = sum(safe.values())
        rest = _spread_evenly(rest, offers, load, top)
        total_cap = sum(o.capacity_rpm for o in offers if o.capacity_rpm is not None)
        planned_cap = sum(o.headroom(margin) * o.capacity_rpm for o in offers if o.capacity_rpm is not None)
        if all(o.capacity_rpm is not None for o in offers) and planned_cap >= demand:
            # The capacity is there; the operator's max_weight bounds keep the demand off it.
            why = (f"{demand:.0f} rpm is over the {within_bounds:.0f} rpm the providers may take within both their "
                   f"SLO capacity and their max_weight bounds ({planned_cap:.0f} rpm of capacity together, "
                   "but a provider is held at its max_weight)")
        else:
            why = f"{demand:.0f} rpm is over the {margin:.0%} of {total_cap:.0f} rpm SLO capacity all providers have together"
        for o in offers:
            reasons[o.name] = (ReasonCode.CapacityExhausted,
                               f"{why}; spread to even out their load ({load[o.name]:.0f} rpm here)")
    total = sum(load.values())
    return Split({n: v / total for n, v in load.items()}, load, reasons)


def _why(o: Offer, load: float, safe: float, top: float, rest: float, margin: float, *,
         at_floor: bool) -> tuple[ReasonCode, str]:
    note = f" ({o.capacity_note})" if o.capacity_note else ""
    if o.price_per_request is None:
        if o.capacity_rpm is not None and load >= safe - _EPS and safe < top - _EPS:
            return (o.capacity_code or ReasonCode.CapacityForecastLimited,
                    f"{load:.0f} rpm, held at {margin:.0%} of its {o.capacity_rpm:.0f} rpm SLO capacity{note}; "
                    "no price configured: planned by latency only")
        return (ReasonCode.PriceUnknown,
                f"no price configured: planned by latency only, {load:.0f} rpm within its SLO capacity{note}")
    if at_floor and rest <= _EPS:
        return (ReasonCode.CheapestWithinSlo,
                f"{load:.0f} rpm, its minimum share: cheaper providers take the rest within their SLO capacity")
    if load > safe + _EPS * max(load, 1.0) and o.capacity_rpm is not None:
        return (o.capacity_code or ReasonCode.CapacityForecastLimited,
                f"{load:.0f} rpm, its minimum share, though that is over {margin:.0%} of its "
                f"{o.capacity_rpm:.0f} rpm SLO capacity{note}")
    if rest > _EPS and safe < top - _EPS and o.capacity_rpm is not None:
        return (o.capacity_code or ReasonCode.CapacityForecastLimited,
                f"{load:.0f} rpm at ${o.price_per_request:.4g}/request, held at {margin:.0%} of its "
                f"{o.capacity_rpm:.0f} rpm SLO capacity{note}")
    if not math.isclose(o.price_factor, 1.0):
        return (ReasonCode.PriceWindow,
                f"{load:.0f} rpm at ${o.price_per_request:.4g}/request (x{o.price_factor:g} in a price window), "
                "the cheapest share within its SLO capacity")
    return (ReasonCode.CheapestWithinSlo,
            f"{load:.0f} rpm at ${o.price_per_request:.4g}/request, the cheapest share within its SLO capacity")


def _price_tiers(priced: Sequence[Offer]) -> list[list[Offer]]:
    """Priced offers, cheapest first, grouped where prices are within ``PRICE_TIE`` of the
    tier's cheapest: those share by baseline instead of flipping on noise in the tokens per
    request their prices are computed from."""
    tiers: list[list[Offer]] = []
    for o in priced:
        if tiers and (o.price_per_request or 0.0) <= (tiers[-1][0].price_per_request or 0.0) * (1 + PRICE_TIE):
            tiers[-1].append(o)
        else:
            tiers.append([o])
    return tiers


def _fill_by_baseline(rest: float, offers: Sequence[Offer], load: dict[str, float], safe: Mapping[str, float]) -> float:
    """Share ``rest`` over ``offers`` so that their loads approach their baseline weights
    (water-filling load / baseline from the lowest), each within ``safe``: nothing binding, the
    baseline split comes out. Returns what is left."""
    base = {o.name: max(o.baseline_weight, _EPS) for o in offers}
    for _ in range(2 * len(offers) + 2):  # each round fills a provider or joins one more to the lowest
        if rest <= _EPS:
            break
        room = [o.name for o in offers if safe[o.name] - load[o.name] > _EPS]
        if not room:
            break
        level = {n: load[n] / base[n] for n in room}
        low = min(level.values())
        at_low = [n for n in room if level[n] <= low * (1 + 1e-12) + _EPS]
        ceiling = min([level[n] for n in room if n not in at_low] + [safe[n] / base[n] for n in at_low])
        need = sum((ceiling - low) * base[n] for n in at_low)
        if need >= rest:
            total = sum(base[n] for n in at_low)
            for n in at_low:
                load[n] += rest * base[n] / total
            return 0.0
        for n in at_low:
            load[n] = min(safe[n], ceiling * base[n])
        rest -= need
    return rest


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
        pool_margin = margin
        if pool is not None:
            units = pool.max_units if iv.at >= now + pool.lead else max(pool.ready_units, pool.min_units)
            pool_margin = next((o.headroom(margin) for o in offers if o.name == pool.provider), margin)
            per_request = None if pool.unit_price_per_hour is None else \
                pool.unit_price_per_hour / (60.0 * pool.rpm_per_unit * pool_margin)
            ready = "" if iv.at >= now + pool.lead else ", the units ready before more can warm up"
            offers = tuple(
                replace(o, capacity_rpm=units * pool.rpm_per_unit, price_per_request=per_request, price_factor=1.0,
                        capacity_code=None, capacity_note=f"{units} units x {pool.rpm_per_unit:g} rpm{ready}")
                if o.name == pool.provider else o for o in offers)
        s = split_demand(iv.demand_rpm, offers, margin)
        splits.append(s)
        if pool is not None:
            need.append(pool_units(s.load_rpm.get(pool.provider, 0.0), pool, pool_margin))
    if pool is None or not intervals:
        return Plan(tuple(splits), (), ())
    held = _held(intervals, need, pool)
    held[0] = max(held[0], pool.needed_now)
    return Plan(tuple(splits), tuple(held), _steps(intervals, held, pool))


def pool_units(load_rpm: float, pool: Pool, margin: float) -> int:
    """The units that serve ``load_rpm`` at ``margin`` of each one's throughput, within bounds."""
    return min(pool.max_units, max(pool.min_units, math.ceil(load_rpm / (pool.rpm_per_unit * margin) - 1e-9)))


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
