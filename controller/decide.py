"""Stage 3 of a tick, decide: build the policies' view, call ``policies.decide``, then the
guardrails.

This is where settings become the policies' frozen configs (:func:`policy_config`,
:func:`guardrail_config`) and where observations and what was learned become a
:class:`~policies.View`. The only state kept is the policy's recent targets, for the
guardrails' stabilization window.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from controller.budget import SpendLedger, budget_hours, day_bounds
from controller.collect import is_route
from controller.fit import ALL, Learned
from controller.observations import Observations, SignalGap
from controller.outlook import OutlookBuilder
from controller.prices import Price
from controller.settings import GuardrailSettings, PolicySettings, Settings
from policies import (
    Decision,
    GuardrailConfig,
    LoadCheck,
    LoadPoint,
    Override,
    PolicyConfig,
    PrewarmConfig,
    PriceConfig,
    ProviderConfig,
    ProviderView,
    RouteConfig,
    RouteView,
    View,
    decide,
    guard,
)

__all__ = ["MIN_SEGMENT_REQUESTS", "DecideStage", "Decided", "guardrail_config", "policy_config", "price_config"]

#: Segments with fewer routed requests over the window get no escalation rate.
MIN_SEGMENT_REQUESTS = 50
#: Share of the missed window's minutes that need data and a band before a forecast can be
#: judged not to be happening.
MIN_COVERED = 2 / 3


def policy_config(pol: PolicySettings, providers: Sequence[str], knees: Mapping[str, float | None]) -> PolicyConfig:
    """The policies' config from the ``policy.*`` settings. ``providers``: the ones seen so
    far, shared equally when none is configured; ``knees``: measured capacities
    (``measure_knee``)."""
    if pol.providers:
        configured = {
            n: ProviderConfig(baseline_weight=p.baseline_weight, min_weight=p.min_weight, max_weight=p.max_weight,
                              capacity_rpm=p.capacity_rpm if p.capacity_rpm is not None or not p.measure_knee
                              else knees.get(n),
                              capacity_tpm=p.capacity_tpm, price=price_config(p.price))
            for n, p in pol.providers.items()
        }
    else:  # nothing configured: equal shares over the providers seen so far, unbounded
        configured = {n: ProviderConfig(baseline_weight=1.0 / len(providers), min_weight=0.0, max_weight=1.0,
                                        capacity_rpm=None, capacity_tpm=None, price=None) for n in providers}
    prewarm = tuple(
        PrewarmConfig(name=a.name, kind=a.kind, target=a.target, rpm_per_unit=a.rpm_per_unit,
                      unit_price_per_hour=a.unit_price_per_hour, min_units=a.min_units,
                      max_units=a.max_units, lead=timedelta(minutes=a.lead_minutes),
                      release_after=timedelta(minutes=a.release_after_minutes), provider=a.provider)
        for a in pol.prewarm
    )
    routes = tuple(
        RouteConfig(name=name, tier=r.tier, baseline_fraction=r.baseline_fraction, quality_floor=r.quality_floor,
                    max_fraction=r.max_fraction, strong_cost=r.strong_cost_per_request,
                    weak_cost=r.weak_cost_per_request, hourly_budget=r.hourly_budget,
                    strong_provider=r.strong_provider, max_disparity=r.max_segment_disparity,
                    daily_budget=r.daily_budget, monthly_budget=r.monthly_budget, protected=r.protected,
                    hard_stop=r.budget_hard_stop, hold_parity=r.hold_segment_parity)
        for name, r in sorted(pol.routes.items())
    )
    return PolicyConfig(providers=configured, latency_slo_seconds=pol.latency_slo_seconds,
                        capacity_headroom=pol.capacity_headroom, error_budget=pol.error_budget, prewarm=prewarm,
                        routes=routes, weights_policy=pol.weights_policy, untrusted_headroom=pol.untrusted_headroom,
                        explore_above_seen=pol.explore_above_seen,
                        shared_daily_budget=pol.shared_budget.daily if pol.shared_budget else None,
                        shared_monthly_budget=pol.shared_budget.monthly if pol.shared_budget else None)


def price_config(price: Price | None) -> PriceConfig | None:
    if price is None:
        return None
    return PriceConfig(input_per_million_tokens=price.input_per_million_tokens,
                       output_per_million_tokens=price.output_per_million_tokens, per_request=price.per_request,
                       windows=tuple((a, b, w.factor) for w in price.windows for a, b in w.minutes_of_week()))


def guardrail_config(g: GuardrailSettings) -> GuardrailConfig:
    return GuardrailConfig(mode=g.mode, kill_switch=g.kill_switch, dead_band=g.dead_band,
                           max_weight_step=g.max_weight_step, breach_step=max(g.breach_step, g.max_weight_step),
                           stabilization_seconds=g.stabilization_seconds,
                           stale_after_seconds=g.stale_after_seconds, threshold_dead_band=g.threshold_dead_band)


@dataclass(frozen=True)
class Decided:
    """One tick's decision, with what it was based on (for the audit log and the API)."""

    decision: Decision
    view: View
    overrides: tuple[Override, ...]
    #: The values the policies saw, per (signal, provider); NaN left out.
    observed: Mapping[tuple[str, str], float]


def _by_provider(missing: Sequence[SignalGap]) -> dict[str, str]:
    out: dict[str, str] = {}
    for m in missing:
        out[m.provider] = f"{out[m.provider]}; {m.describe()}" if m.provider in out else m.describe()
    return out


class DecideStage:
    def __init__(self, settings: Settings, ledger: SpendLedger | None = None,
                 score_cdf: Callable[[str, datetime], Sequence[tuple[float, float]]] | None = None) -> None:
        self.settings = settings
        #: The routes' spend (for budgets) and the score distribution of any hour, per route.
        self.ledger = ledger
        self.score_cdf = score_cdf
        self.guardrails = guardrail_config(settings.guardrails)
        self.outlook = OutlookBuilder(settings)
        #: The policy's recent targets, for the guardrails' stabilization window.
        self._targets: deque[tuple[datetime, dict[str, float]]] = deque()

    def run(self, when: datetime, obs: Observations, learned: Learned, config: PolicyConfig,
            previous: Decision | None, overrides: Sequence[Override], data_age_seconds: float | None,
            missing: Sequence[SignalGap] = ()) -> Decided:
        view, observed = self.view(when, obs, learned, config, data_age_seconds)
        target = decide(view, previous, config, when)
        target = replace(target, reasons=(*target.reasons, *learned.reasons()))
        window = timedelta(seconds=self.guardrails.stabilization_seconds)
        while self._targets and self._targets[0][0] < when - window:
            self._targets.popleft()
        decision = guard(target, previous, config, self.guardrails, data_age_seconds, when,
                         window=list(self._targets), overrides=overrides, missing=_by_provider(missing))
        self._targets.append((when, dict(target.weights)))
        self.outlook.record(decision, config)
        return Decided(decision, view, tuple(overrides), observed)

    def view(self, when: datetime, obs: Observations, learned: Learned, config: PolicyConfig,
             data_age_seconds: float | None) -> tuple[View, dict[tuple[str, str], float]]:
        """The policies' view, and the observed values in it."""
        pol = self.settings.policy
        ahead_end = when + timedelta(minutes=pol.lead_minutes + pol.window_minutes)
        observed: dict[tuple[str, str], float] = {}
        providers: dict[str, ProviderView] = {}
        for name in config.providers:
            p95 = obs.value("latency_p95", name)
            rps = obs.value("request_rate", name)
            observed[("latency_p95", name)] = p95
            observed[("request_rate", name)] = rps
            sf = learned.forecasts.get(("latency_p95", name))
            peak, peak_at = sf.window_max(when, ahead_end) if sf is not None else (None, None)
            errors = [v for s in ("error_429_ratio", "error_5xx_ratio") if (v := obs.value_or_none(s, name)) is not None]
            tokens = obs.value("input_token_rate", name) + obs.value("output_token_rate", name)
            providers[name] = ProviderView(
                name=name,
                observed_p95_seconds=None if math.isnan(p95) else p95,
                observed_rpm=None if math.isnan(rps) else rps * 60,
                predicted_p95_seconds=peak,
                predicted_p95_at=peak_at,
                forecast_trusted=peak is not None and sf is not None and sf.trusted,
                observed_error_ratio=sum(errors) if errors else None,
                tokens_per_request=tokens / rps if rps > 0 and not math.isnan(tokens) else None,
            )
        total_rps = obs.value("request_rate", None)
        observed[("request_rate", ALL)] = total_rps
        observed[("demand_rate", ALL)] = obs.value("demand_rate", None)  # what the planner plans on
        total_sf = learned.trusted(("request_rate", ALL))
        peak_rps = total_sf.window_max(when, ahead_end)[0] if total_sf is not None else None
        predicted_rpm = None if peak_rps is None else peak_rps * 60
        observed_rpm = None if math.isnan(total_rps) else total_rps * 60
        routes = {
            name: RouteView(None if predicted_rpm is None else predicted_rpm * r.traffic_share,
                            None if observed_rpm is None else observed_rpm * r.traffic_share,
                            score_cdf=learned.score_cdfs.get(name, ()), segment_rates=self._segment_rates(name, obs))
            for name, r in pol.routes.items()
        }
        routes.update(self._budget_views(when, routes, learned, config, observed_rpm))
        view = View(
            routes=routes,
            load_forecast=self._load_forecast(when, learned, config),
            now=when,
            providers=providers,
            predicted_total_rpm=predicted_rpm,
            observed_total_rpm=observed_rpm,
            data_age_seconds=data_age_seconds,
            tz=self.settings.timezone,
            outlook=self.outlook.build(when, obs, learned, config, providers)
            if config.weights_policy == "planner" else None,
            load_check=self._load_check(when, obs, learned),
        )
        return view, {k: v for k, v in observed.items() if not math.isnan(v)}

    def _budget_views(self, when: datetime, routes: dict[str, RouteView], learned: Learned, config: PolicyConfig,
                      observed_rpm: float | None) -> dict[str, RouteView]:
        """The routes with a daily or monthly budget, with what their day plan reads: spend
        so far, the hours left of the local day (:mod:`controller.budget`)."""
        shared = self.settings.policy.shared_budget is not None  # it reads every route
        budgeted = {n: r for n, r in self.settings.policy.routes.items()
                    if shared or r.daily_budget is not None or r.monthly_budget is not None}
        if not budgeted or self.ledger is None:
            return {}
        tz = self.settings.timezone
        spent = self.ledger.spent(when, budgeted)
        sf = learned.trusted(("request_rate", ALL))
        forecast = sf.load_from(when) if sf is not None else ()
        _, _, _, days_left = day_bounds(when, tz)
        out = {}
        for name, r in budgeted.items():
            hours, per_day = budget_hours(when, tz, name, r, config, forecast, observed_rpm, self.score_cdf)
            s = spent[name]
            out[name] = replace(routes[name], spent_today=s.today, spent_month=s.month, spend_measured=s.measured,
                                hours_left=hours, requests_per_day=per_day, days_left_after_today=days_left)
        return out

    def _load_forecast(self, when: datetime, learned: Learned, config: PolicyConfig
                       ) -> dict[str, tuple[LoadPoint, ...]]:
        """Trusted load forecasts of the providers prewarm actions serve, from ``when`` on."""
        wanted = {a.provider for a in config.prewarm}
        if wanted - {ALL}:
            wanted.add(ALL)  # a provider's action also serves its share of the total
        out = {}
        for p in wanted:
            sf = learned.trusted(("request_rate", p))
            if sf is not None and (points := sf.load_from(when)):
                out[p] = points
        return out

    def _load_check(self, when: datetime, obs: Observations, learned: Learned) -> LoadCheck | None:
        """The demand (requests net of retries) observed over the last
        ``policy.missed_window_minutes`` against the lower band the ``demand_rate`` forecast in
        force gave for the same minutes; None with fewer than
        ``MIN_COVERED`` of the window's minutes having both."""
        window = int(self.settings.policy.missed_window_minutes)
        end = int(when.timestamp()) // 60 * 60
        start = end - window * 60
        pairs = [(demand, lower * 60.0) for ts, demand in sorted(obs.recent_demand.items())
                 if start <= ts < end and (lower := learned.load_band_at(ts + 30)) is not None]
        if not pairs or len(pairs) < MIN_COVERED * window:
            return None
        return LoadCheck(start=datetime.fromtimestamp(start, UTC), end=datetime.fromtimestamp(end, UTC),
                         minutes=len(pairs), observed_rpm=sum(d for d, _ in pairs) / len(pairs),
                         lower_rpm=sum(lo for _, lo in pairs) / len(pairs))

    def _segment_rates(self, route: str, obs: Observations) -> dict[str, float]:
        """Escalation rate per segment over the last hour, from pushed events (segments with
        at least ``MIN_SEGMENT_REQUESTS`` routed requests)."""
        totals: dict[str, list[int]] = {}
        for (label, segment), (n, esc) in obs.segments.items():
            if is_route(label, route, self.settings):
                t = totals.setdefault(segment, [0, 0])
                t[0] += n
                t[1] += esc
        return {seg: esc / n for seg, (n, esc) in totals.items() if n >= MIN_SEGMENT_REQUESTS}
