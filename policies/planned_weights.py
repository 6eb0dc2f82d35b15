"""The planner as the weights policy: the view's :class:`~policies.types.Outlook` (demand,
learned capacity and prices per step ahead) turned into the planner's offers, planned
(:func:`policies.planner.plan`), and the split for now published. Pure.

The rules:

- the capacity planned on is the learned SLO capacity, within the hard limit (RPM or TPM limit,
  knee) and below a recent breach (a provider seen over the SLO at a load takes less than that
  load now: ``ObservedLatencyBreach``/``ErrorBudgetBreach``);
- where a provider never breached (the capacity is a lower bound) the plan may send it up to
  ``explore_above_seen`` more than it ever served, and at least its baseline share
  (``ExploringCapacity``): capacity is learned by trying, a bounded step at a time, and a
  breach ends it at once; demand beyond what every provider is known to take goes to these
  first, up to their hard limits;
- a provider of unknown capacity and no limit takes at most its baseline share;
- the margin is ``capacity_headroom``, or ``untrusted_headroom`` where the demand is the load
  observed now rather than a trusted forecast; lower for a provider whose headroom was learned
  lower from the breaches it realised (``controller.headroom``), and the reason says so.

The weights are the split of the first step (now); a self-hosted pool's planned load becomes
its prewarm action's load forecast (``PoolPlanned``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from policies.planner import Interval, Offer, plan, pool_units
from policies.types import (
    Ahead,
    LoadPoint,
    PlannedInterval,
    PolicyConfig,
    Pool,
    ProviderConfig,
    Reason,
    ReasonCode,
    SloCapacity,
    View,
)

__all__ = ["decide_plan"]

_EPS = 1e-9


def _capacity(sc: SloCapacity, explore: float, baseline_rpm: float) -> tuple[float | None, ReasonCode | None, str, bool]:
    """The capacity to plan on from what is known, with the code and words for when it binds,
    and whether it is only a lower bound. ``baseline_rpm``: what its baseline share would
    send it; a provider never seen to breach is planned at least that."""
    rpm, code, note, bound = sc.rpm, None, sc.note, False
    if rpm is not None and sc.evidence == "lower_bound":
        if rpm * (1.0 + explore) >= baseline_rpm:
            rpm, code, bound = rpm * (1.0 + explore), ReasonCode.ExploringCapacity, True
            note = f"{sc.note}; never over the SLO up to {sc.rpm:.0f} rpm, so trying up to {explore:.0%} more"
        else:
            rpm, bound = baseline_rpm, True
            note = f"{sc.note}; never over the SLO (up to {sc.rpm:.0f} rpm), so at least its baseline share"
    if sc.breach_rpm is not None and sc.breach is not None:  # over the SLO now: no exploring
        bound = False
        if rpm is None or sc.breach_rpm < rpm:
            rpm, (code, note) = sc.breach_rpm, sc.breach
    if sc.limit_rpm is not None and (rpm is None or sc.limit_rpm < rpm):
        rpm, code, bound = sc.limit_rpm, ReasonCode.CapacityLimited, False
        note = "its configured limit (RPM, TPM or knee)"
    return rpm, code, note, bound


def _offer(name: str, p: ProviderConfig, step: Ahead, config: PolicyConfig, margin: float) -> Offer:
    sc = step.capacity.get(name)
    own = min(margin, sc.headroom) if sc is not None and sc.headroom is not None else None
    baseline_rpm = p.baseline_weight * step.demand_rpm / (own or margin)
    rpm, code, note, bound = _capacity(sc, config.explore_above_seen, baseline_rpm) if sc is not None \
        else (None, None, "", False)
    if rpm is None:  # nothing learned and no limit: no more than the operator gave it
        rpm, code = baseline_rpm, ReasonCode.CapacityForecastLimited
        note = "capacity not learned yet: at most its baseline share"
    if own is not None and sc is not None:
        note = f"{note}; {sc.headroom_note}" if note else sc.headroom_note
    return Offer(name=name, min_weight=p.min_weight, max_weight=p.max_weight, capacity_rpm=rpm,
                 baseline_weight=p.baseline_weight, price_per_request=step.price_per_request.get(name),
                 price_factor=step.price_factor.get(name, 1.0), capacity_code=code, capacity_note=note,
                 lower_bound=bound, limit_rpm=sc.limit_rpm if sc is not None else None, margin=own)


def _cost_per_hour(load: Mapping[str, float], offers: Sequence[Offer], pool: Pool | None,
                   units: int | None) -> float | None:
    """What serving ``load`` costs per hour: each provider's requests at its price, and the
    pool's units at the unit price. None where something carrying load has no price."""
    cost = 0.0
    for o in offers:
        if pool is not None and o.name == pool.provider:
            if units and pool.unit_price_per_hour is None:
                return None
            cost += (units or 0) * (pool.unit_price_per_hour or 0.0)
        elif load.get(o.name, 0.0) > _EPS:
            if o.price_per_request is None:
                return None
            cost += load[o.name] * 60.0 * o.price_per_request
    return cost


def decide_plan(view: View, config: PolicyConfig
                ) -> tuple[dict[str, float], list[Reason], tuple[PlannedInterval, ...], tuple[LoadPoint, ...]]:
    """Weights (the plan's split now), one reason per provider, the plan as explained, and the
    pool's planned load as a load forecast for its prewarm action (empty without a pool)."""
    outlook = view.outlook
    assert outlook is not None and outlook.steps
    margin = config.capacity_headroom if outlook.trusted else min(config.capacity_headroom, config.untrusted_headroom)
    intervals = [Interval(at=s.at, demand_rpm=max(0.0, s.demand_rpm),
                          offers=tuple(_offer(n, p, s, config, margin) for n, p in config.providers.items()))
                 for s in outlook.steps]
    pool = outlook.pool if outlook.pool is not None and outlook.pool.provider in config.providers else None
    result = plan(intervals, margin, view.now, pool)
    now = result.splits[0]
    weights = {n: now.weights.get(n, 0.0) for n in config.providers}
    reasons = [Reason(f"weights/{n}", *now.reasons[n]) for n in config.providers]
    explained = []
    for i, (iv, split) in enumerate(zip(intervals, result.splits, strict=True)):
        units = result.units[i] if pool is not None else None
        base_load = {n: iv.demand_rpm * p.baseline_weight for n, p in config.providers.items()}
        pool_margin = next((o.headroom(margin) for o in iv.offers if pool is not None and o.name == pool.provider),
                           margin)
        base_units = pool_units(base_load[pool.provider], pool, pool_margin) if pool is not None else None
        capacity = {o.name: o.capacity_rpm for o in iv.offers}
        if pool is not None:
            capacity[pool.provider] = (units or 0) * pool.rpm_per_unit
        explained.append(PlannedInterval(
            at=iv.at, demand_rpm=iv.demand_rpm, load_rpm=dict(split.load_rpm), capacity_rpm=capacity,
            pool_units=units, cost_per_hour=_cost_per_hour(split.load_rpm, iv.offers, pool, units),
            baseline_cost_per_hour=_cost_per_hour(base_load, iv.offers, pool, base_units),
            headroom={o.name: o.headroom(margin) for o in iv.offers}))
    points: tuple[LoadPoint, ...] = ()
    if pool is not None:  # the units the plan holds in each step, as the load they serve
        points = tuple(LoadPoint(iv.at, split.load_rpm.get(pool.provider, 0.0) / next(
                           (o.headroom(margin) for o in iv.offers if o.name == pool.provider), margin),
                           u * pool.rpm_per_unit)
                       for iv, split, u in zip(intervals, result.splits, result.units, strict=True))
    return weights, reasons, tuple(explained), points
