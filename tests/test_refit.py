"""Refits off the hot path: failures and timeouts keep the last good forecast."""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from controller import Controller
from controller.forecast import Fit
from controller.forecast.refit import FitJob, Refitter, RefitTimeout, run_job
from controller.settings import Settings
from sim import STATIC_WEIGHTS, SimulatedRouter, WorldSpec
from tests.conftest import warm_up


def stuck_on_latency(job: FitJob) -> Fit:
    """A fit that hangs for latency series (runs in a worker process)."""
    if job.key[0] == "latency_p95":
        time.sleep(60)
    return run_job(job)


def deaf(job: FitJob) -> Fit:
    """A fit stuck where its alarm cannot reach it (as in C code)."""
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    time.sleep(60)
    raise AssertionError("unreachable")


def broken(job: FitJob) -> Fit:
    raise RuntimeError("numerical trouble")


@pytest.fixture
def learned(settings: Settings, spec: WorldSpec, monday: datetime) -> Controller:
    """Four days of the simulated router, then a step that fits every series."""
    start = monday - timedelta(days=4)
    ctl = Controller.from_settings(settings)
    warm_up(ctl, SimulatedRouter(spec, seed=9, start=start, weights=STATIC_WEIGHTS), start, monday)
    ctl.step(at=monday)
    assert ctl.forecasts() and all(sf.fit.model != "none" for sf in ctl.forecasts().values())
    return ctl


def test_a_failing_refit_keeps_the_last_good_forecast(learned: Controller, monday: datetime) -> None:
    before = {k: sf.fit.frame.copy() for k, sf in learned.forecasts().items()}
    learned.fit.refitter = Refitter(0, 10.0, fn=broken)
    failures = learned.refit(monday + timedelta(hours=1))
    assert set(failures) == set(before) and all(isinstance(e, RuntimeError) for e in failures.values())
    after = learned.forecasts()
    for key, frame in before.items():
        pd.testing.assert_frame_equal(after[key].fit.frame, frame)
        assert after[key].failures == 1
    assert learned.registry.get_sample_value("diurnal_refit_failures_total", {"reason": "error"}) == len(before)
    d = learned.step(at=monday + timedelta(hours=1, minutes=1))
    assert "last 1 refits failed" in d.reasons_for("forecast/request_rate/*")[0].message
    learned.close()


def test_a_refit_that_times_out_keeps_the_last_good_forecast(learned: Controller, monday: datetime) -> None:
    before = {k: sf.fit.frame.copy() for k, sf in learned.forecasts().items()}
    learned.fit.refitter = Refitter(1, timeout=3.0, fn=stuck_on_latency)
    try:
        started = time.monotonic()
        failures = learned.refit(monday + timedelta(hours=1))
        assert time.monotonic() - started < 40  # three 3 s limits, not three 60 s sleeps
        latency = {k for k in before if k[0] == "latency_p95"}
        assert set(failures) == latency and all(isinstance(e, RefitTimeout) for e in failures.values())
        for key in latency:
            pd.testing.assert_frame_equal(learned.forecasts()[key].fit.frame, before[key])
        assert learned.registry.get_sample_value("diurnal_refit_failures_total", {"reason": "timeout"}) == len(latency)
        # The other series were refitted meanwhile, by the same worker.
        assert learned.forecasts()[("request_rate", "*")].fitted_at == monday + timedelta(hours=1)
    finally:
        learned.close()


def test_a_worker_that_ignores_its_alarm_is_replaced() -> None:
    idx = pd.date_range("2026-05-04", periods=24 * 5, freq="h", tz="UTC")
    job = FitJob(("latency_p95", "x"), pd.Series(1.0, index=idx), 24, "UTC", pd.Timedelta(days=3), pd.Timedelta(days=21))
    refitter = Refitter(1, timeout=1.0, fn=deaf)
    try:
        started = time.monotonic()
        out = refitter.run([job])
        assert isinstance(out[job.key], RefitTimeout) and time.monotonic() - started < 20
        refitter._fn = run_job
        refitter.timeout = 60.0  # the fresh worker's first fit imports statsmodels (~3 s on a busy machine)
        assert isinstance(refitter.run([job])[job.key], Fit)  # a fresh pool
    finally:
        refitter.close()


def test_pool_and_inline_give_the_same_forecast(tmp_path: Path) -> None:
    idx = pd.date_range("2026-05-04", periods=24 * 30, freq="h", tz="UTC")
    hist = pd.Series([10 + (i % 24) + (5 if i % 168 == 9 else 0) for i in range(len(idx))], index=idx, dtype=float)
    job = FitJob(("request_rate", "*"), hist, 24, "UTC", pd.Timedelta(days=3), pd.Timedelta(days=21))
    inline = Refitter(0, 60.0).run([job])[job.key]
    pool = Refitter(2, 120.0)
    try:
        pooled = pool.run([job])[job.key]
    finally:
        pool.close()
    assert isinstance(inline, Fit) and isinstance(pooled, Fit)
    pd.testing.assert_frame_equal(inline.frame, pooled.frame)
    assert inline.selection == pooled.selection


def test_a_killed_worker_costs_only_its_job_and_is_replaced() -> None:
    """As when a Ctrl-C or a SIGTERM reaches the whole process group: no shared queue lock
    can be left held, so the next round runs (and shutting down does not hang)."""
    idx = pd.date_range("2026-05-04", periods=24 * 5, freq="h", tz="UTC")
    jobs = [FitJob(("request_rate", f"s{i}"), pd.Series(1.0 + i, index=idx), 24, "UTC", pd.Timedelta(days=3),
                   pd.Timedelta(days=21)) for i in range(4)]
    refitter = Refitter(2, timeout=30.0)
    try:
        assert all(isinstance(v, Fit) for v in refitter.run(jobs).values())
        for w in refitter._pool:
            os.kill(w.proc.pid, signal.SIGTERM)
            w.proc.join(5)
        again = refitter.run(jobs)
        assert all(isinstance(v, Fit) for v in again.values())
    finally:
        started = time.monotonic()
        refitter.close()
        assert time.monotonic() - started < 10
