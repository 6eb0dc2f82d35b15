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
        yield from (thresholds, units, next_at, next_units)
        observed = GaugeMetricFamily(
            "diurnal_observed", "Latest observed value of a signal over the observation window.",
            labels=["signal", "provider"],
        )
        forecast = GaugeMetricFamily(
            "diurnal_forecast", "Forecast for the current hour, by bound (mean, lower, upper).",
            labels=["signal", "provider", "bound"],
        )
        for (signal, provider), value in sorted(ctl.observations().items()):
            observed.add_metric([signal, provider], value)
        for (signal, provider), row in sorted(ctl.current_forecasts().items()):
            for bound, value in row.items():
                forecast.add_metric([signal, provider, bound], value)
        yield observed
        yield forecast
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
    yield from (skill, gain, trusted, history, age, model, component)
