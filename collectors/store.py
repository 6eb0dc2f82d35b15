"""The embedded store: SQLite in WAL mode, one writer, separate readers.

Two resolutions are kept per series, written in the same transaction:

- ``minute_*``: 1-minute aggregates (counter deltas; histogram bucket deltas), kept
  ``minute_retention`` (default 7 days);
- ``hour_*``: rollups per *local* hour of the store's timezone, keyed by the UTC instant the
  local hour began (so half-hour zones and DST days are right), kept ``hour_retention``
  (default 8 weeks). ``minutes`` counts the minutes merged in, for rates.

Timestamps are Unix seconds UTC. A write returns only after its transaction has committed, so
what a caller was told is stored survives the process being killed. ``synchronous=NORMAL``
in WAL mode keeps committed data across a process crash; only a power loss can drop the
last transactions (``durable=True`` selects ``FULL``).

The minutes still open live in the collector's memory; so that a process killed with SIGKILL
loses none of what it acknowledged, they are also kept in a journal (``open_cell``,
:mod:`collectors.journal`): pushed events are appended to it before the API answers, and the
collector appends what its open minutes gained every few seconds. Closing minutes writes them
and drops their journal rows in one transaction, so nothing is counted twice; the next run
replays what is left (:meth:`Store.recover_open`).

Diurnal's own decision for each minute (the weights it recommends and the prewarm amounts in
force, whatever the mode) is kept in ``decided_minute`` for at least 8 days: the shadow report
(:mod:`controller.replay.shadow`) estimates from it what acting would have changed.

The store never holds a non-finite number: a cell with one is dropped at write (and counted),
and :meth:`Store.non_finite` checks every table.

Writes are serialised by one lock; reads use their own connection and, with WAL, never wait
for a writer.

The connection, the transactions, the schema's migrations and the reads are here; the
tables' batched upserts and rollups are :mod:`collectors.tables`, the journal
:mod:`collectors.journal`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from collectors.errors import StoreError
from collectors.hour_of_week import local_hour_start_at
from collectors.intervals import MinuteCell, MinuteRow
from collectors.journal import SCHEMA as JOURNAL_SCHEMA
from collectors.journal import OpenCells, OpenJournal, decode_buckets, merge_blobs
from collectors.mapping import HISTOGRAM_SIGNALS, SeriesKey
from collectors.tables import (
    MAX_FLOAT,
    SCHEMA_V1,
    SCHEMA_V2,
    CounterPoint,
    HistPoint,
    Tables,
    copy_cell,
    finite_cell,
)

__all__ = ["CounterPoint", "HistPoint", "Store", "finite_cell"]

log = logging.getLogger("diurnal.store")
_T = TypeVar("_T")

DECIDED_SCHEMA = """
CREATE TABLE IF NOT EXISTS decided_minute (
    ts INTEGER NOT NULL, name TEXT NOT NULL, value REAL NOT NULL, PRIMARY KEY (ts, name)
) WITHOUT ROWID;
"""
SCHEMA_VERSION = 4
#: Diurnal's own decisions per minute are kept at least this long (the shadow report's week).
DECIDED_RETENTION = 8 * 86400
MINUTE_RETENTION = 7 * 86400
HOUR_RETENTION = 8 * 7 * 86400
#: The store's file mode: owner read-write, group read (the audit log's too).
STORE_MODE = 0o640


#: First and last stored minute, a series at a time: each table's key is (series, ts), so
#: each series' ends are two index seeks, where a MIN(ts) over a table reads all of it.
_SPAN = "SELECT MIN(lo), MAX(hi) FROM (" + " UNION ALL ".join(
    f"SELECT (SELECT MIN(ts) FROM {table} WHERE series_id = s.id) lo, "
    f"(SELECT MAX(ts) FROM {table} WHERE series_id = s.id) hi FROM series s"
    for table in ("minute_counter", "minute_hist", "hour_counter")) + ")"


class Store:
    """Minute aggregates and local-hour rollups per series. Thread-safe."""

    def __init__(self, data_dir: Path, *, tz: str = "UTC", durable: bool = False,
                 minute_retention: int = MINUTE_RETENTION, hour_retention: int = HOUR_RETENTION,
                 read_only: bool = False) -> None:
        """``read_only``: for commands that only read (``diurnal profile``, ``forecast``): the
        store must exist, nothing is created, migrated or rebuilt, every write raises
        :class:`StoreError`, and ``tz`` is the one its hours were rolled up in."""
        self.path = Path(data_dir) / "diurnal.db"
        self.tz = tz
        self.read_only = read_only
        self.minute_retention = minute_retention
        self.hour_retention = hour_retention
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()
        self._series: dict[SeriesKey, int] = {}
        self._series_by_id: dict[int, SeriesKey] = {}
        # (series, hour, histogram?) buckets a fill-only write has begun in this transaction.
        self._filling: set[tuple[int, int, bool]] = set()
        # Series added by the transaction in progress (forgotten if it rolls back).
        self._added: dict[SeriesKey, int] = {}
        #: Cells dropped at write because they held a non-finite number.
        self.dropped_non_finite = 0
        if read_only:
            self._open_read_only()
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Owner and group only, like the audit log (SQLite gives its -wal and -shm files the
            # database's mode); a store made before that loses its read bit for others.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, STORE_MODE))
            if (mode := self.path.stat().st_mode & 0o777) & 0o007:
                self.path.chmod(mode & ~0o007)
            self._w = self._connect(durable)
            self._tables = Tables(self._w, self.tz)
            self._migrate()
            self._journal = OpenJournal(self._w, self._series_id, self._finite)
            self._r = self._connect(durable)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from exc
        except OSError as exc:
            raise StoreError(f"cannot create the data dir {self.path.parent}: {exc.strerror}") from exc
        self._load_series()

    def _open_read_only(self) -> None:
        if not self.path.is_file():
            raise StoreError(f"no store in {self.path.parent}: nothing has been written there (diurnal run, "
                             "backfill or import-csv fill one)")
        try:
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False,
                                   timeout=30.0)
            self._w = self._r = conn
            version = int(self._meta("schema_version") or 0)
            if version != SCHEMA_VERSION:
                raise StoreError(f"the store at {self.path} has schema version {version}, this diurnal reads "
                                 f"{SCHEMA_VERSION}: open it once with diurnal run (which migrates it), or upgrade")
            self.tz = self._meta("rollup_tz") or self.tz
            self._load_series()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the store at {self.path}: {exc}") from exc

    def _connect(self, durable: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    # ---- schema -------------------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        try:
            row = self._w.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        except sqlite3.OperationalError:  # no meta table: a new store
            return None
        return str(row[0]) if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self._w.execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                        (key, value))

    def _migrate(self) -> None:
        version = int(self._meta("schema_version") or 0)
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the store at {self.path} has schema version {version}, newer than this diurnal "
                f"understands ({SCHEMA_VERSION}); upgrade diurnal or use another data_dir"
            )
        with self._w:
            if version < 1:
                self._w.executescript(SCHEMA_V1)
            if version < 2:
                self._w.executescript(SCHEMA_V2)
                self._tables.rebuild_hours()  # v1 stores had minutes only
            if version < 3:
                self._w.executescript(JOURNAL_SCHEMA)
                self._drop_non_finite()  # older versions could store an infinite sum
            if version < 4:
                self._w.executescript(DECIDED_SCHEMA)
            self._set_meta("schema_version", str(SCHEMA_VERSION))
            if self._meta("rollup_tz") != self.tz:
                # Hour rollups follow local hours: a new timezone needs them rebuilt from the
                # minutes still kept (older rollups stay as they were).
                if self._meta("rollup_tz") is not None:
                    self._tables.rebuild_hours()
                self._set_meta("rollup_tz", self.tz)

    def _load_series(self) -> None:
        for sid, signal, provider, model, route in self._w.execute(
            "SELECT id, signal, provider, model, route FROM series"
        ):
            key = SeriesKey(signal, provider, model, route)
            self._series[key] = sid
            self._series_by_id[sid] = key

    def _series_id(self, key: SeriesKey) -> int:
        sid = self._series.get(key)
        if sid is None:
            cur = self._w.execute(
                "INSERT INTO series(signal, provider, model, route) VALUES(?,?,?,?)",
                (key.signal, key.provider, key.model, key.route),
            )
            sid = int(cur.lastrowid or 0)
            self._series[key] = sid
            self._series_by_id[sid] = key
            self._added[key] = sid
        return sid

    # ---- writes -------------------------------------------------------------------------

    def _transaction(self, what: str, body: Callable[[], _T]) -> _T:
        """Run ``body`` in one transaction under the write lock; a failure rolls it back whole
        (and forgets the series it had added) and raises :class:`StoreError`."""
        if self.read_only:
            raise StoreError(f"cannot {what} the store at {self.path}: it is open read-only")
        with self._wlock:
            self._added = {}
            try:
                with self._w:
                    done = body()
                self._journal.committed()
                return done
            except sqlite3.Error as exc:
                self._journal.rolled_back()
                for key, sid in self._added.items():  # the transaction rolled back
                    self._series.pop(key, None)
                    self._series_by_id.pop(sid, None)
                raise StoreError(f"cannot {what} the store at {self.path}: {exc}") from exc
            finally:
                self._filling.clear()
                self._added = {}

    def _finite(self, cell: MinuteCell, key: SeriesKey) -> bool:
        if finite_cell(cell):
            return True
        self.dropped_non_finite += 1
        log.warning("dropped a non-finite %s cell of %s/%s (the store keeps finite numbers only)",
                    key.signal, key.provider, key.model or "-")
        return False

    def write(self, rows: Iterable[MinuteRow], *, fill_only: bool = False, settled_before: int | None = None,
              journaled_upto: int | None = None, decided: Iterable[tuple[int, Mapping[str, float]]] = ()) -> int:
        """Store minute rows and their hour rollups in one transaction. Returns rows written.

        By default a row adds to what is stored for its minute (several scrapes per minute).
        With ``fill_only`` (backfill, imports) a row is written only where its series has no
        data yet for that local hour, so overlapping history is never counted twice.
        ``settled_before`` drops the journal's minutes before it in the same transaction: the
        collector passes it when the rows are the minutes it closed; with ``journaled_upto`` (a
        :attr:`journal_watermark` taken when they were closed) only the journal rows written by
        then are dropped. ``decided`` (minute, values) are kept as :meth:`put_decided` does, in
        the same transaction.

        Rows are merged per series-minute and per series-hour in memory first, so a batch costs
        a few statements per table however many rows it carries.
        """
        rows = list(rows)
        decided = list(decided)
        if not rows and settled_before is None and not decided:
            return 0

        def body() -> int:
            written = self._write_rows(rows, fill_only)
            if settled_before is not None:
                self._journal.settle(settled_before, upto=journaled_upto)
            for ts, values in decided:
                self._put_decided(ts, values)
            return written
        return self._transaction("write to", body)

    def _write_rows(self, rows: list[MinuteRow], fill_only: bool) -> int:
        written = 0
        counters: dict[tuple[int, int], float] = {}
        hists: dict[tuple[int, int], MinuteCell] = {}
        for row in rows:
            if not self._finite(row.cell, row.key):
                continue
            sid = self._series_id(row.key)
            is_hist = row.key.signal in HISTOGRAM_SIGNALS
            if fill_only and self._hour_taken(sid, row.ts, is_hist):
                continue
            at = (sid, row.ts)
            if is_hist:
                cell = hists.get(at)
                if cell is None:
                    hists[at] = copy_cell(row.cell)
                else:
                    cell.merge(row.cell)
            else:
                total = counters.get(at, 0.0) + row.cell.value
                if not math.isfinite(total):  # two finite cells whose sum overflows
                    self._finite(MinuteCell(value=total), row.key)
                    continue
                counters[at] = total
            written += 1
        self._tables.put_counters(counters)
        self._tables.put_hists(hists)
        return written

    # ---- the journal of open minutes (collectors.journal) --------------------------------

    def journal(self, cells: OpenCells, meta: dict[str, str] | None = None) -> None:
        """Append cells of open minutes to the journal, committed when this returns (pushed
        events, before the API acknowledges them); ``meta`` is set in the same transaction
        (the fleet input's cursor: what it has read is exactly what the journal holds)."""
        def body() -> None:
            self._journal.append(cells)
            for key, value in (meta or {}).items():
                self._set_meta(key, value)
        self._transaction("journal events in", body)

    def meta(self, key: str) -> str | None:
        """A value kept with the store (e.g. the fleet input's cursor)."""
        with self._wlock:
            return self._meta(key)

    def put_meta(self, key: str, value: str) -> None:
        """Keep ``value`` with the store under ``key`` (e.g. the planner's learned headroom)."""
        self._transaction(f"keep {key}", lambda: self._set_meta(key, value))

    def put_decided(self, ts: int, values: Mapping[str, float]) -> None:
        """Keep what diurnal decided for the minute starting at ``ts``: ``values`` by name
        (``weight:<provider>``, ``units:<prewarm action>``). Non-finite values are left out."""
        self._transaction("keep the decision in", lambda: self._put_decided(ts, values))

    def _put_decided(self, ts: int, values: Mapping[str, float]) -> None:
        self._w.executemany("INSERT INTO decided_minute(ts, name, value) VALUES(?, ?, ?) "
                            "ON CONFLICT(ts, name) DO UPDATE SET value=excluded.value",
                            [(ts, name, float(v)) for name, v in values.items() if math.isfinite(v)])

    def decided(self, start: int, end: int) -> dict[str, list[tuple[int, float]]]:
        """The decisions kept for minutes in ``[start, end)``, by name, in time order."""
        out: dict[str, list[tuple[int, float]]] = {}
        with self._reading() as r:
            try:
                rows = r.execute("SELECT ts, name, value FROM decided_minute WHERE ts >= ? AND ts < ? ORDER BY ts",
                                 (start, end)).fetchall()
            except sqlite3.OperationalError:  # a read-only store from before the table
                return out
        for ts, name, value in rows:
            out.setdefault(str(name), []).append((int(ts), float(value)))
        return out

    def checkpoint(self, changed: OpenCells, *, open_cells: OpenCells | None = None) -> None:
        """Append what the open minutes gained since the last checkpoint (``changed``), so a
        checkpoint costs what changed. With ``open_cells`` (every open minute, whole; pass it
        when :meth:`journal_compaction_due`) the journal is rewritten as exactly those instead.
        Committed when this returns."""
        if open_cells is None:
            self._transaction("checkpoint open minutes in", lambda: self._journal.append(changed))
        else:
            self._transaction("compact the journal of open minutes in", lambda: self._journal.replace(open_cells))

    def journal_compaction_due(self, open_count: int) -> bool:
        """Whether the journal has grown several times longer than the ``open_count``
        series-minutes open (each checkpoint appends): time to rewrite it."""
        return self._journal.compaction_due(open_count)

    @property
    def journal_watermark(self) -> int:
        """The journal's highest committed row id (see ``write(journaled_upto=)``)."""
        return self._journal.watermark

    @property
    def journal_rows(self) -> int:
        """Rows in the journal (committed)."""
        return self._journal.rows

    def recover_open(self) -> int:
        """Store what the journal holds (the open minutes of a run that was killed) and empty
        it, in one transaction. Call it before collecting. Returns the series-minutes recovered."""
        def body() -> int:
            merged = self._journal.take()
            hist = {at for at in merged if self._series_by_id[at[0]].signal in HISTOGRAM_SIGNALS}
            self._tables.put_counters({(sid, minute): c.value for (sid, minute), c in merged.items()
                                if (sid, minute) not in hist})
            self._tables.put_hists({at: c for at, c in merged.items() if at in hist})
            return len(merged)
        return self._transaction("recover open minutes into", body)

    def _hour_taken(self, sid: int, ts: int, is_hist: bool) -> bool:
        hour = local_hour_start_at(ts, self.tz)
        if (sid, hour, is_hist) in self._filling:
            return False
        table = "hour_hist" if is_hist else "hour_counter"
        taken = self._w.execute(f"SELECT 1 FROM {table} WHERE series_id=? AND ts=?", (sid, hour)).fetchone()
        if taken:
            return True
        self._filling.add((sid, hour, is_hist))
        return False

    def prune(self, now: int) -> tuple[int, int]:
        """Drop minutes and hours past their retention. Returns (minute rows, hour rows) dropped."""
        with self._wlock:
            try:
                with self._w:
                    # Naming the series lets SQLite walk each series' (series_id, ts) key range
                    # instead of scanning the table for old timestamps.
                    old = "DELETE FROM {} WHERE series_id IN (SELECT id FROM series) AND ts < ?"
                    m = sum(self._w.execute(old.format(t), (now - self.minute_retention,)).rowcount
                            for t in ("minute_counter", "minute_hist"))
                    h = sum(self._w.execute(old.format(t), (now - self.hour_retention,)).rowcount
                            for t in ("hour_counter", "hour_hist"))
                    self._w.execute("DELETE FROM decided_minute WHERE ts < ?",
                                    (now - max(self.minute_retention, DECIDED_RETENTION),))
            except sqlite3.Error as exc:
                raise StoreError(f"cannot prune the store at {self.path}: {exc}") from exc
        return m, h

    _COUNTER_TABLES = ("minute_counter", "hour_counter")
    _CELL_TABLES = ("minute_hist", "hour_hist", "open_cell")

    def _non_finite_rows(self, conn: sqlite3.Connection) -> list[tuple[str, str, tuple[int, ...]]]:
        """(table, key columns, key) of every stored row holding a non-finite number (SQLite
        stores NaN as NULL)."""
        out: list[tuple[str, str, tuple[int, ...]]] = []
        pk = "series_id = ? AND ts = ?"
        for table in self._COUNTER_TABLES:
            out += [(table, pk, (sid, ts)) for sid, ts in conn.execute(
                f"SELECT series_id, ts FROM {table} WHERE value IS NULL OR abs(value) > ?", (MAX_FLOAT,))]
        for table in self._CELL_TABLES:
            key, where, value = (("rowid, 0", "rowid = ?", "value") if table == "open_cell"
                                 else ("series_id, ts", pk, "0.0"))
            for a, b, v, count, total, blob in conn.execute(f"SELECT {key}, {value}, count, sum, buckets FROM {table}"):
                if None in (v, count, total) or not finite_cell(
                        MinuteCell(value=v, count=count, sum=total, buckets=decode_buckets(blob))):
                    out.append((table, where, (a, b) if table != "open_cell" else (a,)))
        return out

    def _drop_non_finite(self) -> None:
        for table, where, key in self._non_finite_rows(self._w):
            self._w.execute(f"DELETE FROM {table} WHERE {where}", key)

    def non_finite(self) -> int:
        """How many stored rows hold a non-finite number, in every table: 0, always (writes
        drop such cells, and the v3 migration removed those older versions could store)."""
        with self._reading() as r:
            return len(self._non_finite_rows(r))

    # ---- reads --------------------------------------------------------------------------

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._rlock:
            yield self._r

    def series_count(self) -> int:
        return len(self._series)

    def series(self, signal: str | None = None) -> list[SeriesKey]:
        return sorted(k for k in list(self._series) if signal is None or k.signal == signal)

    def _ids(self, signal: str, provider: str | None) -> list[int]:
        # This process is the only writer, so the in-memory map is complete.
        return [sid for key, sid in list(self._series.items())
                if key.signal == signal and (provider is None or key.provider == provider)]

    def _key_of(self, sid: int) -> SeriesKey:
        key = self._series_by_id.get(sid)
        if key is None:
            with self._reading() as r:
                row = r.execute("SELECT signal, provider, model, route FROM series WHERE id=?", (sid,)).fetchone()
            key = SeriesKey(*row)
        return key

    def _select(self, table: str, columns: str, signal: str, start: int, end: int,
                provider: str | None) -> list[tuple[Any, ...]]:
        where = self._where_series(signal, provider)
        if where is None:
            return []
        with self._reading() as r:
            return r.execute(
                f"SELECT series_id, ts, {columns} FROM {table} WHERE {where[0]} AND ts >= ? AND ts < ? ORDER BY ts",
                (*where[1], start, end),
            ).fetchall()

    def counters(self, signal: str, start: int, end: int, provider: str | None = None) -> list[CounterPoint]:
        """Counter minutes of ``signal`` with ``start <= ts < end``."""
        rows = self._select("minute_counter", "value", signal, start, end, provider)
        return [CounterPoint(int(ts), self._key_of(int(sid)), float(v)) for sid, ts, v in rows]

    def histograms(self, signal: str, start: int, end: int, provider: str | None = None) -> list[HistPoint]:
        """Histogram minutes of ``signal`` with ``start <= ts < end``."""
        rows = self._select("minute_hist", "count, sum, buckets", signal, start, end, provider)
        return [HistPoint(int(ts), self._key_of(int(sid)), float(c), float(s), decode_buckets(b))
                for sid, ts, c, s, b in rows]

    def hour_counters(self, signal: str, start: int, end: int, provider: str | None = None) -> list[CounterPoint]:
        """Local-hour rollups of a counter signal with ``start <= hour start < end``."""
        rows = self._select("hour_counter", "value, minutes", signal, start, end, provider)
        return [CounterPoint(int(ts), self._key_of(int(sid)), float(v), int(n))
                for sid, ts, v, n in rows]

    def hour_histograms(self, signal: str, start: int, end: int, provider: str | None = None) -> list[HistPoint]:
        """Local-hour rollups of a histogram signal with ``start <= hour start < end``."""
        rows = self._select("hour_hist", "count, sum, buckets, minutes", signal, start, end, provider)
        return [HistPoint(int(ts), self._key_of(int(sid)), float(c), float(s), decode_buckets(b), int(n))
                for sid, ts, c, s, b, n in rows]

    def _where_series(self, signal: str, provider: str | None) -> tuple[str, list[Any]] | None:
        ids = self._ids(signal, provider)
        if not ids:
            return None
        return f"series_id IN ({','.join('?' * len(ids))})", ids

    def hour_counter_totals(self, signal: str, start: int, end: int,
                            provider: str | None = None) -> list[tuple[int, float, int]]:
        """Per local hour with ``start <= hour start < end``: the rollups of ``signal`` summed
        over its series (of ``provider``, or all) and the most minutes one of them covered.

        Summed by SQLite, which runs the whole aggregation without holding Python's GIL: a
        fleet's refit reads thousands of series per provider while the API answers."""
        where = self._where_series(signal, provider)
        if where is None:
            return []
        with self._reading() as r:
            return [(int(ts), float(v), int(n)) for ts, v, n in r.execute(
                f"SELECT ts, SUM(value), MAX(minutes) FROM hour_counter WHERE {where[0]} AND ts >= ? AND ts < ? "
                "GROUP BY ts ORDER BY ts", (*where[1], start, end))]

    def hour_histogram_totals(self, signal: str, start: int, end: int,
                              provider: str | None = None) -> list[tuple[int, dict[float, float]]]:
        """Per local hour with ``start <= hour start < end``: the buckets of ``signal``'s
        rollups merged over its series (of ``provider``, or all). An hour whose series share
        their bucket bounds (the usual case) is merged in one array sum."""
        where = self._where_series(signal, provider)
        if where is None:
            return []
        out: list[tuple[int, dict[float, float]]] = []
        with self._reading() as r:
            rows = r.execute(f"SELECT ts, buckets FROM hour_hist WHERE {where[0]} AND ts >= ? AND ts < ? ORDER BY ts",
                             (*where[1], start, end))
            for ts, group in itertools.groupby(rows, key=lambda row: row[0]):
                out.append((int(ts), merge_blobs([blob for _, blob in group])))
        return out

    def span(self) -> tuple[int, int] | None:
        """First and last stored minute (or hour, once minutes have expired), or None."""
        with self._reading() as r:
            row = r.execute(_SPAN).fetchone()
        if row is None or row[0] is None:
            return None
        return int(row[0]), int(row[1])

    def close(self) -> None:
        with self._wlock, self._rlock:
            for conn in (self._w, self._r):
                with contextlib.suppress(sqlite3.Error):  # closing after a failure is harmless
                    conn.close()
