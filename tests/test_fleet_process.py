"""`diurnal run` with ``router.source: prometheus``, as a process: the real binary reads the fleet
through the real Prometheus, which scrapes two simulated router replicas whose latency
histograms carry only a ``model`` label (LiteLLM's own do too). Every signal the weights
policy needs is present for every provider, nothing falls back for a missing signal, and the
request rate the decision is based on is the two replicas' sum, not one replica's."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sim import STATIC_WEIGHTS, SimulatedRouter, WorldSpec
from sim.server import RouterServer, compressed_clock
from tests.conftest import PrometheusServer, free_port, wait_http

pytestmark = pytest.mark.integration


def gauge(metrics: str, name: str, **labels: str) -> float | None:
    for line in metrics.splitlines():
        if not line.startswith(name + "{"):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name):line.rindex("}") + 1]))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.mark.timeout(450)
def test_diurnal_run_reads_the_fleet_through_prometheus_with_latency(tmp_path: Path, spec: WorldSpec,
                                                                     prometheus: PrometheusServer) -> None:
    start = datetime.now(UTC)
    replicas = [RouterServer(SimulatedRouter(spec, seed=seed, start=start, weights=STATIC_WEIGHTS,
                                             clock=compressed_clock(10.0, start))).start() for seed in (1, 2)]
    targets = [r.url.split("//", 1)[1].split("/", 1)[0] for r in replicas]
    selector = 'instance=~"' + "|".join(targets) + '"'
    port = free_port()
    config = tmp_path / "diurnal.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        f"timezone: {spec.tz}\n"
        f"router:\n  source: prometheus\n  model_providers: {json.dumps(spec.model_providers())}\n"
        f"prometheus:\n  url: {prometheus.url}\n  selector: '{selector}'\n  window_seconds: 10\n"
        "  lag_seconds: 6\n  backfill_weeks: 0\n"
        f"api:\n  port: {port}\n"
        "control:\n  tick_interval_seconds: 1\n  observation_window_minutes: 2\n"
        "policy:\n  providers:\n"
        + "".join(f"    {n}: {{baseline_weight: {w}}}\n" for n, w in STATIC_WEIGHTS.items())
    )
    log_path = tmp_path / "diurnal.log"
    with contextlib.ExitStack() as stack:
        for target in targets:
            stack.enter_context(prometheus.scraping(target))
        log_file = stack.enter_context(log_path.open("w"))
        proc = subprocess.Popen([sys.executable, "-m", "controller.entrypoints.cli", "run", "--config", str(config)],
                                stdout=log_file, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        base = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{base}/readyz", timeout=60)
            # The replicas began mid-minute: that first minute holds a part of a minute's
            # requests, so the rate over a window holding it is diluted. The window is of whole
            # minutes once it starts after that one: the next minute, two more (the window), and
            # the read's lag and window before the last of them closes.
            whole = (int(start.timestamp()) // 60 + 1) * 60 + 2 * 60 + 6 + 10 + 5
            deadline = time.monotonic() + 330
            present: dict[str, float | None] = {}
            body: dict[str, object] = {}
            while time.monotonic() < deadline:
                metrics = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
                present = {p: gauge(metrics, "diurnal_signal_present", provider=p, signal="latency")
                           for p in STATIC_WEIGHTS}
                body = json.load(urllib.request.urlopen(f"{base}/v1/decision?explain=1", timeout=5))
                observed = {o["provider"]: o["value"] for o in body["observations"]  # type: ignore[attr-defined]
                            if o["signal"] == "request_rate"}
                if all(v == 1.0 for v in present.values()) and set(STATIC_WEIGHTS) <= set(observed) \
                        and time.time() > whole:
                    break
                time.sleep(1)
            assert all(v == 1.0 for v in present.values()), present
            assert gauge(metrics, "diurnal_signal_present", signal="requests") == 1.0
            assert not gauge(metrics, "diurnal_fallback", reason="MissingSignal")
            assert urllib.request.urlopen(f"{base}/readyz", timeout=5).status == 200
            # The latency the decision sees is the fleet's, per provider.
            p95 = {o["provider"]: o["value"] for o in body["observations"]  # type: ignore[attr-defined]
                   if o["signal"] == "latency_p95"}
            assert set(STATIC_WEIGHTS) <= set(p95) and all(v > 0 for v in p95.values()), p95
            # The requests it decides on are the two replicas' sum, not one replica's: against
            # Prometheus' own rates of both and of one (its window and diurnal's differ, so not to
            # the percent: the fleet test compares the stored totals to the replicas' own
            # counters within 1%).
            total = sum(observed[p] for p in STATIC_WEIGHTS)
            both = prometheus.query(f"sum(rate(litellm_deployment_total_requests_total{{{selector}}}[1m]))")
            one = prometheus.query(f'sum(rate(litellm_deployment_total_requests_total{{instance="{targets[0]}"}}[1m]))')
            fleet_rate, one_rate = float(both[0]["value"][1]), float(one[0]["value"][1])
            assert fleet_rate > 1.5 * one_rate
            assert 1.2 * one_rate < total < 1.3 * fleet_rate, (total, fleet_rate, one_rate)
        except BaseException:
            print(log_path.read_text())
            raise
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            for r in replicas:
                r.stop()
