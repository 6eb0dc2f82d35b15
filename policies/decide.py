"""The policy entry point: ``decide(view, previous, config, now) -> Decision``."""

from __future__ import annotations

from datetime import datetime

from policies.prewarm import decide_prewarm
from policies.thresholds import decide_thresholds
from policies.types import Decision, PolicyConfig, View
from policies.weights import decide_weights

__all__ = ["decide"]


def decide(view: View, previous: Decision | None, config: PolicyConfig, now: datetime) -> Decision:
    """Compute every knob from the view. Pure and deterministic.

    ``previous`` (the last published decision) lets prewarm hold a plan until its release;
    the weights policy is memoryless and leaves smoothing to the controller's guardrails.
    """
    weights, reasons = decide_weights(view, config)
    thresholds, threshold_reasons = decide_thresholds(view, config)
    # A provider's prewarm serves the share this decision gives it (or the one in force, if
    # higher): its own load history was made at the shares of the past.
    shares = {n: max(w, previous.weights.get(n, 0.0) if previous is not None else 0.0) for n, w in weights.items()}
    prewarm, prewarm_reasons = decide_prewarm(view, previous, config, now, shares)
    return Decision(at=now, weights=weights, thresholds=thresholds, prewarm=prewarm,
                    reasons=(*reasons, *threshold_reasons, *prewarm_reasons), recommended_weights=dict(weights),
                    recommended_thresholds=dict(thresholds))
