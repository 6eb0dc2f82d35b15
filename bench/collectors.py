"""Collector benchmarks (issue budgets: parse + aggregate 10k samples < 100 ms; event ingest
>= 50k events/s on one core). Medians of several runs, side by side with the budget.

    .venv/bin/python -m bench.collectors [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from collectors.exposition import ExpositionParser, parse_exposition
from collectors.intervals import MinuteAggregator
from collectors.mapping import LITELLM, Mapper

BUCKETS = ("0.5", "1.0", "2.0", "5.0", "10.0", "30.0", "+Inf")


def exposition(deployments: int, step: int) -> str:
    """A LiteLLM-shaped exposition with ``deployments`` x 10 samples (cumulative by ``step``)."""
    lines = ["# TYPE litellm_deployment_total_requests counter"]
    for d in range(deployments):
        lines.append(f'litellm_deployment_total_requests_total{{api_provider="p{d % 7}",'
                     f'litellm_model_name="m{d}",requested_model="r{d % 5}"}} {100 * step + d}')
    lines.append("# TYPE litellm_spend_metric counter")
    for d in range(deployments):
        lines.append(f'litellm_spend_metric_total{{model="m{d}",requested_model="r{d % 5}"}} {0.5 * step}')
    lines.append("# TYPE litellm_llm_api_latency_metric histogram")
    for d in range(deployments):
        lbl = f'model="m{d}",requested_model="r{d % 5}"'
        for i, le in enumerate(BUCKETS):
            lines.append(f'litellm_llm_api_latency_metric_bucket{{{lbl},le="{le}"}} {step * (i + 1)}')
    return "\n".join(lines) + "\n"


def bench_parse(runs: int) -> dict[str, float]:
    deployments = 1000  # 1000 x (1 + 1 + 7 buckets) + 1 = ~9k samples; pad to 10k with sums below
    texts = [exposition(deployments, s) for s in range(runs + 1)]
    extra = "".join(f'litellm_llm_api_latency_metric_count{{model="m{d}",requested_model="r{d % 5}"}} {d}\n'
                    for d in range(deployments))
    texts = [t + extra for t in texts]
    n = len(parse_exposition(texts[0]))
    mapper = Mapper(LITELLM, {f"m{d}": f"p{d % 7}" for d in range(deployments)})
    agg = MinuteAggregator()
    parser = ExpositionParser()  # as the controller holds one per router
    agg.ingest(mapper.map(parser.parse(texts[0])), 0.0)
    times = []
    for i, text in enumerate(texts[1:], start=1):
        t0 = time.perf_counter()
        agg.ingest(mapper.map(parser.parse(text)), 15.0 * i)
        agg.close_before(15.0 * i)
        times.append((time.perf_counter() - t0) * 1000)
    cold = []  # the first scrape of a new router: every series goes through prometheus_client
    for text in texts[1:4]:
        t0 = time.perf_counter()
        MinuteAggregator().ingest(mapper.map(parse_exposition(text)), 0.0)
        cold.append((time.perf_counter() - t0) * 1000)
    return {"samples": n, "median_ms": statistics.median(times), "cold_ms": statistics.median(cold),
            "budget_ms": 100.0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_events(runs: int, batch: int = 5000, batches: int = 10) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="diurnal-bench-"))
    port = _free_port()
    env = {**os.environ, "DIURNAL_DATA_DIR": str(tmp), "DIURNAL_API__PORT": str(port),
           "DIURNAL_API__TOKEN": "bench", "DIURNAL_LOG_LEVEL": "WARNING"}
    cmd = [sys.executable, "-m", "controller.entrypoints.cli", "run"]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]  # the server gets one core; this client the other
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    now = datetime.now(UTC)
    lines = [json.dumps({"ts": (now - timedelta(seconds=i % 240)).isoformat(), "provider": f"p{i % 3}",
                         "model": "m", "route": "chat", "latency": 0.5 + (i % 40) / 10, "ttft": 0.2,
                         "cache_hit": i % 3 == 0, "retries": i % 7 == 0, "status": 429 if i % 50 == 0 else 200,
                         "input_tokens": 800, "output_tokens": 200, "cost": 0.003})
             for i in range(batch)]
    body = ("\n".join(lines) + "\n").encode()
    rates = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60,
                          headers={"Authorization": "Bearer bench"}) as client:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            for _ in range(runs):
                t0 = time.perf_counter()
                for _ in range(batches):
                    r = client.post("/v1/events", content=body)
                    assert r.status_code == 200 and r.json()["accepted"] == batch, r.text[:300]
                rates.append(batch * batches / (time.perf_counter() - t0))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    return {"batch": batch, "median_events_per_s": statistics.median(rates), "budget_events_per_s": 50_000.0,
            "pinned_to_one_core": float(bool(shutil.which("taskset")))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    parse = bench_parse(args.runs)
    print(f"parse + aggregate {parse['samples']:.0f} samples: median {parse['median_ms']:.1f} ms per scrape "
          f"(budget {parse['budget_ms']:.0f} ms) over {args.runs} runs; first scrape of a new router "
          f"(no series cache) {parse['cold_ms']:.1f} ms")
    ev = bench_events(args.runs)
    print(f"POST /v1/events, batches of {ev['batch']:.0f}, loopback: median {ev['median_events_per_s']:,.0f} events/s "
          f"(budget {ev['budget_events_per_s']:,.0f}/s; server pinned to one core: {bool(ev['pinned_to_one_core'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
