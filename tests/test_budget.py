"""Budgets by the hour (``policies.budget``): the day's allowance spread over the hours left by
the forecast, one cut for the rest of the day, re-planned from the actual spend, protected
routes kept (and said), no hard stop unless asked; and the controller's side: spend per route
since local midnight from the store, the hours left of the local day across DST."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from policies import DayPlan, Decision, ReasonCode, RouteConfig, RouteHour, RouteView
from policies.budget import day_plan

NY = ZoneInfo("America/New_York")
START = datetime(2026, 11, 16, 0, 0, tzinfo=NY)  # a Monday, local midnight

ROUTE = RouteConfig(name="chat", tier="standard", baseline_fraction=0.3, quality_floor=0.1, max_fraction=0.8,
                    strong_cost=0.01, weak_cost=0.001, hourly_budget=None, strong_provider=None, max_disparity=0.2,
                    daily_budget=100.0, monthly_budget=None, protected=False, hard_stop=False)


def hours(per_hour: list[float], start: datetime = START, **kw: object) -> tuple[RouteHour, ...]:
    return tuple(RouteHour(at=start + timedelta(hours=i), requests=n, **kw) for i, n in enumerate(per_hour))  # type: ignore[arg-type]


def plan(r: RouteConfig, per_hour: list[float], spent: float = 0.0, **view: object) -> DayPlan:
    got = day_plan(r, RouteView(spent_today=spent, hours_left=hours(per_hour), **view), "America/New_York")  # type: ignore[arg-type]
    assert got is not None
    return got


def spend_at(f: float, n: float) -> float:
    return n * (0.001 + f * 0.009)


def test_the_day_lands_on_the_budget_whatever_its_volume() -> None:
    """A busy day steps down from its first hour; a quiet one escalates more than its baseline
    (within max_fraction): either way the predicted spend is the budget."""
    busy = plan(ROUTE, [2000.0] * 24)  # 48,000 requests: at 30% 177.60, over the 100 budget
    assert busy.code == ReasonCode.DayPlanned and busy.shortfall == 0.0
    assert busy.planned == pytest.approx(100.0)
    assert busy.fraction == pytest.approx((100 / 48000 - 0.001) / 0.009)
    over = plan(ROUTE, [3000.0] * 24)  # 72,000: even the 10% floor spends 136.80
    assert over.code == ReasonCode.QualityFloor and over.fraction == ROUTE.quality_floor
    assert over.shortfall == pytest.approx(36.8) and "36.80 over" in over.message
    quiet = plan(ROUTE, [600.0] * 24)
    assert quiet.planned == pytest.approx(100.0) and quiet.fraction > ROUTE.baseline_fraction
    tiny = plan(ROUTE, [10.0] * 24)  # a budget no escalation can spend: max_fraction, under budget
    assert tiny.fraction == pytest.approx(ROUTE.max_fraction) and tiny.planned < 100.0


def test_a_morning_that_spent_fast_lowers_the_rest_of_the_day_a_little() -> None:
    """Re-planned from the actual spend: after 8 hours at plan, a morning that spent 20% more
    lowers the 16 hours left a little, not to the floor; one that spent less raises them."""
    first = plan(ROUTE, [1000.0] * 24)
    assert first.fraction is not None
    on_plan = spend_at(first.fraction, 8000)
    later = [1000.0] * 16
    hot = plan(ROUTE, later, spent=1.2 * on_plan)
    cool = plan(ROUTE, later, spent=0.8 * on_plan)
    assert hot.fraction is not None and cool.fraction is not None
    assert ROUTE.quality_floor < hot.fraction < first.fraction < cool.fraction
    assert hot.spent + hot.planned == pytest.approx(100.0)


def test_one_score_threshold_for_the_day_escalates_the_hardest_requests_wherever_they_fall() -> None:
    """Hours with harder requests (scores shifted up) get more escalation at the same cut."""
    easy = ((0.0, 0.0), (0.5, 0.9), (1.0, 1.0))  # 10% of scores above 0.5
    hard = ((0.0, 0.0), (0.5, 0.5), (1.0, 1.0))  # half of them
    hs = (*hours([1000.0] * 12, score_cdf=easy), *hours([1000.0] * 12, START + timedelta(hours=12), score_cdf=hard))
    got = day_plan(ROUTE, RouteView(spent_today=0.0, hours_left=hs), "America/New_York")
    assert got is not None and got.code == ReasonCode.DayPlanned
    assert got.planned == pytest.approx(100.0, rel=1e-6)
    threshold = got.hours[0].score_threshold
    assert threshold is not None and all(h.score_threshold == threshold for h in got.hours)
    assert got.hours[-1].fraction > got.hours[0].fraction
    assert "score >=" in got.message


def test_a_price_window_on_the_strong_model_is_counted_in_the_spend() -> None:
    dear = plan(ROUTE, [1000.0] * 24)
    hs = hours([1000.0] * 24, strong_price_factor=2.0)
    doubled = day_plan(ROUTE, RouteView(spent_today=0.0, hours_left=hs), "America/New_York")
    assert doubled is not None and doubled.fraction is not None and dear.fraction is not None
    assert doubled.fraction < dear.fraction and doubled.planned == pytest.approx(100.0)


def test_a_spent_budget_holds_the_floor_and_stops_only_when_asked() -> None:
    held = plan(ROUTE, [1000.0] * 4, spent=100.0)
    assert held.code == ReasonCode.BudgetSpent and held.fraction == ROUTE.quality_floor
    assert "not stopped" in held.message
    stopped = plan(replace(ROUTE, hard_stop=True), [1000.0] * 4, spent=101.0)
    assert stopped.code == ReasonCode.BudgetExhausted and stopped.fraction == 0.0


def test_a_protected_route_is_never_cut_to_save_money_and_the_shortfall_is_said() -> None:
    for r in (replace(ROUTE, protected=True), replace(ROUTE, tier="high")):
        got = plan(r, [1000.0] * 24)  # at its 30% baseline 88.80 fits: it may escalate more
        assert got.code == ReasonCode.DayPlanned and got.fraction is not None and got.fraction >= 0.3
        short = plan(r, [2000.0] * 24)  # at 30%: 177.6, over the 100 budget
        assert short.code == ReasonCode.BudgetCannotHoldProtected
        assert short.fraction == pytest.approx(0.3)
        assert short.shortfall == pytest.approx(spend_at(0.3, 48000) - 100.0)
        spent = plan(r, [1000.0] * 4, spent=120.0)  # even with nothing left
        assert spent.code == ReasonCode.BudgetCannotHoldProtected and spent.fraction == pytest.approx(0.3)


def test_a_monthly_budget_gives_today_its_share_by_the_requests_it_brings() -> None:
    """1,000 left of the month, today's 24,000 requests against 10 more days of 24,000: today
    may spend 1/11 of it; the lower of the daily and the monthly binds."""
    monthly = replace(ROUTE, daily_budget=None, monthly_budget=3000.0)
    got = plan(monthly, [1000.0] * 24, spent=0.0, spent_month=2000.0, requests_per_day=24000.0,
               days_left_after_today=10)
    assert got.binding == "monthly" and got.allowance == pytest.approx(1000.0 / 11)
    both = plan(replace(monthly, daily_budget=50.0), [1000.0] * 24, spent_month=2000.0, requests_per_day=24000.0,
                days_left_after_today=10)
    assert both.binding == "daily" and both.allowance == 50.0


def test_no_budget_no_plan_and_no_requests_no_cut() -> None:
    assert day_plan(replace(ROUTE, daily_budget=None), RouteView(hours_left=hours([1.0])), "UTC") is None
    empty = plan(ROUTE, [])
    assert empty.code == ReasonCode.NoLoadData and empty.fraction is None


def _morning(tmp_path: Path, shared_budget: dict[str, float] | None = None, plan_route: str | None = None,
             **route: object) -> tuple[Decision, DayPlan, float, str, dict[str, Any]]:
    """The embedding API over a morning (to 09:30) of the simulated router, with the chat
    route's budget settings ``route``: the last decision, its day plan, what the router's
    spend counter counted since local midnight, the /metrics text and the body of
    ``GET /v1/decision?explain=1``."""
    from fastapi.testclient import TestClient
    from prometheus_client import generate_latest

    from controller import Controller
    from controller.entrypoints.api import create_app
    from controller.entrypoints.demo import demo_settings
    from sim import STATIC_WEIGHTS, SimulatedRouter, WorldSpec

    spec = WorldSpec()
    base = demo_settings(tmp_path / "data", spec)
    pol = base.policy.model_dump()
    pol["routes"]["chat"].update(hourly_budget=None, strong_provider=None, **route)  # no latency override
    pol["shared_budget"] = shared_budget
    settings = demo_settings(tmp_path / "data", spec, policy=pol)
    start = datetime(2026, 11, 16, 0, 0, tzinfo=NY)
    now = start
    ctl = Controller.from_settings(settings, clock=lambda: now)
    router = SimulatedRouter(spec, seed=2, start=start, weights=STATIC_WEIGHTS)
    try:
        while now < start + timedelta(hours=9, minutes=30):
            now += timedelta(minutes=10)
            router.advance(now)
            ctl.ingest_exposition(router.exposition(), at=now)
            d = ctl.step(at=now)
        if plan_route is None:
            (p,) = d.day_plans
        else:
            (p,) = [x for x in d.day_plans if x.route == plan_route]
        counted = sum(x.value for x in ctl.store.counters("spend", int(start.timestamp()), int(now.timestamp()) + 60))
        explained = TestClient(create_app(ctl)).get("/v1/decision", params={"explain": 1}).json()
        return d, p, counted, generate_latest(ctl.registry).decode(), explained
    finally:
        ctl.close()


def _sample(text: str, name: str, **labels: str) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def test_the_controller_plans_the_day_from_the_spend_the_router_counted(tmp_path: Path) -> None:
    """The day plan's spend so far is the router's own spend counter since local midnight (in
    the store), the hours left run to local midnight, the route's escalation is the plan's
    cut, and /metrics says the same."""
    d, p, counted, text, explained = _morning(tmp_path, daily_budget=4000.0)
    assert counted > 0 and p.spent == pytest.approx(counted)
    assert p.code in (ReasonCode.DayPlanned, ReasonCode.QualityFloor)
    assert p.hours[0].at == datetime(2026, 11, 16, 9, 0, tzinfo=NY) and len(p.hours) == 15  # 09:30 to midnight
    # The plan's cut, or the one in force while the re-plan moves less than the dead band.
    published = d.recommended_thresholds["thresholds/chat/escalation_fraction"]
    codes = {r.code for r in d.reasons_for("thresholds/chat")}
    assert published == pytest.approx(p.fraction, abs=1e-6) or (
        abs(published - p.fraction) < 0.01 and ReasonCode.DesiredWithinDeadBand in codes), d.reasons_for("thresholds/chat")
    assert p.code in codes
    assert _sample(text, "diurnal_budget_allowance_usd", route="chat") == pytest.approx(4000.0)
    assert _sample(text, "diurnal_budget_spent_usd", route="chat") == pytest.approx(counted)
    assert _sample(text, "diurnal_budget_predicted_usd", route="chat") == pytest.approx(p.spent + p.planned)
    assert _sample(text, "diurnal_budget_planned_escalation_ratio", route="chat") == pytest.approx(p.fraction)
    assert _sample(text, "diurnal_budget_plan", route="chat", code=str(p.code), budget="daily") == 1.0
    (api,) = explained["day_plans"]  # the API's explain carries the same plan, hour by hour
    assert api["route"] == "chat" and api["code"] == str(p.code) and api["spent_usd"] == pytest.approx(p.spent, abs=1e-4)
    assert [h["escalation"] for h in api["hours"]] == pytest.approx([h.fraction for h in p.hours], abs=1e-4)
    assert api["hours"][0]["at"] == p.hours[0].at.isoformat()


def test_a_protected_route_the_budget_cannot_hold_is_said_on_metrics_not_cut(tmp_path: Path) -> None:
    """A protected route with a budget a tenth of what its morning spent: kept at its baseline,
    and /metrics carries the reason code the alert fires on, with the predicted shortfall."""
    from dashboards.rules import alerting_rules

    d, p, counted, text, _ = _morning(tmp_path, daily_budget=1.0, protected=True)
    assert counted > 1.0 and p.code == ReasonCode.BudgetCannotHoldProtected
    from controller.entrypoints.demo import demo_settings
    from sim import WorldSpec

    baseline = demo_settings(tmp_path / "other", WorldSpec()).policy.routes["chat"].baseline_fraction
    assert p.fraction is not None and p.fraction == pytest.approx(baseline)
    assert d.recommended_thresholds["thresholds/chat/escalation_fraction"] == pytest.approx(baseline)
    assert _sample(text, "diurnal_budget_plan", route="chat", code="BudgetCannotHoldProtected", budget="daily") == 1.0
    short = _sample(text, "diurnal_budget_shortfall_usd", route="chat")
    assert short is not None and short == pytest.approx(p.shortfall) and short > counted - 1.0 - 1e-6
    (rule,) = [r for r in alerting_rules() if r["alert"] == "DiurnalBudgetCannotHoldProtected"]
    assert 'diurnal_budget_plan{code="BudgetCannotHoldProtected"}' in rule["expr"]


def test_explain_shows_the_day_plan_from_the_audit_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``diurnal explain --data-dir`` on the morning's audit log: the route's budget, what it
    spent, what the day is predicted to end at, the reason, and the escalation planned for
    each hour left to midnight."""
    from controller.entrypoints.cli import main

    d, p, counted, _, _ = _morning(tmp_path, daily_budget=4000.0)
    capsys.readouterr()
    assert main(["explain", "--data-dir", str(tmp_path / "data"), "--timezone", "America/New_York"]) == 0
    out = capsys.readouterr().out
    head = out[out.index("Day plans"):]
    assert f"chat: daily budget, $4,000.00 for today; spent ${p.spent:,.2f}" in head, head
    assert f"{p.code}: {p.message}" in head
    hours = [line for line in head.splitlines() if re.match(r"    \d\d:\d\d  escalate ", line)]
    assert len(hours) == 15 and hours[0].startswith("    09:00") and hours[-1].startswith("    23:00")
    last = f"{p.hours[-1].fraction:.0%}"
    assert f"escalate {last:>4}," in hours[-1]


# ---- a budget over all routes together: step down by tier ------------------------------------

def _tiered(**routes: dict[str, object]) -> tuple[Any, Any]:
    """A view and config of routes ``name -> overrides of ROUTE`` with no budget of their own,
    each 1,000 requests an hour for the 10 hours left (37.00 at the 30% baseline, 19.00 at the
    10% floor)."""
    from policies import PolicyConfig, View

    cfgs = tuple(replace(ROUTE, name=n, daily_budget=None, **kw) for n, kw in routes.items())  # type: ignore[arg-type]
    view = View(now=START, providers={}, tz="America/New_York",
                routes={n: RouteView(spent_today=0.0, hours_left=hours([1000.0] * 10)) for n in routes})
    config = PolicyConfig(providers={}, latency_slo_seconds=2.5, capacity_headroom=0.8, error_budget=0.02,
                          prewarm=(), routes=cfgs, weights_policy="planner", untrusted_headroom=0.5,
                          explore_above_seen=0.25)
    return view, config


def _shared(view: Any, config: Any, daily: float) -> tuple[dict[str, DayPlan], Any]:
    from policies.shared_budget import shared_step_down

    plans, (reason,) = shared_step_down(view, replace(config, shared_daily_budget=daily), {})
    whole = plans.pop("*")  # the shared budget's own day: every route's hours left, summed
    assert whole.code == reason.code and whole.allowance == daily and whole.binding == "daily"
    assert len(whole.hours) == 10 and whole.hours[0].requests == 1000.0 * len(view.routes)
    if reason.code != ReasonCode.BudgetCannotHoldProtected:
        assert whole.planned <= daily + 1e-6 and whole.shortfall == 0.0
    return plans, reason


def test_a_shared_budget_steps_down_the_low_tier_first_then_the_standard_one() -> None:
    view, config = _tiered(bulk={"tier": "low"}, chat={"tier": "standard"}, vip={"tier": "high"})
    plans, why = _shared(view, config, 100.0)  # 111.00 at the baselines: 11.00 from the low tier (room 18.00)
    assert why.code == ReasonCode.SharedBudgetStepDown and set(plans) == {"bulk"}
    keep = 1 - 11 / 18
    assert plans["bulk"].fraction == pytest.approx(0.1 + keep * 0.2)
    assert plans["bulk"].planned == pytest.approx(37.0 - 11.0) and plans["bulk"].code == ReasonCode.SharedBudgetStepDown
    plans, why = _shared(view, config, 80.0)  # 31.00 over: the low tier to its floor, 13.00 from the standard
    assert plans["bulk"].fraction == pytest.approx(0.1)
    assert plans["chat"].fraction == pytest.approx(0.1 + (1 - 13 / 18) * 0.2)
    assert "vip" not in plans and sum(p.planned for p in plans.values()) + 37.0 == pytest.approx(80.0)
    plans, why = _shared(view, config, 50.0)  # both tiers at their floors leave 75.00: the high one kept
    assert why.code == ReasonCode.BudgetCannotHoldProtected and "25.00 over" in why.message
    from policies.shared_budget import shared_step_down

    whole = shared_step_down(view, replace(config, shared_daily_budget=50.0), {})[0]["*"]
    assert whole.shortfall == pytest.approx(25.0) and whole.spent + whole.planned == pytest.approx(75.0)
    assert {n: p.fraction for n, p in plans.items()} == {"bulk": pytest.approx(0.1), "chat": pytest.approx(0.1)}
    plans, why = _shared(view, config, 200.0)
    assert why.code == ReasonCode.SharedBudgetHolds and plans == {}


def test_a_shared_budget_never_cuts_a_protected_route_and_cuts_each_tier_in_proportion() -> None:
    view, config = _tiered(a={"tier": "low", "baseline_fraction": 0.5}, b={"tier": "low"},
                           c={"tier": "standard", "protected": True})
    # At the baselines: a 55.00 (room 36.00), b 37.00 (room 18.00), c 37.00: 129.00.
    plans, why = _shared(view, config, 129.0)
    assert why.code == ReasonCode.SharedBudgetHolds
    plans, why = _shared(view, config, 109.0)  # 20.00 over
    keep = 1 - 20 / 54  # the same share of each one's escalation above its floor
    assert plans["a"].fraction == pytest.approx(0.1 + keep * 0.4)
    assert plans["b"].fraction == pytest.approx(0.1 + keep * 0.2)
    assert "c" not in plans
    plans, why = _shared(view, config, 40.0)
    assert why.code == ReasonCode.BudgetCannotHoldProtected and "c" not in plans


def test_a_shared_budget_sets_the_routes_thresholds_through_decide() -> None:
    from policies import decide

    view, config = _tiered(bulk={"tier": "low"}, vip={"tier": "high"})
    d = decide(view, None, replace(config, shared_daily_budget=60.0), START)  # 74.00 at the baselines: 14.00 over
    assert d.thresholds["thresholds/bulk/escalation_fraction"] == pytest.approx(0.1 + (1 - 14 / 18) * 0.2, abs=1e-6)
    assert d.thresholds["thresholds/vip/escalation_fraction"] == pytest.approx(0.3)
    assert {r.code for r in d.reasons_for("budget/shared")} == {ReasonCode.SharedBudgetStepDown}
    assert {r.code for r in d.reasons_for("thresholds/bulk")} == {ReasonCode.SharedBudgetStepDown}


def test_the_controller_plans_a_shared_budget_over_routes_without_their_own(tmp_path: Path) -> None:
    """The demo's chat route (standard tier) without a budget of its own, under a shared daily
    budget it cannot meet at its baseline: its day plan is the shared budget's step-down, read
    from the store's spend like any day plan."""
    d, p, counted, metrics, explained = _morning(tmp_path, shared_budget={"daily": 20.0}, plan_route="chat")
    assert p.code == ReasonCode.SharedBudgetStepDown
    assert p.binding == "shared" and p.spent == pytest.approx(counted, rel=0.02)
    assert _sample(metrics, "diurnal_budget_planned_escalation_ratio", route="chat") is not None
    assert _sample(metrics, "diurnal_budget_allowance_usd", route="*") == 20.0  # the shared budget's own day
    # Spent far past 20.00 by 09:30, and no route protected: every route held at its floor, said so.
    assert _sample(metrics, "diurnal_budget_plan", route="*", code="QualityFloor", budget="daily") == 1.0
    assert (_sample(metrics, "diurnal_budget_shortfall_usd", route="*") or 0.0) > 0.0
    assert d.thresholds["thresholds/chat/escalation_fraction"] == pytest.approx(0.1)  # the demo route's floor
    assert {b["route"] for b in explained["day_plans"]} == {"*", "chat"}


def test_a_shared_budget_needs_an_amount() -> None:
    from controller.errors import ConfigError
    from controller.settings import load_settings

    with pytest.raises(ConfigError, match="shared_budget"):
        load_settings(policy={"shared_budget": {}})
