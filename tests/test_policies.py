from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies import Decision, GuardrailConfig, ProviderView, View, decide, guard
from tests.configs import guardrails, policy, provider

NOW = datetime(2026, 11, 16, 12, 0, tzinfo=UTC)
CONFIG = policy(
    {
        "openai": provider(0.5, 0.05, 0.7, 1500),
        "anthropic": provider(0.3, 0.05, 0.7, 1200),
        "azure": provider(0.2, 0.05, 0.7, 1000),
    },
    latency_slo_seconds=5.0,
)


def view(total_rpm: float = 800, **providers: ProviderView) -> View:
    base = {n: ProviderView(n, observed_p95_seconds=3.0, forecast_trusted=True, predicted_p95_seconds=3.0)
            for n in CONFIG.providers}
    base.update(providers)
    return View(now=NOW, providers=base, predicted_total_rpm=total_rpm, observed_total_rpm=total_rpm,
                data_age_seconds=30, tz="America/New_York")


def codes(d: Decision) -> dict[str, str]:
    return {r.knob: r.code for r in d.reasons}


@pytest.mark.parametrize(
    ("v", "expected"),
    [
        pytest.param(view(), {"weights/openai": "BaselineWeight", "weights/anthropic": "BaselineWeight",
                              "weights/azure": "BaselineWeight"}, id="BaselineWeight"),
        pytest.param(view(openai=ProviderView("openai", 3.0, None, 8.0, NOW, True)),
                     {"weights/openai": "PredictedLatencyBreach", "weights/anthropic": "ShareReceived",
                      "weights/azure": "ShareReceived"}, id="PredictedLatencyBreach"),
        pytest.param(view(openai=ProviderView("openai", 7.5, None, None, None, False)),
                     {"weights/openai": "ObservedLatencyBreach"}, id="ObservedLatencyBreach"),
        pytest.param(view(openai=ProviderView("openai", 7.5, None, 3.0, NOW, True)),
                     {"weights/openai": "ObservedLatencyBreach"}, id="ObservedLatencyBreach-forecast-missed"),
        pytest.param(view(total_rpm=3000),
                     {"weights/openai": "CapacityLimited", "weights/anthropic": "ShareReceived",
                      "weights/azure": "ShareReceived"}, id="CapacityLimited"),
        pytest.param(view(total_rpm=5000), {"weights/openai": "CapacityExhausted",
                                            "weights/azure": "CapacityExhausted"}, id="CapacityExhausted"),
        pytest.param(view(**{n: ProviderView(n, 9.0) for n in CONFIG.providers}),
                     {"weights/openai": "AllProvidersDegraded"}, id="AllProvidersDegraded"),
        pytest.param(view(total_rpm=2600, openai=ProviderView("openai", 3.0, None, 8.0, NOW, True)),
                     {"weights/openai": "CapacityLimited"}, id="CapacityLimited-degraded-keeps-share"),
        pytest.param(view(anthropic=ProviderView("anthropic", 3.0, None, 3.0, NOW, True, observed_error_ratio=0.12)),
                     {"weights/anthropic": "ErrorBudgetBreach", "weights/openai": "ShareReceived"},
                     id="ErrorBudgetBreach"),
        pytest.param(view(anthropic=ProviderView("anthropic", 3.0, None, 3.0, NOW, True, observed_error_ratio=0.01)),
                     {"weights/anthropic": "BaselineWeight"}, id="errors-within-budget"),
    ],
)
def test_weight_reason_codes(v: View, expected: dict[str, str]) -> None:
    d = decide(v, None, CONFIG, NOW)
    got = codes(d)
    for knob, code in expected.items():
        assert got[knob] == code, got[knob]
    assert math.isclose(sum(d.weights.values()), 1.0)
    assert all(r.message for r in d.reasons)


def test_predicted_breach_moves_share_to_the_bound_and_says_when() -> None:
    d = decide(view(openai=ProviderView("openai", 3.0, None, 8.0, NOW, True)), None, CONFIG, NOW)
    assert d.weights["openai"] == pytest.approx(0.05)
    assert d.weights["anthropic"] > 0.3 and d.weights["azure"] > 0.2
    msg = d.reasons_for("weights/openai")[0].message
    assert "8.00s" in msg and "07:00 EST" in msg  # 12:00 UTC shown in the operator's timezone


def test_capacity_is_respected_when_absorbing_share() -> None:
    d = decide(view(total_rpm=1400, openai=ProviderView("openai", 3.0, None, 8.0, NOW, True)), None, CONFIG, NOW)
    for name, p in CONFIG.providers.items():
        if name != "openai" and p.capacity_rpm is not None:
            assert d.weights[name] * 1400 <= p.capacity_rpm * CONFIG.capacity_headroom + 1e-6


provider_views = st.builds(
    ProviderView,
    name=st.just("x"),
    observed_p95_seconds=st.one_of(st.none(), st.floats(0.1, 20)),
    observed_rpm=st.none(),
    predicted_p95_seconds=st.one_of(st.none(), st.floats(0.1, 20)),
    predicted_p95_at=st.none(),
    forecast_trusted=st.booleans(),
)


#: Previous weights within every provider's [0.05, 0.7], summing to 1 (a valid published state).
previous_weights = st.lists(st.floats(0.2, 1.0), min_size=3, max_size=3).map(
    lambda v: [0.05 + 0.85 * x / sum(v) for x in v])


@settings(max_examples=200, deadline=None)
@given(st.lists(provider_views, min_size=3, max_size=3), st.floats(0, 5000), previous_weights,
       st.floats(0.01, 0.5), st.floats(0, 0.05))
def test_weights_sum_to_one_and_bounds_and_steps_hold(pvs: list[ProviderView], rpm: float,
                                                      prev: list[float], step: float, band: float) -> None:
    names = list(CONFIG.providers)
    v = View(now=NOW, providers={n: replace(p, name=n) for n, p in zip(names, pvs, strict=True)},
             predicted_total_rpm=rpm, observed_total_rpm=rpm, data_age_seconds=10)
    target = decide(v, None, CONFIG, NOW)
    assert math.isclose(sum(target.weights.values()), 1.0, abs_tol=1e-9)
    prev_w = dict(zip(names, prev, strict=True))
    previous = Decision(at=NOW, weights=prev_w, recommended_weights=prev_w)
    g = guardrails(mode="act", max_weight_step=step, breach_step=step, dead_band=band)
    out = guard(target, previous, CONFIG, g, 10, NOW)
    assert math.isclose(sum(out.weights.values()), 1.0, abs_tol=1e-9)
    for n, w in out.weights.items():
        p = CONFIG.providers[n]
        assert p.min_weight - 1e-9 <= w <= p.max_weight + 1e-9
        assert abs(w - prev_w[n]) <= step + 1e-9


def _target(weights: dict[str, float]) -> Decision:
    return Decision(at=NOW, weights=weights, recommended_weights=weights)


SHIFTED = {"openai": 0.05, "anthropic": 0.55, "azure": 0.40}
BASE = CONFIG.baseline()


@pytest.mark.parametrize(
    ("g", "age", "previous", "code", "expected"),
    [
        pytest.param(guardrails(mode="act", kill_switch=True), 10.0, SHIFTED, "KillSwitch", BASE, id="KillSwitch"),
        pytest.param(guardrails(mode="act"), 1000.0, SHIFTED, "StaleInputs", BASE, id="StaleInputs"),
        pytest.param(guardrails(mode="act"), None, SHIFTED, "StaleInputs", BASE, id="StaleInputs-no-data"),
        pytest.param(guardrails(mode="act", max_weight_step=0.1), 10.0, BASE, "StepLimited",
                     {"openai": 0.4, "anthropic": 0.3 + 0.1 * 0.25 / 0.45, "azure": 0.2 + 0.1 * 0.2 / 0.45},
                     id="StepLimited"),
        pytest.param(guardrails(mode="act", dead_band=0.5, max_weight_step=1.0), 10.0, BASE,
                     "DesiredWithinDeadBand", BASE, id="DesiredWithinDeadBand"),
        pytest.param(guardrails(mode="observe", max_weight_step=1.0), 10.0, BASE, "ObserveMode", BASE,
                     id="ObserveMode"),
    ],
)
def test_guardrail_reason_codes(g: GuardrailConfig, age: float | None, previous: dict[str, float],
                                code: str, expected: dict[str, float]) -> None:
    prev = Decision(at=NOW, weights=previous, recommended_weights=previous)
    out = guard(_target(SHIFTED), prev, CONFIG, g, age, NOW)
    assert code in [r.code for r in out.reasons if r.knob == "weights"]
    assert out.weights == pytest.approx(expected)
    assert out.mode == g.mode


def test_observe_mode_publishes_baseline_but_keeps_the_recommendation() -> None:
    out = guard(_target(SHIFTED), None, CONFIG, guardrails(mode="observe", max_weight_step=1.0), 10.0, NOW)
    assert out.weights == BASE
    assert out.recommended_weights == pytest.approx(SHIFTED)


DECIDE_IN_A_FRESH_PROCESS = """
import json
from datetime import UTC, datetime, timedelta
from controller.publish import decision_body
from policies import LoadPoint, ProviderView, View, decide
from tests.configs import policy, provider
now = datetime(2026, 11, 16, 12, tzinfo=UTC)
cfg = policy({"openai": provider(0.5, 0.05, 0.7, 1500), "anthropic": provider(0.3, 0.05, 0.7, 1200),
              "azure": provider(0.2, 0.05, 0.7, 1000)}, latency_slo_seconds=5.0,
             prewarm=[{"name": "pool", "kind": "pool", "target": "p", "rpm_per_unit": 50, "provider": "azure"},
                      {"name": "all", "kind": "pool", "target": "q", "rpm_per_unit": 80}],
             routes={"chat": {"baseline_fraction": 0.3, "hourly_budget": 50, "strong_cost_per_request": 0.01}})
load = tuple(LoadPoint(now + timedelta(hours=h), 900.0 + 90 * h, 1100.0 + 90 * h, 800.0) for h in range(6))
view = View(now=now, providers={"openai": ProviderView("openai", 3.0, 700, 8.0, now, True),
                                "anthropic": ProviderView("anthropic", 6.0, 300),
                                "azure": ProviderView("azure", 2.0, 200, observed_error_ratio=0.1)},
            predicted_total_rpm=1400, observed_total_rpm=1200, data_age_seconds=5, tz="America/New_York",
            load_forecast={"*": load, "azure": load[:3]})
print(json.dumps(decision_body(decide(view, None, cfg, now)), sort_keys=True))
"""


@pytest.mark.parametrize("seeds", [pytest.param(("1", "2"), id="hash-seeds-1-2")])
def test_decide_gives_the_same_decision_in_any_process(seeds: tuple[str, str]) -> None:
    """Pure and deterministic: nothing in a decision depends on the process (set and dict
    order under another hash seed, the wall clock, module state)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    bodies = [subprocess.run([sys.executable, "-c", DECIDE_IN_A_FRESH_PROCESS], cwd=root, capture_output=True,
                             text=True, check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
              for seed in seeds]
    assert bodies[0] == bodies[1] and '"weights"' in bodies[0]


def test_a_tpm_limit_caps_share_at_the_tokens_per_request_seen() -> None:
    cfg = policy({"a": provider(0.5, 0.0, 1.0, None, 600_000), "b": provider(0.5, 0.0, 1.0)})
    # 2,000 rpm at 1,000 tokens per request: 'a' takes 600 rpm, so at most 0.9 * 600 / 2000 = 0.27
    v = View(now=NOW, providers={"a": ProviderView("a", 2.0, tokens_per_request=1000.0), "b": ProviderView("b", 2.0)},
             predicted_total_rpm=2000, observed_total_rpm=2000, data_age_seconds=5)
    d = decide(v, None, cfg, NOW)
    assert d.weights["a"] == pytest.approx(0.27)
    assert codes(d)["weights/a"] == "CapacityLimited"
