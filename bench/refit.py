"""Refit benchmark (issue budgets: refit 100 series x 8 weeks hourly in < 30 s on 2 cores;
API p99 < 50 ms while a refit runs).

    .venv/bin/python -m bench.refit [--data DIR] [--series 100] [--workers 2] [--runs 3]

- Refit: 100 series of 8 weeks, hourly (slices of the real series in ../shared/data/real when
  present, else synthetic seasonal ones), fitted by the service's refitter: a full round (a
  backtest chooses every model) and an hourly round (choices reused), medians of ``--runs``.
- API latency: the real app under uvicorn on 127.0.0.1, polled at ``GET /v1/decision`` by a
  separate process (like a router would) at 50 requests/s, idle and during a full refit round
  in worker processes, side by side; and during an inline refit (in the API's own process) to
  show what the worker pool buys.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import uvicorn

from bench.realdata import available, data_dir
from controller.entrypoints.api import create_app
from controller.forecast import Fit
from controller.forecast.refit import FitJob, Refitter
from controller.loop import Controller
from controller.settings import load_settings

WEEKS = 8
HOURS = WEEKS * 168


def series_set(count: int, root: Path, seed: int = 0) -> list[pd.Series]:
    """``count`` hourly series of 8 weeks: real slices (different offsets) or synthetic."""
    rng = np.random.default_rng(seed)
    sources = [d.load(root) for d in available(root)]
    sources = [s for s in sources if len(s) > HOURS + 24]
    out = []
    for i in range(count):
        if sources:
            src = sources[i % len(sources)]
            start = int(rng.integers(0, len(src) - HOURS))
            s = src.iloc[start:start + HOURS]
            out.append(pd.Series(s.to_numpy(), index=pd.date_range("2026-01-05", periods=HOURS, freq="h", tz="UTC")))
        else:
            t = np.arange(HOURS)
            y = 100 + 30 * np.sin(2 * np.pi * t / 24) + 10 * np.sin(2 * np.pi * t / 168) + rng.normal(0, 5, HOURS)
            out.append(pd.Series(y, index=pd.date_range("2026-01-05", periods=HOURS, freq="h", tz="UTC")))
    return out


def jobs_for(series: list[pd.Series], selections: dict[tuple[str, str], Fit] | None = None) -> list[FitJob]:
    return [
        FitJob(("request_rate", f"s{i}"), s, 24, "America/New_York", pd.Timedelta(days=3), pd.Timedelta(days=21),
               under_penalty=2.0,
               selection=selections[("request_rate", f"s{i}")].selection if selections else None)
        for i, s in enumerate(series)
    ]


def bench_refit(series: list[pd.Series], workers: int, runs: int) -> dict[str, float]:
    refitter = Refitter(workers, timeout=120.0)
    try:
        t = time.perf_counter()
        refitter.run(jobs_for(series[:workers]))  # start the pool and import the models
        startup = time.perf_counter() - t
        full, hourly = [], []
        last: dict[tuple[str, str], Fit] = {}
        for _ in range(runs):
            t = time.perf_counter()
            out = refitter.run(jobs_for(series))
            full.append(time.perf_counter() - t)
            last = {k: v for k, v in out.items() if isinstance(v, Fit)}
            t = time.perf_counter()
            refitter.run(jobs_for(series, last))
            hourly.append(time.perf_counter() - t)
        failed = len(series) - len(last)
    finally:
        refitter.close()
    return {"pool_start_s": startup, "full_s": statistics.median(full), "hourly_s": statistics.median(hourly),
            "failed": float(failed)}


def _poll(url: str, seconds: float, rate: float) -> list[float]:
    """Runs in its own process: GET ``url`` at ``rate``/s for ``seconds``; latencies in ms."""
    out: list[float] = []
    with httpx.Client(timeout=5.0) as client:
        end = time.monotonic() + seconds
        next_at = time.monotonic()
        while time.monotonic() < end:
            t = time.perf_counter()
            client.get(url).raise_for_status()
            out.append((time.perf_counter() - t) * 1000)
            next_at += 1.0 / rate
            time.sleep(max(0.0, next_at - time.monotonic()))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_api(series: list[pd.Series], workers: int, seconds: float, rate: float) -> dict[str, dict[str, float]]:
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(data_dir=Path(tmp), api={"port": port},
                                 policy={"providers": {"a": {"baseline_weight": 0.5}, "b": {"baseline_weight": 0.5}}},
                                 forecast={"workers": workers})
        ctl = Controller.from_settings(settings, refit_in_step=False)
        ctl.step(at=datetime.now(UTC))
        server = uvicorn.Server(uvicorn.Config(create_app(ctl), host="127.0.0.1", port=port, log_level="warning",
                                               lifespan="off"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}/v1/decision"
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        ctl.fit.refitter.run(jobs_for(series[:max(workers, 1)]))  # pool up, models imported: not measured
        results: dict[str, dict[str, float]] = {}
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as poller:
            poller.submit(_poll, url, 1.0, rate).result()  # warm the client process
            for label, refit in (("idle", None), (f"refit in {workers} worker processes", ctl.fit.refitter),
                                 ("refit inline in the API process", Refitter(0, 120.0))):
                job = poller.submit(_poll, url, seconds, rate)
                busy = 0.0
                if refit is not None:
                    t = time.perf_counter()
                    while not job.done():  # keep refitting for the whole window
                        refit.run(jobs_for(series))
                        busy = time.perf_counter() - t
                lat = job.result()
                results[label] = {"requests": len(lat), "p50_ms": float(np.percentile(lat, 50)),
                                  "p99_ms": float(np.percentile(lat, 99)), "max_ms": max(lat), "refit_s": busy}
        server.should_exit = True
        thread.join(timeout=10)
        ctl.close()
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.refit", description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="directory of the real series (default ../shared/data/real)")
    ap.add_argument("--series", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20.0, help="API polling window per case")
    ap.add_argument("--rate", type=float, default=50.0, help="API requests per second (loopback only)")
    args = ap.parse_args(argv)
    root = data_dir(args.data)
    series = series_set(args.series, root)
    source = "real slices" if available(root) else "synthetic"
    r = bench_refit(series, args.workers, args.runs)
    print(f"refit of {args.series} series x {WEEKS} weeks hourly ({source}), {args.workers} workers, "
          f"median of {args.runs}:")
    print(f"  full round (backtest chooses every model): {r['full_s']:6.1f} s   budget 30 s")
    print(f"  hourly round (choices reused):             {r['hourly_s']:6.1f} s")
    print(f"  pool start (once per process):             {r['pool_start_s']:6.1f} s;  failed fits: {r['failed']:.0f}")
    api = bench_api(series, args.workers, args.seconds, args.rate)
    print(f"\nGET /v1/decision at {args.rate:.0f}/s for {args.seconds:.0f} s per case, from another process:")
    for label, v in api.items():
        print(f"  {label:<36} p50 {v['p50_ms']:6.1f} ms  p99 {v['p99_ms']:6.1f} ms  max {v['max_ms']:6.1f} ms  "
              f"({v['requests']:.0f} requests)   budget p99 50 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
