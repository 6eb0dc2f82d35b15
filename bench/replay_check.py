"""Is ``diurnal replay``'s estimate right? Checked against the simulated world's truth.

For each world: the router is run over the scored days by a reactive baseline
(``reactive-routing``: LiteLLM's latency-based routing, the pool at its static size), with
diurnal observing and storing every minute, as a sidecar in ``observe`` mode would. That
store is replayed (``controller.replay``, exactly what ``diurnal replay`` runs), and its
estimate for ``diurnal`` is compared with a real closed-loop run of diurnal on the same
world and seed (``diurnal bench``'s); its estimate for ``actual`` with the recorded run's
own truth.

    python -m bench.replay_check                       # capacity-busy-1, cheap-pool-1, smooth-1; 2 scored days
    python -m bench.replay_check --worlds flat-2 --days 1 --json bench-results/replay-check.json
"""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.baselines import BASELINES, Knobs, Policy
from bench.closedloop import Options, bench_settings, prepare, run_one, score, scored
from collectors.store import Store
from controller.loop import Controller
from controller.replay import replay
from sim import SimulatedRouter
from sim.scenarios import Scenario

__all__ = ["check", "main"]

RECORDED = "reactive-routing"


class Recording:
    """A baseline steering the router, and diurnal observing it every minute."""

    def __init__(self, inner: Policy, data_dir: Path) -> None:
        self.inner = inner
        self.name = inner.name
        self.data_dir = data_dir
        self.ctl: Controller | None = None

    def start(self, world: SimulatedRouter, scenario: Scenario) -> None:
        self.inner.start(world, scenario)
        self.ctl = Controller.from_settings(bench_settings(scenario, self.data_dir, "observe"),
                                            clock=lambda: scenario.scored_start, refit_in_step=False)

    def tick(self, now: datetime, world: SimulatedRouter) -> Knobs:
        assert self.ctl is not None
        self.ctl.ingest_exposition(world.exposition(), at=now)  # minutes close as the ingest clock moves
        return self.inner.tick(now, world)

    def close(self) -> None:
        self.inner.close()
        if self.ctl is not None:
            self.ctl.close()


def _within(estimate: float, truth: float, rel: float, absolute: float = 0.0) -> bool:
    return abs(estimate - truth) <= max(rel * abs(truth), absolute)


def check(name: str, opts: Options, root: Path) -> dict[str, Any]:
    from bench.closedloop import run_policy

    scenario = opts.scenario(name)
    warm, _ = prepare([name], opts, root)
    truth_diurnal = run_one(name, "diurnal", opts, warm)[0]
    world: SimulatedRouter = pickle.loads((warm / "world.pickle").read_bytes())  # noqa: S301 - written by prepare
    store_dir = root / f"{name}-recorded"
    shutil.copytree(warm / "store", store_dir)
    world = run_policy(scenario, Recording(BASELINES[RECORDED](), store_dir), world, opts.tick_minutes)
    truth_recorded = score(scenario, RECORDED, scored(scenario, world), 0.0)
    settings = bench_settings(scenario, store_dir, "observe")
    store = Store(store_dir, tz=settings.timezone, read_only=True)
    try:
        done = replay(settings, store, scenario.scored_start, scenario.scored_end,
                      pool_units=scenario.static_replicas)
    finally:
        store.close()
    est = done.estimate.outcomes
    d, a = est["diurnal"], est["actual"]
    return {
        "world": name, "replay_seconds": round(done.walk.seconds, 1),
        "diurnal": {"estimated_cost_usd": round(d.cost_usd, 2), "true_cost_usd": round(truth_diurnal.cost_usd, 2),
                    "cost_error": round(d.cost_usd / truth_diurnal.cost_usd - 1, 4) if truth_diurnal.cost_usd else None,
                    "estimated_slo_minutes": d.slo_risk_minutes, "band": list(d.slo_risk_band),
                    "extrapolated_minutes": d.extrapolated_minutes,
                    "true_slo_minutes": truth_diurnal.slo_minutes,
                    "cost_within_10pct": _within(d.cost_usd, truth_diurnal.cost_usd, 0.10),
                    "slo_within_20pct_or_10min": _within(d.slo_risk_minutes, truth_diurnal.slo_minutes, 0.20, 10)},
        "actual": {"estimated_cost_usd": round(a.cost_usd, 2), "true_cost_usd": round(truth_recorded.cost_usd, 2),
                   "estimated_slo_minutes": a.slo_risk_minutes, "true_slo_minutes": truth_recorded.slo_minutes,
                   "observed_slo_minutes": done.estimate.observed_slo_minutes},
        "others": {n: {"cost_usd": round(o.cost_usd, 2), "slo_risk_minutes": o.slo_risk_minutes}
                   for n, o in est.items() if n in ("static", "reactive")},
        "caveats": done.estimate.caveats,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.replay_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", default="capacity-busy-1,cheap-pool-1,smooth-1")
    ap.add_argument("--days", type=int, default=2, help="scored days per world (default 2)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    opts = Options(seed=args.seed, scored_days=args.days)
    rows = []
    with tempfile.TemporaryDirectory(prefix="replay-check-") as tmp:
        for name in args.worlds.split(","):
            row = check(name, opts, Path(tmp))
            rows.append(row)
            d, a = row["diurnal"], row["actual"]
            print(f"{name:<18} diurnal cost est ${d['estimated_cost_usd']:>9,.0f} true ${d['true_cost_usd']:>9,.0f} "
                  f"({d['cost_error']:+.1%}); SLO min est {d['estimated_slo_minutes']} {d['band']} true "
                  f"{d['true_slo_minutes']}; actual cost est ${a['estimated_cost_usd']:,.0f} true "
                  f"${a['true_cost_usd']:,.0f}, SLO est {a['estimated_slo_minutes']} true {a['true_slo_minutes']} "
                  f"(replay {row['replay_seconds']}s)", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    ok = all(r["diurnal"]["cost_within_10pct"] and r["diurnal"]["slo_within_20pct_or_10min"] for r in rows)
    print(f"{sum(r['diurnal']['cost_within_10pct'] and r['diurnal']['slo_within_20pct_or_10min'] for r in rows)} of "
          f"{len(rows)} worlds within ±10% on cost and ±20% (or ±10 minutes) on SLO minutes")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
