"""Write-behind of closed minutes: the service's tick hands them to a thread of their own.

A fleet's minute is thousands of series; storing it touches a page of each series' minute and
hour tables, and committing that costs more than the rest of a control tick. The tick does not
need it stored: its observations are the minutes it keeps in memory
(:class:`controller.collect.CollectStage`). So the service closes a minute, remembers it, and
gives it to a :class:`MinuteWriter`, which stores it and drops its journal rows in one
transaction while the tick goes on to decide and publish.

Nothing acknowledged is put at risk:

- until the write commits, the minutes' journal rows (checkpoints, pushed events) stay in the
  journal, so a SIGKILL before it recovers them as the synchronous write would have;
- the write drops only the journal rows journaled before the minutes were handed over (a row
  id watermark, :attr:`collectors.store.Store.journal_watermark`): an event journaled later for
  one of those minutes stays until the minute it reopened is stored in turn;
- a store that refuses a write (a full disk) keeps the batch queued; the next hand-over
  retries it with the new minutes, and :meth:`MinuteWriter.drain` (shutdown, a refit) too;
- an unexpected error (a bug) stops the thread, logged once; its batch is handed back
  (:meth:`MinuteWriter.close`) and the tick stores closed minutes itself from then on.

One batch is in flight at a time; minutes handed over meanwhile join the next. Reads of the
store may lag the tick by the batch in flight (at most a few minutes while the store fails);
the refit and the spend ledger drain first, so they read every minute closed. The replay runs
its walk with a writer too: the scratch store's commits overlap the next minutes' decisions.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from collectors.errors import StoreError
from collectors.intervals import MinuteRow
from collectors.store import Store

__all__ = ["MinuteWriter"]

log = logging.getLogger("diurnal.store")


class MinuteWriter:
    """Stores handed-over minutes in a daemon thread, one transaction per batch.

    ``written()`` runs in the writer's thread after a batch commits; ``failed(exc)``
    after one is refused (it stays queued). Both must be cheap and thread-safe."""

    def __init__(self, store: Store, *, journal: bool, written: Callable[[], None],
                 failed: Callable[[StoreError], None]) -> None:
        self._store = store
        self._journal = journal
        self._written = written
        self._failed = failed
        self._cv = threading.Condition()
        self._rows: list[MinuteRow] = []
        self._decided: list[tuple[int, Mapping[str, float]]] = []
        self._limit: int | None = None  # journal rows of minutes before it are dropped ...
        self._upto: int | None = None  # ... those journaled up to this row id
        self._busy = False  # a batch is being written
        self._retry = True  # False from an attempt on, until something is handed over or drained
        self._stop = False
        self._stopped = False  # the thread ended on an unexpected error
        self._thread = threading.Thread(target=self._run, name="diurnal-minute-writer", daemon=True)
        self._thread.start()

    def submit(self, rows: list[MinuteRow], limit: int) -> None:
        """Hand over closed ``rows``: every minute before ``limit``, as closed by now (their
        journal rows so far are dropped when they are stored). Returns at once."""
        upto = self._store.journal_watermark if self._journal else None
        with self._cv:
            self._rows.extend(rows)
            self._limit = limit if self._limit is None else max(self._limit, limit)
            self._upto = upto
            self._retry = True
            self._cv.notify_all()

    def keep_decided(self, ts: int, values: Mapping[str, float]) -> None:
        """The decision kept for minute ``ts`` (:meth:`collectors.store.Store.put_decided`),
        stored with the next batch."""
        with self._cv:
            self._decided.append((ts, values))
            self._retry = True
            self._cv.notify_all()

    def retry(self) -> None:
        """Try a batch the store refused once more (the tick calls it when it closed nothing:
        a router that went quiet does not leave it queued)."""
        with self._cv:
            if self._queued() and not self._retry:
                self._retry = True
                self._cv.notify_all()

    def _queued(self) -> bool:
        return bool(self._rows or self._decided or self._limit is not None)

    def idle(self) -> bool:
        """Nothing queued or in flight."""
        with self._cv:
            return not self._busy and not self._queued()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until what was handed over is stored (a batch the store refuses is tried once
        more here). False if it is still queued when this returns."""
        with self._cv:
            self._retry = True
            self._cv.notify_all()
            return self._cv.wait_for(lambda: self._stopped or not self._busy and (
                not self._queued() or not self._retry), timeout) and not self._busy and not self._queued()

    @property
    def alive(self) -> bool:
        """False once the thread stopped on an unexpected error (the caller writes itself then)."""
        return not self._stopped and self._thread.is_alive()

    def close(self, timeout: float = 30.0) -> list[MinuteRow]:
        """Drain, then stop the thread. Returns the rows a store still refuses (their
        checkpointed part stays in the journal either way)."""
        self.drain(timeout)
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(timeout)
        with self._cv:
            left, self._rows, self._decided, self._limit = self._rows, [], [], None
        return left

    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._stop or (self._retry and self._queued()))
                if not (self._retry and self._queued()):
                    return  # stopping, nothing left to write
                rows, decided, limit, upto = self._rows, self._decided, self._limit, self._upto
                self._rows, self._decided, self._limit, self._busy = [], [], None, True
                self._retry = False  # set again by what is handed over (or a drain) meanwhile
            try:
                self._store.write(rows, settled_before=limit if self._journal and limit is not None else None,
                                          journaled_upto=upto, decided=decided)
            except Exception as exc:  # noqa: BLE001 - a StoreError, or a bug: the batch is kept either way
                if isinstance(exc, StoreError):
                    self._failed(exc)  # before the batch is back: a drain that returns has seen it counted
                else:
                    log.exception("the minute writer stopped on an unexpected error; the tick stores closed minutes "
                                  "itself from now on")
                with self._cv:  # queued again, ahead of what came meanwhile
                    self._rows = rows + self._rows
                    self._decided = decided + self._decided
                    if limit is not None:
                        self._limit = limit if self._limit is None else max(self._limit, limit)
                    if upto is not None:
                        self._upto = upto if self._upto is None else max(self._upto, upto)
                    self._busy = False  # a refused batch is tried again once something is handed over, or drained
                    self._stopped = not isinstance(exc, StoreError)
                    self._cv.notify_all()
                if self._stopped:
                    return
                continue
            self._written()
            with self._cv:
                self._busy = False
                self._cv.notify_all()
