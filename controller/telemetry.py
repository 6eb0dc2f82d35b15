"""The state half of ``/metrics``: gauges built fresh from the controller on every scrape
(client_python's custom-collector pattern), so no stale series linger. The event counters are
in :mod:`controller.metrics`.

The collector reads the controller through :class:`StateSource`, the read side of the
embedding API, so this module does not import the loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from collectors.mapping import Mapper
from collectors.redact import redact
from controller.fit import SeriesForecast
from controller.forecast.slo_capacity import CapacityProfile
from controller.settings import Settings
from controller.shadow import ShadowState
from policies import (
    FALLBACK_CODES,
    DayPlan,
    Decision,
    Override,
    PlannedInterval,
    PolicyConfig,
    SegmentParity,
)

__all__ = ["HORIZONS", "WEEKDAYS", "StateCollector", "StateSource"]


class _Overrides(Protocol):
    def active(self, now: datetime) -> list[Override]: ...


class StateSource(Protocol):
    """What the collector reads (:class:`controller.Controller` is one)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def mapper(self) -> Mapper: ...
    @property
    def overrides(self) -> _Overrides: ...
    @property
    def decision(self) -> Decision | None: ...
    def now(self) -> datetime: ...
    def data_age_seconds(self, at: datetime | None = None) -> float | None: ...
    def policy_config(self) -> PolicyConfig: ...
    def knees(self) -> dict[str, float | None]: ...
    def capacity(self) -> dict[str, CapacityProfile]: ...
    def observations(self) -> dict[tuple[str, str], float]: ...
    def forecasts(self) -> dict[tuple[str, str], SeriesForecast]: ...
    def forecasts_at(self, offsets: Sequence[int]) -> dict[tuple[str, str], dict[int, dict[str, float]]]: ...
    def forecasts_made_ago(self, horizons: Sequence[int]) -> dict[tuple[str, str], dict[int, dict[str, float]]]: ...
    def hour_of_week(self) -> dict[tuple[str, str], np.ndarray]: ...
    def current_slot(self) -> int | None: ...
    def fallback_reasons(self) -> list[str]: ...
    def signal_presence(self) -> dict[tuple[str, str], bool]: ...
    def stored_series_count(self) -> int: ...
    @property
    def shadow(self) -> ShadowState: ...


#: Forecast horizons on ``/metrics``, seconds ahead of the last tick.
HORIZONS = {"15m": 15 * 60, "1h": 3600, "6h": 6 * 3600}
#: Weekday label values: numbered so that they sort Monday first.
WEEKDAYS = ("1-Mon", "2-Tue", "3-Wed", "4-Thu", "5-Fri", "6-Sat", "7-Sun")


class StateCollector(Collector):
    """Current state, built fresh on every scrape so no stale series linger."""

    def __init__(self, controller: StateSource, version: Callable[[], str]) -> None:
        self._ctl = controller
        self._version = version

    def collect(self) -> Iterator[GaugeMetricFamily | InfoMetricFamily | CounterMetricFamily]:
        ctl = self._ctl
        yield InfoMetricFamily("diurnal_build", "diurnal version.", value={"version": self._version()})
        mode = GaugeMetricFamily("diurnal_mode", "1 for the active mode.", labels=["mode"])
        for m in ("observe", "act"):
            mode.add_metric([m], 1.0 if ctl.settings.guardrails.mode == m else 0.0)
        yield mode
        age = ctl.data_age_seconds()
        yield GaugeMetricFamily(
            "diurnal_data_age_seconds", "Age of the newest router data (-1 before any).",
            value=-1.0 if age is None else age,
        )
        stale = age is None or age > ctl.settings.guardrails.stale_after_seconds
        yield GaugeMetricFamily(
            "diurnal_inputs_stale", "1 while router data is missing or older than guardrails.stale_after_seconds "
            "(every knob is then at its baseline).", value=1.0 if stale else 0.0,
        )
        yield GaugeMetricFamily("diurnal_overrides_active", "Manual overrides in force.",
                                value=float(len(ctl.overrides.active(ctl.decision.at if ctl.decision else
                                                                     ctl.now()))))
        decision = ctl.decision
        weights = GaugeMetricFamily(
            "diurnal_provider_weight", "Provider traffic share, by kind (published, recommended, baseline).",
            labels=["provider", "kind"],
        )
        for provider, value in ctl.policy_config().baseline().items():
            weights.add_metric([provider, "baseline"], value)
        if decision is not None:
            for provider, value in decision.weights.items():
                weights.add_metric([provider, "published"], value)
            for provider, value in decision.recommended_weights.items():
                weights.add_metric([provider, "recommended"], value)
        yield weights
        capacity = GaugeMetricFamily(
            "diurnal_provider_capacity_rpm", "Requests per minute a provider is planned to take at most, by source "
            "(configured; measured: its knee; plan: the SLO capacity the planner plans on now).",
            labels=["provider", "source"])
        for name, pp in ctl.settings.policy.providers.items():
            if pp.capacity_rpm is not None:
                capacity.add_metric([name, "configured"], pp.capacity_rpm)
            elif (knee := ctl.knees().get(name)) is not None:
                capacity.add_metric([name, "measured"], knee)
        now = decision.plan[0] if decision is not None and decision.plan else None
        if now is not None:
            for name, cap in now.capacity_rpm.items():
                if cap is not None:
                    capacity.add_metric([name, "plan"], cap)
        yield capacity
        yield from _plan_now(now)
        yield from _day_plans(decision.day_plans if decision is not None else ())
        yield from _segment_parity(decision.segment_parity if decision is not None else ())
        yield from _shadow(ctl.shadow)
        thresholds = GaugeMetricFamily(
            "diurnal_threshold", "Routing thresholds (escalation fractions, score thresholds), by kind "
            "(published, recommended).", labels=["knob", "kind"])
        units = GaugeMetricFamily("diurnal_prewarm_units", "Prewarm amount in force now, per action.",
                                  labels=["action", "kind"])
        next_at = GaugeMetricFamily("diurnal_prewarm_next_step_timestamp_seconds",
                                    "When the next planned prewarm step is due (Unix time).", labels=["action"])
        next_units = GaugeMetricFamily("diurnal_prewarm_next_step_units", "Amount of the next planned prewarm step.",
                                       labels=["action"])
        planned = GaugeMetricFamily(
            "diurnal_prewarm_planned_units", "Highest amount the current plan asks for over the look-ahead window, "
            "the step in force included, per action and target.", labels=["action", "target"])
        if decision is not None:
            for knob, value in sorted(decision.thresholds.items()):
                thresholds.add_metric([knob, "published"], value)
            for knob, value in sorted(decision.recommended_thresholds.items()):
                thresholds.add_metric([knob, "recommended"], value)
            upcoming: dict[str, tuple[float, float]] = {}
            for p in decision.prewarm:
                if p.at <= decision.at:
                    units.add_metric([p.action, p.kind], p.amount)
                elif p.action not in upcoming or p.at.timestamp() < upcoming[p.action][0]:
                    upcoming[p.action] = (p.at.timestamp(), p.amount)
            for action, (ts, amount) in sorted(upcoming.items()):
                next_at.add_metric([action], ts)
                next_units.add_metric([action], amount)
            targets = {a.name: redact(a.target) for a in ctl.policy_config().prewarm}
            highest: dict[str, float] = {}
            for p in decision.prewarm:
                highest[p.action] = max(highest.get(p.action, p.amount), p.amount)
            for action, amount in sorted(highest.items()):
                planned.add_metric([action, targets.get(action, "")], amount)
        yield from (thresholds, units, next_at, next_units, planned)
        observed = GaugeMetricFamily(
            "diurnal_observed", "Latest observed value of a signal over the observation window.",
            labels=["signal", "provider"],
        )
        expected = GaugeMetricFamily(
            "diurnal_expected", "The seasonal baseline for now: the forecast fitted on earlier history for the "
            "current step, by bound (mean, lower, upper of the band).", labels=["signal", "provider", "bound"],
        )
        forecast = GaugeMetricFamily(
            "diurnal_forecast", "Forecast at a horizon ahead of now (15m, 1h, 6h), by bound (mean, lower, upper).",
            labels=["signal", "provider", "horizon", "bound"],
        )
        for (signal, provider), value in sorted(ctl.observations().items()):
            observed.add_metric([signal, provider], value)
        ahead = ctl.forecasts_at([0, *HORIZONS.values()])
        for (signal, provider), rows in sorted(ahead.items()):
            for bound, value in rows.get(0, {}).items():
                expected.add_metric([signal, provider, bound], value)
            for horizon, offset in HORIZONS.items():
                for bound, value in rows.get(offset, {}).items():
                    forecast.add_metric([signal, provider, horizon, bound], value)
        made = GaugeMetricFamily(
            "diurnal_forecast_for_now", "What the forecast in force a horizon ago (15m, 1h, 6h) said about now, by "
            "bound: forecast against actual.", labels=["signal", "provider", "horizon", "bound"],
        )
        for (signal, provider), rows in sorted(ctl.forecasts_made_ago(list(HORIZONS.values())).items()):
            for horizon, offset in HORIZONS.items():
                for bound, value in rows.get(offset, {}).items():
                    made.add_metric([signal, provider, horizon, bound], value)
        yield from (observed, expected, forecast, made)
        fallback = GaugeMetricFamily(
            "diurnal_fallback", "1 while the decision holds every knob at its baseline, by reason (StaleInputs, "
            "MissingSignal, AllProvidersDegraded, KillSwitch).", labels=["reason"])
        held = ctl.fallback_reasons()
        for code in FALLBACK_CODES:
            fallback.add_metric([code], 1.0 if code in held else 0.0)
        yield fallback
        present = GaugeMetricFamily(
            "diurnal_signal_present", "1 while the router's input carries a signal the weights policy needs "
            "(requests, latency) for a provider, over the observation window; 0 when it lacks it.",
            labels=["signal", "provider"])
        for (signal, provider), there in sorted(ctl.signal_presence().items()):
            present.add_metric([signal, provider], 1.0 if there else 0.0)
        yield present
        yield from _hour_of_week(ctl)
        yield from _slo_capacity(ctl)
        yield from _forecast_state(ctl)
        yield GaugeMetricFamily(
            "diurnal_stored_series", "Series in the embedded store.", value=float(ctl.stored_series_count())
        )
        yield GaugeMetricFamily(
            "diurnal_series_limit", "Cap on series (router.max_series).", value=float(ctl.mapper.max_series or 0)
        )
        dropped = CounterMetricFamily(
            "diurnal_dropped_samples", "Samples dropped by the label policy, by reason (not_allowed, series_cap).",
            labels=["reason"],
        )
        for reason, n in sorted(ctl.mapper.dropped.items()):
            dropped.add_metric([reason], float(n))
        yield dropped


def _forecast_state(ctl: StateSource) -> Iterator[GaugeMetricFamily | InfoMetricFamily]:
    """Per forecast series: skill, gate, chosen model, decomposition at the last fitted hour."""
    labels = ["signal", "provider"]
    skill = GaugeMetricFamily(
        "diurnal_forecast_skill", "Backtest skill: 1 - MAE / MAE of seasonal naive (>0 beats naive).", labels=labels)
    gain = GaugeMetricFamily(
        "diurnal_forecast_seasonality_gain", "1 - MAE of the seasonal model / MAE of a flat forecast.", labels=labels)
    trusted = GaugeMetricFamily(
        "diurnal_forecast_trusted", "1 when the forecast passes the skill gates and is acted on ahead.", labels=labels)
    history = GaugeMetricFamily(
        "diurnal_forecast_history_seconds", "History behind the forecast.", labels=labels)
    age = GaugeMetricFamily(
        "diurnal_forecast_age_seconds", "Time since the forecast in use was fitted (grows while refits fail).",
        labels=labels)
    model = InfoMetricFamily("diurnal_forecast_model", "The model the backtest chose, and the history stage.",
                             labels=labels)
    component = GaugeMetricFamily(
        "diurnal_forecast_component", "Decomposition at the last fitted hour (trend, daily, weekly, residual).",
        labels=[*labels, "component"])
    backtest = GaugeMetricFamily(
        "diurnal_forecast_backtest_mae", "Backtest mean absolute error of each candidate model, in the signal's unit "
        "(the chosen one is in diurnal_forecast_model_info).", labels=[*labels, "model"])
    now = ctl.decision.at if ctl.decision is not None else None
    for (signal, provider), sf in sorted(ctl.forecasts().items()):
        lv = [signal, provider]
        fit = sf.fit
        trusted.add_metric(lv, 1.0 if sf.trusted else 0.0)
        history.add_metric(lv, fit.history_days * 86400.0)
        model.add_metric(lv, {"model": fit.model, "stage": fit.stage})
        if now is not None:
            age.add_metric(lv, max(0.0, (now - sf.fitted_at).total_seconds()))
        if fit.selection is not None:
            if math.isfinite(fit.selection.skill):
                skill.add_metric(lv, fit.selection.skill)
            if math.isfinite(fit.selection.seasonality_gain):
                gain.add_metric(lv, fit.selection.seasonality_gain)
        if fit.decomposition is not None and len(fit.decomposition):
            last = fit.decomposition.iloc[-1]
            for name in ("trend", "daily", "weekly", "residual"):
                value = float(last[name])
                if math.isfinite(value):
                    component.add_metric([*lv, name], value)
        if fit.selection is not None:
            for candidate, mae in sorted(fit.selection.scores.items()):
                if math.isfinite(mae):
                    backtest.add_metric([*lv, candidate], mae)
    yield from (skill, gain, trusted, history, age, model, component, backtest)


def _hour_of_week(ctl: StateSource) -> Iterator[GaugeMetricFamily]:
    """The typical week: 168 series per profiled signal (see ``HOUR_OF_WEEK_SIGNALS``), and
    its value for the current local hour."""
    family = GaugeMetricFamily(
        "diurnal_hour_of_week", "Typical value of a signal in one local hour of the week (the median over the "
        "forecast history), for weekday x hour heatmaps. weekday is 1-Mon .. 7-Sun.",
        labels=["signal", "provider", "weekday", "hour"])
    typical = GaugeMetricFamily(
        "diurnal_typical", "The typical week's value for the current local hour (this week against the typical "
        "week).", labels=["signal", "provider"])
    now_slot = ctl.current_slot()
    for (signal, provider), medians in sorted(ctl.hour_of_week().items()):
        for slot, value in enumerate(medians):
            if math.isfinite(value):
                family.add_metric([signal, provider, WEEKDAYS[slot // 24], f"{slot % 24:02d}"], float(value))
        if now_slot is not None and math.isfinite(medians[now_slot]):
            typical.add_metric([signal, provider], float(medians[now_slot]))
    yield from (family, typical)


def _shadow(state: ShadowState) -> Iterator[GaugeMetricFamily]:
    """The shadow report's figures (none before the first report)."""
    report, _ = state.latest()
    if report is None:
        return
    policies: dict[str, dict[str, Any]] = report["policies"]
    yield GaugeMetricFamily("diurnal_replay_would_save_usd", "What acting would have saved over the shadow report's "
                            "period (the last 7 days): the router's estimated cost less diurnal's, in USD.",
                            value=float(report["would_save_usd"]))
    yield GaugeMetricFamily("diurnal_replay_period_seconds", "The time the shadow report covers.",
                            value=60.0 * report["period"]["minutes"])
    cost = GaugeMetricFamily("diurnal_replay_cost_usd", "Estimated cost over the shadow report's period, per policy "
                             "(actual, static, reactive, diurnal).", labels=["policy"])
    risk = GaugeMetricFamily("diurnal_replay_slo_risk_seconds", "Estimated time (whole minutes) with a provider "
                             "loaded beyond its SLO capacity over the shadow report's period, per policy.",
                             labels=["policy"])
    for name, o in policies.items():
        cost.add_metric([name], float(o["cost_usd"]))
        risk.add_metric([name], 60.0 * o["slo_risk_minutes"])
    yield cost
    yield risk


def _plan_now(now: PlannedInterval | None) -> Iterator[GaugeMetricFamily]:
    """The planner's step now: the demand planned for, each provider's planned load, and the
    expected cost per hour of the plan and of the baseline weights."""
    demand = GaugeMetricFamily("diurnal_planned_demand_rpm",
                               "Requests per minute the planner plans for now (the forecast's upper band, or the load "
                               "observed with a wider margin).")
    load = GaugeMetricFamily("diurnal_planned_load_rpm", "Requests per minute the plan sends each provider now.",
                             labels=["provider"])
    headroom = GaugeMetricFamily("diurnal_planned_headroom_ratio",
                                 "Share of each provider's SLO capacity the plan uses at most now: the configured "
                                 "capacity_headroom, or lower where learned from realised breaches.",
                                 labels=["provider"])
    cost = GaugeMetricFamily("diurnal_planned_cost_per_hour",
                             "Expected spend per hour (USD) of the plan now and of the baseline weights at the same "
                             "demand; absent where a provider carrying load has no price.", labels=["weights"])
    if now is not None:
        demand.add_metric([], now.demand_rpm)
        for name, rpm in sorted(now.load_rpm.items()):
            load.add_metric([name], rpm)
        for name, share in sorted(now.headroom.items()):
            headroom.add_metric([name], share)
        for kind, usd in (("plan", now.cost_per_hour), ("baseline", now.baseline_cost_per_hour)):
            if usd is not None:
                cost.add_metric([kind], usd)
    yield from (demand, load, headroom, cost)


def _day_plans(plans: Sequence[DayPlan]) -> Iterator[GaugeMetricFamily]:
    """Each budgeted route's day plan now: what today may spend, what it has spent, what the
    plan predicts the day ends at, by how much over, the escalation planned for now, and the
    plan's reason code (``BudgetCannotHoldProtected``: a protected route the budget cannot hold)."""
    allowance = GaugeMetricFamily(
        "diurnal_budget_allowance_usd", "What a route may spend today in all: its daily budget, or its monthly "
        "budget's share for today, whichever is lower.", labels=["route"])
    spent = GaugeMetricFamily("diurnal_budget_spent_usd", "What a route has spent since local midnight (the "
                              "router's spend counter).", labels=["route"])
    predicted = GaugeMetricFamily(
        "diurnal_budget_predicted_usd", "What a route is predicted to have spent by local midnight: spent so far "
        "plus the day plan's spend over the hours left.", labels=["route"])
    shortfall = GaugeMetricFamily(
        "diurnal_budget_shortfall_usd", "How much over its allowance a route's day is predicted to end (a protected "
        "route kept at its baseline, or the quality floor held); 0 when the plan fits.", labels=["route"])
    escalation = GaugeMetricFamily("diurnal_budget_planned_escalation_ratio",
                                   "The escalation fraction the day plan sets for a route now.", labels=["route"])
    state = GaugeMetricFamily("diurnal_budget_plan", "1 for the reason code of a route's day plan and the budget that "
                              "binds (daily, monthly).", labels=["route", "code", "budget"])
    for p in sorted(plans, key=lambda p: p.route):
        allowance.add_metric([p.route], p.allowance)
        spent.add_metric([p.route], p.spent)
        predicted.add_metric([p.route], p.spent + p.planned)
        shortfall.add_metric([p.route], p.shortfall)
        if p.fraction is not None:
            escalation.add_metric([p.route], p.fraction)
        state.add_metric([p.route, str(p.code), p.binding], 1.0)
    yield from (allowance, spent, predicted, shortfall, escalation, state)


def _segment_parity(parity: Sequence[SegmentParity]) -> Iterator[GaugeMetricFamily]:
    """Per route with two or more segments in the last hour's pushed events: each segment's
    escalation rate, the gap between the highest and the lowest, Jain's index, the configured
    limit (what the parity alert compares with) and whether per-segment fractions hold it."""
    rate = GaugeMetricFamily("diurnal_segment_escalation_ratio", "Share of a segment's requests escalated to the "
                             "strong model over the last hour (pushed events), per route.", labels=["route", "segment"])
    gap = GaugeMetricFamily("diurnal_segment_parity_gap_ratio", "Highest less lowest segment escalation rate of a "
                            "route over the last hour.", labels=["route"])
    jain = GaugeMetricFamily("diurnal_segment_jain_index", "Jain's fairness index of a route's segment escalation "
                             "rates: 1 when every segment is escalated alike, 1/n at worst.", labels=["route"])
    limit = GaugeMetricFamily("diurnal_segment_parity_limit_ratio", "The largest gap allowed between a route's "
                              "segments (max_segment_disparity).", labels=["route"])
    held = GaugeMetricFamily("diurnal_segment_parity_held", "1 while per-segment escalation fractions hold a "
                             "route's segments within the limit.", labels=["route"])
    for p in sorted(parity, key=lambda p: p.route):
        for segment, r in sorted(p.rates.items()):
            rate.add_metric([p.route, segment], r)
        gap.add_metric([p.route], p.gap)
        jain.add_metric([p.route], p.jain)
        limit.add_metric([p.route], p.limit)
        held.add_metric([p.route], 1.0 if p.held else 0.0)
    yield from (rate, gap, jain, limit, held)


def _slo_capacity(ctl: StateSource) -> Iterator[GaugeMetricFamily]:
    """Each provider's learned SLO capacity: for the current local hour, with the evidence
    behind it, and the whole week (for a capacity heatmap)."""
    now = GaugeMetricFamily(
        "diurnal_provider_slo_capacity_rpm", "Learned load (requests per minute) at which a provider reaches the "
        "latency SLO or the error budget in the current local hour of the week, by evidence (measured, "
        "lower_bound, upper_bound, overall).", labels=["provider", "evidence"])
    week = GaugeMetricFamily(
        "diurnal_provider_slo_capacity_hour_of_week", "Learned SLO capacity (requests per minute) per local hour "
        "of the week, for weekday x hour heatmaps. weekday is 1-Mon .. 7-Sun.",
        labels=["provider", "weekday", "hour"])
    now_slot = ctl.current_slot()
    for provider, prof in sorted(ctl.capacity().items()):
        for slot, c in enumerate(prof.slots):
            if c.rpm is not None:
                week.add_metric([provider, WEEKDAYS[slot // 24], f"{slot % 24:02d}"], c.rpm)
        if now_slot is not None and (c := prof.at(now_slot)).rpm is not None:
            now.add_metric([provider, str(c.evidence)], c.rpm)
    yield from (now, week)
