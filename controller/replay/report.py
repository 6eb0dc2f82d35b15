"""The replay's report: a terminal table (one row per policy), JSON, and one self-contained
HTML page (inline SVG plots, no script and no network)."""

from __future__ import annotations

import html
import math
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np

from collectors.hour_of_week import slot_name
from controller.forecast.slo_capacity import SLOTS
from controller.replay.estimate import POLICIES, Estimate
from controller.replay.walk import Walk

__all__ = ["html_page", "json_report", "terminal"]

COLOURS = {"actual": "#555555", "static": "#1f77b4", "reactive": "#ff7f0e", "diurnal": "#2ca02c"}


def _when(ts: int, tz: str) -> str:
    return f"{datetime.fromtimestamp(ts, UTC).astimezone(ZoneInfo(tz)):%a %Y-%m-%d %H:%M}"


def _secs(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60}m{s % 60:02d}s"


def terminal(walked: Walk, est: Estimate, tz: str) -> str:
    end = walked.start + walked.walked * 60
    lines = [f"replay {_when(walked.start, tz)} .. {_when(end, tz)} ({tz}): {walked.walked:,} minutes walked in "
             f"{_secs(walked.seconds)}; diurnal changed a weight or a prewarm amount {walked.changes} times"
             + (" (interrupted: a partial report)" if walked.interrupted else "")]
    providers = walked.providers
    head = (f"{'policy':<10} {'cost $':>12} {'vs actual':>9}  {'SLO-risk min [band]':<20} {'extrapolated':>12} "
            f"{'429s':>8}  share {'/'.join(providers)}")
    lines += ["", "estimated per policy (each provider's SLO capacity learned from the history; --json has the "
                  "evidence):", head]
    base = est.outcomes["actual"].cost_usd
    for name in POLICIES:
        o = est.outcomes[name]
        ratio = f"x{o.cost_usd / base:.2f}" if base > 0 else "-"
        band = f"{o.slo_risk_minutes} [{o.slo_risk_band[0]}-{o.slo_risk_band[1]}]"
        extra = f"{o.extrapolated_minutes}" + (f" ({o.extrapolated_risk_minutes} at risk)"
                                               if o.extrapolated_risk_minutes else "")
        share = "/".join(f"{o.share.get(p, 0.0):.0%}" for p in providers)
        lines.append(f"{name:<10} {o.cost_usd:>12,.0f} {ratio:>9}  {band:<20} {extra:>12} {o.errors_429:>8,.0f}  "
                     f"{share}")
    spend = f", the router's spend metric ${est.observed_spend_usd:,.0f}" if est.observed_spend_usd is not None else ""
    lines += ["", f"as it ran (measured, not estimated): {est.observed_slo_minutes} minutes over the SLO or the error "
                  f"budget{spend}"]
    saved = est.outcomes["actual"].cost_usd - est.outcomes["diurnal"].cost_usd
    lines.append(f"diurnal against actual: {'saves' if saved >= 0 else 'costs'} ${abs(saved):,.0f}, SLO-risk minutes "
                 f"{est.outcomes['diurnal'].slo_risk_minutes} against {est.outcomes['actual'].slo_risk_minutes}")
    if est.caveats:
        lines += ["", "caveats:"] + [f"- {c}" for c in est.caveats]
    return "\n".join(lines)


def _num(v: float) -> float | None:
    return None if not math.isfinite(v) else round(float(v), 4)


def json_report(walked: Walk, est: Estimate, tz: str) -> dict[str, object]:
    end = walked.start + walked.walked * 60
    models = {}
    for name, m in est.models.items():
        models[name] = {
            "rate_limit_rpm": m.rate_limit_rpm, "rate_limit_from": m.rate_limit_source,
            "slots": [{"slot": s, "name": slot_name(s), "capacity_rpm": _num(m.cap[s]),
                       "evidence": str(m.capacity.at(s).evidence), "hours": m.capacity.at(s).hours,
                       "pooled_radius_hours": m.capacity.at(s).radius, "low_rpm": _num(m.low[s]),
                       "high_rpm": _num(m.high[s]), "busiest_seen_rpm": _num(m.seen[s]),
                       "tokens_per_request": [_num(m.tokens[0][s]), _num(m.tokens[1][s])]}
                      for s in range(SLOTS)],
        }
    return {
        "period": {"since": datetime.fromtimestamp(walked.start, UTC).isoformat(),
                   "until": datetime.fromtimestamp(end, UTC).isoformat(), "timezone": tz,
                   "minutes": walked.walked, "interrupted": walked.interrupted,
                   "minutes_from_hours": int(walked.from_hours[:walked.walked].sum()),
                   "minutes_without_data": int(walked.empty[:walked.walked].sum()), "seconds": round(walked.seconds, 1)},
        "policies": {name: {"cost_usd": round(o.cost_usd, 2), "token_cost_usd": round(o.token_cost_usd, 2),
                            "pool_cost_usd": round(o.pool_cost_usd, 2), "slo_risk_minutes": o.slo_risk_minutes,
                            "slo_risk_minutes_band": list(o.slo_risk_band),
                            "extrapolated_minutes": o.extrapolated_minutes,
                            "extrapolated_risk_minutes": o.extrapolated_risk_minutes,
                            "errors_429": round(o.errors_429, 1),
                            "share": {p: round(v, 4) for p, v in o.share.items()}}
                     for name, o in est.outcomes.items()},
        "observed": {"slo_minutes": est.observed_slo_minutes, "spend_usd": est.observed_spend_usd},
        "diurnal": {"changes": walked.changes,
                    "prewarm": [{"at": datetime.fromtimestamp(m, UTC).isoformat(), "action": a, "amount": v}
                                for m, a, v in walked.prewarm_changes]},
        "providers": models,
        "caveats": est.caveats,
    }


# ---- the page ----------------------------------------------------------------------------

W, H, PAD_L, PAD_B, PAD_T = 960, 230, 64, 28, 24


def _hourly(values: np.ndarray, how: str = "mean") -> np.ndarray:
    n = len(values) // 60 * 60
    if n == 0:
        return np.asarray(values, dtype=float)
    blocks = np.asarray(values[:n], dtype=float).reshape(-1, 60)
    return blocks[:, -1] if how == "last" else np.nanmean(blocks, axis=1) if np.isfinite(blocks).any() else blocks[:, 0]


def _chart(title: str, unit: str, start: int, tz: str, lines: list[tuple[str, np.ndarray, str]],
           band: tuple[np.ndarray, np.ndarray] | None = None) -> str:
    """An SVG line chart of hourly values from ``start``."""
    n = max((len(y) for _, y, _ in lines), default=0)
    if n == 0:
        return ""
    finite = [v for _, y, _ in lines for v in y if math.isfinite(v)]
    if band is not None:
        finite += [v for v in band[0] if math.isfinite(v)]
    top = max(finite, default=1.0) * 1.08 or 1.0
    pw, ph = W - PAD_L - 10, H - PAD_B - PAD_T

    def xy(i: int, v: float) -> str:
        return f"{PAD_L + pw * i / max(1, n - 1):.1f},{PAD_T + ph * (1 - min(v, top) / top):.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" '
             f'aria-label="{html.escape(title)}">', f'<text x="{PAD_L}" y="16" font-weight="bold">{html.escape(title)}'
             f' <tspan font-weight="normal" fill="#666">({html.escape(unit)})</tspan></text>']
    for k in range(5):
        tick, at = top * k / 4, PAD_T + ph * (1 - k / 4)
        parts.append(f'<line x1="{PAD_L}" x2="{W - 10}" y1="{at:.1f}" y2="{at:.1f}" stroke="#eee"/>'
                     f'<text x="{PAD_L - 6}" y="{at + 4:.1f}" text-anchor="end" font-size="11">{tick:,.0f}</text>')
    zone = ZoneInfo(tz)
    for i in range(0, n, 24):
        day = datetime.fromtimestamp(start + i * 3600, UTC).astimezone(zone)
        x = PAD_L + pw * i / max(1, n - 1)
        parts.append(f'<text x="{x:.1f}" y="{H - 8}" font-size="11">{day:%a %d}</text>')
    if band is not None:
        lo, hi = band
        hi = np.where(np.isfinite(hi), hi, top)
        ok = [i for i in range(min(n, len(lo))) if math.isfinite(lo[i])]
        if ok:
            pts = [xy(i, hi[i]) for i in ok] + [xy(i, lo[i]) for i in reversed(ok)]
            parts.append(f'<polygon points="{" ".join(pts)}" fill="#d62728" fill-opacity="0.12"/>')
    for _, y, colour in lines:
        segments, cur = [], []
        for i, v in enumerate(y):
            if math.isfinite(v):
                cur.append(xy(i, v))
            elif cur:
                segments.append(cur)
                cur = []
        if cur:
            segments.append(cur)
        for seg in segments:
            parts.append(f'<polyline points="{" ".join(seg)}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
    legend = "".join(f'<tspan fill="{c}"> \u25a0 {html.escape(label)}</tspan>' for label, _, c in lines)
    parts.append(f'<text x="{W - 10}" y="16" text-anchor="end" font-size="12">{legend}</text></svg>')
    return "".join(parts)


def html_page(walked: Walk, est: Estimate, tz: str) -> str:
    n = walked.walked
    start = walked.start
    charts = [_chart("Demand reaching the providers", "requests per minute, hourly mean", start, tz,
                     [("demand", _hourly(est.demand), "#333")])]
    for p in walked.providers:
        m = est.models[p]
        slots = est.slots[::60][: len(_hourly(est.demand))]
        lines = [(name, _hourly(est.outcomes[name].load[p]), COLOURS[name]) for name in POLICIES]
        lines.append(("SLO capacity (learned)", m.cap[slots], "#d62728"))
        charts.append(_chart(f"{p}: load against its learned SLO capacity (band shaded)", "requests per minute",
                             start, tz, lines, (m.low[slots], m.high[slots])))
    charts.append(_chart("Cumulative spend", "USD", start, tz,
                         [(name, _hourly(est.outcomes[name].cumulative_cost, "last"), COLOURS[name])
                          for name in POLICIES]))
    units = [(name, _hourly(o.units, "last"), COLOURS[name]) for name, o in est.outcomes.items()
             if o.units is not None and name in ("static", "diurnal")]
    if units:
        charts.append(_chart("Prewarm: the pool's units in force", "units", start, tz, units))
    report = terminal(walked, est, tz)
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>diurnal replay</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:24px;color:#222}pre{background:#f6f6f6;"
            "padding:12px;overflow-x:auto}svg{display:block;margin:18px 0}</style></head><body>"
            f"<h1>What diurnal would have done</h1><pre>{html.escape(report)}</pre>"
            + "".join(charts) +
            "<p>Every policy but <em>actual</em> is an estimate: each provider's load under that policy's split, "
            "against the SLO capacity learned from the history for that hour of the week. Minutes where a split "
            "sends a provider more than it was ever seen to carry are counted as <em>extrapolated</em>, apart "
            f"from the measured ones. {n:,} minutes.</p></body></html>")
