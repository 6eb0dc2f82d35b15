"""Forecaster benchmark on real series (issue 4's protocol).

    .venv/bin/python -m bench.forecast [--data DIR] [--quick] [--json out.json] [--candidates]

Protocol, per dataset (``bench.realdata``): hourly in its local timezone; rolling origins at
local 00:00 and 06:00 every day over the last 28 days; a 24-hour horizon; history capped at
the last 8 weeks. Scores:

- MASE: MAE over the in-sample MAE of the lag-168 seasonal naive of the history;
- relative MAE: MAE over the MAE of seasonal naive 168 at the same origin, as a geometric
  mean over origins (only origins with a week of history, where that naive exists);
- coverage of diurnal's 80% interval; fit time per call (median).

Beside diurnal's forecaster: seasonal naive 168 (wall clock), the median of the same hour of
week over 3 weeks, and plain statsmodels MSTL(24, 168) with its defaults and a damped
Holt trend. ``--candidates`` adds each of diurnal's candidate models forced alone.

The refit and API-latency budgets are measured by ``python -m bench.refit``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from bench.realdata import DATASETS, Dataset, available, data_dir
from controller.forecast import fit, gate
from controller.forecast import models as m
from controller.forecast.grid import to_grid
from policies import ReasonCode

HORIZON = 24
HISTORY = pd.Timedelta(weeks=8)
DAYS = 28
ORIGIN_HOURS = (0, 6)
OURS = "diurnal"
BASELINES = ("seasonal_naive_168", "median_3w", "statsmodels_mstl")


def origins(series: pd.Series, tz: str, days: int) -> list[pd.Timestamp]:
    end = series.index[-1] + pd.Timedelta(hours=1)
    local_end = end.tz_convert(tz)
    first_day = (local_end - pd.Timedelta(days=days)).normalize()
    out = []
    for d in range(days + 1):
        day = (first_day + pd.Timedelta(days=d)).tz_localize(None)
        for hour in ORIGIN_HOURS:
            o = pd.Timestamp(day + pd.Timedelta(hours=hour)).tz_localize(tz, nonexistent="shift_forward",
                                                                          ambiguous=False).tz_convert("UTC")
            if o + pd.Timedelta(hours=HORIZON) <= end and o > series.index[0]:
                out.append(o)
    return out


def _grid_naive(history: pd.Series, tz: str, h: int, period: int) -> np.ndarray:
    """Wall-clock seasonal naive (gaps fall back a further season) on the local grid."""
    grid = to_grid(history, tz, 3600)
    inp = m.Inputs(grid.values, np.where(np.isnan(grid.values), np.nanmean(grid.values), grid.values), 24)
    return m.seasonal_naive(inp, h, period) if period else m.seasonal_median(inp, h, 168)


def naive_168(history: pd.Series, tz: str) -> np.ndarray:
    return _grid_naive(history, tz, HORIZON, 168)


def median_3w(history: pd.Series, tz: str) -> np.ndarray:
    return _grid_naive(history, tz, HORIZON, 0)


def statsmodels_mstl(history: pd.Series, tz: str) -> np.ndarray:
    """Plain MSTL(24, 168) as a user would call it: positional periods, statsmodels defaults,
    the seasonal parts repeated and a damped Holt trend on the trend component."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing
    from statsmodels.tsa.seasonal import MSTL

    y = history.interpolate(limit_direction="both").to_numpy(dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # under two weeks, MSTL drops the weekly period and says so
        res = MSTL(y, periods=(24, 168)).fit()
    seasonal = np.asarray(res.seasonal)
    seasonal = seasonal[:, None] if seasonal.ndim == 1 else seasonal
    season = sum(seasonal[-p:, i][np.arange(HORIZON) % p] for i, p in enumerate((24, 168)[:seasonal.shape[1]]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trend = ExponentialSmoothing(np.asarray(res.trend), trend="add", damped_trend=True).fit().forecast(HORIZON)
    return np.asarray(season + trend, dtype=float)


BASELINE_FNS: dict[str, Callable[[pd.Series, str], np.ndarray]] = {
    "seasonal_naive_168": naive_168, "median_3w": median_3w, "statsmodels_mstl": statsmodels_mstl,
}


def in_sample_naive_mae(history: pd.Series) -> float:
    v = history.to_numpy(dtype=float)
    d = np.abs(v[168:] - v[:-168])
    d = d[np.isfinite(d)]
    return float(d.mean()) if len(d) else float("nan")


@dataclass
class Result:
    dataset: str
    role: str
    tz: str
    origins: int
    stages: dict[str, int]
    chosen: dict[str, int]
    trusted: int
    scores: dict[str, dict[str, float]]
    covered: int
    points: int


def run_dataset(ds: Dataset, root: Path, days: int, candidates: bool, baselines: bool = True) -> Result:
    series = ds.load(root)
    rows: dict[str, dict[str, list[float]]] = {}
    covered: list[float] = []
    used = 0
    stages: dict[str, int] = {}
    chosen: dict[str, int] = {}
    trusted = 0

    def add(name: str, key: str, value: float) -> None:
        rows.setdefault(name, {}).setdefault(key, []).append(value)

    for o in origins(series, ds.tz, days):
        hist = series[(series.index >= o - HISTORY) & (series.index < o)]
        truth = series[(series.index >= o) & (series.index < o + pd.Timedelta(hours=HORIZON))].to_numpy(dtype=float)
        ok = np.isfinite(truth)
        if hist.notna().sum() < 2 or not ok.any():
            continue
        if (hist.dropna().index[-1] - hist.dropna().index[0]) < pd.Timedelta(days=7):
            continue  # seasonal naive 168 does not exist yet: nothing to be relative to
        preds: dict[str, np.ndarray] = {}
        for name, fn in BASELINE_FNS.items():
            if not baselines and name != "seasonal_naive_168":
                continue
            t = time.perf_counter()
            preds[name] = fn(hist, ds.tz)
            add(name, "seconds", time.perf_counter() - t)
        t = time.perf_counter()
        result = fit(hist, HORIZON, tz=ds.tz)
        add(OURS, "seconds", time.perf_counter() - t)
        preds[OURS] = result.frame["mean"].to_numpy(dtype=float)
        stages[result.stage] = stages.get(result.stage, 0) + 1
        chosen[result.model] = chosen.get(result.model, 0) + 1
        trusted += gate(result)[0] == ReasonCode.ForecastTrusted
        lo, hi = result.frame["lower"].to_numpy(dtype=float), result.frame["upper"].to_numpy(dtype=float)
        covered.extend(((truth[ok] >= lo[ok]) & (truth[ok] <= hi[ok])).astype(float).tolist())
        if candidates and result.selection is not None:
            for cand in result.selection.scores:
                forced = fit(hist, HORIZON, tz=ds.tz, selection=replace(result.selection, model=cand))
                preds[f"{OURS}:{cand}"] = forced.frame["mean"].to_numpy(dtype=float)
        naive_mae = float(np.mean(np.abs(truth[ok] - preds["seasonal_naive_168"][ok])))
        scale = in_sample_naive_mae(hist)
        used += 1
        for name, p in preds.items():
            good = ok & np.isfinite(p)
            mae = float(np.mean(np.abs(truth[good] - p[good]))) if good.any() else float("nan")
            add(name, "mase", mae / scale if scale > 0 else float("nan"))
            if naive_mae > 0 and mae > 0:
                add(name, "log_rel", math.log(mae / naive_mae))
    summary: dict[str, dict[str, float]] = {}
    for name, r in rows.items():
        summary[name] = {
            "rel_mae": math.exp(statistics.fmean(r["log_rel"])) if r.get("log_rel") else float("nan"),
            "mase": float(np.nanmean(r["mase"])) if r.get("mase") else float("nan"),
            "seconds": statistics.median(r["seconds"]) if r.get("seconds") else float("nan"),
        }
    summary[OURS]["coverage"] = float(np.mean(covered)) if covered else float("nan")
    return Result(ds.name, ds.role, ds.tz, used, stages, chosen, trusted, summary, int(sum(covered)), len(covered))


def geomean(values: list[float]) -> float:
    vals = [v for v in values if v > 0 and math.isfinite(v)]
    return math.exp(statistics.fmean(math.log(v) for v in vals)) if vals else float("nan")


def print_table(results: list[Result]) -> None:
    names = [OURS, *BASELINES]
    seen = {n for r in results for n in r.scores}
    cols = [n for n in names if n in seen] + sorted(seen - set(names))
    width = max(len(c) for c in cols) + 2
    print("relative MAE vs seasonal naive 168 (geometric mean over origins; mean MASE in brackets)")
    print(f"{'dataset':<30}{'origins':>8}  " + "".join(f"{c:>{width}}" for c in cols))
    for r in results:
        cells = "".join(
            f"{r.scores[c]['rel_mae']:>{width - 7}.3f} ({r.scores[c]['mase']:.2f})" if c in r.scores else f"{'-':>{width}}"
            for c in cols)
        print(f"{r.dataset:<30}{r.origins:>8}  {cells}")
    for label, roles in (("geomean, 5 seasonal", ("seasonal",)), ("geomean, 6 with the cold start", ("seasonal", "cold-start"))):
        sel = [r for r in results if r.role in roles]
        line = "".join(f"{geomean([r.scores[c]['rel_mae'] for r in sel if c in r.scores]):>{width}.3f}" for c in cols)
        print(f"{label:<38}  {line}")
    print("\nfit time per call, median (ms):")
    for r in results:
        print(f"  {r.dataset:<30}" + "".join(f"{c}={1000 * r.scores[c]['seconds']:.1f} " for c in names if c in r.scores))
    covered, points = sum(r.covered for r in results), sum(r.points for r in results)
    print(f"\ndiurnal's 80% interval: {covered / max(points, 1):.3f} of {points} actual points inside, "
          "over all datasets. Per dataset: coverage; origins where the skill gates would let the "
          "controller act ahead (default gates); stages; chosen models:")
    for r in results:
        print(f"  {r.dataset:<30} coverage {r.scores[OURS]['coverage']:.3f}  trusted {r.trusted}/{r.origins}  "
              f"stages {r.stages}  chosen {r.chosen}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.forecast", description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="directory of the real series (default ../shared/data/real)")
    ap.add_argument("--quick", action="store_true", help="7 days of origins instead of 28")
    ap.add_argument("--candidates", action="store_true", help="also score each candidate model alone")
    ap.add_argument("--no-baselines", action="store_true", help="skip the slow baselines (not naive 168)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", help="write the results as JSON here")
    ap.add_argument("--only", nargs="*", help="dataset names to run")
    args = ap.parse_args(argv)
    root = data_dir(args.data)
    sets = [d for d in available(root) if not args.only or d.name in args.only]
    if not sets:
        print(f"no real series under {root}; nothing to benchmark (pass --data)", file=sys.stderr)
        return 2
    days = 7 if args.quick else DAYS
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_dataset, d, root, days, args.candidates, not args.no_baselines) for d in sets]
        results = [f.result() for f in futures]
    order = {d.name: i for i, d in enumerate(DATASETS)}
    results.sort(key=lambda r: order[r.dataset])
    print_table(results)
    print(f"\n{len(sets)} datasets, {days} days of origins, {time.perf_counter() - started:.0f} s wall")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
