"""The sidecar: scraping with failures, and `diurnal run` over real HTTP."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from controller import Controller, Settings
from controller.entrypoints.service import Scraper, tick
from sim import STATIC_WEIGHTS, SimulatedRouter, WorldSpec
from sim.server import RouterServer, compressed_clock
from tests.conftest import PrometheusServer, free_port, need_binary, wait_http

NOW = datetime(2026, 11, 9, 14, tzinfo=UTC)
#: Secrets planted in `diurnal run`'s config and environment; none may reach its log.
SECRETS = {"router": "router-secret-7c1f", "prometheus": "prom-secret-93ab", "api": "api-secret-51d2"}


def scraper_for(settings: Settings, handler: httpx.MockTransport) -> tuple[Controller, Scraper]:
    ctl = Controller.from_settings(settings, clock=lambda: NOW)
    client = httpx.Client(transport=handler)
    return ctl, Scraper(ctl, client, "http://router.invalid/metrics", settings)


def count(ctl: Controller, result: str) -> float:
    return ctl.registry.get_sample_value("diurnal_scrapes_total", {"result": result}) or 0.0


@pytest.mark.parametrize(
    ("handler", "result"),
    [
        pytest.param(lambda req: (_ for _ in ()).throw(httpx.ConnectError("refused", request=req)),
                     "unreachable", id="router-down"),
        pytest.param(lambda req: (_ for _ in ()).throw(httpx.ReadTimeout("slow", request=req)),
                     "unreachable", id="router-timeout"),
        pytest.param(lambda req: httpx.Response(500, text="boom"), "http_error", id="router-500"),
        pytest.param(lambda req: httpx.Response(200, text='bad{label="x} 1\n'), "malformed", id="malformed"),
    ],
)
def test_scrape_failures_never_raise_and_are_counted(settings: Settings, handler: object, result: str) -> None:
    ctl, scraper = scraper_for(settings, httpx.MockTransport(handler))  # type: ignore[arg-type]
    for _ in range(3):
        assert scraper.scrape_once() is False
    assert count(ctl, result) == 3
    assert scraper.throttle.failures == 3
    tick(ctl)  # the loop goes on and reverts to baseline for lack of data
    assert ctl.decision is not None and ctl.decision.weights == pytest.approx(STATIC_WEIGHTS)
    ctl.close()


def test_scrape_recovers_and_sends_the_bearer_token(tmp_path: Path, spec: WorldSpec) -> None:
    from controller.entrypoints.demo import demo_settings

    settings = demo_settings(tmp_path, spec, router={"model_providers": spec.model_providers(),
                                                     "bearer_token": "router-secret"})
    router = SimulatedRouter(spec, seed=1, start=NOW, weights=STATIC_WEIGHTS)
    router.advance(NOW.replace(minute=5))
    seen: list[str | None] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req.headers.get("authorization"))
        if len(seen) == 1:
            raise httpx.ConnectError("down", request=req)
        return httpx.Response(200, text=router.exposition(), headers={"content-type": "text/plain; version=0.0.4"})

    ctl, scraper = scraper_for(settings, httpx.MockTransport(handler))
    assert scraper.scrape_once() is False
    assert scraper.scrape_once() is True
    assert scraper.throttle.failures == 0
    assert seen == ["Bearer router-secret"] * 2
    assert count(ctl, "ok") == 1
    ctl.close()


def test_tick_failure_is_logged_counted_and_survived(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    ctl = Controller.from_settings(settings, clock=lambda: NOW)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ctl, "step", broken)
    tick(ctl)
    assert ctl.registry.get_sample_value("diurnal_control_tick_errors_total") == 1
    ctl.close()


@pytest.mark.integration
def test_diurnal_run_against_the_simulated_router_over_http(tmp_path: Path, spec: WorldSpec,
                                                            prometheus: PrometheusServer) -> None:
    """`diurnal run` scrapes a simulated router over HTTP on 127.0.0.1; Prometheus scrapes diurnal."""
    promtool = need_binary("promtool")
    router = SimulatedRouter(spec, seed=4, start=datetime.now(UTC), weights=STATIC_WEIGHTS,
                             clock=compressed_clock(120.0))
    server = RouterServer(router).start()
    port = free_port()
    config = tmp_path / "diurnal.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        "timezone: America/New_York\n"
        f"router:\n  metrics_url: {server.url}\n  scrape_interval_seconds: 0.5\n  bearer_token: {SECRETS['router']}\n"
        f"  model_providers: {json.dumps(spec.model_providers())}\n"
        f"api:\n  port: {port}\n"
        f"prometheus:\n  bearer_token: {SECRETS['prometheus']}\n  backfill_weeks: 0\n"
        "control:\n  tick_interval_seconds: 0.5\n"
        "policy:\n  providers:\n"
        + "".join(f"    {n}: {{baseline_weight: {w}}}\n" for n, w in STATIC_WEIGHTS.items())
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DIURNAL_API__TOKEN": SECRETS["api"], "DIURNAL_LOG_LEVEL": "DEBUG"}
    log_path = tmp_path / "diurnal.log"
    log_file = log_path.open("w")  # a file, not a pipe: nobody has to drain it while we wait
    proc = subprocess.Popen([sys.executable, "-m", "controller.entrypoints.cli", "run", "--config", str(config)],
                            stdout=log_file, stderr=subprocess.STDOUT, text=True, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/readyz", timeout=60)
        # Observations come from closed minutes, so wait for a wall-clock minute boundary (the
        # simulated clock runs 120x: a simulated minute per 0.5 s).
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            body = json.load(urllib.request.urlopen(f"{base}/v1/decision?explain=1", timeout=5))
            if any(o["signal"] == "request_rate" for o in body["observations"]):
                break
            time.sleep(0.5)
        assert body["mode"] == "observe"  # the safe default
        assert math.isclose(sum(body["weights"].values()), 1.0, abs_tol=1e-5)
        assert any(o["signal"] == "request_rate" and o["value"] > 0 for o in body["observations"]), body
        metrics = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        check = subprocess.run([promtool, "check", "metrics"], input=metrics, capture_output=True, text=True)
        assert check.returncode == 0 and not (check.stdout + check.stderr).strip(), check.stdout + check.stderr
        # A real Prometheus scrapes diurnal and can query its weights.
        with prometheus.scraping(f"127.0.0.1:{port}"):
            deadline = time.monotonic() + 120
            result: list[dict[str, object]] = []
            while time.monotonic() < deadline and not result:
                result = prometheus.query(f'diurnal_provider_weight{{kind="published",instance="127.0.0.1:{port}"}}')
                time.sleep(1)
        assert {r["metric"]["provider"] for r in result} == set(STATIC_WEIGHTS)  # type: ignore[index]
        # A write with the API token from the environment works (and is logged).
        req = urllib.request.Request(f"{base}/v1/overrides", method="POST", headers={
            "Authorization": f"Bearer {SECRETS['api']}", "Content-Type": "application/json"},
            data=json.dumps({"knob": "weights/openai", "value": 0.4, "ttl_seconds": 60, "reason": "test"}).encode())
        assert urllib.request.urlopen(req, timeout=5).status == 201
    except BaseException:
        print(log_path.read_text())
        raise
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log_file.close()
        server.stop()
    out = log_path.read_text()
    assert proc.returncode == 0, out
    assert "history flushed" in out
    assert "override" in out  # the write was logged, at DEBUG the scrapes too ...
    for name, secret in SECRETS.items():  # ... and no secret, from the config file or the environment
        assert secret not in out, f"the {name} secret is in the log"
    # The store outlived the process.
    from collectors.store import Store

    store = Store(tmp_path / "data")
    assert store.span() is not None and store.series("requests")
    store.close()
