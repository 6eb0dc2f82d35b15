from __future__ import annotations

import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from collectors.exposition import parse_exposition
from sim import STATIC_WEIGHTS, SimulatedRouter, WorldSpec
from tests.conftest import ServedDemo


def test_diurnal_demo_cli_prints_the_summary(served_demo: ServedDemo) -> None:
    out, data_dir = served_demo.summary, served_demo.data_dir
    assert "Hour-of-week p95 latency of openai" in out
    assert re.search(r"Mon .*█", out), "the Monday busy window should be the darkest cells"
    assert "Predicted Monday peak" in out and "openai p95 forecast over the SLO from 08:00 to 11:00" in out
    assert "weights/openai: " in out and "ForecastTrusted" in out
    assert "forecast/latency_p95/openai: ForecastTrusted" in out
    m = re.search(r"static weights .*?:\s+(\d+) min\s+\$\s*([\d,]+)\n\s+diurnal \(act mode\):\s+(\d+) min.*?"
                  r"\$\s*([\d,]+) \(([+-]\d+)%\)", out)
    assert m, out
    static_min, diurnal_min = int(m.group(1)), int(m.group(3))
    assert static_min > 100 and diurnal_min < static_min / 2
    # The cost of each, beside the other: the prices are set, so the plan's spend is known.
    static_usd, diurnal_usd = float(m.group(2).replace(",", "")), float(m.group(4).replace(",", ""))
    assert static_usd > 0 and diurnal_usd > 0 and abs(100 * (diurnal_usd / static_usd - 1) - int(m.group(5))) <= 1
    assert (data_dir / "diurnal.db").exists()  # --data-dir keeps the store
    assert re.search(r"prewarm upstream-pool \d+ -> \d+ units\s+\(PredictedPeak", out)
    assert "route chat escalation 30% -> 10%" in out
    # diurnal explain, from the audit log the demo left
    ex = subprocess.run([sys.executable, "-m", "controller.entrypoints.cli", "explain", "--data-dir", str(data_dir),
                         "--timezone", "America/New_York", "--at", "2026-11-16T07:30"],
                        capture_output=True, text=True, timeout=120)
    assert ex.returncode == 0, ex.stderr
    # The planner keeps openai at its floor ahead of its busy hours: their SLO capacity, learned.
    assert "openai       0.05" in ex.stdout and "CapacityForecastLimited" in ex.stdout and "upper bound" in ex.stdout
    assert "Plan (load / SLO capacity per provider" in ex.stdout and "Mon 09:00  demand" in ex.stdout
    assert "upstream-pool (pool router-upstreams)" in ex.stdout and "for the peak at Mon 09:00" in ex.stdout
    changes = subprocess.run([sys.executable, "-m", "controller.entrypoints.cli", "explain", "--data-dir", str(data_dir),
                              "--timezone", "America/New_York", "--changes", "400"],
                             capture_output=True, text=True, timeout=120)
    assert changes.returncode == 0, changes.stderr
    assert re.search(r"Mon 2026-11-16 0[5-7]:\d0 EST: .*openai 0\.\d\d -> 0\.\d\d\n"
                     r"    weights/openai: CapacityForecastLimited - .*\(Mon 08:00", changes.stdout), changes.stdout
    assert re.search(r"prewarm upstream-pool \d+ -> \d+\n    prewarm/upstream-pool: PredictedPeak", changes.stdout)
    # No capacity is released inside the scored Monday's surge: its first minutes are never taken for a
    # missed forecast (the forecast is judged over comparable minutes).
    monday = re.findall(r"^Mon 2026-11-16 .*\n(?:    .*\n?)*", changes.stdout, re.M)
    assert monday and not [block for block in monday if "ForecastMissed" in block], monday
    # From the live sidecar: its own zone (not UTC) unless asked; piped into `head`, no traceback.
    live = subprocess.run([sys.executable, "-m", "controller.entrypoints.cli", "explain", "--url", served_demo.url],
                          capture_output=True, text=True, timeout=120)
    assert live.returncode == 0 and re.search(r"^Decision at \w{3} \S+ \S+ E[SD]T", live.stdout), live.stdout
    assert "observed p95 None" not in live.stdout
    reader_gone = subprocess.Popen([sys.executable, "-m", "controller.entrypoints.cli", "explain", "--url",
                                    served_demo.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert reader_gone.stdout is not None and reader_gone.stderr is not None
    reader_gone.stdout.close()  # like `| head -1` once it has its line: every write hits a closed pipe
    with reader_gone.stderr:
        err = reader_gone.stderr.read().decode()
    assert reader_gone.wait(timeout=120) == 0 and "Traceback" not in err, err


def test_sim_is_deterministic_and_weights_do_not_change_demand() -> None:
    start = datetime(2026, 11, 9, tzinfo=pd.Timestamp.now("America/New_York").tz)
    a = SimulatedRouter(WorldSpec(), seed=11, start=start, weights=STATIC_WEIGHTS)
    b = SimulatedRouter(WorldSpec(), seed=11, start=start, weights=STATIC_WEIGHTS)
    c = SimulatedRouter(WorldSpec(), seed=11, start=start, weights={"openai": 0.1, "anthropic": 0.5, "azure": 0.4})
    for r in (a, b, c):
        r.advance(start + timedelta(hours=12))
    assert a.exposition() == b.exposition()
    assert (a.truth()["requests"] == c.truth()["requests"]).all()
    assert a.truth()["violation"].sum() > c.truth()["violation"].sum()


def test_sim_exposition_has_litellm_names_and_parses() -> None:
    start = datetime(2026, 11, 9, 8, tzinfo=pd.Timestamp.now("America/New_York").tz)
    r = SimulatedRouter(WorldSpec(), seed=1, start=start, weights=STATIC_WEIGHTS)
    r.advance(start + timedelta(minutes=30))
    names = {s.name for s in parse_exposition(r.exposition())}
    for expected in ("litellm_deployment_total_requests_total", "litellm_deployment_failure_responses_total",
                     "litellm_llm_api_latency_metric_bucket", "litellm_cache_hits_metric_total",
                     "litellm_cache_misses_metric_total", "litellm_spend_metric_total"):
        assert expected in names


def test_the_readme_shows_what_the_demo_prints(served_demo: ServedDemo) -> None:
    """Every line of the README's demo output is printed by the demo (``...`` marks lines left
    out, a trailing ``...)`` a line cut short; the run's duration varies)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("and prints (the", 1)[1].split("```\n", 2)[1]
    for line in block.splitlines():
        if line.strip() in ("", "...") or "simulated weeks in" in line:
            continue
        shown = line[: -len(" ...)")] if line.endswith(" ...)") else line
        assert shown in served_demo.summary, f"the README shows a line the demo does not print: {line!r}"
