"""Faults a sidecar meets in production, injected on loopback into a real `diurnal run`: a
router that trickles, black-holes or flaps, and SIGTERM while it does. The loop must keep
ticking, every scrape must end by its deadline, and SIGTERM must end the process in time."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from sim.faults import FaultyPeer
from tests.conftest import free_port, wait_http


@contextmanager
def diurnal_run(tmp_path: Path, config: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """`diurnal run` with ``config`` (YAML, the data dir and API port added), its log in a file."""
    port = free_port()
    path = tmp_path / "diurnal.yaml"
    path.write_text(f"data_dir: {tmp_path / 'data'}\napi:\n  port: {port}\n  token: fault-token\n" + config)
    log_path = tmp_path / "diurnal.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "controller.entrypoints.cli", "run", "--config", str(path)],
                                stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
            yield f"http://127.0.0.1:{port}", proc, log_path
        except BaseException:
            print(log_path.read_text())
            raise
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def metric(base: str, name: str, labels: str = "") -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


POLICY = "policy:\n  providers:\n    openai: {baseline_weight: 0.5}\n    anthropic: {baseline_weight: 0.5}\n"


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["trickle", "blackhole"])
def test_a_stalling_router_cannot_stall_scrapes_ticks_or_shutdown(tmp_path: Path, mode: str) -> None:
    with FaultyPeer(mode=mode, delay=0.5) as router, diurnal_run(tmp_path, (
            f"router:\n  metrics_url: {router.url}/metrics\n  scrape_interval_seconds: 1\n"
            "  scrape_timeout_seconds: 2\n"
            "control:\n  tick_interval_seconds: 1\n  shutdown_seconds: 8\n" + POLICY)) as (base, proc, log_path):
        time.sleep(9)
        # Each scrape ended by its 2 s deadline: several ran, none is still open.
        failed = metric(base, "diurnal_scrapes_total", '{result="unreachable"}')
        assert failed >= 3, failed
        assert router.requests >= failed
        assert metric(base, "diurnal_control_ticks_total") >= 5  # the loop went on
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        took = time.monotonic() - sent
    log = log_path.read_text()
    assert took < 8, f"SIGTERM took {took:.1f}s"
    assert proc.returncode == 0, log
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
            "control:\n  tick_interval_seconds: 1\n  shutdown_seconds: 4\n" + POLICY)) as (base, proc, log_path):
        deadline = time.monotonic() + 30
        while hook.requests == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert hook.requests >= 1  # a webhook push hangs, and so does a scrape
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        took = time.monotonic() - sent
    assert took < 4 + 2, f"SIGTERM took {took:.1f}s"
    assert "diurnal stopped" in log_path.read_text() or "did not stop within" in log_path.read_text()
