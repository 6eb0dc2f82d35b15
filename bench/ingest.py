"""Ingest at scale: weeks of one-minute router expositions through the embedding API.

    .venv/bin/python -m bench.ingest [--weeks 4] [--cases litellm-3,fleet-200] [--modes ingest,step]

What a history import, a replay or an embedder feeding history does: one exposition per
simulated minute into ``Controller.ingest_exposition(text, at=...)``, either

- ``ingest``: nothing else (no ``step()``: minutes must close as the ingest clock moves), or
- ``step``: ``step(at=...)`` after every minute, with the litellm preset, a ``replicas`` prewarm
  action and no cluster (every tick's prewarm fails: its warning must be said once).

Cases: ``litellm-3``, the simulated LiteLLM router of :mod:`sim` (3 providers, strong and weak
models); ``fleet-200``, a LiteLLM exposition of 20 providers x 10 models (LiteLLM's 35 latency
buckets per model) with daily and weekly demand. Each (case, mode) runs in its own process, so
its peak RSS is its own. Printed per run: the time per simulated week (flat when ingest cost
does not grow with the history fed), the total, the peak RSS, the journal's rows and open
series-minutes at the end, and how many warning lines the run logged. Only the controller's
calls are timed; the expositions are rendered by a separate process (the router's side: its
memory is not diurnal's), and the time spent waiting for them is reported apart.

Budgets (2 cores), litellm-3: ``ingest`` under 60 s, ``step`` under 10 minutes, RSS under 300 MB.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from sim.world import LATENCY_BUCKETS

BUDGETS = {("litellm-3", "ingest"): 60.0, ("litellm-3", "step"): 600.0}
RSS_BUDGET_MB = 300.0
START = datetime(2026, 10, 5, tzinfo=ZoneInfo("America/New_York"))  # a Monday; spans the DST change


class FleetExposition:
    """A LiteLLM /metrics of ``providers`` x ``models`` deployments, its demand following an
    hour-of-day and weekday shape (cumulative counters, rendered each minute)."""

    def __init__(self, providers: int = 20, models: int = 10, seed: int = 0, tz: str = "America/New_York") -> None:
        self.tz = ZoneInfo(tz)
        self.rng = np.random.default_rng(seed)
        self.names = [(f"p{p:02d}", f"p{p:02d}-m{m}") for p in range(providers) for m in range(models)]
        n = len(self.names)
        self.share = self.rng.dirichlet(np.ones(n)) * n  # mean 1
        self.base_latency = self.rng.uniform(0.4, 3.0, n)
        self.requests = np.zeros(n)
        self.failed = np.zeros(n)
        self.buckets = np.zeros((n, len(LATENCY_BUCKETS)))
        self.latency_sum = np.zeros(n)
        self.tokens = np.zeros((n, 2))
        self.spend = np.zeros(n)
        self.deps = [f'api_provider="{p}",litellm_model_name="{m}",model_id="{m}-1",requested_model="chat"'
                     for p, m in self.names]
        self.models = [f'model="{m}",requested_model="chat"' for _, m in self.names]
        self.bounds = np.log(np.asarray(LATENCY_BUCKETS))

    def model_providers(self) -> dict[str, str]:
        return {m: p for p, m in self.names}

    def advance(self, at: datetime) -> None:
        local = at.astimezone(self.tz)
        hour = local.hour + local.minute / 60
        day = 0.15 + 0.85 * max(0.0, np.sin(np.pi * (hour - 6) / 14)) if 6 <= hour <= 20 else 0.15
        week = 1.0 if local.weekday() < 5 else 0.45
        n = self.rng.poisson(20.0 * day * week * self.share)
        self.requests += n
        self.failed += self.rng.binomial(n, 0.01)
        mu = np.log(self.base_latency * (1 + day))
        z = (self.bounds[None, :] - mu[:, None]) / 0.5
        from scipy.special import ndtr  # noqa: PLC0415 - scipy is there with sim's numpy

        self.buckets += np.round(n[:, None] * ndtr(z))
        self.latency_sum += n * np.exp(mu + 0.125)
        self.tokens += n[:, None] * np.array([900.0, 250.0])
        self.spend += n * 0.002

    def exposition(self) -> str:
        lines: list[str] = []
        for metric, values in (("litellm_deployment_total_requests", self.requests),
                               ("litellm_deployment_success_responses", self.requests - self.failed)):
            lines.append(f"# TYPE {metric} counter")
            lines += [f"{metric}_total{{{d}}} {v:.1f}" for d, v in zip(self.deps, values, strict=True)]
        lines.append("# TYPE litellm_deployment_failure_responses counter")
        lines += [f'litellm_deployment_failure_responses_total{{{d},exception_status="429"}} {v:.1f}'
                  for d, v in zip(self.deps, self.failed, strict=True)]
        lines.append("# TYPE litellm_llm_api_latency_metric histogram")
        les = [f'le="{le}"' for le in LATENCY_BUCKETS]
        for i, lbl in enumerate(self.models):
            row = self.buckets[i]
            lines += [f"litellm_llm_api_latency_metric_bucket{{{lbl},{le}}} {v:.1f}" for le, v in zip(les, row, strict=True)]
            ok = self.requests[i] - self.failed[i]
            lines.append(f'litellm_llm_api_latency_metric_bucket{{{lbl},le="+Inf"}} {ok:.1f}')
            lines.append(f"litellm_llm_api_latency_metric_sum{{{lbl}}} {self.latency_sum[i]:.3f}")
            lines.append(f"litellm_llm_api_latency_metric_count{{{lbl}}} {ok:.1f}")
        for metric, values in (("litellm_spend_metric", self.spend), ("litellm_input_tokens_metric", self.tokens[:, 0]),
                               ("litellm_output_tokens_metric", self.tokens[:, 1])):
            lines.append(f"# TYPE {metric} counter")
            lines += [f"{metric}_total{{{m}}} {v:.4f}" for m, v in zip(self.models, values, strict=True)]
        return "\n".join(lines) + "\n"


def _source(case: str) -> tuple[Callable[[datetime], str], dict[str, str], list[str]]:
    """(render at a time, model -> provider, providers) for a case."""
    if case == "litellm-3":
        from sim import STATIC_WEIGHTS, SimulatedRouter, WorldSpec  # noqa: PLC0415

        spec = WorldSpec()
        router = SimulatedRouter(spec, seed=1, start=START.astimezone(UTC), weights=STATIC_WEIGHTS)

        def render(at: datetime) -> str:
            router.advance(at)
            return router.exposition()
        return render, spec.model_providers(), [p.name for p in spec.providers]
    if case == "fleet-200":
        fleet = FleetExposition()

        def render_fleet(at: datetime) -> str:
            fleet.advance(at)
            return fleet.exposition()
        return render_fleet, fleet.model_providers(), sorted(set(fleet.model_providers().values()))
    raise SystemExit(f"bench.ingest: unknown case {case!r} (litellm-3, fleet-200)")


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines = 0
        self.prewarm = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.lines += 1
        self.prewarm += "prewarm" in record.getMessage()


def serve_expositions(case: str, weeks: int) -> None:
    """The router's side (its own process, so that the simulator's memory is not counted as
    diurnal's): one exposition per simulated minute on stdout, each framed by its length."""
    render, model_providers, providers = _source(case)
    out = sys.stdout.buffer
    out.write(json.dumps({"model_providers": model_providers, "providers": providers}).encode() + b"\n")
    now = START.astimezone(UTC)
    for _ in range(weeks * 7 * 1440):
        now += timedelta(minutes=1)
        data = render(now).encode()
        out.write(b"%d\n" % len(data) + data)
    out.flush()


def _router(case: str, weeks: int) -> tuple[subprocess.Popen[bytes], dict[str, str], list[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "bench.ingest", "--weeks", str(weeks), "--serve", case],
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None
    head = json.loads(proc.stdout.readline())
    return proc, head["model_providers"], head["providers"]


def run_one(case: str, mode: str, weeks: int, data_dir: Path) -> dict[str, object]:
    from controller.loop import Controller  # noqa: PLC0415
    from controller.settings import load_settings  # noqa: PLC0415

    router, model_providers, providers = _router(case, weeks)
    assert router.stdout is not None
    pipe = router.stdout

    def render(_: datetime) -> str:
        return pipe.read(int(pipe.readline())).decode()
    policy: dict[str, object] = {"providers": {p: {"baseline_weight": 1.0 / len(providers)} for p in providers}}
    if mode == "step":
        policy["prewarm"] = [{"name": "gamma", "kind": "replicas", "target": "llm/gamma", "rpm_per_unit": 200,
                              "min_units": 1, "max_units": 10}]
    settings = load_settings(data_dir=data_dir, timezone="America/New_York",
                             router={"preset": "litellm", "model_providers": model_providers},
                             guardrails={"mode": "act"}, forecast={"workers": 0}, policy=policy)
    counted = _Count()
    logging.getLogger().addHandler(counted)
    now = START.astimezone(UTC)
    ctl = Controller.from_settings(settings, clock=lambda: now)
    ctl.decompose = False
    per_week: list[float] = []
    rendering = 0.0
    for _ in range(weeks):
        spent = 0.0
        for _ in range(7 * 1440):
            now += timedelta(minutes=1)
            t0 = time.perf_counter()
            text = render(now)
            t1 = time.perf_counter()
            ctl.ingest_exposition(text, at=now)
            if mode == "step":
                ctl.step(at=now)
            spent += time.perf_counter() - t1
            rendering += t1 - t0
        per_week.append(spent)
        print(f"  {case}/{mode}: week {len(per_week)} {spent:.1f}s", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    ctl.flush()
    flush_s = time.perf_counter() - t0
    router.wait()
    out = {"case": case, "mode": mode, "weeks": weeks, "per_week_s": per_week, "total_s": sum(per_week) + flush_s,
           "wait_s": rendering, "series": ctl.store.series_count(), "journal_rows": ctl.store.journal_rows,
           "open_at_end": len(ctl.collect.aggregator), "warning_lines": counted.lines,
           "prewarm_warning_lines": counted.prewarm,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    ctl.close()
    return out


def _runs(cases: list[str], modes: list[str]) -> Iterator[tuple[str, str]]:
    for case in cases:
        for mode in modes:
            yield case, mode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.split("\n\n")[0])
    ap.add_argument("--weeks", type=int, default=4, help="simulated weeks fed per run (default 4)")
    ap.add_argument("--cases", default="litellm-3,fleet-200", help="litellm-3, fleet-200 (comma-separated)")
    ap.add_argument("--modes", default="ingest,step", help="ingest, step (comma-separated)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--one", nargs=2, metavar=("CASE", "MODE"), help=argparse.SUPPRESS)
    ap.add_argument("--serve", metavar="CASE", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.weeks < 1:
        ap.error("--weeks must be at least 1")
    if args.serve:
        serve_expositions(args.serve, args.weeks)
        return 0
    if args.one:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        with tempfile.TemporaryDirectory(prefix="diurnal-bench-ingest-") as d:
            print(json.dumps(run_one(args.one[0], args.one[1], args.weeks, Path(d))))
        return 0
    results = []
    for case, mode in _runs(args.cases.split(","), args.modes.split(",")):
        proc = subprocess.run([sys.executable, "-m", "bench.ingest", "--weeks", str(args.weeks), "--one", case, mode],
                              stdout=subprocess.PIPE, text=True, check=False)
        if proc.returncode != 0:
            print(f"{case}/{mode}: failed (exit {proc.returncode})")
            return 1
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"{'case/mode':<18} {'per simulated week (s)':<32} {'total':>8} {'budget':>8} {'RSS MB':>7} "
          f"{'journal':>8} {'open':>6} {'warnings':>8}")
    ok = True
    for r in results:
        budget = BUDGETS.get((str(r["case"]), str(r["mode"])))
        weeks = " ".join(f"{w:.1f}" for w in r["per_week_s"])
        within = budget is None or float(r["total_s"]) <= budget
        ok &= within and (budget is None or float(r["peak_rss_mb"]) <= RSS_BUDGET_MB)
        print(f"{r['case']}/{r['mode']:<8} {weeks:<32} {r['total_s']:>7.1f}s "
              f"{(f'{budget:.0f}s' if budget else '-'):>8} {r['peak_rss_mb']:>7.0f} {r['journal_rows']:>8} "
              f"{r['open_at_end']:>6} {r['warning_lines']:>8}")
    rendered = ", ".join(f"{r['case']}/{r['mode']} {r['wait_s']:.0f}s" for r in results)
    print(f"(waiting for the router process's expositions, not timed above: {rendered})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
