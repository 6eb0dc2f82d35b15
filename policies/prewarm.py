"""Prewarm plans: capacity in place *before* a predicted peak, released after it.

For each configured action (a Deployment's replicas, a webhook such as a cache warm or
provisioned throughput, a connection-pool size), in units of ``rpm_per_unit``:

- the **reactive need** is what the load observed now takes;
- the **predicted need** at a time ``t`` is what the *upper* band of the trusted load
  forecast takes at ``t``; since warming up takes ``lead``, what is needed at any time within
  ``[now, now + lead]`` must be in place now;
- the amount now is ``max(reactive, predicted over the lead, held)`` within the action's
  bounds: predictions only ever add. A plan that was raised for a peak is **held** until
  the peak's end plus ``release_after`` (the stabilization window), so a forecast dipping
  for an hour does not scale in; with no trusted forecast only the reactive need counts;
- each later **peak** in the forecast (the highest point of a stretch where the predicted
  need exceeds the amount now) gets one plan step at the peak minus ``lead``; the look-ahead
  raises the amount earlier where the forecast climbs towards it.

When the load observed over a recent window of comparable minutes (``View.load_check``: the
last ``policy.missed_window_minutes``, most of them with data) is far below the lower band
that the forecast in force gave for *the same minutes* (under ``MISSED_BELOW_LOWER`` of it: a
holiday, an outage upstream), the forecast is not happening: plans and holds are dropped and
the action only reacts (``ForecastMissed``) until the load is back within reach. The first
minutes of a ramp are never compared with the whole hour's band: a peak that starts slowly
keeps its capacity, and without enough comparable minutes the plans stand.

Reason codes (knob ``prewarm/<name>``): ``ForecastMissed``, ``PredictedPeak`` (raised now for a peak within the
lead), ``HeldUntilRelease``, ``PeakPlanned`` (a later peak has a plan step), ``NoPeakAhead``,
``ReactiveNeed``/``ForecastGated`` (no trusted forecast: the observed load only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from policies.types import (
    Decision,
    LoadPoint,
    PolicyConfig,
    PrewarmAction,
    PrewarmConfig,
    Reason,
    ReasonCode,
    View,
)

__all__ = ["MISSED_BELOW_LOWER", "decide_prewarm"]

#: Observed total load under this share of the forecast's lower band: the forecast missed.
MISSED_BELOW_LOWER = 0.75


def _forecast_missed(view: View) -> str | None:
    """Why the total load forecast is not happening, or None."""
    check = view.load_check
    if check is None or not view.load_forecast.get("*") or check.lower_rpm <= 0:
        return None
    if check.observed_rpm >= MISSED_BELOW_LOWER * check.lower_rpm:
        return None
    return (f"the forecast is not happening: {check.observed_rpm:.0f} rpm observed over {check.minutes} minutes "
            f"({_when(check.start, view.tz)} to {_when(check.end, view.tz)}), where the forecast's lower band was "
            f"{check.lower_rpm:.0f} rpm; reacting only until the load is back within reach")


def _units(rpm: float, a: PrewarmConfig) -> int:
    need = math.ceil(max(0.0, rpm) / a.rpm_per_unit - 1e-9)
    return int(min(a.max_units, max(a.min_units, need)))


def _observed_rpm(view: View, provider: str) -> float | None:
    if provider == "*":
        return view.observed_total_rpm
    pv = view.providers.get(provider)
    return pv.observed_rpm if pv is not None else None


def _step(points: Sequence[LoadPoint]) -> timedelta:
    return points[1].at - points[0].at if len(points) > 1 else timedelta(hours=1)


def _peaks(points: Sequence[LoadPoint], a: PrewarmConfig, above: int, now: datetime
           ) -> list[tuple[datetime, datetime, datetime, int]]:
    """Stretches of the forecast not yet over whose need exceeds ``above``:
    (start, end, peak_at, units)."""
    step = _step(points)
    out: list[tuple[datetime, datetime, datetime, int]] = []
    run: list[LoadPoint] = []
    for p in [*points, None]:
        if p is not None and p.at + step > now and _units(p.upper_rpm, a) > above:
            run.append(p)
            continue
        if run:
            top = max(run, key=lambda q: q.upper_rpm)
            out.append((run[0].at, run[-1].at + step, top.at, _units(top.upper_rpm, a)))
            run = []
    return out


def _when(t: datetime, tz: str) -> str:
    return f"{t.astimezone(ZoneInfo(tz)):%a %H:%M %Z}"


def _provider_points(view: View, provider: str, share: float | None) -> tuple[LoadPoint, ...]:
    """The load forecast an action for ``provider`` serves: its own forecast, or the total
    forecast at the ``share`` it is being given, whichever is higher at each step (its own
    history was made at the shares of the past: moving traffic to it must warm more)."""
    own = view.load_forecast.get(provider, ())
    total = view.load_forecast.get("*", ()) if provider != "*" else ()
    if not total or share is None:
        return own
    scaled = {p.at: LoadPoint(p.at, p.mean_rpm * share, p.upper_rpm * share) for p in total}
    for p in own:
        q = scaled.get(p.at)
        if q is None or p.upper_rpm > q.upper_rpm:
            scaled[p.at] = p
    return tuple(scaled[t] for t in sorted(scaled))


def decide_prewarm(view: View, previous: Decision | None, config: PolicyConfig, now: datetime,
                   shares: Mapping[str, float] | None = None) -> tuple[tuple[PrewarmAction, ...], list[Reason]]:
    """The plan steps and one reason per configured action. Pure. ``shares``: the weight each
    provider is being given now (a provider's action then serves that share of the total)."""
    actions: list[PrewarmAction] = []
    reasons: list[Reason] = []
    # What was in force at the previous decision (its plan steps still ahead do not count:
    # a step coming due is covered by the look-ahead over the lead).
    before = {p.action: p for p in (previous.prewarm if previous is not None else ()) if p.at <= previous.at} \
        if previous is not None else {}
    missed = _forecast_missed(view)
    for a in config.prewarm:
        knob = f"prewarm/{a.name}"
        observed = _observed_rpm(view, a.provider)
        reactive = _units(observed or 0.0, a)
        points = () if missed else _provider_points(view, a.provider, (shares or {}).get(a.provider))
        # What is needed at any time up to now + lead has to be in place now.
        ahead = [p for p in points if p.at <= now + a.lead and p.at + _step(points) > now]
        predicted = max((_units(p.upper_rpm, a) for p in ahead), default=a.min_units)
        amount, release, peak_at = max(reactive, predicted), None, None
        if predicted > reactive and ahead:
            top = max(ahead, key=lambda p: p.upper_rpm)
            peak_at = top.at
            later = _peaks(points, a, max(reactive, a.min_units), now)
            end = next((e for s, e, _, _ in later if s <= top.at < e), top.at)
            release = end + a.release_after
            what = (f"the load forecast for {_when(top.at, view.tz)}" if top.at <= now
                    else f"the predicted peak at {_when(top.at, view.tz)}")
            code, msg = ReasonCode.PredictedPeak, (
                f"{amount} units ahead of {what} (upper band {top.upper_rpm:.0f} rpm at {a.rpm_per_unit:g} rpm "
                f"per unit, {a.lead.total_seconds() / 60:.0f} min to warm up); held until {_when(release, view.tz)}")
        else:
            code, msg = ReasonCode.ReactiveNeed, f"{amount} units for the {observed or 0:.0f} rpm observed now"
        held = before.get(a.name) if not missed else None
        if held is not None and held.release_at is not None and now < held.release_at and held.amount > amount:
            amount, release, peak_at = int(held.amount), held.release_at, held.peak_at
            code, msg = ReasonCode.HeldUntilRelease, (
                f"holding {amount} units until {_when(release, view.tz)}, the end of the predicted busy stretch "
                f"plus the stabilization window; {max(reactive, predicted)} needed now")
        since = now  # a step that did not change keeps the time it took effect (a stable ETag)
        last = before.get(a.name)
        if last is not None and last.amount == amount and last.release_at == release:
            since = last.at
        actions.append(PrewarmAction(a.name, a.target, amount, since, peak_at, a.kind, release))
        if missed:
            code, msg = ReasonCode.ForecastMissed, f"{amount} units for the {observed or 0:.0f} rpm observed now; {missed}"
        elif not points:
            code_extra = " (no trusted load forecast: reacting only)"
            code = ReasonCode.ForecastGated if code == ReasonCode.ReactiveNeed else code
            msg += code_extra
        # One plan step per peak ahead, at the peak minus the warm-up lead.
        upcoming = [pk for pk in _peaks(points, a, amount, now) if pk[2] - a.lead > now]
        for _, end, top_at, units in upcoming:
            actions.append(PrewarmAction(a.name, a.target, units, top_at - a.lead, top_at, a.kind,
                                         end + a.release_after))
        if upcoming:
            _, _, t0, u0 = upcoming[0]
            msg += f"; next: {u0} units at {_when(t0 - a.lead, view.tz)} for the peak at {_when(t0, view.tz)}"
            code = ReasonCode.PeakPlanned if code == ReasonCode.ReactiveNeed else code
        elif points and code == ReasonCode.ReactiveNeed:
            code = ReasonCode.NoPeakAhead
        reasons.append(Reason(knob, code, msg))
    return tuple(actions), reasons
