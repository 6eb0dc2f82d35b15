"""A real `diurnal run` process on loopback, for the reliability suite and the fault tests:
started from a YAML config, its log in a file, stopped with SIGTERM or killed with SIGKILL,
restarted on the same data dir."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]


#: Ports handed out for servers that bind later: below the kernel's ephemeral range
#: (net.ipv4.ip_local_port_range, 32768-60999 by default), from which every ``bind(0)``
#: server and every outgoing connection takes its port. A port picked from that range stays
#: free until its server binds it (a process may take seconds to start), and a server bound
#: to port 0 meanwhile can be given it.
_PORTS = (15000, 32000)
_handed: set[int] = set()


def free_port() -> int:
    """A loopback port that is free now and outside the ephemeral range (not handed out twice
    by this process)."""
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(*_PORTS)
        if port in _handed:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed.add(port)
        return port
    raise RuntimeError(f"no free port in {_PORTS[0]}-{_PORTS[1]}")


class Sidecar:
    """``diurnal run --config`` with ``config`` (YAML text) plus the data dir, the API port
    and the write token, which it adds."""

    def __init__(self, workdir: Path, config: str, *, token: str = "reliability-token",
                 env: dict[str, str] | None = None, preexec: Callable[[], Any] | None = None) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.token = token
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "diurnal.yaml"
        self.config.write_text(f"data_dir: {self.data_dir}\napi:\n  port: {self.port}\n"
                               + (f"  token: {token}\n" if token else "") + config)
        self.log_path = workdir / "diurnal.log"
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **(env or {})}
        self.preexec = preexec
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def start(self, timeout: float = 60.0) -> Sidecar:
        self.starts += 1
        log = self.log_path.open("a")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "controller.entrypoints.cli", "run", "--config", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT, preexec_fn=self.preexec)  # noqa: PLW1509
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"diurnal run exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.base}/healthz", timeout=2):
                    return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.2)
        raise RuntimeError(f"diurnal run did not answer within {timeout:.0f}s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 60.0) -> tuple[int, float]:
        """SIGTERM; returns the exit code and the seconds it took."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL: no flush, no clean exit."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.base + path, timeout=kw.pop("timeout", 10), **kw)

    def metric(self, name: str, labels: str = "") -> float:
        """One sample of the sidecar's /metrics (0 when absent)."""
        text = self.get("/metrics").text
        m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    def wait_for(self, what: Callable[[], bool], timeout: float, every: float = 0.25) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if what():
                    return True
            except (httpx.HTTPError, OSError):
                pass
            time.sleep(every)
        return False

    def __enter__(self) -> Sidecar:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        if self.alive():
            try:
                self.stop(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
