"""The fleet input's cost (router.source prometheus): one window's query against a real
Prometheus holding the series of ``--replicas`` simulated router replicas, side by side with
scraping every replica directly, in one run. Medians.

    .venv/bin/python -m bench.fleet [--replicas 20] [--fill-seconds 60] [--queries 30]

Needs Debian's ``prometheus`` binary (exit 2 without it). Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.sidecar import free_port
from collectors.backfill import PrometheusAPI
from collectors.exposition import ExpositionParser
from collectors.fleet import FleetQuery, fleet_cells, vector_samples
from collectors.intervals import MinuteAggregator
from collectors.mapping import LITELLM, Mapper
from sim import STATIC_WEIGHTS, SimulatedRouter, WorldSpec
from sim.server import RouterServer, compressed_clock

#: The time budget of a control tick (DESIGN.md: 50 ms for 50 series).
TICK_BUDGET_S = 0.050


def run(replicas: int, fill_seconds: float, queries: int) -> dict[str, float]:
    binary = shutil.which("prometheus")
    if binary is None:
        raise FileNotFoundError("prometheus")
    spec = WorldSpec()
    start = datetime(2026, 11, 9, 13, tzinfo=UTC)
    servers = [RouterServer(SimulatedRouter(spec, seed=i, start=start, weights=STATIC_WEIGHTS,
                                            clock=compressed_clock(60.0, start))).start() for i in range(replicas)]
    workdir = Path(tempfile.mkdtemp(prefix="diurnal-fleet-bench-"))
    port = free_port()
    targets = ", ".join(f'"{s.url.split("/")[2]}"' for s in servers)
    (workdir / "prometheus.yml").write_text(
        "global: {scrape_interval: 2s}\nscrape_configs:\n  - job_name: fleet-bench\n"
        f"    static_configs: [{{targets: [{targets}]}}]\n")
    proc = subprocess.Popen([binary, f"--config.file={workdir / 'prometheus.yml'}",
                             f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(timeout=30) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get(f"{base}/-/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("Prometheus did not start")
                time.sleep(0.5)
            time.sleep(fill_seconds)
            mapper = Mapper(LITELLM)
            query = FleetQuery.build(mapper, 'job="fleet-bench"', 60)
            api = PrometheusAPI(client, base, retries=0)
            fleet_s, fleet_cells_s, scrape_s = [], [], []
            series = 0
            parser, agg = ExpositionParser(), MinuteAggregator()
            for i in range(queries):  # alternate: the fleet query, then scraping every replica
                at = time.time() - 5
                t0 = time.perf_counter()
                result = api.query(query.expr, at)
                t1 = time.perf_counter()
                fleet_cells(mapper, vector_samples(result), int(at) // 60 * 60, 60)
                fleet_s.append(t1 - t0)
                fleet_cells_s.append(time.perf_counter() - t1)
                series = len(result)
                t0 = time.perf_counter()
                for s in servers:
                    agg.ingest(mapper.map(parser.parse(client.get(s.url).text)), float(i))
                scrape_s.append(time.perf_counter() - t0)
            raw = len(api.query('{job="fleet-bench", __name__=~"litellm_.*"}', time.time() - 5))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        for s in servers:
            s.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return {"replicas": replicas, "raw_series": raw, "fleet_series": series, "query_terms": query.metrics,
            "fleet_query_median_ms": statistics.median(fleet_s) * 1e3,
            "fleet_query_p95_ms": sorted(fleet_s)[int(0.95 * (len(fleet_s) - 1))] * 1e3,
            "fleet_cells_median_ms": statistics.median(fleet_cells_s) * 1e3,
            "scrape_all_median_ms": statistics.median(scrape_s) * 1e3,
            "tick_budget_ms": TICK_BUDGET_S * 1e3}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument("--fill-seconds", type=float, default=60.0, help="scraping before the measurement")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    try:
        r = run(args.replicas, args.fill_seconds, args.queries)
    except FileNotFoundError:
        print("bench.fleet needs the prometheus binary (apt-get install prometheus)", file=sys.stderr)
        return 2
    print(f"{r['replicas']:.0f} router replicas, {r['raw_series']:.0f} raw series in Prometheus; one window's fleet "
          f"query ({r['query_terms']:.0f} metrics, one round trip) answers {r['fleet_series']:.0f} summed series")
    print(f"  fleet query: median {r['fleet_query_median_ms']:.1f} ms (p95 {r['fleet_query_p95_ms']:.1f} ms) + "
          f"{r['fleet_cells_median_ms']:.2f} ms to cells; tick budget {r['tick_budget_ms']:.0f} ms (the query "
          f"runs off the tick, once per window)")
    print(f"  scraping every replica directly instead: median {r['scrape_all_median_ms']:.1f} ms "
          f"(ratio fleet/scrape-all {r['fleet_query_median_ms'] / r['scrape_all_median_ms']:.2f})")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(r, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
