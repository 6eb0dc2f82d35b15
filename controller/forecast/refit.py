"""Refits off the hot path: a process pool with a deadline, or inline for embedders.

A refit round is a list of :class:`FitJob` (one per series). With ``workers > 0`` the jobs run
in a pool of worker processes, so fitting never holds the service's GIL while the API
answers. Each fit has ``timeout`` seconds, enforced in its worker by an alarm; should a fit
not answer even that (stuck inside C code), its worker is killed and replaced, so a stuck
worker cannot block the round or the next one. With ``workers = 0`` jobs run in the calling thread,
deterministic and cheap to start, which suits the demo, the benchmarks and tests; there is no
timeout then.

Each job returns a :class:`~controller.forecast.Fit`, or the exception that stopped it; the
controller keeps the last good forecast of a series whose refit failed.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as mp_wait
from typing import Any

import pandas as pd

from collectors.errors import DiurnalError
from controller.forecast import Fit, Selection, fit

log = logging.getLogger("diurnal.refit")


class RefitTimeout(DiurnalError, TimeoutError):
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


def _serve(conn: Connection, fn: Callable[[FitJob], Fit]) -> None:
    """A worker: fit the jobs that arrive on ``conn`` until it sends None or closes.

    It ignores SIGINT, so a Ctrl-C sent to the whole process group reaches the service only,
    which then stops its workers itself.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        job, seconds = message
        try:
            result: Outcome = _guarded(fn, job, seconds)
        except Exception as exc:
            result = exc
        try:
            conn.send(result)
        except Exception as exc:  # e.g. an exception that does not pickle
            conn.send(RuntimeError(f"{type(exc).__name__}: {exc}"))


class _Worker:
    def __init__(self, ctx: Any, fn: Callable[[FitJob], Fit]) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, fn), daemon=True, name="diurnal-refit")
        self.proc.start()
        child.close()

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()


class Refitter:
    """Runs refit rounds; see the module doc. Thread-safe: one round at a time.

    The pool is a few worker processes, each with its own pipe: no queue lock is shared, so a
    worker that dies (killed, or signalled with its process group) costs only its own job,
    and a stuck one can always be killed and replaced.
    """

    def __init__(self, workers: int, timeout: float, fn: Callable[[FitJob], Fit] = run_job) -> None:
        self.workers = workers
        self.timeout = timeout
        self._fn = fn
        self._pool: list[_Worker] = []
        self._lock = threading.Lock()

    def _workers(self) -> list[_Worker]:
        # forkserver: the service has threads (uvicorn, the scheduler), and forking a
        # threaded process can deadlock a child.
        ctx = multiprocessing.get_context("forkserver")
        self._pool = [w for w in self._pool if w.proc.is_alive()]
        while len(self._pool) < self.workers:
            self._pool.append(_Worker(ctx, self._fn))
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
        queue = list(jobs)
        out: dict[tuple[str, str], Outcome] = {}
        busy: dict[Connection, tuple[_Worker, FitJob, float]] = {}
        idle = list(self._workers())
        while queue or busy:
            while queue and idle:
                w, job = idle.pop(), queue.pop(0)
                try:
                    w.conn.send((job, self.timeout))
                except (OSError, ValueError) as exc:
                    out[job.key] = exc
                    w.kill()
                    continue
                # The worker's alarm fires at the limit; a worker silent well past it is stuck.
                busy[w.conn] = (w, job, time.monotonic() + self.timeout * 1.5 + 5)
            if not busy:
                break
            wait_for = max(0.0, min(d for _, _, d in busy.values()) - time.monotonic())
            ready = mp_wait(list(busy), timeout=wait_for)
            for conn in [c for c in list(busy) if c in ready]:
                w, job, _ = busy.pop(conn)
                try:
                    result: Outcome = w.conn.recv()
                    out[job.key] = result
                    idle.append(w)
                except (EOFError, OSError) as exc:
                    out[job.key] = RuntimeError(f"refit worker for {job.key[0]}/{job.key[1]} died: {exc!r}")
                    w.kill()
            now = time.monotonic()
            for conn, (w, job, deadline) in list(busy.items()):
                if now >= deadline:
                    del busy[conn]
                    log.warning("refit worker stuck on %s/%s past its limit; replacing it", *job.key)
                    out[job.key] = RefitTimeout(f"refit of {job.key[0]}/{job.key[1]} was abandoned: its worker did "
                                                "not answer its alarm")
                    w.kill()
            if queue and not idle:
                idle = [w for w in self._workers() if w.conn not in busy]
        return out

    def _terminate(self) -> None:
        for w in self._pool:
            with contextlib.suppress(Exception):
                w.conn.send(None)
        for w in self._pool:
            w.proc.join(2)
            w.kill()
        self._pool = []

    def close(self) -> None:
        """Ask the workers to stop, and kill any that do not within two seconds."""
        with self._lock:
            self._terminate()
