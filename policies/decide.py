"""The policy entry point: ``decide(view, previous, config, now) -> Decision``."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from policies.budget import day_plan
from policies.planned_weights import decide_plan
from policies.prewarm import decide_prewarm
from policies.shared_budget import shared_step_down
from policies.thresholds import decide_thresholds, segment_parity
from policies.types import (
    Decision,
    PlannedInterval,
    PolicyConfig,
    Reason,
    ReasonCode,
    RouteView,
    View,
)
from policies.weights import decide_weights

__all__ = ["decide"]


def decide(view: View, previous: Decision | None, config: PolicyConfig, now: datetime) -> Decision:
    """Compute every knob from the view. Pure and deterministic.

    ``previous`` (the last published decision) lets prewarm hold a plan until its release;
    the weights policy is memoryless and leaves smoothing to the controller's guardrails.
    """
    planned: tuple[PlannedInterval, ...] = ()
    pool = view.outlook.pool if view.outlook is not None else None
    if config.weights_policy == "planner" and view.outlook is not None and view.outlook.steps:
        weights, reasons, planned, pool_points = decide_plan(view, config)
    else:
        weights, reasons = decide_weights(view, config)
        pool, pool_points = None, ()
    plans = {r.name: p for r in config.routes if (p := day_plan(r, view.routes.get(r.name, RouteView()), view.tz))}
    plans, shared_reasons = shared_step_down(view, config, plans)
    thresholds, threshold_reasons = decide_thresholds(view, config, plans)
    threshold_reasons = [*shared_reasons, *threshold_reasons]
    # A provider's prewarm serves the share this decision gives it (or the one in force, if
    # higher): its own load history was made at the shares of the past. A pool the planner
    # sized serves what the plan sends it, step by step.
    shares = {n: max(w, previous.weights.get(n, 0.0) if previous is not None else 0.0) for n, w in weights.items()}
    prewarm_view = view
    if pool is not None and pool_points:
        prewarm_view = replace(view, load_forecast={**view.load_forecast, pool.provider: pool_points})
        shares.pop(pool.provider, None)
    prewarm, prewarm_reasons = decide_prewarm(prewarm_view, previous, config, now, shares)
    if pool is not None and pool_points:
        prewarm_reasons = [_pool_planned(r) if r.knob == f"prewarm/{pool.action}" else r for r in prewarm_reasons]
    return Decision(at=now, weights=weights, thresholds=thresholds, prewarm=prewarm,
                    reasons=(*reasons, *threshold_reasons, *prewarm_reasons), recommended_weights=dict(weights),
                    recommended_thresholds=dict(thresholds), plan=planned, day_plans=tuple(plans.values()),
                    segment_parity=segment_parity(view, config))


def _pool_planned(r: Reason) -> Reason:
    """A pool raised ahead of the plan's load says so (holds, misses and reactions keep their codes)."""
    if r.code in (ReasonCode.PredictedPeak, ReasonCode.PeakPlanned):
        return Reason(r.knob, ReasonCode.PoolPlanned, f"sized for the load the weights' plan sends it: {r.message}")
    return r
