"""The controller object: the one engine behind ``diurnal run``, the demo and embedders.

    ctl = Controller.from_settings(settings, clock=...)
    ctl.ingest_exposition(text, at=...)
    decision = ctl.step(at=...)

It never reads the wall clock itself: times come as arguments, or from the injected clock.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from opentelemetry import trace
from prometheus_client import CollectorRegistry

from collectors.errors import ExpositionError
from collectors.events import EventBatch, parse_events
from collectors.exposition import ExpositionParser, Sample
from collectors.hour_of_week import local_hour_start_at, profile, slot
from collectors.intervals import IngestStats, MinuteAggregator, MinuteRow
from collectors.mapping import HISTOGRAM_SIGNALS, PRESETS, Mapper, preset_from_config
from collectors.signals import hourly, rows_value
from collectors.store import CounterPoint, HistPoint, Store
from controller.audit import AuditLog
from controller.capacity import measured_knee
from controller.forecast import Fit, Selection, gate
from controller.guardrails import guard
from controller.overrides import OverrideStore
from controller.prewarm_exec import KubernetesScaler, PrewarmExecutor, ReplicaScaler
from controller.publish import build_publishers
from controller.refit import FitJob, Refitter
from controller.settings import Settings
from controller.telemetry import FALLBACK_REASONS, Metrics, StateCollector
from policies import (
    Decision,
    LoadPoint,
    PolicyConfig,
    PrewarmConfig,
    ProviderConfig,
    ProviderView,
    Reason,
    RouteConfig,
    RouteView,
    View,
    decide,
)

log = logging.getLogger("diurnal.controller")
_tracer = trace.get_tracer("diurnal")

Clock = Callable[[], datetime]

#: Signals forecast per provider, and for all providers together ("*").
FORECAST_SIGNALS = ("latency_p95", "request_rate")
#: Load signals: under-predicting them costs more (``forecast.under_penalty``) in model choice.
LOAD_SIGNALS = frozenset({"request_rate", "input_token_rate", "output_token_rate", "spend_rate"})
ALL = "*"
#: Fits kept per series for :meth:`Controller.forecasts_made_ago` (hourly refits: 6 h back and one).
PAST_FITS = 8
#: Signals of the hour-of-week profile on ``/metrics``: True when kept per provider (latency
#: only means something per provider), False for all providers together. 168 series each.
HOUR_OF_WEEK_SIGNALS: dict[str, bool] = {
    "latency_p95": True, "cache_hit_ratio": False, "retry_ratio": False, "spend_rate": False, "request_rate": False,
}
#: How often refits also drop data past its retention (minutes and hours stay up to this
#: much longer than their retention).
PRUNE_EVERY = timedelta(hours=6)
#: Routing scores needed in an hour-of-week before a score threshold is calibrated from them.
MIN_SCORE_SAMPLES = 100
#: Segment escalation rates are measured over this window, from this many routed requests on.
SEGMENT_WINDOW_SECONDS = 3600
MIN_SEGMENT_REQUESTS = 50


@dataclass(frozen=True)
class SeriesForecast:
    """The last good fit of one series, and what the gates made of it."""

    fit: Fit
    fitted_at: datetime
    trusted: bool
    gate: str  # reason code: ForecastTrusted, InsufficientHistory, BelowSkillGate, NotSeasonal
    message: str
    selected_at: datetime | None = None
    failures: int = 0  # refits failed in a row since this fit

    @cached_property
    def steps(self) -> tuple[np.ndarray, int, np.ndarray]:
        """The forecast's step starts (Unix s), its step length (s) and its means, read
        once per fit (every tick looks them up)."""
        fc = self.fit.frame
        times = fc.index.as_unit("s").asi8
        step = int(times[1] - times[0]) if len(times) > 1 else 3600
        return times, step, fc["mean"].to_numpy(dtype=float)

    @cached_property
    def bands(self) -> dict[str, np.ndarray]:
        """The forecast's ``mean``, ``lower`` and ``upper`` per step, aligned with :attr:`steps`."""
        fc = self.fit.frame
        return {b: fc[b].to_numpy(dtype=float) for b in ("mean", "lower", "upper")}

    def row_at(self, ts: int) -> dict[str, float]:
        """``mean``, ``lower`` and ``upper`` of the step containing ``ts`` (Unix s); empty
        outside the forecast. NaN bounds are left out."""
        return self.made().row_at(ts)

    def made(self) -> MadeForecast:
        times, step, _ = self.steps
        return MadeForecast(int(self.fitted_at.timestamp()), times, step, self.bands)


    @cached_property
    def load_points(self) -> tuple[LoadPoint, ...]:
        """Every step with a mean, in requests per minute (for a request-rate series)."""
        fc = self.fit.frame
        rows = fc[fc["mean"].notna()]
        times = rows.index.to_pydatetime()
        mean, upper = rows["mean"].to_numpy(dtype=float) * 60, rows["upper"].to_numpy(dtype=float) * 60
        lower = rows["lower"].to_numpy(dtype=float) * 60
        return tuple(LoadPoint(t, float(m), float(u), None if math.isnan(lo) else float(lo))
                     for t, m, u, lo in zip(times, mean, upper, lower, strict=True))


@dataclass(frozen=True)
class MadeForecast:
    """The bands of one fit and when it was made: all that forecast-against-actual keeps."""

    fitted_at: int  # Unix s
    times: np.ndarray  # step starts, Unix s
    step: int
    bands: dict[str, np.ndarray]

    def row_at(self, ts: int) -> dict[str, float]:
        i = int(np.searchsorted(self.times, ts, side="right")) - 1
        if i < 0 or ts >= self.times[i] + self.step:
            return {}
        return {b: float(v[i]) for b, v in self.bands.items() if not math.isnan(v[i])}


def build_mapper(settings: Settings) -> Mapper:
    """The preset and label policy the settings ask for."""
    r = settings.router
    if r.preset == "generic":
        m = r.mapping
        assert m is not None  # the settings validator guarantees it
        preset = preset_from_config(
            "generic", {sig: (c.metric, c.match) for sig, c in m.counters.items()}, {str(k): v for k, v in m.histograms.items()},
            tuple(m.provider_labels), tuple(m.model_labels), tuple(m.route_labels))
    else:
        preset = PRESETS[r.preset]
    return Mapper(preset, r.model_providers, keep_labels=tuple(r.keep_labels),
                  allow={k: tuple(v) for k, v in r.allow.items()}, max_series=r.max_series)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _aware(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("times must be timezone-aware (e.g. datetime.now(UTC)); got a naive datetime")
    return at.astimezone(UTC)


def package_version() -> str:
    try:
        return version("diurnal")
    except PackageNotFoundError:
        return "0+unknown"


class Controller:
    """Collects, forecasts, decides. Thread-safe: one lock around ingest and step."""

    def __init__(self, settings: Settings, *, clock: Clock = _utc_now, store: Store | None = None,
                 refit_in_step: bool = True, refitter: Refitter | None = None,
                 scaler: Callable[[], ReplicaScaler] | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.store = store if store is not None else Store(settings.data_dir, tz=settings.timezone)
        self.mapper = build_mapper(settings)
        self.mapper.remember(self.store.series())
        self.parser = ExpositionParser()
        self.aggregator = MinuteAggregator()
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.registry.register(StateCollector(self, package_version))
        self._lock = threading.RLock()
        self._decision: Decision | None = None
        self._etag: str | None = None
        self._last_data_at: datetime | None = None
        self._last_refit_hour: int | None = None
        self._last_prune: datetime | None = None
        self._forecasts: dict[tuple[str, str], SeriesForecast] = {}
        fs = settings.forecast
        self.refitter = refitter or Refitter(fs.workers, fs.refit_timeout_seconds)
        #: ``step`` refits when due (embedding); the service runs :meth:`refit` on its own job.
        self.refit_in_step = refit_in_step
        #: Refits also decompose each series (trend, daily, weekly, residual) for /metrics and
        #: the dashboards; a simulation can skip that until its last refit.
        self.decompose = True
        self._score_cache: dict[tuple[str, int], tuple[tuple[float, float], ...]] = {}
        #: (minute, route, segment) -> [routed requests, escalated], from pushed events.
        self._segments: dict[tuple[int, str, str], list[int]] = {}
        #: Measured knees (requests per minute) of providers with ``measure_knee``.
        self._knees: dict[str, float | None] = {}
        #: The last fits per series, for forecast-against-actual at each horizon.
        self._past_fits: dict[tuple[str, str], deque[MadeForecast]] = {}
        self._hour_of_week: tuple[int, dict[tuple[str, str], np.ndarray]] | None = None
        self._refit_lock = threading.Lock()
        self.overrides = OverrideStore(Path(settings.data_dir) / "overrides.json")
        self.audit = AuditLog(Path(settings.data_dir) / "audit.jsonl")
        self.publishers = build_publishers(settings, lambda name, result: self.metrics.publishes.labels(name, result).inc())
        self.prewarm = PrewarmExecutor(scaler or (lambda: kubernetes_scaler(settings)),
                                       lambda name, result: self.metrics.prewarm_actions.labels(name, result).inc(),
                                       owned=frozenset(a.name for a in settings.policy.prewarm if a.scale_in))
        self.metrics.initialise(mode=settings.guardrails.mode, publishers=[p.name for p in self.publishers],
                                prewarm_actions=[a.name for a in settings.policy.prewarm])
        #: The policy's recent targets, for the guardrails' stabilization window.
        self._targets: deque[tuple[datetime, dict[str, float]]] = deque()
        self._hourly: dict[tuple[str, str], pd.Series] = {}
        # Minutes closed recently, kept in memory so a tick reads no SQL for observations.
        self._recent_counters: list[CounterPoint] = []
        self._recent_hist: list[HistPoint] = []
        self._recent_by: dict[str | None, tuple[list[CounterPoint], list[HistPoint]]] = {}
        self._observations: dict[tuple[str, str], float] = {}
        self._now: datetime | None = None
        span = self.store.span()
        if span is not None:
            # History from an earlier run counts as data, so a restart is not "stale" forever.
            self._last_data_at = datetime.fromtimestamp(span[1] + 60, UTC)

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Clock | None = None, refit_in_step: bool = True,
                      scaler: Callable[[], ReplicaScaler] | None = None) -> Controller:
        """``scaler`` replaces the in-cluster Kubernetes client for ``replicas`` prewarm
        actions (an embedding program that manages replicas its own way)."""
        return cls(settings, clock=clock or _utc_now, refit_in_step=refit_in_step, scaler=scaler)

    # ---- ingest -------------------------------------------------------------------------

    def ingest_exposition(self, text: str, at: datetime | None = None, *, content_type: str | None = None) -> IngestStats:
        """Parse one scrape taken at ``at`` and aggregate it. Malformed text raises
        :class:`~collectors.errors.ExpositionError` and changes nothing (it is counted)."""
        try:
            samples = self.parser.parse(text, content_type=content_type)
        except ExpositionError:
            self.metrics.ingest_errors.labels("malformed_exposition").inc()
            raise
        return self.ingest_samples(samples, at)

    def ingest_samples(self, samples: Iterable[Sample], at: datetime | None = None) -> IngestStats:
        """Aggregate parsed samples taken at ``at`` (default: the clock)."""
        when = _aware(at) if at is not None else _aware(self.clock())
        samples = list(samples)
        with self._lock:
            matched = self.mapper.map(samples)
            stats = self.aggregator.ingest(matched, when.timestamp())
            stats.samples = len(samples)
            if matched and (self._last_data_at is None or when > self._last_data_at):
                self._last_data_at = when
        m = self.metrics
        m.ingested_samples.inc(len(samples))
        m.counter_resets.inc(stats.counter_resets)
        if stats.non_finite:
            m.ingest_errors.labels("non_finite").inc(stats.non_finite)
        if stats.out_of_order:
            m.ingest_errors.labels("out_of_order").inc(stats.out_of_order)
        return stats

    def ingest_events(self, body: bytes, at: datetime | None = None) -> EventBatch:
        """Aggregate pushed per-request events (JSON lines). Bad lines are reported in the
        result, never half-counted; events older than the minutes still open are stored as
        late data for their minute."""
        when = _aware(at) if at is not None else _aware(self.clock())
        now = when.timestamp()
        batch = parse_events(body, now=now, oldest=now - self.store.minute_retention)
        with self._lock:
            self.aggregator.add_cells(batch.cells, key_map=self.mapper.admit)
            for (minute, route, segment), (n, escalated) in batch.segments.items():
                tally = self._segments.setdefault((minute, route, segment), [0, 0])
                tally[0] += n
                tally[1] += escalated
            if batch.newest is not None:
                newest = datetime.fromtimestamp(min(batch.newest, now), UTC)
                if self._last_data_at is None or newest > self._last_data_at:
                    self._last_data_at = newest
        self.metrics.events.labels("accepted").inc(batch.accepted)
        if batch.errors:
            self.metrics.events.labels("rejected").inc(len(batch.errors))
        return batch

    def invalidate_history(self) -> None:
        """Forget cached hourly history (after a backfill or import wrote older data), so the
        next step refits from the store."""
        with self._lock:
            self._hourly.clear()
            self._last_refit_hour = None
            span = self.store.span()
            if span is not None and self._last_data_at is None:
                self._last_data_at = datetime.fromtimestamp(span[1] + 60, UTC)

    def flush(self) -> int:
        """Write every open minute to the store (used at shutdown)."""
        with self._lock:
            return self.store.write(self.aggregator.close_all())

    # ---- decide -------------------------------------------------------------------------

    def step(self, at: datetime | None = None) -> Decision:
        """Run whatever is due up to ``at`` and return the current decision.

        Traced as one ``diurnal.cycle`` span with children ``collect``, ``fit``, ``decide``
        and ``publish`` (OpenTelemetry API; no-op unless the entry point installed an SDK).
        """
        when = _aware(at) if at is not None else _aware(self.clock())
        started = time.perf_counter()
        mode = self.settings.guardrails.mode
        with _tracer.start_as_current_span("diurnal.cycle", attributes={"diurnal.mode": mode}) as cycle:
            with _tracer.start_as_current_span("collect") as span, self._lock:
                self._now = when
                rows = self.aggregator.close_before(when.timestamp())
                written = self.store.write(rows)
                self._remember(rows, int(when.timestamp()))
                span.set_attribute("diurnal.rows_written", written)
                span.set_attribute("diurnal.series.stored", self.stored_series_count())
            with _tracer.start_as_current_span("fit") as span:
                due = self.refit_in_step and self.refit_due(when)
                span.set_attribute("diurnal.refit.ran", due)
                if due:
                    failures = self.refit(when)  # the refit lock, then this one: never the other way round
                    span.set_attribute("diurnal.refit.failures", len(failures))
                forecasts = self.forecasts()
                span.set_attribute("diurnal.forecast.series", len(forecasts))
                span.set_attribute("diurnal.forecast.trusted", sum(sf.trusted for sf in forecasts.values()))
                span.set_attribute("diurnal.forecast.models",
                                   [f"{sig}/{prov}={sf.fit.model}" for (sig, prov), sf in sorted(forecasts.items())])
            with self._lock:
                with _tracer.start_as_current_span("decide") as span:
                    config = self.policy_config()
                    view = self._view(when, config)
                    target = decide(view, self._decision, config, when)
                    target = replace(target, reasons=(*target.reasons, *self._forecast_reasons()))
                    g = self.settings.guardrails
                    while self._targets and self._targets[0][0] < when - timedelta(seconds=g.stabilization_seconds):
                        self._targets.popleft()
                    decision = guard(target, self._decision, config, g, view.data_age_seconds,
                                     window=list(self._targets), overrides=self.overrides.active(when))
                    self._targets.append((when, dict(target.weights)))
                    span.set_attribute("diurnal.decision.reasons", sorted({r.code for r in decision.reasons}))
                    span.set_attribute("diurnal.providers", len(view.providers))
                with _tracer.start_as_current_span("publish") as span:
                    changed = self._publish(decision, view)
                    span.set_attribute("diurnal.decision.changed", changed)
                    span.set_attribute("diurnal.publishers", [p.name for p in self.publishers] if mode == "act" else [])
            cycle.set_attribute("diurnal.decision.fallback", self.fallback_reasons())
        self.metrics.ticks.inc()
        self.metrics.decisions.labels(mode).inc()
        self.metrics.tick_seconds.observe(time.perf_counter() - started)
        return decision

    def _remember(self, rows: list[MinuteRow], now: int) -> None:
        keep_from = now - int(self.settings.control.observation_window_minutes * 60)
        for r in rows:
            if r.key.signal in HISTOGRAM_SIGNALS:
                self._recent_hist.append(HistPoint(r.ts, r.key, r.cell.count, r.cell.sum, r.cell.buckets))
            else:
                self._recent_counters.append(CounterPoint(r.ts, r.key, r.cell.value))
        self._recent_counters = [p for p in self._recent_counters if p.ts >= keep_from]
        self._recent_hist = [p for p in self._recent_hist if p.ts >= keep_from]
        self._recent_by = {}

    def _observe(self, signal: str, provider: str | None) -> float:
        got = self._recent_by.get(provider)
        if got is None:  # each provider's recent rows, picked once per tick
            got = self._recent_by[provider] = (
                [p for p in self._recent_counters if provider is None or p.key.provider == provider],
                [p for p in self._recent_hist if provider is None or p.key.provider == provider])
        return rows_value(signal, *got)

    def refit_due(self, at: datetime | None = None) -> bool:
        """True when a local hour has started since the last refit (or the interval passed)."""
        when = _aware(at) if at is not None else _aware(self.clock())
        if self._last_refit_hour is None:
            return True
        hour = local_hour_start_at(int(when.timestamp()), self.settings.timezone)
        interval = max(3600.0, self.settings.forecast.refit_interval_minutes * 60)
        return hour - self._last_refit_hour >= interval

    def refit(self, at: datetime | None = None) -> dict[tuple[str, str], BaseException]:
        """Refit every forecast series from the store, as of ``at``.

        Histories are read under the controller's lock; the fits run without it (in the
        worker pool, or inline), so ticks and API reads go on meanwhile. A series whose fit
        fails or times out keeps its last good forecast. Returns the failures.
        """
        when = _aware(at) if at is not None else _aware(self.clock())
        started = time.perf_counter()
        with self._refit_lock:
            with self._lock:
                hour = local_hour_start_at(int(when.timestamp()), self.settings.timezone)
                if self._last_prune is None or when - self._last_prune >= PRUNE_EVERY:
                    # Retention: each prune scans the minute tables, so not every hour.
                    self.store.prune(int(when.timestamp()))
                    self._last_prune = when
                jobs = self._fit_jobs(hour, when)
                self._measure_knees(hour)
                self._last_refit_hour = hour
            outcomes = self.refitter.run(jobs)
            given = {job.key: job.selection for job in jobs}
            failures: dict[tuple[str, str], BaseException] = {}
            with self._lock:
                for key, outcome in outcomes.items():
                    if isinstance(outcome, BaseException):
                        failures[key] = outcome
                        self._refit_failed(key, outcome)
                        continue
                    old = given.get(key)
                    reused = old is not None and outcome.selection is not None and outcome.selection.stage == old.stage
                    self._forecasts[key] = self._judge(outcome, when, self._forecasts.get(key), reused)
                    self._past_fits.setdefault(key, deque(maxlen=PAST_FITS)).append(self._forecasts[key].made())
        self.metrics.refit_seconds.observe(time.perf_counter() - started)
        return failures

    def _fit_jobs(self, hour: int, when: datetime) -> list[FitJob]:
        fs = self.settings.forecast
        tz = self.settings.timezone
        start = hour - fs.history_weeks * 7 * 86400
        reselect = timedelta(hours=fs.reselect_hours)
        exclude = tuple((w.start, w.end) for w in fs.exclude)
        jobs = []
        for provider in [*self.providers(), ALL]:
            for signal in FORECAST_SIGNALS:
                if signal == "latency_p95" and provider == ALL:
                    continue
                hist = self._hourly_history(signal, provider, start, hour)
                observed = hist.dropna()
                if len(observed) < 2:
                    continue
                key = (signal, provider)
                prior = self._forecasts.get(key)
                selection: Selection | None = None
                if prior is not None and prior.selected_at is not None and when - prior.selected_at < reselect:
                    selection = prior.fit.selection
                jobs.append(FitJob(
                    key=key, history=hist.loc[observed.index[0]:], horizon=fs.horizon_hours, tz=tz,
                    min_history=pd.Timedelta(days=fs.min_history_days),
                    weekly_history=pd.Timedelta(days=fs.weekly_history_days),
                    under_penalty=fs.under_penalty if signal in LOAD_SIGNALS else 1.0, coverage=fs.coverage,
                    backtest_days=fs.backtest_days, exclude=exclude, selection=selection,
                    decomposition=self.decompose,
                ))
        return jobs

    def _measure_knees(self, hour: int) -> None:
        pol = self.settings.policy
        start = hour - self.settings.forecast.history_weeks * 7 * 86400
        for name, p in pol.providers.items():
            if p.measure_knee and p.capacity_rpm is None:
                knee = measured_knee(self._hourly_history("request_rate", name, start, hour),
                                     self._hourly_history("latency_p95", name, start, hour), pol.latency_slo_seconds)
                if knee != self._knees.get(name):
                    log.info("measured knee of %s: %s", name, "none" if knee is None else f"{knee:.0f} rpm")
                self._knees[name] = knee

    def _judge(self, fit: Fit, when: datetime, prior: SeriesForecast | None, reused: bool) -> SeriesForecast:
        """Apply the skill gates to a new fit."""
        fs = self.settings.forecast
        code, message = gate(fit, skill_gate=fs.skill_gate, seasonality_gate=fs.seasonality_gate)
        if fit.selection is None:
            selected_at = None
        elif reused and prior is not None and prior.selected_at is not None:
            selected_at = prior.selected_at
        else:
            selected_at = when
        return SeriesForecast(fit, when, code == "ForecastTrusted", code, message, selected_at)

    def _refit_failed(self, key: tuple[str, str], exc: BaseException) -> None:
        reason = "timeout" if isinstance(exc, TimeoutError) else "error"
        self.metrics.refit_failures.labels(reason).inc()
        prior = self._forecasts.get(key)
        if prior is not None:
            self._forecasts[key] = replace(prior, failures=prior.failures + 1)
        log.warning("refit of %s/%s failed (%s: %s); keeping the last good forecast%s", key[0], key[1],
                    type(exc).__name__, exc, "" if prior is not None else " (there is none yet)")

    def _forecast_reasons(self) -> list[Reason]:
        """One reason per forecast series: trusted, or why the controller only reacts for it."""
        out = []
        for (signal, provider), sf in sorted(self._forecasts.items()):
            message = sf.message if sf.trusted else f"{sf.message}; reacting to observations only"
            if sf.failures:
                message += f" (last {sf.failures} refits failed; forecast from {sf.fitted_at:%Y-%m-%d %H:%M} UTC)"
            out.append(Reason(f"forecast/{signal}/{provider}", sf.gate, message))
        return out

    def _hourly_history(self, signal: str, provider: str, start: int, end: int) -> pd.Series:
        """Hourly values over ``[start, end)``. Complete hours never change, so each call reads
        only the hours after the cached ones (an incremental rollup)."""
        key = (signal, provider)
        cached = self._hourly.get(key)
        tz = self.settings.timezone
        who = None if provider == ALL else provider
        if cached is not None and len(cached):
            # Re-read the newest cached hour too: a scrape just after the hour boundary can
            # still add to it.
            redo = int(cached.index[-1].timestamp())
            fresh = hourly(self.store, signal, tz, redo, end, who)
            cached = pd.concat([cached.iloc[:-1], fresh]) if len(fresh) else cached
        else:
            cached = hourly(self.store, signal, tz, start, end, who)
        cached = cached[cached.index >= pd.Timestamp(start, unit="s", tz="UTC")]
        self._hourly[key] = cached
        return cached[cached.index < pd.Timestamp(end, unit="s", tz="UTC")]

    def _view(self, when: datetime, config: PolicyConfig) -> View:
        pol = self.settings.policy
        ahead_end = when + timedelta(minutes=pol.lead_minutes + pol.window_minutes)
        observations: dict[tuple[str, str], float] = {}
        providers: dict[str, ProviderView] = {}
        for name in config.providers:
            p95 = self._observe("latency_p95", name)
            rps = self._observe("request_rate", name)
            observations[("latency_p95", name)] = p95
            observations[("request_rate", name)] = rps
            peak, peak_at = self._window_max(("latency_p95", name), when, ahead_end)
            trusted = peak is not None and self._trusted(("latency_p95", name))
            errors = [v for s in ("error_429_ratio", "error_5xx_ratio") if not math.isnan(v := self._observe(s, name))]
            tokens = self._observe("input_token_rate", name) + self._observe("output_token_rate", name)
            providers[name] = ProviderView(
                name=name,
                observed_p95_seconds=None if math.isnan(p95) else p95,
                observed_rpm=None if math.isnan(rps) else rps * 60,
                predicted_p95_seconds=peak,
                predicted_p95_at=peak_at,
                forecast_trusted=trusted,
                observed_error_ratio=sum(errors) if errors else None,
                tokens_per_request=tokens / rps if rps > 0 and not math.isnan(tokens) else None,
            )
        total_rps = self._observe("request_rate", None)
        observations[("request_rate", ALL)] = total_rps
        peak_rps, _ = self._window_max(("request_rate", ALL), when, ahead_end)
        if not self._trusted(("request_rate", ALL)):
            peak_rps = None
        self._observations = {k: v for k, v in observations.items() if not math.isnan(v)}
        wanted = {a.provider for a in config.prewarm}
        if wanted - {ALL}:
            wanted.add(ALL)  # a provider's action also serves its share of the total
        load = {p: self._load_points(p, when) for p in wanted if self._trusted(("request_rate", p))}
        predicted_rpm = None if peak_rps is None else peak_rps * 60
        observed_rpm = None if math.isnan(total_rps) else total_rps * 60
        routes = {
            name: RouteView(None if predicted_rpm is None else predicted_rpm * r.traffic_share,
                            None if observed_rpm is None else observed_rpm * r.traffic_share,
                            score_cdf=self._score_cdf(name, when), segment_rates=self._segment_rates(name, when))
            for name, r in self.settings.policy.routes.items()
        }
        return View(
            routes=routes,
            load_forecast={p: pts for p, pts in load.items() if pts},
            now=when,
            providers=providers,
            predicted_total_rpm=None if peak_rps is None else peak_rps * 60,
            observed_total_rpm=None if math.isnan(total_rps) else total_rps * 60,
            data_age_seconds=self.data_age_seconds(when),
            tz=self.settings.timezone,
        )

    def _is_route(self, label: str, route: str) -> bool:
        """Whether data labelled ``label`` belongs to ``route``: unlabelled data counts for the
        route when only one is configured."""
        return label == route or (label == "" and len(self.settings.policy.routes) == 1)

    def _segment_rates(self, route: str, when: datetime) -> dict[str, float]:
        """Escalation rate per segment over the last hour, from pushed events (segments with
        at least ``MIN_SEGMENT_REQUESTS`` routed requests)."""
        since = int(when.timestamp()) - SEGMENT_WINDOW_SECONDS
        self._segments = {k: v for k, v in self._segments.items() if k[0] >= since}
        totals: dict[str, list[int]] = {}
        for (_, r, segment), (n, esc) in self._segments.items():
            if segment and self._is_route(r, route):
                t = totals.setdefault(segment, [0, 0])
                t[0] += n
                t[1] += esc
        return {seg: esc / n for seg, (n, esc) in totals.items() if n >= MIN_SEGMENT_REQUESTS}

    def _score_cdf(self, route: str, when: datetime) -> tuple[tuple[float, float], ...]:
        """The router's score distribution for ``route`` at this local hour of the week, merged
        over the same hour of the weeks kept (wall-clock weeks: DST-safe); cached per hour."""
        tz = ZoneInfo(self.settings.timezone)
        hour = datetime.fromtimestamp(local_hour_start_at(int(when.timestamp()), self.settings.timezone), tz)
        key = (route, int(hour.timestamp()))
        if key in self._score_cache:
            return self._score_cache[key]
        cum: dict[float, float] = {}
        for w in range(1, self.settings.forecast.history_weeks + 1):
            start = int((hour - timedelta(weeks=w)).timestamp())  # wall-clock arithmetic on an aware datetime
            for h in self.store.hour_histograms("score", start, start + 3600):
                if self._is_route(h.key.route, route):
                    for le, c in h.buckets.items():
                        cum[le] = cum.get(le, 0.0) + c
        total = cum.get(float("inf"), max(cum.values(), default=0.0))
        cdf: tuple[tuple[float, float], ...] = ()
        if total >= MIN_SCORE_SAMPLES:
            cdf = tuple((le, min(1.0, c / total)) for le, c in sorted(cum.items()) if math.isfinite(le))
        self._score_cache = {k: v for k, v in self._score_cache.items() if k[1] >= key[1]}
        self._score_cache[key] = cdf
        return cdf

    def _load_points(self, provider: str, when: datetime) -> tuple[LoadPoint, ...]:
        """The request-rate forecast from the step containing ``when`` on, in requests per minute."""
        sf = self._forecasts.get(("request_rate", provider))
        if sf is None:
            return ()
        points = sf.load_points
        _, step, _ = sf.steps
        edge = when - timedelta(seconds=step)  # keep the steps that end after ``when``
        return points[bisect.bisect_right([p.at for p in points], edge):]

    def _trusted(self, key: tuple[str, str]) -> bool:
        sf = self._forecasts.get(key)
        return sf is not None and sf.trusted

    def _window_max(self, key: tuple[str, str], start: datetime, end: datetime) -> tuple[float | None, datetime | None]:
        """Highest forecast mean among the steps overlapping ``[start, end)``."""
        sf = self._forecasts.get(key)
        if sf is None or sf.fit.frame.empty:
            return None, None
        times, step, mean = sf.steps
        inside = (times < end.timestamp()) & (times + step > start.timestamp()) & ~np.isnan(mean)
        if not inside.any():
            return None, None
        i = int(np.flatnonzero(inside)[np.argmax(mean[inside])])
        return float(mean[i]), datetime.fromtimestamp(int(times[i]), UTC)

    def _publish(self, decision: Decision, view: View) -> bool:
        """Make ``decision`` current; push it if it changed. Returns whether it changed."""
        self._decision = decision
        body = decision_body(decision)
        etag = decision_etag(decision, body)
        changed = etag != self._etag
        if changed:  # a new decision: into the audit log with what it was based on
            self.audit.append({
                **body,
                "etag": etag,
                "inputs": {
                    "data_age_seconds": view.data_age_seconds,
                    "observed_total_rpm": view.observed_total_rpm,
                    "predicted_total_rpm": view.predicted_total_rpm,
                    "providers": {
                        n: {"observed_p95_seconds": pv.observed_p95_seconds, "observed_rpm": pv.observed_rpm,
                            "predicted_p95_seconds": pv.predicted_p95_seconds,
                            "predicted_p95_at": pv.predicted_p95_at.isoformat() if pv.predicted_p95_at else None,
                            "forecast_trusted": pv.forecast_trusted}
                        for n, pv in sorted(view.providers.items())
                    },
                    "overrides": [o.id for o in self.overrides.active(decision.at)],
                },
            })
            if decision.mode == "act":  # observe mode pushes nothing
                for pub in self.publishers:
                    pub.publish(body, etag)
        self._etag = etag
        if decision.mode == "act":  # each tick: it acts only on a changed amount, and retries a failed one
            self.prewarm.submit(decision.prewarm, decision.at)
        for r in decision.reasons:
            self.metrics.decision_reasons.labels(r.knob.split("/", 1)[0], r.code).inc()
        return changed

    # ---- read side ----------------------------------------------------------------------

    @property
    def decision(self) -> Decision | None:
        return self._decision

    @property
    def etag(self) -> str | None:
        return self._etag

    def providers(self) -> list[str]:
        configured = list(self.settings.policy.providers)
        if configured:
            return configured
        return sorted({k.provider for k in self.store.series("requests")})

    def policy_config(self) -> PolicyConfig:
        pol = self.settings.policy
        if pol.providers:
            providers = {
                n: ProviderConfig(p.baseline_weight, p.min_weight, p.max_weight,
                                  p.capacity_rpm if p.capacity_rpm is not None or not p.measure_knee
                                  else self._knees.get(n), p.capacity_tpm)
                for n, p in pol.providers.items()
            }
        else:  # nothing configured: equal shares over the providers seen so far
            seen = self.providers()
            providers = {n: ProviderConfig(1.0 / len(seen)) for n in seen}
        prewarm = tuple(
            PrewarmConfig(a.name, a.kind, a.target, a.rpm_per_unit, a.min_units, a.max_units,
                          timedelta(minutes=a.lead_minutes), timedelta(minutes=a.release_after_minutes), a.provider)
            for a in pol.prewarm
        )
        routes = tuple(
            RouteConfig(name, r.tier, r.baseline_fraction, r.quality_floor, r.max_fraction, r.strong_cost_per_request,
                        r.weak_cost_per_request, r.hourly_budget, r.strong_provider, r.max_segment_disparity)
            for name, r in sorted(pol.routes.items())
        )
        return PolicyConfig(providers=providers, latency_slo_seconds=pol.latency_slo_seconds, prewarm=prewarm,
                            routes=routes, error_budget=pol.error_budget)

    def data_age_seconds(self, at: datetime | None = None) -> float | None:
        if self._last_data_at is None:
            return None
        now = _aware(at) if at is not None else (self._now or _aware(self.clock()))
        return max(0.0, (now - self._last_data_at).total_seconds())

    def observations(self) -> dict[tuple[str, str], float]:
        """The last tick's observations (what the policies saw), and over the same window the
        hour-of-week signals for all providers (for dashboards; computed here, when asked)."""
        out = dict(self._observations)
        with self._lock:
            for signal, per_provider in HOUR_OF_WEEK_SIGNALS.items():
                if not per_provider and (signal, ALL) not in out:
                    value = self._observe(signal, None)
                    if math.isfinite(value):
                        out[(signal, ALL)] = value
        return out

    def knees(self) -> dict[str, float | None]:
        """Measured knees (requests per minute) of providers with ``measure_knee``."""
        return dict(self._knees)

    def forecasts(self) -> dict[tuple[str, str], SeriesForecast]:
        """The last good forecast of every series, with its gate."""
        return dict(self._forecasts)

    def current_forecasts(self) -> dict[tuple[str, str], dict[str, float]]:
        """Each forecast's row for the step containing the last tick: the expected value now
        (the seasonal baseline, fitted on history before it) and its band."""
        return {key: rows[0] for key, rows in self.forecasts_at((0,)).items() if 0 in rows}

    def forecasts_at(self, offsets: Sequence[int]) -> dict[tuple[str, str], dict[int, dict[str, float]]]:
        """Per forecast series and offset (seconds after the last tick), the forecast's
        ``mean``, ``lower`` and ``upper`` for the step containing that instant. Offsets past
        the forecast's end, and NaN bounds, are left out."""
        out: dict[tuple[str, str], dict[int, dict[str, float]]] = {}
        if self._now is None:
            return out
        now = int(self._now.timestamp())
        for key, sf in self._forecasts.items():
            rows = {offset: row for offset in offsets if (row := sf.row_at(now + offset))}
            if rows:
                out[key] = rows
        return out

    def forecasts_made_ago(self, horizons: Sequence[int]) -> dict[tuple[str, str], dict[int, dict[str, float]]]:
        """Per forecast series and horizon (seconds), what the forecast in force that long
        before the last tick said about now: forecast against actual, as it happens."""
        out: dict[tuple[str, str], dict[int, dict[str, float]]] = {}
        if self._now is None:
            return out
        now = int(self._now.timestamp())
        for key, past in self._past_fits.items():
            rows = {}
            for h in horizons:
                made = [m for m in past if m.fitted_at <= now - h]
                if made and (row := made[-1].row_at(now)):
                    rows[h] = row
            if rows:
                out[key] = rows
        return out

    def hour_of_week(self) -> dict[tuple[str, str], np.ndarray]:
        """The typical week (median per local hour-of-week slot, 168 values, NaN where no
        data) of :data:`HOUR_OF_WEEK_SIGNALS`: latency per provider, the rest over all
        providers. Read from the hour rollups at most once per local hour, when asked (the
        ``/metrics`` scrape), never on the control path."""
        when = self._now or _aware(self.clock())
        hour = local_hour_start_at(int(when.timestamp()), self.settings.timezone)
        cached = self._hour_of_week
        if cached is not None and cached[0] == hour:
            return cached[1]
        start = hour - int(self.settings.forecast.history_weeks * 7 * 86400)
        out: dict[tuple[str, str], np.ndarray] = {}
        for signal, per_provider in HOUR_OF_WEEK_SIGNALS.items():
            for provider in (self.providers() if per_provider else [ALL]):
                series = hourly(self.store, signal, self.settings.timezone, start, hour,
                                None if provider == ALL else provider)
                medians = profile(series, self.settings.timezone)["median"].to_numpy(dtype=float)
                if not np.isnan(medians).all():
                    out[(signal, provider)] = medians
        self._hour_of_week = (hour, out)
        return out

    def current_slot(self) -> int | None:
        """The local hour-of-week slot (0 = Monday 00:00) of the last tick."""
        return None if self._now is None else slot(self._now, self.settings.timezone)

    def fallback_reasons(self) -> list[str]:
        """Reason codes that hold the current decision at the baseline config (stale inputs,
        every provider degraded, the kill switch); empty when diurnal is steering."""
        if self._decision is None:
            return []
        return sorted({r.code for r in self._decision.reasons if r.code in FALLBACK_REASONS})

    def stored_series_count(self) -> int:
        return self.store.series_count()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            for pub in self.publishers:
                pub.close()
            self.prewarm.close()
            self.refitter.close()
            self.store.close()


def kubernetes_scaler(settings: Settings) -> KubernetesScaler:
    k = settings.publish.kubernetes
    if k.api_url:
        return KubernetesScaler(k.api_url, k.token_path, k.ca_path, timeout=k.timeout_seconds)
    return KubernetesScaler.in_cluster(token_path=k.token_path, ca_path=k.ca_path, timeout=k.timeout_seconds)


def decision_etag(decision: Decision, body: dict[str, object] | None = None) -> str:
    """The decision's ETag. A decision is new when a knob or a reason code changes; messages
    are left out, since they carry live numbers (the p95 seen now) and a poller must get 304
    while nothing it acts on has changed."""
    identity = {k: v for k, v in (body or decision_body(decision)).items() if k not in ("at", "reasons")}
    identity["codes"] = [(r.knob, r.code) for r in decision.reasons]
    return '"' + hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20] + '"'


def decision_body(decision: Decision, *, with_time: bool = True) -> dict[str, object]:
    """The JSON form of a decision, as served at ``GET /v1/decision``."""
    body: dict[str, object] = {
        "mode": decision.mode,
        "weights": {k: round(v, 6) for k, v in sorted(decision.weights.items())},
        "recommended_weights": {k: round(v, 6) for k, v in sorted(decision.recommended_weights.items())},
        "thresholds": dict(sorted(decision.thresholds.items())),
        "recommended_thresholds": dict(sorted(decision.recommended_thresholds.items())),
        "prewarm": [
            {"action": p.action, "kind": p.kind, "target": p.target, "amount": p.amount, "at": p.at.isoformat(),
             "peak_at": p.peak_at.isoformat() if p.peak_at else None,
             "release_at": p.release_at.isoformat() if p.release_at else None}
            for p in decision.prewarm
        ],
        "reasons": [{"knob": r.knob, "code": r.code, "message": r.message} for r in decision.reasons],
    }
    if with_time:
        body["at"] = decision.at.isoformat()
    return body
