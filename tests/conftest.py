"""Shared fixtures. Integration tests need real components (Prometheus, promtool): they skip
on a laptop without them and fail under CI (CI=true), where .ci/run installs them."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bench.sidecar import free_port
from controller.entrypoints.demo import demo_settings
from controller.loop import Controller
from controller.settings import Settings
from sim import SimulatedRouter, WorldSpec
from sim.scenarios import Scenario

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
NY = ZoneInfo("America/New_York")


def need(present: bool, missing: str) -> None:
    """A component the test needs: skip without it on a laptop, fail under CI (CI=true), where
    .ci/run provides everything."""
    if present:
        return
    if IN_CI:
        pytest.fail(f"{missing}; CI must provide it")
    pytest.skip(missing)


def need_binary(name: str, install: str = "apt-get install prometheus") -> str:
    """The binary's path; skip without it on a laptop, fail under CI."""
    path = shutil.which(name)
    need(path is not None, f"{name} is not installed ({install})")
    assert path is not None
    return path


def need_real_data(path: Path) -> Path:
    """A file or folder of ../shared/data/real (never copied into the repo)."""
    need(path.exists(), f"{path} is not here (../shared/data/real beside the checkout)")
    return path


def wait_http(url: str, timeout: float = 30.0, ok: tuple[int, ...] = (200,)) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status in ok:
                    return
        except urllib.error.HTTPError as exc:
            last = exc.code
        except OSError as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer {ok} within {timeout}s (last: {last})")


@pytest.fixture
def spec() -> WorldSpec:
    return WorldSpec()


@pytest.fixture
def settings(tmp_path: Path, spec: WorldSpec) -> Settings:
    return demo_settings(tmp_path / "data", spec)


@pytest.fixture
def monday() -> datetime:
    """Monday 2026-11-09 00:00 New York: an ordinary week after the autumn DST change."""
    return datetime(2026, 11, 9, tzinfo=NY)


def prom_query(url: str, promql: str) -> list[dict[str, Any]]:
    """An instant query against the Prometheus at ``url``; the result vector."""
    q = urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=10) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@dataclass
class PrometheusServer:
    url: str
    sd_file: Path

    @contextlib.contextmanager
    def scraping(self, target: str) -> Iterator[None]:
        """Prometheus scrapes ``target`` (host:port) while in the block. Targets are added to and
        removed from the file-discovery list under a file lock, so tests on parallel workers
        can share the one Prometheus."""
        self._update(lambda targets: targets | {target})
        try:
            yield
        finally:
            self._update(lambda targets: targets - {target})

    def _update(self, change: Callable[[set[str]], set[str]]) -> None:
        with (self.sd_file.parent / "targets.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                groups = json.loads(self.sd_file.read_text() or "[]")
            except json.JSONDecodeError:
                groups = []
            now = {t for g in groups for t in g.get("targets", [])}
            tmp = self.sd_file.with_suffix(".tmp")
            tmp.write_text(json.dumps([{"targets": sorted(change(now)), "labels": {}}]))
            tmp.replace(self.sd_file)

    def query(self, promql: str) -> list[dict[str, Any]]:
        return prom_query(self.url, promql)


@pytest.fixture(scope="session")
def prometheus() -> Iterator[PrometheusServer]:
    """The Prometheus that .ci/run started, or one started here (file service discovery)."""
    url = os.environ.get("DIURNAL_TEST_PROMETHEUS_URL")
    sd = os.environ.get("DIURNAL_TEST_PROMETHEUS_SD_FILE")
    if url and sd:
        wait_http(f"{url}/-/ready")
        yield PrometheusServer(url, Path(sd))
        return
    binary = need_binary("prometheus")
    workdir = Path(tempfile.mkdtemp(prefix="diurnal-prom-"))
    sd_file = workdir / "targets.json"
    sd_file.write_text("[]")
    (workdir / "prometheus.yml").write_text(
        "global: {scrape_interval: 2s, evaluation_interval: 2s}\n"
        "scrape_configs:\n"
        "  - job_name: diurnal-tests\n"
        f"    file_sd_configs: [{{files: ['{sd_file}'], refresh_interval: 2s}}]\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready")
        yield PrometheusServer(f"http://127.0.0.1:{port}", sd_file)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        shutil.rmtree(workdir, ignore_errors=True)



def warm_up(ctl: Controller, router: SimulatedRouter, start: datetime, end: datetime,
            step: timedelta = timedelta(minutes=30)) -> None:
    """Feed ``router``'s weeks from ``start`` to ``end`` quickly: coarse scrapes, static
    weights, and no refits until the end (the next ``step`` refits once, on all of it)."""
    in_step, ctl.refit_in_step = ctl.refit_in_step, False
    now = start
    try:
        while now < end:
            now = min(now + step, end)
            router.advance(now)
            ctl.ingest_exposition(router.exposition(), at=now)
            ctl.step(at=now)
    finally:
        ctl.refit_in_step = in_step


@dataclass
class SidecarHistory:
    """A bench world's router, and a controller observing it with ``data_dir`` as its store."""

    scenario: Scenario
    settings: Settings
    router: SimulatedRouter
    now: datetime  #: the controller's clock
    ctl: Controller = field(init=False)


def sidecar_history(data_dir: Path, days: float, world_name: str = "capacity-busy-1") -> SidecarHistory:
    """``days`` of ``world_name`` (seed 1, static weights, the pool at its static size) up to
    its scored start, ingested every five minutes without a tick, as an observing sidecar
    scraping would store them. The controller is left open (the caller closes it)."""
    from bench.closedloop import bench_settings, world
    from sim.scenarios import BENCH_WEIGHTS, POOL

    scenario = world(world_name, 1)
    settings = bench_settings(scenario, data_dir, "observe")
    start = scenario.scored_start - timedelta(days=days)
    router = SimulatedRouter(scenario.spec, seed=1, start=start, weights=BENCH_WEIGHTS)
    router.scale(POOL, scenario.static_replicas)
    got = SidecarHistory(scenario, settings, router, start)
    got.ctl = Controller.from_settings(settings, clock=lambda: got.now, refit_in_step=False)
    try:
        while got.now < scenario.scored_start:
            got.now += timedelta(minutes=5)
            router.advance(got.now)
            got.ctl.ingest_exposition(router.exposition(), at=got.now)
    except BaseException:
        got.ctl.close()
        raise
    return got


@dataclass
class ServedDemo:
    """`diurnal demo --serve`, run once per test session: what it printed, its data dir (store,
    audit log) and its live API."""

    url: str
    data_dir: Path
    summary: str


@pytest.fixture(scope="session")
def served_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedDemo]:
    """The demo takes about a minute: the tests of its summary, of ``diurnal explain`` on its
    audit log and of its /metrics in Prometheus share one run."""
    work = tmp_path_factory.mktemp("served-demo")
    port = free_port()
    log = work / "stdout.txt"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "controller.entrypoints.cli", "demo", "--serve", "--port",
                                 str(port), "--data-dir", str(work / "demo")], stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline and "Serving the demo" not in log.read_text():
            time.sleep(0.5)
        assert proc.poll() is None, f"the demo exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        wait_http(f"{url}/readyz", timeout=60)
        yield ServedDemo(url, work / "demo", log.read_text())
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not ended within ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


#: Tests that share one expensive session fixture. Under pytest-xdist (``make test`` runs 3
#: workers) each group is one scheduling unit, so its fixture runs once (pytest-xdist's own
#: ``--dist loadgroup`` cannot group them: it rewrites node ids, which pytest 9.2 no longer reads).
SHARED = {
    "served_demo": (
        "tests/test_demo.py::test_diurnal_demo_cli_prints_the_summary",
        "tests/test_demo.py::test_the_readme_shows_what_the_demo_prints",
        "tests/test_observability.py::test_promtool_accepts_the_exposition",
        "tests/test_observability.py::test_metrics_cover_what_dashboards_need",
        "tests/test_observability.py::test_every_panel_query_returns_data",
    ),
    "bench_quick": (
        "tests/test_closedloop.py::test_diurnal_bench_quick_end_to_end",
        "tests/test_closedloop.py::test_a_run_is_deterministic_given_its_seed",
    ),
}


def _shared_unit(nodeid: str) -> str | None:
    return next((name for name, tests in SHARED.items() if nodeid.startswith(tests)), None)


#: The longest tests (a minute or so each on 2 cores): started first, so that the short ones
#: fill the workers at the end. Only an order; a stale entry costs nothing.
LONGEST_FIRST = (
    "test_fleet_totals_through_prometheus_match_the_replicas_own_counters",
    "test_the_proxy_serves_by_diurnals_weights_moves_off_a_slow_deployment_and_reverts_without_diurnal",
    "test_backfill_from_promtool_blocks_matches_direct_ingest", "test_diurnal_run_against_the_simulated_router_over_http",
    "test_replay_from_prometheus_reads_the_history_a_real_prometheus_holds",
    "test_the_readme_picture_is_drawn_from_a_backfilled_prometheus", "test_dockerfile_install_steps_work_in_a_fresh_venv",
    "test_prometheus_scrapes_the_router_and_backfill_matches_direct_scrape", "test_refit_benchmark_small",
    "test_embedding_api_learns_the_week_and_acts_before_the_peak",
    "test_a_provider_whose_capacity_drops_at_nine_is_kept_away_week_after_week",
    "test_in_closed_loop_a_real_surge_keeps_its_capacity_and_a_holiday_releases_it",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The shared units first (the longest), then the longest tests, then the rest in their
    order. A test that uses a shared fixture must be listed with it in ``SHARED``, or a second
    worker would run the fixture again."""
    stray = [(item.nodeid, fixture) for item in items for fixture in SHARED
             if fixture in getattr(item, "fixturenames", ()) and _shared_unit(item.nodeid) != fixture]
    if stray:
        raise pytest.UsageError(f"list these tests with their fixture in SHARED in tests/conftest.py: {stray}")

    def rank(item: pytest.Item) -> int:
        if _shared_unit(item.nodeid) is not None:
            return 0
        return 1 if item.name.split("[")[0] in LONGEST_FIRST else 2

    items.sort(key=rank)  # stable: each rank keeps its collection order


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Per-test load balancing, except that each group of ``SHARED`` is one unit."""
    from xdist.scheduler import LoadScopeScheduling

    class Scheduler(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _shared_unit(nodeid) or nodeid

    return Scheduler(config, log)
