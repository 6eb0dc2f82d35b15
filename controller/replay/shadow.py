"""The shadow report: what acting would have changed over the last week, kept while diurnal
observes.

It is the replay's estimate (:mod:`.estimate`) over the minutes the service itself ran
through: nothing is walked again. Each minute's decision (the weights diurnal recommends
after the guardrails, the prewarm amounts in force) is kept in the store as the tick makes it
(:meth:`collectors.store.Store.put_decided`), beside the router's own counts of that minute.
So the report costs a read of the week and the estimate, and it is refreshed every hour.

A minute the service did not run has no decision kept: the one before is taken to hold (as
the router's weights would have), and the report counts those minutes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from collectors.mapping import HISTOGRAM_SIGNALS
from collectors.store import Store
from controller.errors import ConfigError
from controller.replay import estimated
from controller.replay.estimate import Estimate
from controller.replay.report import json_report
from controller.replay.walk import (
    COUNTED,
    MINUTE,
    Walk,
    new_walk,
    observe,
    read_minutes,
    record_decision,
)
from controller.settings import Settings

__all__ = ["SHADOW_DAYS", "Shadow", "shadow", "shadow_report"]

SHADOW_DAYS = 7
#: Under this many minutes of decisions, there is no report yet.
MIN_MINUTES = 60


@dataclass
class Shadow:
    walk: Walk
    estimate: Estimate


def _dense(series: list[tuple[int, float]], start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-minute values from ``start`` with each held until the next (NaN before the first),
    and which minutes had a value of their own."""
    values = np.full(n, np.nan)
    own = np.zeros(n, dtype=bool)
    for ts, v in series:
        i = (ts - start) // MINUTE
        if 0 <= i < n:
            values[i] = v
            own[i] = True
    idx = np.maximum.accumulate(np.where(own, np.arange(n), 0))
    return values[idx], own  # before the first value, idx is 0 and values[0] NaN


def shadow(settings: Settings, store: Store, now: datetime, days: float = SHADOW_DAYS) -> Shadow:
    """The estimate over the last ``days`` (to ``now``) of minutes with a decision kept.
    Raises :class:`ConfigError` with one line while there are too few."""
    tz = settings.timezone
    end = int(now.timestamp()) // MINUTE * MINUTE
    kept = store.decided(end - int(days * 86400), end)
    weights = {n.split(":", 1)[1]: s for n, s in kept.items() if n.startswith("weight:")}
    units = {n.split(":", 1)[1]: s for n, s in kept.items() if n.startswith("units:")}
    if not weights:
        raise ConfigError("no decision is kept yet: the report begins with the first minute diurnal decides on data")
    start = min(s[0][0] for s in weights.values())
    end = max(s[-1][0] for s in weights.values()) + MINUTE
    n = (end - start) // MINUTE
    if n < MIN_MINUTES:
        raise ConfigError(f"{n} minutes of decisions are kept; the report needs {MIN_MINUTES}")
    providers = sorted({k.provider for k in store.series("requests")})
    if not providers:
        raise ConfigError("the store has no request counts for the period")
    out = new_walk(start, end, providers, sorted(a.name for a in settings.policy.prewarm))
    dense_w = {p: _dense(weights.get(p, []), start, n) for p in providers}
    dense_u = {a: _dense(s, start, n)[0] for a, s in units.items() if a in out.units}
    decided = np.zeros(n, dtype=bool)
    for _, own in dense_w.values():
        decided |= own
    stored = {k.signal for k in store.series()}
    signals = [s for s in (*COUNTED, *HISTOGRAM_SIGNALS) if s in stored]
    began = time.monotonic()
    last = None
    for i, _, minute, spread in read_minutes(store, signals, start, end, tz):
        observe(out, i, minute, from_hours=spread)
        w = {p: float(v[0][i]) for p, v in dense_w.items() if np.isfinite(v[0][i])}
        a = {name: float(v[i]) for name, v in dense_u.items() if np.isfinite(v[i])}
        last = record_decision(out, i, w, a, last)
    out.seconds = time.monotonic() - began
    span = store.span()
    est = estimated(settings, store, out, span[0] if span else start)
    caveats: list[str] = []
    if settings.guardrails.mode == "act":
        caveats.append("diurnal acts: 'actual' is what the router did on diurnal's weights")
    if (held := int((~decided).sum())) > 0:
        caveats.append(f"{held} minutes have no decision of their own (diurnal did not tick in them, or was not "
                       "running): the one before is taken to hold")
    if n * MINUTE < days * 86400 - 3600:
        caveats.append(f"the report covers {n / 1440:.1f} days: diurnal has kept decisions for that long")
    est.caveats[:0] = caveats
    return Shadow(out, est)


def shadow_report(settings: Settings, store: Store, now: datetime, days: float = SHADOW_DAYS) -> dict[str, Any]:
    """:func:`shadow` as the JSON report (``diurnal replay --json``'s shape), with the saving."""
    got = shadow(settings, store, now, days)
    report = json_report(got.walk, got.estimate, settings.timezone)
    outcomes = got.estimate.outcomes
    report["computed_at"] = now.astimezone(UTC).isoformat()
    report["would_save_usd"] = round(outcomes["actual"].cost_usd - outcomes["diurnal"].cost_usd, 2)
    return report
