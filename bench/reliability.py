"""`make reliability`: what diurnal survives, with figures.

Everything runs on 127.0.0.1 against real `diurnal run` processes (``bench.sidecar``) and the
simulated router's HTTP server, bounded in count and time:

- **fuzz**: schemathesis against the sidecar's own ``/openapi.json`` with the write token (no
  5xx, every response as documented), and hypothesis on the exposition and event parsers (no
  crash, nothing non-finite stored);
- **faults**: a router that is slow, trickles, black-holes, answers 500 or garbage, flaps or
  is down; Prometheus gone in the middle of a backfill; a webhook and a Kubernetes API that
  hang or fail; a full data dir; SIGKILL during writes, refits and publishes; the wall
  clock jumping an hour either way; a DST week. For each: the loop keeps ticking, decisions
  fall back as documented, nothing acknowledged is lost, and it recovers by itself;
- **load**: ``POST /v1/events`` at twice the 50k events/s budget, ``GET /v1/decision`` at
  1,000 requests/s during a full refit; p50/p99 and errors.

    python -m bench.reliability [--quick] [--json bench-results/reliability.json]

``--quick`` (what ``make test`` and CI run) keeps every case but shortens the loads and the
fuzzing. Exit status 1 when any check fails. Needs ``schemathesis`` (the dev extra) and, for
the backfill case, a Prometheus: ``DIURNAL_TEST_PROMETHEUS_URL`` or the ``prometheus`` binary
(skipped without one, except under ``CI=true``).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.sidecar import ROOT, Sidecar, free_port
from policies import ReasonCode
from sim import STATIC_WEIGHTS, SimulatedRouter, WorldSpec
from sim.faults import FaultyPeer
from sim.server import RouterServer, compressed_clock

SPEC = WorldSpec()
STALE = str(ReasonCode.StaleInputs)
#: Events per second the ingest path is budgeted for (DESIGN.md); the load runs at twice it.
EVENTS_BUDGET = 50_000


@dataclass
class Result:
    section: str
    case: str
    ok: bool
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False


class Suite:
    def __init__(self, quick: bool, workdir: Path) -> None:
        self.quick = quick
        self.workdir = workdir
        self.results: list[Result] = []

    def dir(self, name: str) -> Path:
        d = self.workdir / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def record(self, section: str, case: str, ok: bool, detail: str, **figures: Any) -> None:
        self.results.append(Result(section, case, ok, detail, figures))
        mark = "ok  " if ok else "FAIL"
        print(f"  [{mark}] {section}/{case}: {detail}", flush=True)

    def skip(self, section: str, case: str, why: str) -> None:
        if os.environ.get("CI") == "true":
            self.record(section, case, False, f"cannot run under CI: {why}")
            return
        self.results.append(Result(section, case, True, why, skipped=True))
        print(f"  [skip] {section}/{case}: {why}", flush=True)

    def run(self, section: str, case: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:  # a case that crashes is a failed case, and the suite goes on
            self.record(section, case, False, f"{type(exc).__name__}: {exc}"[:600])


# ---- the world: a simulated router, a sidecar configured for it ----------------------------

def providers_yaml(indent: str = "    ") -> str:
    return "".join(f"{indent}{n}: {{baseline_weight: {w}, min_weight: 0.05, max_weight: 0.7}}\n"
                   for n, w in STATIC_WEIGHTS.items())


def sidecar_config(router_url: str | None, extra: str = "", *, tick: float = 0.5, stale: float = 4.0,
                   mode: str = "observe", prewarm: str = "") -> str:
    """The sidecar's YAML; ``extra`` adds whole groups (``publish``, ``prometheus``), ``prewarm``
    the items of ``policy.prewarm``."""
    router = (f"router:\n  metrics_url: {router_url}\n  scrape_interval_seconds: 0.5\n  scrape_timeout_seconds: 1.5\n"
              f"  model_providers: {json.dumps(SPEC.model_providers())}\n" if router_url else
              f"router:\n  model_providers: {json.dumps(SPEC.model_providers())}\n")
    return (f"timezone: {SPEC.tz}\n{router}"
            f"control:\n  tick_interval_seconds: {tick}\n  checkpoint_seconds: 1\n  shutdown_seconds: 10\n"
            f"guardrails:\n  mode: {mode}\n  stale_after_seconds: {stale}\n"
            f"policy:\n  latency_slo_seconds: {SPEC.slo_seconds}\n  providers:\n{providers_yaml()}"
            + (f"  prewarm:\n{prewarm}" if prewarm else "") + extra)


@contextmanager
def sim_router(speed: float = 60.0) -> Iterator[RouterServer]:
    server = RouterServer(SimulatedRouter(SPEC, seed=3, start=datetime.now(UTC), weights=STATIC_WEIGHTS,
                                          clock=compressed_clock(speed))).start()
    try:
        yield server
    finally:
        server.stop()


def event_lines(n: int, at: datetime | None = None, provider: str | None = None) -> bytes:
    ts = (at or datetime.now(UTC)).timestamp()
    names = list(STATIC_WEIGHTS)
    return "\n".join(json.dumps({
        "ts": ts, "provider": provider or names[i % len(names)], "model": "m", "route": "chat",
        "latency": 0.5 + (i % 7) * 0.3, "status": 429 if i % 50 == 0 else 200, "input_tokens": 400,
        "output_tokens": 120, "cost": 0.002}) for i in range(n)).encode()


class EventPusher:
    """Posts batches of events and counts what was acknowledged (HTTP 200)."""

    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar
        self.acked = 0
        self.refused = 0
        self.client = httpx.Client(timeout=30)

    def push(self, n: int = 200) -> int:
        try:
            r = self.client.post(f"{self.sidecar.base}/v1/events", content=event_lines(n),
                                 headers=self.sidecar.auth)
        except httpx.HTTPError:
            self.refused += n
            return 0
        if r.status_code == 200:
            got = int(r.json()["accepted"])
            self.acked += got
            return got
        self.refused += n
        return 0

    def close(self) -> None:
        self.client.close()


def stored_requests(data_dir: Path) -> float:
    """Requests in the store, after replaying the journal as the next run would."""
    from collectors.store import Store

    store = Store(data_dir, tz=SPEC.tz)
    try:
        store.recover_open()
        assert store.non_finite() == 0, "a non-finite number in the store"
        return sum(p.value for p in store.counters("requests", 0, 2**40))
    finally:
        store.close()


def decision_codes(sidecar: Sidecar) -> set[str]:
    body = sidecar.get("/v1/decision").json()
    return {r["code"] for r in body.get("reasons", [])}


# ---- fuzz -----------------------------------------------------------------------------------

SCHEMATHESIS_CONFIG = """
[[operations]]
include-path = "/v1/events"
# The body is JSON lines; which strings are valid events cannot be said in the OpenAPI
# document, so a schema-valid string may rightly be refused (422).
checks.positive_data_acceptance.enabled = false
"""


def fuzz_api(suite: Suite) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    if st is None:
        suite.skip("fuzz", "schemathesis", "schemathesis is not installed (pip install -e '.[dev]')")
        return
    d = suite.dir("fuzz")
    with sim_router() as router, Sidecar(d, sidecar_config(router.url)) as sc:
        sc.wait_for(lambda: sc.get("/readyz").status_code == 200, 60)
        EventPusher(sc).push(500)
        config = d / "schemathesis.toml"
        config.write_text(SCHEMATHESIS_CONFIG)
        report = d / "st-report.json"
        examples = 40 if suite.quick else 400
        # Every check (the default), less positive_data_acceptance on /v1/events (the config file).
        # The coverage phase is left out: with this hypothesis it dies on its own lambdas
        # (SystemError in hypothesis' lambda_sources), not on diurnal.
        cmd = [st, "--config-file", str(config), "run", f"{sc.base}/openapi.json",
               "--phases", "examples,fuzzing,stateful",
               "-H", f"Authorization: Bearer {sc.token}", "--max-examples", str(examples), "--seed", "7",
               "--report", "ndjson", "--report-ndjson-path", str(report), "--workers", "2",
               "--max-time", "60" if suite.quick else "900"]
        env = {**os.environ, "SCHEMATHESIS_HOOKS": "bench.st_hooks", "PYTHONPATH": str(ROOT)}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200, cwd=d)  # its cache goes there
        cases, failures = _st_counts(report)
        server_errors = sc.metric("diurnal_control_tick_errors_total")
    summary = out.stdout.strip().splitlines()[-3:] if out.stdout else []
    suite.record("fuzz", "schemathesis", out.returncode == 0,
                 f"{cases} cases over every operation, {failures} failures" + ("" if out.returncode == 0 else
                                                                               f": {' | '.join(summary)}"),
                 cases=cases, failures=failures, tick_errors=server_errors)
    if out.returncode != 0:
        print(out.stdout[-6000:], out.stderr[-2000:], flush=True)


def _st_counts(report: Path) -> tuple[int, int]:
    """Test cases run and failures found, from schemathesis' NDJSON event stream."""
    cases = failures = 0
    if not report.exists():
        return 0, 0
    for line in report.read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        for name, body in event.items() if isinstance(event, dict) else ():
            if name == "ScenarioFinished" and isinstance(body, dict):
                recorder = body.get("recorder") or {}
                cases += len(recorder.get("cases") or {})
                checks = recorder.get("checks") or {}
                failures += sum(1 for per_case in checks.values() for c in per_case
                                if isinstance(c, dict) and c.get("status") == "FAILURE")
    return cases, failures


def fuzz_parsers(suite: Suite) -> None:
    """hypothesis on the parsers and the store: ``tests/test_fuzz_parsers.py`` run long."""
    examples = 300 if suite.quick else 5000
    env = {**os.environ, "DIURNAL_FUZZ_EXAMPLES": str(examples)}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                          str(ROOT / "tests" / "test_fuzz_parsers.py")],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=3600)
    tail = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-300:]
    if out.returncode != 0:
        print(out.stdout[-5000:], flush=True)
    suite.record("fuzz", "parsers", out.returncode == 0,
                 f"{examples} generated inputs per property (expositions, event lines, stored cells): {tail}",
                 examples=examples)


# ---- faults: the router ---------------------------------------------------------------------

ROUTER_FAULTS = ("slow", "trickle", "blackhole", "error", "garbage", "flapping", "refuse")


def router_fault(suite: Suite, mode: str) -> None:
    d = suite.dir(f"router-{mode}")
    delay = {"slow": 1.0, "trickle": 0.5}.get(mode, 3.0)  # slow: answers within the 1.5 s deadline
    with sim_router() as router, FaultyPeer(router.url.rsplit("/", 1)[0], delay=delay) as peer, \
            Sidecar(d, sidecar_config(f"{peer.url}/metrics")) as sc:
        pusher = EventPusher(sc)
        assert sc.wait_for(lambda: sc.metric("diurnal_scrapes_total", '{result="ok"}') >= 2, 30), "no scrape before"
        pusher.push(500)  # a router that is down pushes no events either: before and after the fault
        peer.mode = mode
        ticks_before = sc.metric("diurnal_control_ticks_total")
        fault_seconds = 6.0
        time.sleep(fault_seconds)
        ticks = sc.metric("diurnal_control_ticks_total") - ticks_before
        codes = decision_codes(sc)
        # No data for stale_after: the weights fall back to the baseline (StaleInputs), as documented.
        no_data = mode not in ("slow", "flapping")
        fallback_ok = (STALE in codes) if no_data else True
        peer.mode = "ok"
        ok_before = sc.metric("diurnal_scrapes_total", '{result="ok"}')
        healed = time.monotonic()
        recovered = sc.wait_for(lambda: sc.metric("diurnal_scrapes_total", '{result="ok"}') >= ok_before + 2, 30)
        recovery_s = time.monotonic() - healed
        pusher.push(100)
        code, stop_s = sc.stop()
        pusher.close()
    stored = stored_requests(sc.data_dir)
    events_ok = stored >= pusher.acked  # scraped requests come on top of the pushed ones
    ok = ticks >= fault_seconds / 0.5 * 0.6 and fallback_ok and recovered and events_ok and code == 0
    suite.record("faults", f"router {mode}", ok,
                 f"{ticks:.0f} ticks in {fault_seconds:.0f}s of fault, fallback "
                 f"{STALE if no_data else 'not needed'}{'' if fallback_ok else ' MISSING'}, recovered in "
                 f"{recovery_s:.1f}s, {pusher.acked} events acknowledged and kept, stopped in {stop_s:.1f}s",
                 ticks=ticks, recovery_seconds=round(recovery_s, 1), acked=pusher.acked, lost=0 if events_ok else -1)


def prometheus_url() -> tuple[str | None, Callable[[], None]]:
    """A Prometheus to backfill from: the CI one, or one started here."""
    url = os.environ.get("DIURNAL_TEST_PROMETHEUS_URL")
    if url:
        return url, lambda: None
    binary = shutil.which("prometheus")
    if binary is None:
        return None, lambda: None
    data = Path(tempfile.mkdtemp(prefix="diurnal-prom-"))
    (data / "prometheus.yml").write_text("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
    port = free_port()
    proc = subprocess.Popen([binary, f"--config.file={data / 'prometheus.yml'}", f"--storage.tsdb.path={data / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(60):
        try:
            httpx.get(f"{url}/-/ready", timeout=2).raise_for_status()
            break
        except httpx.HTTPError:
            time.sleep(0.5)

    def stop() -> None:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(data, ignore_errors=True)
    return url, stop


def prometheus_down_mid_backfill(suite: Suite) -> None:
    url, stop_prom = prometheus_url()
    if url is None:
        suite.skip("faults", "prometheus down mid-backfill", "no Prometheus (set DIURNAL_TEST_PROMETHEUS_URL)")
        return
    d = suite.dir("prometheus-down")
    try:
        # Answers the first query_range calls, then refuses every connection.
        with FaultyPeer(url, switch_after=(3, "refuse")) as peer, Sidecar(d, sidecar_config(
                None, f"prometheus:\n  url: {peer.url}\n  backfill_weeks: 2\n  timeout_seconds: 3\n")) as sc:
            failed = sc.wait_for(lambda: "backfill at start failed" in sc.log(), 90)
            ticks = sc.metric("diurnal_control_ticks_total")
            time.sleep(2)
            ticking = sc.metric("diurnal_control_ticks_total") > ticks
            pushed = EventPusher(sc)
            pushed.push(300)
            code, _ = sc.stop()
            pushed.close()
        kept = stored_requests(sc.data_dir) == pushed.acked
    finally:
        stop_prom()
    suite.record("faults", "prometheus down mid-backfill", failed and ticking and kept and code == 0,
                 f"{peer.requests} queries answered then refused: backfill gave up with a warning, the loop kept "
                 f"ticking, {pushed.acked} events acknowledged and kept", queries=peer.requests)


# ---- faults: the actuators --------------------------------------------------------------------

def actuator_fault(suite: Suite, which: str, mode: str) -> None:
    """The webhook publisher or the Kubernetes scaler hangs or fails: publishing is off the
    tick, so ticks stay short; failures are counted; it recovers when the peer does."""
    d = suite.dir(f"{which}-{mode}")
    token = d / "sa-token"
    token.write_text("k8s-token")
    with sim_router() as router, FaultyPeer(delay=20.0) as peer:
        if which == "webhook":
            extra = (f"publish:\n  webhook:\n    url: {peer.url}/hook\n    timeout_seconds: 2\n    max_attempts: 2\n"
                     "    backoff_seconds: 0.2\n")
            metric, labels = "diurnal_publishes_total", '{publisher="webhook",result="ok"}'
        else:
            extra = (f"publish:\n  kubernetes:\n    api_url: {peer.url}\n    token_path: {token}\n    timeout_seconds: 2\n"
                     "  file:\n    path: " + str(d / "decision.json") + "\n")
            metric, labels = "diurnal_prewarm_actions_total", '{action="gpu",result="ok"}'
        prewarm = ("" if which == "webhook" else "    - {name: gpu, kind: replicas, target: llm/vllm, "
                   "rpm_per_unit: 50, min_units: 1, max_units: 4, lead_minutes: 10}\n")
        peer.mode = mode
        with Sidecar(d, sidecar_config(router.url, extra, mode="act", prewarm=prewarm)) as sc:
            ticks0 = sc.metric("diurnal_control_ticks_total")
            time.sleep(6)
            ticks = sc.metric("diurnal_control_ticks_total") - ticks0
            slow_ticks = _tick_p99(sc)
            peer.mode = "ok"
            recovered = sc.wait_for(lambda: sc.metric(metric, labels) >= 1 or peer.requests > 0 and mode == "ok", 40)
            code, stop_s = sc.stop()
    ok = ticks >= 6 and recovered and code == 0 and slow_ticks < 1.0
    suite.record("faults", f"{which} {mode}", ok,
                 f"{ticks:.0f} ticks in 6s (tick p99 under {slow_ticks:g}s), {peer.requests} calls reached it, "
                 f"{'recovered' if recovered else 'did NOT recover'} once it answered, stopped in {stop_s:.1f}s",
                 ticks=ticks, calls=peer.requests)


def _tick_p99(sc: Sidecar) -> float:
    """The smallest histogram bucket holding 99% of the ticks."""
    text = sc.get("/metrics").text
    rows = [(float(line.split('le="')[1].split('"')[0]), float(line.rsplit(" ", 1)[1]))
            for line in text.splitlines() if line.startswith("diurnal_control_tick_duration_seconds_bucket")]
    total = max((c for _, c in rows), default=0.0)
    return next((le for le, c in sorted(rows) if c >= 0.99 * total), math.inf) if total else 0.0


# ---- faults: the data dir, SIGKILL ----------------------------------------------------------

def data_dir_full(suite: Suite) -> None:
    """The file-size limit of the process (RLIMIT_FSIZE) stands in for a full volume: every
    write past it fails like ENOSPC, without a mount. Events posted meanwhile are refused
    (503), never acknowledged and lost; when the limit goes, it goes on by itself."""
    d = suite.dir("disk-full")
    with sim_router() as router, Sidecar(d, sidecar_config(router.url)) as sc:
        assert sc.proc is not None
        pusher = EventPusher(sc)
        pusher.push(500)
        time.sleep(1.5)
        full = 64 * 1024
        resource.prlimit(sc.proc.pid, resource.RLIMIT_FSIZE, (full, resource.RLIM_INFINITY))
        refused_before = pusher.refused
        for _ in range(20):
            pusher.push(2000)
            time.sleep(0.2)
        refused = pusher.refused - refused_before
        ticking = sc.metric("diurnal_control_ticks_total")
        time.sleep(1.5)
        ticking = sc.metric("diurnal_control_ticks_total") > ticking
        resource.prlimit(sc.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        accepted_after = sc.wait_for(lambda: pusher.push(100) > 0, 30)
        code, _ = sc.stop()
        pusher.close()
    stored = stored_requests(sc.data_dir)
    ok = refused > 0 and ticking and accepted_after and stored >= pusher.acked and code == 0
    suite.record("faults", "data dir full", ok,
                 f"{refused} events refused with 503 while full (none acknowledged and lost), the loop "
                 f"{'kept ticking' if ticking else 'STOPPED ticking'}, writes "
                 f"{'resumed by themselves' if accepted_after else 'DID NOT resume'}; {pusher.acked} acknowledged, "
                 f"{stored:.0f} requests stored; exit code {code}",
                 refused=refused, acked=pusher.acked, ticking=ticking, exit_code=code)


def prefill(data_dir: Path, weeks: int = 3) -> None:
    """``weeks`` of the simulated router's history in a store, so that `diurnal run` refits
    for seconds at start (a refit to kill, to poll during)."""
    from controller import Controller
    from controller.entrypoints.demo import demo_settings

    end = datetime.now(UTC).replace(second=0, microsecond=0)
    start = end - timedelta(weeks=weeks)
    settings = demo_settings(data_dir, SPEC, publish={})
    ctl = Controller.from_settings(settings, clock=lambda: start, refit_in_step=False)
    router = SimulatedRouter(SPEC, seed=5, start=start, weights=STATIC_WEIGHTS)
    now = start
    try:
        while now < end:
            now = min(now + timedelta(minutes=30), end)
            router.advance(now)
            ctl.ingest_exposition(router.exposition(), at=now)
            ctl.step(at=now)
    finally:
        ctl.close()
    for leftover in ("audit.jsonl", "overrides.json"):
        (data_dir / leftover).unlink(missing_ok=True)


def sigkill(suite: Suite) -> None:
    """Events are pushed without pause while the process is killed with SIGKILL again and
    again: in the middle of writes, of the refit it runs at start, of publishing the decision
    file. Each restart replays the journal; at the end every acknowledged event is stored."""
    d = suite.dir("sigkill")
    prefill(d / "data")
    kills = 3 if suite.quick else 10
    decision = d / "data" / "decision.json"
    with sim_router() as router:
        sc = Sidecar(d, sidecar_config(router.url, f"publish:\n  file:\n    path: {decision}\n", mode="act"))
        pusher = EventPusher(sc)
        stop = threading.Event()
        bad_files = 0
        in_refit = 0

        def push() -> None:
            while not stop.is_set():
                pusher.push(250)

        sc.start()
        thread = threading.Thread(target=push, daemon=True)
        thread.start()
        rng = random.Random(7)
        try:
            for _ in range(kills):
                time.sleep(rng.uniform(0.5, 4.0))
                refitting = sc.metric("diurnal_refit_duration_seconds_count") == 0
                sc.kill()
                in_refit += refitting
                if decision.exists():
                    try:
                        json.loads(decision.read_text())
                    except ValueError:
                        bad_files += 1
                sc.start()
            time.sleep(2)
        finally:
            stop.set()
            thread.join(60)
        code, _ = sc.stop()
        pusher.close()
    from controller.actuators.audit import AuditLog

    audit = AuditLog(d / "data" / "audit.jsonl").read()
    stored = stored_requests(sc.data_dir)
    # Scraped requests come on top; a SIGKILL may lose at most checkpoint_seconds of those.
    ok = stored >= pusher.acked and bad_files == 0 and code == 0 and len(audit) > 0
    suite.record("faults", "SIGKILL during writes, refits and publishes", ok,
                 f"{kills} kills ({in_refit} during the start-up refit), {pusher.acked} events acknowledged, all "
                 f"stored; the decision file always whole; {len(audit)} audit records readable",
                 kills=kills, acked=pusher.acked, lost=0 if stored >= pusher.acked else -1)


# ---- faults: time -----------------------------------------------------------------------------

def clock_jump(suite: Suite) -> None:
    """The wall clock jumps an hour ahead, then back (NTP stepping a bad clock): in process,
    with the controller's injected clock. Nothing crashes, nothing pushed is lost or counted
    twice, and the decisions come back from StaleInputs by themselves."""
    from controller import Controller
    from controller.entrypoints.demo import demo_settings

    d = suite.dir("clock-jump")
    now = datetime(2026, 11, 18, 10, tzinfo=UTC)
    clock = [now]
    settings = demo_settings(d / "data", SPEC, publish={}, guardrails={"mode": "act", "stale_after_seconds": 600})
    ctl = Controller.from_settings(settings, clock=lambda: clock[0])
    router = SimulatedRouter(SPEC, seed=9, start=now - timedelta(hours=2), weights=STATIC_WEIGHTS)
    pushed = stale_seen = recovered = errors = 0
    true_now = now
    try:
        for minute in range(180):
            true_now = now + timedelta(minutes=minute)
            shift = timedelta(hours=1) if 60 <= minute < 90 else timedelta(hours=-1) if 90 <= minute < 120 \
                else timedelta(0)
            clock[0] = true_now + shift
            router.advance(true_now)
            try:
                ctl.ingest_exposition(router.exposition(), at=clock[0])
                batch = ctl.ingest_events(event_lines(20, at=clock[0]))
                pushed += batch.accepted
                d_ = ctl.step(at=clock[0])
            except Exception:
                errors += 1
                continue
            codes = {r.code for r in d_.reasons}
            if 60 <= minute < 120 and STALE in codes:
                stale_seen += 1
            if minute >= 150 and STALE not in codes:
                recovered += 1
    finally:
        ctl.close()
    from collectors.store import Store

    store = Store(settings.data_dir, tz=settings.timezone)
    events = sum(p.value for p in store.counters("requests", 0, 2**40) if p.key.model == "m")
    store.close()
    ok = errors == 0 and events == pushed and recovered > 0
    suite.record("faults", "wall clock +1 h then -1 h", ok,
                 f"{errors} errors; {pushed} events pushed, {events:.0f} stored (none lost or doubled); "
                 f"{stale_seen} ticks held at the baseline during the jumps; steering after them "
                 f"({recovered} of the last 30 ticks)",
                 pushed=pushed, stored=events)


def dst_week(suite: Suite) -> None:
    """A week across the fall-back change (America/New_York, 2026-11-01): the loop ticks
    throughout, the 25-hour day has 25 local hours, and the hours hold every minute once."""
    from collectors.store import Store
    from controller import Controller
    from controller.entrypoints.demo import demo_settings

    d = suite.dir("dst")
    start = datetime(2026, 10, 29, tzinfo=UTC)
    settings = demo_settings(d / "data", SPEC, publish={})
    ctl = Controller.from_settings(settings, clock=lambda: start, refit_in_step=False)
    router = SimulatedRouter(SPEC, seed=2, start=start, weights=STATIC_WEIGHTS)
    ticks = errors = 0
    now = start
    try:
        while now < start + timedelta(days=7):
            now += timedelta(minutes=10)
            router.advance(now)
            try:
                ctl.ingest_exposition(router.exposition(), at=now)
                ctl.step(at=now)
                ticks += 1
            except Exception:
                errors += 1
    finally:
        ctl.close()
    store = Store(settings.data_dir, tz=settings.timezone)
    minutes = sum(p.value for p in store.counters("requests", 0, 2**40))
    hours = store.hour_counters("requests", 0, 2**40)
    store.close()
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(SPEC.tz)
    nov1 = {p.ts for p in hours if datetime.fromtimestamp(p.ts, tz).date().isoformat() == "2026-11-01"}
    total_hours = sum(p.value for p in hours)
    ok = errors == 0 and len(nov1) == 25 and math.isclose(minutes, total_hours, rel_tol=1e-9)
    suite.record("faults", "DST week (fall back)", ok,
                 f"{ticks} ticks, {errors} errors; 2026-11-01 has {len(nov1)} local hours; hourly rollups hold "
                 f"{total_hours:.0f} of {minutes:.0f} minute requests", ticks=ticks)


# ---- load ---------------------------------------------------------------------------------

def load_events(suite: Suite) -> None:
    d = suite.dir("load-events")
    seconds = 15 if suite.quick else 120
    target = 2 * EVENTS_BUDGET
    batch = 5000
    with Sidecar(d, sidecar_config(None, tick=5.0)) as sc:
        body = event_lines(batch)
        latencies: list[float] = []
        acked = errors = 0
        lock = threading.Lock()
        end = time.monotonic() + seconds

        def worker() -> None:
            nonlocal acked, errors
            with httpx.Client(timeout=60) as client:
                while (t0 := time.monotonic()) < end:
                    try:
                        r = client.post(f"{sc.base}/v1/events", content=body, headers=sc.auth)
                        ok = r.status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    dt = time.monotonic() - t0
                    with lock:
                        latencies.append(dt)
                        if ok:
                            acked += batch
                        else:
                            errors += 1
                    # pace each of 2 workers to half the target
                    time.sleep(max(0.0, batch / (target / 2) - dt))

        elapsed = _in_threads(worker, 2)
        code, _ = sc.stop()
    stored = stored_requests(sc.data_dir)
    rate = acked / elapsed
    p50, p99 = _percentiles(latencies)
    ok = errors == 0 and stored == acked and code == 0
    suite.record("load", "POST /v1/events", ok,
                 f"{rate:,.0f} events/s held for {elapsed:.0f}s (target {target:,}/s, twice the budget); per batch "
                 f"of {batch:,}: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms; {errors} errors; {acked:,} acknowledged, "
                 f"{stored:,.0f} stored", events_per_second=round(rate), target=target, p50_ms=round(p50 * 1000),
                 p99_ms=round(p99 * 1000), errors=errors, lost=int(acked - stored))


def load_decisions(suite: Suite) -> None:
    """GET /v1/decision at 1,000 requests/s while the start-up refit of three weeks runs."""
    d = suite.dir("load-decisions")
    prefill(d / "data")
    seconds = 10 if suite.quick else 60
    target = 1000
    with sim_router() as router, Sidecar(d, sidecar_config(router.url)) as sc:
        sc.wait_for(lambda: sc.get("/v1/decision").status_code == 200, 60)
        latencies: list[float] = []
        errors = 0
        lock = threading.Lock()
        end = time.monotonic() + seconds
        refits_before = sc.metric("diurnal_refit_duration_seconds_count")

        def worker(rate: float) -> None:
            nonlocal errors
            etag = None
            with httpx.Client(timeout=10) as client:
                next_at = time.monotonic()
                while next_at < end:
                    next_at += 1 / rate
                    t0 = time.monotonic()
                    try:
                        r = client.get(f"{sc.base}/v1/decision", headers={"If-None-Match": etag} if etag else {})
                        ok = r.status_code in (200, 304)
                        etag = r.headers.get("etag", etag)
                    except httpx.HTTPError:
                        ok = False
                    with lock:
                        latencies.append(time.monotonic() - t0)
                        errors += not ok
                    time.sleep(max(0.0, next_at - time.monotonic()))

        elapsed = _in_threads(lambda: worker(target / 8), 8)
        refits = sc.metric("diurnal_refit_duration_seconds_count") - refits_before
        code, _ = sc.stop()
    rate = len(latencies) / elapsed
    p50, p99 = _percentiles(latencies)
    ok = errors == 0 and code == 0
    suite.record("load", "GET /v1/decision during a refit", ok,
                 f"{rate:,.0f} requests/s for {elapsed:.0f}s (target {target:,}/s) with {refits:.0f} refit(s) "
                 f"running; p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms; {errors} errors",
                 requests_per_second=round(rate), target=target, p50_ms=round(p50 * 1000, 1),
                 p99_ms=round(p99 * 1000, 1), errors=errors, refits=refits)


def _in_threads(fn: Callable[[], None], n: int) -> float:
    """Run ``fn`` in ``n`` threads at once; the seconds until the last one ended."""
    threads = [threading.Thread(target=fn) for _ in range(n)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - started


def _percentiles(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    values = sorted(values)
    return statistics.median(values), values[min(len(values) - 1, int(0.99 * len(values)))]


# ---- the report ---------------------------------------------------------------------------------

def table(results: list[Result]) -> str:
    lines = ["| section | case | result | figures |", "|---|---|---|---|"]
    for r in results:
        mark = "skipped" if r.skipped else "passed" if r.ok else "**FAILED**"
        lines.append(f"| {r.section} | {r.case} | {mark} | {r.detail} |")
    faults = [r for r in results if r.section == "faults" and not r.skipped]
    lost = sum(max(0, -int(r.figures.get("lost", 0))) for r in results)
    lines.append("")
    lines.append(f"Faults survived: {sum(r.ok for r in faults)} of {len(faults)}. Samples lost: {lost}.")
    return "\n".join(lines)


CASES: list[tuple[str, str, Callable[[Suite], None]]] = [
    ("fuzz", "schemathesis", fuzz_api),
    ("fuzz", "parsers", fuzz_parsers),
    *[("faults", f"router {m}", functools.partial(router_fault, mode=m)) for m in ROUTER_FAULTS],
    ("faults", "prometheus down mid-backfill", prometheus_down_mid_backfill),
    *[("faults", f"{w} {m}", functools.partial(actuator_fault, which=w, mode=m))
      for w in ("webhook", "kubernetes") for m in ("blackhole", "error")],
    ("faults", "data dir full", data_dir_full),
    ("faults", "SIGKILL", sigkill),
    ("faults", "clock jump", clock_jump),
    ("faults", "DST week", dst_week),
    ("load", "events", load_events),
    ("load", "decisions", load_decisions),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter loads and fuzzing (make test, CI)")
    parser.add_argument("--only", help="run the cases whose name contains this")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="diurnal-reliability-") as tmp:
        suite = Suite(args.quick, Path(tmp))
        for section, case, fn in CASES:
            if args.only and args.only not in f"{section}/{case}":
                continue
            print(f"{section}/{case} ...", flush=True)
            suite.run(section, case, lambda fn=fn: fn(suite))  # type: ignore[misc]
    print()
    print(table(suite.results))
    print(f"\n{'quick' if args.quick else 'full'} run in {time.monotonic() - started:.0f}s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([r.__dict__ for r in suite.results], indent=1, default=str))
    return 0 if all(r.ok for r in suite.results) else 1


if __name__ == "__main__":
    sys.exit(main())
