"""Routing thresholds: every reason code, the budget inversion trap, score calibration and
segment disparity."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from collectors.intervals import MinuteCell, MinuteRow
from collectors.mapping import SeriesKey
from collectors.store import Store
from controller import Controller, load_settings
from policies import (
    Decision,
    ProviderView,
    RouteConfig,
    RouteView,
    View,
    decide,
    guard,
    score_threshold,
)
from tests.configs import guardrails, policy, route

NOW = datetime(2026, 11, 16, 14, tzinfo=UTC)
# 600 rpm = 36,000 requests/hour; weak 0.001, strong 0.011 per request: baseline 30% spends 144/h.
ROUTE = route("chat", tier="standard", baseline_fraction=0.3, quality_floor=0.1, strong_cost_per_request=0.011,
              weak_cost_per_request=0.001, hourly_budget=200.0, strong_provider="openai")


def run(route: RouteConfig, rv: RouteView, strong: ProviderView | None = None) -> tuple[dict[str, float], dict[str, str]]:
    cfg = replace(policy({"openai": 0.5, "anthropic": 0.5}, latency_slo_seconds=5.0), routes=(route,))
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
        pytest.param(replace(ROUTE, tier="high"), RouteView(predicted_rpm=3000), None, 0.3,
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
    cfg = replace(policy({"openai": 1.0}), routes=(ROUTE,))
    d = decide(View(now=NOW, providers={}, routes={"chat": RouteView(predicted_rpm=3000)}, data_age_seconds=5),
               None, cfg, NOW)
    assert d.thresholds["thresholds/chat/escalation_fraction"] == 0.1
    observe = guard(d, None, cfg, guardrails(mode="observe"), 5.0, NOW)
    assert observe.thresholds == {"thresholds/chat/escalation_fraction": 0.3}
    assert observe.recommended_thresholds["thresholds/chat/escalation_fraction"] == 0.1
    stale = guard(d, None, cfg, guardrails(mode="act"), 10_000.0, NOW)
    assert stale.thresholds == {"thresholds/chat/escalation_fraction": 0.3}
    act = guard(d, None, cfg, guardrails(mode="act"), 5.0, NOW)
    assert act.thresholds["thresholds/chat/escalation_fraction"] == 0.1


def test_the_score_threshold_comes_from_this_hour_of_weeks_router_scores(tmp_path: Path) -> None:
    """A router exporting its routing-score histogram (generic preset, ``score``): Monday 09:00
    scores run high, other hours low, so the same 30% escalation needs a higher threshold then."""
    ny = ZoneInfo("America/New_York")
    les = (0.2, 0.4, 0.6, 0.8, 1.0, float("inf"))
    settings = load_settings(data_dir=tmp_path / "data", guardrails={"mode": "act"}, forecast={"workers": 0},
                             policy={"providers": {"openai": {"baseline_weight": 1.0}},
                                     "routes": {"chat": {"baseline_fraction": 0.3}}})
    store = Store(settings.data_dir, tz=settings.timezone)
    rows = []
    monday = datetime(2026, 11, 16, 9, tzinfo=ny)  # after the 2026-11-01 DST change: wall-clock weeks
    for w in (1, 2, 3):
        for hour, scores in ((monday - timedelta(weeks=w), np.linspace(0.3, 1.0, 200)),
                             (monday - timedelta(weeks=w, hours=3), np.linspace(0.0, 0.5, 200))):
            cell = MinuteCell(count=200.0, sum=float(scores.sum()),
                              buckets={le: float((scores <= le).sum()) for le in les})
            rows.append(MinuteRow(int(hour.timestamp()), SeriesKey("score", "openai", "", "chat"), cell))
    for at in (monday - timedelta(hours=3), monday):  # fresh router data just before each step
        rows.append(MinuteRow(int(at.timestamp()) + 540, SeriesKey("requests", "openai"), MinuteCell(value=10.0)))
    store.write(rows)
    ctl = Controller(settings, store=store)
    early = ctl.step(at=monday - timedelta(hours=3) + timedelta(minutes=10))
    assert early.thresholds["thresholds/chat/score_threshold"] < 0.5
    d = ctl.step(at=monday + timedelta(minutes=10))
    # 30% of scores spread evenly over 0.3..1.0 lie above 0.79; the buckets interpolate it to about there
    assert d.thresholds["thresholds/chat/score_threshold"] == pytest.approx(0.79, abs=0.03)
    assert {r.code for r in d.reasons_for("thresholds/chat/score")} == {"CalibratedThreshold"}
    ctl.close()


def _segments_pushed(tmp_path: Path, **route: object) -> tuple[Controller, Decision]:
    """200 pushed events of route chat, half "free" (10% escalated), half "paid" (50%), then a
    tick; the controller is left open (the caller closes it)."""
    settings = load_settings(data_dir=tmp_path / "data", guardrails={"mode": "act"}, forecast={"workers": 0},
                             policy={"providers": {"openai": {"baseline_weight": 1.0}},
                                     "routes": {"chat": {"baseline_fraction": 0.3, "max_segment_disparity": 0.2,
                                                         **route}}})
    ctl = Controller.from_settings(settings)
    now = datetime(2026, 11, 16, 14, 0, tzinfo=UTC)
    lines = []
    for i in range(200):
        segment = "free" if i % 2 else "paid"
        escalated = (i % 20 == 1) if segment == "free" else (i % 4 == 0)  # free 10%, paid 50%
        lines.append(json.dumps({"ts": (now - timedelta(seconds=30)).isoformat(), "provider": "openai", "route": "chat",
                                 "latency": 1.0, "status": 200, "segment": segment, "escalated": escalated,
                                 "score": (i % 100) / 100}))
    batch = ctl.ingest_events("\n".join(lines).encode(), at=now)
    assert batch.accepted == 200 and not batch.errors
    return ctl, ctl.step(at=now + timedelta(minutes=1))


def test_segment_rates_from_pushed_events_are_limited_and_on_metrics(tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    ctl, d = _segments_pushed(tmp_path)
    assert {r.code for r in d.reasons_for("thresholds/chat/segments")} == {"SegmentDisparity"}
    assert "free" in d.reasons_for("thresholds/chat/segments")[0].message
    assert d.thresholds["thresholds/chat/segments/free/escalation_fraction"] > 0.3
    assert d.thresholds["thresholds/chat/segments/paid/escalation_fraction"] < 0.3
    text = generate_latest(ctl.registry).decode()
    # 10% and 50%: a gap of 40 points; Jain's index (0.6)^2 / (2 * (0.01 + 0.25)).
    assert 'diurnal_segment_escalation_ratio{route="chat",segment="free"} 0.1' in text
    assert 'diurnal_segment_escalation_ratio{route="chat",segment="paid"} 0.5' in text
    (gap,) = [float(line.split()[-1]) for line in text.splitlines() if line.startswith("diurnal_segment_parity_gap_ratio{")]
    (jain,) = [float(line.split()[-1]) for line in text.splitlines() if line.startswith("diurnal_segment_jain_index{")]
    assert gap == pytest.approx(0.4) and jain == pytest.approx(0.36 / 0.52)
    assert 'diurnal_segment_parity_limit_ratio{route="chat"} 0.2' in text
    assert 'diurnal_segment_parity_held{route="chat"} 1.0' in text
    ctl.flush()
    [score] = ctl.store.hour_histograms("score", 0, 2**40)
    assert score.count == 200 and score.key.route == "chat"
    ctl.close()


def test_segment_parity_can_be_reported_without_being_held(tmp_path: Path) -> None:
    """hold_segment_parity: false: the gap is said (reason, metrics) but no per-segment
    fraction is published."""
    from prometheus_client import generate_latest

    ctl, d = _segments_pushed(tmp_path, hold_segment_parity=False)
    try:
        (reason,) = d.reasons_for("thresholds/chat/segments")
        assert reason.code == "SegmentDisparity" and "not held" in reason.message
        assert not [k for k in d.thresholds if "/segments/" in k]
        text = generate_latest(ctl.registry).decode()
        assert 'diurnal_segment_parity_held{route="chat"} 0.0' in text
        assert 'diurnal_segment_escalation_ratio{route="chat",segment="free"} 0.1' in text
    finally:
        ctl.close()


def test_jains_index_is_one_for_equal_rates_and_one_over_n_at_worst() -> None:
    from policies import SegmentParity

    assert SegmentParity.of("r", {"a": 0.3, "b": 0.3, "c": 0.3}, 0.2, False).jain == pytest.approx(1.0)
    worst = SegmentParity.of("r", {"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0}, 0.2, True)
    assert worst.jain == pytest.approx(0.25) and worst.gap == 1.0
    assert SegmentParity.of("r", {"a": 0.0, "b": 0.0}, 0.2, False).jain == 1.0  # nobody escalated: alike
