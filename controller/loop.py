"""The controller: the one engine behind ``diurnal run``, the demo and embedders::

    ctl = Controller.from_settings(settings, clock=...)
    ctl.ingest_exposition(text, at=...)
    decision = ctl.step(at=...)

It owns the clock, the lock and the order of a tick's stages, and nothing else:

1. collect (:mod:`controller.collect`): close the minutes that ended → observations;
2. fit (:mod:`controller.fit`): refit when due → what was learned (forecasts, knees, scores);
3. decide (:mod:`controller.decide`): the policies' view → ``policies.decide`` → guardrails;
4. publish (:mod:`controller.publish`): the wire format, the audit log, the actuators.

Each stage is called once per tick and hands its result to the next. The controller never
reads the wall clock itself: times come as arguments, or from the injected clock.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from opentelemetry import trace
from prometheus_client import CollectorRegistry

from collectors.events import EventBatch
from collectors.exposition import Sample
from collectors.fleet import fleet_cells
from collectors.hour_of_week import slot
from collectors.intervals import IngestStats, MinuteCell
from collectors.mapping import Mapper, SeriesKey
from collectors.store import Store
from controller.actuators import OverrideStore, ReplicaScaler
from controller.budget import SpendLedger
from controller.collect import CollectStage
from controller.decide import DecideStage, policy_config
from controller.errors import ErrorThrottle
from controller.fit import ALL, HOUR_OF_WEEK_SIGNALS, FitStage, SeriesForecast
from controller.forecast.refit import Refitter
from controller.forecast.slo_capacity import CapacityProfile
from controller.metrics import Metrics
from controller.observations import NEEDED_SIGNALS, Observations, SignalGap
from controller.publish import PublishStage
from controller.settings import Settings
from controller.shadow import ShadowState
from controller.telemetry import StateCollector
from policies import FALLBACK_CODES, Decision, PolicyConfig, Reason, ReasonCode

__all__ = ["Clock", "Controller", "package_version"]

_tracer = trace.get_tracer("diurnal")

Clock = Callable[[], datetime]


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
    """Collects, forecasts, decides, publishes. Thread-safe: one lock around ingest and the
    stages; refits read and write under it and fit without it."""

    def __init__(self, settings: Settings, *, clock: Clock = _utc_now, store: Store | None = None,
                 refit_in_step: bool = True, refitter: Refitter | None = None,
                 scaler: Callable[[], ReplicaScaler] | None = None, journal: bool = True,
                 actuators: bool = True, write_behind: bool = False) -> None:
        """``write_behind``: closed minutes are stored by a thread of their own
        (:mod:`controller.writer`), off the tick; the service sets it. ``journal=False`` for a second process on a data dir that a running diurnal owns
        (``diurnal backfill``): it must not replay or replace that run's journal of open
        minutes (see :mod:`controller.collect`). ``actuators=False`` decides (in ``act`` mode
        too) but pushes and scales nothing: ``diurnal replay`` walking a past period."""
        self.settings = settings
        #: Whether this replica may act (publish, scale): with ``ha.enabled``, whether it holds
        #: the Lease right now (the service sets it to its elector's ``is_leader``).
        self.acting: Callable[[], bool] = lambda: True
        self.actuators = actuators
        self.clock = clock
        self.store = store if store is not None else Store(settings.data_dir, tz=settings.timezone)
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        fs = settings.forecast
        self.collect = CollectStage(settings, self.store, self.metrics, journal=journal, write_behind=write_behind)
        self.fit = FitStage(settings, self.store, refitter or Refitter(fs.workers, fs.refit_timeout_seconds),
                            self.metrics)
        self.decide = DecideStage(settings, SpendLedger(settings, self.store, stored=self.collect.drain), self.fit.score_cdf)
        self.decide.outlook.headroom.loads(self.store.meta(self.HEADROOM))
        self._headroom_saved: datetime | None = None
        self._headroom_log = ErrorThrottle("keeping the learned headroom in the store", every=None,
                                           meanwhile="kept in memory; tried again at the next change")
        self.publish = PublishStage(settings, self.metrics, scaler)
        self.shadow = ShadowState()
        #: The last minute whose decision is kept (:meth:`_keep_decided`), and the prewarm
        #: amounts in force.
        self._decided_minute = 0
        self._decided_units: dict[str, float] = {}
        self._decided_log = ErrorThrottle("keeping the decision for the shadow report", every=3600.0,
                                          meanwhile="that minute's decision is left out of the report")
        self.overrides = OverrideStore(Path(settings.data_dir) / "overrides.json")
        #: ``step`` refits when due (embedding); the service runs :meth:`refit` on its own job.
        self.refit_in_step = refit_in_step
        self._lock = threading.RLock()
        self._refit_lock = threading.Lock()
        self._now: datetime | None = None
        self._observations: Observations | None = None
        self._observed: dict[tuple[str, str], float] = {}
        #: What the router's input lacked at the last tick, and its throttled warning.
        self.missing: list[SignalGap] = []
        self._missing_log = ErrorThrottle("reading the signals the weights policy needs", every=3600.0,
                                          meanwhile="weights held at the baseline until they appear")
        self.metrics.initialise(mode=settings.guardrails.mode, publishers=[p.name for p in self.publish.publishers],
                                prewarm_actions=[a.name for a in settings.policy.prewarm])
        self.registry.register(StateCollector(self, package_version))

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Clock | None = None, refit_in_step: bool = True,
                      scaler: Callable[[], ReplicaScaler] | None = None, journal: bool = True,
                      actuators: bool = True, write_behind: bool = False) -> Controller:
        """``scaler`` replaces the in-cluster Kubernetes client for ``replicas`` prewarm
        actions (an embedding program that manages replicas its own way)."""
        return cls(settings, clock=clock or _utc_now, refit_in_step=refit_in_step, scaler=scaler, journal=journal,
                   actuators=actuators, write_behind=write_behind)

    @staticmethod
    def freeze_heap() -> None:
        """Collect once, then move every object alive now (the imported libraries, the settings,
        the store's series) out of the cyclic garbage collector's sight (``gc.freeze``): its full
        collections no longer walk them, which at fleet scale paused a tick for about 100 ms every
        few minutes. The service calls it once, at start; objects made later are collected as ever."""
        gc.collect()
        gc.freeze()

    def _when(self, at: datetime | None) -> datetime:
        return _aware(at) if at is not None else self.clock_now()

    def clock_now(self) -> datetime:
        """The injected clock's time (UTC): the one clock of the API and the loop."""
        return _aware(self.clock())

    def now(self) -> datetime:
        """The last tick's time, else the clock's."""
        return self._now or self.clock_now()

    # ---- ingest -------------------------------------------------------------------------

    def ingest_exposition(self, text: str, at: datetime | None = None, *, content_type: str | None = None) -> IngestStats:
        """Parse one scrape taken at ``at`` and aggregate it. Malformed text raises
        :class:`~collectors.errors.ExpositionError` and changes nothing (it is counted)."""
        when = self._when(at)
        with self._lock:
            return self.collect.ingest_exposition(text, when, content_type)

    def ingest_samples(self, samples: Iterable[Sample], at: datetime | None = None) -> IngestStats:
        """Aggregate parsed samples taken at ``at`` (default: the clock)."""
        when = self._when(at)
        with self._lock:
            return self.collect.ingest_samples(samples, when)

    def ingest_events(self, body: bytes, at: datetime | None = None) -> EventBatch:
        """Aggregate pushed per-request events (JSON lines). Bad lines are reported in the
        result, never half-counted; events older than the minutes still open are stored as
        late data for their minute. The accepted ones are committed to the store's journal
        when this returns (a :class:`~collectors.errors.StoreError` accepts none)."""
        when = self._when(at)
        batch = self.collect.parse_events(body, when)
        with self._lock:
            self.collect.add_events(batch, when)
        return batch

    def ingest_cells(self, cells: dict[int, dict[SeriesKey, MinuteCell]], at: datetime | None = None) -> int:
        """Add minute cells already aggregated (minute start -> series -> cell), such as a
        stored history walked again by ``diurnal replay``, as input taken at ``at``: the label
        policy applies, and minutes close as the ingest clock passes them. Returns the
        series-minutes added."""
        when = self._when(at)
        with self._lock:
            return self.collect.add_cells(cells, when)

    #: Store meta key of the fleet input's cursor: the end of the last window read.
    FLEET_CURSOR = "fleet_window_end"

    def ingest_fleet(self, samples: list[Sample], window_end: int, window_seconds: int) -> int:
        """One window of the fleet query's result (increases summed over the router's
        replicas, :mod:`collectors.fleet`); journaled with the fleet cursor. Returns the
        series-minutes it fed."""
        with self._lock:
            cells = fleet_cells(self.collect.mapper, samples, window_end, window_seconds)
            self.collect.add_fleet(cells, window_end, self.FLEET_CURSOR)
        return sum(len(c) for c in cells.values())

    def fleet_cursor(self) -> int | None:
        """The end of the last fleet window read into the store (None: never)."""
        raw = self.store.meta(self.FLEET_CURSOR)
        return int(raw) if raw else None

    def invalidate_history(self) -> None:
        """Forget cached hourly history (after a backfill or import wrote older data), so the
        next step refits from the store."""
        with self._lock:
            self.fit.history_changed()
            self.collect.history_changed()

    def flush(self) -> int:
        """Write every open minute to the store (used at shutdown)."""
        with self._lock:
            return self.collect.flush()

    # ---- the tick -----------------------------------------------------------------------

    def step(self, at: datetime | None = None) -> Decision:
        """Run whatever is due up to ``at`` and return the current decision.

        Traced as one ``diurnal.cycle`` span with children ``collect``, ``fit``, ``decide``
        and ``publish`` (OpenTelemetry API; no-op unless the entry point installed an SDK).
        """
        when = self._when(at)
        started = time.perf_counter()
        mode = self.settings.guardrails.mode
        with _tracer.start_as_current_span("diurnal.cycle", attributes={"diurnal.mode": mode}) as cycle:
            with _tracer.start_as_current_span("collect") as span, self._lock:
                self._now = when
                observations, written = self.collect.close(when)
                self._observations = observations
                span.set_attribute("diurnal.rows_written", written)
                span.set_attribute("diurnal.series.stored", self.stored_series_count())
            with _tracer.start_as_current_span("fit") as span:
                due = self.refit_in_step and self.refit_due(when)
                span.set_attribute("diurnal.refit.ran", due)
                if due:
                    failures = self.refit(when)  # the refit lock, then this one: never the other way round
                    span.set_attribute("diurnal.refit.failures", len(failures))
                with self._lock:
                    learned = self.fit.learned(when)
                forecasts = learned.forecasts
                span.set_attribute("diurnal.forecast.series", len(forecasts))
                span.set_attribute("diurnal.forecast.trusted", sum(sf.trusted for sf in forecasts.values()))
                span.set_attribute("diurnal.forecast.models",
                                   [f"{sig}/{prov}={sf.fit.model}" for (sig, prov), sf in sorted(forecasts.items())])
            with self._lock:
                with _tracer.start_as_current_span("decide") as span:
                    config = policy_config(self.settings.policy, self.collect.providers(), learned.knees)
                    self._check_signals(list(config.providers), when, observations)
                    decided = self.decide.run(when, observations, learned, config, self.publish.decision,
                                              self.overrides.active(when), self.collect.data_age_seconds(when),
                                              self.missing)
                    self._observed = dict(decided.observed)
                    self._save_headroom(when)
                    self._keep_decided(when, decided.decision)
                    span.set_attribute("diurnal.decision.reasons", sorted({r.code for r in decided.decision.reasons}))
                    span.set_attribute("diurnal.providers", len(decided.view.providers))
                with _tracer.start_as_current_span("publish") as span:
                    acting = self.acting()
                    if not acting:
                        decided = replace(decided, decision=replace(decided.decision, reasons=(
                            *decided.decision.reasons, Reason("actuators", ReasonCode.NotLeader,
                                                              "another replica holds the lease and acts; this one "
                                                              "serves the decision it computes and acts on nothing"))))
                    self.metrics.leader.set(1.0 if acting else 0.0)
                    changed = self.publish.run(decided, acting and self.actuators)
                    span.set_attribute("diurnal.decision.changed", changed)
                    span.set_attribute("diurnal.publishers",
                                       [p.name for p in self.publish.publishers] if mode == "act" else [])
            cycle.set_attribute("diurnal.decision.fallback", self.fallback_reasons())
        self.metrics.ticks.inc()
        self.metrics.decisions.labels(mode).inc()
        self.metrics.tick_seconds.observe(time.perf_counter() - started)
        return decided.decision

    def _check_signals(self, providers: list[str], when: datetime, obs: Observations) -> None:
        """Which signals the weights policy needs are missing: one warning, then one an hour."""
        previous = self.publish.decision
        idle = frozenset(p for p, w in previous.weights.items() if w <= 1e-9) if previous is not None else frozenset()
        self.missing = self.collect.missing_signals(providers, when, obs, idle)
        if self.missing:
            self._missing_log.failed("; ".join(m.describe() for m in self.missing))
        else:
            self._missing_log.succeeded()

    def signal_presence(self) -> dict[tuple[str, str], bool]:
        """Per (needed signal, configured provider): whether the router's input carried it
        over the observation window before the last tick."""
        when = self.now()
        return {(sig, p): self.collect.signal_present(sig, p, when)
                for p in self.collect.providers() for sig in NEEDED_SIGNALS}

    def refit_due(self, at: datetime | None = None) -> bool:
        """True when a local hour has started since the last refit (or the interval passed)."""
        return self.fit.refit_due(self._when(at))

    def refit(self, at: datetime | None = None) -> dict[tuple[str, str], BaseException]:
        """Refit every forecast series from the store, as of ``at``.

        Histories are read under the controller's lock; the fits run without it (in the
        worker pool, or inline), so ticks and API reads go on meanwhile. A series whose fit
        fails or times out keeps its last good forecast. Returns the failures.
        """
        when = self._when(at)
        started = time.perf_counter()
        with self._refit_lock:
            self.collect.drain()  # every minute closed is in the store it reads
            with self._lock:
                jobs = self.fit.jobs(when, self.collect.providers())
            outcomes = self.fit.refitter.run(jobs)
            with self._lock:
                failures = self.fit.apply(jobs, outcomes, when)
        self.metrics.refit_seconds.observe(time.perf_counter() - started)
        return failures

    # ---- read side ----------------------------------------------------------------------

    @property
    def decision(self) -> Decision | None:
        return self.publish.decision

    @property
    def etag(self) -> str | None:
        return self.publish.etag

    @property
    def mapper(self) -> Mapper:
        return self.collect.mapper

    @property
    def decompose(self) -> bool:
        """Whether refits also decompose each series (for /metrics and the dashboards); a
        simulation can turn it off until its last refit."""
        return self.fit.decompose

    @decompose.setter
    def decompose(self, value: bool) -> None:
        self.fit.decompose = value

    def providers(self) -> list[str]:
        return self.collect.providers()

    def policy_config(self) -> PolicyConfig:
        return policy_config(self.settings.policy, self.collect.providers(), self.fit.knees)

    def data_age_seconds(self, at: datetime | None = None) -> float | None:
        return self.collect.data_age_seconds(self._when(at) if at is not None else self.now())

    def observations(self) -> dict[tuple[str, str], float]:
        """The last tick's observations (what the policies saw), and over the same window the
        hour-of-week signals for all providers (for dashboards; computed here, when asked)."""
        out = dict(self._observed)
        with self._lock:
            obs = self._observations
            for signal, per_provider in HOUR_OF_WEEK_SIGNALS.items():
                if obs is not None and not per_provider and (signal, ALL) not in out:
                    value = obs.value_or_none(signal, None)
                    if value is not None:
                        out[(signal, ALL)] = value
        return out

    def knees(self) -> dict[str, float | None]:
        """Measured knees (requests per minute) of providers with ``measure_knee``."""
        return dict(self.fit.knees)

    def capacity(self) -> dict[str, CapacityProfile]:
        """Each provider's learned SLO capacity by local hour of the week."""
        return dict(self.fit.capacity)

    def forecasts(self) -> dict[tuple[str, str], SeriesForecast]:
        """The last good forecast of every series, with its gate."""
        return dict(self.fit.forecasts)

    def current_forecasts(self) -> dict[tuple[str, str], dict[str, float]]:
        """Each forecast's row for the step containing the last tick: the expected value now
        (the seasonal baseline, fitted on history before it) and its band."""
        return {key: rows[0] for key, rows in self.forecasts_at((0,)).items() if 0 in rows}

    def forecasts_at(self, offsets: Sequence[int]) -> dict[tuple[str, str], dict[int, dict[str, float]]]:
        """Per series and offset (seconds after the last tick), the forecast's bands there."""
        return {} if self._now is None else self.fit.forecasts_at(self._now, offsets)

    def forecasts_made_ago(self, horizons: Sequence[int]) -> dict[tuple[str, str], dict[int, dict[str, float]]]:
        """Per series and horizon (seconds), what the forecast in force that long before the
        last tick said about now."""
        return {} if self._now is None else self.fit.forecasts_made_ago(self._now, horizons)

    def hour_of_week(self) -> dict[tuple[str, str], np.ndarray]:
        """The typical week of the profiled signals (see :meth:`FitStage.hour_of_week`)."""
        return self.fit.hour_of_week(self.now(), self.providers())

    def current_slot(self) -> int | None:
        """The local hour-of-week slot (0 = Monday 00:00) of the last tick."""
        return None if self._now is None else slot(self._now, self.settings.timezone)

    def fallback_reasons(self) -> list[str]:
        """Reason codes that hold the current decision at the baseline config (stale inputs,
        every provider degraded, the kill switch); empty when diurnal is steering."""
        d = self.decision
        return [] if d is None else sorted({str(r.code) for r in d.reasons if r.code in FALLBACK_CODES})

    def stored_series_count(self) -> int:
        return self.store.series_count()

    #: The store's meta key of the planner's learned headroom (controller.headroom).
    HEADROOM = "planner_headroom"
    #: It is written at most this often while it changes (and at close).
    HEADROOM_SAVE_EVERY = 300.0

    def _save_headroom(self, when: datetime | None, *, force: bool = False) -> None:
        learner = self.decide.outlook.headroom
        if not learner.changed:
            return
        if not force and self._headroom_saved is not None and when is not None \
                and abs((when - self._headroom_saved).total_seconds()) < self.HEADROOM_SAVE_EVERY:
            return
        try:
            self.store.put_meta(self.HEADROOM, learner.dumps())
            self._headroom_saved = when
            self._headroom_log.succeeded()
        except Exception as exc:  # noqa: BLE001 - losing it costs relearning, never the tick
            learner.changed = True
            self._headroom_log.failed(str(exc))

    @property
    def prewarm_in_force(self) -> dict[str, float]:
        """Each prewarm action's amount in force at the last tick (its latest step due by then)."""
        return dict(self._decided_units)

    def _keep_decided(self, when: datetime, decision: Decision) -> None:
        """Keep, once per minute, what diurnal would do for the minute that just closed: the
        weights it recommends (after the guardrails, whatever the mode) and each prewarm
        action's amount in force. The shadow report estimates from them what acting would
        have changed; losing one costs that minute of the report, never the tick."""
        for step in decision.prewarm:
            if step.at <= when:
                self._decided_units[step.action] = step.amount
        minute = int(when.timestamp()) // 60 * 60 - 60
        if minute <= self._decided_minute or self.store.read_only:
            return
        weights = decision.recommended_weights or decision.weights
        values = {f"weight:{p}": w for p, w in weights.items()}
        values.update({f"units:{a}": v for a, v in self._decided_units.items()})
        if self.collect.keep_decided(minute, values):  # stored with the writer's next batch
            self._decided_minute = minute
            return
        try:
            self.store.put_decided(minute, values)
            self._decided_log.succeeded()
        except Exception as exc:  # noqa: BLE001 - the report loses a minute, the tick goes on
            self._decided_log.failed(str(exc))
        self._decided_minute = minute

    def close(self) -> None:
        try:
            with self._lock:
                self._save_headroom(self._now, force=True)
            self.flush()
        finally:
            self.publish.close()
            self.fit.refitter.close()
            self.store.close()
