"""router.source prometheus against the real Prometheus: several simulated router replicas
(one port each) are scraped by it, one of them restarts (its counters reset) and one is
added mid-run; diurnal's fleet totals, read through Prometheus, match the sum of the
replicas' own counters within 1%, while a scrape-mode diurnal on one replica sees only its
share."""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from bench.sidecar import free_port
from collectors.backfill import backfill_fleet
from collectors.exposition import parse_exposition
from collectors.fleet import FleetQuery
from controller import Controller, load_settings
from controller.entrypoints.service import FleetReader, prometheus_api
from sim import STATIC_WEIGHTS, SimulatedRouter, WorldSpec
from sim.server import RouterServer
from tests.conftest import PrometheusServer, prom_query

pytestmark = pytest.mark.integration

SPEED = 120.0  # simulated seconds per second: the counters step twice a second
WINDOW = 10
LAG = 6.0


class SimClock:
    """A simulated clock that runs ``SPEED`` times faster and can be paused."""

    def __init__(self, start: datetime, running: bool = True) -> None:
        self._at = start
        self._since = time.monotonic()
        self._running = running
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            if not self._running:
                return self._at
            return self._at + timedelta(seconds=(time.monotonic() - self._since) * SPEED)

    def pause(self) -> None:
        with self._lock:
            if self._running:
                self._at += timedelta(seconds=(time.monotonic() - self._since) * SPEED)
                self._running = False

    def resume(self) -> None:
        with self._lock:
            if not self._running:
                self._since = time.monotonic()
                self._running = True


class Replica:
    def __init__(self, spec: WorldSpec, seed: int, start: datetime, port: int, running: bool = True) -> None:
        self.clock = SimClock(start, running)
        self.server = RouterServer(SimulatedRouter(spec, seed=seed, start=start, weights=STATIC_WEIGHTS,
                                                   clock=self.clock), port=port).start()
        self.port = port
        self.target = f"127.0.0.1:{port}"

    def requests(self) -> float:
        """Its own counters: requests summed over its deployments."""
        text = httpx.get(self.server.url, timeout=5).text
        return sum(s.value for s in parse_exposition(text) if s.name == "litellm_deployment_total_requests_total")

    def stop(self) -> None:
        self.server.stop()


def wait_scraped(prometheus: PrometheusServer, target: str, value: float, timeout: float = 30) -> None:
    """Until Prometheus' newest sample of the target's requests equals ``value``."""
    deadline = time.monotonic() + timeout
    q = f'sum(litellm_deployment_total_requests_total{{instance="{target}"}})'
    while time.monotonic() < deadline:
        got = prom_query(prometheus.url, q)
        if got and abs(float(got[0]["value"][1]) - value) < 1e-6:
            return
        time.sleep(0.5)
    raise AssertionError(f"Prometheus did not scrape {target} = {value} within {timeout:.0f}s")


def sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.time()))


@pytest.mark.timeout(600)
def test_fleet_totals_through_prometheus_match_the_replicas_own_counters(
        prometheus: PrometheusServer, spec: WorldSpec, tmp_path: Path) -> None:
    sim_start = datetime(2026, 11, 9, 13, tzinfo=UTC)  # a Monday morning in New York: busy
    ports = [free_port() for _ in range(4)]
    selector = 'instance=~"' + "|".join(f"127.0.0.1:{p}" for p in ports) + '"'
    settings = load_settings(
        data_dir=str(tmp_path / "fleet"), timezone=spec.tz, router={"source": "prometheus"},
        prometheus={"url": prometheus.url, "selector": selector, "window_seconds": WINDOW, "lag_seconds": LAG})
    fleet = Controller.from_settings(settings)
    one = Controller.from_settings(load_settings(data_dir=str(tmp_path / "one"), timezone=spec.tz))
    replicas = [Replica(spec, seed, sim_start, ports[seed]) for seed in range(3)]
    fourth = Replica(spec, 3, sim_start, ports[3], running=False)  # bound now, discovered later
    with contextlib.ExitStack() as stack:
        stack.callback(fourth.stop)
        for r in replicas:
            stack.enter_context(prometheus.scraping(r.target))
            stack.callback(r.stop)
        deadline = time.monotonic() + 30
        while len(prom_query(prometheus.url, f"up{{{selector}}} == 1")) < 3:
            assert time.monotonic() < deadline, "Prometheus did not scrape the three replicas"
            time.sleep(0.5)

        t0 = (int(time.time()) // WINDOW + 2) * WINDOW
        t1 = t0 + 15 * WINDOW
        sleep_until(t0)
        own0 = {r.port: r.requests() for r in replicas}
        client = stack.enter_context(httpx.Client(timeout=10))
        reader = FleetReader(fleet, prometheus_api(settings, client, retries=1),
                             FleetQuery.build(fleet.mapper, selector, WINDOW), settings, start=t0 + WINDOW,
                             max_windows=1)
        own_before_reset = 0.0
        own1: dict[int, float] | None = None
        restarted = False
        added: Replica | None = None
        while reader.next_end <= t1 or own1 is None:
            now = time.time()
            if not restarted and now >= t0 + 5 * WINDOW:
                # replica 2 restarts: its last counts reach Prometheus, then it serves from zero
                r = replicas[2]
                r.clock.pause()
                own_before_reset = r.requests()
                wait_scraped(prometheus, r.target, own_before_reset)
                at = r.clock()
                r.stop()
                replicas[2] = Replica(spec, 7, at, r.port)
                stack.callback(replicas[2].stop)
                restarted = True
            if added is None and now >= t0 + 9 * WINDOW:
                # a fourth replica: discovered, scraped at zero, then serving
                added = fourth
                stack.enter_context(prometheus.scraping(added.target))
                wait_scraped(prometheus, added.target, 0.0)
                added.clock.resume()
                replicas.append(added)
            if own1 is None and time.time() >= t1:
                own1 = {r.port: r.requests() for r in replicas}
            reader.read_once()  # one window at most, once it is LAG old
            if own1 is None:  # the scrape-mode diurnal reads replica 0 alone, as often as Prometheus
                one.ingest_exposition(httpx.get(replicas[0].server.url, timeout=5).text, at=datetime.now(UTC))
            sleep_until(min(time.time() + 1, t1) if own1 is None and time.time() < t1 else time.time() + 1)
        assert added is not None and restarted and own1 is not None

    expected = (sum(own1[p] - own0[p] for p in ports[:2])       # two replicas throughout
                + (own_before_reset - own0[ports[2]]) + own1[ports[2]]  # the one that restarted
                + own1[ports[3]])                                # the one added
    fleet.flush()
    seen = sum(p.value for p in fleet.store.counters("requests", 0, 2**40))
    one.flush()
    one_seen = sum(p.value for p in one.store.counters("requests", 0, 2**40))
    # Backfill evaluates the same expression at the same window ends: the same history, no seam.
    history = Controller.from_settings(load_settings(
        data_dir=str(tmp_path / "history"), timezone=spec.tz, router={"source": "prometheus"},
        prometheus={"url": prometheus.url, "selector": selector, "window_seconds": WINDOW}))
    with httpx.Client(timeout=30) as client:
        backfill_fleet(history.store, history.mapper, prometheus_api(settings, client),
                       FleetQuery.build(history.mapper, selector, WINDOW), start=t0, end=t1)
    backfilled = sum(p.value for p in history.store.counters("requests", 0, 2**40))
    history.close()
    print(f"\nfleet requests over {t1 - t0}s: replicas' own counters {expected:.0f}, diurnal through Prometheus "
          f"{seen:.0f} ({seen / expected - 1:+.2%}), backfilled afterwards {backfilled:.0f}; scrape-mode diurnal "
          f"on one replica {one_seen:.0f} ({one_seen / seen:.1%} of the fleet)")
    assert backfilled == pytest.approx(seen, rel=1e-6)
    assert seen == pytest.approx(expected, rel=0.01)
    assert own1[ports[0]] - own0[ports[0]] == pytest.approx(one_seen, rel=0.05)
    assert 0.15 < one_seen / seen < 0.45  # about 1/N of 3 to 4 replicas
    fleet.close()
    one.close()
