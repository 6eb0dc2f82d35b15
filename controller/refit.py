"""Refits off the hot path: a process pool with a deadline, or inline for embedders.

A refit round is a list of :class:`FitJob` (one per series). With ``workers > 0`` the jobs run
in a pool of worker processes, so fitting never holds the service's GIL while the API
answers. Each fit has ``timeout`` seconds, enforced in its worker by an alarm; should a fit
not answer even that (stuck inside C code), the round's deadline abandons what is left and
the pool is replaced, so a stuck worker cannot block the next round either. With ``workers = 0`` jobs run in the calling thread,
deterministic and cheap to start, which suits the demo, the benchmarks and tests; there is no
timeout then.

Each job returns a :class:`~controller.forecast.Fit`, or the exception that stopped it; the
controller keeps the last good forecast of a series whose refit failed.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.pool import AsyncResult, Pool

import pandas as pd

from controller.forecast import Fit, Selection, fit

log = logging.getLogger("diurnal.refit")


class RefitTimeout(TimeoutError):
    """The round's deadline passed before this series' fit finished."""


@dataclass(frozen=True)
class FitJob:
    key: tuple[str, str]
    history: pd.Series
    horizon: int
    tz: str
    min_history: pd.Timedelta
    weekly_history: pd.Timedelta
    under_penalty: float = 1.0
    coverage: float = 0.8
    backtest_days: int = 7
    exclude: Sequence[tuple[datetime, datetime]] = ()
    selection: Selection | None = None
    decomposition: bool = True


def run_job(job: FitJob) -> Fit:
    """Fit one series (runs in a worker process, or inline)."""
    return fit(job.history, job.horizon, tz=job.tz, coverage=job.coverage, min_history=job.min_history,
               weekly_history=job.weekly_history, under_penalty=job.under_penalty, backtest_days=job.backtest_days,
               exclude=job.exclude, selection=job.selection, decomposition=job.decomposition)


Outcome = Fit | BaseException


def _guarded(fn: Callable[[FitJob], Fit], job: FitJob, seconds: float) -> Fit:
    """Run ``fn(job)`` in a pool worker with an alarm after ``seconds``."""
    def expire(signum: int, frame: object) -> None:
        raise RefitTimeout(f"refit of {job.key[0]}/{job.key[1]} passed its {seconds:g}s limit")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn(job)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Refitter:
    """Runs refit rounds; see the module doc. Thread-safe: one round at a time."""

    def __init__(self, workers: int, timeout: float, fn: Callable[[FitJob], Fit] = run_job) -> None:
        self.workers = workers
        self.timeout = timeout
        self._fn = fn
        self._pool: Pool | None = None
        self._lock = threading.Lock()

    def _get_pool(self) -> Pool:
        if self._pool is None:
            # forkserver: the service has threads (uvicorn, the scheduler), and forking a
            # threaded process can deadlock a child.
            ctx = multiprocessing.get_context("forkserver")
            self._pool = ctx.Pool(self.workers)
        return self._pool

    def run(self, jobs: Sequence[FitJob]) -> dict[tuple[str, str], Outcome]:
        with self._lock:
            if not jobs:
                return {}
            if self.workers == 0:
                return {job.key: self._inline(job) for job in jobs}
            return self._pooled(jobs)

    def _inline(self, job: FitJob) -> Outcome:
        try:
            return self._fn(job)
        except Exception as exc:  # one bad series must not stop the round
            return exc

    def _pooled(self, jobs: Sequence[FitJob]) -> dict[tuple[str, str], Outcome]:
        pool = self._get_pool()
        # Each fit has its own limit; the round's deadline is the backstop for a worker that
        # does not answer its alarm.
        rounds = -(-len(jobs) // self.workers)
        deadline = time.monotonic() + self.timeout * (rounds + 1)
        pending: list[tuple[FitJob, AsyncResult[Fit]]] = [
            (job, pool.apply_async(_guarded, (self._fn, job, self.timeout))) for job in jobs
        ]
        out: dict[tuple[str, str], Outcome] = {}
        timed_out = False
        for job, res in pending:
            try:
                out[job.key] = res.get(timeout=max(0.0, deadline - time.monotonic()))
            except multiprocessing.TimeoutError:
                timed_out = True
                out[job.key] = RefitTimeout(f"refit of {job.key[0]}/{job.key[1]} was abandoned at the round's deadline")
            except Exception as exc:
                out[job.key] = exc
        if timed_out:  # a stuck worker would hold the next round too: replace the pool
            log.warning("a refit worker did not answer by the round's deadline; restarting the worker pool")
            self._terminate()
        return out

    def _terminate(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool.join()
                self._pool = None
