"""``diurnal explain``: the decision in force (from a running sidecar, or from the audit log)
and, for each knob, its value, the forecast behind it and the reason in words."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from policies import ReasonCode


def _money(v: float | None) -> str:
    return "-" if v is None else f"${v:,.2f}"


def _local(ts: str | None, tz: str, fmt: str = "%a %Y-%m-%d %H:%M %Z") -> str:
    if not ts:
        return "-"
    return datetime.fromisoformat(ts).astimezone(ZoneInfo(tz)).strftime(fmt)


def _reasons(body: Mapping[str, Any], knob: str) -> list[Mapping[str, str]]:
    return [r for r in body.get("reasons", []) if r["knob"] == knob]


def render(body: Mapping[str, Any], tz: str) -> str:
    """A decision body (``GET /v1/decision?explain=1`` or an audit record) in words."""
    lines = [f"Decision at {_local(body.get('at'), tz)} (mode {body.get('mode')})"]
    inputs = body.get("inputs", {})
    providers = inputs.get("providers", {})
    weights, rec = body.get("weights", {}), body.get("recommended_weights", {})
    if weights:
        lines.append("\nProvider weights:")
    for name, w in weights.items():
        extra = f" (recommended {rec[name]:.2f})" if name in rec and abs(rec[name] - w) > 1e-6 else ""
        lines.append(f"  {name:<12} {w:.2f}{extra}")
        p = providers.get(name, {})
        if p:
            seen = p.get("observed_p95_seconds")
            pred = p.get("predicted_p95_seconds")
            trust = "trusted" if p.get("forecast_trusted") else "not trusted: reacting only"
            observed = "no latency data in the window" if seen is None else f"{seen:.2f}s"
            peak = ("no forecast" if pred is None
                    else f"{pred:.2f}s at {_local(p.get('predicted_p95_at'), tz, '%a %H:%M')}")
            lines.append(f"      observed p95 {observed}, forecast peak {peak} ({trust})")
        for r in _reasons(body, f"weights/{name}"):
            lines.append(f"      {r['code']}: {r['message']}")
    for r in _reasons(body, "weights"):
        lines.append(f"  guardrail {r['code']}: {r['message']}")
    thresholds = body.get("thresholds", {})
    if thresholds:
        lines.append("\nRouting thresholds:")
        for knob, v in thresholds.items():
            lines.append(f"  {knob:<44} {v:g}")
        for r in body.get("reasons", []):
            if r["knob"].startswith("thresholds/"):
                lines.append(f"      {r['knob']} {r['code']}: {r['message']}")
    prewarm = body.get("prewarm", [])
    if prewarm:
        lines.append("\nPrewarm:")
        for p in prewarm:
            when = "now" if p["at"] <= body.get("at", "") else f"at {_local(p['at'], tz, '%a %H:%M')}"
            peak = f" for the peak at {_local(p['peak_at'], tz, '%a %H:%M')}" if p.get("peak_at") else ""
            held = f", held until {_local(p['release_at'], tz, '%a %H:%M')}" if p.get("release_at") else ""
            lines.append(f"  {p['action']} ({p['kind']} {p['target']}): {p['amount']:g} units {when}{peak}{held}")
        for r in body.get("reasons", []):
            if r["knob"].startswith("prewarm/"):
                lines.append(f"      {r['code']}: {r['message']}")
    lines.extend(_plan_lines(body.get("plan") or [], tz))
    lines.extend(_day_plan_lines(body.get("day_plans") or [], tz))
    forecasts = [r for r in body.get("reasons", []) if r["knob"].startswith("forecast/")]
    if forecasts:
        lines.append("\nForecasts:")
        for r in forecasts:
            lines.append(f"  {r['knob'][len('forecast/'):]:<28} {r['code']}: {r['message']}")
    return "\n".join(lines)


def _plan_lines(plan: Sequence[Mapping[str, Any]], tz: str) -> list[str]:
    """The planner's steps: demand, each provider's planned load against its capacity, and the
    expected cost per hour against the baseline weights'."""
    if not plan:
        return []

    lines = ["\nPlan (load / SLO capacity per provider, rpm, at most the headroom's share of it; cost per hour, "
             "plan vs baseline weights):"]
    for step in plan:
        parts = []
        for name, p in step.get("providers", {}).items():
            cap, room = p.get("capacity_rpm"), p.get("headroom")
            parts.append(f"{name} {p.get('load_rpm', 0):.0f}/{'?' if cap is None else f'{cap:.0f}'}"
                         + ("" if room is None else f" @{room:.0%}"))
        pool = f", pool {step['pool_units']} units" if step.get("pool_units") is not None else ""
        lines.append(f"  {_local(step.get('at'), tz, '%a %H:%M')}  demand {step.get('demand_rpm', 0):.0f}: "
                     f"{', '.join(parts)}{pool}; {_money(step.get('cost_per_hour'))} vs "
                     f"{_money(step.get('baseline_cost_per_hour'))}")
    return lines


def _day_plan_lines(plans: Sequence[Mapping[str, Any]], tz: str) -> list[str]:
    """Each budgeted route's day: the budget, what is spent, what the plan predicts by local
    midnight, why, and the escalation planned for each hour left."""
    if not plans:
        return []

    lines = ["\nDay plans (budgets in the local day):"]
    for p in plans:
        short = f", {_money(p.get('shortfall_usd'))} over" if (p.get("shortfall_usd") or 0) > 0 else ""
        lines.append(f"  {p['route']}: {p['budget']} budget, {_money(p.get('allowance_usd'))} for today; spent "
                     f"{_money(p.get('spent_usd'))}, predicted {_money(p.get('predicted_usd'))} by midnight{short}")
        lines.append(f"      {p['code']}: {p['message']}")
        for h in p.get("hours", []):
            cut = "" if h.get("score_threshold") is None else f" (scores >= {h['score_threshold']:.3f})"
            esc = "-" if h.get("escalation") is None else f"{h['escalation']:.0%}"
            lines.append(f"    {_local(h['at'], tz, '%H:%M')}  escalate {esc:>4}{cut}, {h.get('requests') or 0:,.0f} "
                         f"requests, {_money(h.get('spend_usd'))}")
    return lines


def _prewarm_now(body: Mapping[str, Any]) -> dict[str, float]:
    return {p["action"]: p["amount"] for p in body.get("prewarm", []) if p["at"] <= body.get("at", "")}


def changes(records: Sequence[Mapping[str, Any]], tz: str, limit: int) -> str:
    """The last ``limit`` changes of weights or prewarm amounts, with the reasons behind them."""
    out: list[str] = []
    prev: Mapping[str, Any] | None = None
    for rec in records:
        if prev is not None:
            moved = {k: (prev["weights"].get(k), v) for k, v in rec.get("weights", {}).items()
                     if prev["weights"].get(k) is None or abs(prev["weights"][k] - v) > 1e-6}
            warm_before, warm_now = _prewarm_now(prev), _prewarm_now(rec)
            warmed = {k: (warm_before.get(k), v) for k, v in warm_now.items() if warm_before.get(k) != v}
            if moved or warmed:
                head = f"{_local(rec['at'], tz, '%a %Y-%m-%d %H:%M %Z')}:"
                parts = [f"{k} {a if a is None else f'{a:.2f}'} -> {b:.2f}" for k, (a, b) in moved.items()]
                parts += [f"prewarm {k} {a if a is None else f'{a:g}'} -> {b:g}" for k, (a, b) in warmed.items()]
                why = [f"    {r['knob']}: {r['code']} - {r['message']}" for r in rec.get("reasons", [])
                       if (r["knob"].startswith("weights/") and r["knob"][8:] in moved and r["code"] != ReasonCode.BaselineWeight)
                       or (r["knob"].startswith("prewarm/") and r["knob"][8:] in warmed)]
                out.append("\n".join([f"{head} {', '.join(parts)}", *why]))
        prev = rec
    return "\n".join(out[-limit:]) if out else "no weight or prewarm changes in the audit log"


def record_at(records: Sequence[Mapping[str, Any]], at: datetime | None) -> Mapping[str, Any] | None:
    """The decision in force at ``at`` (the last one made at or before it), or the newest."""
    if not records:
        return None
    if at is None:
        return records[-1]
    before = [r for r in records if datetime.fromisoformat(r["at"]) <= at]
    return before[-1] if before else None


def dumps(body: Mapping[str, Any]) -> str:
    return json.dumps(body, indent=2, sort_keys=True)
