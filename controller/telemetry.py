"""diurnal's own Prometheus metrics, on a registry owned by each controller."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from controller.core import Controller

#: Decision reason codes that mean every knob is held at its baseline (diurnal_fallback).
FALLBACK_REASONS = ("AllProvidersDegraded", "KillSwitch", "StaleInputs")


SCRAPE_RESULTS = ("ok", "unreachable", "http_error", "malformed", "error")
PUBLISH_RESULTS = ("ok", "retry", "failed", "rejected", "superseded", "error")


class Metrics:
    """Event counters and histograms. State gauges come from :class:`StateCollector`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.ingested_samples = Counter(
            "diurnal_ingested_samples", "Samples read from router expositions.", registry=registry
        )
        self.ingest_errors = Counter(
            "diurnal_ingest_errors",
            "Input rejected or skipped, by kind (malformed_exposition, non_finite, out_of_order).",
            ["kind"],
            registry=registry,
        )
        self.counter_resets = Counter(
            "diurnal_router_resets", "Router counters seen going down (a router restart).", registry=registry
        )
        self.scrapes = Counter(
            "diurnal_scrapes", "Scrapes of the router, by result (ok, unreachable, http_error, malformed).",
            ["result"], registry=registry,
        )
        self.events = Counter(
            "diurnal_events", "Pushed per-request events, by result (accepted, rejected).", ["result"],
            registry=registry,
        )
        self.ticks = Counter("diurnal_control_ticks", "Control ticks run.", registry=registry)
        self.decisions = Counter(
            "diurnal_decisions", "Decisions made, by mode (observe: recommended only; act: published).",
            ["mode"], registry=registry,
        )
        self.tick_errors = Counter(
            "diurnal_control_tick_errors", "Control ticks that failed (the loop goes on).", registry=registry
        )
        self.tick_seconds = Histogram(
            "diurnal_control_tick_duration_seconds", "Wall time of one control tick.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=registry,
        )
        self.refit_seconds = Histogram(
            "diurnal_refit_duration_seconds", "Wall time of one refit of all forecasts.",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60), registry=registry,
        )
        self.publishes = Counter(
            "diurnal_publishes", "Decision pushes by publisher (file, webhook) and result (ok, retry, failed, "
            "rejected, superseded, error).", ["publisher", "result"], registry=registry,
        )
        self.prewarm_actions = Counter(
            "diurnal_prewarm_actions", "Prewarm steps carried out, by action and result (ok, error).",
            ["action", "result"], registry=registry,
        )
        self.refit_failures = Counter(
            "diurnal_refit_failures", "Series refits that failed, by reason (error, timeout); the last good "
            "forecast is kept.", ["reason"], registry=registry,
        )
        self.decision_reasons = Counter(
            "diurnal_decision_reasons", "Reasons given in decisions, by knob kind and reason code.",
            ["knob", "reason"], registry=registry,
        )

    def initialise(self, *, mode: str, publishers: list[str], prewarm_actions: list[str]) -> None:
        """Create the labelled children that are known up front, at zero, so that rates and
        alerts see a series before the first event (client_python's advice)."""
        for result in SCRAPE_RESULTS:
            self.scrapes.labels(result)
        for publisher in publishers:
            for result in PUBLISH_RESULTS:
                self.publishes.labels(publisher, result)
        for action in prewarm_actions:
            for result in ("ok", "error"):
                self.prewarm_actions.labels(action, result)
        self.decisions.labels(mode)


#: Forecast horizons on ``/metrics``, seconds ahead of the last tick.
HORIZONS = {"15m": 15 * 60, "1h": 3600, "6h": 6 * 3600}
#: Weekday label values: numbered so that they sort Monday first.
WEEKDAYS = ("1-Mon", "2-Tue", "3-Wed", "4-Thu", "5-Fri", "6-Sat", "7-Sun")


class StateCollector(Collector):
    """Current state, built fresh on every scrape so no stale series linger."""

    def __init__(self, controller: Controller, version: Callable[[], str]) -> None:
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
                                                                     datetime.now(UTC)))))
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
            "(configured, or measured: its knee).", labels=["provider", "source"])
        for name, pp in ctl.settings.policy.providers.items():
            if pp.capacity_rpm is not None:
                capacity.add_metric([name, "configured"], pp.capacity_rpm)
            elif (knee := ctl.knees().get(name)) is not None:
                capacity.add_metric([name, "measured"], knee)
        yield capacity
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
            targets = {a.name: a.target for a in ctl.policy_config().prewarm}
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
            "AllProvidersDegraded, KillSwitch).", labels=["reason"])
        held = ctl.fallback_reasons()
        for reason in FALLBACK_REASONS:
            fallback.add_metric([reason], 1.0 if reason in held else 0.0)
        yield fallback
        yield from _hour_of_week(ctl)
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


def _forecast_state(ctl: Controller) -> Iterator[GaugeMetricFamily | InfoMetricFamily]:
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


def _hour_of_week(ctl: Controller) -> Iterator[GaugeMetricFamily]:
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
