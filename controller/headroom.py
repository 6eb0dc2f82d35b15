"""The planner's headroom per provider, learned from the breaches it realised.

The planner plans each provider up to ``headroom`` x its SLO capacity. That capacity is learned
from hourly history (:mod:`controller.forecast.slo_capacity`), and a minute is noisier than an
hour: the load is not flat within the hour, a minute's p95 is drawn from fewer requests, a
retry lands on the next provider. A plan at the configured headroom of the hourly capacity can
run hot minute after minute while every hour looks fine. This closes the loop on what happened,
per provider:

- **over the SLO at a load the plan counted as safe** (its p95 over the SLO, or its 429/5xx
  share over the error budget, with the load at least ``ENGAGED`` of what it is planned at most)
  cuts the headroom in proportion to how far over and for how long: ``log h`` falls by
  ``CUT_GAIN`` x ``log(badness)`` per minute (15 minutes 10% over: x0.87);
- **comfortably inside** (badness at most ``COMFORT``) while loaded near what it is planned at
  (at least ``BINDING`` of it: the headroom is what binds) wins it back slowly, by
  ``recovery_per_hour`` of capacity per hour: a planner that runs hot widens its margin within
  minutes and gives it back over hours;
- a breach at a load under ``ENGAGED`` of the plan teaches nothing: it is not the load's doing,
  and less load will not cure it. (One the outlook calls an incident because the hourly
  capacity says the provider took that load before does teach: a minute over the SLO below the
  hourly capacity is exactly how a plan at that capacity runs hot. An incident then costs a
  headroom lower than needed for a few hours, never an SLO minute.)
- the headroom stays within ``[floor, ceiling]`` (``policy.min_headroom`` and
  ``policy.capacity_headroom``);
- **per hour of the week** the lowest headroom a breach cut it to in that hour is kept. A
  step of the plan at that hour is planned with the lower of the headroom now and the one
  kept, which relaxes toward the ceiling by half each week since: Monday 09:00 ran hot last
  week, so this Monday it is planned cooler (and the pool prewarmed for it) before it breaches.

The state is small (a number per provider, and per provider and hour of week) and goes to the
store's meta with :meth:`HeadroomLearner.dumps`, so a restart keeps what was learned.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from collectors.hour_of_week import slot, slot_name

__all__ = ["BINDING", "COMFORT", "CUT_GAIN", "ENGAGED", "Headroom", "HeadroomLearner"]

#: log(headroom) falls by this x log(badness) per minute over the SLO.
CUT_GAIN = 0.1
#: A breach teaches only at a load of at least this share of what the provider is planned at.
ENGAGED = 0.5
#: Headroom is won back only while badness (p95 / SLO, error share / budget) is at most this ...
COMFORT = 0.85
#: ... and the load is at least this share of what the provider is planned at.
BINDING = 0.8
#: The most minutes one observation counts for (a tick after a pause is not a long breach).
MAX_MINUTES = 15.0
#: How much of a kept hour's cut is left after a week.
WEEKLY_RELAX = 0.5
_WEEK = 7 * 86400.0


@dataclass(frozen=True)
class Headroom:
    """The headroom to plan a provider with at some time, and why, in words."""

    value: float
    note: str


@dataclass
class _State:
    headroom: float
    at: float  # last observation, epoch seconds
    breach_minutes: float = 0.0  # since the headroom last stood at the ceiling
    worst: str = ""  # the worst breach that cut it, in words
    worst_badness: float = 0.0


class HeadroomLearner:
    def __init__(self, ceiling: float, floor: float, recovery_per_hour: float, tz: str) -> None:
        self.ceiling = ceiling
        self.floor = min(floor, ceiling)
        self.recovery_per_hour = recovery_per_hour
        self.tz = tz
        self._state: dict[str, _State] = {}
        #: Per provider, per hour-of-week slot: (lowest headroom while loaded there, when).
        self._slots: dict[str, dict[int, tuple[float, float]]] = {}
        self.changed = False

    # ---- learning -------------------------------------------------------------------------

    def observe(self, name: str, when: datetime, *, badness: float | None, load_rpm: float | None,
                capacity_rpm: float | None, what: str = "") -> None:
        """One observation of provider ``name``: its badness (the larger of p95 / SLO and error
        share / budget; over 1 it breached), its load and the SLO capacity it is planned on."""
        now = when.timestamp()
        st = self._state.get(name)
        minutes = 1.0 if st is None else min(MAX_MINUTES, max(0.0, (now - st.at) / 60.0))
        if st is None:
            st = self._state[name] = _State(self.ceiling, now)
        st.at = now
        if badness is None or not math.isfinite(badness) or not load_rpm or load_rpm <= 0 \
                or not capacity_rpm or capacity_rpm <= 0:
            return
        planned = capacity_rpm * st.headroom
        before = st.headroom
        if badness > 1.0 and load_rpm >= ENGAGED * planned:
            st.headroom = max(self.floor, st.headroom * math.exp(-CUT_GAIN * math.log(badness) * minutes))
            st.breach_minutes += minutes
            if badness > st.worst_badness:
                local = when.astimezone(ZoneInfo(self.tz))
                st.worst, st.worst_badness = f"{what} at {load_rpm:.0f} rpm on {local:%a %H:%M}", badness
        elif badness <= COMFORT and load_rpm >= BINDING * planned and st.headroom < self.ceiling:
            st.headroom = min(self.ceiling, st.headroom + self.recovery_per_hour * minutes / 60.0)
            if st.headroom >= self.ceiling:
                st.breach_minutes, st.worst, st.worst_badness = 0.0, "", 0.0
        if st.headroom < before:  # this hour of the week ran hot: keep the lowest it was cut to
            s = slot(when, self.tz)
            slots = self._slots.setdefault(name, {})
            slots[s] = (min(self._relaxed(slots.get(s), now), st.headroom), now)
        self.changed = self.changed or st.headroom != before

    def _relaxed(self, kept: tuple[float, float] | None, now: float) -> float:
        if kept is None:
            return self.ceiling
        value, at = kept
        weeks = max(0.0, now - at) / _WEEK
        if weeks < 1.0 / 7:  # within the day it was kept: as it was
            return value
        return float(self.ceiling - (self.ceiling - value) * WEEKLY_RELAX ** max(1.0, round(weeks)))

    # ---- planning -------------------------------------------------------------------------

    def current(self, name: str) -> float:
        st = self._state.get(name)
        return self.ceiling if st is None else st.headroom

    def at(self, name: str, when: datetime, now: datetime) -> Headroom | None:
        """The headroom for a step of the plan at ``when`` (planned at ``now``); None where
        nothing was learned and the ceiling stands."""
        st = self._state.get(name)
        value = self.ceiling if st is None else st.headroom
        s = slot(when, self.tz)
        kept = self._relaxed(self._slots.get(name, {}).get(s), now.timestamp())
        if min(value, kept) >= self.ceiling - 1e-9:
            return None
        if kept < value:
            return Headroom(kept, f"planned with {kept:.0%} headroom (of {self.ceiling:.0%}): it ran over the SLO "
                                  f"near {slot_name(s)} before, and that is kept for this hour of the week")
        assert st is not None
        why = f"; the worst: {st.worst}" if st.worst else ""
        return Headroom(value, f"planned with {value:.0%} headroom (of {self.ceiling:.0%}), learned from "
                               f"{st.breach_minutes:.0f} min over the SLO at loads planned as safe{why}")

    # ---- state ----------------------------------------------------------------------------

    def dumps(self) -> str:
        self.changed = False
        return json.dumps({
            "providers": {n: [s.headroom, s.at, s.breach_minutes, s.worst, s.worst_badness]
                          for n, s in self._state.items()},
            "slots": {n: {str(k): list(v) for k, v in slots.items()} for n, slots in self._slots.items()},
        })

    def loads(self, text: str | None) -> None:
        """Restore what :meth:`dumps` wrote (clipped to the bounds configured now); a value that
        cannot be read is ignored: learning starts again from the ceiling."""
        if not text:
            return
        try:
            raw = json.loads(text)
            state = {n: _State(self._clip(float(v[0])), float(v[1]), float(v[2]), str(v[3]), float(v[4]))
                     for n, v in raw.get("providers", {}).items()}
            slots = {n: {int(k): (self._clip(float(v[0])), float(v[1])) for k, v in ss.items()}
                     for n, ss in raw.get("slots", {}).items()}
        except (ValueError, TypeError, IndexError, AttributeError):
            return
        self._state, self._slots = state, slots

    def _clip(self, value: float) -> float:
        return min(self.ceiling, max(self.floor, value))
