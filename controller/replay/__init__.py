"""``diurnal replay``: what diurnal would have done on a stored history, and what it would
have changed (cost, SLO-risk minutes, 429s, shares), against what the router did, its static
weights and latency-based routing.

:func:`replay` walks the period through the controller (:mod:`.walk`, no look-ahead), then
estimates each policy's outcome (:mod:`.estimate`); :mod:`.report` prints and writes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from collectors.store import Store
from controller.decide import policy_config
from controller.errors import ConfigError
from controller.replay.estimate import Estimate, Reactive, estimate, learn_models
from controller.replay.walk import Walk, stderr_progress, walk
from controller.settings import Settings

__all__ = ["Replayed", "estimated", "replay", "stderr_progress"]

#: Under this much history before the period, the controller forecasts nothing (reactive only).
FORECAST_DAYS = 3


@dataclass
class Replayed:
    walk: Walk
    estimate: Estimate


def _day(ts: int, tz: str) -> str:
    from zoneinfo import ZoneInfo

    return f"{datetime.fromtimestamp(ts, UTC).astimezone(ZoneInfo(tz)):%Y-%m-%d %H:%M}"


def replay(settings: Settings, source: Store, since: datetime, until: datetime | None = None, *,
           pool_units: int | None = None, reactive: Reactive | None = None,
           progress: Callable[[str], None] | None = None) -> Replayed:
    """Walk ``[since, until)`` of ``source`` (``until`` None: its newest minute) and estimate
    every policy's outcome. Bad periods raise :class:`ConfigError` with one line."""
    tz = settings.timezone
    span = source.span()
    if span is None:
        raise ConfigError(f"the store in {source.path.parent} is empty: backfill or import history first")
    if source.tz != tz:
        raise ConfigError(f"the store's hours are rolled up in {source.tz}, the settings say timezone {tz}: replay "
                          f"with timezone {source.tz}, or run diurnal once with {tz} to rebuild the rollups")
    first, newest = span[0], span[1] + 60
    if source.hour_counters("requests", span[1], span[1] + 1) and not source.counters("requests", span[1], newest):
        newest = span[1] + 3600  # the newest data is an hour's rollup (its minutes expired)
    start = int(since.timestamp())
    end = int(until.timestamp()) if until is not None else newest
    caveats: list[str] = []
    if end > newest:
        caveats.append(f"the history ends at {_day(newest, tz)}: the period is cut there")
        end = newest
    if start < first:
        caveats.append(f"the history starts at {_day(first, tz)}: the period starts there")
        start = first
    if end <= start:
        raise ConfigError(f"nothing to replay: the store holds {_day(first, tz)} .. {_day(newest, tz)} ({tz}), and "
                          f"the period asked is outside it or empty")
    before = (start - first) / 86400
    if before < FORECAST_DAYS:
        caveats.append(f"diurnal had {before:.1f} days of history before the period: under {FORECAST_DAYS} it "
                       "forecasts nothing and decides on what it observes only")
    walked = walk(settings, source, start, end, progress=progress)
    if walked.walked == 0:
        raise ConfigError("the replay was interrupted before its first minute")
    est = estimated(settings, source, walked, first, pool_units=pool_units, reactive=reactive)
    est.caveats[:0] = caveats
    return Replayed(walked, est)


def estimated(settings: Settings, source: Store, walked: Walk, first: int, *, pool_units: int | None = None,
              reactive: Reactive | None = None) -> Estimate:
    """Every policy's outcome over ``walked``, from each provider's model learned on the
    store's hours (``forecast.history_weeks`` before the period, not before ``first``)."""
    config = policy_config(settings.policy, walked.providers, {})
    history_start = walked.start - int(timedelta(weeks=settings.forecast.history_weeks).total_seconds())
    models = learn_models(source, config, walked.providers, tz=settings.timezone, start=max(first, history_start),
                          end=walked.end)
    return estimate(walked, models, config, tz=settings.timezone, pool_units=pool_units, reactive=reactive)
