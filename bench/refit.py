"""Refit benchmark (issue budgets: refit 100 series x 8 weeks hourly in < 30 s on 2 cores;
API p99 < 50 ms while a refit runs; at fleet scale, 2,000 series: a full refit < 120 s, the
API's p99 < 50 ms meanwhile, a control tick < 200 ms).

    .venv/bin/python -m bench.refit [--data DIR] [--series 100] [--workers 2] [--runs 3]
    .venv/bin/python -m bench.refit --fleet [--workers 2]

- Refit: 100 series of 8 weeks, hourly (slices of the real series in ../shared/data/real when
  present, else synthetic seasonal ones), fitted by the service's refitter: a full round (a
  backtest chooses every model) and an hourly round (choices reused), medians of ``--runs``.
- API latency: the real app under uvicorn on 127.0.0.1, polled at ``GET /v1/decision`` by a
  separate process (like a router would) at 50 requests/s, idle and during a full refit round
  in worker processes, side by side; and during an inline refit (in the API's own process) to
  show what the worker pool buys.
- ``--fleet``: the service's own refit (``Controller.refit``) over a store of 2,000 series (20
  providers x 10 models x 10 routes, 8 weeks of hourly requests and latency histograms): a
  full round (every model chosen) and an hourly one; ``GET /v1/decision`` polled meanwhile; and
  control ticks (``step()``) with the 2,000 series' minute fed before each (the ingest is
  timed apart), with the service's write-behind: the tick's closed minute is stored by the
  writer thread (:mod:`controller.writer`), timed apart too, from the tick's start until it
  is stored. diurnal forecasts per provider, so 2,000 series are 42 fits (20 providers x
  latency and requests, and the demand for all) over the history of every series behind them.
"""

from __future__ import annotations

import argparse
import math
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any

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


FLEET = (20, 10, 10)  # providers, models, routes
_BUCKETS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


def fleet_store(root: Path, end: datetime, seed: int = 0) -> tuple[list[str], dict[str, str]]:
    """Write 8 weeks of hourly requests and latency histograms for 2,000 series (one minute
    row per series and hour, holding the hour's counts) into the store at ``root``; returns
    the providers and the model -> provider map."""
    from scipy.special import ndtr

    from collectors.intervals import MinuteCell, MinuteRow
    from collectors.mapping import SeriesKey
    from collectors.store import Store

    rng = np.random.default_rng(seed)
    providers, models, routes = FLEET
    names = [(f"p{p:02d}", f"p{p:02d}-m{m}", f"r{r}") for p in range(providers) for m in range(models)
             for r in range(routes)]
    share = rng.dirichlet(np.ones(len(names))) * len(names)
    base = rng.uniform(0.4, 3.0, len(names))
    start = int(end.timestamp()) - HOURS * 3600
    hours = pd.date_range(pd.Timestamp(start, unit="s", tz="UTC"), periods=HOURS, freq="h").tz_convert("America/New_York")
    day = np.clip(np.sin(np.pi * (hours.hour.to_numpy() - 6) / 14), 0.15, None) * np.where(hours.day_of_week < 5, 1, 0.45)
    store = Store(root, tz="America/New_York")
    try:
        for h in range(HOURS):
            ts = start + h * 3600
            n = rng.poisson(600.0 * day[h] * share)
            z = (np.log(np.asarray(_BUCKETS))[None, :] - np.log(base * (1 + day[h]))[:, None]) / 0.5
            cum = np.round(n[:, None] * ndtr(z))
            rows = []
            for i, (p, m, r) in enumerate(names):
                rows.append(MinuteRow(ts, SeriesKey("requests", p, m, r), MinuteCell(value=float(n[i]))))
                rows.append(MinuteRow(ts, SeriesKey("latency", p, m, r), MinuteCell(
                    count=float(n[i]), sum=float(n[i] * base[i]),
                    buckets={**{le: float(c) for le, c in zip(_BUCKETS, cum[i], strict=True)}, math.inf: float(n[i])})))
            store.write(rows)
    finally:
        store.close()
    return sorted({p for p, _, _ in names}), {m: p for p, m, _ in names}


def fleet_exposition(names: list[tuple[str, str, str]], counts: np.ndarray) -> str:
    """A LiteLLM /metrics of the 2,000 deployments with cumulative ``counts``."""
    lines = ["# TYPE litellm_deployment_total_requests counter"]
    lines += [f'litellm_deployment_total_requests_total{{api_provider="{p}",litellm_model_name="{m}",'
              f'requested_model="{r}"}} {c:.0f}' for (p, m, r), c in zip(names, counts, strict=True)]
    lines.append("# TYPE litellm_llm_api_latency_metric histogram")
    for (_, m, r), c in zip(names, counts, strict=True):
        lbl = f'model="{m}",requested_model="{r}"'
        lines += [f'litellm_llm_api_latency_metric_bucket{{{lbl},le="{le}"}} {c * min(1.0, le / 4):.0f}'
                  for le in _BUCKETS]
        lines.append(f'litellm_llm_api_latency_metric_bucket{{{lbl},le="+Inf"}} {c:.0f}')
        lines.append(f"litellm_llm_api_latency_metric_sum{{{lbl}}} {c * 1.5:.1f}")
        lines.append(f"litellm_llm_api_latency_metric_count{{{lbl}}} {c:.0f}")
    return "\n".join(lines) + "\n"


def bench_fleet(workers: int, seconds: float, rate: float, ticks: int = 20) -> dict[str, Any]:
    """The service's refit and tick at fleet scale (see the module docstring)."""
    end = datetime(2026, 11, 16, 5, tzinfo=UTC)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        providers, model_providers = fleet_store(Path(tmp), end)
        out["store_s"] = time.perf_counter() - t
        port = _free_port()
        settings = load_settings(
            data_dir=Path(tmp), timezone="America/New_York", api={"port": port},
            router={"model_providers": model_providers, "max_series": 10_000},
            policy={"providers": {p: {"baseline_weight": 1 / len(providers)} for p in providers}},
            forecast={"workers": workers})
        ctl = Controller.from_settings(settings, refit_in_step=False, write_behind=True)  # as the service runs it
        try:
            out["series"] = ctl.stored_series_count()
            ctl.fit.refitter.run(jobs_for(series_set(workers, Path("/nonexistent"))))  # pool up: not measured
            server = uvicorn.Server(uvicorn.Config(create_app(ctl), host="127.0.0.1", port=port, log_level="warning",
                                                   lifespan="off"))
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            deadline = time.monotonic() + 30
            while not server.started and time.monotonic() < deadline:
                time.sleep(0.05)
            url = f"http://127.0.0.1:{port}/v1/decision"
            ctl.step(at=end)
            ctl.freeze_heap()  # as the service does once it has started
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as poller:
                poller.submit(_poll, url, 1.0, rate).result()  # warm the client process
                job = poller.submit(_poll, url, seconds, rate)
                t = time.perf_counter()
                failures = ctl.refit(end)
                out["full_refit_s"] = time.perf_counter() - t
                t = time.perf_counter()
                ctl.refit(end + timedelta(hours=1))
                out["hourly_refit_s"] = time.perf_counter() - t
                out["fits"] = len(ctl.forecasts())
                out["failed"] = len(failures)
                hour = end + timedelta(hours=1)
                while not job.done():  # refitting for the whole polling window
                    hour += timedelta(hours=1)
                    ctl.refit(hour)
                lat = job.result()
                out["api_during_refit"] = {"requests": len(lat), "p50_ms": float(np.percentile(lat, 50)),
                                           "p99_ms": float(np.percentile(lat, 99)), "max_ms": max(lat)}
            names = [(p, m, r) for p in providers for m in [k for k, v in model_providers.items() if v == p]
                     for r in (f"r{i}" for i in range(FLEET[2]))]
            counts = np.zeros(len(names))
            rng = np.random.default_rng(1)
            ingest, step, stored = [], [], []
            at = end + timedelta(hours=1)
            for _ in range(ticks):
                at += timedelta(minutes=1)
                counts += rng.poisson(5.0, len(names))
                text = fleet_exposition(names, counts)
                t = time.perf_counter()
                ctl.ingest_exposition(text, at=at)
                ingest.append(time.perf_counter() - t)
                t = time.perf_counter()
                ctl.step(at=at)
                step.append(time.perf_counter() - t)
                t = time.perf_counter()
                ctl.collect.drain()  # the minute stored by the writer thread, before the next scrape
                stored.append(time.perf_counter() - t + step[-1])
            out["tick_ms"] = {"median": 1000 * statistics.median(step[2:]), "max": 1000 * max(step[2:])}
            out["stored_ms"] = {"median": 1000 * statistics.median(stored[2:]), "max": 1000 * max(stored[2:])}
            out["ingest_ms"] = {"median": 1000 * statistics.median(ingest[2:]), "samples": text.count("\n")}
            server.should_exit = True
            thread.join(timeout=10)
        finally:
            ctl.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.refit", description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="directory of the real series (default ../shared/data/real)")
    ap.add_argument("--series", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20.0, help="API polling window per case")
    ap.add_argument("--rate", type=float, default=50.0, help="API requests per second (loopback only)")
    ap.add_argument("--fleet", action="store_true", help="the service's refit and tick over 2,000 series instead")
    args = ap.parse_args(argv)
    if args.fleet:
        f = bench_fleet(args.workers, args.seconds, args.rate)
        api = f["api_during_refit"]
        print(f"fleet scale: {f['series']} series stored ({FLEET[0]} providers x {FLEET[1]} models x {FLEET[2]} "
              f"routes, 2 signals, {WEEKS} weeks hourly; written in {f['store_s']:.0f} s), {f['fits']} fits, "
              f"{args.workers} workers:")
        print(f"  full refit (every model chosen):  {f['full_refit_s']:6.1f} s   budget 120 s; failed fits: {f['failed']}")
        print(f"  hourly refit (choices reused):    {f['hourly_refit_s']:6.1f} s")
        print(f"  GET /v1/decision at {args.rate:.0f}/s during the refits: p50 {api['p50_ms']:.1f} ms, "
              f"p99 {api['p99_ms']:.1f} ms, max {api['max_ms']:.1f} ms ({api['requests']} requests)   budget p99 50 ms")
        print(f"  control tick (step) with {f['series']} series: median {f['tick_ms']['median']:.0f} ms, "
              f"max {f['tick_ms']['max']:.0f} ms   budget 200 ms")
        print(f"  the tick's minute stored by the writer thread, from the tick's start: median "
              f"{f['stored_ms']['median']:.0f} ms, max {f['stored_ms']['max']:.0f} ms (off the tick)")
        print(f"  ingest of their minute ({f['ingest_ms']['samples']} samples, off the tick): median "
              f"{f['ingest_ms']['median']:.0f} ms")
        return 0
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
