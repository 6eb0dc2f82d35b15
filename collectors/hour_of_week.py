"""Hour-of-week slots in the operator's timezone, DST-correct.

A slot is ``weekday * 24 + local hour`` (Monday 00:00 is slot 0). Every timestamp is turned
into local wall time first, so "Monday 09:00 New York" is the same slot in EST and EDT. On
the 23-hour day the skipped hour's slot simply gets no value that day; on the 25-hour day the
repeated hour contributes two hourly values to its slot.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
SLOTS = 168


def slot(ts: datetime, tz: str) -> int:
    """The hour-of-week slot of an aware datetime."""
    if ts.tzinfo is None:
        raise ValueError("slot() needs a timezone-aware datetime (store UTC, pass aware values)")
    local = ts.astimezone(ZoneInfo(tz))
    return local.weekday() * 24 + local.hour


def slot_name(s: int) -> str:
    return f"{WEEKDAYS[s // 24]} {s % 24:02d}:00"


def slots(index: pd.DatetimeIndex, tz: str) -> np.ndarray:
    """Vectorised :func:`slot` for an aware DatetimeIndex."""
    local = index.tz_convert(tz)
    return np.asarray(local.day_of_week * 24 + local.hour, dtype=np.int64)


def local_hour_start_at(ts: int, tz: str) -> int:
    """For a Unix-second timestamp, the Unix second at which its local hour began.

    Computed from the local minute and second, so it is right in half-hour zones and on both
    sides of a DST change (the repeated hour gives two distinct buckets).
    """
    local = datetime.fromtimestamp(ts, ZoneInfo(tz))
    return ts - local.minute * 60 - local.second


def profile(series: pd.Series, tz: str) -> pd.DataFrame:
    """Hour-of-week profile of an hourly series with an aware index.

    One row per slot (0..167) with ``median``, ``p10``, ``p90``, ``weeks`` (how many distinct
    local weeks have a value in the slot) and ``deviation`` (median relative to the median of
    the slot medians; 0.45 means 45% above the typical hour).
    """
    values = series.dropna()
    out = pd.DataFrame(index=pd.RangeIndex(SLOTS, name="slot"), columns=["median", "p10", "p90", "weeks", "deviation"], dtype=float)
    if values.empty:
        out["weeks"] = 0
        return out
    local = values.index.tz_convert(tz)
    frame = pd.DataFrame(
        {
            "value": values.to_numpy(dtype=float),
            "slot": slots(values.index, tz),
            "week": (local.tz_localize(None).normalize() - pd.to_timedelta(local.day_of_week, unit="D")).asi8,
        }
    )
    grouped = frame.groupby("slot")["value"]
    out["median"] = grouped.median()
    out["p10"] = grouped.quantile(0.1)
    out["p90"] = grouped.quantile(0.9)
    out["weeks"] = frame.groupby("slot")["week"].nunique()
    out["weeks"] = out["weeks"].fillna(0)
    typical = float(np.nanmedian(out["median"].to_numpy(dtype=float)))
    if typical != 0 and np.isfinite(typical):
        out["deviation"] = out["median"] / typical - 1.0
    return out


def profile_cells(prof: pd.DataFrame) -> list[dict[str, object]]:
    """A profile as JSON-ready cells: weekday, hour, median, p10, p90 (None when empty), weeks."""
    def num(v: object) -> float | None:
        f = float(v)  # type: ignore[arg-type]
        return None if np.isnan(f) else f

    return [
        {"weekday": WEEKDAYS[int(i) // 24], "hour": int(i) % 24, "median": num(r["median"]), "p10": num(r["p10"]),
         "p90": num(r["p90"]), "weeks": int(r["weeks"])}
        for i, r in prof.iterrows()
    ]
