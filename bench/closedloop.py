"""``diurnal bench``: diurnal against static, reactive, autoscaled and cron routing, in closed
loop on simulated weeks, with a least-cost oracle of perfect foresight as the bound.

The worlds are drawn from world families (:mod:`sim.families`: 6 families x 4 seeds by
default, every parameter randomised within its range) so that no one scenario can be fitted;
the eight named scenarios of :mod:`sim.scenarios` can still be run by name. The report gives,
per world, each policy's figures, and over the suite, per policy, the median and the worst
world for SLO-violation minutes and cost, judged against the targets (see :func:`summary`).

Per scenario:

1. **Warm-up** (``warmup_weeks``, 3): the router runs as it did before diurnal: static
   weights and a fixed pool. diurnal is installed in ``observe`` mode: it scrapes the
   router's exposition every ``scrape_minutes`` and stores it, acting on nothing. Scenarios
   whose weeks before are the same (they differ only in the scored week: a holiday, a flash
   crowd) share one warm-up.
2. **Scored week**: every policy starts from a copy of that same router and steers it for
   one week, one tick a minute, on identical arrivals (the world's randomness is keyed by
   seed and minute, never by what a policy did). diurnal is restarted in ``act`` mode on the
   store it filled: it scrapes the exposition, steps, and its prewarm executor scales the
   pool through the same executor code that PATCHes ``deployments/scale`` in a cluster (here
   the scale client is the simulated cluster).

Scores come from the world's ground truth per minute, never from what a policy reports.

Why one long module: the benchmark's run loop, its scoring, its report (table, JSON,
plots) and its CLI are one program that reads top to bottom; the policies it compares live
in :mod:`bench.baselines`, the worlds in :mod:`sim`.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import pickle
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.baselines import BASELINES, REACTIVE, Knobs, Policy, apply, price_per_request
from controller.loop import Controller
from controller.settings import Settings, load_settings
from sim import AZURE_CONV_TOKENS, SimulatedRouter, TokenSizes
from sim.families import FAMILIES, draw, suite
from sim.scenarios import BENCH_WEIGHTS, NAMES, POOL, Scenario, pool_spec, scenarios
from sim.world import ProviderSpec

POLICIES = ("static", "reactive-routing", "hpa", "reactive", "cron", "diurnal", "oracle")
ROUTE = "chat"
#: ``--quick`` (CI): two worlds, scored on their Monday.
QUICK = ("capacity-busy-1", "flat-1")
#: The default suite: every family drawn with seeds 1 to 4.
SUITE = tuple(s.name for s in suite(4))


# ---- diurnal, embedded -------------------------------------------------------------------

def bench_settings(scenario: Scenario, data_dir: Path, mode: str) -> Settings:
    """What an operator of this router would configure: the router's weights as baselines (each
    provider kept at 5% at least, warm; an API at 70% at most, the pool diurnal sizes up to all
    of it), the paid providers' RPM limits and prices (per 1M tokens, blended over the strong and weak
    models at the router's escalation share), the SLO and error budget, and one prewarm action
    for the pool (a replica's throughput, its price per hour, and its warm-up time plus two
    minutes as the lead)."""
    spec = scenario.spec
    pool = pool_spec(spec)

    def price(p: ProviderSpec) -> dict[str, float]:
        blend = price_per_request(spec, p, spec.escalation_fraction) / price_per_request(spec, p, 1.0)
        return {"input_per_million_tokens": p.usd_per_1k_input * 1000 * blend,
                "output_per_million_tokens": p.usd_per_1k_output * 1000 * blend}

    providers = {
        p.name: {"baseline_weight": BENCH_WEIGHTS[p.name], "min_weight": 0.05,
                 # The pool's share is bounded by the replicas diurnal orders for it, not by a
                 # fixed fraction: a pool it scales for a surge may take the surge.
                 "max_weight": 0.7 if p.pool is None else 1.0,
                 **({"capacity_rpm": p.rpm_limit, "price": price(p)} if p.pool is None else {})}
        for p in spec.providers
    }
    return load_settings(
        data_dir=data_dir,
        timezone=spec.tz,
        router={"model_providers": spec.model_providers()},
        guardrails={"mode": mode, "stale_after_seconds": 900},
        forecast={"workers": 0},  # simulated time: fits inline, deterministic
        policy={
            "providers": providers, "latency_slo_seconds": spec.slo_seconds, "error_budget": spec.error_budget,
            "prewarm": [{"name": "pool", "kind": "replicas", "target": f"llm/{POOL}", "provider": POOL,
                         "rpm_per_unit": pool.rpm_per_replica, "min_units": 2, "max_units": 60,
                         "unit_price_per_hour": pool.usd_per_replica_hour,
                         "lead_minutes": pool.warmup_minutes + 2, "release_after_minutes": 30,
                         "scale_in": True}],  # no HPA on the pool: diurnal is its autoscaler
            # The escalation share stays where the router has it: no budget binds here.
            "routes": {ROUTE: {"baseline_fraction": spec.escalation_fraction,
                               "quality_floor": spec.escalation_fraction}},
        },
    )


class WorldScaler:
    """The simulated cluster's ``deployments/scale``, for diurnal's prewarm executor."""

    def __init__(self, world: SimulatedRouter) -> None:
        self.world = world

    def get_replicas(self, namespace: str, name: str) -> int:
        return self.world.pools()[name][1]

    def set_replicas(self, namespace: str, name: str, replicas: int) -> int:
        self.world.scale(name, replicas)
        return replicas

    def close(self) -> None:
        pass


class Diurnal:
    """diurnal through its embedding API, in ``act`` mode, on the store the warm-up filled."""

    name = "diurnal"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.ctl: Controller | None = None
        self.now: datetime | None = None

    def start(self, world: SimulatedRouter, scenario: Scenario) -> None:
        settings = bench_settings(scenario, self.data_dir, "act")
        self.now = scenario.scored_start
        self.ctl = Controller.from_settings(settings, clock=lambda: self.now or scenario.scored_start,
                                            scaler=lambda: WorldScaler(world))
        self.ctl.decompose = False  # the trend/daily/weekly split is for dashboards only

    def tick(self, now: datetime, world: SimulatedRouter) -> Knobs:
        assert self.ctl is not None
        self.now = now
        self.ctl.ingest_exposition(world.exposition(), at=now)
        decision = self.ctl.step(at=now)
        self.ctl.publish.prewarm.wait_idle()  # the scale call lands before the world moves on
        return Knobs(dict(decision.weights), decision.thresholds.get(f"thresholds/{ROUTE}/escalation_fraction"))

    def close(self) -> None:
        if self.ctl is not None:
            self.ctl.close()


def warm_up(scenario: Scenario, seed: int, data_dir: Path, scrape_minutes: int = 30) -> SimulatedRouter:
    """The weeks before: static weights and a fixed pool, diurnal observing."""
    world = SimulatedRouter(scenario.spec, seed=seed, start=scenario.start, weights=BENCH_WEIGHTS)
    world.scale(POOL, scenario.static_replicas)
    settings = bench_settings(scenario, data_dir, "observe")
    now = scenario.start
    ctl = Controller.from_settings(settings, clock=lambda: now, refit_in_step=False)
    try:
        while now < scenario.scored_start:
            now = min(now + timedelta(minutes=scrape_minutes), scenario.scored_start)
            world.advance(now)
            ctl.ingest_exposition(world.exposition(), at=now)
            ctl.step(at=now)
    finally:
        ctl.close()
    world.truth()  # compact the per-chunk arrays once
    return world


def warmup_key(scenario: Scenario) -> str:
    """Scenarios with the same key have identical weeks before the scored one."""
    return f"{replace(scenario.spec, holidays=(), flash=())!r}|{scenario.start.isoformat()}"


# ---- running and scoring -----------------------------------------------------------------

@dataclass
class Score:
    policy: str
    slo_minutes: int
    peak_slo_minutes: int
    p95_of_p95: float
    p99_of_p95: float
    failed_requests: int
    requests: int
    cost_usd: float
    token_cost_usd: float
    replica_cost_usd: float
    idle_replica_hours: float
    quality: float
    seconds: float
    #: Per provider: minutes its load (attempts) was over its true SLO capacity, and the
    #: 99th percentile of load over that capacity (what the plan sent against the truth).
    over_capacity_minutes: dict[str, int] = field(default_factory=dict)
    load_over_capacity_p99: dict[str, float] = field(default_factory=dict)


@dataclass
class ScenarioResult:
    scenario: str
    description: str
    seasonal: bool
    seed: int
    scores: dict[str, Score] = field(default_factory=dict)
    timeline: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    timeline_index: list[str] = field(default_factory=list)
    warmup_seconds: float = 0.0

    def best_reactive(self) -> Score | None:
        found = [self.scores[n] for n in REACTIVE if n in self.scores]
        return min(found, key=lambda s: (s.slo_minutes, s.cost_usd)) if found else None

    def verdict(self) -> dict[str, Any]:
        """This world against the best reactive baseline: never more SLO-violation minutes
        (the suite's medians are judged in :func:`summary`)."""
        d, r, o = self.scores.get("diurnal"), self.best_reactive(), self.scores.get("oracle")
        if d is None or r is None:
            return {}
        cost_ratio = d.cost_usd / r.cost_usd if r.cost_usd else math.nan
        slo_ratio = d.slo_minutes / r.slo_minutes if r.slo_minutes else (0.0 if d.slo_minutes == 0 else math.inf)
        out: dict[str, Any] = {"best_reactive": r.policy, "slo_ratio": slo_ratio, "cost_ratio": cost_ratio,
                               "target": "no more SLO minutes than the best reactive",
                               "met": bool(d.slo_minutes <= r.slo_minutes)}
        if o is not None:
            out["oracle_gap_slo_minutes"] = d.slo_minutes - o.slo_minutes
            out["oracle_cost_ratio"] = d.cost_usd / o.cost_usd if o.cost_usd else math.nan
            gap = r.cost_usd - o.cost_usd
            out["cost_gap_closed"] = (r.cost_usd - d.cost_usd) / gap if gap > 0 else math.nan
        return out


def summary(results: Sequence[ScenarioResult]) -> dict[str, Any]:
    """Over the worlds: per policy the median and the worst world for SLO-violation minutes and
    cost, and the targets:

    - diurnal's SLO-violation minutes <= 0.3 x the best reactive baseline's in the median world
      (medians over the worlds), and never more than the best reactive baseline's in any world;
    - diurnal's median cost <= 0.85 x the best reactive baseline's (median of the per-world
      ratios), closing at least half the cost gap between it and the oracle (median share)."""
    per: dict[str, dict[str, Any]] = {}
    names = sorted({p for r in results for p in r.scores}, key=lambda p: POLICIES.index(p) if p in POLICIES else 99)
    for p in [*names, "best-reactive"]:
        got = [(r.scenario, sc) for r in results
               if (sc := r.best_reactive() if p == "best-reactive" else r.scores.get(p)) is not None]
        if not got:
            continue
        slo = [sc.slo_minutes for _, sc in got]
        cost = [sc.cost_usd for _, sc in got]
        per[p] = {"worlds": len(got), "median_slo_minutes": float(np.median(slo)), "worst_slo_minutes": max(slo),
                  "worst_slo_world": max(got, key=lambda x: x[1].slo_minutes)[0],
                  "median_cost_usd": float(np.median(cost)), "worst_cost_usd": max(cost),
                  "worst_cost_world": max(got, key=lambda x: x[1].cost_usd)[0]}
    verdicts = [(r.scenario, r.verdict()) for r in results if r.verdict()]
    out: dict[str, Any] = {"policies": per}
    if verdicts and "diurnal" in per and "best-reactive" in per:
        d, b = per["diurnal"], per["best-reactive"]
        slo_ratio = d["median_slo_minutes"] / b["median_slo_minutes"] if b["median_slo_minutes"] else \
            (0.0 if d["median_slo_minutes"] == 0 else math.inf)
        worse = [n for n, v in verdicts if not v["met"]]
        cost_ratio = float(np.nanmedian([v["cost_ratio"] for _, v in verdicts]))
        closed = [v.get("cost_gap_closed", math.nan) for _, v in verdicts]
        gap = float(np.nanmedian(closed)) if not all(math.isnan(c) for c in closed) else math.nan
        out["targets"] = {
            "median_slo_ratio": slo_ratio, "median_slo_met": slo_ratio <= 0.3,
            "worlds_worse_than_best_reactive": worse, "never_worse_met": not worse,
            "median_cost_ratio": cost_ratio, "median_cost_met": cost_ratio <= 0.85,
            "median_cost_gap_closed": gap, "cost_gap_met": gap >= 0.5,
        }
    return out


def make_policy(name: str, data_dir: Path) -> Policy:
    if name == "diurnal":
        return Diurnal(data_dir)
    if name not in BASELINES:
        raise ValueError(f"unknown policy {name!r}; one of: {', '.join(POLICIES)}")
    return BASELINES[name]()


def run_policy(scenario: Scenario, policy: Policy, world: SimulatedRouter, tick_minutes: int = 1) -> SimulatedRouter:
    """Let ``policy`` steer ``world`` (a warmed-up router, changed in place) over the scored days."""
    world.respec(scenario.spec)
    policy.start(world, scenario)
    try:
        now = scenario.scored_start
        step = timedelta(minutes=tick_minutes)
        while now < scenario.scored_end:
            world.advance(now)
            apply(world, policy.tick(now, world))
            now += step
        world.advance(scenario.scored_end)
    finally:
        policy.close()
    return world


def scored(scenario: Scenario, world: SimulatedRouter) -> pd.DataFrame:
    """The world's ground truth over the scored days."""
    truth = world.truth()
    return truth[(truth.index >= pd.Timestamp(scenario.scored_start)) & (truth.index < pd.Timestamp(scenario.scored_end))]


def score(scenario: Scenario, policy: str, t: pd.DataFrame, seconds: float) -> Score:
    """Figures of one policy from its scored ground truth ``t``."""
    local = t.index.tz_convert(scenario.spec.tz)
    hour = local.hour + local.minute / 60
    in_peak = np.zeros(len(t), dtype=bool)
    for dow, a, b in scenario.peaks:
        in_peak |= (local.day_of_week == dow) & (hour >= a) & (hour < b)
    idle = (t[f"ready_{POOL}"] - t[f"needed_{POOL}"] / 0.8).clip(lower=0).sum() / 60
    p95 = t["p95"].dropna()
    answered = (t["requests"] - t["failed"]).clip(lower=0)
    return Score(
        policy=policy,
        slo_minutes=int(t["violation"].sum()),
        peak_slo_minutes=int(t["violation"][in_peak].sum()),
        p95_of_p95=float(np.quantile(p95, 0.95)) if len(p95) else math.nan,
        p99_of_p95=float(np.quantile(p95, 0.99)) if len(p95) else math.nan,
        failed_requests=int(t["failed"].sum()),
        requests=int(t["requests"].sum()),
        cost_usd=float(t["spend"].sum() + t["replica_cost"].sum()),
        token_cost_usd=float(t["spend"].sum()),
        replica_cost_usd=float(t["replica_cost"].sum()),
        idle_replica_hours=float(idle),
        quality=float((t["quality"] * answered).sum() / max(float(answered.sum()), 1.0)),
        seconds=seconds,
        **_against_capacity(scenario, t),
    )


#: Load over a nil capacity, as a ratio (finite, so that quantiles stay numbers).
OVER_NIL = 1e6


def _against_capacity(scenario: Scenario, t: pd.DataFrame) -> dict[str, Any]:
    """Per provider, its load against its true SLO capacity minute by minute."""
    over: dict[str, int] = {}
    p99: dict[str, float] = {}
    for p in scenario.spec.providers:
        load, cap = t[f"attempts_{p.name}"].to_numpy(float), t[f"slo_capacity_{p.name}"].to_numpy(float)
        # Load where the true capacity is nil (a pool with no replica ready) counts as far over.
        ratio = np.divide(load, cap, out=np.where(load > 0, OVER_NIL, 0.0), where=cap > 0)
        over[p.name] = int((ratio > 1.0).sum())
        p99[p.name] = round(float(np.quantile(ratio, 0.99)), 3) if len(ratio) else math.nan
    return {"over_capacity_minutes": over, "load_over_capacity_p99": p99}


def _timeline(scenario: Scenario, t: pd.DataFrame) -> tuple[list[str], dict[str, list[float]]]:
    """15-minute series for the plots: demand, pool capacity and replicas, openai's weight,
    worst p95."""
    pool = pool_spec(scenario.spec)
    frame = pd.DataFrame({
        "demand_rpm": t["requests"],
        "pool_capacity_rpm": t[f"ready_{POOL}"] * pool.rpm_per_replica,
        "pool_desired": t[f"desired_{POOL}"],
        "weight_openai": t["weight_openai"],
        "p95": t["p95"],
        "violation": t["violation"].astype(float),
    }).resample("15min")
    agg = frame.agg({"demand_rpm": "mean", "pool_capacity_rpm": "mean", "pool_desired": "max",
                     "weight_openai": "mean", "p95": "max", "violation": "sum"})
    return ([ts.isoformat() for ts in agg.index],
            {c: [None if math.isnan(v) else round(float(v), 4) for v in agg[c]] for c in agg.columns})  # type: ignore[misc]


@dataclass(frozen=True)
class Options:
    """What every job of one benchmark run shares."""

    seed: int = 1
    tokens: TokenSizes = AZURE_CONV_TOKENS
    shape: tuple[float, ...] | None = None
    warmup_weeks: int = 3
    scored_days: int = 7
    tick_minutes: int = 1

    def scenario(self, name: str) -> Scenario:
        made = world(name, self.seed, tokens=self.tokens, shape=self.shape)
        return replace(made, warmup_weeks=self.warmup_weeks, scored_days=self.scored_days)


def world(name: str, seed: int = 0, *, tokens: TokenSizes = AZURE_CONV_TOKENS,
          shape: tuple[float, ...] | None = None) -> Scenario:
    """A named scenario (:data:`sim.scenarios.NAMES`) or a family's world (``<family>-<seed>``),
    with the token sizes and, if given, the demand shape."""
    if name in NAMES:
        return scenarios(seed, tokens=tokens, shape=shape)[name]
    family, _, drawn = name.rpartition("-")
    if family not in FAMILIES or not drawn.isdigit():
        raise ValueError(f"unknown world {name!r}: a scenario ({', '.join(NAMES)}) or <family>-<seed> with a "
                         f"family of {', '.join(FAMILIES)}")
    made = draw(family, int(drawn))
    return replace(made, spec=replace(made.spec, tokens=tokens, shape=shape if shape is not None else made.spec.shape))


def prepare(names: Sequence[str], opts: Options, root: Path) -> tuple[Path, float]:
    """Phase 1: the shared warm-up of scenarios with the same weeks before (see
    :func:`warmup_key`): the router pickled beside the store diurnal filled."""
    group = [opts.scenario(n) for n in names]
    if len({warmup_key(s) for s in group}) != 1:
        raise ValueError(f"{', '.join(names)} do not share their weeks before")
    where = Path(tempfile.mkdtemp(prefix="warm-", dir=root))
    began = time.perf_counter()
    world = warm_up(group[0], opts.seed, where / "store")
    (where / "world.pickle").write_bytes(pickle.dumps(world))
    return where, time.perf_counter() - began


def run_one(name: str, policy: str, opts: Options, warm: Path
            ) -> tuple[Score, list[str], dict[str, list[float]]]:
    """Phase 2: one policy on one scenario, from a copy of its warm-up."""
    scenario = opts.scenario(name)
    world: SimulatedRouter = pickle.loads((warm / "world.pickle").read_bytes())  # noqa: S301 - written above
    data_dir = Path(tempfile.mkdtemp(prefix=f"{name}-{policy}-", dir=warm.parent))
    shutil.copytree(warm / "store", data_dir, dirs_exist_ok=True)  # each run starts from the same history
    try:
        began = time.perf_counter()
        world = run_policy(scenario, make_policy(policy, data_dir), world, opts.tick_minutes)
        truth = scored(scenario, world)
        index, timeline = _timeline(scenario, truth)
        return score(scenario, policy, truth, time.perf_counter() - began), index, timeline
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def run(names: Sequence[str], policies: Sequence[str], opts: Options, *, jobs: int = 1,
        progress: Callable[[str], None] | None = None) -> list[ScenarioResult]:
    """Every scenario x policy: the warm-ups first, then one job per run, over ``jobs``
    processes (so two processes stay busy to the end, whatever the group sizes)."""
    shm = Path("/dev/shm")  # noqa: S108 - the stores are scratch; memory-backed when there is one
    root = Path(tempfile.mkdtemp(prefix="diurnal-bench-", dir=shm if shm.is_dir() else None))
    say = progress or (lambda _: None)
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("forkserver")) \
        if jobs > 1 else None
    try:
        def call(fn: Callable[..., Any], *args: Any) -> Any:
            return pool.submit(fn, *args) if pool is not None else _Done(fn(*args))

        warm: dict[str, tuple[Path, float]] = {}
        futures = {tuple(g): call(prepare, g, opts, root) for g in groups(names, opts.seed)}
        for g, fut in futures.items():
            for n in g:
                warm[n] = fut.result()
        say(f"  warm-ups done: {len(futures)} for {len(names)} worlds")
        # Longest first (diurnal's scored week takes ten times a baseline's), so the short
        # runs fill the gaps at the end and neither process idles while the other finishes.
        order = sorted(((n, p) for n in names for p in policies), key=lambda run: _run_cost(run[1]), reverse=True)
        submitted = {(n, p): call(run_one, n, p, opts, warm[n][0]) for n, p in order}
        runs = {(n, p): submitted[(n, p)] for n in names for p in policies}
        results = {}
        for n in names:
            sc = opts.scenario(n)
            results[n] = ScenarioResult(n, sc.description, sc.seasonal, opts.seed, warmup_seconds=warm[n][1])
        for (n, p), fut in runs.items():
            s, index, timeline = fut.result()
            results[n].scores[p] = s
            results[n].timeline_index, results[n].timeline[p] = index, timeline
            say(f"  {n:<26} {p:<17} {s.slo_minutes:5d} SLO min  ${s.cost_usd:9.0f}  ({s.seconds:.0f}s)")
        return [results[n] for n in names]
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        shutil.rmtree(root, ignore_errors=True)


def _run_cost(policy: str) -> int:
    """Rough relative run time of a policy, for scheduling."""
    return {"diurnal": 10, "oracle": 2}.get(policy, 1)


class _Done:
    """A finished result with a future's ``result()`` (the in-process path)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self) -> Any:
        return self.value


def groups(names: Sequence[str], seed: int = 0) -> list[list[str]]:
    """``names`` grouped by shared warm-up, largest group first."""
    by: dict[str, list[str]] = {}
    for n in names:
        by.setdefault(warmup_key(world(n, seed)), []).append(n)
    return sorted(by.values(), key=len, reverse=True)


# ---- report ------------------------------------------------------------------------------

def table(results: Sequence[ScenarioResult]) -> str:
    head = (f"{'scenario':<26} {'policy':<17} {'SLO min':>7} {'peak':>5} {'p95 p95':>8} {'p99 p95':>8} "
            f"{'failed':>7} {'cost $':>9} {'idle r-h':>8} {'quality':>7}  load/SLO capacity p99 (min over)")
    lines = [head, "-" * len(head)]
    for r in results:
        for s in r.scores.values():
            lines.append(f"{r.scenario:<26} {s.policy:<17} {s.slo_minutes:7d} {s.peak_slo_minutes:5d} "
                         f"{s.p95_of_p95:8.2f} {s.p99_of_p95:8.2f} {s.failed_requests:7d} {s.cost_usd:9.0f} "
                         f"{s.idle_replica_hours:8.1f} {s.quality:7.3f}  "
                         + " ".join(f"{n} {s.load_over_capacity_p99.get(n, math.nan):.2f} ({m})"
                                    for n, m in s.over_capacity_minutes.items()))
        v = r.verdict()
        if v:
            gap = (f"; oracle gap {v['oracle_gap_slo_minutes']:+d} SLO min, cost x{v['oracle_cost_ratio']:.3f}"
                   if "oracle_gap_slo_minutes" in v else "")
            lines.append(f"{'':<26} => diurnal vs {v['best_reactive']}: SLO minutes x{v['slo_ratio']:.2f}, cost "
                         f"x{v['cost_ratio']:.3f} [{'met' if v['met'] else 'MISSED'}: {v['target']}]{gap}")
        lines.append("")
    return "\n".join(lines)


def summary_table(summ: dict[str, Any]) -> str:
    """The suite in a few lines: per policy the median and worst world, then the targets."""
    head = f"{'policy':<17} {'worlds':>6} {'SLO min median':>14} {'worst':>6} {'cost $ median':>13} {'worst':>9}  worst SLO world"
    lines = [head, "-" * len(head)]
    for p, v in summ["policies"].items():
        lines.append(f"{p:<17} {v['worlds']:6d} {v['median_slo_minutes']:14.1f} {v['worst_slo_minutes']:6d} "
                     f"{v['median_cost_usd']:13.0f} {v['worst_cost_usd']:9.0f}  {v['worst_slo_world']}")
    t = summ.get("targets")
    if t:
        def ok(met: bool) -> str:
            return "met" if met else "MISSED"

        lines += [
            "",
            f"SLO minutes, median world: diurnal x{t['median_slo_ratio']:.2f} of the best reactive "
            f"[{ok(t['median_slo_met'])}: <= 0.30]",
            f"worlds where diurnal has more SLO minutes than the best reactive: "
            f"{', '.join(t['worlds_worse_than_best_reactive']) or 'none'} [{ok(t['never_worse_met'])}: none]",
            f"cost, median of the per-world ratios: diurnal x{t['median_cost_ratio']:.3f} of the best reactive "
            f"[{ok(t['median_cost_met'])}: <= 0.85]",
            f"cost gap between the best reactive and the oracle closed by diurnal (median): "
            f"{t['median_cost_gap_closed']:.0%} [{ok(t['cost_gap_met'])}: >= 50%]",
        ]
    return "\n".join(lines)


def to_json(results: Sequence[ScenarioResult], meta: dict[str, Any]) -> dict[str, Any]:
    return {"meta": meta, "summary": summary(results), "scenarios": [
        {"scenario": r.scenario, "description": r.description, "seasonal": r.seasonal, "seed": r.seed,
         "warmup_seconds": r.warmup_seconds, "verdict": r.verdict(),
         "scores": {n: asdict(s) for n, s in r.scores.items()},
         "timeline": {"index": r.timeline_index, **r.timeline}}
        for r in results]}


def plot(result: ScenarioResult, path: Path, days: int = 7) -> None:
    """The scored week per policy: demand and pool capacity, openai's weight, pool replicas
    asked for, and the worst p95 per 15 minutes against the SLO."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = pd.to_datetime(result.timeline_index)
    fig, axes = plt.subplots(4, 1, figsize=(14, 11), sharex=True)
    first = next(iter(result.timeline.values()))
    axes[0].plot(idx, first["demand_rpm"], color="black", lw=1.2, label="demand (req/min)")
    for name, series in result.timeline.items():
        axes[0].plot(idx, series["pool_capacity_rpm"], lw=0.9, label=f"{name}: pool capacity")
        axes[1].plot(idx, series["weight_openai"], lw=0.9, label=name)
        axes[2].step(idx, series["pool_desired"], lw=0.9, where="post", label=name)
        axes[3].plot(idx, series["p95"], lw=0.9, label=name)
    axes[0].set_ylabel("req/min")
    axes[1].set_ylabel("openai weight")
    axes[2].set_ylabel("pool replicas\n(desired, prewarm)")
    axes[3].set_ylabel("worst p95 (s)")
    axes[3].axhline(5.0, color="red", ls="--", lw=0.8)
    axes[0].legend(fontsize=7, ncol=4, loc="upper right")
    axes[1].legend(fontsize=7, ncol=4, loc="upper right")
    scored = "the scored week" if days == 7 else "the scored Monday" if days == 1 else f"the {days} scored days"
    axes[0].set_title(f"{result.scenario}: {scored} ({result.description})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ---- entry point -------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    from bench.realdata import data_dir, weekly_shape

    parser = argparse.ArgumentParser(prog="diurnal bench", description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--quick", action="store_true",
                        help=f"CI mode: only {', '.join(QUICK)}, scored on their Monday (--days 1)")
    parser.add_argument("--scenarios", help=f"comma-separated worlds: <family>-<seed> (families: {', '.join(FAMILIES)}) "
                                            f"or a named scenario ({', '.join(NAMES)}); default the suite of "
                                            f"{len(SUITE)} worlds, every family with seeds 1 to 4")
    parser.add_argument("--seeds", type=int, help="the suite with every family drawn with seeds 1 to N")
    parser.add_argument("--policies", default=",".join(POLICIES), help="comma-separated policies to run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2, help="scenarios run in parallel (processes)")
    parser.add_argument("--json", type=Path, default=Path("bench-results/closedloop.json"))
    parser.add_argument("--plots", type=Path, default=Path("bench-results"), help="directory for one PNG per scenario")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--data", help="directory of the real series (default ../shared/data/real)")
    parser.add_argument("--shape", help="drive demand with this real series' hour-of-week shape (e.g. nyc_taxi)")
    parser.add_argument("--warmup-weeks", type=int, default=3)
    parser.add_argument("--days", type=int, help="days scored from the Monday on (default 7; 1 with --quick)")
    parser.add_argument("--tick-minutes", type=int, default=1, help="every policy decides this often")
    args = parser.parse_args(argv)
    names = QUICK if args.quick else tuple(args.scenarios.split(",")) if args.scenarios else \
        tuple(s.name for s in suite(args.seeds)) if args.seeds else SUITE
    policies = tuple(args.policies.split(","))
    unknown = [n for n in names if not _known(n)] + [p for p in policies if p not in POLICIES]
    if unknown:
        parser.error(f"unknown scenario or policy: {', '.join(unknown)}")
    days = args.days or (1 if args.quick else 7)
    if not 1 <= days <= 7:
        parser.error(f"--days is 1 to 7, got {days}")
    root = data_dir(args.data)
    trace = root / "AzureLLMInferenceTrace_conv.csv"
    tokens = TokenSizes.from_trace(str(trace)) if trace.exists() else AZURE_CONV_TOKENS
    try:
        shape = weekly_shape(root, args.shape) if args.shape else None
    except (ValueError, OSError) as exc:  # an unknown name, or the real series not there
        parser.error(f"--shape {args.shape}: {exc}")
    print(f"diurnal bench: {len(names)} worlds x {len(policies)} policies, seed {args.seed}, "
          f"{args.warmup_weeks} weeks of warm-up + {days} scored day(s) each; token sizes from "
          f"{trace if trace.exists() else 'the built-in copy of the Azure trace figures'}", flush=True)
    began = time.perf_counter()
    opts = Options(args.seed, tokens, shape, args.warmup_weeks, days, args.tick_minutes)
    results = run(names, policies, opts, jobs=max(1, args.jobs), progress=lambda line: print(line, flush=True))
    seconds = time.perf_counter() - began
    print(table(results))
    print(summary_table(summary(results)))
    met = [r.verdict().get("met") for r in results if r.verdict()]
    print(f"no worse than the best reactive in {sum(bool(m) for m in met)}/{len(met)} worlds; {seconds:.0f}s wall")
    meta = {"seed": args.seed, "quick": args.quick, "seconds": seconds, "policies": list(policies), "days": days,
            "tick_minutes": args.tick_minutes, "warmup_weeks": args.warmup_weeks, "shape": args.shape,
            "tokens": asdict(tokens), "at": datetime.now().astimezone().isoformat()}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(_finite(to_json(results, meta)), indent=1, allow_nan=False))
    print(f"wrote {args.json}")
    if not args.no_plots:
        args.plots.mkdir(parents=True, exist_ok=True)
        for r in results:
            plot(r, args.plots / f"{r.scenario}.png", days)
        print(f"wrote {len(results)} plots to {args.plots}/")
    return 0


def _known(name: str) -> bool:
    try:
        world(name)
    except ValueError:
        return False
    return True


def _finite(value: Any) -> Any:
    """NaN and infinities as null: strict JSON has no such numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["POLICIES", "QUICK", "SUITE", "Options", "main", "run", "summary", "world"]
