"""The embedding API end to end with the simulated router."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from collectors.errors import ExpositionError
from collectors.store import Store
from controller import Controller, Settings
from sim import STATIC_WEIGHTS, SimulatedRouter, WorldSpec
from tests.conftest import warm_up


def drive(ctl: Controller, router: SimulatedRouter, start: datetime, end: datetime,
          step: timedelta = timedelta(minutes=10), apply: bool = True) -> list[dict[str, float]]:
    """Scrape and step every ``step`` from ``start`` to ``end``; the weights of each decision."""
    now = start
    weights = []
    while now < end:
        now += step
        router.advance(now)
        ctl.ingest_exposition(router.exposition(), at=now)
        d = ctl.step(at=now)
        weights.append(d.weights)
        if apply:
            router.set_weights(d.weights)
    return weights


def metric(ctl: Controller, name: str, **labels: str) -> float:
    v = ctl.registry.get_sample_value(name, labels)
    return 0.0 if v is None else v


def test_embedding_api_learns_the_week_and_acts_before_the_peak(settings: Settings, spec: WorldSpec,
                                                                monday: datetime) -> None:
    start = monday - timedelta(weeks=3)  # hour-of-week forecasts need three weeks
    ctl = Controller.from_settings(settings, clock=lambda: start)
    router = SimulatedRouter(spec, seed=3, start=start, weights=STATIC_WEIGHTS)
    warm_up(ctl, router, start, monday)
    # 07:15 New York: the look-ahead (lead 30 min + window 60 min) now reaches the 08:00 hour.
    drive(ctl, router, monday, monday + timedelta(hours=7, minutes=15))
    d = ctl.decision
    assert d is not None
    assert math.isclose(sum(d.weights.values()), 1.0)
    assert d.weights["openai"] < STATIC_WEIGHTS["openai"]
    # The planner: its SLO capacity learned for Monday 08:00 (its busy hours) holds it down.
    why = d.reasons_for("weights/openai")
    assert {r.code for r in why} == {"CapacityForecastLimited"} and "Mon 08:00" in why[0].message, why
    assert {r.code for r in d.reasons_for("forecast/latency_p95/openai")} == {"ForecastTrusted"}
    # Truth: before 08:00 nothing was degraded yet, so this was a move ahead of the breach.
    truth = router.truth()
    this_morning = truth[(truth.index >= monday) & (truth.index < monday + timedelta(hours=7, minutes=15))]
    assert len(this_morning) and not this_morning["violation"].any()
    ctl.close()


def test_restart_on_the_same_data_dir_keeps_history(settings: Settings, spec: WorldSpec, monday: datetime) -> None:
    start = monday - timedelta(days=5)
    ctl = Controller.from_settings(settings)
    router = SimulatedRouter(spec, seed=1, start=start, weights=STATIC_WEIGHTS)
    drive(ctl, router, start, monday, apply=False)
    span_before = ctl.store.span()
    series_before = ctl.store.series()
    rows_before = len(ctl.store.counters("requests", 0, 2**40))
    forecasts_before = set(ctl.forecasts())
    ctl.close()

    again = Controller.from_settings(settings)
    assert again.store.span() == span_before
    assert again.store.series() == series_before
    assert len(again.store.counters("requests", 0, 2**40)) == rows_before
    again.step(at=monday)
    assert set(again.forecasts()) == forecasts_before and forecasts_before  # history is usable at once
    again.close()


def test_malformed_exposition_is_counted_and_changes_nothing(settings: Settings) -> None:
    ctl = Controller.from_settings(settings)
    at = datetime(2026, 11, 9, 12, tzinfo=UTC)
    with pytest.raises(ExpositionError):
        ctl.ingest_exposition('litellm_spend_metric_total{model="gpt-4o" 1\n', at=at)
    assert metric(ctl, "diurnal_ingest_errors_total", kind="malformed_exposition") == 1
    d = ctl.step(at=at)
    assert "StaleInputs" in {r.code for r in d.reasons}
    ctl.close()


def test_router_restart_counts_a_reset_and_keeps_totals(settings: Settings, spec: WorldSpec, monday: datetime) -> None:
    ctl = Controller.from_settings(settings)
    router = SimulatedRouter(spec, seed=2, start=monday, weights=STATIC_WEIGHTS)
    drive(ctl, router, monday, monday + timedelta(hours=1), apply=False)
    router.restart()
    drive(ctl, router, monday + timedelta(hours=1), monday + timedelta(hours=2), apply=False)
    assert metric(ctl, "diurnal_router_resets_total") > 0
    ctl.flush()
    stored = sum(p.value for p in ctl.store.counters("requests", 0, 2**40))
    truth = router.truth()
    # Everything after the first scrape is stored; the first 10 minutes only set the baseline.
    expected = truth[truth.index >= monday + timedelta(minutes=10)]["requests"].sum()
    assert stored == pytest.approx(expected, rel=1e-6)
    ctl.close()


def test_stale_router_data_reverts_to_baseline(settings: Settings, spec: WorldSpec, monday: datetime) -> None:
    ctl = Controller.from_settings(settings)
    router = SimulatedRouter(spec, seed=2, start=monday, weights=STATIC_WEIGHTS)
    drive(ctl, router, monday, monday + timedelta(hours=9))
    assert ctl.decision is not None and ctl.decision.weights["openai"] < 0.5  # reacting to the busy window
    later = monday + timedelta(hours=9) + timedelta(seconds=settings.guardrails.stale_after_seconds + 60)
    d = ctl.step(at=later)
    assert d.weights == pytest.approx(STATIC_WEIGHTS)
    assert "StaleInputs" in {r.code for r in d.reasons}
    assert metric(ctl, "diurnal_data_age_seconds") > settings.guardrails.stale_after_seconds
    assert metric(ctl, "diurnal_inputs_stale") == 1
    ctl.close()


def test_naive_times_are_refused(settings: Settings) -> None:
    ctl = Controller.from_settings(settings)
    with pytest.raises(ValueError, match="timezone-aware"):
        ctl.step(at=datetime(2026, 11, 9, 12))  # noqa: DTZ001
    ctl.close()


def test_write_behind_decides_and_stores_what_the_synchronous_write_does(
        settings: Settings, spec: WorldSpec, monday: datetime, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The service stores closed minutes in a writer thread: the decisions, the stored
    minutes and hours, and the decisions kept for the shadow report are the same."""
    start = monday - timedelta(hours=12)
    out = []
    for behind in (False, True):
        s = settings.model_copy(update={"data_dir": tmp_path_factory.mktemp(f"behind-{behind}")})
        ctl = Controller.from_settings(s, write_behind=behind)
        router = SimulatedRouter(spec, seed=5, start=start, weights=STATIC_WEIGHTS)
        weights = drive(ctl, router, start, monday, timedelta(minutes=5), apply=False)
        ctl.close()
        store = Store(s.data_dir, tz=s.timezone)
        # Rounded: a batch may hold several ticks' minutes, and sums in another order.
        out.append((weights, sorted((p.ts, p.key, round(p.value, 6)) for p in store.counters("requests", 0, 2**40)),
                    sorted((p.ts, p.key, round(p.count, 6), p.minutes)
                           for p in store.hour_histograms("latency", 0, 2**40)),
                    store.decided(0, 2**40)))
        store.close()
    for a, b in zip(out[0], out[1], strict=True):
        assert a == b, [x for x in a if x not in b][:3] + ["|"] + [x for x in b if x not in a][:3]
    assert out[0][1] and out[0][3]


def test_freeze_heap_hides_what_start_up_made_from_the_collector() -> None:
    """The service freezes the heap once started: what was alive then is out of the cyclic
    collector's full passes (they paused fleet ticks); what comes later is collected as ever."""
    import gc

    try:
        Controller.freeze_heap()
        frozen = gc.get_freeze_count()
        assert frozen > 1000  # the imported libraries at least
        later = [[] for _ in range(100)]
        assert gc.get_freeze_count() == frozen and any(gc.is_tracked(x) for x in later)
    finally:
        gc.unfreeze()
