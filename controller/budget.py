"""What a route's day plan reads (:mod:`policies.budget`): its spend since local midnight and
since the first of the month, and the hours left of the local day with the requests each is
forecast to bring, its score distribution and the price windows on either model's cost.

- **spend** is the router's own spend counter (``spend``) of the series labelled with the
  route (unlabelled series count for the only route configured). Complete local hours are
  read once from the hour rollups and kept; the current hour from its minutes, every tick.
  A route whose router exports no spend for it is *estimated* from its requests at the
  configured costs per request and its baseline escalation, and the plan says so;
- **hours left**: the trusted forecast of the total request rate (its mean, per step) times
  the route's ``traffic_share``, for the part of each hour still to come; hours past the
  forecast's end, or all of them without a trusted forecast, take the load observed now;
- **a day's requests** (a monthly budget's share for today): the next 24 hours of the same.
"""

from __future__ import annotations

import bisect
import calendar
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from collectors.hour_of_week import local_hour_start_at
from collectors.store import Store
from controller.collect import is_route
from controller.settings import RoutePolicy, Settings
from policies import LoadPoint, PolicyConfig, RouteHour

__all__ = ["RouteSpend", "SpendLedger", "budget_hours", "day_bounds"]


@dataclass(frozen=True)
class RouteSpend:
    today: float
    month: float
    #: From the router's spend counter (else estimated from requests at the configured costs).
    measured: bool


def day_bounds(when: datetime, tz: str) -> tuple[datetime, datetime, datetime, int]:
    """Local midnight today, local midnight tomorrow, the first of the month (local), and
    the whole days left in the month after today."""
    local = when.astimezone(ZoneInfo(tz))
    midnight = datetime(local.year, local.month, local.day, tzinfo=local.tzinfo)
    tomorrow = datetime.combine((midnight + timedelta(days=1)).date(), midnight.time(), tzinfo=local.tzinfo)
    first = datetime(local.year, local.month, 1, tzinfo=local.tzinfo)
    days = calendar.monthrange(local.year, local.month)[1] - local.day
    return midnight, tomorrow, first, days


class SpendLedger:
    """Spend per route over today and this month, from the store (see the module docstring)."""

    def __init__(self, settings: Settings, store: Store, *, stored: Callable[[], object] = lambda: None) -> None:
        """``stored`` waits until the minutes closed so far are in the store (the service's
        writer thread, :mod:`controller.writer`): today's spend is read from it, and the
        complete hours once an hour."""
        self.settings = settings
        self.store = store
        self._stored = stored
        #: The complete hours' sums per signal, read once an hour: ((month start, midnight,
        #: hour they run to), signal -> (per route (month before today, today), routes seen)).
        self._hours: tuple[tuple[int, int, int], dict[str, tuple[dict[str, tuple[float, float]], set[str]]]] | None = None

    def spent(self, when: datetime, routes: Mapping[str, RoutePolicy]) -> dict[str, RouteSpend]:
        self._stored()
        tz = self.settings.timezone
        midnight, _, first, _ = day_bounds(when, tz)
        now = int(when.timestamp())
        hour = local_hour_start_at(now, tz)
        month, day = int(first.timestamp()), int(midnight.timestamp())
        if self._hours is None or self._hours[0] != (month, day, hour):
            self._hours = ((month, day, hour), {})
        complete = self._hours[1]

        def sums(signal: str) -> tuple[dict[str, tuple[float, float]], set[str]]:
            """Per route (month before today, today) of ``signal`` up to now, and the routes seen."""
            if signal not in complete:
                complete[signal] = self._sums(signal, routes, month, day, hour, hourly=True)
            hours, seen = complete[signal]
            minutes, now_seen = self._sums(signal, routes, hour, hour, now + 60)
            return ({n: (hours.get(n, (0.0, 0.0))[0], hours.get(n, (0.0, 0.0))[1] + minutes.get(n, (0.0, 0.0))[1])
                     for n in routes}, seen | now_seen)

        spend, seen = sums("spend")
        out: dict[str, RouteSpend] = {}
        requests: dict[str, tuple[float, float]] | None = None
        for name, r in routes.items():
            if name in seen:
                before, today = spend[name]
                out[name] = RouteSpend(today, before + today, True)
                continue
            if requests is None:  # no spend for it: its requests at the configured costs
                requests, _ = sums("requests")
            per_request = r.weak_cost_per_request + r.baseline_fraction * (r.strong_cost_per_request
                                                                           - r.weak_cost_per_request)
            before, today = (v * per_request for v in requests[name])
            out[name] = RouteSpend(today, before + today, False)
        return out

    def _sums(self, signal: str, routes: Mapping[str, RoutePolicy], start: int, day: int, end: int, *,
              hourly: bool = False) -> tuple[dict[str, tuple[float, float]], set[str]]:
        """Per route, ``signal`` summed over ``[start, day)`` and ``[day, end)``, from the hour
        rollups (``hourly``: complete hours) or the minutes. Series without a route label
        count for the only route configured, at its traffic share."""
        points = self.store.hour_counters(signal, start, end) if hourly else self.store.counters(signal, start, end)
        sums: dict[str, tuple[float, float]] = {}
        seen: set[str] = set()
        for p in points:
            for name, r in routes.items():
                if not is_route(p.key.route, name, self.settings):
                    continue
                value = p.value * (r.traffic_share if not p.key.route else 1.0)
                before, today = sums.get(name, (0.0, 0.0))
                sums[name] = (before + value, today) if p.ts < day else (before, today + value)
                seen.add(name)
        return sums, seen


def budget_hours(when: datetime, tz: str, name: str, route: RoutePolicy, config: PolicyConfig,
                 forecast: Sequence[LoadPoint], observed_rpm: float | None,
                 score_cdf: Callable[[str, datetime], Sequence[tuple[float, float]]] | None
                 ) -> tuple[tuple[RouteHour, ...], float]:
    """The hours left of the local day for route ``name``, and the requests a whole day
    brings. ``observed_rpm`` is the total load observed now; ``score_cdf(route, at)`` the
    score distribution of the hour of the week containing ``at``."""
    _, tomorrow, _, _ = day_bounds(when, tz)
    share = route.traffic_share

    starts = [p.at for p in forecast]
    step = forecast[1].at - forecast[0].at if len(forecast) > 1 else timedelta(hours=1)

    def rpm_at(at: datetime) -> float:
        """The forecast's mean for the step containing ``at``; past its end, the load now."""
        i = bisect.bisect_right(starts, at) - 1
        if i >= 0 and at < forecast[i].at + step:
            return forecast[i].mean_rpm * share
        return (observed_rpm or 0.0) * share

    strong = config.providers.get(route.strong_provider or "")
    price = strong.price if strong is not None else None
    hours: list[RouteHour] = []
    start = datetime.fromtimestamp(local_hour_start_at(int(when.timestamp()), tz), ZoneInfo(tz))
    at = start
    while at < tomorrow:
        nxt = min(tomorrow, datetime.fromtimestamp(at.timestamp() + 3600, ZoneInfo(tz)))
        begin = max(at, when)
        minutes = (nxt - begin).total_seconds() / 60.0
        if minutes > 0:
            hours.append(RouteHour(at=at, requests=rpm_at(begin) * minutes,
                                   strong_price_factor=price.factor_at(begin, tz) if price is not None else 1.0))
        at = nxt
    # Score distributions latest first: the fit stage's cache keeps the hours from the one asked on.
    cdfs = {h.at: score_cdf(name, h.at) if score_cdf is not None else () for h in reversed(hours)}
    hours = [RouteHour(h.at, h.requests, cdfs[h.at], h.strong_price_factor) for h in hours]
    day = sum(rpm_at(when + timedelta(hours=k)) * 60.0 for k in range(24))
    return tuple(hours), day
