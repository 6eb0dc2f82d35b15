"""What the planner plans over: the demand, each provider's capacity and the prices, for each
step of the hours ahead (a :class:`~policies.Outlook` on the view).

The planner is driven by what the weights do not change:

- **demand**: the trusted forecast of ``demand_rate``, the requests that reach the providers
  net of retries (the router's per-deployment counters, which leave out the cache hits the
  router answers itself, so the forecast is net of the cache-hit ratio as it was; and a
  retried request counts once, since retries are a symptom of the routing, not demand), its
  upper band per step, at its highest within the step (a step is a mean: on a ramp its last
  minutes are half way to the next step's, so each step takes the larger of its value and
  the midpoints with its neighbours); the first step takes the load observed now where that
  is higher (a crowd the forecast did not see).
  Without a trusted forecast: the load observed now, planned with ``untrusted_headroom``;
- **capacity**: the SLO capacity learned per local hour of the week (``slo_capacity``), the
  configured limits (RPM, TPM at the tokens per request seen, the measured knee), and a cap
  from a recent breach: a provider seen over the SLO (or the error budget) at some load takes
  less than that now, for the stabilization window, so that share does not flow straight back;
- **prices**: each provider's price per request at each step (its price windows in local
  time), at the tokens per request seen;
- **the pool**: the first prewarm action sizing a provider's self-hosted pool, with the units
  that can be counted on now (the fewest in force over the last warm-up lead).

The builder keeps the only state: the breach caps, the pool amounts it published and the
headroom learned per provider from the breaches realised (:mod:`controller.headroom`), which
each step's capacity carries to the planner.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from collectors.hour_of_week import slot, slot_name
from controller.fit import ALL, Learned
from controller.headroom import HeadroomLearner
from controller.observations import Observations
from controller.settings import Settings
from policies import (
    Ahead,
    Decision,
    Outlook,
    PolicyConfig,
    Pool,
    PrewarmConfig,
    ProviderView,
    ReasonCode,
    SloCapacity,
)

__all__ = ["MAX_BREACH_CUT", "OutlookBuilder"]

#: A breach cuts the capacity planned on to at least this share of the load it was seen at.
MAX_BREACH_CUT = 0.5


class OutlookBuilder:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        #: Per provider: (capacity to plan on at most, until when, why).
        self._breaches: dict[str, tuple[float, datetime, tuple[ReasonCode, str]]] = {}
        #: Per pool action: (since when, amount) in force, newest last.
        self._amounts: dict[str, deque[tuple[datetime, float]]] = {}
        pol = settings.policy
        self.headroom = HeadroomLearner(pol.capacity_headroom, pol.min_headroom, pol.headroom_recovery_per_hour,
                                        settings.timezone)

    def build(self, when: datetime, obs: Observations, learned: Learned, config: PolicyConfig,
              providers: dict[str, ProviderView]) -> Outlook | None:
        pol = self.settings.policy
        tz = self.settings.timezone
        lead = max((a.lead for a in config.prewarm), default=timedelta(0))
        horizon = max(timedelta(hours=pol.plan_hours), lead + timedelta(hours=1))
        total = obs.value_or_none("demand_rate", None)
        observed = None if total is None else total * 60.0
        sf = learned.trusted(("demand_rate", ALL))
        points = [p for p in sf.load_from(when) if p.at < when + horizon] if sf is not None else []
        if points:
            demand = _within_step_peaks([(p.at, p.upper_rpm) for p in points])
            demand[0] = (demand[0][0], max(demand[0][1], observed or 0.0))
        elif observed is not None:
            demand = [(when, observed)]
        else:
            return None
        self._note_breaches(when, providers, config, learned)
        tokens = self._tokens_per_request(obs, config)
        steps = [
            Ahead(at=at, demand_rpm=rpm,
                  capacity={n: self._capacity(n, at, when, learned, config, providers) for n in config.providers},
                  price_per_request={n: self._price(n, at, config, tokens) for n in config.providers},
                  price_factor={n: p.price.factor_at(at, tz) if p.price is not None else 1.0
                                for n, p in config.providers.items()})
            for at, rpm in demand]
        # The weights now must already hold for a provider's capacity dropping within the
        # look-ahead (the lead and the window after it): moving share takes a few ticks under
        # the guardrails' step limit. (Not for the demand: the hour's upper band bounds it now,
        # and a pool warming up for a later hour should not push share to a dearer provider.)
        soon = [s for s in steps if s.at < when + timedelta(minutes=pol.lead_minutes + pol.window_minutes)]
        steps[0] = replace(steps[0], capacity={n: min((s.capacity[n] for s in soon), key=_planned_rpm)
                                               for n in config.providers})
        return Outlook(steps=tuple(steps), trusted=bool(points), pool=self._pool(when, config, providers))

    def record(self, decision: Decision, config: PolicyConfig) -> None:
        """Note the pool amounts the published decision puts in force now."""
        for a in config.prewarm:
            now = [p for p in decision.prewarm if p.action == a.name and p.at <= decision.at]
            if not now:
                continue
            history = self._amounts.setdefault(a.name, deque())
            if not history or history[-1][1] != now[-1].amount:
                history.append((decision.at, now[-1].amount))
            while len(history) > 1 and history[1][0] <= decision.at - a.lead:
                history.popleft()  # the amount in force a lead ago stays: it is the oldest that counts

    # ---- capacity ----------------------------------------------------------------------

    def _note_breaches(self, when: datetime, providers: dict[str, ProviderView], config: PolicyConfig,
                       learned: Learned) -> None:
        """A provider over the SLO or the error budget now: plan it below the load it has; at
        nothing (its minimum share) when that load is one it served within the SLO at this
        hour before: then the breach is not the load's doing (an incident), and less load will
        not cure it. Every provider's state, breach or not, teaches the headroom learner."""
        slo, budget = config.latency_slo_seconds, config.error_budget
        hold = timedelta(seconds=self.settings.guardrails.stabilization_seconds)
        hour = slot(when, self.settings.timezone)
        pool = self._pool(when, config, providers)
        for name, pv in providers.items():
            load = pv.observed_rpm
            if not load or load <= 0:
                continue
            over: list[tuple[float, ReasonCode, str]] = []
            badness: list[float] = []
            if pv.observed_p95_seconds is not None:
                badness.append(pv.observed_p95_seconds / slo)
                if pv.observed_p95_seconds > slo:
                    over.append((slo / pv.observed_p95_seconds, ReasonCode.ObservedLatencyBreach,
                                 f"p95 {pv.observed_p95_seconds:.2f}s over the {slo:.2f}s SLO at {load:.0f} rpm"))
            if pv.observed_error_ratio is not None:
                badness.append(pv.observed_error_ratio / budget)
                if pv.observed_error_ratio > budget:
                    over.append((budget / pv.observed_error_ratio, ReasonCode.ErrorBudgetBreach,
                                 f"{pv.observed_error_ratio:.1%} of its requests failing (429/5xx) at {load:.0f} rpm, "
                                 f"over the {budget:.1%} error budget"))
            profile = learned.capacity.get(name)
            known = profile.at(hour) if profile is not None else None
            not_load = bool(over) and known is not None and known.rpm is not None \
                and str(known.evidence) in ("measured", "lower_bound") and load <= known.rpm
            if pool is not None and pool.provider == name:
                capacity: float | None = pool.ready_units * pool.rpm_per_unit
            else:
                capacity = _learned_rpm(self._capacity(name, when, when, learned, config, providers))
            self.headroom.observe(name, when, badness=max(badness) if badness else None, load_rpm=load,
                                  capacity_rpm=capacity,
                                  what=min(over)[2].split(" at ")[0] if over else "")
            if not over:
                continue
            ratio, code, what = min(over)
            cap = load * max(MAX_BREACH_CUT, ratio)
            if not_load:
                assert known is not None and known.rpm is not None
                cap = 0.0
                what += f", a load it served within the SLO at this hour before (up to {known.rpm:.0f} rpm): not load"
            before = self._breaches.get(name)
            if before is not None and before[1] > when:
                cap = min(cap, before[0])
            until = when + hold
            local = until.astimezone(ZoneInfo(self.settings.timezone))
            self._breaches[name] = (cap, until, (code, f"{what}: planned at most {cap:.0f} rpm until {local:%H:%M}"))

    def _capacity(self, name: str, at: datetime, now: datetime, learned: Learned, config: PolicyConfig,
                  providers: dict[str, ProviderView]) -> SloCapacity:
        tz = self.settings.timezone
        profile = learned.capacity.get(name)
        s = slot(at, tz)
        if profile is not None:
            got = profile.at(s)
            rpm, evidence = got.rpm, str(got.evidence)
            if evidence == "lower_bound" and profile.overall.rpm is not None and profile.overall.evidence in (
                    "lower_bound", "measured"):
                # Never over the SLO here; what it served well at other hours counts too.
                rpm = max(rpm or 0.0, profile.overall.rpm)
            reach = "all hours" if got.radius < 0 else slot_name(s) + (f" ±{got.radius} h" if got.radius else "")
            note = f"learned from {got.hours} h of history ({reach}, {evidence.replace('_', ' ')})"
        else:
            rpm, evidence, note = None, "unknown", "no history"
        limit = config.providers[name].limit_rpm(providers.get(name))
        breach = self._breaches.get(name)
        live = breach is not None and at < breach[1]  # a step starting before the cap expires
        headroom = self.headroom.at(name, at, now)
        return SloCapacity(rpm=rpm, evidence=evidence, note=note, limit_rpm=limit,
                           breach_rpm=breach[0] if breach is not None and live else None,
                           breach=breach[2] if breach is not None and live else None,
                           headroom=headroom.value if headroom is not None else None,
                           headroom_note=headroom.note if headroom is not None else "")

    # ---- prices and the pool -------------------------------------------------------------

    @staticmethod
    def _tokens_per_request(obs: Observations, config: PolicyConfig) -> dict[str | None, tuple[float, float]]:
        """(input, output) tokens per request per provider, and for all (``None``), where seen."""
        out: dict[str | None, tuple[float, float]] = {}
        for who in [*config.providers, None]:
            rate = obs.value_or_none("request_rate", who)
            tin, tout = obs.value_or_none("input_token_rate", who), obs.value_or_none("output_token_rate", who)
            if rate and rate > 0 and tin is not None and tout is not None:
                out[who] = (tin / rate, tout / rate)
        return out

    def _price(self, name: str, at: datetime, config: PolicyConfig,
               tokens: dict[str | None, tuple[float, float]]) -> float | None:
        price = config.providers[name].price
        if price is None:
            return None
        size = tokens.get(name) or tokens.get(None)
        if size is None:
            if price.input_per_million_tokens or price.output_per_million_tokens:
                return None  # priced by the token, and no request seen yet to size one
            size = (0.0, 0.0)
        return price.per_request_at(size[0], size[1], at, self.settings.timezone)

    def _pool(self, when: datetime, config: PolicyConfig, providers: dict[str, ProviderView]) -> Pool | None:
        action = next((a for a in config.prewarm if a.provider in config.providers and a.kind in ("replicas", "pool")),
                      None)
        if action is None:
            return None
        observed = providers[action.provider].observed_rpm if action.provider in providers else None
        headroom = min(config.capacity_headroom, self.headroom.current(action.provider))
        need = math.ceil((observed or 0.0) / (action.rpm_per_unit * headroom) - 1e-9)
        return Pool(action=action.name, provider=action.provider, rpm_per_unit=action.rpm_per_unit,
                    unit_price_per_hour=action.unit_price_per_hour, min_units=action.min_units, max_units=action.max_units,
                    lead=action.lead, release_after=action.release_after,
                    ready_units=self._ready(action, when), needed_now=min(action.max_units, need))

    def _ready(self, action: PrewarmConfig, when: datetime) -> int:
        """The units that can be counted on now: the fewest in force over the last lead (a
        raise more recent than that is still warming up)."""
        history = self._amounts.get(action.name)
        if not history:
            return action.min_units
        recent = [amount for since, amount in history if since > when - action.lead]
        in_force_then = [amount for since, amount in history if since <= when - action.lead]
        start = in_force_then[-1] if in_force_then else action.min_units
        return int(max(action.min_units, min([start, *recent])))


def _within_step_peaks(demand: list[tuple[datetime, float]]) -> list[tuple[datetime, float]]:
    """Each step's demand at its highest *within* the step. A forecast step is a mean (of an
    hour, at the hourly step): on a ramp the load at the end of the hour is already half way
    to the next hour's mean, and after a peak the start of the hour is still half way down
    from it. So each step plans on the larger of its own value and the midpoints with its
    neighbours: a morning ramp is met by the end of the hour before it, not a lead late."""
    values = [v for _, v in demand]
    out = []
    for i, (at, v) in enumerate(demand):
        around = [(v + values[j]) / 2 for j in (i - 1, i + 1) if 0 <= j < len(values)]
        out.append((at, max([v, *around])))
    return out


def _learned_rpm(c: SloCapacity) -> float | None:
    """The SLO capacity learned, within the hard limit (no breach cap): what the headroom is of."""
    known = [x for x in (c.rpm, c.limit_rpm) if x is not None]
    return min(known) if known else None


def _planned_rpm(c: SloCapacity) -> float:
    """How much a capacity lets the plan send (for picking the tightest of several)."""
    return min(x for x in (c.rpm, c.limit_rpm, c.breach_rpm, math.inf) if x is not None)
