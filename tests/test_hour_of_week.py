"""Hour-of-week slots in local wall time, across both 2026 US DST transitions."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from collectors.hour_of_week import (
    local_hour_start_at,
    profile,
    slot,
    slot_name,
    slots,
)

NY = ZoneInfo("America/New_York")


@pytest.mark.parametrize(
    ("before_utc", "after_utc"),
    [
        # Spring forward 2026-03-08: Monday 09:00 EST is 14:00 UTC, Monday 09:00 EDT is 13:00 UTC.
        pytest.param(datetime(2026, 3, 2, 14, tzinfo=UTC), datetime(2026, 3, 9, 13, tzinfo=UTC), id="dst-spring-forward"),
        # Fall back 2026-11-01: Monday 09:00 EDT is 13:00 UTC, Monday 09:00 EST is 14:00 UTC.
        pytest.param(datetime(2026, 10, 26, 13, tzinfo=UTC), datetime(2026, 11, 2, 14, tzinfo=UTC), id="dst-fall-back"),
    ],
)
def test_monday_nine_is_the_same_slot_on_both_sides(before_utc: datetime, after_utc: datetime) -> None:
    tz = "America/New_York"
    assert slot(before_utc, tz) == slot(after_utc, tz) == 9
    assert slot_name(9) == "Mon 09:00"
    idx = pd.DatetimeIndex([before_utc, after_utc])
    assert slots(idx, tz).tolist() == [9, 9]
    # A fixed 168-hour lag would land an hour off after the transition:
    shifted = before_utc + pd.Timedelta(hours=168)
    assert slot(shifted, tz) != 9


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        slot(datetime(2026, 3, 9, 9), "America/New_York")  # noqa: DTZ001


@pytest.mark.parametrize(
    ("day", "hours"),
    [pytest.param("2026-03-08", 23, id="23-hour-day"), pytest.param("2026-11-01", 25, id="25-hour-day"),
     pytest.param("2026-06-01", 24, id="ordinary-day")],
)
def test_local_hour_buckets_on_dst_days(day: str, hours: int) -> None:
    start = pd.Timestamp(day, tz="America/New_York")
    end = start + pd.DateOffset(days=1)  # a calendar day: local midnight to local midnight
    minutes = np.arange(int(start.timestamp()), int(end.timestamp()), 60)
    buckets = np.unique([local_hour_start_at(int(m), "America/New_York") for m in minutes])
    assert len(buckets) == hours
    assert all(local_hour_start_at(int(b), "America/New_York") == b for b in buckets)


def test_half_hour_timezone_buckets_align_to_local_hours() -> None:
    ts = int(datetime(2026, 1, 5, 4, 10, tzinfo=UTC).timestamp())  # 09:40 in Kolkata (+05:30)
    start = local_hour_start_at(ts, "Asia/Kolkata")
    assert datetime.fromtimestamp(start, ZoneInfo("Asia/Kolkata")).strftime("%H:%M") == "09:00"


def test_profile_across_the_autumn_change_keeps_monday_nine() -> None:
    # Hourly series over three weeks around 2026-11-01 with a spike at 09:00 local on Mondays.
    idx = pd.date_range("2026-10-19", "2026-11-09 23:00", freq="h", tz="America/New_York").tz_convert("UTC")
    local = idx.tz_convert("America/New_York")
    values = np.where((local.day_of_week == 0) & (local.hour == 9), 10.0, 1.0)
    prof = profile(pd.Series(values, index=idx), "America/New_York")
    assert prof.loc[9, "median"] == 10.0
    assert prof.loc[9, "weeks"] == 4
    assert prof.loc[8, "median"] == 1.0 and prof.loc[10, "median"] == 1.0
    assert prof.loc[9, "deviation"] == pytest.approx(9.0)
    # Sunday 01:00 occurs twice on 2026-11-01 but belongs to one week.
    assert prof.loc[6 * 24 + 1, "weeks"] == 3


def test_profile_of_empty_series() -> None:
    prof = profile(pd.Series([], index=pd.DatetimeIndex([], tz="UTC"), dtype=float), "UTC")
    assert len(prof) == 168 and (prof["weeks"] == 0).all()
