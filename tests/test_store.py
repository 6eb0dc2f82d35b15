"""The embedded store: rollups, fill-only writes, retention, migrations."""

from __future__ import annotations

import math
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from collectors.errors import StoreError
from collectors.intervals import MinuteCell, MinuteRow
from collectors.mapping import SeriesKey
from collectors.signals import hourly
from collectors.store import SCHEMA_VERSION, Store

REQ = SeriesKey("requests", "openai", "gpt-4o", "chat")
LAT = SeriesKey("latency", "openai", "gpt-4o", "chat")
T0 = int(datetime(2026, 11, 9, 14, tzinfo=UTC).timestamp())  # 09:00 New York


def counter_rows(start: int, minutes: int, value: float = 1.0, key: SeriesKey = REQ) -> list[MinuteRow]:
    return [MinuteRow(start + 60 * i, key, MinuteCell(value=value)) for i in range(minutes)]


def test_hour_rollups_equal_the_minutes(tmp_path: Path) -> None:
    store = Store(tmp_path, tz="America/New_York")
    store.write(counter_rows(T0, 150, 2.0))
    store.write([MinuteRow(T0 + 60 * i, LAT, MinuteCell(count=1, sum=1.5, buckets={1.0: 0, 2.0: 1, math.inf: 1}))
                 for i in range(150)])
    hours = store.hour_counters("requests", 0, 2**40)
    assert [(h.ts - T0, h.value, h.minutes) for h in hours] == [(0, 120.0, 60), (3600, 120.0, 60), (7200, 60.0, 30)]
    hh = store.hour_histograms("latency", 0, 2**40)
    assert [h.count for h in hh] == [60, 60, 30]
    rate = hourly(store, "request_rate", "America/New_York", T0, T0 + 3 * 3600)
    assert rate.tolist() == pytest.approx([2 / 60] * 3)  # a partial hour is a rate over its minutes
    store.close()


def test_hour_totals_sum_every_series_of_a_provider_in_the_store(tmp_path: Path) -> None:
    """The refit's reads: summed per hour by SQLite (counters) and in one array per hour
    (histograms that share their bounds), equal to adding the series' rollups one by one,
    and merged bucket by bucket where the bounds differ."""
    store = Store(tmp_path, tz="America/New_York")
    other = SeriesKey("requests", "openai", "gpt-4o-mini", "chat")
    elsewhere = SeriesKey("requests", "anthropic", "claude", "chat")
    store.write(counter_rows(T0, 90, 2.0) + counter_rows(T0 + 1800, 60, 3.0, other)
                + counter_rows(T0, 60, 100.0, elsewhere))
    mini = SeriesKey("latency", "openai", "gpt-4o-mini", "chat")
    coarse = SeriesKey("latency", "openai", "legacy", "chat")
    store.write([MinuteRow(T0 + 60 * i, LAT, MinuteCell(count=2, sum=3, buckets={1.0: 1, 2.0: 2, math.inf: 2}))
                 for i in range(90)]
                + [MinuteRow(T0 + 60 * i, mini, MinuteCell(count=1, sum=0.5, buckets={1.0: 1, 2.0: 1, math.inf: 1}))
                   for i in range(60)]
                + [MinuteRow(T0 + 3600, coarse, MinuteCell(count=4, sum=9, buckets={5.0: 4, math.inf: 4}))])
    totals = store.hour_counter_totals("requests", 0, 2**40, "openai")
    assert [(ts - T0, v, n) for ts, v, n in totals] == [(0, 120.0 + 90.0, 60), (3600, 60.0 + 90.0, 30)]
    assert [v for _, v, _ in store.hour_counter_totals("requests", 0, 2**40)] == [210.0 + 6000.0, 150.0]
    assert store.hour_counter_totals("requests", 0, 2**40, "nobody") == []
    hists = dict(store.hour_histogram_totals("latency", 0, 2**40, "openai"))
    assert hists[T0] == {1.0: 120.0, 2.0: 180.0, math.inf: 180.0}             # one array sum
    assert hists[T0 + 3600] == {1.0: 30.0, 2.0: 60.0, 5.0: 4.0, math.inf: 64.0}  # bounds differ
    p95 = hourly(store, "latency_p95", "America/New_York", T0, T0 + 7200, "openai")
    assert p95.notna().all()
    store.close()


def test_a_second_write_to_the_same_minute_adds_without_extra_coverage(tmp_path: Path) -> None:
    store = Store(tmp_path, tz="UTC")
    store.write(counter_rows(T0, 1, 3.0))
    store.write(counter_rows(T0, 1, 4.0))
    [m] = store.counters("requests", 0, 2**40)
    [h] = store.hour_counters("requests", 0, 2**40)
    assert m.value == 7.0 and (h.value, h.minutes) == (7.0, 1)
    store.close()


def test_fill_only_never_counts_an_hour_twice(tmp_path: Path) -> None:
    store = Store(tmp_path, tz="UTC")
    store.write(counter_rows(T0 + 3600, 30, 1.0))              # scraped: the second hour, half
    written = store.write(counter_rows(T0, 180, 5.0), fill_only=True)  # backfill over three hours
    assert written == 120                                      # first and third hours only
    hours = {h.ts - T0: (h.value, h.minutes) for h in store.hour_counters("requests", 0, 2**40)}
    assert hours == {0: (300.0, 60), 3600: (30.0, 30), 7200: (300.0, 60)}
    assert store.write(counter_rows(T0, 180, 5.0), fill_only=True) == 0  # a second backfill adds nothing
    store.close()


def test_retention_drops_old_minutes_then_old_hours(tmp_path: Path) -> None:
    store = Store(tmp_path, tz="UTC", minute_retention=3600, hour_retention=3 * 3600)
    store.write(counter_rows(T0, 240, 1.0))
    dropped_minutes, dropped_hours = store.prune(T0 + 4 * 3600)
    assert dropped_minutes == 180 and dropped_hours == 1
    assert len(store.counters("requests", 0, 2**40)) == 60
    assert [h.ts - T0 for h in store.hour_counters("requests", 0, 2**40)] == [3600, 7200, 10800]
    store.close()


def test_v1_store_is_migrated_with_rollups(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "diurnal.db")
    conn.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE series (id INTEGER PRIMARY KEY, signal TEXT NOT NULL, provider TEXT NOT NULL,
            model TEXT NOT NULL, route TEXT NOT NULL, UNIQUE (signal, provider, model, route));
        CREATE TABLE minute_counter (series_id INTEGER NOT NULL, ts INTEGER NOT NULL, value REAL NOT NULL,
            PRIMARY KEY (series_id, ts)) WITHOUT ROWID;
        CREATE TABLE minute_hist (series_id INTEGER NOT NULL, ts INTEGER NOT NULL, count REAL NOT NULL,
            sum REAL NOT NULL, buckets BLOB NOT NULL, PRIMARY KEY (series_id, ts)) WITHOUT ROWID;
        INSERT INTO meta VALUES ('schema_version', '1');
        INSERT INTO series VALUES (1, 'requests', 'openai', 'gpt-4o', 'chat');
    """)
    conn.executemany("INSERT INTO minute_counter VALUES (1, ?, 2.0)", [(T0 + 60 * i,) for i in range(90)])
    conn.commit()
    conn.close()
    store = Store(tmp_path, tz="UTC")
    assert [(h.value, h.minutes) for h in store.hour_counters("requests", 0, 2**40)] == [(120.0, 60), (60.0, 30)]
    store.close()
    assert sqlite3.connect(tmp_path / "diurnal.db").execute(
        "SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    Store(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "diurnal.db")
    conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="schema version 99"):
        Store(tmp_path)


def test_changing_timezone_rebuilds_local_hours(tmp_path: Path) -> None:
    store = Store(tmp_path, tz="UTC")
    store.write(counter_rows(T0, 120, 1.0))
    store.close()
    kolkata = Store(tmp_path, tz="Asia/Kolkata")  # +05:30: local hours start at :30 UTC
    hours = [(h.ts - T0, h.value) for h in kolkata.hour_counters("requests", 0, 2**40)]
    assert hours == [(-1800, 30.0), (1800, 60.0), (5400, 30.0)]
    kolkata.close()


def test_unwritable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="data dir"):
        Store(blocker / "sub")


def _dump(store: Store) -> dict[str, list[tuple[object, ...]]]:
    with store._reading() as r:
        return {t: r.execute(f"SELECT * FROM {t} ORDER BY series_id, ts").fetchall()
                for t in ("minute_counter", "minute_hist", "hour_counter", "hour_hist")}


def test_one_batch_stores_exactly_what_row_by_row_writes_store(tmp_path: Path) -> None:
    """Batched writes merge per minute and per hour in memory; the tables must not notice."""
    rows: list[MinuteRow] = []
    for i in range(0, 200, 3):  # across hour boundaries, with repeats of a minute in one batch
        ts = T0 - 600 + 60 * (i % 130)
        rows.append(MinuteRow(ts, REQ, MinuteCell(value=float(i))))
        rows.append(MinuteRow(ts, LAT, MinuteCell(count=2, sum=0.5 * i, buckets={0.5: 1, 2.0: 2, math.inf: 2})))
    one, batched = Store(tmp_path / "one", tz="Asia/Kolkata"), Store(tmp_path / "batch", tz="Asia/Kolkata")
    for store in (one, batched):
        store.write(rows[:40])  # the minutes some later rows add to are already stored
    for row in rows[40:]:
        one.write([row])
    batched.write(rows[40:])
    assert _dump(one) == _dump(batched)
    assert _dump(one)["hour_counter"]  # not vacuous
    one.close()
    batched.close()


def test_demand_is_requests_net_of_retries(tmp_path: Path) -> None:
    """A retried request reaches two deployments and counts once in the demand; a minute with
    retries but no requests stored yet gives 0, never a negative rate."""
    store = Store(tmp_path, tz="America/New_York")
    store.write(counter_rows(T0, 60, 10.0) + counter_rows(T0, 60, 2.0, SeriesKey("retries", "anthropic", "c", "chat")))
    store.write(counter_rows(T0 + 3600, 60, 3.0, SeriesKey("retries", "anthropic", "c", "chat")))
    demand = hourly(store, "demand_rate", "America/New_York", T0, T0 + 3600)
    assert demand.tolist() == pytest.approx([8 / 60])
    assert hourly(store, "request_rate", "America/New_York", T0, T0 + 3600).tolist() == pytest.approx([10 / 60])
    later = hourly(store, "demand_rate", "America/New_York", T0 + 3600, T0 + 7200).dropna().tolist()
    assert all(v >= 0 for v in later)
    store.close()


def test_the_store_is_not_readable_by_others(tmp_path: Path) -> None:
    import os
    import stat

    old = os.umask(0o022)  # the usual umask, which would leave a new file 0644
    try:
        store = Store(tmp_path, tz="UTC")
        store.write(counter_rows(T0, 2))
        store.close()
    finally:
        os.umask(old)
    for name in ("diurnal.db", "diurnal.db-wal", "diurnal.db-shm"):
        path = tmp_path / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0, name
    # A store made by an older version, readable by all, is tightened when opened.
    (tmp_path / "diurnal.db").chmod(0o644)
    Store(tmp_path, tz="UTC").close()
    assert stat.S_IMODE((tmp_path / "diurnal.db").stat().st_mode) == 0o640
