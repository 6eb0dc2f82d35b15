"""``diurnal demo``: the sidecar against the simulated router, weeks compressed into seconds.

The controller is the same object ``diurnal run`` uses; only the clock and the transport
differ (the demo hands it the simulated router's exposition instead of scraping over HTTP).
A second simulated router with the same seed runs the same weeks on static weights, so the
two can be compared minute by minute on identical traffic.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from collectors.hour_of_week import profile
from collectors.signals import hourly
from controller.entrypoints.render import heatmap
from controller.fit import ALL
from controller.loop import Controller
from controller.settings import Settings, load_settings
from policies import Decision
from sim import STATIC_WEIGHTS, SimulatedRouter, WorldSpec

#: Monday 2026-10-26, local midnight: the first week spans the 2026-11-01 DST change.
DEMO_START = (2026, 10, 26)


@dataclass
class DemoResult:
    settings: Settings
    controller: Controller
    scored_start: datetime
    scored_end: datetime
    violations_diurnal: int
    violations_static: int
    #: What the scored week cost (the providers' token prices; the truth's spend), each way.
    cost_diurnal: float = 0.0
    cost_static: float = 0.0
    predicted: dict[str, object] = field(default_factory=dict)
    ahead: list[Decision] = field(default_factory=list)
    seconds: float = 0.0
    weeks: int = 0


def demo_settings(data_dir: Path, spec: WorldSpec, **overrides: object) -> Settings:
    providers = {
        p.name: {
            "baseline_weight": STATIC_WEIGHTS[p.name],
            "min_weight": 0.05,
            "max_weight": 0.7,
            "capacity_rpm": p.rpm_limit,
            "price": {"input_per_million_tokens": p.usd_per_1k_input * 1000,
                      "output_per_million_tokens": p.usd_per_1k_output * 1000},
        }
        for p in spec.providers
    }
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "timezone": spec.tz,
        "router": {"model_providers": spec.model_providers()},
        "guardrails": {"mode": "act", "stale_after_seconds": 900},
        "control": {"observation_window_minutes": 10},
        "forecast": {"workers": 0},  # simulated time: fit inline, deterministic
        # The decision as a file, as a router that hot-reloads its config would mount it.
        "publish": {"file": {"path": data_dir / "decision.json"}},
        # The router's upstream connection pool, sized ahead of peaks (the router reads it
        # from the decision), and one route whose strong-model share is kept within budget.
        "policy": {
            "providers": providers, "latency_slo_seconds": spec.slo_seconds,
            "prewarm": [{"name": "upstream-pool", "kind": "pool", "target": "router-upstreams",
                         "rpm_per_unit": 50, "min_units": 8, "max_units": 64, "lead_minutes": 15,
                         "release_after_minutes": 30}],
            "routes": {"chat": {"tier": "standard", "baseline_fraction": 0.3, "quality_floor": 0.1,
                                "strong_cost_per_request": 0.012, "weak_cost_per_request": 0.001,
                                "hourly_budget": 250.0, "strong_provider": "openai"}},
        },
    }
    values.update(overrides)  # a group given here replaces the demo's whole group
    return load_settings(**values)


def run_demo(*, weeks: int = 4, seed: int = 7, data_dir: Path | None = None, scrape_minutes: int = 10,
             progress: Callable[[str], None] | None = None,
             on_step: Callable[[datetime, Controller], None] | None = None) -> DemoResult:
    """Run ``weeks`` simulated weeks; the last one is scored against static weights.
    ``on_step(now, controller)`` is called after every control step (e.g. to record
    ``/metrics`` at simulated times)."""
    if weeks < 2:
        raise ValueError("the demo needs at least 2 weeks: one to learn from, one to score")
    spec = WorldSpec()
    tz = ZoneInfo(spec.tz)
    start = datetime(*DEMO_START, tzinfo=tz)
    end = start + timedelta(weeks=weeks)
    scored_start = start + timedelta(weeks=weeks - 1)
    settings = demo_settings(data_dir or Path(tempfile.mkdtemp(prefix="diurnal-demo-")), spec)
    now = start
    ctl = Controller.from_settings(settings, clock=lambda: now)
    ctl.decompose = False  # components are for dashboards: computed once at the end, not hourly
    router = SimulatedRouter(spec, seed=seed, start=start, weights=STATIC_WEIGHTS)
    static = SimulatedRouter(spec, seed=seed, start=start, weights=STATIC_WEIGHTS)
    result = DemoResult(settings, ctl, scored_start, end, 0, 0, weeks=weeks)
    step = timedelta(minutes=scrape_minutes)
    peak_day_start = scored_start  # the scored week starts on a Monday
    snapshot_at = peak_day_start  # the forecast made at the scored Monday's midnight
    began = time.perf_counter()
    day_reported = -1
    while now < end:
        now = now + step
        router.advance(now)
        ctl.ingest_exposition(router.exposition(), at=now)
        decision = ctl.step(at=now)
        router.set_weights(decision.weights)
        if on_step is not None:
            on_step(now, ctl)
        if not result.predicted and now >= snapshot_at:
            result.predicted = _predicted_peak(ctl, peak_day_start, spec)
        local = now.astimezone(tz)
        if peak_day_start <= now < peak_day_start + timedelta(hours=12) and 5 <= local.hour < 12:
            result.ahead.append(decision)
        day = (now - start).days
        if progress is not None and day != day_reported and day % 7 == 0:
            day_reported = day
            progress(f"  simulated {start + timedelta(days=day):%a %Y-%m-%d} ... ({time.perf_counter() - began:.0f}s)")
    static.advance(end)
    ctl.decompose = True
    ctl.refit(now)  # the state a --serve shows, with the decomposition
    ctl.flush()
    result.violations_diurnal, result.cost_diurnal = _scored(router, scored_start, end)
    result.violations_static, result.cost_static = _scored(static, scored_start, end)
    result.seconds = time.perf_counter() - began
    return result


def _scored(router: SimulatedRouter, start: datetime, end: datetime) -> tuple[int, float]:
    """SLO-violation minutes and what the week cost (spend and replica-hours), from the truth."""
    truth = router.truth()
    window = truth[(truth.index >= pd.Timestamp(start)) & (truth.index < pd.Timestamp(end))]
    return int(window["violation"].sum()), float(window["spend"].sum() + window["replica_cost"].sum())


def _predicted_peak(ctl: Controller, day_start: datetime, spec: WorldSpec) -> dict[str, object]:
    """What the forecasts said, a little before the scored Monday, about that Monday."""
    out: dict[str, object] = {"made_at": ctl.decision.at if ctl.decision else None}
    day_end = pd.Timestamp(day_start + timedelta(days=1))
    fcs = ctl.forecasts()
    rate_sf = fcs.get(("request_rate", ALL))
    rate = rate_sf.fit.frame if rate_sf is not None else None
    if rate_sf is not None and rate is not None:
        monday = rate[(rate.index >= pd.Timestamp(day_start)) & (rate.index < day_end)]
        if not monday.empty:
            at = monday["mean"].idxmax()
            out["rate_peak_at"] = at.to_pydatetime()
            out["rate_peak_rpm"] = float(monday.loc[at, "mean"]) * 60
            out["rate_peak_upper_rpm"] = float(monday.loc[at, "upper"]) * 60
            out["rate_model"] = rate_sf.fit.model
            out["rate_skill"] = rate_sf.fit.skill
    slow: list[tuple[str, datetime, datetime, float]] = []
    for p in spec.providers:
        sf = fcs.get(("latency_p95", p.name))
        if sf is None:
            continue
        fc = sf.fit.frame
        monday = fc[(fc.index >= pd.Timestamp(day_start)) & (fc.index < day_end)]
        over = monday[monday["mean"] > spec.slo_seconds]
        if not over.empty:
            slow.append((p.name, over.index[0].to_pydatetime(), (over.index[-1] + pd.Timedelta(hours=1)).to_pydatetime(),
                         float(over["mean"].max())))
    out["slow_providers"] = slow
    return out


def summary(result: DemoResult) -> str:
    s = result.settings
    tz = ZoneInfo(s.timezone)
    ctl = result.controller
    lines = [f"diurnal demo: {result.weeks} simulated weeks in {result.seconds:.0f}s (timezone {s.timezone}, SLO p95 <= {s.policy.latency_slo_seconds:.1f}s)", ""]
    lo = int((result.scored_end - timedelta(weeks=result.weeks)).timestamp())
    hi = int(result.scored_end.timestamp())
    profiles = {p: profile(hourly(ctl.store, "latency_p95", s.timezone, lo, hi, p), s.timezone)
                for p in ctl.providers()}
    # Show the provider whose week is least flat: that is where the seasonality is.
    name = max(profiles, key=lambda p: float(profiles[p]["deviation"].abs().max(skipna=True) or 0.0))
    lines.append(heatmap(profiles[name], unit="seconds",
                         title=f"Hour-of-week p95 latency of {name} (the provider with the strongest weekly "
                               f"pattern; median over {result.weeks} simulated weeks):"))
    lines.append("")
    p = result.predicted
    lines.append(f"Predicted Monday peak (forecast made {_local(p.get('made_at'), tz)}):")
    if "rate_peak_at" in p:
        lines.append(f"  traffic peaks {_local(p['rate_peak_at'], tz)} at about {p['rate_peak_rpm']:.0f} req/min "
                     f"(80% band up to {p['rate_peak_upper_rpm']:.0f}; model {p['rate_model']})")
    else:
        lines.append("  no traffic forecast yet (less than 3 days of history)")
    slow = p.get("slow_providers") or []
    for name, a, b, worst in slow:  # type: ignore[attr-defined]
        lines.append(f"  {name} p95 forecast over the SLO from {_local(a, tz, '%H:%M')} to {_local(b, tz, '%H:%M')} "
                     f"(up to {worst:.1f}s)")
    if not slow:
        lines.append("  no provider predicted to breach the latency SLO")
    lines.append("")
    lines.append("What it decided ahead of that peak, and why:")
    lines.extend(_ahead_lines(result, tz))
    lines.extend(_prewarm_and_route_lines(result, tz))
    lines.append("")
    saved = result.violations_static - result.violations_diurnal
    pct = f" ({saved / result.violations_static:.0%} fewer)" if result.violations_static else ""
    week = f"{result.scored_start.astimezone(tz):%Y-%m-%d} .. {(result.scored_end - timedelta(days=1)).astimezone(tz):%Y-%m-%d}"
    cost = (f" ({result.cost_diurnal / result.cost_static - 1:+.0%})" if result.cost_static else "")
    lines.append(f"SLO-violation minutes and cost over the same simulated week ({week}):")
    lines.append(f"  static weights {STATIC_WEIGHTS}: {result.violations_static:5d} min {'':<13} "
                 f"${result.cost_static:9,.0f}")
    lines.append(f"  diurnal (act mode):{' ' * 39}{result.violations_diurnal:5d} min {pct.strip():<13} "
                 f"${result.cost_diurnal:9,.0f}{cost}")
    return "\n".join(lines)


def _ahead_lines(result: DemoResult, tz: ZoneInfo) -> list[str]:
    baseline = result.controller.policy_config().baseline()
    out: list[str] = []
    last: dict[str, float] | None = None
    for d in result.ahead:
        w = {k: round(v, 2) for k, v in d.weights.items()}
        if w == last:
            continue
        if last is None and w == {k: round(v, 2) for k, v in baseline.items()}:
            last = w
            continue
        last = w
        shown = ", ".join(f"{k} {v:.2f}" for k, v in w.items())
        out.append(f"  {_local(d.at, tz, '%a %H:%M')}  weights {shown}")
        if len(out) > 14:
            out.append("  ...")
            break
    if not out:
        return ["  weights stayed at the baseline"]
    first = next((d for d in result.ahead if {k: round(v, 2) for k, v in d.weights.items()}
                  != {k: round(v, 2) for k, v in baseline.items()}), None)
    if first is not None:
        out.append(f"  reasons at {_local(first.at, tz, '%H:%M')}:")
        out.extend(f"    {r.knob}: {r.code} - {r.message}" for r in first.reasons)
    return out


def _prewarm_and_route_lines(result: DemoResult, tz: ZoneInfo) -> list[str]:
    """When the prewarm and the routing threshold changed on the scored Monday morning, and why."""
    out: list[str] = []
    last_units: dict[str, float] = {}
    last_frac: dict[str, float] = {}
    for d in result.ahead:
        for p in d.prewarm:
            if p.at > d.at:
                continue
            before = last_units.get(p.action)
            last_units[p.action] = p.amount
            if before is not None and before != p.amount:
                why = next((r for r in d.reasons if r.knob == f"prewarm/{p.action}"), None)
                out.append(f"  {_local(d.at, tz, '%a %H:%M')}  prewarm {p.action} {before:g} -> {p.amount:g} units"
                           + (f"  ({why.code}: {why.message})" if why else ""))
        for knob, v in d.thresholds.items():
            if not knob.endswith("/escalation_fraction"):
                continue
            before = last_frac.get(knob)
            last_frac[knob] = v
            if before is not None and abs(before - v) > 1e-6:
                route = knob.split("/")[1]
                why = next((r for r in d.reasons if r.knob == f"thresholds/{route}"), None)
                out.append(f"  {_local(d.at, tz, '%a %H:%M')}  route {route} escalation {before:.0%} -> {v:.0%}"
                           + (f"  ({why.code}: {why.message})" if why else ""))
    return out[:12]


def _local(value: object, tz: ZoneInfo, fmt: str = "%a %Y-%m-%d %H:%M %Z") -> str:
    if not isinstance(value, datetime):
        return "n/a"
    return value.astimezone(tz).strftime(fmt)


def cleanup(result: DemoResult, keep: bool) -> None:
    result.controller.close()
    if not keep:
        shutil.rmtree(result.settings.data_dir, ignore_errors=True)

