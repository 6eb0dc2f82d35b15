"""Guardrails between a policy's target and what is published.

In the HPA's order, after the kill switch and staleness:

1. **dead band**: changes smaller than ``dead_band`` are not made;
2. **asymmetric stabilization**: a protective move (share off a provider the policy says
   breaches or is at capacity) is taken at once; a relaxing move (share given back) waits
   until every recommendation of the last ``stabilization_seconds`` agrees, as the HPA waits
   before scaling down: of the recommendations in the window, the one furthest from the
   baseline is followed;
3. **rate limit**: at most ``max_weight_step`` per provider per tick;
4. **min/max clamp** per provider.

Then manual **overrides** pin single weights until they expire (only the kill switch beats
them), and the **mode**: ``observe`` publishes the baseline and keeps the recommendation aside.
Routing thresholds go back to their baseline fractions with the kill switch, stale inputs and
in ``observe`` mode; they are not step-limited (a fraction and its score threshold move together).

Reason codes (knob ``weights`` or ``weights/<provider>``): ``KillSwitch``, ``StaleInputs``,
``DesiredWithinDeadBand``, ``Stabilizing``, ``StepLimited``, ``ManualOverride``, ``ObserveMode``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from controller.settings import GuardrailSettings
from policies import Decision, PolicyConfig, Reason

_EPS = 1e-12
#: Policy reason codes under which taking share off a provider protects it.
PROTECTIVE = frozenset({"PredictedLatencyBreach", "ObservedLatencyBreach", "ErrorBudgetBreach", "CapacityLimited"})


@dataclass(frozen=True)
class Override:
    """A manual pin of one knob until ``expires_at``."""

    id: str
    knob: str  # "weights/<provider>"
    value: float
    expires_at: datetime
    reason: str = ""
    created_at: datetime | None = None


def _normalise(weights: Mapping[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {k: v / total for k, v in weights.items()} if total > 0 else dict(weights)


def _distance(weights: Mapping[str, float], baseline: Mapping[str, float]) -> float:
    return sum(abs(weights.get(k, 0.0) - b) for k, b in baseline.items())


def stabilized(target: Mapping[str, float], window: Sequence[tuple[datetime, Mapping[str, float]]],
               baseline: Mapping[str, float]) -> Mapping[str, float]:
    """The recommendation furthest from the baseline among ``target`` and the ``window``'s."""
    best, far = target, _distance(target, baseline)
    for _, rec in window:
        if set(rec) == set(target) and (d := _distance(rec, baseline)) > far + _EPS:
            best, far = rec, d
    return best


def guard(
    target: Decision,
    previous: Decision | None,
    config: PolicyConfig,
    settings: GuardrailSettings,
    data_age_seconds: float | None,
    *,
    window: Sequence[tuple[datetime, Mapping[str, float]]] = (),
    overrides: Sequence[Override] = (),
) -> Decision:
    """Return the decision to publish. ``previous`` is the last published decision;
    ``window`` the policy's recent targets (for stabilization); ``overrides`` the active pins."""
    baseline = config.baseline()
    reasons = list(target.reasons)
    prev = dict(previous.recommended_weights) if previous is not None else baseline
    if set(prev) != set(target.weights):
        prev = baseline

    if settings.kill_switch:
        weights = baseline
        reasons.append(Reason("weights", "KillSwitch", "kill switch is on; every knob is at its baseline"))
        overrides = ()
    elif data_age_seconds is None or data_age_seconds > settings.stale_after_seconds:
        weights = baseline
        age = "no router data yet" if data_age_seconds is None else f"newest router data is {data_age_seconds:.0f}s old"
        reasons.append(Reason("weights", "StaleInputs",
                              f"{age} (limit {settings.stale_after_seconds:.0f}s); reverted to baseline"))
    else:
        weights = _smooth(target, prev, baseline, config, settings, window, reasons)

    weights = _pin(weights, overrides, target.at, reasons)
    recommended = _normalise(weights)
    published = recommended
    thresholds = dict(target.thresholds)
    fresh = data_age_seconds is not None and data_age_seconds <= settings.stale_after_seconds
    if settings.kill_switch or not fresh:
        thresholds = config.baseline_thresholds()
    published_thresholds = thresholds
    if settings.mode == "observe":
        published = baseline
        published_thresholds = config.baseline_thresholds()
        reasons.append(Reason("weights", "ObserveMode",
                              "observe mode: the baseline is published; the recommendation is shown only"))
    return replace(target, weights=published, recommended_weights=recommended, thresholds=published_thresholds,
                   recommended_thresholds=thresholds, reasons=tuple(reasons), mode=settings.mode)


def _smooth(target: Decision, prev: Mapping[str, float], baseline: Mapping[str, float], config: PolicyConfig,
            settings: GuardrailSettings, window: Sequence[tuple[datetime, Mapping[str, float]]],
            reasons: list[Reason]) -> dict[str, float]:
    """Dead band, stabilization, rate limit, clamp."""
    goal = dict(target.weights)
    delta = {k: goal[k] - prev.get(k, 0.0) for k in goal}
    biggest = max((abs(d) for d in delta.values()), default=0.0)
    if biggest < settings.dead_band:
        if biggest > _EPS:
            reasons.append(Reason("weights", "DesiredWithinDeadBand",
                                  f"largest change {biggest:.3f} is inside the dead band {settings.dead_band:.3f}"))
        return dict(prev)
    codes = {r.knob.split("/", 1)[1]: r.code for r in target.reasons if r.knob.startswith("weights/")}
    protective = any(goal[k] < prev.get(k, 0.0) - _EPS and codes.get(k) in PROTECTIVE for k in goal)
    recent = [(t, w) for t, w in window if t >= target.at - timedelta(seconds=settings.stabilization_seconds)]
    held = goal if protective else stabilized(goal, recent, baseline)
    if held is not goal and _distance(held, baseline) > _distance(prev, baseline) - _EPS:
        # The target moves back toward the baseline, but the window still holds a more
        # protective recommendation: stay where that one leads (never further from baseline
        # than where we are, so a protective move is never made by stabilization alone).
        reasons.append(Reason("weights", "Stabilizing",
                              f"moving back toward the baseline only once every recommendation of the last "
                              f"{settings.stabilization_seconds:.0f}s agrees"))
        return dict(prev)
    if held is not goal:
        goal = dict(held)
        reasons.append(Reason("weights", "Stabilizing",
                              f"back toward the baseline only as far as every recommendation of the last "
                              f"{settings.stabilization_seconds:.0f}s agrees"))
    delta = {k: goal[k] - prev.get(k, 0.0) for k in goal}
    biggest = max((abs(d) for d in delta.values()), default=0.0)
    # Scaling every change by one factor keeps the sum at 1 and each weight between its
    # previous and target value, so min/max bounds that held for both still hold.
    factor = min(1.0, settings.max_weight_step / biggest) if biggest > _EPS else 1.0
    weights = {k: prev.get(k, 0.0) + factor * d for k, d in delta.items()}
    if factor < 1.0:
        reasons.append(Reason("weights", "StepLimited",
                              f"moving at most {settings.max_weight_step:.2f} per tick toward the target"))
    return _clamp(weights, config)


def _pin(weights: Mapping[str, float], overrides: Sequence[Override], now: datetime,
         reasons: list[Reason]) -> dict[str, float]:
    """Apply active weight overrides; the other providers share the rest in proportion."""
    pins: dict[str, Override] = {}
    for o in overrides:
        name = o.knob.split("/", 1)[1] if o.knob.startswith("weights/") else ""
        if name in weights and o.expires_at > now:
            pins[name] = o  # the latest of several pins on one knob wins
    if not pins:
        return dict(weights)
    pinned = {k: min(1.0, max(0.0, o.value)) for k, o in pins.items()}
    rest = max(0.0, 1.0 - sum(pinned.values()))
    free = {k: v for k, v in weights.items() if k not in pinned}
    total = sum(free.values())
    out = dict(pinned)
    for k, v in free.items():
        out[k] = rest * (v / total if total > _EPS else 1.0 / len(free))
    for k, o in pins.items():
        why = f": {o.reason}" if o.reason else ""
        reasons.append(Reason(f"weights/{k}", "ManualOverride",
                              f"pinned to {pinned[k]:.2f} by override {o.id} until {o.expires_at:%Y-%m-%d %H:%M %Z}{why}"))
    return out


def _clamp(weights: Mapping[str, float], config: PolicyConfig) -> dict[str, float]:
    out = {}
    for k, v in weights.items():
        p = config.providers.get(k)
        out[k] = v if p is None else min(p.max_weight, max(p.min_weight, v))
    return out
