"""The planner's inputs, as the decide stage builds them (``controller.outlook``): the demand
(net of retries), the hard limits (an RPM limit, a TPM limit at the tokens per request seen),
a breach remembered for the stabilization window, prices with their windows in local time,
and the units of a pool that can be counted on."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from collectors.mapping import SeriesKey
from collectors.store import CounterPoint
from controller.collect import Observations
from controller.decide import policy_config
from controller.fit import Learned
from controller.outlook import OutlookBuilder
from controller.settings import Settings, load_settings
from policies import Decision, PrewarmAction, ProviderView

NY = ZoneInfo("America/New_York")
NOW = datetime(2026, 11, 16, 23, 30, tzinfo=NY)  # Monday 23:30, inside a night price window


def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path, timezone="America/New_York", guardrails={"stabilization_seconds": 600},
                         policy={"providers": {
                             "a": {"baseline_weight": 0.5, "capacity_tpm": 300_000, "price": {
                                 "input_per_million_tokens": 2.0, "output_per_million_tokens": 8.0,
                                 "windows": [{"days": ["mon"], "start": "22:00", "end": "23:59", "factor": 0.5}]}},
                             "b": {"baseline_weight": 0.5, "capacity_rpm": 900}},
                             "prewarm": [{"name": "gpu", "kind": "replicas", "target": "llm/b", "provider": "b",
                                          "rpm_per_unit": 100, "min_units": 2, "max_units": 20, "lead_minutes": 10,
                                          "unit_price_per_hour": 3.0}]})


def observations(minutes: int = 5) -> Observations:
    """Five minutes: a takes 600 requests a minute (1,000 input and 200 output tokens each),
    b 300, and 60 of them are retries."""
    t0 = int((NOW - timedelta(minutes=minutes)).timestamp()) // 60 * 60
    rows = []
    for m in range(minutes):
        ts = t0 + 60 * m
        for provider, requests in (("a", 600.0), ("b", 300.0)):
            rows.append(CounterPoint(ts, SeriesKey("requests", provider), requests))
            rows.append(CounterPoint(ts, SeriesKey("input_tokens", provider), requests * 1000))
            rows.append(CounterPoint(ts, SeriesKey("output_tokens", provider), requests * 200))
        rows.append(CounterPoint(ts, SeriesKey("retries", "b"), 60.0))
    return Observations(NOW, rows, [])


NOTHING = Learned({}, {}, {}, {})


def test_without_a_trusted_forecast_it_plans_on_the_demand_observed_net_of_retries(tmp_path: Path) -> None:
    s = settings(tmp_path)
    cfg = policy_config(s.policy, ["a", "b"], {})
    views = {"a": ProviderView("a", observed_rpm=600, tokens_per_request=1200), "b": ProviderView("b", observed_rpm=300)}
    out = OutlookBuilder(s).build(NOW, observations(), NOTHING, cfg, views)
    assert out is not None and not out.trusted
    (step,) = out.steps
    assert step.demand_rpm == pytest.approx(840)  # 900 attempts a minute, 60 of them retries
    # Hard limits: b's RPM limit; a's 300,000 tokens a minute at 1,200 tokens a request.
    assert step.capacity["a"].limit_rpm == pytest.approx(250) and step.capacity["b"].limit_rpm == 900
    assert step.capacity["a"].evidence == "unknown"
    # Prices at the tokens per request seen, in the Monday-night window at half price.
    assert step.price_factor == {"a": 0.5, "b": 1.0}
    assert step.price_per_request["a"] == pytest.approx(0.5 * (2.0 * 1000 + 8.0 * 200) / 1e6)
    assert step.price_per_request["b"] is None
    # The pool behind b: its price per unit-hour, the units the load observed needs.
    assert out.pool is not None and out.pool.unit_price_per_hour == 3.0
    assert out.pool.needed_now == 4 and out.pool.ready_units == 2  # 300 rpm at 100 x 0.9; nothing raised yet


def test_a_breach_is_remembered_for_the_stabilization_window_and_only_tightens(tmp_path: Path) -> None:
    s = settings(tmp_path)
    cfg = policy_config(s.policy, ["a", "b"], {})
    builder = OutlookBuilder(s)
    slow = {"a": ProviderView("a", observed_rpm=600, observed_p95_seconds=8.0), "b": ProviderView("b", observed_rpm=300)}
    out = builder.build(NOW, observations(), NOTHING, cfg, slow)
    assert out is not None
    cap = out.steps[0].capacity["a"]
    assert cap.breach_rpm == pytest.approx(600 * 4.0 / 8.0) and cap.breach is not None
    assert cap.breach[0] == "ObservedLatencyBreach" and "p95 8.00s" in cap.breach[1]
    # Five minutes later it is fine at the lower load: the cap holds until the window is over.
    fine = {"a": ProviderView("a", observed_rpm=280, observed_p95_seconds=2.0), "b": slow["b"]}
    later = builder.build(NOW + timedelta(minutes=5), observations(), NOTHING, cfg, fine)
    assert later is not None and later.steps[0].capacity["a"].breach_rpm == pytest.approx(300)
    gone = builder.build(NOW + timedelta(minutes=11), observations(), NOTHING, cfg, fine)
    assert gone is not None and gone.steps[0].capacity["a"].breach_rpm is None
    # Errors over the budget count too.
    failing = {"a": ProviderView("a", observed_rpm=600, observed_error_ratio=0.5), "b": slow["b"]}
    err = OutlookBuilder(s).build(NOW, observations(), NOTHING, cfg, failing)
    assert err is not None and err.steps[0].capacity["a"].breach is not None
    assert err.steps[0].capacity["a"].breach[0] == "ErrorBudgetBreach"
    assert err.steps[0].capacity["a"].breach_rpm == pytest.approx(300)  # at most halved per tick


def test_the_units_counted_on_are_the_fewest_in_force_over_the_warm_up_lead(tmp_path: Path) -> None:
    s = settings(tmp_path)
    cfg = policy_config(s.policy, ["a", "b"], {})
    builder = OutlookBuilder(s)
    views = {"a": ProviderView("a", observed_rpm=600), "b": ProviderView("b", observed_rpm=300)}

    def published(at: datetime, amount: int) -> None:
        builder.record(Decision(at=at, weights={"a": 0.5, "b": 0.5},
                                prewarm=(PrewarmAction("gpu", "llm/b", amount, at),)), cfg)

    published(NOW - timedelta(minutes=30), 6)
    published(NOW - timedelta(minutes=4), 12)  # raised 4 minutes ago: warming up for 6 more
    out = builder.build(NOW, observations(), NOTHING, cfg, views)
    assert out is not None and out.pool is not None and out.pool.ready_units == 6
    out = builder.build(NOW + timedelta(minutes=7), observations(), NOTHING, cfg, views)
    assert out is not None and out.pool is not None and out.pool.ready_units == 12
    published(NOW + timedelta(minutes=8), 3)  # released: counted on at once
    out = builder.build(NOW + timedelta(minutes=8), observations(), NOTHING, cfg, views)
    assert out is not None and out.pool is not None and out.pool.ready_units == 3


def test_no_observed_demand_and_no_forecast_means_nothing_to_plan(tmp_path: Path) -> None:
    s = settings(tmp_path)
    cfg = policy_config(s.policy, ["a", "b"], {})
    empty = Observations(NOW, [], [])
    assert OutlookBuilder(s).build(NOW, empty, NOTHING, cfg, {}) is None


def test_a_breach_at_a_load_it_served_well_at_this_hour_is_an_incident_not_load(tmp_path: Path) -> None:
    """Learned: a took 900 rpm within the SLO at this hour. Slow now at 600 rpm, less load will
    not cure it: it is planned at nothing (its minimum share) until the window is over. Slow
    at 1,200 rpm, over what it is known to take, the load is cut by how far over it is."""
    from controller.forecast.slo_capacity import CapacityProfile, Evidence, SlotCapacity

    s = settings(tmp_path)
    cfg = policy_config(s.policy, ["a", "b"], {})
    known = SlotCapacity(900.0, Evidence.measured, 12)
    learned = Learned({}, {}, {}, {"a": CapacityProfile(tuple([known] * 168), known)})
    b = ProviderView("b", observed_rpm=300)
    incident = OutlookBuilder(s).build(NOW, observations(), learned, cfg,
                                       {"a": ProviderView("a", observed_rpm=600, observed_p95_seconds=8.0), "b": b})
    assert incident is not None
    cap = incident.steps[0].capacity["a"]
    assert cap.breach_rpm == 0.0 and cap.breach is not None and "not load" in cap.breach[1]
    overload = OutlookBuilder(s).build(NOW, observations(), learned, cfg,
                                       {"a": ProviderView("a", observed_rpm=1200, observed_p95_seconds=6.0), "b": b})
    assert overload is not None and overload.steps[0].capacity["a"].breach_rpm == pytest.approx(1200 * 4.0 / 6.0)


def test_each_step_plans_on_its_highest_within_the_step_not_its_mean() -> None:
    """Hourly means of a morning ramp (300, 300, 900, 900, 300): the 07:00 hour ends half way
    to 08:00's mean, and the 10:00 hour starts half way down from 09:00's; a flat stretch
    keeps its value, and a peak is never lowered."""
    from controller.outlook import _within_step_peaks

    hours = [NOW + timedelta(hours=h) for h in range(5)]
    got = _within_step_peaks(list(zip(hours, [300.0, 300.0, 900.0, 900.0, 300.0], strict=True)))
    assert [at for at, _ in got] == hours
    assert [v for _, v in got] == [300.0, 600.0, 900.0, 900.0, 600.0]
