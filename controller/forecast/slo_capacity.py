"""A provider's SLO capacity by hour of week: the load (requests per minute) at which its p95
reaches the SLO, or its 429/5xx share the error budget, learned from its own hourly history.

Capacity is what the weights do not change: a busy shared cloud *shrinks* it at set hours,
and latency then follows the load it is sent. Forecasting p95 instead would learn from a
history the weights shaped (move traffic away, the breach disappears from the data, share
drifts back); the capacity learned here keeps the evidence of a breach for as long as the
history lasts, so a plan that kept traffic away keeps it away.

Each hour of history is a point (load, badness), where badness is the larger of p95 / SLO and
error share / error budget: over 1 the hour breached. Per local hour-of-week slot:

- **measured**: the slot (or its pooled neighbours) has hours on both sides of 1, and a load
  threshold separates them (all but ``MAX_MISCLASSIFIED`` of the hours). The
  capacity is where badness crosses 1, interpolated (in log badness) between the busiest good
  hour and the quietest bad hour around the threshold that misclassifies fewest hours;
- **lower_bound**: every hour was good: the capacity is at least the busiest load seen (or the
  provider's overall capacity, if that is higher);
- **upper_bound**: every hour breached, or breaches and good hours mix at the same loads: the
  capacity is below the quietest load that breached, by as much as p95 was over the SLO there
  (or the overall one, if lower);
- **overall**: too few hours near the slot: the provider's capacity over all hours;
- **unknown**: no data at all.

A slot with fewer than ``min_hours`` hours is pooled with its neighbours (±1 hour, then ±2 of
the same day) until it has them; pooling says how far it reached. Wall-clock slots keep
"Monday 09:00" the same slot across DST.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd

from collectors.hour_of_week import slots as slots_of

__all__ = ["CapacityProfile", "Evidence", "SlotCapacity", "learn_capacity", "neighbours", "threshold_capacity"]

SLOTS = 168
#: Hours needed near a slot before it gets an estimate of its own.
MIN_HOURS = 4
#: How far a slot borrows hours from its neighbours of the same day, in hours.
MAX_RADIUS = 2
#: A knee is measured only where a load threshold explains all but this share of the hours.
MAX_MISCLASSIFIED = 0.1
#: An upper bound from breaches is at least this share of the quietest load that breached.
MAX_SCALE_DOWN = 0.25


class Evidence(StrEnum):
    """How a capacity estimate is known (most to least sure)."""

    measured = "measured"
    lower_bound = "lower_bound"
    upper_bound = "upper_bound"
    overall = "overall"
    unknown = "unknown"


@dataclass(frozen=True)
class SlotCapacity:
    rpm: float | None  # None: unknown
    evidence: Evidence
    hours: int  # hours of history behind it
    radius: int = 0  # neighbours pooled, in hours (-1: the provider's overall estimate)


@dataclass(frozen=True)
class CapacityProfile:
    """A provider's SLO capacity for each local hour of the week (0 = Monday 00:00)."""

    slots: tuple[SlotCapacity, ...]
    overall: SlotCapacity

    def at(self, slot: int) -> SlotCapacity:
        return self.slots[slot % SLOTS]

    def rpm(self) -> np.ndarray:
        """168 capacities, NaN where unknown."""
        return np.array([np.nan if s.rpm is None else s.rpm for s in self.slots], dtype=float)


def threshold_capacity(load: np.ndarray, badness: np.ndarray) -> SlotCapacity:
    """The capacity implied by hours of (load rpm, badness): see the module docstring."""
    ok = np.isfinite(load) & np.isfinite(badness) & (load >= 0)
    x, b = load[ok], badness[ok]
    n = len(x)
    if n == 0:
        return SlotCapacity(None, Evidence.unknown, 0)
    bad = b > 1.0
    if not bad.any():
        return SlotCapacity(float(x.max()), Evidence.lower_bound, n)
    if bad.all():
        return _below_breach(x, b, n)
    order = np.argsort(x, kind="stable")
    xs, bs, bads = x[order], b[order], bad[order]
    # Threshold after position i (loads <= xs[i] good, above bad): errors = good above + bad below.
    bad_below = np.cumsum(bads)
    good_above = (~bads).sum() - np.cumsum(~bads)
    errors = bad_below + good_above
    i = int(np.argmin(errors[:-1]))  # a threshold between two points (both classes present)
    if errors[i] > max(1, MAX_MISCLASSIFIED * n):
        # Breaches at loads the provider also served well: no load threshold explains them (a
        # provider slow at set hours whatever it is sent, mixed in with its other hours). What
        # is sure is that it breached from the lowest load it breached at.
        return _below_breach(x[bad], b[bad], n)
    # The busiest good hour at or below the threshold and the quietest bad hour above it.
    lo = np.flatnonzero(~bads[: i + 1])
    hi = np.flatnonzero(bads[i + 1:]) + i + 1
    if len(lo) == 0 or len(hi) == 0:
        cut = float((xs[i] + xs[i + 1]) / 2)
        return SlotCapacity(cut, Evidence.measured, n)
    x0, b0 = xs[lo[-1]], bs[lo[-1]]
    x1, b1 = xs[hi[0]], bs[hi[0]]
    if x1 <= x0 or b1 <= b0 or b0 <= 0:
        return SlotCapacity(float((x0 + x1) / 2), Evidence.measured, n)
    # Where badness crosses 1 between the two hours that bracket it, interpolating its log:
    # latency grows ever faster with load near saturation, and a straight line through two
    # far-apart hours would put the crossing too early.
    cut = x0 + (0.0 - math.log(b0)) * (x1 - x0) / (math.log(b1) - math.log(b0))
    return SlotCapacity(float(min(max(cut, x0), x1)), Evidence.measured, n)


def _below_breach(load: np.ndarray, badness: np.ndarray, n: int) -> SlotCapacity:
    """An upper bound from breaching hours: below the quietest load that breached, by as much
    as it breached there (p95 twice the SLO: half that load). Latency grows at least as fast as
    load near saturation, so this errs on the safe side, and a provider slow whatever it is
    sent gets less each time it breaches again; never under ``MAX_SCALE_DOWN`` of that load."""
    i = int(np.argmin(load))
    scale = max(MAX_SCALE_DOWN, min(1.0, 1.0 / float(badness[i])))
    return SlotCapacity(float(load[i]) * scale, Evidence.upper_bound, n)


def neighbours(slot: int, radius: int) -> list[int]:
    """``slot`` and the slots up to ``radius`` hours before and after it on the same day."""
    day, hour = divmod(slot, 24)
    return [day * 24 + h for h in range(max(0, hour - radius), min(23, hour + radius) + 1)]


def learn_capacity(load_rpm: pd.Series, p95: pd.Series, error_share: pd.Series | None, *, tz: str,
                   slo_seconds: float, error_budget: float, prior: CapacityProfile | None = None,
                   min_hours: int = MIN_HOURS, max_radius: int = MAX_RADIUS) -> CapacityProfile:
    """The profile from hourly series on one UTC index (the store's hourly signals): the load
    in requests per minute, p95 in seconds and the 429+5xx share (None: not exported).

    ``prior`` is the last profile learned. A slot's capacity moves from it only on proof in the
    slot's own hours: up past a load that stayed within the SLO, down below one that breached.
    Otherwise a change only means that evidence aged out of the history: the breaches of the
    weeks before the traffic was moved away, say, and believing that would send it back."""
    index = load_rpm.index
    assert isinstance(index, pd.DatetimeIndex)
    load = load_rpm.to_numpy(dtype=float)
    badness = p95.reindex(index).to_numpy(dtype=float) / slo_seconds
    if error_share is not None:
        err = error_share.reindex(index).to_numpy(dtype=float) / error_budget
        badness = np.fmax(badness, err)  # a NaN side does not hide the other
    keep = np.isfinite(load) & np.isfinite(badness)
    load, badness = load[keep], badness[keep]
    hour_slots = slots_of(index[keep], tz) if keep.any() else np.array([], dtype=int)
    overall = threshold_capacity(load, badness)
    overall = SlotCapacity(overall.rpm, overall.evidence, overall.hours, -1)
    by_slot: list[np.ndarray] = [np.flatnonzero(hour_slots == s) for s in range(SLOTS)]
    out = [_slot_estimate(s, by_slot, load, badness, overall, min_hours, max_radius) for s in range(SLOTS)]
    if prior is not None:
        out = [_moved_only_on_proof(s, est, prior.at(s), by_slot, load, badness) for s, est in enumerate(out)]
    return CapacityProfile(tuple(out), overall)


def _moved_only_on_proof(s: int, est: SlotCapacity, before: SlotCapacity, by_slot: list[np.ndarray],
                        load: np.ndarray, badness: np.ndarray) -> SlotCapacity:
    """The new estimate, kept at the prior one unless the slot's own hours prove otherwise: it
    rises only past a load that stayed within the SLO, and falls only below one that breached."""
    if est.rpm is None or before.rpm is None or est.rpm == before.rpm:
        return est
    own = by_slot[s]
    good, bad = load[own][badness[own] <= 1.0], load[own][badness[own] > 1.0]
    lowest = -math.inf if len(bad) and float(bad.min()) < before.rpm else before.rpm
    highest = math.inf if len(good) and float(good.max()) > before.rpm else before.rpm
    rpm = min(max(est.rpm, lowest), highest)
    if rpm == est.rpm:
        return est
    evidence = before.evidence
    if evidence is Evidence.lower_bound and len(bad):  # it has breached here since: no longer a lower bound
        evidence = Evidence.measured if len(good) else Evidence.upper_bound
    return SlotCapacity(rpm, evidence, est.hours, est.radius)


def _slot_estimate(s: int, by_slot: list[np.ndarray], load: np.ndarray, badness: np.ndarray,
                   overall: SlotCapacity, min_hours: int, max_radius: int) -> SlotCapacity:
    """Widen the pool only while it is thin (one-sided evidence with enough hours is a bound,
    not a reason to borrow from neighbours that may be in another regime, like the hour before
    a busy window); what the slot's own hours proved (good up to one load, bad from another)
    bounds what was borrowed."""
    own = by_slot[s]
    good, bad = load[own][badness[own] <= 1.0], load[own][badness[own] > 1.0]
    floor = float(good.max()) if len(good) else -math.inf
    ceiling = float(bad.min()) if len(bad) else math.inf
    if len(bad) and not len(good):  # it breached at every load it had here: not even at the quietest
        ceiling = _below_breach(bad, badness[own][badness[own] > 1.0], len(bad)).rpm or ceiling
    est: SlotCapacity | None = None
    for radius in range(max_radius + 1):
        rows = np.concatenate([by_slot[n] for n in neighbours(s, radius)])
        if len(rows) < min_hours:
            continue
        got = threshold_capacity(load[rows], badness[rows])
        est = SlotCapacity(got.rpm, got.evidence, got.hours, radius)
        break
    est = _with_overall(est, overall)
    if est.rpm is not None and floor <= ceiling:  # noisy own hours (good above bad) bound nothing
        est = SlotCapacity(min(max(est.rpm, floor), ceiling), est.evidence, est.hours, est.radius)
    return est


def _with_overall(est: SlotCapacity | None, overall: SlotCapacity) -> SlotCapacity:
    """A bound is widened or narrowed by the overall estimate where that says more."""
    if est is None or est.rpm is None:
        return overall if overall.rpm is not None else SlotCapacity(None, Evidence.unknown, 0, -1)
    if overall.rpm is None or overall.evidence is not Evidence.measured:
        return est
    if est.evidence is Evidence.lower_bound and overall.rpm > est.rpm:
        return SlotCapacity(overall.rpm, est.evidence, est.hours, est.radius)
    if est.evidence is Evidence.upper_bound and overall.rpm < est.rpm:
        return SlotCapacity(overall.rpm, est.evidence, est.hours, est.radius)
    return est
