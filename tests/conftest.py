"""Shared fixtures. Integration tests need real components (Prometheus, promtool): they skip
on a laptop without them and fail under CI (CI=true), where .ci/run installs them."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from controller.core import Controller
from controller.demo import demo_settings
from controller.settings import Settings
from sim import SimulatedRouter, WorldSpec

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
NY = ZoneInfo("America/New_York")


def need_binary(name: str) -> str:
    """The binary's path; skip without it on a laptop, fail under CI."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name} is not installed (apt-get install prometheus)"
        if IN_CI:
            pytest.fail(f"{msg}; CI must provide it")
        pytest.skip(msg)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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

    def set_targets(self, targets: list[str]) -> None:
        tmp = self.sd_file.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": targets, "labels": {}}]))
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
        server = PrometheusServer(url, Path(sd))
        yield server
        server.set_targets([])
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
