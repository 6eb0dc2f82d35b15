"""Routing thresholds: per route, the escalation fraction (share of requests sent to the
strong model instead of the weak one) and, where the router exports its score distribution,
the score threshold that yields it.

Per route, starting from the configured baseline fraction:

- **budget**: with the route's load (the trusted forecast's peak over the look-ahead, else
  the observed load) the hourly spend is ``requests x (weak + f x (strong - weak))``; ``f``
  is lowered until it fits ``hourly_budget``, but never below the route's ``quality_floor``;
- **budget inversion**: a ``high`` tier route is never lowered to save money: it keeps its
  fraction and the decision says it is over budget (cut the low tiers instead);
- **strong-model latency**: when the strong model's provider is predicted (or seen) over the
  latency SLO, ``f`` drops to the quality floor for every tier until it recovers;
- **score threshold**: the router sends a request to the strong model when its score is at
  least the threshold, so the threshold is the ``1 - f`` quantile of this hour-of-week's score
  distribution (RouteLLM calibrates this offline; here it is online and per hour);
- **segments**: when escalation rates differ between segments by more than
  ``max_disparity`` (the "20% problem"), the decision flags it and gives per-segment
  fractions that bring every segment within the limit of the mean.

- **day plan**: a route with a daily or monthly budget takes its fraction for now from its
  plan for the rest of the local day (:mod:`policies.budget`) instead of the baseline; the
  hourly budget, the strong model's latency and the bounds still apply on top.

Reason codes (knob ``thresholds/<route>``): ``BaselineFraction``, ``BudgetLimited``,
``QualityFloor``, ``BudgetInversionAvoided``, ``StrongModelLatency``, ``NoLoadData``, and the
day plan's (``DayPlanned``, ``BudgetSpent``, ``BudgetExhausted``, ``BudgetCannotHoldProtected``);
(``thresholds/<route>/score``) ``CalibratedThreshold``; (``thresholds/<route>/segments``)
``SegmentDisparity``, ``SegmentsWithinLimit``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from policies.types import (
    DayPlan,
    PolicyConfig,
    Reason,
    ReasonCode,
    RouteConfig,
    RouteView,
    SegmentParity,
    View,
)

__all__ = ["decide_thresholds", "score_threshold", "segment_parity"]

_EPS = 1e-12


def score_threshold(cdf: Sequence[tuple[float, float]], fraction: float) -> float:
    """The score above which ``fraction`` of requests lie (linear between CDF points)."""
    want = 1.0 - fraction
    pts = sorted(cdf)
    if want <= pts[0][1]:
        return pts[0][0]
    for (s0, c0), (s1, c1) in zip(pts, pts[1:], strict=False):
        if c0 <= want <= c1:
            return s0 if c1 - c0 < _EPS else s0 + (s1 - s0) * (want - c0) / (c1 - c0)
    return pts[-1][0]


def _budget_fraction(r: RouteConfig, rpm: float) -> float | None:
    if r.hourly_budget is None or rpm <= 0:
        return None
    per_request = r.hourly_budget / (rpm * 60.0)
    extra = r.strong_cost - r.weak_cost
    if extra <= _EPS:
        return None  # escalation costs nothing extra: the budget does not bind it
    return (per_request - r.weak_cost) / extra


def decide_thresholds(view: View, config: PolicyConfig, plans: Mapping[str, DayPlan] | None = None
                      ) -> tuple[dict[str, float], list[Reason]]:
    """Every route's escalation fraction (and score threshold, and segment fractions).
    ``plans``: the day plans of the routes with a daily or monthly budget
    (:func:`policies.budget.day_plan`); the plan's fraction for now replaces the baseline."""
    out: dict[str, float] = {}
    reasons: list[Reason] = []
    slo = config.latency_slo_seconds
    for r in config.routes:
        knob = f"thresholds/{r.name}"
        rv = view.routes.get(r.name, RouteView())
        rpm = rv.predicted_rpm if rv.predicted_rpm is not None else rv.observed_rpm
        f = r.baseline_fraction
        floor = r.quality_floor
        code, msg = ReasonCode.BaselineFraction, f"baseline escalation {f:.0%}"
        plan = (plans or {}).get(r.name)
        if plan is not None and plan.fraction is not None:
            f, code, msg = plan.fraction, plan.code, plan.message
            if plan.code == ReasonCode.BudgetExhausted:
                floor = 0.0  # the operator asked for a hard stop
            allowed = _budget_fraction(r, rpm) if rpm is not None else None
            if allowed is not None and allowed < f - _EPS and plan.code != ReasonCode.BudgetCannotHoldProtected:
                f = max(floor, allowed)
                code, msg = ReasonCode.BudgetLimited, (
                    f"escalation {f:.0%} keeps the route within the {r.hourly_budget:.2f}/h budget "
                    f"(the day plan had {plan.fraction:.0%}: {plan.message})")
        elif rpm is None:
            code, msg = ReasonCode.NoLoadData, f"no load known for the route; baseline escalation {f:.0%}"
        else:
            allowed = _budget_fraction(r, rpm)
            spend = rpm * 60.0 * (r.weak_cost + f * (r.strong_cost - r.weak_cost))
            source = "forecast" if rv.predicted_rpm is not None else "observed"
            if allowed is not None and allowed < f - _EPS:
                if r.tier == "high":
                    code, msg = ReasonCode.BudgetInversionAvoided, (
                        f"{source} spend {spend:.2f}/h is over the {r.hourly_budget:.2f}/h budget, but a high-value "
                        f"tier is not downgraded to save money; escalation stays {f:.0%}")
                elif allowed < r.quality_floor:
                    f = r.quality_floor
                    code, msg = ReasonCode.QualityFloor, (
                        f"{source} spend at baseline would be {spend:.2f}/h (budget {r.hourly_budget:.2f}/h); "
                        f"escalation held at the quality floor {f:.0%}, still over budget")
                else:
                    f = max(r.quality_floor, allowed)
                    code, msg = ReasonCode.BudgetLimited, (
                        f"escalation {f:.0%} keeps the {source} {rpm:.0f} rpm within the {r.hourly_budget:.2f}/h "
                        f"budget (baseline {r.baseline_fraction:.0%} would spend {spend:.2f}/h)")
            else:
                code, msg = ReasonCode.BaselineFraction, f"baseline escalation {f:.0%}; {source} spend {spend:.2f}/h within budget"
        pv = view.providers.get(r.strong_provider) if r.strong_provider else None
        if pv is not None:
            slow = (pv.forecast_trusted and pv.predicted_p95_seconds is not None and pv.predicted_p95_seconds > slo) or (
                pv.observed_p95_seconds is not None and pv.observed_p95_seconds > slo)
            if slow and f > floor + _EPS:
                f = floor
                p95 = pv.predicted_p95_seconds if pv.forecast_trusted and pv.predicted_p95_seconds else pv.observed_p95_seconds
                code, msg = ReasonCode.StrongModelLatency, (
                    f"the strong model's provider {r.strong_provider} is at p95 {p95:.2f}s, over the {slo:.2f}s SLO; "
                    f"escalation down to the quality floor {f:.0%} until it recovers")
        f = min(r.max_fraction, max(floor, f))
        out[f"{knob}/escalation_fraction"] = round(f, 6)
        reasons.append(Reason(knob, code, msg))
        if rv.score_cdf:
            s = score_threshold(rv.score_cdf, f)
            out[f"{knob}/score_threshold"] = round(s, 6)
            reasons.append(Reason(f"{knob}/score", ReasonCode.CalibratedThreshold,
                                  f"score >= {s:.4g} escalates {f:.0%} of requests, by this hour-of-week's scores"))
        if (parity := _parity(r, rv)) is not None:
            rates, limit = parity.rates, r.max_disparity
            worst = max(rates, key=lambda k: rates[k])
            least = min(rates, key=lambda k: rates[k])
            if parity.gap > limit + _EPS:
                if parity.held:
                    mean = sum(rates.values()) / len(rates)
                    lo, hi = mean - limit / 2, mean + limit / 2
                    for seg, rate in sorted(rates.items()):
                        target = min(hi, max(lo, rate))
                        out[f"{knob}/segments/{seg}/escalation_fraction"] = round(
                            min(1.0, f * target / rate) if rate > _EPS else f, 6)
                    act = f"per-segment fractions bring each within {limit / 2:.0%} of the mean"
                else:
                    act = "not held (hold_segment_parity is false): measured and reported only"
                reasons.append(Reason(f"{knob}/segments", ReasonCode.SegmentDisparity, (
                    f"escalation differs by {parity.gap:.0%} between segments ({worst} {rates[worst]:.0%}, "
                    f"{least} {rates[least]:.0%}; Jain's index {parity.jain:.3f}), over the {limit:.0%} limit; "
                    f"{act}")))
            else:
                reasons.append(Reason(f"{knob}/segments", ReasonCode.SegmentsWithinLimit,
                                      f"segments within {parity.gap:.0%} of each other (limit {limit:.0%}; "
                                      f"Jain's index {parity.jain:.3f})"))
    return out, reasons


def _parity(r: RouteConfig, rv: RouteView) -> SegmentParity | None:
    if len(rv.segment_rates) < 2:
        return None
    return SegmentParity.of(r.name, rv.segment_rates, r.max_disparity, hold=r.hold_parity)


def segment_parity(view: View, config: PolicyConfig) -> tuple[SegmentParity, ...]:
    """Per configured route with at least two segments seen: the segments' escalation rates,
    their gap and Jain's index, and whether per-segment fractions hold them together."""
    return tuple(p for r in config.routes if (p := _parity(r, view.routes.get(r.name, RouteView()))) is not None)
