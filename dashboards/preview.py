"""Draw a dashboard's layout from real Prometheus query results, without a Grafana server.

    python -m dashboards.preview --out docs/seasonality.png

1. Run the demo and record diurnal's ``/metrics`` at every simulated step of its last days.
2. Backfill a real Prometheus with them (``promtool tsdb create-blocks-from openmetrics``).
3. Start that Prometheus on loopback and run every panel query of the dashboard over those
   days (``/api/v1/query_range``). Backfilled history has no rule evaluations, so a query of
   a recording rule runs the rule's expression, its label matchers applied to the result.
4. Draw each panel at its grid position with matplotlib.

Needs the ``prometheus`` and ``promtool`` binaries (Debian package ``prometheus``).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from prometheus_client.openmetrics.exposition import generate_latest

from dashboards.generate import HERE
from dashboards.rules import recording_rules

WIDTH = 24  # Grafana's grid columns


class Recorder:
    """OpenMetrics samples of a controller's registry at simulated times, grouped per family
    (a backfill file must hold each family once)."""

    def __init__(self, since: datetime) -> None:
        self.since = since
        self.headers: dict[str, list[str]] = {}
        self.samples: dict[str, list[str]] = {}

    def __call__(self, now: datetime, ctl: Any) -> None:
        if now < self.since:
            return
        ctl.decompose = True  # the decomposition panels need components at each refit
        family = ""
        ts = f"{now.timestamp():.3f}"
        for line in generate_latest(ctl.registry).decode().splitlines():  # type: ignore[no-untyped-call]
            if line.startswith("# EOF"):
                continue
            if line.startswith("#"):
                parts = line.split(" ", 3)
                family = parts[2]
                if parts[1] in ("HELP", "TYPE", "UNIT") and family not in self.samples:
                    self.headers.setdefault(family, []).append(line)
                continue
            if "_created" in line.split("{", 1)[0].split(" ", 1)[0]:
                continue  # creation times are not history
            self.samples.setdefault(family, []).append(f"{line} {ts}")

    def write(self, path: Path) -> None:
        with path.open("w") as out:
            for family, lines in self.samples.items():
                out.writelines(h + "\n" for h in self.headers.get(family, []))
                out.writelines(sample + "\n" for sample in lines)
            out.write("# EOF\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.load(resp)


def _expand(expr: str) -> tuple[str, dict[str, str]]:
    """A query of a recording rule (``rule{a="x"}``) as the rule's expression and the
    equality matchers to apply to its result; any other query as it is."""
    m = re.fullmatch(r"([a-z_]+:[\w:]+)(?:\{(.*)\})?", expr.strip())
    rules = {r["record"]: r["expr"] for r in recording_rules()}
    if m is None or m.group(1) not in rules:
        return expr, {}
    return rules[m.group(1)], dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))


def query_panels(board: dict[str, Any], prometheus: str, start: datetime, end: datetime,
                 variables: dict[str, str], step: str = "10m") -> dict[int, list[tuple[str, list[float], list[float]]]]:
    """Per panel id, each series as (legend, times, values)."""
    out: dict[int, list[tuple[str, list[float], list[float]]]] = {}
    for panel in board["panels"]:
        lines = []
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in variables.items():
                expr = expr.replace(f"${name}", value)
            expr, matchers = _expand(expr)
            params = urllib.parse.urlencode({"query": expr, "start": start.timestamp(),
                                             "end": end.timestamp(), "step": step})
            body = _get(f"{prometheus}/api/v1/query_range?{params}")
            for series in body["data"]["result"]:
                if any(series["metric"].get(k) != v for k, v in matchers.items()):
                    continue
                legend = target.get("legendFormat") or expr
                for key, val in series["metric"].items():
                    legend = legend.replace("{{" + key + "}}", val)
                times = [float(t) for t, _ in series["values"]]
                values = [float(v) for _, v in series["values"]]
                lines.append((legend, times, values))
        out[panel["id"]] = lines
    return out


def _when(times: list[float]) -> np.ndarray:
    """Unix seconds as datetime64 (UTC); the axis formatter shows them in the operator's zone."""
    return np.asarray(times, dtype="float64").round().astype("int64").astype("datetime64[s]")


def draw(board: dict[str, Any], data: dict[int, list[tuple[str, list[float], list[float]]]], out: Path,
         subtitle: str, tz: ZoneInfo) -> None:
    """Each panel at its grid position; times in the operator's timezone ``tz``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in board["panels"])
    fig = plt.figure(figsize=(16, rows * 0.42 + 1.2))
    fig.suptitle(f"{board['title']}  —  {subtitle}", x=0.01, ha="left", fontsize=12, fontweight="bold")
    top = 1 - 0.9 / (rows * 0.42 + 1.2)
    unit_h = top / rows
    colors = {"observed": "tab:blue", "expected": "tab:green", "lower": "tab:green", "upper": "tab:green"}
    for panel in board["panels"]:
        g = panel["gridPos"]
        x0, w = g["x"] / WIDTH, g["w"] / WIDTH
        y0 = top - (g["y"] + g["h"]) * unit_h
        if panel["type"] == "row":
            fig.text(x0 + 0.005, y0 + unit_h * 0.3, panel["title"].replace("$", r"\$"), fontsize=10, fontweight="bold", color="0.25")
            continue
        ax = fig.add_axes((x0 + 0.035, y0 + 0.03 * unit_h * g["h"] + 0.012,
                           w - 0.045, g["h"] * unit_h * 0.78))
        ax.set_title(panel["title"].replace("$", r"\$"), fontsize=9, loc="left")
        series = data.get(panel["id"], [])
        by_legend = {legend: (t, v) for legend, t, v in series}
        if "lower" in by_legend and "upper" in by_legend:
            (tl, lo), (_, hi) = by_legend["lower"], by_legend["upper"]
            n = min(len(lo), len(hi))
            ax.fill_between(_when(tl[:n]), lo[:n], hi[:n], color="tab:green",
                            alpha=0.2, lw=0, label="expected band")
        for legend, times, values in series:
            if legend in ("lower", "upper"):
                continue
            style = "--" if legend == "expected" else "-"
            ax.plot(_when(times), values, style, lw=1.2 if legend != "observed" else 1.6,
                    color=colors.get(legend), label=legend)
        if panel["title"].startswith("Distance"):
            ax.axhspan(-1, 1, color="tab:green", alpha=0.12)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%a" if g["w"] < 12 else "%a %H:%M", tz=tz))  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_locator(mdates.DayLocator(tz=tz))  # type: ignore[no-untyped-call]
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=7, loc="upper left", ncol=3, frameon=False)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from controller.entrypoints.demo import DEMO_START, run_demo
    from sim import WorldSpec

    parser = argparse.ArgumentParser(prog="python -m dashboards.preview", description=__doc__.split("\n")[0])
    parser.add_argument("--dashboard", default="seasonality")
    parser.add_argument("--out", type=Path, default=Path("docs/seasonality.png"))
    parser.add_argument("--days", type=float, default=7, help="days of the demo's last week drawn")
    parser.add_argument("--weeks", type=int, default=4, help="simulated weeks of the demo (at least 2)")
    parser.add_argument("--signal", default="request_rate")
    parser.add_argument("--provider", default="*")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (history, blocks) for a look")
    args = parser.parse_args(argv)
    if args.weeks < 2:
        parser.error("--weeks: the demo needs at least 2 weeks (one to learn from, one to score)")
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if not prometheus or not promtool:
        parser.error("needs the prometheus and promtool binaries (apt-get install prometheus)")
    board = json.loads((HERE / f"{args.dashboard}.json").read_text())
    work = Path(tempfile.mkdtemp(prefix="diurnal-preview-"))
    proc = None
    try:
        weeks = args.weeks
        tz = ZoneInfo(WorldSpec().tz)
        end = datetime(*DEMO_START, tzinfo=tz) + timedelta(weeks=weeks)
        since = end - timedelta(days=args.days)
        recorder = Recorder(since)
        print(f"running the demo; recording /metrics from {since:%a %Y-%m-%d %H:%M} on ...")
        run_demo(weeks=weeks, data_dir=work / "demo", on_step=recorder)
        recorder.write(work / "history.om")
        subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(work / "history.om"),
                        str(work / "data")], check=True, capture_output=True)
        proc, url = _start(prometheus, work)
        variables = {"signal": args.signal, "provider": args.provider}
        data = query_panels(board, url, since, end, variables)
        for panel in board["panels"]:
            for name, value in variables.items():
                panel["title"] = panel["title"].replace(f"${name}", value)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        draw(board, data, args.out, f"signal={args.signal}, provider={args.provider}; the demo's last "
             f"{args.days:g} days, queried from a real Prometheus", tz)
        print(f"wrote {args.out}")
    finally:
        if proc is not None:
            _stop(proc)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _start(prometheus: str, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen([prometheus, f"--config.file={_config(work)}", f"--storage.tsdb.path={work / 'data'}",
                             "--storage.tsdb.retention.time=100y", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            _get(f"{url}/api/v1/status/buildinfo")
            return proc, url
        except OSError:
            if time.monotonic() > deadline:
                _stop(proc)
                raise
            time.sleep(0.5)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=30)


def _config(work: Path) -> Path:
    path = work / "prometheus.yml"
    path.write_text("global: {scrape_interval: 1m}\nscrape_configs: []\n")
    return path


if __name__ == "__main__":
    raise SystemExit(main())
