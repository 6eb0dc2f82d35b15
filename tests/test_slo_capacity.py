"""SLO capacity by hour of week, learned from (load, p95, error share) hours: it recovers a
known knee per slot, falls back and says so where data is thin, and keeps a breach's evidence
after traffic moved away (the feedback case)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from controller import Controller
from controller.entrypoints.demo import demo_settings
from controller.forecast.slo_capacity import Evidence, learn_capacity, threshold_capacity
from sim import STATIC_WEIGHTS, SimulatedRouter, WorldSpec
from tests.conftest import warm_up

TZ = "America/New_York"
SLO = 5.0


def knee_of(slot: int) -> float:
    """A busy shared cloud: capacity halves on weekdays 09:00-11:00 local."""
    day, hour = divmod(slot, 24)
    return 500.0 if day < 5 and 9 <= hour < 11 else 1000.0


def p95_at(load: np.ndarray, knee: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Latency follows utilisation (a queue): the SLO is reached exactly at the knee."""
    rho = np.minimum(load / knee, 1.6)
    base = 2.0 + 3.0 * rho ** 3  # 2 s idle, 5 s (the SLO) at the knee
    return base * rng.lognormal(0, 0.02, len(load))


def history(weeks: int, loads: np.ndarray | None = None, seed: int = 1) -> tuple[pd.Series, pd.Series]:
    rng = np.random.default_rng(seed)
    index = pd.date_range("2026-09-07", periods=weeks * 168, freq="h", tz=TZ).tz_convert("UTC")
    local = index.tz_convert(TZ)
    slot = np.asarray(local.day_of_week * 24 + local.hour)
    knee = np.array([knee_of(int(s)) for s in slot])
    load = rng.uniform(0.4, 1.6, len(index)) * knee if loads is None else loads
    return pd.Series(load, index=index), pd.Series(p95_at(load, knee, rng), index=index)


def test_it_recovers_a_known_knee_per_hour_of_week_within_ten_percent() -> None:
    load, p95 = history(weeks=8)
    prof = learn_capacity(load, p95, None, tz=TZ, slo_seconds=SLO, error_budget=0.05)
    errors = []
    for s in range(168):
        c = prof.at(s)
        # Eight weeks of one hour each: every slot stands on its own hours. Where all eight were
        # under the knee, it knows a lower bound, widened to the provider's overall capacity.
        assert c.evidence in (Evidence.measured, Evidence.lower_bound) and c.rpm is not None and c.radius == 0
        errors.append(abs(c.rpm / knee_of(s) - 1))
    assert max(errors) < 0.10, max(errors)
    assert prof.at(9).rpm == pytest.approx(500, rel=0.1)  # Monday 09:00: the busy window
    assert prof.at(7).rpm == pytest.approx(1000, rel=0.1)


def test_the_error_budget_counts_as_a_breach() -> None:
    load = np.array([100.0, 200, 300, 400, 500, 600])
    c = threshold_capacity(load, np.maximum(np.full(6, 0.5), np.array([0, 0, 0.5, 0.9, 1.5, 2.0])))
    assert c.evidence is Evidence.measured and 400 <= (c.rpm or 0) <= 500
    idx = pd.date_range("2026-11-09", periods=6, freq="h", tz="UTC")
    prof = learn_capacity(pd.Series(load, idx), pd.Series(1.0, idx), pd.Series([0, 0, 0, 0.01, 0.2, 0.3], idx),
                          tz="UTC", slo_seconds=SLO, error_budget=0.05, min_hours=1)
    assert prof.overall.evidence is Evidence.measured and 400 <= (prof.overall.rpm or 0) <= 500


def test_thin_data_pools_neighbours_then_falls_back_and_says_so() -> None:
    load, p95 = history(weeks=8)
    # Only Mondays 00:00-05:00 kept, and only a week of them at 05:00.
    local = load.index.tz_convert(TZ)
    keep = (local.day_of_week == 0) & (local.hour <= 5)
    keep &= ~((local.hour == 5) & (load.index < load.index[-168]))
    prof = learn_capacity(load[keep], p95[keep], None, tz=TZ, slo_seconds=SLO, error_budget=0.05)
    assert prof.at(0).radius == 0 and prof.at(0).evidence is Evidence.measured
    assert prof.at(5).radius == 1 and prof.at(5).hours >= 4  # one hour of its own: borrowed from 04:00
    far = prof.at(3 * 24 + 14)  # Thursday 14:00: nothing near it
    assert far.evidence is Evidence.measured and far.radius == -1 and far.rpm == prof.overall.rpm
    empty = learn_capacity(load[:0], p95[:0], None, tz=TZ, slo_seconds=SLO, error_budget=0.05)
    assert empty.at(9).evidence is Evidence.unknown and empty.at(9).rpm is None


def test_bounds_when_only_one_side_was_seen() -> None:
    assert threshold_capacity(np.array([100.0, 300, 200]), np.array([0.5, 0.9, 0.7])) == \
        threshold_capacity(np.array([300.0, 100, 200]), np.array([0.9, 0.5, 0.7]))
    low = threshold_capacity(np.array([100.0, 300, 200]), np.array([0.5, 0.9, 0.7]))
    assert low.evidence is Evidence.lower_bound and low.rpm == 300
    high = threshold_capacity(np.array([100.0, 300]), np.array([1.2, 2.0]))
    assert high.evidence is Evidence.upper_bound and high.rpm == pytest.approx(100 / 1.2)  # p95 20% over there
    nan = threshold_capacity(np.array([np.nan, 100.0]), np.array([0.4, np.inf]))
    assert nan.evidence is Evidence.unknown and nan.hours == 0


def test_after_traffic_moved_away_the_next_weeks_still_know_the_busy_window() -> None:
    """The feedback case: a provider whose capacity halves at 09:00-11:00 every weekday. Three
    weeks at the old static share breach there; from then on a plan keeps it at 60% of what
    was learned. Week after week the learned capacity stays put: it does not drift back up
    once the breaches are gone from the recent data (which would send the traffic back), and
    the busy window is never breached again."""
    rng = np.random.default_rng(3)
    first, _ = history(weeks=1)
    hours = pd.date_range(first.index[0], periods=16 * 168, freq="h")  # UTC; crosses the November change

    def week(w: int) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray, np.ndarray]:
        """Week ``w``'s hours, their local slots, the knee and the busy window (local time)."""
        index = hours[w * 168:(w + 1) * 168]
        local = index.tz_convert(TZ)
        slot = np.asarray(local.day_of_week * 24 + local.hour)
        busy = np.asarray((local.day_of_week < 5) & (local.hour >= 9) & (local.hour < 11))
        return index, slot, np.array([knee_of(int(s)) for s in slot]), busy

    loads, p95s = [], []
    for w in range(3):  # before: the static share, ~800 rpm, breaching in the busy window
        _, _, knee, busy = week(w)
        demand = 800.0 * (1 + 0.1 * rng.standard_normal(168))
        loads.append(demand)
        p95s.append(p95_at(demand, knee, rng))
        assert (p95s[-1][busy] > SLO).all()
    learned: list[float] = []
    prof = None
    for w in range(3, 15):  # past the 8 weeks of history: the breaching weeks age out
        seen = hours[max(0, w - 8) * 168:w * 168]
        prof = learn_capacity(pd.Series(np.concatenate(loads[-8:]), seen), pd.Series(np.concatenate(p95s[-8:]), seen),
                              None, tz=TZ, slo_seconds=SLO, error_budget=0.05, prior=prof)
        _, slot, knee, busy = week(w)
        cap = prof.rpm()[slot]
        learned.append(float(cap[busy].mean()))
        demand = 800.0 * (1 + 0.1 * rng.standard_normal(168))
        sent = np.minimum(demand, 0.6 * cap)  # the plan: stay well under the learned capacity
        loads.append(sent)
        p95s.append(p95_at(sent, knee, rng))
        assert (p95s[-1][busy] <= SLO).all(), f"week {w} breached the busy window"
    # Below the breaching load from the first week on, and never back above it.
    assert all(250 < c <= 800 for c in learned), learned
    # It refines once (the first week away brackets the knee), then holds: no drift back up,
    # no oscillation week over week.
    assert all(b <= a * 1.02 for a, b in zip(learned, learned[1:], strict=False)), str([round(c) for c in learned])
    assert max(learned[2:]) - min(learned[2:]) < 0.05 * max(learned[2:]), learned


def test_a_prior_moves_only_on_the_slots_own_proof() -> None:
    idx = pd.date_range("2026-11-09 09:00", periods=4, freq="7D", tz=TZ).tz_convert("UTC")  # Monday 09:00 x4
    prior = learn_capacity(pd.Series([300.0, 350, 700, 800], idx), pd.Series([3.0, 3.2, 6.0, 7.0], idx), None,
                           tz=TZ, slo_seconds=SLO, error_budget=0.05, min_hours=2)
    before = prior.at(9).rpm
    assert prior.at(9).evidence is Evidence.measured and before is not None and 350 < before < 700

    def learn(load: list[float], p95: list[float]) -> float | None:
        return learn_capacity(pd.Series(load, idx), pd.Series(p95, idx), None, tz=TZ, slo_seconds=SLO,
                              error_budget=0.05, prior=prior, min_hours=2).at(9).rpm

    assert learn([200.0, 250, 300, 350], [3.0, 3.0, 3.1, 3.2]) == before  # only quiet good hours: held
    assert learn([200.0, 250, 300, 900], [3.0, 3.0, 3.1, 4.9]) == 900  # good at 900: it can take more
    assert (learn([200.0, 250, 300, 400], [3.0, 3.0, 3.1, 5.5]) or 0) < 400  # breached at 400: less


def test_the_controller_learns_each_providers_capacity_and_exports_it(tmp_path: Path) -> None:
    """Two weeks of the simulated router at static weights: openai's shared cloud is busy on
    Mondays 08:00-11:00, so it breaches there at the load it gets (and nowhere else). The
    controller learns a lower capacity for that window than for the hours around it, and
    /metrics shows the current hour's and the week's."""
    spec = WorldSpec()
    monday = datetime(2026, 11, 16, tzinfo=ZoneInfo(spec.tz))
    start = monday - timedelta(weeks=2)
    ctl = Controller.from_settings(demo_settings(tmp_path, spec))
    try:
        warm_up(ctl, SimulatedRouter(spec, seed=4, start=start, weights=STATIC_WEIGHTS), start,
                monday + timedelta(hours=9))
        ctl.step(at=monday + timedelta(hours=9, minutes=30))  # refits: learns the capacity too
        openai = ctl.capacity()["openai"]
        busy, before = openai.at(9), openai.at(6)  # Monday 09:00 and 06:00
        # Its busy hours breach whatever it is sent: only an upper bound, no load it is safe at.
        assert busy.evidence is Evidence.upper_bound and busy.rpm is not None and busy.radius == 1
        assert before.evidence is Evidence.lower_bound and before.rpm is not None
        # Over all its hours, though, the surge and the busy window coincide: "over ~500 rpm it
        # breaches" explains its history, and that is the overall capacity.
        assert openai.overall.evidence is Evidence.measured and openai.overall.rpm is not None
        assert busy.rpm <= openai.overall.rpm
        assert ctl.capacity()["anthropic"].at(9).evidence is Evidence.lower_bound  # never breached
        assert set(ctl.capacity()) == {p.name for p in spec.providers}
        gauge = ctl.registry.get_sample_value
        assert gauge("diurnal_provider_slo_capacity_rpm", {"provider": "openai", "evidence": str(busy.evidence)}) \
            == pytest.approx(busy.rpm)
        assert gauge("diurnal_provider_slo_capacity_hour_of_week",
                     {"provider": "openai", "weekday": "1-Mon", "hour": "06"}) == pytest.approx(before.rpm)
    finally:
        ctl.close()
