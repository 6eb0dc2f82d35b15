"""A budget over all routes together (``policy.shared_budget``): step down by tier.

Each route first gets its own plan (:func:`policies.budget.day_plan`, where it has a budget of
its own; else its baseline escalation for every hour left). Then, for the shared budget:

1. **what is left for today**: the daily budget less what all routes spent since local
   midnight; of a monthly one, what is left of the month in proportion to the requests
   expected in the rest of today against those of the days after it. The lower binds;
2. **what the plans are predicted to spend** over the hours left, all routes together;
3. if that is more than is left, **escalation steps down by value tier**: the ``low`` routes
   first, then the ``standard`` ones. Within a tier each route gives up the same share of its
   escalation above its quality floor, hour by hour (a cut in proportion, never one route
   zeroed while another keeps its plan), just as much as brings the prediction onto what is
   left. A tier is taken down to its floors before the next is touched;
4. ``high`` and ``protected`` routes are never cut: where even the other tiers at their floors
   leave the day predicted over, the shared budget says by how much
   (``BudgetCannotHoldProtected`` on knob ``budget/shared``) and keeps them (without any, it
   holds every route at its floor and says so: ``QualityFloor``).

Re-planned every tick from the actual spend, like the routes' own plans, so a morning that
spends faster than planned steps down a little at a time. Pure: no I/O, no clock.

Reason codes: ``SharedBudgetHolds``, ``SharedBudgetStepDown``, ``BudgetCannotHoldProtected`` and
``QualityFloor`` (every route cuttable, all at their floors, still over) on knob
``budget/shared``; ``SharedBudgetStepDown`` on ``thresholds/<route>`` too, replacing the route's
own plan's. The shared budget's own day is a :class:`DayPlan` of route ``*`` (:data:`ALL`):
what it allows today, what all routes spent, what the plans after the step-down spend per hour
left (requests and spend summed, escalation the requests' mean) and the shortfall, so the
metrics, the API and ``diurnal explain`` show it beside the routes'.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from policies.budget import allowance, is_protected, route_spend
from policies.types import (
    DayPlan,
    PlannedHour,
    PolicyConfig,
    Reason,
    ReasonCode,
    RouteConfig,
    RouteHour,
    RouteView,
    View,
)

__all__ = ["ALL", "STEP_DOWN_ORDER", "shared_step_down"]

_EPS = 1e-9
#: The tiers the shared budget may cut, in the order it cuts them.
STEP_DOWN_ORDER = ("low", "standard")
KNOB = "budget/shared"
#: The route name of the shared budget's own day plan.
ALL = "*"


def _cuttable(r: RouteConfig) -> bool:
    return not is_protected(r) and r.tier in STEP_DOWN_ORDER


def _hours_of(r: RouteConfig, rv: RouteView, plan: DayPlan | None) -> list[PlannedHour]:
    """The route's hours left at its own plan, else at its baseline escalation."""
    if plan is not None and plan.hours:
        return list(plan.hours)
    return [PlannedHour(h.at, h.requests, r.baseline_fraction, route_spend([h], [r.baseline_fraction], r))
            for h in rv.hours_left]


def _allowance(config: PolicyConfig, routes: Mapping[str, RouteView], spent: float, today: float
               ) -> tuple[float, str] | None:
    """The shared budget's allowance for today: the routes' own rule over their sums."""
    month_spent = sum(rv.spent_month if rv.spent_month is not None else (rv.spent_today or 0.0)
                      for rv in routes.values())
    later = sum(rv.requests_per_day * rv.days_left_after_today for rv in routes.values())
    return allowance(config.shared_daily_budget, config.shared_monthly_budget, spent, month_spent, today, later)


def shared_step_down(view: View, config: PolicyConfig, plans: Mapping[str, DayPlan]
                     ) -> tuple[dict[str, DayPlan], list[Reason]]:
    """The routes' plans after the shared budget (see the module docstring), and its reason.
    Without a shared budget, ``plans`` unchanged and no reason."""
    out = dict(plans)
    if config.shared_daily_budget is None and config.shared_monthly_budget is None:
        return out, []
    routes = {r.name: view.routes.get(r.name, RouteView()) for r in config.routes}
    hours = {r.name: _hours_of(r, routes[r.name], plans.get(r.name)) for r in config.routes}
    spent = sum(rv.spent_today or 0.0 for rv in routes.values())
    today = sum(h.requests for hs in hours.values() for h in hs)
    got = _allowance(config, routes, spent, today)
    assert got is not None
    may, binding = got
    left = max(0.0, may - spent)
    predicted = sum(h.spend for hs in hours.values() for h in hs)
    what = f"shared {binding} budget: {may:.2f} for today over {len(config.routes)} routes, {spent:.2f} spent"
    def summary(code: ReasonCode, message: str, shortfall: float = 0.0) -> tuple[dict[str, DayPlan], list[Reason]]:
        out[ALL] = _whole(out, hours, may, spent, code, message, shortfall, binding)
        return out, [Reason(KNOB, code, message)]

    if predicted <= left + _EPS:
        return summary(ReasonCode.SharedBudgetHolds,
                       f"{what}; the routes' plans spend {predicted:.2f} of the {left:.2f} left")
    over = predicted - left
    for tier in STEP_DOWN_ORDER:
        tier_routes = [r for r in config.routes if _cuttable(r) and r.tier == tier and hours[r.name]]
        floors = {r.name: [min(h.fraction, r.quality_floor) for h in hours[r.name]] for r in tier_routes}
        now_spend = sum(h.spend for r in tier_routes for h in hours[r.name])
        floor_spend = sum(route_spend(_route_hours(routes[r.name], hours[r.name]), floors[r.name], r)
                          for r in tier_routes)
        room = now_spend - floor_spend
        if room <= _EPS:
            continue
        keep = max(0.0, 1.0 - over / room)  # the share of each route's escalation above its floor kept
        for r in tier_routes:
            fractions = [lo + keep * (h.fraction - lo) for h, lo in zip(hours[r.name], floors[r.name], strict=True)]
            stepped = _stepped(r, routes[r.name], plans.get(r.name), hours[r.name], fractions, keep, tier, what)
            out[r.name] = stepped
        over -= room * (1.0 - keep)
        if over <= _EPS:
            return summary(ReasonCode.SharedBudgetStepDown,
                           f"{what}; the plans would spend {predicted:.2f} of the {left:.2f} left: stepped down "
                           f"from the low tier up to the {tier} tier")
    if any(not _cuttable(r) for r in config.routes):
        return summary(ReasonCode.BudgetCannotHoldProtected,
                       f"{what}; with the low and standard routes at their quality floors the day is predicted to "
                       f"end {over:.2f} over: the high and protected routes are not downgraded to save money", over)
    return summary(ReasonCode.QualityFloor,
                   f"{what}; with every route at its quality floor the day is predicted to end {over:.2f} over: "
                   "escalation held there, not stopped", over)


def _whole(plans: Mapping[str, DayPlan], hours: Mapping[str, Sequence[PlannedHour]], may: float, spent: float,
           code: ReasonCode, message: str, shortfall: float, binding: str) -> DayPlan:
    """The shared budget's day: every route's hours left (at its plan after the step-down) summed."""
    by_hour: dict[datetime, list[float]] = {}
    for name, planned in hours.items():
        final = plans[name].hours if name in plans and plans[name].hours else planned
        for p in final:
            acc = by_hour.setdefault(p.at, [0.0, 0.0, 0.0])
            acc[0] += p.requests
            acc[1] += p.requests * p.fraction
            acc[2] += p.spend
    whole = tuple(PlannedHour(at, n, esc / n if n > _EPS else 0.0, usd) for at, (n, esc, usd) in sorted(by_hour.items()))
    return DayPlan(ALL, may, spent, sum(p.spend for p in whole), whole, code, message, shortfall, binding)


def _route_hours(rv: RouteView, planned: Sequence[PlannedHour]) -> list[RouteHour]:
    """The planned hours as the route's view has them (their price factors)."""
    by_hour = {h.at: h for h in rv.hours_left}
    return [by_hour.get(p.at) or RouteHour(p.at, p.requests) for p in planned]


def _stepped(r: RouteConfig, rv: RouteView, own: DayPlan | None, planned: Sequence[PlannedHour],
             fractions: Sequence[float], keep: float, tier: str, what: str) -> DayPlan:
    new = tuple(replace(p, fraction=f, spend=route_spend([h], [f], r), score_threshold=None)
                for p, f, h in zip(planned, fractions, _route_hours(rv, planned), strict=True))
    total = sum(p.spend for p in new)
    msg = (f"{what}: the {tier} tier steps down, keeping {keep:.0%} of its escalation above the quality floor "
           f"({new[0].fraction:.0%} now; the route's own plan: {own.message if own is not None else 'its baseline'})")
    spent = rv.spent_today or 0.0
    if own is not None:
        return replace(own, planned=total, hours=new, code=ReasonCode.SharedBudgetStepDown, message=msg)
    return DayPlan(r.name, spent + total, spent, total, new, ReasonCode.SharedBudgetStepDown, msg, binding="shared")
