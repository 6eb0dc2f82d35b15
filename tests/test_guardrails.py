"""Guardrails beyond the basics: asymmetric stabilization, overrides, their properties."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies import Decision, Override, Reason, ReasonCode, guard
from tests.configs import guardrails, policy, provider

NOW = datetime(2026, 11, 9, 12, tzinfo=UTC)
CONFIG = policy({"openai": provider(0.5, 0.05, 0.7), "anthropic": provider(0.3, 0.05, 0.7),
                 "azure": provider(0.2, 0.05, 0.7)})
BASE = CONFIG.baseline()
AWAY = {"openai": 0.05, "anthropic": 0.57, "azure": 0.38}  # share off openai
G = guardrails(mode="act", max_weight_step=1.0, dead_band=0.0, stabilization_seconds=600)


def target(weights: dict[str, float], code: ReasonCode = ReasonCode.BaselineWeight, at: datetime = NOW) -> Decision:
    return Decision(at=at, weights=weights, recommended_weights=weights,
                    reasons=(Reason("weights/openai", code, ""),))


def published(weights: dict[str, float]) -> Decision:
    return Decision(at=NOW, weights=weights, recommended_weights=weights)


def test_a_protective_move_is_immediate() -> None:
    window = [(NOW - timedelta(minutes=m), BASE) for m in range(1, 10)]
    out = guard(target(AWAY, ReasonCode.PredictedLatencyBreach), published(BASE), CONFIG, G, 10.0, NOW, window=window)
    assert out.weights == pytest.approx(AWAY)
    assert "Stabilizing" not in [r.code for r in out.reasons]


def test_giving_share_back_waits_for_the_window() -> None:
    # Two minutes ago the policy still wanted openai off; now it is fine again.
    window = [(NOW - timedelta(minutes=2), AWAY), (NOW - timedelta(minutes=1), BASE)]
    out = guard(target(BASE), published(AWAY), CONFIG, G, 10.0, NOW, window=window)
    assert out.weights == pytest.approx(AWAY)
    assert "Stabilizing" in [r.code for r in out.reasons]
    # Eleven minutes later every recommendation of the window agrees: it goes back.
    later = NOW + timedelta(minutes=11)
    window = [(later - timedelta(minutes=m), BASE) for m in range(1, 10)]
    out = guard(target(BASE, at=later), published(AWAY), CONFIG, G, 10.0, later, window=window)
    assert out.weights == pytest.approx(BASE)


def test_a_new_breach_elsewhere_is_not_held_by_an_old_recommendation() -> None:
    off_anthropic = {"openai": 0.57, "anthropic": 0.05, "azure": 0.38}
    decision = Decision(at=NOW, weights=off_anthropic, recommended_weights=off_anthropic,
                        reasons=(Reason("weights/anthropic", ReasonCode.PredictedLatencyBreach, ""),))
    window = [(NOW - timedelta(minutes=1), AWAY)]  # the old plan moved share off openai instead
    out = guard(decision, published(AWAY), CONFIG, G, 10.0, NOW, window=window)
    assert out.weights == pytest.approx(off_anthropic)


def test_an_override_pins_one_weight_and_the_rest_share_the_remainder() -> None:
    pin = Override("o1", "weights/openai", 0.3, NOW + timedelta(hours=1), "vendor incident")
    out = guard(target(BASE), published(BASE), CONFIG, G, 10.0, NOW, overrides=[pin])
    assert out.weights["openai"] == pytest.approx(0.3)
    assert out.weights["anthropic"] == pytest.approx(0.7 * 0.3 / 0.5)
    assert math.isclose(sum(out.weights.values()), 1.0)
    [r] = out.reasons_for("weights/openai")[-1:]
    assert r.code == "ManualOverride" and "vendor incident" in r.message


def test_an_override_beats_staleness_but_not_the_kill_switch() -> None:
    pin = Override("o1", "weights/openai", 0.3, NOW + timedelta(hours=1))
    stale = guard(target(BASE), published(BASE), CONFIG, G, 10_000.0, NOW, overrides=[pin])
    assert stale.weights["openai"] == pytest.approx(0.3)
    killed = guard(target(BASE), published(BASE), CONFIG, guardrails(mode="act", kill_switch=True), 10.0, NOW,
                   overrides=[pin])
    assert killed.weights == BASE


def test_an_expired_override_is_ignored() -> None:
    pin = Override("o1", "weights/openai", 0.3, NOW - timedelta(seconds=1))
    assert guard(target(BASE), published(BASE), CONFIG, G, 10.0, NOW, overrides=[pin]).weights == pytest.approx(BASE)


weights3 = st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3).filter(lambda v: sum(v) > 0.05)


def _norm(v: list[float]) -> dict[str, float]:
    s = sum(v)
    return dict(zip(CONFIG.providers, (x / s for x in v), strict=True))


@settings(max_examples=150, deadline=None)
@given(goal=weights3, value=st.floats(0.0, 1.0), ttl=st.floats(-3600, 3600), mode=st.sampled_from(["act", "observe"]),
       age=st.one_of(st.none(), st.floats(0, 1000)))
def test_overrides_win_until_they_expire(goal: list[float], value: float, ttl: float, mode: str,
                                         age: float | None) -> None:
    pin = Override("o", "weights/azure", value, NOW + timedelta(seconds=ttl))
    g = guardrails(mode=mode, max_weight_step=0.1, stabilization_seconds=600)
    out = guard(target(_norm(goal)), published(BASE), CONFIG, g, age, NOW, overrides=[pin])
    assert math.isclose(sum(out.recommended_weights.values()), 1.0, abs_tol=1e-9)
    if pin.expires_at > NOW:
        assert out.recommended_weights["azure"] == pytest.approx(value)
    else:
        assert "ManualOverride" not in [r.code for r in out.reasons]
    if mode == "observe":
        assert out.weights == BASE  # observe mode pushes nothing, not even an override
    elif pin.expires_at <= NOW and (age is None or age > g.stale_after_seconds):
        assert out.weights == BASE  # stale inputs revert to the baseline


#: Weights within every provider's [0.05, 0.7], summing to 1 (as the policy produces them).
bounded = st.lists(st.floats(0.2, 1.0), min_size=3, max_size=3).map(
    lambda v: [0.05 + 0.85 * x / sum(v) for x in v])


@settings(max_examples=150, deadline=None)
@given(history=st.lists(bounded, min_size=0, max_size=6), goal=bounded, prev=bounded,
       code=st.sampled_from([ReasonCode.BaselineWeight, ReasonCode.PredictedLatencyBreach,
                             ReasonCode.ShareReceived]))
def test_stabilization_keeps_bounds_and_sum(history: list[list[float]], goal: list[float], prev: list[float],
                                            code: ReasonCode) -> None:
    window = [(NOW - timedelta(minutes=i + 1), _norm(h)) for i, h in enumerate(history)]
    g = guardrails(mode="act", max_weight_step=0.2, dead_band=0.01, stabilization_seconds=600)
    before, wanted = _norm(prev), _norm(goal)
    out = guard(target(wanted, code), published(before), CONFIG, g, 10.0, NOW, window=window)
    assert math.isclose(sum(out.weights.values()), 1.0, abs_tol=1e-9)
    assert _in_bounds(out.weights)
    for k, w in out.weights.items():
        assert abs(w - before[k]) <= 0.2 + 1e-9


def _in_bounds(weights: dict[str, float]) -> bool:
    return all(CONFIG.providers[k].min_weight - 1e-9 <= w <= CONFIG.providers[k].max_weight + 1e-9
               for k, w in weights.items())


def test_share_moves_off_a_provider_breaching_now_at_the_breach_step() -> None:
    """openai 0.5 -> 0.05: a forecast moves it at max_weight_step a tick; a breach seen now at
    breach_step (its users fail now), and the message says why."""
    g = guardrails(mode="act", max_weight_step=0.1, breach_step=0.3, dead_band=0.0, stabilization_seconds=600)
    away = {"openai": 0.05, "anthropic": 0.6, "azure": 0.35}
    planned = guard(target(away, ReasonCode.PredictedLatencyBreach), published(BASE), CONFIG, g, 10.0, NOW)
    assert planned.weights["openai"] == pytest.approx(0.4)
    seen = guard(target(away, ReasonCode.ObservedLatencyBreach), published(BASE), CONFIG, g, 10.0, NOW)
    assert seen.weights["openai"] == pytest.approx(0.2)
    (why,) = [r for r in seen.reasons if r.code == ReasonCode.StepLimited]
    assert "0.30 per tick" in why.message and "openai, breaching now" in why.message
    # Share moving onto a provider keeps the slower step, whatever the others' codes.
    back = guard(target(BASE, ReasonCode.ObservedLatencyBreach), published(away), CONFIG, g, 10.0, NOW)
    assert max(abs(back.weights[k] - away[k]) for k in BASE) <= 0.1 + 1e-9


def test_a_route_fraction_moving_within_the_threshold_dead_band_keeps_the_one_in_force() -> None:
    """A re-planned fraction less than ``threshold_dead_band`` from the one in force, with the same
    reason code, keeps every knob of the route; a larger move, or a new reason, is published."""
    from dataclasses import replace as with_

    from tests.configs import route

    cfg = with_(CONFIG, routes=(route("chat", baseline_fraction=0.3),))
    g = guardrails(mode="act", threshold_dead_band=0.01)
    knob, frac, score = "thresholds/chat", "thresholds/chat/escalation_fraction", "thresholds/chat/score_threshold"

    def planned(f: float, s: float, code: ReasonCode = ReasonCode.DayPlanned) -> Decision:
        return Decision(at=NOW, weights=BASE, recommended_weights=BASE, thresholds={frac: f, score: s},
                        recommended_thresholds={frac: f, score: s}, reasons=(Reason(knob, code, ""),))

    before = guard(planned(0.30, 0.7), None, cfg, g, 5, NOW)
    assert before.thresholds == {frac: 0.30, score: 0.7}
    small = guard(planned(0.305, 0.69), before, cfg, g, 5, NOW)
    assert small.thresholds == {frac: 0.30, score: 0.7}
    assert ReasonCode.DesiredWithinDeadBand in {r.code for r in small.reasons_for(knob)}
    again = guard(planned(0.308, 0.69), small, cfg, g, 5, NOW)  # still within the band of the 0.30 in force
    assert again.thresholds == {frac: 0.30, score: 0.7}
    big = guard(planned(0.315, 0.68), again, cfg, g, 5, NOW)  # drifted out of it
    assert big.thresholds == {frac: 0.315, score: 0.68}
    assert ReasonCode.DesiredWithinDeadBand not in {r.code for r in big.reasons_for(knob)}
    other = guard(planned(0.305, 0.69, ReasonCode.QualityFloor), before, cfg, g, 5, NOW)  # a new reason
    assert other.thresholds == {frac: 0.305, score: 0.69}
    off = guard(planned(0.305, 0.69), before, cfg, guardrails(mode="act", threshold_dead_band=0.0), 5, NOW)
    assert off.thresholds == {frac: 0.305, score: 0.69}
