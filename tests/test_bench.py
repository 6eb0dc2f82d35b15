"""The forecaster and refit benchmarks keep running, on a small slice (README commands)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import forecast as bench_forecast
from bench import refit as bench_refit
from bench.realdata import DEFAULT_DIR, available
from tests.conftest import need


def test_forecast_benchmark_quick_on_two_series(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    need(available(DEFAULT_DIR), f"no real series in {DEFAULT_DIR} (../shared/data/real beside the checkout)")
    out = tmp_path / "forecast.json"
    assert bench_forecast.main(["--quick", "--workers", "1", "--json", str(out),
                                "--only", "taylor_30_min", "elb_request_count_8c0756"]) == 0
    printed = capsys.readouterr().out
    assert "relative MAE vs seasonal naive 168" in printed and "statsmodels_mstl" in printed
    results = {r["dataset"]: r for r in json.loads(out.read_text())}
    taylor = results["taylor_30_min"]
    assert taylor["origins"] >= 13 and taylor["stages"] == {"weekly": taylor["origins"]}
    assert taylor["scores"]["seasonal_naive_168"]["rel_mae"] == pytest.approx(1.0)
    assert taylor["scores"]["diurnal"]["rel_mae"] < 1.0  # it beats seasonal naive here
    assert 0.5 < taylor["scores"]["diurnal"]["coverage"] <= 1.0
    assert results["elb_request_count_8c0756"]["stages"] == {"daily": results["elb_request_count_8c0756"]["origins"]}


def test_forecast_benchmark_without_data_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_forecast.main(["--data", str(tmp_path)]) == 2
    assert "no real series" in capsys.readouterr().err


def test_refit_benchmark_small(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_refit.main(["--data", str(tmp_path), "--series", "6", "--runs", "1", "--seconds", "2",
                             "--rate", "20"]) == 0
    printed = capsys.readouterr().out
    assert "refit of 6 series x 8 weeks hourly (synthetic), 2 workers" in printed
    assert "failed fits: 0" in printed
    assert printed.count("budget p99 50 ms") == 3


@pytest.mark.integration
def test_fleet_benchmark_small() -> None:
    """bench.fleet on two replicas: the fleet query answers the summed series in one round trip."""
    from bench.fleet import run
    from tests.conftest import need_binary

    need_binary("prometheus")
    r = run(replicas=2, fill_seconds=15, queries=3)
    assert r["raw_series"] > r["fleet_series"] > 0 and r["query_terms"] == 18
    assert r["fleet_query_median_ms"] > 0 and r["scrape_all_median_ms"] > 0
