"""The day plan: a route's daily (and monthly) budget spread over the hours left of the local
day, and the escalation fraction per hour that lands the predicted spend on it. Pure: no
I/O, no clock (the view says what is spent and what is coming).

Per route with a ``daily_budget`` or a ``monthly_budget`` (:func:`day_plan`):

1. **what is left for today**: the daily budget less what the route spent since local
   midnight; of a monthly budget, what is left of the month in proportion to the requests
   expected in the rest of today against those of the days left after it (a day's requests
   from the next 24 hours' forecast). The lower of the two binds;
2. **the hours left**: the requests each hour is forecast to bring (the part still to come
   of the current one), and what a request costs on either model in it (the strong model's
   provider's price windows apply to the strong model's cost);
3. **one cut for the day**: where the router exports its score distribution for every hour
   left, one score threshold for the rest of the day (so the hardest requests of every hour
   are escalated first, wherever they fall); without, one escalation fraction. It is the
   highest (most escalation) whose predicted spend fits what is left, within
   ``[quality_floor, max_fraction]``: a quiet day spends its budget on quality, a busy one
   steps down from the start of the day instead of running out at its end;
4. **re-planned every tick from the actual spend**: a morning that spends faster than
   planned lowers the rest of the day a little at a time; one that spends less raises it;
5. **protected routes** (``protected``, or the ``high`` tier) are never lowered below their
   baseline to save money: where the budget cannot hold them, the plan says by how much
   (``BudgetCannotHoldProtected``, ``shortfall``) and keeps them;
6. **no hard stop** unless the operator asked for one (``budget_hard_stop``): once today's
   budget is spent, escalation stays at the quality floor (``BudgetSpent``); with the hard
   stop it goes to zero (``BudgetExhausted``).

Where even the quality floor spends more than is left, the plan holds the floor and says by
how much the day is predicted to end over (``QualityFloor``, ``shortfall``).

Reason codes (knob ``thresholds/<route>``): ``DayPlanned``, ``BudgetSpent``,
``BudgetExhausted``, ``BudgetCannotHoldProtected``, ``QualityFloor``, ``NoLoadData``.
"""

from __future__ import annotations

from collections.abc import Sequence
from zoneinfo import ZoneInfo

from policies.types import DayPlan, PlannedHour, ReasonCode, RouteConfig, RouteHour, RouteView

__all__ = ["allowance", "day_plan", "is_protected", "route_spend"]

_EPS = 1e-9
#: Bisection steps for the day's score threshold (2^-40 of the score range).
_STEPS = 40


def allowance(daily: float | None, monthly: float | None, spent: float, spent_month: float, today: float,
              later: float) -> tuple[float, str] | None:
    """What today may spend in all (``spent`` so far included) under a daily and a monthly
    budget, and which binds; None without either. Of the monthly budget, what is left of the
    month (``spent_month`` spent) goes to today in proportion to the requests expected in the
    rest of today (``today``) against those of the days after it (``later``)."""
    options: list[tuple[float, str]] = []
    if daily is not None:
        options.append((daily, "daily"))
    if monthly is not None:
        share = today / (today + later) if today + later > _EPS else 1.0
        options.append((spent + max(0.0, monthly - spent_month) * share, "monthly"))
    return min(options) if options else None


def is_protected(r: RouteConfig) -> bool:
    """Never lowered below its baseline to save money: ``protected``, or the ``high`` tier."""
    return r.protected or r.tier == "high"


def route_spend(hours: Sequence[RouteHour], fractions: Sequence[float], r: RouteConfig) -> float:
    """What route ``r`` is predicted to spend over ``hours`` at the given escalation per hour."""
    return sum(h.requests * (r.weak_cost * h.weak_price_factor + f * _extra(h, r))
               for h, f in zip(hours, fractions, strict=True))


def _extra(h: RouteHour, r: RouteConfig) -> float:
    return r.strong_cost * h.strong_price_factor - r.weak_cost * h.weak_price_factor


def _fractions_at(hours: Sequence[RouteHour], r: RouteConfig, threshold: float, floor: float) -> list[float]:
    """Each hour's escalation at one score threshold: the share of its scores at or above it."""
    out = []
    for h in hours:
        below = _cdf_at(h.score_cdf, threshold)
        out.append(min(r.max_fraction, max(floor, 1.0 - below)))
    return out


def _cdf_at(cdf: Sequence[tuple[float, float]], score: float) -> float:
    pts = sorted(cdf)
    if score <= pts[0][0]:
        return pts[0][1] if score == pts[0][0] else 0.0
    for (s0, c0), (s1, c1) in zip(pts, pts[1:], strict=False):
        if s0 <= score <= s1:
            return c0 if s1 - s0 < _EPS else c0 + (c1 - c0) * (score - s0) / (s1 - s0)
    return 1.0


def _cut(hours: Sequence[RouteHour], r: RouteConfig, money: float, floor: float) -> tuple[list[float], float | None]:
    """The most escalation over ``hours`` whose spend fits ``money``, within ``[floor,
    max_fraction]``: one score threshold when every hour has a score distribution, else one
    fraction. Returns the fractions and the threshold (None without scores)."""
    if all(h.score_cdf for h in hours):
        scores = [s for h in hours for s, _ in h.score_cdf]
        lo, hi = min(scores), max(scores)  # at lo all escalate (most spend); at hi none
        most = _fractions_at(hours, r, lo, floor)
        if route_spend(hours, most, r) <= money + _EPS:
            return most, lo
        for _ in range(_STEPS):
            mid = (lo + hi) / 2
            if route_spend(hours, _fractions_at(hours, r, mid, floor), r) <= money + _EPS:
                hi = mid
            else:
                lo = mid
        return _fractions_at(hours, r, hi, floor), hi
    base = route_spend(hours, [0.0] * len(hours), r)
    extra = sum(h.requests * _extra(h, r) for h in hours)
    f = r.max_fraction if extra <= _EPS else (money - base) / extra
    return [min(r.max_fraction, max(floor, f))] * len(hours), None


def day_plan(r: RouteConfig, rv: RouteView, tz: str) -> DayPlan | None:
    """The day plan of route ``r`` (see the module docstring); None without a budget."""
    hours = tuple(rv.hours_left)
    today = sum(h.requests for h in hours)
    spent = rv.spent_today or 0.0
    got = allowance(r.daily_budget, r.monthly_budget, spent, rv.spent_month if rv.spent_month is not None else spent,
                    today, rv.requests_per_day * rv.days_left_after_today)
    if got is None:
        return None
    may, binding = got
    left = may - spent
    protected = is_protected(r)
    what = f"{binding} budget: {may:.2f} for today, {spent:.2f} spent"
    if not hours or today <= _EPS:
        return DayPlan(r.name, may, spent, 0.0, (), ReasonCode.NoLoadData,
                       f"{what}; no requests expected in the rest of the day", binding=binding)
    floor = r.baseline_fraction if protected else r.quality_floor
    if left <= _EPS and not protected:
        f = 0.0 if r.hard_stop else r.quality_floor
        planned = [PlannedHour(h.at, h.requests, f, route_spend([h], [f], r)) for h in hours]
        code = ReasonCode.BudgetExhausted if r.hard_stop else ReasonCode.BudgetSpent
        why = ("escalation stopped (budget_hard_stop)" if r.hard_stop
               else f"escalation held at the quality floor {f:.0%} for the rest of the day, not stopped")
        return DayPlan(r.name, may, spent, sum(p.spend for p in planned), tuple(planned), code,
                       f"{what}: nothing left; {why}", binding=binding)
    fractions, threshold = _cut(hours, r, max(0.0, left), floor)
    planned = [PlannedHour(h.at, h.requests, f, route_spend([h], [f], r), threshold)
               for h, f in zip(hours, fractions, strict=True)]
    total = sum(p.spend for p in planned)
    local = ZoneInfo(tz)
    span = f"{hours[0].at.astimezone(local):%H:%M} to {hours[-1].at.astimezone(local):%H}:59"
    if protected and total > left + _EPS:
        shortfall = total - left
        return DayPlan(r.name, may, spent, total, tuple(planned), ReasonCode.BudgetCannotHoldProtected,
                       f"{what}; a protected route is not downgraded to save money: at its baseline "
                       f"{r.baseline_fraction:.0%} the day is predicted to end {shortfall:.2f} over", shortfall, binding)
    if total > left + _EPS:  # even the quality floor spends more than is left: said, not cut further
        return DayPlan(r.name, may, spent, total, tuple(planned), ReasonCode.QualityFloor,
                       f"{what}; escalation held at the quality floor {r.quality_floor:.0%}: the day is predicted "
                       f"to end {total - max(0.0, left):.2f} over", total - max(0.0, left), binding)
    cut = f"score >= {threshold:.4g} in every hour" if threshold is not None else \
        f"{fractions[0]:.0%} of requests escalated"
    return DayPlan(r.name, may, spent, total, tuple(planned), ReasonCode.DayPlanned,
                   f"{what}; {cut} from {span} spends {total:.2f} of the {max(0.0, left):.2f} left "
                   f"({today:.0f} requests expected)", binding=binding)
