"""Prices, as settings: what a provider charges (per 1M input and output tokens, per request)
and local-time windows that scale it (off-peak discounts).

These are nested groups of :class:`controller.settings.Settings` (``policy.providers.<name>.price``);
validation names the field. Windows are checked against each other (no overlap in the week)
here, and against the operator's timezone (no start or end inside a DST gap) by the settings
root, which knows the timezone: :func:`dst_gap_problem`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["WEEKDAYS", "Price", "PriceWindowSettings", "dst_gap_problem"]

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEK = 7 * 24 * 60
#: A 24-hour wall-clock time (a plain pattern, so the chart's values schema checks it too).
_HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


def _wall(hhmm: str) -> time:
    hours, minutes = hhmm.split(":")
    return time(int(hours), int(minutes))


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PriceWindowSettings(_Group):
    """A recurring local-time window in which the provider's prices are multiplied by ``factor``."""

    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS), min_length=1,
                                description="Local weekdays the window starts on (mon .. sun). Default: every day.")
    start: str = Field(pattern=_HHMM, description="Local wall-clock start, HH:MM (24-hour).")
    end: str = Field(pattern=_HHMM, description="Local wall-clock end (exclusive), HH:MM; before start, the window "
                                                "runs past midnight into the next day; equal to start, a whole day.")
    factor: float = Field(gt=0, allow_inf_nan=False,
                          description="Multiplies every price of the provider inside the window (0.5: half price).")

    @model_validator(mode="after")
    def _days_once(self) -> PriceWindowSettings:
        if len(set(self.days)) != len(self.days):
            raise ValueError("a weekday is listed twice in days")
        return self

    def minutes_of_week(self) -> list[tuple[int, int]]:
        """The window as [start, end) minutes from Monday 00:00 local, one span per day (an
        end past the week's end wraps to its start)."""
        first, last = _wall(self.start), _wall(self.end)
        s, e = first.hour * 60 + first.minute, last.hour * 60 + last.minute
        length = (e - s) % (24 * 60) or 24 * 60
        out: list[tuple[int, int]] = []
        for d in self.days:
            begin = WEEKDAYS.index(d) * 24 * 60 + s
            stop = begin + length
            out += [(begin, min(stop, _WEEK))] + ([(0, stop - _WEEK)] if stop > _WEEK else [])
        return out


class Price(_Group):
    """What one request to the provider costs. At least one of the three prices is set."""

    input_per_million_tokens: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="USD per 1 million input (prompt) tokens.")
    output_per_million_tokens: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="USD per 1 million output (completion) tokens.")
    per_request: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="USD per request, on top of any token prices.")
    windows: list[PriceWindowSettings] = Field(
        default_factory=list, description="Local-time windows that scale these prices (off-peak discounts). They "
                                          "may not overlap.")

    @model_validator(mode="after")
    def _complete(self) -> Price:
        if self.input_per_million_tokens is None and self.output_per_million_tokens is None \
                and self.per_request is None:
            raise ValueError("a price needs input_per_million_tokens, output_per_million_tokens or per_request "
                             "(leave price out for a provider planned by latency only)")
        spans = [(i, a, b) for i, w in enumerate(self.windows) for a, b in w.minutes_of_week()]
        for i, a, b in spans:
            for j, c, d in spans:
                if i < j and a < d and c < b:
                    at = max(a, c)
                    raise ValueError(f"windows[{i}] and windows[{j}] overlap from {WEEKDAYS[at // 1440]} "
                                     f"{at % 1440 // 60:02d}:{at % 60:02d}")
        return self


def dst_gap_problem(window: PriceWindowSettings, tz: str, *, years: int = 4, today: date | None = None) -> str | None:
    """Why ``window`` cannot be honoured in ``tz``: its start or end is a wall-clock time that
    does not exist on a day the clocks jump forward (looked at over ``years`` years from
    ``today``), or None."""
    zone = ZoneInfo(tz)
    first = today or date(2026, 1, 1)
    for n in range(years * 366):
        day = first + timedelta(days=n)
        midnight = datetime(day.year, day.month, day.day, tzinfo=zone)
        if midnight.utcoffset() == (midnight + timedelta(days=1)).utcoffset():
            continue  # no transition that day (offsets compared across it)
        for name, hhmm in (("start", window.start), ("end", window.end)):
            local = datetime.combine(day, _wall(hhmm), tzinfo=zone)
            if local.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != local.replace(tzinfo=None):
                return (f"{name} {hhmm} does not exist in {tz} on {day:%Y-%m-%d} (the clocks jump forward "
                        f"over it); pick a time outside the skipped hour")
    return None
