"""Faults a sidecar meets in production, injected on loopback into a real `diurnal run`: a
router that trickles, black-holes or flaps, and SIGTERM while it does. The loop must keep
ticking, every scrape must end by its deadline, and SIGTERM must end the process in time."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from bench.sidecar import Sidecar, free_port
from sim.faults import FaultyPeer


@contextmanager
def diurnal_run(tmp_path: Path, config: str, env: dict[str, str] | None = None,
                token: str = "fault-token") -> Iterator[Sidecar]:
    """`diurnal run` with ``config`` (YAML; the data dir, API port and token added), its log
    in a file (printed if the test fails)."""
    sc = Sidecar(tmp_path, config, token=token, env=env)
    try:
        sc.start()
        yield sc
    except BaseException:
        print(sc.log())
        raise
    finally:
        sc.kill()


POLICY = "policy:\n  providers:\n    openai: {baseline_weight: 0.5}\n    anthropic: {baseline_weight: 0.5}\n"


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["trickle", "blackhole"])
def test_a_stalling_router_cannot_stall_scrapes_ticks_or_shutdown(tmp_path: Path, mode: str) -> None:
    with FaultyPeer(mode=mode, delay=0.5) as router, diurnal_run(tmp_path, (
            f"router:\n  metrics_url: {router.url}/metrics\n  scrape_interval_seconds: 1\n"
            "  scrape_timeout_seconds: 2\n"
            "control:\n  tick_interval_seconds: 1\n  shutdown_seconds: 8\n" + POLICY)) as sc:
        time.sleep(9)
        # Each scrape ended by its 2 s deadline: several ran, none is still open.
        failed = sc.metric("diurnal_scrapes_total", '{result="unreachable"}')
        assert failed >= 3, failed
        assert router.requests >= failed
        assert sc.metric("diurnal_control_ticks_total") >= 5  # the loop went on
        code, took = sc.stop(timeout=30)
    log = sc.log()
    assert took < 8, f"SIGTERM took {took:.1f}s"
    assert code == 0, log
    assert "diurnal stopped" in log
    # The scrape failure is logged once, then throttled; the scheduler's own warnings too.
    assert log.count("maximum number of running instances") <= 1, log
    assert log.count(f"scrape of {router.url}/metrics failed") == 1, log


@pytest.mark.integration
def test_sigterm_ends_the_process_by_the_deadline_whatever_hangs(tmp_path: Path) -> None:
    """A webhook receiver that never answers, a router that trickles: the process still ends
    within control.shutdown_seconds."""
    with FaultyPeer(mode="trickle", delay=0.5) as router, FaultyPeer(mode="blackhole") as hook, diurnal_run(tmp_path, (
            f"router:\n  metrics_url: {router.url}/metrics\n  scrape_interval_seconds: 1\n"
            "  scrape_timeout_seconds: 30\n"
            "guardrails:\n  mode: act\n"
            f"publish:\n  webhook:\n    url: {hook.url}/hook\n    timeout_seconds: 60\n"
            "control:\n  tick_interval_seconds: 1\n  shutdown_seconds: 4\n" + POLICY)) as sc:
        assert sc.wait_for(lambda: hook.requests >= 1, 30)  # a webhook push hangs, and so does a scrape
        _, took = sc.stop(timeout=30)
    assert took < 4 + 2, f"SIGTERM took {took:.1f}s"
    assert "diurnal stopped" in sc.log() or "did not stop within" in sc.log()


#: Secrets planted in every place a config can hold one; none may reach the log or an API body.
PLANTED = {
    "router_url_password": "rpass-3f9c1e", "router_token": "rtoken-8d2a77", "prom_url_password": "ppass-51be0c",
    "prom_basic_password": "pbasic-c4e913", "prom_query_token": "pquery-0a7d5e", "webhook_url_password": "wpass-6e21fd",
    "webhook_token": "wtoken-93c0aa", "otlp_url_password": "opass-2b8e44", "otlp_header": "ohdr-77f1d2",
    "api_token": "atoken-e05b19", "prewarm_url_password": "hpass-19ac3e",
}


@pytest.mark.integration
def test_no_planted_secret_reaches_the_log_or_an_api_body(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from sim import STATIC_WEIGHTS, SimulatedRouter, WorldSpec
    from sim.server import RouterServer, compressed_clock

    spec = WorldSpec()
    p = PLANTED
    sim_router = RouterServer(SimulatedRouter(spec, seed=2, start=datetime.now(UTC), weights=STATIC_WEIGHTS,
                                              clock=compressed_clock(60.0))).start()
    down = free_port()  # nothing listens: every call to it fails, and is logged
    try:
        with FaultyPeer(sim_router.url.rsplit("/", 1)[0], mode="flapping") as router, \
                FaultyPeer(mode="error") as hook:
            router_url = router.url.replace("http://", f"http://scraper:{p['router_url_password']}@")
            config = (
                "log_level: DEBUG\n"
                f"router:\n  metrics_url: {router_url}/metrics\n  scrape_interval_seconds: 0.5\n"
                f"  bearer_token: {p['router_token']}\n  model_providers: {json.dumps(spec.model_providers())}\n"
                f"prometheus:\n  url: http://backfill:{p['prom_url_password']}@127.0.0.1:{down}/prom?token={p['prom_query_token']}\n"
                f"  basic_auth_username: u\n  basic_auth_password: {p['prom_basic_password']}\n  backfill_weeks: 1\n"
                "  timeout_seconds: 2\n"
                "guardrails:\n  mode: act\n"
                f"publish:\n  webhook:\n    url: {hook.url.replace('http://', 'http://hook:' + p['webhook_url_password'] + '@')}/hook\n"
                f"    bearer_token: {p['webhook_token']}\n    max_attempts: 2\n    backoff_seconds: 0.1\n"
                f"tracing:\n  otlp_endpoint: http://otel:{p['otlp_url_password']}@127.0.0.1:{down}/v1/traces\n"
                f"  otlp_headers: {{authorization: {p['otlp_header']}}}\n  timeout_seconds: 1\n"
                "control:\n  tick_interval_seconds: 0.5\n  shutdown_seconds: 8\n"
                "policy:\n  providers:\n"
                + "".join(f"    {n}: {{baseline_weight: {w}}}\n" for n, w in STATIC_WEIGHTS.items())
                + "  prewarm:\n    - name: warm\n      kind: webhook\n"
                f"      target: http://warm:{p['prewarm_url_password']}@127.0.0.1:{down}/warm\n"
                "      max_units: 4\n      lead_minutes: 10\n      rpm_per_unit: 100\n")
            # The API token comes from the environment, as in the chart.
            with diurnal_run(tmp_path, config, env={"DIURNAL_API__TOKEN": p["api_token"]}, token="") as sc:
                base = sc.base
                bodies = []
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and (router.requests < 6 or hook.requests < 2):
                    time.sleep(0.5)
                for path in ("/v1/decision?explain=1", "/v1/forecast", "/v1/overrides", "/metrics", "/readyz",
                             "/openapi.json"):
                    bodies.append(httpx.get(base + path, timeout=10).text)
                bodies.append(httpx.post(f"{base}/v1/events", content=b"{bad",
                                         headers={"Authorization": "Bearer wrong"}, timeout=10).text)
                sc.stop(timeout=30)
            log = sc.log()
    finally:
        sim_router.stop()
    assert router.requests >= 6 and hook.requests >= 1, log  # the secrets were used
    assert "backfill" in log and "scrape of" in log and "webhook" in log, log  # and the failures logged
    for where, text in [("the log", log)] + [(f"API body {i}", b) for i, b in enumerate(bodies)]:
        for name, secret in PLANTED.items():
            assert secret not in text, f"{name} leaked into {where}"
    assert "***@" in log  # the URLs are named, masked
