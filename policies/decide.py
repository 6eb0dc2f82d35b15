"""The policy entry point: ``decide(view, previous, config, now) -> Decision``."""

from __future__ import annotations

from datetime import datetime

from policies.prewarm import decide_prewarm
from policies.thresholds import decide_thresholds
from policies.types import Decision, PolicyConfig, View
from policies.weights import decide_weights


def decide(view: View, previous: Decision | None, config: PolicyConfig, now: datetime) -> Decision:
    """Compute every knob from the view. Pure and deterministic.

    ``previous`` (the last published decision) lets prewarm hold a plan until its release;
    the weights policy is memoryless and leaves smoothing to the controller's guardrails.
    """
    weights, reasons = decide_weights(view, config)
    thresholds, threshold_reasons = decide_thresholds(view, config)
    prewarm, prewarm_reasons = decide_prewarm(view, previous, config, now)
    return Decision(at=now, weights=weights, thresholds=thresholds, prewarm=prewarm,
                    reasons=(*reasons, *threshold_reasons, *prewarm_reasons), recommended_weights=dict(weights),
                    recommended_thresholds=dict(thresholds))
