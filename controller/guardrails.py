"""Guardrails between a policy's target and what is published, in the HPA's order:
kill switch and staleness first, then dead band -> rate limit per tick -> min/max clamp, and
finally the mode (``observe`` publishes the baseline and keeps the recommendation aside).

Reason codes (knob ``weights``): ``KillSwitch``, ``StaleInputs``, ``DesiredWithinDeadBand``,
``StepLimited``, ``ObserveMode``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from controller.settings import GuardrailSettings
from policies import Decision, PolicyConfig, Reason

_EPS = 1e-12


def _normalise(weights: Mapping[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {k: v / total for k, v in weights.items()} if total > 0 else dict(weights)


def guard(
    target: Decision,
    previous: Decision | None,
    config: PolicyConfig,
    settings: GuardrailSettings,
    data_age_seconds: float | None,
) -> Decision:
    """Return the decision to publish. ``previous`` is the last published decision."""
    baseline = config.baseline()
    reasons = list(target.reasons)
    prev = dict(previous.recommended_weights) if previous is not None else baseline
    if set(prev) != set(target.weights):
        prev = baseline

    if settings.kill_switch:
        weights = baseline
        reasons.append(Reason("weights", "KillSwitch", "kill switch is on; every knob is at its baseline"))
    elif data_age_seconds is None or data_age_seconds > settings.stale_after_seconds:
        weights = baseline
        age = "no router data yet" if data_age_seconds is None else f"newest router data is {data_age_seconds:.0f}s old"
        reasons.append(Reason("weights", "StaleInputs",
                              f"{age} (limit {settings.stale_after_seconds:.0f}s); reverted to baseline"))
    else:
        delta = {k: target.weights[k] - prev.get(k, 0.0) for k in target.weights}
        biggest = max((abs(d) for d in delta.values()), default=0.0)
        if biggest < settings.dead_band:
            weights = prev
            if biggest > _EPS:
                reasons.append(Reason("weights", "DesiredWithinDeadBand",
                                      f"largest change {biggest:.3f} is inside the dead band {settings.dead_band:.3f}"))
        else:
            # Scaling every change by one factor keeps the sum at 1 and each weight between
            # its previous and target value, so min/max bounds that held for both still hold.
            factor = min(1.0, settings.max_weight_step / biggest)
            weights = {k: prev.get(k, 0.0) + factor * d for k, d in delta.items()}
            if factor < 1.0:
                reasons.append(Reason("weights", "StepLimited",
                                      f"moving at most {settings.max_weight_step:.2f} per tick toward the target"))
        weights = _clamp(weights, config)

    recommended = _normalise(weights)
    published = recommended
    if settings.mode == "observe":
        published = baseline
        reasons.append(Reason("weights", "ObserveMode",
                              "observe mode: the baseline is published; the recommendation is shown only"))
    return replace(target, weights=published, recommended_weights=recommended,
                   reasons=tuple(reasons), mode=settings.mode)


def _clamp(weights: Mapping[str, float], config: PolicyConfig) -> dict[str, float]:
    out = {}
    for k, v in weights.items():
        p = config.providers.get(k)
        out[k] = v if p is None else min(p.max_weight, max(p.min_weight, v))
    return out
