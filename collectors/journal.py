"""The journal of open minutes: what the collector holds in memory, kept on disk so that a
process killed with SIGKILL loses none of what it acknowledged.

The table ``open_cell`` holds *increments*: a row is a part of one series-minute, and a
series-minute is the sum of its rows. Three writers append to it:

- pushed events and fleet windows, before they are acknowledged (:meth:`OpenJournal.append`);
- the collector's checkpoint, with what the scrapes added since the last one (only the cells
  that changed: its cost follows what changed, never what is open);
- a compaction (:meth:`OpenJournal.replace`), which rewrites the journal as one row per open
  series-minute once appends have made it several times longer than that.

Closing minutes writes them to the store and deletes their rows in one transaction
(:meth:`OpenJournal.settle`), so nothing is counted twice; the next run adds up what is left
(:meth:`OpenJournal.take`). Every method runs inside the store's write transaction
(:class:`collectors.store.Store` owns the connection and the lock); the row count it keeps is
only believed once that transaction commits.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import numpy as np

from collectors.intervals import MinuteCell
from collectors.mapping import SeriesKey

__all__ = ["SCHEMA", "OpenCells", "OpenJournal", "decode_buckets", "encode_buckets"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS open_cell (
    minute INTEGER NOT NULL, series_id INTEGER NOT NULL REFERENCES series(id),
    value REAL NOT NULL, count REAL NOT NULL, sum REAL NOT NULL, buckets BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS open_cell_minute ON open_cell(minute);
"""

#: Open minutes: minute start -> series -> cell (the collector's aggregator holds them so).
OpenCells = dict[int, dict[SeriesKey, MinuteCell]]

#: A compaction is due once the journal holds more than this many rows per open
#: series-minute (plus a constant, so that a nearly empty journal is never rewritten).
COMPACT_FACTOR = 4
COMPACT_SLACK = 1024


def encode_buckets(buckets: dict[float, float]) -> bytes:
    """Packed little-endian float64 pairs (le, cumulative count), sorted by le."""
    return np.array(sorted(buckets.items()), dtype="<f8").reshape(-1).tobytes()


def decode_buckets(blob: bytes) -> dict[float, float]:
    pairs = np.frombuffer(blob, dtype="<f8").reshape(-1, 2)
    return dict(zip(pairs[:, 0].tolist(), pairs[:, 1].tolist(), strict=True))


def merge_blobs(blobs: list[bytes]) -> dict[float, float]:
    """The buckets of encoded histograms added together. Histograms that share their bounds
    (one router's series do) are summed as one array; others bucket by bucket."""
    if not blobs:
        return {}
    size = len(blobs[0])
    if size and all(len(b) == size for b in blobs):
        cells = np.frombuffer(b"".join(blobs), dtype="<f8").reshape(len(blobs), -1, 2)
        bounds = cells[0, :, 0]
        if (cells[:, :, 0] == bounds).all():  # a NaN bound is never equal: merged below
            return dict(zip(bounds.tolist(), cells[:, :, 1].sum(axis=0).tolist(), strict=True))
    merged: dict[float, float] = {}
    for blob in blobs:
        for le, c in decode_buckets(blob).items():
            merged[le] = merged.get(le, 0.0) + c
    return merged


class OpenJournal:
    """``open_cell`` on the store's write connection. ``series_id`` gives (and, in the
    transaction, creates) a series' id; ``finite`` drops (and counts) a non-finite cell."""

    def __init__(self, conn: sqlite3.Connection, series_id: Callable[[SeriesKey], int],
                 finite: Callable[[MinuteCell, SeriesKey], bool]) -> None:
        self._conn = conn
        self._series_id = series_id
        self._finite = finite
        #: Rows in the journal as of the last commit; ``_pending`` what the transaction in
        #: progress has added (negative: deleted).
        self.rows = int(conn.execute("SELECT COUNT(*) FROM open_cell").fetchone()[0])
        self._pending = 0
        #: The next row's id. Ids are given here, never reused (SQLite would reuse the highest
        #: once it is deleted), so a row id says which rows were journaled before a moment:
        #: see :attr:`watermark`.
        self._next_id = int(conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM open_cell").fetchone()[0]) + 1
        self._committed_id = self._next_id

    # ---- inside a write transaction -----------------------------------------------------

    def _insert(self, cells: OpenCells) -> int:
        rows = [(minute, self._series_id(key), c.value, c.count, c.sum, encode_buckets(c.buckets))
                for minute, per_key in cells.items() for key, c in per_key.items() if self._finite(c, key)]
        first = self._next_id
        self._next_id += len(rows)
        self._conn.executemany(
            "INSERT INTO open_cell(rowid, minute, series_id, value, count, sum, buckets) VALUES(?,?,?,?,?,?,?)",
            [(first + i, *row) for i, row in enumerate(rows)])
        self._pending += len(rows)
        return len(rows)

    def append(self, cells: OpenCells) -> int:
        """Add increments of open series-minutes. Returns the rows added."""
        return self._insert(cells)

    def replace(self, cells: OpenCells) -> int:
        """Make the journal exactly ``cells`` (every open minute, whole): a compaction."""
        self.settle(None)
        return self._insert(cells)

    def settle(self, before: int | None, *, upto: int | None = None) -> None:
        """Drop the rows of minutes before ``before`` (every row: None): they were written.
        With ``upto`` (a :attr:`watermark`), only the rows journaled by then: minutes closed
        and handed to a writer that stores them later (a late event journaled for one of them
        meanwhile is not theirs to drop)."""
        if before is None:
            cur = self._conn.execute("DELETE FROM open_cell")
        elif upto is None:
            cur = self._conn.execute("DELETE FROM open_cell WHERE minute < ?", (before,))
        else:
            cur = self._conn.execute("DELETE FROM open_cell WHERE minute < ? AND rowid <= ?", (before, upto))
        self._pending -= max(cur.rowcount, 0)

    def take(self) -> dict[tuple[int, int], MinuteCell]:
        """Every journaled series-minute, its rows added up, keyed by (series id, minute);
        the journal is emptied (in the same transaction as the caller's write of them)."""
        merged: dict[tuple[int, int], MinuteCell] = {}
        for minute, sid, value, count, total, blob in self._conn.execute(
                "SELECT minute, series_id, value, count, sum, buckets FROM open_cell"):
            cell = MinuteCell(value=value, count=count, sum=total, buckets=decode_buckets(blob))
            if (had := merged.get((sid, minute))) is None:
                merged[(sid, minute)] = cell
            else:
                had.merge(cell)
        self.settle(None)
        return merged

    # ---- around the transaction ---------------------------------------------------------

    def committed(self) -> None:
        self.rows += self._pending
        self._pending = 0
        self._committed_id = self._next_id

    def rolled_back(self) -> None:
        self._pending = 0  # the ids it used stay unused: ids only grow

    @property
    def watermark(self) -> int:
        """The highest row id committed: every row journaled so far has an id up to it, and
        every row journaled later a higher one."""
        return self._committed_id - 1

    def compaction_due(self, open_cells: int) -> bool:
        """Whether appends have made the journal several times longer than what is open."""
        return self.rows > COMPACT_FACTOR * open_cells + COMPACT_SLACK
