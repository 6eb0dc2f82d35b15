"""Stage 2 of a tick, fit: what history says about the hours ahead.

Every local hour (or ``forecast.refit_interval_minutes``) each forecast series is refit from
the store's hourly history, in the refit workers, and gated by its skill
(:class:`SeriesForecast`). With the forecasts the stage learns each provider's knee and,
per route and local hour of the week, the router's score distribution. The decide stage
reads all of it through one frozen :class:`Learned` per tick.

The loop owns the locking: :meth:`FitStage.jobs` and :meth:`FitStage.apply` run under its
lock, the fits between them without it.

Why a little over 400 lines: the stage keeps the forecasts and what is learned beside them
(knees, SLO capacity, score distributions) on one incremental hourly-history cache, and its
read side (forecasts at horizons, forecast against actual, the typical week) reads the same
state; split, each part would reach into the others' cache.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from collectors.hour_of_week import local_hour_start_at, profile
from collectors.signals import hourly
from collectors.store import Store
from controller.collect import is_route
from controller.forecast import Fit, Selection, gate
from controller.forecast.capacity import measured_knee
from controller.forecast.refit import FitJob, Refitter
from controller.forecast.slo_capacity import CapacityProfile, learn_capacity
from controller.metrics import Metrics
from controller.settings import Settings
from policies import LoadPoint, Reason, ReasonCode

__all__ = [
    "ALL", "FORECAST_SIGNALS", "HOUR_OF_WEEK_SIGNALS", "LOAD_SIGNALS", "FitStage", "Learned", "MadeForecast",
    "SeriesForecast",
]

log = logging.getLogger("diurnal.fit")

#: Signals forecast per provider, and for all providers together ("*"); ``latency_p95`` only
#: per provider, ``demand_rate`` (the planner's demand) only for all together.
FORECAST_SIGNALS = ("latency_p95", "request_rate", "demand_rate")
#: Load signals: under-predicting them costs more (``forecast.under_penalty``) in model choice.
LOAD_SIGNALS = frozenset({"request_rate", "demand_rate", "input_token_rate", "output_token_rate", "spend_rate"})
ALL = "*"
#: Fits kept per series for forecast-against-actual (hourly refits: 6 h back and one).
PAST_FITS = 8
#: Signals of the hour-of-week profile on ``/metrics``: True when kept per provider (latency
#: only means something per provider), False for all providers together. 168 series each.
HOUR_OF_WEEK_SIGNALS: dict[str, bool] = {
    "latency_p95": True, "cache_hit_ratio": False, "retry_ratio": False, "spend_rate": False, "request_rate": False,
}
#: How often refits also drop data past its retention (minutes and hours stay up to this
#: much longer than their retention).
PRUNE_EVERY = timedelta(hours=6)
#: How often refits also relearn each provider's SLO capacity: it changes over weeks, and a
#: relearn reads every hour of the history (a few ms per provider).
CAPACITY_EVERY = timedelta(hours=6)
#: Routing scores needed in an hour-of-week before a score threshold is calibrated from them.
MIN_SCORE_SAMPLES = 100


@dataclass(frozen=True)
class MadeForecast:
    """The bands of one fit and when it was made: all that forecast-against-actual keeps."""

    fitted_at: int  # Unix s
    times: np.ndarray  # step starts, Unix s
    step: int
    bands: dict[str, np.ndarray]

    def row_at(self, ts: int) -> dict[str, float]:
        """``mean``, ``lower`` and ``upper`` of the step containing ``ts`` (Unix s); empty
        outside the forecast. NaN bounds are left out."""
        i = int(np.searchsorted(self.times, ts, side="right")) - 1
        if i < 0 or ts >= self.times[i] + self.step:
            return {}
        return {b: float(v[i]) for b, v in self.bands.items() if not math.isnan(v[i])}

    def band_at(self, ts: int, band: str) -> float | None:
        """``band`` of the step containing ``ts`` (Unix s); None outside the forecast or NaN."""
        times = self.times
        if not len(times) or ts < times[0] or ts >= times[-1] + self.step:
            return None
        i = int(np.searchsorted(times, ts, side="right")) - 1
        if ts >= times[i] + self.step:
            return None
        v = float(self.bands[band][i])
        return None if math.isnan(v) else v


@dataclass(frozen=True)
class SeriesForecast:
    """The last good fit of one series, and what the gates made of it."""

    fit: Fit
    fitted_at: datetime
    trusted: bool
    gate: ReasonCode
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
    def made(self) -> MadeForecast:
        times, step, _ = self.steps
        fc = self.fit.frame
        return MadeForecast(int(self.fitted_at.timestamp()), times, step,
                            {b: fc[b].to_numpy(dtype=float) for b in ("mean", "lower", "upper")})

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

    def window_max(self, start: datetime, end: datetime) -> tuple[float | None, datetime | None]:
        """Highest forecast mean among the steps overlapping ``[start, end)``."""
        if self.fit.frame.empty:
            return None, None
        times, step, mean = self.steps
        inside = (times < end.timestamp()) & (times + step > start.timestamp()) & ~np.isnan(mean)
        if not inside.any():
            return None, None
        i = int(np.flatnonzero(inside)[np.argmax(mean[inside])])
        return float(mean[i]), datetime.fromtimestamp(int(times[i]), UTC)

    def load_from(self, when: datetime) -> tuple[LoadPoint, ...]:
        """The load forecast from the step containing ``when`` on, in requests per minute."""
        points = self.load_points
        _, step, _ = self.steps
        edge = when - timedelta(seconds=step)  # keep the steps that end after ``when``
        return points[bisect.bisect_right([p.at for p in points], edge):]

    def reason(self, signal: str, provider: str) -> Reason:
        """Trusted, or why the loop only reacts for this series."""
        message = self.message if self.trusted else f"{self.message}; reacting to observations only"
        if self.failures:
            message += f" (last {self.failures} refits failed; forecast from {self.fitted_at:%Y-%m-%d %H:%M} UTC)"
        return Reason(f"forecast/{signal}/{provider}", self.gate, message)


@dataclass(frozen=True)
class Learned:
    """What the fit stage hands the decide stage for one tick."""

    forecasts: Mapping[tuple[str, str], SeriesForecast]
    #: Measured knees (requests per minute) of providers with ``measure_knee``.
    knees: Mapping[str, float | None]
    #: Per configured route, this local hour-of-week's score distribution (may be empty).
    score_cdfs: Mapping[str, tuple[tuple[float, float], ...]]
    #: Per provider, its SLO capacity by local hour of week (``slo_capacity``).
    capacity: Mapping[str, CapacityProfile]
    #: The recent fits of the total demand (requests net of retries), oldest first, while it
    #: is trusted: what the forecast in force said about each recent minute.
    load_history: tuple[MadeForecast, ...] = ()

    def load_band_at(self, ts: int, band: str = "lower") -> float | None:
        """``band`` (per second) of the total load at ``ts`` from the forecast in force then:
        the newest fit made at or before ``ts`` that covers it, else the oldest that does."""
        made = self.load_history
        for m in reversed(made):  # newest first: the one in force is nearly always the first
            if m.fitted_at <= ts and (v := m.band_at(ts, band)) is not None:
                return v
        for m in made:  # none made by then covers it: the oldest of the later ones that does
            if m.fitted_at > ts and (v := m.band_at(ts, band)) is not None:
                return v
        return None

    def trusted(self, key: tuple[str, str]) -> SeriesForecast | None:
        sf = self.forecasts.get(key)
        return sf if sf is not None and sf.trusted else None

    def reasons(self) -> list[Reason]:
        return [sf.reason(signal, provider) for (signal, provider), sf in sorted(self.forecasts.items())]


class FitStage:
    def __init__(self, settings: Settings, store: Store, refitter: Refitter, metrics: Metrics) -> None:
        self.settings = settings
        self.store = store
        self.refitter = refitter
        self.metrics = metrics
        #: Refits also decompose each series (trend, daily, weekly, residual) for /metrics and
        #: the dashboards; a simulation can skip that until its last refit.
        self.decompose = True
        self.forecasts: dict[tuple[str, str], SeriesForecast] = {}
        self.knees: dict[str, float | None] = {}
        #: Each provider's SLO capacity by local hour of week, relearned at every refit from
        #: the last one (which it moves from only on proof).
        self.capacity: dict[str, CapacityProfile] = {}
        self._capacity_hour: int | None = None
        #: The last fits per series, for forecast-against-actual at each horizon.
        self.past_fits: dict[tuple[str, str], deque[MadeForecast]] = {}
        self._last_refit_hour: int | None = None
        self._last_prune: datetime | None = None
        self._hourly: dict[tuple[str, str], pd.Series] = {}
        self._score_cache: dict[tuple[str, int], tuple[tuple[float, float], ...]] = {}
        self._hour_of_week: tuple[int, dict[tuple[str, str], np.ndarray]] | None = None

    def history_changed(self) -> None:
        """Older data was written (a backfill, an import): re-read it and refit next time."""
        self._hourly.clear()
        self._last_refit_hour = None
        self._capacity_hour = None

    # ---- refits -------------------------------------------------------------------------

    def _hour(self, when: datetime) -> int:
        return local_hour_start_at(int(when.timestamp()), self.settings.timezone)

    def refit_due(self, when: datetime) -> bool:
        """True when a local hour has started since the last refit (or the interval passed)."""
        if self._last_refit_hour is None:
            return True
        interval = max(3600.0, self.settings.forecast.refit_interval_minutes * 60)
        return self._hour(when) - self._last_refit_hour >= interval

    def jobs(self, when: datetime, providers: Sequence[str]) -> list[FitJob]:
        """Read every series' history as of ``when`` (and prune, learn the knees): the part of
        a refit that needs the loop's lock."""
        hour = self._hour(when)
        if self._last_prune is None or when - self._last_prune >= PRUNE_EVERY:
            # Retention: each prune scans the minute tables, so not every hour.
            self.store.prune(int(when.timestamp()))
            self._last_prune = when
        fs = self.settings.forecast
        start = hour - fs.history_weeks * 7 * 86400
        reselect = timedelta(hours=fs.reselect_hours)
        exclude = tuple((w.start, w.end) for w in fs.exclude)
        jobs = []
        for provider in [*providers, ALL]:
            for signal in FORECAST_SIGNALS:
                if (signal == "latency_p95" and provider == ALL) or (signal == "demand_rate" and provider != ALL):
                    continue  # latency per provider only; the demand for all together only
                hist = self._hourly_history(signal, provider, start, hour)
                observed = hist.dropna()
                if len(observed) < 2:
                    continue
                key = (signal, provider)
                prior = self.forecasts.get(key)
                selection: Selection | None = None
                if prior is not None and prior.selected_at is not None and when - prior.selected_at < reselect:
                    selection = prior.fit.selection
                jobs.append(FitJob(
                    key=key, history=hist.loc[observed.index[0]:], horizon=fs.horizon_hours,
                    tz=self.settings.timezone, min_history=pd.Timedelta(days=fs.min_history_days),
                    weekly_history=pd.Timedelta(days=fs.weekly_history_days),
                    under_penalty=fs.under_penalty if signal in LOAD_SIGNALS else 1.0, coverage=fs.coverage,
                    backtest_days=fs.backtest_days, exclude=exclude, selection=selection,
                    decomposition=self.decompose,
                ))
        self._measure_knees(start, hour)
        self._learn_capacity(start, hour, providers)
        self._last_refit_hour = hour
        return jobs

    def apply(self, jobs: Sequence[FitJob], outcomes: Mapping[tuple[str, str], Fit | BaseException],
              when: datetime) -> dict[tuple[str, str], BaseException]:
        """Gate the new fits and keep them (under the loop's lock); returns the failures, whose
        series keep their last good forecast."""
        given = {job.key: job.selection for job in jobs}
        failures: dict[tuple[str, str], BaseException] = {}
        for key, outcome in outcomes.items():
            if isinstance(outcome, BaseException):
                failures[key] = outcome
                self._failed(key, outcome)
                continue
            old = given.get(key)
            reused = old is not None and outcome.selection is not None and outcome.selection.stage == old.stage
            sf = self._judge(outcome, when, self.forecasts.get(key), reused)
            self.forecasts[key] = sf
            self.past_fits.setdefault(key, deque(maxlen=PAST_FITS)).append(sf.made)
        return failures

    def _measure_knees(self, start: int, hour: int) -> None:
        pol = self.settings.policy
        for name, p in pol.providers.items():
            if p.measure_knee and p.capacity_rpm is None:
                knee = measured_knee(self._hourly_history("request_rate", name, start, hour),
                                     self._hourly_history("latency_p95", name, start, hour), pol.latency_slo_seconds)
                if knee != self.knees.get(name):
                    log.info("measured knee of %s: %s", name, "none" if knee is None else f"{knee:.0f} rpm")
                self.knees[name] = knee

    def _learn_capacity(self, start: int, hour: int, providers: Sequence[str]) -> None:
        if self._capacity_hour is not None and hour - self._capacity_hour < CAPACITY_EVERY.total_seconds():
            return
        self._capacity_hour = hour
        pol = self.settings.policy
        for name in providers:
            rate = self._hourly_history("request_rate", name, start, hour)
            if rate.dropna().empty:
                continue
            errors = (self._hourly_history("error_429_ratio", name, start, hour)
                      .add(self._hourly_history("error_5xx_ratio", name, start, hour), fill_value=0.0))
            self.capacity[name] = learn_capacity(
                rate * 60.0, self._hourly_history("latency_p95", name, start, hour), errors,
                tz=self.settings.timezone, slo_seconds=pol.latency_slo_seconds, error_budget=pol.error_budget,
                prior=self.capacity.get(name))

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
        return SeriesForecast(fit, when, code == ReasonCode.ForecastTrusted, code, message, selected_at)

    def _failed(self, key: tuple[str, str], exc: BaseException) -> None:
        reason = "timeout" if isinstance(exc, TimeoutError) else "error"
        self.metrics.refit_failures.labels(reason).inc()
        prior = self.forecasts.get(key)
        if prior is not None:
            self.forecasts[key] = replace(prior, failures=prior.failures + 1)
        log.warning("refit of %s/%s failed (%s: %s); keeping the last good forecast%s", key[0], key[1],
                    type(exc).__name__, exc, "" if prior is not None else " (there is none yet)")

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

    # ---- what the decide stage reads ----------------------------------------------------

    def learned(self, when: datetime) -> Learned:
        """This tick's snapshot: the forecasts, the knees, the score distributions."""
        routes = self.settings.policy.routes
        # The load check compares demand (net of retries) on both sides: the retries a routing
        # causes are not load the forecast failed to see, and the retries it cures are not a
        # forecast that missed.
        total = self.forecasts.get(("demand_rate", ALL))
        history = tuple(self.past_fits.get(("demand_rate", ALL), ())) if total is not None and total.trusted else ()
        return Learned(dict(self.forecasts), dict(self.knees), {name: self.score_cdf(name, when) for name in routes},
                       dict(self.capacity), history)

    def score_cdf(self, route: str, when: datetime) -> tuple[tuple[float, float], ...]:
        """The router's score distribution for ``route`` at this local hour of the week, merged
        over the same hour of the weeks kept (wall-clock weeks: DST-safe); cached per hour."""
        tz = ZoneInfo(self.settings.timezone)
        hour = datetime.fromtimestamp(self._hour(when), tz)
        key = (route, int(hour.timestamp()))
        if key in self._score_cache:
            return self._score_cache[key]
        cum: dict[float, float] = {}
        for w in range(1, self.settings.forecast.history_weeks + 1):
            start = int((hour - timedelta(weeks=w)).timestamp())  # wall-clock arithmetic on an aware datetime
            for h in self.store.hour_histograms("score", start, start + 3600):
                if is_route(h.key.route, route, self.settings):
                    for le, c in h.buckets.items():
                        cum[le] = cum.get(le, 0.0) + c
        total = cum.get(float("inf"), max(cum.values(), default=0.0))
        cdf: tuple[tuple[float, float], ...] = ()
        if total >= MIN_SCORE_SAMPLES:
            cdf = tuple((le, min(1.0, c / total)) for le, c in sorted(cum.items()) if math.isfinite(le))
        self._score_cache = {k: v for k, v in self._score_cache.items() if k[1] >= key[1]}
        self._score_cache[key] = cdf
        return cdf

    # ---- read side (the API and /metrics) -----------------------------------------------

    def forecasts_at(self, now: datetime, offsets: Sequence[int]) -> dict[tuple[str, str], dict[int, dict[str, float]]]:
        """Per forecast series and offset (seconds after ``now``), the forecast's ``mean``,
        ``lower`` and ``upper`` for the step containing that instant."""
        ts = int(now.timestamp())
        out: dict[tuple[str, str], dict[int, dict[str, float]]] = {}
        for key, sf in self.forecasts.items():
            rows = {offset: row for offset in offsets if (row := sf.made.row_at(ts + offset))}
            if rows:
                out[key] = rows
        return out

    def forecasts_made_ago(self, now: datetime, horizons: Sequence[int]
                           ) -> dict[tuple[str, str], dict[int, dict[str, float]]]:
        """Per forecast series and horizon (seconds), what the forecast in force that long
        before ``now`` said about now: forecast against actual, as it happens."""
        ts = int(now.timestamp())
        out: dict[tuple[str, str], dict[int, dict[str, float]]] = {}
        for key, past in self.past_fits.items():
            rows = {}
            for h in horizons:
                made = [m for m in past if m.fitted_at <= ts - h]
                if made and (row := made[-1].row_at(ts)):
                    rows[h] = row
            if rows:
                out[key] = rows
        return out

    def hour_of_week(self, now: datetime, providers: Sequence[str]) -> dict[tuple[str, str], np.ndarray]:
        """The typical week (median per local hour-of-week slot, 168 values, NaN where no
        data) of :data:`HOUR_OF_WEEK_SIGNALS`. Read from the hour rollups at most once per
        local hour, when asked (the ``/metrics`` scrape), never on the control path."""
        hour = self._hour(now)
        cached = self._hour_of_week
        if cached is not None and cached[0] == hour:
            return cached[1]
        tz = self.settings.timezone
        start = hour - int(self.settings.forecast.history_weeks * 7 * 86400)
        out: dict[tuple[str, str], np.ndarray] = {}
        for signal, per_provider in HOUR_OF_WEEK_SIGNALS.items():
            for provider in (providers if per_provider else [ALL]):
                series = hourly(self.store, signal, tz, start, hour, None if provider == ALL else provider)
                medians = profile(series, tz)["median"].to_numpy(dtype=float)
                if not np.isnan(medians).all():
                    out[(signal, provider)] = medians
        self._hour_of_week = (hour, out)
        return out
