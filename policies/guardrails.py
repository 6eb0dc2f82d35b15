"""Guardrails between a policy's target and what is published. Pure: the config is frozen,
the time comes as ``now``, and each stage returns its value and why, as the HPA's
recommendation stages do.

Weights go through the stages in the HPA's order; a stage marked final ends the smoothing:

0. **inputs**: the kill switch, stale inputs or a signal the policy needs missing from the
   router's input (``missing``: latency or requests of a provider) hold the baseline (final);
1. **dead band**: changes smaller than ``dead_band`` are not made (final);
2. **asymmetric stabilization**: a protective move (share off a provider the policy says
   breaches or is at capacity) is taken at once; a relaxing move (share given back) waits
   until every recommendation of the last ``stabilization_seconds`` agrees, as the HPA waits
   before scaling down: of the recommendations in the window, the one furthest from the
   baseline is followed (final when that means staying put);
3. **rate limit**: at most ``max_weight_step`` per provider per tick, or ``breach_step`` while
   share moves off a provider seen over the SLO or the error budget now (its users fail now);
4. **min/max clamp** per provider.

Then manual **overrides** pin single weights until they expire (only the kill switch beats
them), and the **mode**: ``observe`` publishes the baseline and keeps the recommendation aside.
Routing thresholds go back to their baseline fractions with the kill switch, stale inputs and
in ``observe`` mode; they are not step-limited (a fraction and its score threshold move together).
They have a dead band of their own: while a route's escalation fraction moves by less than
``threshold_dead_band`` and its reason code stays the same, every knob of the route keeps the
value in force (``DesiredWithinDeadBand`` on ``thresholds/<route>``), so a day plan that is
re-planned every tick from the spend does not publish a new decision every tick.

Reason codes (knob ``weights``, or ``weights/<provider>`` for an override or a missing
signal): ``KillSwitch``, ``StaleInputs``, ``MissingSignal``, ``DesiredWithinDeadBand``,
``Stabilizing``, ``StepLimited``, ``ManualOverride``, ``ObserveMode``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from policies.types import Decision, GuardrailConfig, Override, PolicyConfig, Reason, ReasonCode

__all__ = ["BREACHING", "PROTECTIVE", "Stage", "guard", "stabilized"]

_EPS = 1e-12
#: Policy reason codes under which taking share off a provider protects it.
PROTECTIVE = frozenset({ReasonCode.PredictedLatencyBreach, ReasonCode.ObservedLatencyBreach,
                        ReasonCode.ErrorBudgetBreach, ReasonCode.CapacityLimited,
                        ReasonCode.CapacityForecastLimited})
#: Of those, the breaches seen now: share moves off at up to ``breach_step`` per tick.
BREACHING = frozenset({ReasonCode.ObservedLatencyBreach, ReasonCode.ErrorBudgetBreach})

Weights = Mapping[str, float]
Window = Sequence[tuple[datetime, Weights]]


@dataclass(frozen=True)
class Stage:
    """One stage's outcome: the weights it leads to, and why (no reasons: it left them as
    they were). ``final`` skips the later smoothing stages."""

    weights: Weights
    reasons: tuple[Reason, ...] = ()
    final: bool = False


def _because(weights: Weights, code: ReasonCode, message: str, *, final: bool = False) -> Stage:
    return Stage(weights, (Reason("weights", code, message),), final)


def _normalise(weights: Weights) -> dict[str, float]:
    total = sum(weights.values())
    return {k: v / total for k, v in weights.items()} if total > 0 else dict(weights)


def _distance(weights: Weights, baseline: Weights) -> float:
    return sum(abs(weights.get(k, 0.0) - b) for k, b in baseline.items())


def _fresh(g: GuardrailConfig, data_age_seconds: float | None) -> bool:
    return data_age_seconds is not None and data_age_seconds <= g.stale_after_seconds


def stabilized(target: Weights, window: Window, baseline: Weights) -> Weights:
    """The recommendation furthest from the baseline among ``target`` and the ``window``'s."""
    best, far = target, _distance(target, baseline)
    for _, rec in window:
        if set(rec) == set(target) and (d := _distance(rec, baseline)) > far + _EPS:
            best, far = rec, d
    return best


def guard(target: Decision, previous: Decision | None, config: PolicyConfig, g: GuardrailConfig,
          data_age_seconds: float | None, now: datetime, *, window: Window = (),
          overrides: Sequence[Override] = (), missing: Mapping[str, str] | None = None) -> Decision:
    """The decision to publish. ``previous`` is the last published decision; ``window`` the
    policy's recent targets (for stabilization); ``overrides`` the pins (expired ones at
    ``now`` are ignored); ``missing`` what the router's input lacks, per provider (a message)."""
    baseline = config.baseline()
    prev: Weights = dict(previous.recommended_weights) if previous is not None else baseline
    if set(prev) != set(target.weights):
        prev = baseline
    codes = {r.knob.split("/", 1)[1]: r.code for r in target.reasons if r.knob.startswith("weights/")}
    stages: tuple[Callable[[Weights], Stage], ...] = (
        lambda w: _inputs(w, baseline, g, data_age_seconds, missing or {}),
        lambda w: _dead_band(w, prev, g),
        lambda w: _stabilization(w, prev, baseline, codes, g, [(t, r) for t, r in window
                                                               if t >= now - timedelta(seconds=g.stabilization_seconds)]),
        lambda w: _rate_limit(w, prev, g, codes),
        lambda w: _clamp(w, config),
    )
    reasons = list(target.reasons)
    weights: Weights = dict(target.weights)
    for stage in stages:
        out = stage(weights)
        weights = out.weights
        reasons.extend(out.reasons)
        if out.final:
            break
    pinned = _pin(weights, () if g.kill_switch else overrides, now)
    reasons.extend(pinned.reasons)
    recommended = _normalise(pinned.weights)
    fresh = _fresh(g, data_age_seconds) and not g.kill_switch
    thresholds = dict(target.thresholds) if fresh else config.baseline_thresholds()
    if fresh and previous is not None:
        thresholds, kept = _threshold_dead_band(thresholds, target, previous, config, g)
        reasons.extend(kept)
    published, published_thresholds = recommended, thresholds
    if g.mode == "observe":
        published, published_thresholds = baseline, config.baseline_thresholds()
        reasons.append(Reason("weights", ReasonCode.ObserveMode,
                              "observe mode: the baseline is published; the recommendation is shown only"))
    return replace(target, weights=published, recommended_weights=recommended, thresholds=published_thresholds,
                   recommended_thresholds=thresholds, reasons=tuple(reasons), mode=g.mode)


def _route_code(reasons: Sequence[Reason], knob: str) -> ReasonCode | None:
    return next((r.code for r in reasons if r.knob == knob and r.code != ReasonCode.DesiredWithinDeadBand), None)


def _threshold_dead_band(thresholds: Mapping[str, float], target: Decision, previous: Decision,
                         config: PolicyConfig, g: GuardrailConfig) -> tuple[dict[str, float], list[Reason]]:
    """Each route whose escalation fraction moved less than ``threshold_dead_band`` from the
    one in force, with the same knobs and the same reason code, keeps the values in force."""
    out = dict(thresholds)
    reasons: list[Reason] = []
    before = previous.recommended_thresholds
    for r in config.routes:
        knob = f"thresholds/{r.name}"
        group = {k for k in thresholds if k.startswith(knob + "/")}
        frac = f"{knob}/escalation_fraction"
        if (frac not in group or group != {k for k in before if k.startswith(knob + "/")}
                or _route_code(target.reasons, knob) != _route_code(previous.reasons, knob)):
            continue
        moved = thresholds[frac] - before[frac]
        if 0 < abs(moved) < g.threshold_dead_band:
            out.update({k: before[k] for k in group})
            reasons.append(Reason(knob, ReasonCode.DesiredWithinDeadBand,
                                  f"re-planned at {thresholds[frac]:.1%}, within the {g.threshold_dead_band:.1%} dead "
                                  f"band of the {before[frac]:.1%} in force: kept"))
    return out, reasons


def _inputs(goal: Weights, baseline: Weights, g: GuardrailConfig, data_age_seconds: float | None,
            missing: Mapping[str, str]) -> Stage:
    """Stage 0: the kill switch, then stale inputs, then a missing signal hold the baseline.
    Without one provider's latency or requests the policy cannot compare providers at all,
    so every weight stays at its baseline."""
    if g.kill_switch:
        return _because(baseline, ReasonCode.KillSwitch, "kill switch is on; every knob is at its baseline",
                        final=True)
    if not _fresh(g, data_age_seconds):
        age = "no router data yet" if data_age_seconds is None else f"newest router data is {data_age_seconds:.0f}s old"
        return _because(baseline, ReasonCode.StaleInputs,
                        f"{age} (limit {g.stale_after_seconds:.0f}s); reverted to baseline", final=True)
    if missing:
        return Stage(baseline, tuple(
            Reason(f"weights/{provider}", ReasonCode.MissingSignal, f"{message}; every weight held at its baseline")
            for provider, message in sorted(missing.items())), final=True)
    return Stage(goal)


def _biggest_change(goal: Weights, prev: Weights) -> float:
    return max((abs(v - prev.get(k, 0.0)) for k, v in goal.items()), default=0.0)


def _dead_band(goal: Weights, prev: Weights, g: GuardrailConfig) -> Stage:
    """Stage 1: a change smaller than the dead band is not made."""
    biggest = _biggest_change(goal, prev)
    if biggest >= g.dead_band:
        return Stage(goal)
    if biggest <= _EPS:
        return Stage(dict(prev), final=True)
    return _because(dict(prev), ReasonCode.DesiredWithinDeadBand,
                    f"largest change {biggest:.3f} is inside the dead band {g.dead_band:.3f}", final=True)


def _moving_off(goal: Weights, prev: Weights, codes: Mapping[str, ReasonCode], why: frozenset[ReasonCode]) -> list[str]:
    """The providers whose share goes down under one of the codes ``why``."""
    return [k for k in goal if goal[k] < prev.get(k, 0.0) - _EPS and codes.get(k) in why]


def _stabilization(goal: Weights, prev: Weights, baseline: Weights, codes: Mapping[str, ReasonCode],
                   g: GuardrailConfig, recent: Window) -> Stage:
    """Stage 2: protective moves at once; moves back toward the baseline only as far as
    every recommendation of the window agrees."""
    protective = bool(_moving_off(goal, prev, codes, PROTECTIVE))
    held = goal if protective else stabilized(goal, recent, baseline)
    if held is goal:
        return Stage(goal)
    if _distance(held, baseline) > _distance(prev, baseline) - _EPS:
        # The window still holds a more protective recommendation than where we are: stay
        # (never further from baseline than now, so no protective move comes from here).
        return _because(dict(prev), ReasonCode.Stabilizing,
                        f"moving back toward the baseline only once every recommendation of the last "
                        f"{g.stabilization_seconds:.0f}s agrees", final=True)
    return _because(dict(held), ReasonCode.Stabilizing,
                    f"back toward the baseline only as far as every recommendation of the last "
                    f"{g.stabilization_seconds:.0f}s agrees")


def _rate_limit(goal: Weights, prev: Weights, g: GuardrailConfig, codes: Mapping[str, ReasonCode]) -> Stage:
    """Stage 3: at most ``max_weight_step`` per provider per tick (``breach_step`` while share
    moves off a provider breaching now). Scaling every change by one factor keeps the sum at 1
    and each weight between its previous and target value, so min/max bounds that held for
    both still hold."""
    breaching = _moving_off(goal, prev, codes, BREACHING)
    step = max(g.max_weight_step, g.breach_step) if breaching else g.max_weight_step
    biggest = _biggest_change(goal, prev)
    factor = min(1.0, step / biggest) if biggest > _EPS else 1.0
    weights = {k: prev.get(k, 0.0) + factor * (v - prev.get(k, 0.0)) for k, v in goal.items()}
    if factor < 1.0:
        why = f" (share moving off {', '.join(sorted(breaching))}, breaching now)" if breaching else ""
        return _because(weights, ReasonCode.StepLimited, f"moving at most {step:.2f} per tick toward the target{why}")
    return Stage(weights)


def _clamp(goal: Weights, config: PolicyConfig) -> Stage:
    """Stage 4: each provider within its min/max."""
    out = {}
    for k, v in goal.items():
        p = config.providers.get(k)
        out[k] = v if p is None else min(p.max_weight, max(p.min_weight, v))
    return Stage(out)


def _pin(weights: Weights, overrides: Sequence[Override], now: datetime) -> Stage:
    """Active weight overrides; the other providers share the rest in proportion."""
    pins: dict[str, Override] = {}
    for o in overrides:
        name = o.knob.split("/", 1)[1] if o.knob.startswith("weights/") else ""
        if name in weights and o.expires_at > now:
            pins[name] = o  # the latest of several pins on one knob wins
    if not pins:
        return Stage(dict(weights))
    pinned = {k: min(1.0, max(0.0, o.value)) for k, o in pins.items()}
    rest = max(0.0, 1.0 - sum(pinned.values()))
    free = {k: v for k, v in weights.items() if k not in pinned}
    total = sum(free.values())
    out = dict(pinned)
    for k, v in free.items():
        out[k] = rest * (v / total if total > _EPS else 1.0 / len(free))
    reasons = []
    for k, o in pins.items():
        why = f": {o.reason}" if o.reason else ""
        reasons.append(Reason(f"weights/{k}", ReasonCode.ManualOverride,
                              f"pinned to {pinned[k]:.2f} by override {o.id} until "
                              f"{o.expires_at:%Y-%m-%d %H:%M %Z}{why}"))
    return Stage(out, tuple(reasons))
