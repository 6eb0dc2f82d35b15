"""The store's tables and its batched writes to them (:mod:`collectors.store` holds the
connection, the transactions, the schema's migrations and the reads).

Two resolutions per series, written in the same statements: ``minute_*`` (1-minute deltas)
and ``hour_*`` (the local-hour rollups of the store's timezone, keyed by the UTC instant the
local hour began, with the minutes merged in). An upsert adds to what is stored, unless the
sum would overflow: a number that is not finite never reaches a table.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from collectors.hour_of_week import local_hour_start_at
from collectors.intervals import MinuteCell
from collectors.journal import decode_buckets, encode_buckets
from collectors.mapping import SeriesKey

__all__ = ["MAX_FLOAT", "SCHEMA_V1", "SCHEMA_V2", "CounterPoint", "HistPoint", "Tables", "copy_cell", "finite_cell"]

MAX_FLOAT = 1.7976931348623157e308
#: An upsert's sum, unless it would overflow: then the stored value stays (the increment is
#: dropped, and the store stays finite).
_FINITE_SUM = f"CASE WHEN abs(value + excluded.value) <= {MAX_FLOAT!r} THEN value + excluded.value ELSE value END"
_KEYS_PER_QUERY = 400  # (series, ts) pairs per lookup: 800 bound parameters

SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    signal TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL, route TEXT NOT NULL,
    UNIQUE (signal, provider, model, route)
);
CREATE TABLE IF NOT EXISTS minute_counter (
    series_id INTEGER NOT NULL REFERENCES series(id), ts INTEGER NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS minute_hist (
    series_id INTEGER NOT NULL REFERENCES series(id), ts INTEGER NOT NULL,
    count REAL NOT NULL, sum REAL NOT NULL, buckets BLOB NOT NULL,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;
"""

SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS hour_counter (
    series_id INTEGER NOT NULL REFERENCES series(id), ts INTEGER NOT NULL,
    value REAL NOT NULL, minutes INTEGER NOT NULL,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hour_hist (
    series_id INTEGER NOT NULL REFERENCES series(id), ts INTEGER NOT NULL,
    count REAL NOT NULL, sum REAL NOT NULL, buckets BLOB NOT NULL, minutes INTEGER NOT NULL,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;
"""


def finite_cell(cell: MinuteCell) -> bool:
    """Whether every number of ``cell`` is finite (a bucket's ``le`` may be +Inf)."""
    # A sum of finite numbers is finite unless it overflows (then it is refused too, safely);
    # one sum instead of a test per bucket: a fleet's minute has thousands of histograms.
    buckets = cell.buckets
    return (math.isfinite(cell.value + cell.count + cell.sum + (sum(buckets.values()) if buckets else 0.0))
            and not any(le != le for le in buckets))  # a NaN bound is never equal to itself


@dataclass(frozen=True)
class CounterPoint:
    ts: int
    key: SeriesKey
    value: float
    minutes: int = 1


@dataclass(frozen=True)
class HistPoint:
    ts: int
    key: SeriesKey
    count: float
    sum: float
    buckets: dict[float, float]
    minutes: int = 1


def copy_cell(cell: MinuteCell) -> MinuteCell:
    return MinuteCell(value=cell.value, count=cell.count, sum=cell.sum, buckets=dict(cell.buckets))


class Tables:
    """Batched upserts into the minute tables and their hour rollups, on the store's write
    connection (inside the store's transaction: nothing here commits)."""

    def __init__(self, conn: sqlite3.Connection, tz: str) -> None:
        self.conn = conn
        self.tz = tz

    def stored(self, table: str, columns: str, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], tuple[Any, ...]]:
        """The stored ``columns`` of ``table`` for those (series, ts) keys that have a row."""
        keys = list(keys)
        found: dict[tuple[int, int], tuple[Any, ...]] = {}
        for i in range(0, len(keys), _KEYS_PER_QUERY):
            chunk = keys[i:i + _KEYS_PER_QUERY]
            sql = (f"WITH k(sid, at) AS (VALUES {','.join(['(?,?)'] * len(chunk))}) "
                   f"SELECT t.series_id, t.ts, {columns} FROM k JOIN {table} t ON t.series_id = k.sid AND t.ts = k.at")
            for sid, ts, *rest in self.conn.execute(sql, [v for key in chunk for v in key]):
                found[(sid, ts)] = tuple(rest)
        return found

    def _hour_of(self) -> Callable[[int], int]:
        """``local_hour_start_at`` memoised for one batch (its rows share few minutes)."""
        memo: dict[int, int] = {}

        def hour(ts: int) -> int:
            h = memo.get(ts)
            if h is None:
                h = memo[ts] = local_hour_start_at(ts, self.tz)
            return h
        return hour

    def put_counters(self, counters: dict[tuple[int, int], float], *, rollup_only: bool = False) -> None:
        if not counters:
            return
        existing = set() if rollup_only else self.stored("minute_counter", "1", counters)
        if not rollup_only:
            self.conn.executemany(
                "INSERT INTO minute_counter(series_id, ts, value) VALUES(?,?,?) "
                f"ON CONFLICT(series_id, ts) DO UPDATE SET value = {_FINITE_SUM}",
                [(sid, ts, value) for (sid, ts), value in counters.items()],
            )
        hour = self._hour_of()
        hours: dict[tuple[int, int], list[float]] = {}
        for (sid, ts), value in counters.items():
            acc = hours.setdefault((sid, hour(ts)), [0.0, 0])
            if math.isfinite(acc[0] + value):  # else the hour keeps what it had (and stays finite)
                acc[0] += value
            acc[1] += (sid, ts) not in existing
        self.conn.executemany(
            "INSERT INTO hour_counter(series_id, ts, value, minutes) VALUES(?,?,?,?) "
            f"ON CONFLICT(series_id, ts) DO UPDATE SET value = {_FINITE_SUM}, "
            "minutes = minutes + excluded.minutes",
            [(sid, h, value, int(minutes)) for (sid, h), (value, minutes) in hours.items()],
        )

    def put_hists(self, hists: dict[tuple[int, int], MinuteCell], *, rollup_only: bool = False) -> None:
        if not hists:
            return
        old = {} if rollup_only else self.stored("minute_hist", "t.count, t.sum, t.buckets", hists)
        hour = self._hour_of()
        hours: dict[tuple[int, int], tuple[MinuteCell, list[int]]] = {}
        for (sid, ts), cell in hists.items():
            at = (sid, hour(ts))
            acc = hours.get(at)
            if acc is None:
                hours[at] = (copy_cell(cell), [int((sid, ts) not in old)])
            else:
                acc[0].merge(cell)
                acc[1][0] += (sid, ts) not in old
        if not rollup_only:
            for at, (count, total, blob) in old.items():
                hists[at].merge(MinuteCell(count=count, sum=total, buckets=decode_buckets(blob)))
            self.conn.executemany(
                "INSERT OR REPLACE INTO minute_hist(series_id, ts, count, sum, buckets) VALUES(?,?,?,?,?)",
                # A merge that overflowed keeps the stored row (the increment is dropped).
                [(sid, ts, c.count, c.sum, encode_buckets(c.buckets)) for (sid, ts), c in hists.items()
                 if finite_cell(c)],
            )
        for at, (count, total, blob, minutes) in self.stored("hour_hist", "t.count, t.sum, t.buckets, t.minutes",
                                                              hours).items():
            cell, new = hours[at]
            cell.merge(MinuteCell(count=count, sum=total, buckets=decode_buckets(blob)))
            new[0] += int(minutes)
        self.conn.executemany(
            "INSERT OR REPLACE INTO hour_hist(series_id, ts, count, sum, buckets, minutes) VALUES(?,?,?,?,?,?)",
            [(sid, h, c.count, c.sum, encode_buckets(c.buckets), m[0]) for (sid, h), (c, m) in hours.items()
             if finite_cell(c)],
        )

    def rebuild_hours(self) -> None:
        first = self.conn.execute("SELECT MIN(ts) FROM minute_counter").fetchone()[0]
        first_h = self.conn.execute("SELECT MIN(ts) FROM minute_hist").fetchone()[0]
        starts = [t for t in (first, first_h) if t is not None]
        if not starts:
            return
        lo = min(starts)
        self.conn.execute("DELETE FROM hour_counter WHERE ts >= ?", (local_hour_start_at(lo, self.tz),))
        self.conn.execute("DELETE FROM hour_hist WHERE ts >= ?", (local_hour_start_at(lo, self.tz),))
        counters = {(sid, ts): value for sid, ts, value in
                    self.conn.execute("SELECT series_id, ts, value FROM minute_counter")}
        self.put_counters(counters, rollup_only=True)
        hists = {(sid, ts): MinuteCell(count=count, sum=total, buckets=decode_buckets(blob))
                 for sid, ts, count, total, blob in
                 self.conn.execute("SELECT series_id, ts, count, sum, buckets FROM minute_hist")}
        self.put_hists(hists, rollup_only=True)
