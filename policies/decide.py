"""The policy entry point: ``decide(view, previous, config, now) -> Decision``."""

from __future__ import annotations

from datetime import datetime

from policies.types import Decision, PolicyConfig, View
from policies.weights import decide_weights


def decide(view: View, previous: Decision | None, config: PolicyConfig, now: datetime) -> Decision:
    """Compute every knob from the view. Pure and deterministic.

    ``previous`` is accepted so that policies with memory (prewarm plans, hysteresis) share
    one signature; the weights policy itself is memoryless and leaves smoothing to the
    controller's guardrails.
    """
    del previous  # weights are memoryless; step limits live in the guardrails
    weights, reasons = decide_weights(view, config)
    return Decision(at=now, weights=weights, reasons=tuple(reasons), recommended_weights=dict(weights))
