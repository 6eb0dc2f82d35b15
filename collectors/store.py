"""The embedded store: SQLite in WAL mode, one writer, separate readers.

Timestamps are Unix seconds UTC (the start of each minute). A write returns only after its
transaction has committed, so what a caller was told is stored survives the process being
killed. ``synchronous=NORMAL`` in WAL mode keeps committed data across a process crash; only
a power loss can drop the last transactions (set ``durable=True`` for ``FULL``).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from collectors.errors import StoreError
from collectors.intervals import MinuteRow
from collectors.mapping import HISTOGRAM_SIGNALS, SeriesKey

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    signal TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL, route TEXT NOT NULL,
    UNIQUE (signal, provider, model, route)
);
CREATE TABLE IF NOT EXISTS minute_counter (
    series_id INTEGER NOT NULL REFERENCES series(id),
    ts INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS minute_hist (
    series_id INTEGER NOT NULL REFERENCES series(id),
    ts INTEGER NOT NULL,
    count REAL NOT NULL,
    sum REAL NOT NULL,
    buckets BLOB NOT NULL,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class CounterPoint:
    ts: int
    key: SeriesKey
    value: float


@dataclass(frozen=True)
class HistPoint:
    ts: int
    key: SeriesKey
    count: float
    sum: float
    buckets: dict[float, float]


def _encode_buckets(buckets: dict[float, float]) -> bytes:
    """Packed little-endian float64 pairs (le, cumulative count), sorted by le."""
    flat = np.array(sorted(buckets.items()), dtype="<f8").reshape(-1)
    return flat.tobytes()


def _decode_buckets(blob: bytes) -> dict[float, float]:
    pairs = np.frombuffer(blob, dtype="<f8").reshape(-1, 2)
    return dict(zip(pairs[:, 0].tolist(), pairs[:, 1].tolist(), strict=True))


class Store:
    """Minute aggregates per series. Thread-safe; writes are serialised."""

    def __init__(self, data_dir: Path, *, durable: bool = False) -> None:
        self.path = Path(data_dir) / "diurnal.db"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._w = self._connect(durable)
            with self._w:
                self._w.executescript(_SCHEMA)
                self._migrate()
            self._r = self._connect(durable)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from exc
        except OSError as exc:
            raise StoreError(f"cannot create the data dir {self.path.parent}: {exc.strerror}") from exc
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()
        self._series: dict[SeriesKey, int] = {}
        self._series_by_id: dict[int, SeriesKey] = {}
        self._load_series()

    def _connect(self, durable: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _migrate(self) -> None:
        row = self._w.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the store at {self.path} has schema version {version}, newer than this "
                f"diurnal understands ({SCHEMA_VERSION}); upgrade diurnal or use another data_dir"
            )
        # Version 0 -> 1 is the initial schema created above. Later migrations go here, in order.
        self._w.execute(
            "INSERT INTO meta(key, value) VALUES('schema_version', ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (str(SCHEMA_VERSION),),
        )

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
        return sid

    def write(self, rows: Iterable[MinuteRow]) -> int:
        """Store minute rows in one transaction (adding to rows already there). Returns the count."""
        rows = list(rows)
        if not rows:
            return 0
        with self._wlock:
            added: dict[SeriesKey, int] = {}
            try:
                with self._w:
                    for row in rows:
                        if row.key not in self._series:
                            added[row.key] = self._series_id(row.key)
                        sid = self._series[row.key]
                        if row.key.signal in HISTOGRAM_SIGNALS:
                            self._write_hist(sid, row)
                        else:
                            self._w.execute(
                                "INSERT INTO minute_counter(series_id, ts, value) VALUES(?,?,?) "
                                "ON CONFLICT(series_id, ts) DO UPDATE SET value = value + excluded.value",
                                (sid, row.ts, row.cell.value),
                            )
            except sqlite3.Error as exc:
                for key, sid in added.items():  # the transaction rolled back
                    self._series.pop(key, None)
                    self._series_by_id.pop(sid, None)
                raise StoreError(f"cannot write to the store at {self.path}: {exc}") from exc
        return len(rows)

    def _write_hist(self, sid: int, row: MinuteRow) -> None:
        cell = row.cell
        old = self._w.execute(
            "SELECT count, sum, buckets FROM minute_hist WHERE series_id=? AND ts=?", (sid, row.ts)
        ).fetchone()
        buckets = dict(cell.buckets)
        count, total = cell.count, cell.sum
        if old is not None:
            count += old[0]
            total += old[1]
            for le, c in _decode_buckets(old[2]).items():
                buckets[le] = buckets.get(le, 0.0) + c
        self._w.execute(
            "INSERT OR REPLACE INTO minute_hist(series_id, ts, count, sum, buckets) VALUES(?,?,?,?,?)",
            (sid, row.ts, count, total, _encode_buckets(buckets)),
        )

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._rlock:
            yield self._r

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

    def counters(self, signal: str, start: int, end: int, provider: str | None = None) -> list[CounterPoint]:
        """Counter minutes of ``signal`` with ``start <= ts < end``."""
        ids = self._ids(signal, provider)
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        with self._reading() as r:
            rows = r.execute(
                f"SELECT series_id, ts, value FROM minute_counter WHERE series_id IN ({marks}) "
                "AND ts >= ? AND ts < ? ORDER BY ts",
                (*ids, start, end),
            ).fetchall()
        return [CounterPoint(ts, self._key_of(sid), v) for sid, ts, v in rows]

    def histograms(self, signal: str, start: int, end: int, provider: str | None = None) -> list[HistPoint]:
        """Histogram minutes of ``signal`` with ``start <= ts < end``."""
        ids = self._ids(signal, provider)
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        with self._reading() as r:
            rows = r.execute(
                f"SELECT series_id, ts, count, sum, buckets FROM minute_hist WHERE series_id IN ({marks}) "
                "AND ts >= ? AND ts < ? ORDER BY ts",
                (*ids, start, end),
            ).fetchall()
        return [HistPoint(ts, self._key_of(sid), c, s, _decode_buckets(b)) for sid, ts, c, s, b in rows]

    def span(self) -> tuple[int, int] | None:
        """First and last stored minute, or None when empty."""
        with self._reading() as r:
            row = r.execute(
                "SELECT MIN(lo), MAX(hi) FROM (SELECT MIN(ts) lo, MAX(ts) hi FROM minute_counter "
                "UNION ALL SELECT MIN(ts), MAX(ts) FROM minute_hist)"
            ).fetchone()
        if row is None or row[0] is None:
            return None
        return int(row[0]), int(row[1])

    def close(self) -> None:
        with self._wlock, self._rlock:
            for conn in (self._w, self._r):
                with contextlib.suppress(sqlite3.Error):  # closing after a failure is harmless
                    conn.close()
