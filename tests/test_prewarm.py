"""The prewarm policy: plans at peak minus lead (local time, DST weeks too), holds until the
release, never below the reactive need, and reacts only without a trusted forecast."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from controller.settings import Settings
from policies import Decision, LoadCheck, LoadPoint, View, decide
from sim import WorldSpec
from tests.configs import policy

NY = ZoneInfo("America/New_York")
CONFIG = policy({"self": 1.0}, prewarm=[dict(name="gpu-pool", kind="replicas", target="llm/vllm", rpm_per_unit=100,
                                              min_units=2, max_units=20, lead_minutes=30, release_after_minutes=30)])
POOL = CONFIG.prewarm[0]


def monday_load(day: datetime, base: float = 300.0, peak: float = 1500.0) -> tuple[LoadPoint, ...]:
    """Hourly forecast for a local day: ``peak`` rpm (upper band) from 09:00 to 11:00 local."""
    out = []
    for h in range(24):
        at = datetime(day.year, day.month, day.day, h, tzinfo=NY)
        rpm = peak if 9 <= h < 11 else base
        out.append(LoadPoint(at, rpm * 0.9, rpm))
    return tuple(out)


def view(now: datetime, load: tuple[LoadPoint, ...] | None, observed: float = 300.0) -> View:
    return View(now=now, providers={}, observed_total_rpm=observed, data_age_seconds=5, tz="America/New_York",
                load_forecast={"*": load} if load is not None else {})


def step(now: datetime, load: tuple[LoadPoint, ...] | None, previous: Decision | None = None,
         observed: float = 300.0) -> tuple[Decision, str]:
    d = decide(view(now, load, observed), previous, CONFIG, now)
    [r] = d.reasons_for("prewarm/gpu-pool")
    return d, r.code


def now_amount(d: Decision) -> float:
    return next(p.amount for p in d.prewarm if p.at <= d.at)


@pytest.mark.parametrize(
    "day",
    [
        pytest.param(datetime(2026, 11, 16, tzinfo=NY), id="ordinary-monday"),
        pytest.param(datetime(2026, 3, 9, tzinfo=NY), id="monday-after-spring-forward"),
        pytest.param(datetime(2026, 11, 2, tzinfo=NY), id="monday-after-fall-back"),
    ],
)
def test_the_plan_fires_at_nine_minus_its_lead_local_time(day: datetime) -> None:
    load = monday_load(day)
    d, code = step(day.replace(hour=6), load)
    assert code == "PeakPlanned" and now_amount(d) == 3
    [plan] = [p for p in d.prewarm if p.at > d.at]
    assert plan.at.astimezone(NY).strftime("%H:%M") == "08:30" and plan.amount == 15
    assert plan.peak_at is not None and plan.peak_at.astimezone(NY).hour == 9
    assert plan.release_at is not None and plan.release_at.astimezone(NY).strftime("%H:%M") == "11:30"
    before, code_before = step(day.replace(hour=8, minute=29), load, d)
    assert now_amount(before) == 3 and code_before == "PeakPlanned"
    at, code_at = step(day.replace(hour=8, minute=30), load, before)
    assert now_amount(at) == 15 and code_at == "PredictedPeak"


def test_held_after_the_peak_until_the_release_then_released() -> None:
    day = datetime(2026, 11, 16, tzinfo=NY)
    load = monday_load(day)
    d, _ = step(day.replace(hour=10), load)
    assert now_amount(d) == 15
    d, code = step(day.replace(hour=11, minute=10), load, d)
    assert (now_amount(d), code) == (15, "HeldUntilRelease")
    d, code = step(day.replace(hour=11, minute=31), load, d)
    assert now_amount(d) == 3 and code in ("NoPeakAhead", "ReactiveNeed")


def test_never_below_the_reactive_need() -> None:
    day = datetime(2026, 11, 16, tzinfo=NY)
    d, code = step(day.replace(hour=6), monday_load(day), observed=1800.0)  # an unforecast surge now
    assert now_amount(d) == 18


def test_without_a_trusted_forecast_it_only_reacts() -> None:
    d, code = step(datetime(2026, 11, 16, 8, 45, tzinfo=NY), None, observed=420.0)
    assert code == "ForecastGated" and now_amount(d) == 5
    assert [p for p in d.prewarm if p.at > d.at] == []


def test_bounds_hold() -> None:
    day = datetime(2026, 11, 16, tzinfo=NY)
    d, _ = step(day.replace(hour=9), monday_load(day, peak=10_000))
    assert now_amount(d) == 20  # max_units
    d, _ = step(day.replace(hour=3), monday_load(day, base=0, peak=0), observed=0.0)
    assert now_amount(d) == 2  # min_units


def test_planned_steps_become_date_jobs_replaced_when_superseded() -> None:
    from apscheduler.schedulers.background import BackgroundScheduler

    from controller.entrypoints.service import schedule_prewarm

    class Ctl:
        decision: Decision | None = None

    day = datetime(2026, 11, 16, tzinfo=NY)
    ctl = Ctl()
    sched = BackgroundScheduler(timezone="UTC")
    sched.start(paused=True)  # as in the service, but nothing runs
    ctl.decision, _ = step(day.replace(hour=6), monday_load(day))
    schedule_prewarm(sched, ctl)  # type: ignore[arg-type]
    jobs = [j for j in sched.get_jobs() if j.id.startswith("prewarm:")]
    assert len(jobs) == 1 and jobs[0].trigger.run_date == day.replace(hour=8, minute=30)
    schedule_prewarm(sched, ctl)  # type: ignore[arg-type]  # the same plan: deduplicated
    assert len(sched.get_jobs()) == 1
    # A new forecast moves the same peak's start an hour earlier: the job is replaced.
    earlier = tuple(LoadPoint(p.at, p.mean_rpm, 1500.0 if 8 <= p.at.astimezone(NY).hour < 11 else p.upper_rpm)
                    for p in monday_load(day))
    ctl.decision, _ = step(day.replace(hour=6, minute=10), earlier)
    schedule_prewarm(sched, ctl)  # type: ignore[arg-type]
    [job] = sched.get_jobs()
    assert job.trigger.run_date == day.replace(hour=7, minute=30)
    # The peak is no longer forecast: its job goes.
    ctl.decision, _ = step(day.replace(hour=6, minute=20), monday_load(day, peak=300.0))
    schedule_prewarm(sched, ctl)  # type: ignore[arg-type]
    assert sched.get_jobs() == []
    sched.shutdown(wait=False)


DAY = datetime(2026, 11, 16, tzinfo=NY)


@pytest.mark.parametrize(
    ("now", "load", "observed", "previous_at", "code"),
    [
        pytest.param(DAY.replace(hour=8, minute=45), monday_load(DAY), 300.0, None, "PredictedPeak", id="PredictedPeak"),
        pytest.param(DAY.replace(hour=6), monday_load(DAY), 300.0, None, "PeakPlanned", id="PeakPlanned"),
        pytest.param(DAY.replace(hour=11, minute=10), monday_load(DAY), 300.0, DAY.replace(hour=10),
                     "HeldUntilRelease", id="HeldUntilRelease"),
        pytest.param(DAY.replace(hour=12), monday_load(DAY), 300.0, None, "NoPeakAhead", id="NoPeakAhead"),
        pytest.param(DAY.replace(hour=12), None, 300.0, None, "ForecastGated", id="ForecastGated"),
    ],
)
def test_prewarm_reason_codes(now: datetime, load: tuple[LoadPoint, ...] | None, observed: float,
                              previous_at: datetime | None, code: str) -> None:
    previous = step(previous_at, load, observed=observed)[0] if previous_at else None
    assert step(now, load, previous, observed)[1] == code


def test_a_providers_prewarm_serves_the_share_the_decision_gives_it() -> None:
    """Its own load history was made at the old shares: when traffic moves to it, the plan
    follows the total forecast at the new share."""
    from policies import ProviderView
    from policies.prewarm import decide_prewarm

    day = datetime(2026, 11, 16, tzinfo=NY)
    cfg = policy({"self": 0.3, "api": 0.7}, prewarm=[dict(name="gpu-pool", kind="replicas", target="llm/vllm",
                                                          rpm_per_unit=100, min_units=2, max_units=40, lead_minutes=30,
                                                          provider="self")])
    total = monday_load(day, base=1000, peak=2000)
    own = tuple(LoadPoint(p.at, p.mean_rpm * 0.3, p.upper_rpm * 0.3) for p in total)  # history at 30%
    now = datetime(2026, 11, 16, 8, 45, tzinfo=NY)
    v = View(now=now, providers={"self": ProviderView("self", observed_rpm=300.0)}, tz="America/New_York",
             load_forecast={"self": own, "*": total}, data_age_seconds=5)
    at_old, _ = decide_prewarm(v, None, cfg, now, {"self": 0.3, "api": 0.7})
    at_new, _ = decide_prewarm(v, None, cfg, now, {"self": 0.6, "api": 0.4})
    assert next(p.amount for p in at_old if p.at <= now) == 6  # 2000 x 0.3 / 100
    assert next(p.amount for p in at_new if p.at <= now) == 12  # 2000 x 0.6 / 100
    # Less share than its history: its own forecast still counts (a prewarm only tightens).
    at_less, _ = decide_prewarm(v, None, cfg, now, {"self": 0.1, "api": 0.9})
    assert next(p.amount for p in at_less if p.at <= now) == 6


def check(now: datetime, observed: float, lower: float, minutes: int = 60) -> LoadCheck:
    return LoadCheck(start=now - timedelta(minutes=minutes), end=now, minutes=minutes, observed_rpm=observed,
                     lower_rpm=lower)


def test_a_peak_that_does_not_come_is_not_held() -> None:
    """A holiday: over the last hour 300 rpm came where the forecast's lower band for those
    same minutes was 1000. The plan raised for the peak is dropped and the action only
    reacts (ForecastMissed)."""
    day = datetime(2026, 11, 16, tzinfo=NY)
    load = tuple(LoadPoint(p.at, p.mean_rpm, p.upper_rpm, p.mean_rpm * 0.9) for p in monday_load(day))
    before = datetime(2026, 11, 16, 8, 40, tzinfo=NY)
    planned, code = step(before, load, observed=300.0)
    assert code == "PredictedPeak" and now_amount(planned) == 15
    at_nine = datetime(2026, 11, 16, 9, 5, tzinfo=NY)
    v = replace(view(at_nine, load, 300.0), load_check=check(at_nine, 300.0, 1000.0))
    missed = decide(v, planned, CONFIG, at_nine)
    [r] = missed.reasons_for("prewarm/gpu-pool")
    assert r.code == "ForecastMissed" and now_amount(missed) == 3
    assert "over 60 minutes" in r.message and "lower band was 1000 rpm" in r.message
    assert not [p for p in missed.prewarm if p.at > at_nine]  # no plan steps either
    # Within reach of the band over the same minutes: the plan stands.
    v = replace(view(at_nine, load, 300.0), load_check=check(at_nine, 0.8 * 1000.0, 1000.0))
    kept = decide(v, planned, CONFIG, at_nine)
    assert kept.reasons_for("prewarm/gpu-pool")[0].code in ("PredictedPeak", "HeldUntilRelease")
    assert now_amount(kept) == 15


def test_the_slow_first_minutes_of_a_real_peak_keep_its_capacity() -> None:
    """The demo's bug: at 09:00 the last five minutes showed 300 rpm against the 09:00 hour's
    lower band of 1215, and the plan was dropped inside the surge. Only comparable minutes
    count now: without enough of them, or with the window within reach, nothing is released."""
    day = datetime(2026, 11, 16, tzinfo=NY)
    load = tuple(LoadPoint(p.at, p.mean_rpm, p.upper_rpm, p.mean_rpm * 0.9) for p in monday_load(day))
    planned, _ = step(datetime(2026, 11, 16, 8, 40, tzinfo=NY), load)
    previous = planned
    for minute in range(0, 20, 5):
        at = datetime(2026, 11, 16, 9, minute, tzinfo=NY)
        # The ramp: little now, but the last hour was what the forecast said for it.
        for load_check in (None, check(at, 290.0, 270.0)):
            d = decide(replace(view(at, load, 300.0), load_check=load_check), previous, CONFIG, at)
            assert d.reasons_for("prewarm/gpu-pool")[0].code != "ForecastMissed"
            assert now_amount(d) == 15
        previous = d


def test_the_load_check_compares_the_same_minutes_with_the_forecast_in_force_then(settings: Settings) -> None:
    """The controller's side: the last hour's minutes (those with data) against the lower
    band that the fit in force at each minute gave for it; too few minutes: no verdict."""
    import numpy as np

    from controller.collect import Observations
    from controller.decide import DecideStage
    from controller.fit import Learned, MadeForecast

    now = datetime(2026, 11, 16, 9, 0, tzinfo=NY)
    t = int(now.timestamp())
    hours = np.array([t - 2 * 3600, t - 3600, t, t + 3600])
    # Made at 07:00: says 08:00 will be 10 rps at least; made at 08:00: says 20 (the newer, in force).
    older = MadeForecast(t - 2 * 3600, hours, 3600, {"lower": np.array([1.0, 10.0, 30.0, 30.0])})
    newer = MadeForecast(t - 3600, hours, 3600, {"lower": np.array([np.nan, 20.0, 40.0, 40.0])})
    learned = Learned({}, {}, {}, {}, (older, newer))
    stage = DecideStage(settings)
    minute = [t - 3600 + 60 * i for i in range(60)]
    obs = Observations(now, [], [], recent_demand={m: 600.0 for m in minute})
    got = stage._load_check(now, obs, learned)
    assert got is not None and got.minutes == 60
    assert got.observed_rpm == 600.0 and got.lower_rpm == 20.0 * 60  # the 08:00 hour, from the newer fit
    # A router that was down for half of the hour: not enough comparable minutes to judge.
    sparse = Observations(now, [], [], recent_demand={m: 600.0 for m in minute[:30]})
    assert stage._load_check(now, sparse, learned) is None


def test_the_band_in_force_is_the_newest_fit_made_by_then_that_covers_the_minute() -> None:
    """Random fits (gaps, NaN bands, fits made after the minute): the lookup agrees with its
    definition, read plainly: the newest covering fit made at or before ``ts``, else the
    oldest covering one."""
    import numpy as np

    from controller.fit import Learned, MadeForecast

    rng = np.random.default_rng(7)
    for _ in range(200):
        made = []
        for k in sorted(rng.integers(0, 20, size=rng.integers(1, 6))):
            start = int(rng.integers(0, 10)) * 3600
            times = start + 3600 * np.arange(int(rng.integers(1, 6)))
            lower = rng.uniform(1, 50, len(times))
            lower[rng.random(len(times)) < 0.3] = np.nan
            made.append(MadeForecast(int(k) * 1800, times, 3600, {"lower": lower}))
        learned = Learned({}, {}, {}, {}, tuple(made))
        for ts in range(-1800, 16 * 3600, 900):
            covering = [m for m in made if "lower" in m.row_at(ts)]
            in_force = [m for m in covering if m.fitted_at <= ts]
            want = (in_force[-1] if in_force else covering[0]).row_at(ts)["lower"] if covering else None
            assert learned.load_band_at(ts) == want


def test_in_closed_loop_a_real_surge_keeps_its_capacity_and_a_holiday_releases_it(tmp_path: Path) -> None:
    """The demo's world and prewarm pool: on an ordinary Monday the pool is raised ahead of
    the surge and never lowered inside it; on a holiday Monday (a week later) the forecast's
    surge does not come, and once a comparable window shows it the pool is released."""
    from controller import Controller
    from controller.entrypoints.demo import demo_settings
    from sim import STATIC_WEIGHTS, SimulatedRouter, WorldSpec
    from tests.conftest import warm_up
    from tests.test_controller import drive

    monday = datetime(2026, 11, 16, tzinfo=NY)
    holiday = monday + timedelta(weeks=1)
    spec = replace(WorldSpec(), holidays=(holiday.date(),))
    settings = demo_settings(tmp_path / "data", spec, forecast={"workers": 0, "refit_interval_minutes": 360})
    [pool] = settings.policy.prewarm
    ctl = Controller.from_settings(settings, clock=lambda: monday)
    router = SimulatedRouter(spec, seed=11, start=monday - timedelta(weeks=3), weights=STATIC_WEIGHTS)

    def morning(day: datetime) -> list[tuple[datetime, float, str]]:
        seen = []
        at = day
        while at < day + timedelta(hours=11):
            drive(ctl, router, at, at + timedelta(minutes=5), step=timedelta(minutes=5))
            at += timedelta(minutes=5)
            d = ctl.decision
            assert d is not None
            amount = next(p.amount for p in reversed(d.prewarm) if p.action == pool.name and p.at <= at)
            seen.append((at.astimezone(NY), amount, str(d.reasons_for(f"prewarm/{pool.name}")[0].code)))
        return seen

    try:
        warm_up(ctl, router, monday - timedelta(weeks=3), monday)
        ordinary = morning(monday)
        warm_up(ctl, router, monday + timedelta(hours=11), holiday)
        off = morning(holiday)
    finally:
        ctl.close()
    peak = max(a for _, a, _ in ordinary)
    raised = next(t for t, a, _ in ordinary if a == peak)
    assert raised.hour < 9, ordinary  # ahead of the surge
    surge = [(t, a, c) for t, a, c in ordinary if raised <= t and t.hour < 10]
    assert all(c != "ForecastMissed" for _, _, c in ordinary), ordinary
    assert all(later >= earlier for (_, earlier, _), (_, later, _) in zip(surge, surge[1:], strict=False)), surge
    # The holiday: the surge's forecast is dropped once a comparable window shows it is not coming.
    missed = [(t, a) for t, a, c in off if c == "ForecastMissed"]
    assert missed and missed[0][0].hour <= 10, off
    assert off[-1][1] < peak, off


def test_the_load_check_counts_demand_net_of_retries(settings: Settings, spec: WorldSpec) -> None:
    """Requests include the router's retries, which the routing causes: a routing that cures
    the 429s of the weeks the forecast learned from sends fewer requests for the same demand.
    The recent minutes the check reads are requests less retries, as ``demand_rate`` counts."""
    from prometheus_client import CollectorRegistry

    from collectors.store import Store
    from controller.collect import CollectStage
    from controller.metrics import Metrics
    from sim import SimulatedRouter

    start = datetime(2026, 11, 16, 9, 0, tzinfo=NY)  # Monday's surge: openai over its limit at these weights
    tight = replace(spec, retry=True, providers=tuple(replace(p, rpm_limit=p.rpm_limit * 0.3) for p in spec.providers))
    router = SimulatedRouter(tight, seed=1, start=start, weights={"openai": 0.8, "anthropic": 0.1, "selfhosted": 0.1})
    store = Store(settings.data_dir, tz=settings.timezone)
    stage = CollectStage(settings, store, Metrics(CollectorRegistry()))
    now = start
    for _ in range(12):
        now += timedelta(minutes=1)
        router.advance(now)
        stage.ingest_exposition(router.exposition(), now, None)
    obs, _ = stage.close(now)
    begin, end = int(start.timestamp()), int(now.timestamp())
    requests: dict[int, float] = {}
    retries: dict[int, float] = {}
    for signal, into in (("requests", requests), ("retries", retries)):
        for p in store.counters(signal, begin, end):
            into[p.ts] = into.get(p.ts, 0.0) + p.value
    assert sum(retries.values()) > 0.05 * sum(requests.values())  # the router did retry
    assert obs.recent_demand
    for ts, demand in obs.recent_demand.items():
        assert demand == pytest.approx(requests[ts] - retries.get(ts, 0.0))
    store.close()
