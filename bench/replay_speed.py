"""How long ``diurnal replay`` takes over weeks of one-minute history (issue budget: four
weeks, 3 providers, under 3 minutes on 2 cores).

A bench world's router (default ``capacity-busy-1``: 3 providers and a self-hosted pool) is
run with diurnal observing every minute, as a sidecar in ``observe`` mode would, for
``--before`` weeks and then the ``--weeks`` to replay; that store is replayed over the last
``--weeks`` (``controller.replay.replay``, exactly what ``diurnal replay`` runs) and timed.
Prints the time per simulated week, the total and the peak RSS of the process.

    .venv/bin/python -m bench.replay_speed                   # 2 weeks before, 4 replayed
    .venv/bin/python -m bench.replay_speed --weeks 1 --keep /tmp/replay-store   # the store kept for the next run
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.closedloop import Options, bench_settings, prepare
from collectors.store import Store
from controller.replay import replay

__all__ = ["main", "measure"]


def _store(world: str, before: int, weeks: int, keep: Path | None, root: Path) -> tuple[Path, Any]:
    opts = Options(warmup_weeks=before + weeks, scored_days=1)
    scenario = opts.scenario(world)
    if keep is not None and (keep / "store" / "diurnal.db").exists():
        return keep / "store", scenario
    warm, _ = prepare([world], opts, root)
    if keep is None:
        return warm / "store", scenario
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copytree(warm / "store", keep / "store", dirs_exist_ok=True)
    return keep / "store", scenario


def measure(world: str = "capacity-busy-1", before: int = 2, weeks: int = 4, keep: Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="diurnal-replay-speed-") as tmp:
        began = time.perf_counter()
        store_dir, scenario = _store(world, before, weeks, keep, Path(tmp))
        built = time.perf_counter() - began
        settings = bench_settings(scenario, store_dir, "observe")
        store = Store(store_dir, tz=settings.timezone, read_only=True)
        try:
            end = scenario.scored_start  # the warm-up ends where the scored days would begin
            since = end - timedelta(weeks=weeks)
            marks: list[tuple[float, str]] = []
            began = time.perf_counter()
            done = replay(settings, store, since, end, pool_units=scenario.static_replicas,
                          progress=lambda line: marks.append((time.perf_counter() - began, line)))
            total = time.perf_counter() - began
        finally:
            store.close()
    walk = done.walk
    # The progress line says the share walked: the time at which each week was done.
    shares = [(t, int(m.group(1))) for t, line in marks if (m := re.search(r"\]\s*(\d+)%", line))]
    ends = [next((t for t, pct in shares if pct >= 100 * k / weeks), walk.seconds) for k in range(1, weeks + 1)]
    per_week = [round(b - a, 1) for a, b in zip([0.0, *ends[:-1]], ends, strict=True)]
    return {"world": world, "weeks_before": before, "weeks_replayed": weeks, "store_built_s": round(built, 1),
            "minutes_walked": walk.walked, "walk_s": round(walk.seconds, 1), "total_s": round(total, 1),
            "per_week_s": per_week,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "interrupted": walk.interrupted}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.replay_speed", description=__doc__.split("\n\n")[0])
    ap.add_argument("--world", default="capacity-busy-1")
    ap.add_argument("--before", type=int, default=2, help="weeks of history before the replayed period (default 2)")
    ap.add_argument("--weeks", type=int, default=4, help="weeks replayed (default 4)")
    ap.add_argument("--keep", type=Path, help="keep the recorded store here and reuse it on the next run")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    r = measure(args.world, args.before, args.weeks, args.keep)
    print(f"replay of {r['weeks_replayed']} weeks of {r['world']} ({r['weeks_before']} weeks of history before; "
          f"store recorded in {r['store_built_s']:.0f} s):")
    print(f"  {r['minutes_walked']:,} minutes walked in {r['walk_s']:.1f} s (per simulated week: "
          f"{', '.join(f'{w:.0f} s' for w in r['per_week_s'])}); with the estimate {r['total_s']:.1f} s   "
          f"budget {60 * 3 * r['weeks_replayed'] / 4:.0f} s")
    print(f"  peak RSS {r['peak_rss_mb']} MB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(r, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
