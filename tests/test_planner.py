"""The planner's split of one interval: cheapest first within SLO capacity, min/max held,
unpriced providers by latency only, and an infeasible load spread to even utilisation."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies import Ahead, Outlook, PolicyConfig, ReasonCode, SloCapacity, View, decide
from policies.planner import PRICE_TIE, Interval, Offer, Pool, plan, split_demand
from tests.configs import policy


def offer(name: str, price: float | None, cap: float | None, lo: float = 0.0, hi: float = 1.0) -> Offer:
    return Offer(name=name, min_weight=lo, max_weight=hi, capacity_rpm=cap, price_per_request=price)


def test_the_cheapest_provider_is_filled_first_within_its_capacity() -> None:
    s = split_demand(1000, [offer("dear", 0.02, 2000), offer("cheap", 0.005, 500), offer("mid", 0.01, 400)], 0.9)
    assert s.load_rpm["cheap"] == pytest.approx(450)  # 90% of 500
    assert s.load_rpm["mid"] == pytest.approx(360)
    assert s.load_rpm["dear"] == pytest.approx(190)
    assert s.reasons["cheap"][0] == ReasonCode.CapacityForecastLimited
    assert s.reasons["dear"][0] == ReasonCode.CheapestWithinSlo
    assert math.isclose(sum(s.weights.values()), 1.0)
    more = split_demand(1000, [offer("cheap", 0.005, 5000), offer("dearest", 0.05, 5000, lo=0.05)], 0.9)
    assert more.load_rpm["dearest"] == pytest.approx(50) and "its minimum share" in more.reasons["dearest"][1]


def test_min_and_max_weights_hold() -> None:
    s = split_demand(1000, [offer("cheap", 0.001, None, hi=0.6), offer("dear", 0.05, None, lo=0.1)], 0.9)
    assert s.weights == pytest.approx({"cheap": 0.6, "dear": 0.4})


def test_a_provider_without_a_price_is_planned_by_latency_after_the_priced_ones() -> None:
    s = split_demand(1000, [offer("unpriced", None, 5000), offer("priced", 0.01, 600)], 0.9)
    assert s.load_rpm["priced"] == pytest.approx(540) and s.load_rpm["unpriced"] == pytest.approx(460)
    assert s.reasons["unpriced"][0] == ReasonCode.PriceUnknown and "no price" in s.reasons["unpriced"][1]


def test_a_load_over_every_capacity_is_spread_to_even_utilisation() -> None:
    s = split_demand(3000, [offer("a", 0.01, 1000), offer("b", 0.02, 2000, hi=0.5)], 0.9)
    assert {c for c, _ in s.reasons.values()} == {ReasonCode.CapacityExhausted}
    # b is held at half the traffic (1500 rpm, 75% of its capacity): a takes the rest.
    assert s.load_rpm["b"] == pytest.approx(1500) and s.load_rpm["a"] == pytest.approx(1500)
    even = split_demand(3300, [offer("a", 0.01, 1000), offer("b", 0.02, 2000)], 0.9)
    assert even.load_rpm["a"] / 1000 == pytest.approx(even.load_rpm["b"] / 2000)  # 110% each
    assert "over the 90% of 3000 rpm SLO capacity" in even.reasons["a"][1]


def test_a_demand_the_max_weight_bounds_keep_off_the_capacity_says_so() -> None:
    """The capacity is there (2700 rpm at 90%) but b may take only half the traffic: the
    reason names the bounds, so the operator knows which setting to look at."""
    s = split_demand(2400, [offer("a", 0.01, 1000), offer("b", 0.02, 2000, hi=0.5)], 0.9)
    assert {c for c, _ in s.reasons.values()} == {ReasonCode.CapacityExhausted}
    assert s.load_rpm["b"] == pytest.approx(1200)
    assert "max_weight" in s.reasons["a"][1] and "2100 rpm" in s.reasons["a"][1]


offers = st.lists(
    st.builds(lambda p, c, lo, hi: (p, c, lo, lo + hi * (1 - lo)),
              st.one_of(st.none(), st.floats(0.0001, 0.1)), st.one_of(st.none(), st.floats(10, 5000)),
              st.floats(0, 0.2), st.floats(0.2, 1.0)),
    min_size=1, max_size=5)


@settings(max_examples=300, deadline=None)
@given(offers, st.floats(0, 20000), st.floats(0.5, 1.0))
def test_weights_sum_to_one_within_bounds_and_cheaper_first(raw: list[tuple[float | None, float | None, float, float]],
                                                            demand: float, margin: float) -> None:
    lows = [lo for _, _, lo, _ in raw]
    if sum(lows) > 1:  # as the settings refuse: min weights summing to more than 1
        scale = 1 / sum(lows)
        raw = [(p, c, lo * scale, max(hi, lo * scale)) for p, c, lo, hi in raw]
    if sum(hi for *_, hi in raw) < 1:  # as the settings refuse: no split can reach 1
        raw = [(p, c, lo, 1.0) for p, c, lo, _ in raw]
    os = [offer(f"p{i}", p, c, lo, hi) for i, (p, c, lo, hi) in enumerate(raw)]
    s = split_demand(demand, os, margin)
    assert math.isclose(sum(s.weights.values()), 1.0, abs_tol=1e-9)
    for o in os:
        assert o.min_weight - 1e-9 <= s.weights[o.name] <= o.max_weight + 1e-9
    exhausted = any(code == ReasonCode.CapacityExhausted for code, _ in s.reasons.values())
    if not exhausted and demand > 1:
        for o in os:
            if o.capacity_rpm is not None:
                assert s.load_rpm[o.name] <= max(margin * o.capacity_rpm, o.min_weight * demand) + 1e-6
        # No cheaper priced provider has room left while a dearer one carries more than its floor
        # (prices within PRICE_TIE of each other are one tier, shared by baseline).
        priced = sorted((o for o in os if o.price_per_request is not None), key=lambda o: o.price_per_request or 0)
        for cheap, dear in zip(priced, priced[1:], strict=False):
            room = min(cheap.max_weight * demand, margin * cheap.capacity_rpm if cheap.capacity_rpm else math.inf)
            if (cheap.price_per_request or 0) * (1 + PRICE_TIE) < (dear.price_per_request or 0) \
                    and s.load_rpm[dear.name] > dear.min_weight * demand + 1e-6:
                assert s.load_rpm[cheap.name] >= room - 1e-6


def test_a_price_window_applies_in_local_time_on_both_sides_of_dst() -> None:
    """Weeknights 22:00-06:00 New York at 60%: the same local hours before and after the
    November change, though their UTC offsets differ."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from tests.configs import policy

    ny = ZoneInfo("America/New_York")
    cfg = policy({"a": {"baseline_weight": 1.0, "price": {
        "input_per_million_tokens": 2.0, "output_per_million_tokens": 8.0, "per_request": 0.001,
        "windows": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "22:00", "end": "06:00", "factor": 0.6}]}}})
    price = cfg.providers["a"].price
    assert price is not None
    full = 0.001 + 2.0 * 1000 / 1e6 + 8.0 * 250 / 1e6  # 1,000 input and 250 output tokens
    for day in (datetime(2026, 10, 26, tzinfo=ny), datetime(2026, 11, 2, tzinfo=ny)):  # EDT, then EST
        mon_23 = day.replace(hour=23)
        assert price.per_request_at(1000, 250, mon_23, "America/New_York") == pytest.approx(0.6 * full)
        assert price.per_request_at(1000, 250, day.replace(hour=12), "America/New_York") == pytest.approx(full)
        tue_5 = day.replace(day=day.day + 1, hour=5, minute=59)  # past midnight, still inside
        assert price.factor_at(tue_5, "America/New_York") == pytest.approx(0.6)
    sat_5 = datetime(2026, 11, 7, 5, tzinfo=ny)  # Friday night's window ends 06:00 Saturday
    assert price.factor_at(sat_5, "America/New_York") == pytest.approx(0.6)
    assert price.factor_at(datetime(2026, 11, 8, 5, tzinfo=ny), "America/New_York") == 1.0  # Sunday 05:00


def test_providers_without_a_price_have_none_in_the_policy_config() -> None:
    from tests.configs import policy

    cfg = policy({"a": {"baseline_weight": 0.5, "price": {"per_request": 0.01}}, "b": 0.5})
    assert cfg.providers["b"].price is None
    assert cfg.providers["a"].price is not None and cfg.providers["a"].price.windows == ()


def _monday(hour: float) -> datetime:
    return datetime(2026, 11, 16, tzinfo=ZoneInfo("America/New_York")) + timedelta(hours=hour)


def _day(api_price: float, pool: Pool, surge: float = 1500.0) -> list[Interval]:
    """Every 15 minutes from 07:00: 400 rpm, and ``surge`` rpm from 09:00 to 11:00."""
    out = []
    for k in range(6 * 4):
        at = _monday(7 + k / 4)
        demand = surge if _monday(9) <= at < _monday(11) else 400.0
        out.append(Interval(at=at, demand_rpm=demand, offers=(
            offer("api", api_price, 5000), offer(pool.provider, None, None))))
    return out


POOL = Pool(action="pool", provider="self", rpm_per_unit=100, unit_price_per_hour=2.0, min_units=2, max_units=20,
            lead=timedelta(minutes=20), release_after=timedelta(minutes=30), ready_units=4, needed_now=2)


def test_a_warm_pool_that_is_cheaper_per_request_takes_the_load_planned_at_peak_minus_lead() -> None:
    # 2 USD per unit-hour at 100 rpm x 90%: $0.00037 a request, against $0.002 on the API.
    p = plan(_day(0.002, POOL), 0.9, _monday(7), POOL)
    surge = [i for i, iv in enumerate(_day(0.002, POOL)) if iv.at == _monday(9)][0]
    assert p.units[surge] == 17  # 1500 rpm / (100 x 0.9)
    assert p.splits[surge].weights["self"] == pytest.approx(1.0)
    assert p.splits[0].reasons["self"][0] in (ReasonCode.CheapestWithinSlo, ReasonCode.CapacityForecastLimited)
    raise_ = [s for s in p.steps if s.units == 17]
    assert raise_ and raise_[0].at == _monday(9) - POOL.lead and raise_[0].peak_at == _monday(9)
    # Held until the surge ends plus release_after, then back down.
    assert p.units[[i for i, iv in enumerate(_day(0.002, POOL)) if iv.at == _monday(11) + timedelta(minutes=15)][0]] == 17
    assert p.units[-1] == 5  # 400 rpm after the hold
    release = [s for s in p.steps if s.units == 5 and s.at > _monday(11)]
    assert release and release[0].at == _monday(11.5)


def test_within_the_warm_up_lead_only_the_ready_units_are_offered() -> None:
    late = replace(POOL, lead=timedelta(hours=3))  # nothing new warm before 10:00
    p = plan(_day(0.002, late), 0.9, _monday(7), late)
    at_9 = [i for i, iv in enumerate(_day(0.002, late)) if iv.at == _monday(9)][0]
    assert p.splits[at_9].load_rpm["self"] == pytest.approx(4 * 100 * 0.9)  # the 4 ready units
    assert p.splits[at_9].load_rpm["api"] == pytest.approx(1500 - 360)
    assert p.units[at_9] == 4


def test_a_pool_dearer_than_the_api_keeps_its_floor_and_never_goes_below_the_observed_need() -> None:
    dear = replace(POOL, unit_price_per_hour=50.0, needed_now=6)  # $0.0093 a request
    p = plan(_day(0.002, dear), 0.9, _monday(7), dear)
    assert all(s.weights["api"] == pytest.approx(1.0) for s in p.splits)  # min_weight 0: nothing to the pool
    assert p.units[0] == 6 and max(p.units[1:]) == 2  # the observed need now, then its min_units


# ---- the planner as the weights policy (policies.decide with an Outlook) ----------------------

NOW = _monday(7.25)


def cap(rpm: float | None, evidence: str = "measured", limit: float | None = None,
        breach: float | None = None) -> SloCapacity:
    why = (ReasonCode.ObservedLatencyBreach, "p95 9s over the SLO") if breach is not None else None
    return SloCapacity(rpm=rpm, evidence=evidence, note="learned", limit_rpm=limit, breach_rpm=breach, breach=why)


def step(at: datetime, demand: float, caps: dict[str, SloCapacity], prices: dict[str, float | None],
         factors: dict[str, float] | None = None) -> Ahead:
    return Ahead(at=at, demand_rpm=demand, capacity=caps, price_per_request=prices,
                 price_factor=factors or dict.fromkeys(caps, 1.0))


def view(steps: list[Ahead], *, trusted: bool = True, pool: Pool | None = None) -> View:
    return View(now=NOW, providers={}, outlook=Outlook(steps=tuple(steps), trusted=trusted, pool=pool),
                tz="America/New_York")


def config(**extra: object) -> PolicyConfig:
    return policy({"cheap": {"baseline_weight": 0.5, "min_weight": 0.05},
                   "dear": {"baseline_weight": 0.5, "min_weight": 0.05}}, **extra)


def test_the_weights_are_the_plans_split_now_and_the_plan_is_explained() -> None:
    s = step(_monday(7), 1000, {"cheap": cap(600), "dear": cap(2000)}, {"cheap": 0.001, "dear": 0.004})
    d = decide(view([s]), None, config(), NOW)
    assert d.weights == pytest.approx({"cheap": 0.54, "dear": 0.46})  # 90% of 600 rpm on the cheap one
    assert {r.code for r in d.reasons_for("weights/cheap")} == {ReasonCode.CapacityForecastLimited}
    (p,) = d.plan
    assert p.load_rpm == pytest.approx({"cheap": 540, "dear": 460}) and p.capacity_rpm == {"cheap": 600, "dear": 2000}
    assert p.cost_per_hour == pytest.approx((540 * 0.001 + 460 * 0.004) * 60)
    assert p.baseline_cost_per_hour == pytest.approx((500 * 0.001 + 500 * 0.004) * 60)
    assert p.cost_per_hour is not None and p.baseline_cost_per_hour is not None
    assert p.cost_per_hour < p.baseline_cost_per_hour


def test_a_provider_seen_breaching_is_planned_below_that_load_with_the_observed_code() -> None:
    s = step(_monday(7), 1000, {"cheap": cap(5000, breach=300), "dear": cap(5000)}, {"cheap": 0.001, "dear": 0.004})
    d = decide(view([s]), None, config(), NOW)
    assert d.plan[0].load_rpm["cheap"] == pytest.approx(270)
    (why,) = d.reasons_for("weights/cheap")
    assert why.code == ReasonCode.ObservedLatencyBreach and "p95 9s" in why.message


def test_a_provider_never_seen_to_breach_is_explored_a_bounded_step_and_at_least_its_baseline() -> None:
    explore = config(explore_above_seen=0.2)
    seen = step(_monday(7), 1000, {"cheap": cap(700, "lower_bound"), "dear": cap(5000)}, {"cheap": 0.001, "dear": 0.004})
    d = decide(view([seen]), None, explore, NOW)
    assert d.plan[0].load_rpm["cheap"] == pytest.approx(0.9 * 700 * 1.2)
    assert {r.code for r in d.reasons_for("weights/cheap")} == {ReasonCode.ExploringCapacity}
    thin = step(_monday(7), 1000, {"cheap": cap(50, "lower_bound"), "dear": cap(5000)}, {"cheap": 0.001, "dear": 0.004})
    assert decide(view([thin]), None, explore, NOW).plan[0].load_rpm["cheap"] == pytest.approx(500)  # its baseline
    # Nothing learned, no limit: at most its baseline share; a limit alone bounds it.
    unknown = step(_monday(7), 1000, {"cheap": cap(None, "unknown"), "dear": cap(5000)}, {"cheap": 0.001, "dear": 0.004})
    assert decide(view([unknown]), None, explore, NOW).weights["cheap"] == pytest.approx(0.5)
    limited = step(_monday(7), 1000, {"cheap": cap(None, "unknown", limit=800), "dear": cap(5000)},
                   {"cheap": 0.001, "dear": 0.004})
    assert decide(view([limited]), None, explore, NOW).plan[0].load_rpm["cheap"] == pytest.approx(720)


def test_demand_over_every_known_capacity_goes_first_where_no_breach_was_seen() -> None:
    s = step(_monday(7), 2000, {"cheap": cap(500), "dear": cap(800, "lower_bound", limit=3000)},
             {"cheap": 0.001, "dear": 0.004})
    d = decide(view([s]), None, config(), NOW)
    assert d.plan[0].load_rpm["cheap"] == pytest.approx(450)  # it breached past 500: kept under
    assert d.plan[0].load_rpm["dear"] == pytest.approx(1550)
    assert {r.code for r in d.reasons_for("weights/dear")} == {ReasonCode.ExploringCapacity}


def test_an_untrusted_demand_is_planned_with_the_wider_margin() -> None:
    s = step(_monday(7), 1000, {"cheap": cap(600), "dear": cap(5000)}, {"cheap": 0.001, "dear": 0.004})
    trusted = decide(view([s]), None, config(untrusted_headroom=0.6), NOW)
    untrusted = decide(view([s], trusted=False), None, config(untrusted_headroom=0.6), NOW)
    assert trusted.plan[0].load_rpm["cheap"] == pytest.approx(540)
    assert untrusted.plan[0].load_rpm["cheap"] == pytest.approx(360)


def test_a_price_window_that_makes_a_provider_the_cheapest_says_so() -> None:
    s = step(_monday(7), 1000, {"cheap": cap(5000), "dear": cap(5000)}, {"cheap": 0.001, "dear": 0.0008},
             factors={"cheap": 1.0, "dear": 0.2})
    d = decide(view([s]), None, config(), NOW)
    assert d.weights["dear"] == pytest.approx(0.95)
    assert {r.code for r in d.reasons_for("weights/dear")} == {ReasonCode.PriceWindow}


def test_equal_prices_share_by_baseline_instead_of_flipping() -> None:
    s = step(_monday(7), 1000, {"cheap": cap(5000), "dear": cap(5000)}, {"cheap": 0.00100, "dear": 0.00101})
    assert decide(view([s]), None, config(), NOW).weights == pytest.approx({"cheap": 0.5, "dear": 0.5})


def test_the_pool_is_planned_with_the_weights_and_its_prewarm_follows_the_plan() -> None:
    cfg = policy({"api": {"baseline_weight": 0.6}, "self": {"baseline_weight": 0.4}},
                 prewarm=[{"name": "gpu", "kind": "replicas", "target": "llm/self", "provider": "self",
                           "rpm_per_unit": 100, "min_units": 2, "max_units": 20, "lead_minutes": 20,
                           "release_after_minutes": 30}])
    pool = Pool(action="gpu", provider="self", rpm_per_unit=100, unit_price_per_hour=2.0, min_units=2, max_units=20,
                lead=timedelta(minutes=20), release_after=timedelta(minutes=30), ready_units=4, needed_now=2)
    steps = [step(_monday(7 + h), 1500 if h == 2 else 400, {"api": cap(5000), "self": cap(None, "unknown")},
                  {"api": 0.002, "self": None}) for h in range(4)]
    d = decide(view(steps, pool=pool), None, cfg, NOW)
    assert d.plan[0].load_rpm["self"] == pytest.approx(360)  # the 4 ready units now
    assert d.plan[2].load_rpm["self"] == pytest.approx(1500) and d.plan[2].pool_units == 17
    assert d.plan[2].cost_per_hour == pytest.approx(17 * 2.0)  # all of it on the pool
    (why,) = d.reasons_for("prewarm/gpu")
    assert why.code == ReasonCode.PoolPlanned and "plan sends it" in why.message
    ahead = [a for a in d.prewarm if a.action == "gpu" and a.at > NOW]
    assert ahead and ahead[0].amount == 17 and ahead[0].at == _monday(9) - timedelta(minutes=20)
