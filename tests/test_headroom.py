"""The planner's headroom learned from realised breaches (``controller.headroom``), the
planner honouring a per-provider headroom, and the learned state kept across a restart."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from controller.headroom import HeadroomLearner
from controller.loop import Controller
from controller.settings import load_settings
from policies.planner import Offer, split_demand

NY = ZoneInfo("America/New_York")
MONDAY_9 = datetime(2026, 11, 16, 9, 0, tzinfo=NY)


def learner() -> HeadroomLearner:
    return HeadroomLearner(ceiling=0.9, floor=0.5, recovery_per_hour=0.05, tz="America/New_York")


def feed(h: HeadroomLearner, start: datetime, minutes: int, *, badness: float, load: float,
         capacity: float = 1000.0, name: str = "a") -> datetime:
    at = start
    for _ in range(minutes):
        at += timedelta(minutes=1)
        h.observe(name, at, badness=badness, load_rpm=load, capacity_rpm=capacity, what="p95 over the SLO")
    return at


def test_running_hot_cuts_the_headroom_within_minutes_by_how_far_over_and_never_below_the_floor() -> None:
    mild, hot = learner(), learner()
    feed(mild, MONDAY_9, 10, badness=1.05, load=850)
    feed(hot, MONDAY_9, 10, badness=1.5, load=850)
    assert mild.current("a") < 0.9 and hot.current("a") < mild.current("a")
    assert hot.current("a") == pytest.approx(0.9 * 1.5 ** (-0.1 * 10), rel=0.02)
    feed(hot, MONDAY_9 + timedelta(minutes=10), 600, badness=3.0, load=850)
    assert hot.current("a") == 0.5  # the floor
    # The plan says why, and from when.
    got = hot.at("a", MONDAY_9 + timedelta(minutes=20), MONDAY_9 + timedelta(minutes=20))
    assert got is not None and got.value == 0.5 and "min over the SLO" in got.note and "Mon 09:" in got.note


def test_a_breach_at_a_load_far_under_the_plan_or_a_quiet_provider_teaches_nothing() -> None:
    h = learner()
    feed(h, MONDAY_9, 30, badness=2.0, load=100)  # 100 rpm against 900 planned: not the load
    feed(h, MONDAY_9 + timedelta(hours=1), 30, badness=2.0, load=0.0)
    assert h.current("a") == 0.9 and h.at("a", MONDAY_9, MONDAY_9) is None


def test_the_headroom_is_won_back_slowly_and_only_while_loaded_near_the_plan() -> None:
    h = learner()
    end = feed(h, MONDAY_9, 20, badness=1.5, load=850)
    cut = h.current("a")
    # An hour comfortably inside but lightly loaded: nothing is learned about the plan's edge.
    end = feed(h, end, 60, badness=0.5, load=200)
    assert h.current("a") == cut
    # An hour comfortably inside at the load it is planned at: 0.05 of capacity back.
    end = feed(h, end, 60, badness=0.5, load=cut * 1000)
    assert h.current("a") == pytest.approx(cut + 0.05, abs=1e-6)
    # Near the SLO (badness over 0.85) holds it where it is.
    held = h.current("a")
    feed(h, end, 30, badness=0.95, load=held * 1000)
    assert h.current("a") == held


def test_an_hour_of_the_week_that_ran_hot_is_planned_cooler_the_next_week_and_relaxes() -> None:
    h = learner()
    end = feed(h, MONDAY_9, 30, badness=1.6, load=850)
    low = h.current("a")
    # Recovered in full by the evening (loaded near the plan, comfortably inside).
    at = end
    while h.current("a") < 0.9:
        at += timedelta(minutes=1)
        h.observe("a", at, badness=0.5, load_rpm=h.current("a") * 1000, capacity_rpm=1000)
    assert h.current("a") == 0.9
    week = timedelta(weeks=1)
    now = MONDAY_9 + week - timedelta(hours=1)
    nine = h.at("a", MONDAY_9 + week + timedelta(minutes=10), now)
    assert nine is not None and "this hour of the week" in nine.note
    assert nine.value == pytest.approx(0.9 - (0.9 - low) * 0.5, abs=0.02)  # half the cut, a week on
    assert h.at("a", MONDAY_9 + week + timedelta(hours=5), now) is None  # other hours: the ceiling
    later = h.at("a", MONDAY_9 + 3 * week + timedelta(minutes=10), MONDAY_9 + 3 * week)
    assert later is not None and later.value > nine.value


def test_the_state_round_trips_and_garbage_is_ignored() -> None:
    h = learner()
    feed(h, MONDAY_9, 20, badness=1.5, load=850)
    again = learner()
    again.loads(h.dumps())
    assert again.current("a") == h.current("a")
    assert again.at("a", MONDAY_9 + timedelta(weeks=1), MONDAY_9 + timedelta(weeks=1)) is not None
    for bad in ("{not json", '{"providers": {"a": [1]}}', "[]"):
        fresh = learner()
        fresh.loads(bad)
        assert fresh.current("a") == 0.9
    tighter = HeadroomLearner(ceiling=0.6, floor=0.55, recovery_per_hour=0.05, tz="America/New_York")
    tighter.loads(h.dumps())  # clipped to the bounds configured now
    assert 0.55 <= tighter.current("a") <= 0.6


def test_the_planner_holds_a_provider_within_its_own_headroom_and_says_so() -> None:
    offers = [Offer(name="cheap", min_weight=0.0, max_weight=1.0, capacity_rpm=1000.0, price_per_request=0.001,
                    margin=0.6, capacity_note="planned with 60% headroom (of 90%), learned from 12 min over the SLO"),
              Offer(name="dear", min_weight=0.0, max_weight=1.0, capacity_rpm=2000.0, price_per_request=0.01)]
    split = split_demand(1500.0, offers, 0.9)
    assert split.load_rpm["cheap"] == pytest.approx(600.0)  # 60% of 1,000, not 90%
    assert split.load_rpm["dear"] == pytest.approx(900.0)
    code, words = split.reasons["cheap"]
    assert code == "CapacityForecastLimited" and "held at 60%" in words and "learned from 12 min" in words
    # A learned headroom above the plan's margin does not loosen it.
    loose = [Offer(name="x", min_weight=0.0, max_weight=1.0, capacity_rpm=1000.0, price_per_request=0.001, margin=1.0),
             Offer(name="y", min_weight=0.0, max_weight=1.0, capacity_rpm=5000.0, price_per_request=0.01)]
    assert split_demand(2000.0, loose, 0.9).load_rpm["x"] == pytest.approx(900.0)


def test_the_learned_headroom_is_kept_in_the_store_across_a_restart(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, timezone="America/New_York",
                             policy={"providers": {"a": {"baseline_weight": 0.5}, "b": {"baseline_weight": 0.5}}})
    ctl = Controller.from_settings(settings)
    feed(ctl.decide.outlook.headroom, MONDAY_9, 20, badness=1.5, load=850)
    learned = ctl.decide.outlook.headroom.current("a")
    assert learned < 0.9
    ctl.close()
    again = Controller.from_settings(settings)
    try:
        assert again.decide.outlook.headroom.current("a") == pytest.approx(learned)
    finally:
        again.close()


def test_explain_shows_the_headroom_each_step_was_planned_with() -> None:
    from controller.entrypoints.explain import render

    body = {"at": "2026-11-16T14:00:00+00:00", "mode": "act", "weights": {"a": 0.4, "b": 0.6},
            "reasons": [{"knob": "weights/a", "code": "CapacityForecastLimited",
                         "message": "360 rpm, held at 60% of its 600 rpm SLO capacity (planned with 60% headroom "
                                    "(of 90%), learned from 14 min over the SLO at loads planned as safe)"}],
            "plan": [{"at": "2026-11-16T14:00:00+00:00", "demand_rpm": 900.0, "pool_units": None,
                      "cost_per_hour": 10.0, "baseline_cost_per_hour": 12.0,
                      "providers": {"a": {"load_rpm": 360.0, "capacity_rpm": 600.0, "headroom": 0.6},
                                    "b": {"load_rpm": 540.0, "capacity_rpm": 2000.0, "headroom": 0.9}}}]}
    out = render(body, "America/New_York")
    assert "a 360/600 @60%" in out and "b 540/2000 @90%" in out
    assert "learned from 14 min over the SLO" in out
