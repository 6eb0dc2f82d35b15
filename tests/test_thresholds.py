"""Routing thresholds: every reason code, the budget inversion trap, score calibration and
segment disparity."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controller.guardrails import guard
from controller.settings import GuardrailSettings
from policies import (
    PolicyConfig,
    ProviderConfig,
    ProviderView,
    RouteConfig,
    RouteView,
    View,
    decide,
    score_threshold,
)

NOW = datetime(2026, 11, 16, 14, tzinfo=UTC)
# 600 rpm = 36,000 requests/hour; weak 0.001, strong 0.011 per request: baseline 30% spends 144/h.
ROUTE = RouteConfig("chat", "standard", baseline_fraction=0.3, quality_floor=0.1, strong_cost=0.011,
                    weak_cost=0.001, hourly_budget=200.0, strong_provider="openai")


def run(route: RouteConfig, rv: RouteView, strong: ProviderView | None = None) -> tuple[dict[str, float], dict[str, str]]:
    cfg = PolicyConfig(providers={"openai": ProviderConfig(0.5), "anthropic": ProviderConfig(0.5)},
                       latency_slo_seconds=5.0, routes=(route,))
    providers = {"openai": strong} if strong else {}
    d = decide(View(now=NOW, providers=providers, routes={route.name: rv}, data_age_seconds=5), None, cfg, NOW)
    return dict(d.thresholds), {r.knob: r.code for r in d.reasons if r.knob.startswith("thresholds/")}


@pytest.mark.parametrize(
    ("route", "rv", "strong", "fraction", "code"),
    [
        pytest.param(ROUTE, RouteView(predicted_rpm=600), None, 0.3, "BaselineFraction", id="BaselineFraction"),
        pytest.param(ROUTE, RouteView(), None, 0.3, "NoLoadData", id="NoLoadData"),
        # 1200 rpm: 72,000/h; the budget allows (200/72000 - 0.001)/0.01 = 17.8%
        pytest.param(ROUTE, RouteView(predicted_rpm=1200), None, pytest.approx(0.17778, abs=1e-4), "BudgetLimited",
                     id="BudgetLimited"),
        pytest.param(ROUTE, RouteView(predicted_rpm=3000), None, 0.1, "QualityFloor", id="QualityFloor"),
        pytest.param(RouteConfig(**{**ROUTE.__dict__, "tier": "high"}), RouteView(predicted_rpm=3000), None, 0.3,
                     "BudgetInversionAvoided", id="BudgetInversionAvoided"),
        pytest.param(ROUTE, RouteView(predicted_rpm=600), ProviderView("openai", 2.0, None, 8.0, NOW, True), 0.1,
                     "StrongModelLatency", id="StrongModelLatency-predicted"),
        pytest.param(ROUTE, RouteView(observed_rpm=600), ProviderView("openai", 9.0), 0.1,
                     "StrongModelLatency", id="StrongModelLatency-observed"),
        pytest.param(ROUTE, RouteView(predicted_rpm=600), ProviderView("openai", 2.0, None, 8.0, NOW, False), 0.3,
                     "BaselineFraction", id="untrusted-forecast-is-not-acted-on"),
    ],
)
def test_reason_codes(route: RouteConfig, rv: RouteView, strong: ProviderView | None, fraction: object,
                      code: str) -> None:
    values, codes = run(route, rv, strong)
    assert values["thresholds/chat/escalation_fraction"] == fraction
    assert codes["thresholds/chat"] == code


def test_score_threshold_is_the_matching_quantile_of_this_hours_scores() -> None:
    cdf = [(0.0, 0.0), (0.2, 0.3), (0.5, 0.7), (0.9, 1.0)]
    assert score_threshold(cdf, 0.3) == pytest.approx(0.5)  # 30% of requests score >= 0.5
    assert score_threshold(cdf, 0.5) == pytest.approx(0.35)
    values, codes = run(ROUTE, RouteView(predicted_rpm=600, score_cdf=cdf))
    assert values["thresholds/chat/score_threshold"] == pytest.approx(0.5)
    assert codes["thresholds/chat/score"] == "CalibratedThreshold"


def test_segment_disparity_is_flagged_and_limited() -> None:
    values, codes = run(ROUTE, RouteView(predicted_rpm=600, segment_rates={"free": 0.1, "paid": 0.5}))
    assert codes["thresholds/chat/segments"] == "SegmentDisparity"
    # mean 0.3, limit 0.2: free pulled up to 0.2, paid down to 0.4
    assert values["thresholds/chat/segments/free/escalation_fraction"] == pytest.approx(0.3 * 0.2 / 0.1)
    assert values["thresholds/chat/segments/paid/escalation_fraction"] == pytest.approx(0.3 * 0.4 / 0.5)
    _, codes = run(ROUTE, RouteView(predicted_rpm=600, segment_rates={"free": 0.25, "paid": 0.35}))
    assert codes["thresholds/chat/segments"] == "SegmentsWithinLimit"


def test_thresholds_return_to_baseline_in_observe_mode_and_when_stale() -> None:
    cfg = PolicyConfig(providers={"openai": ProviderConfig(1.0)}, routes=(ROUTE,))
    d = decide(View(now=NOW, providers={}, routes={"chat": RouteView(predicted_rpm=3000)}, data_age_seconds=5),
               None, cfg, NOW)
    assert d.thresholds["thresholds/chat/escalation_fraction"] == 0.1
    observe = guard(d, None, cfg, GuardrailSettings(mode="observe"), 5.0)
    assert observe.thresholds == {"thresholds/chat/escalation_fraction": 0.3}
    assert observe.recommended_thresholds["thresholds/chat/escalation_fraction"] == 0.1
    stale = guard(d, None, cfg, GuardrailSettings(mode="act"), 10_000.0)
    assert stale.thresholds == {"thresholds/chat/escalation_fraction": 0.3}
    act = guard(d, None, cfg, GuardrailSettings(mode="act"), 5.0)
    assert act.thresholds["thresholds/chat/escalation_fraction"] == 0.1
