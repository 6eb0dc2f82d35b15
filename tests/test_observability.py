"""Observability end to end on real components: ``diurnal demo --serve`` scraped by a real
Prometheus that loads diurnal's rules; every panel query of every dashboard must return data,
and ``promtool check metrics`` must accept the exposition."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dashboards.generate import DASHBOARDS, HERE, RULES
from tests.conftest import ServedDemo, free_port, need_binary, prom_query, stop_process, wait_http

pytestmark = pytest.mark.integration


@dataclass
class Live:
    diurnal: str
    prometheus: str

    def query(self, promql: str) -> list[dict[str, Any]]:
        return prom_query(self.prometheus, promql)

    def label_values(self, label: str, selector: str) -> list[str]:
        q = urllib.parse.urlencode({"match[]": selector})
        with urllib.request.urlopen(f"{self.prometheus}/api/v1/label/{label}/values?{q}", timeout=10) as resp:
            values: list[str] = json.load(resp)["data"]
        return values


@pytest.fixture(scope="session")
def live(served_demo: ServedDemo) -> Iterator[Live]:
    """The demo serving its final state, and a Prometheus with diurnal's rules scraping it
    every second (its own instance: the shared one does not load rule files). Session-scoped
    like the demo, so that a worker that runs other modules in between does not start it twice."""
    prometheus = need_binary("prometheus")
    work = Path(tempfile.mkdtemp(prefix="diurnal-obs-"))
    prom_port = free_port()
    port = served_demo.url.rsplit(":", 1)[1]
    prom: subprocess.Popen[bytes] | None = None
    try:
        (work / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
            f"rule_files: ['{RULES}']\n"
            "scrape_configs:\n"
            "  - job_name: diurnal\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n")
        prom = subprocess.Popen(
            [prometheus, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(f"http://127.0.0.1:{prom_port}/-/ready")
        live = Live(served_demo.url, f"http://127.0.0.1:{prom_port}")
        # Rates need two scrapes; recording rules one evaluation after them. A slow first scrape
        # (the demo computes its hour-of-week profile once) may time out: wait for readiness.
        deadline = time.monotonic() + 120
        while not (live.query("diurnal:decision_reasons:rate5m") and live.query("diurnal:expected_band_deviation")):
            assert time.monotonic() < deadline, "Prometheus never evaluated diurnal's recording rules"
            time.sleep(0.5)
        time.sleep(3)  # a few more scrapes and evaluations: every rate has two samples
        yield live
    finally:
        if prom is not None:
            stop_process(prom)
        shutil.rmtree(work, ignore_errors=True)


def test_promtool_accepts_the_exposition(live: Live) -> None:
    promtool = need_binary("promtool")
    with urllib.request.urlopen(f"{live.diurnal}/metrics", timeout=10) as resp:
        text = resp.read()
    out = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, check=False)
    assert out.returncode == 0, (out.stdout + out.stderr).decode()
    assert not out.stdout.strip() and not out.stderr.strip(), (out.stdout + out.stderr).decode()  # no lint warnings


def test_metrics_cover_what_dashboards_need(live: Live) -> None:
    def has(promql: str) -> bool:
        return bool(live.query(promql))

    assert has('diurnal_expected{signal="request_rate", provider="*", bound="upper"}')
    assert has('diurnal_observed{signal="demand_rate", provider="*"}')
    # The planner's step now: demand, load and capacity per provider, cost against the baseline.
    assert has("diurnal_planned_demand_rpm") and len(live.query("diurnal_planned_load_rpm")) == 3
    assert len(live.query('diurnal_provider_capacity_rpm{source="plan"}')) == 3
    assert {s["metric"]["weights"] for s in live.query("diurnal_planned_cost_per_hour")} == {"plan", "baseline"}
    for horizon in ("15m", "1h", "6h"):
        assert has(f'diurnal_forecast{{signal="request_rate", provider="*", horizon="{horizon}", bound="lower"}}')
        assert has(f'diurnal_forecast_for_now{{signal="request_rate", provider="*", horizon="{horizon}"}}')
    for component in ("trend", "daily", "weekly", "residual"):
        assert has(f'diurnal_forecast_component{{component="{component}"}}')
    weekdays = {s["metric"]["weekday"] for s in live.query('diurnal_hour_of_week{signal="request_rate"}')}
    assert weekdays == {"1-Mon", "2-Tue", "3-Wed", "4-Thu", "5-Fri", "6-Sat", "7-Sun"}
    assert len(live.query('diurnal_hour_of_week{signal="request_rate"}')) == 168
    assert has("diurnal_control_tick_duration_seconds_bucket") and has("diurnal_refit_duration_seconds_count")
    # The shadow report over the demo's last week: every policy's estimate, and the saving.
    assert {s["metric"]["policy"] for s in live.query("diurnal_replay_cost_usd")} == {
        "actual", "static", "reactive", "diurnal"}
    assert has("diurnal_replay_would_save_usd") and has("diurnal_replay_slo_risk_seconds")
    with urllib.request.urlopen(f"{live.diurnal}/v1/report", timeout=10) as resp:
        report = json.load(resp)
    assert report["period"]["minutes"] >= 7 * 1440 - 60 and set(report["policies"]) == {
        "actual", "static", "reactive", "diurnal"}


def _variables(live: Live, board: dict[str, Any]) -> list[dict[str, str]]:
    """Every combination of the dashboard's variable values, resolved as Grafana would."""
    combos: list[dict[str, str]] = [{}]
    for var in board["templating"]["list"]:
        if var["type"] == "datasource":
            continue
        out = []
        for combo in combos:
            if var["type"] == "custom":
                values = [v.strip() for v in var["query"].split(",")]
            else:
                m = re.fullmatch(r"label_values\((.+), (\w+)\)", _fill(var["query"], combo))
                assert m, var["query"]
                values = live.label_values(m.group(2), m.group(1))
            assert values, f"variable {var['name']} has no values"
            out += [{**combo, var["name"]: v} for v in values]
        combos = out
    return combos


def _fill(expr: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        expr = expr.replace(f"${name}", value)
    return expr


@pytest.mark.parametrize("name", list(DASHBOARDS))
def test_every_panel_query_returns_data(live: Live, name: str) -> None:
    board = json.loads((HERE / f"{name}.json").read_text())
    empty = []
    checked = 0
    for values, panel in itertools.product(_variables(live, board), board["panels"]):
        for target in panel.get("targets", []):
            expr = _fill(target["expr"], values)
            assert "$" not in expr, expr
            checked += 1
            if not live.query(expr):
                empty.append(f"{panel['title']} {values}: {expr}")
    assert checked and not empty, "panel queries without data:\n" + "\n".join(empty)
    for annotation in board.get("annotations", {}).get("list", []):
        if "expr" in annotation:
            live.query(annotation["expr"])  # valid PromQL (prewarm steps may not have happened)


def test_the_readme_picture_is_drawn_from_a_backfilled_prometheus(tmp_path: Path) -> None:
    """``python -m dashboards.preview`` end to end (a 2-week demo, half a day drawn, to keep it short)."""
    need_binary("prometheus")
    need_binary("promtool")
    out = tmp_path / "seasonality.png"
    run = subprocess.run([sys.executable, "-m", "dashboards.preview", "--out", str(out), "--days", "0.5", "--weeks", "2"],
                         capture_output=True, text=True, check=False, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert out.stat().st_size > 20_000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_preview_queries_a_recording_rule_through_its_expression() -> None:
    from dashboards.preview import _expand

    expr, matchers = _expand('diurnal:expected_band_deviation{signal="latency_p95", provider="openai"}')
    assert expr.startswith("(diurnal_observed - ignoring(bound)") and matchers == {
        "signal": "latency_p95", "provider": "openai"}
    assert _expand("diurnal_observed") == ("diurnal_observed", {})
