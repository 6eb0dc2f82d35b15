"""Stage 1 of a tick, collect: signals in, minutes closed, observations out.

Scrapes and pushed events are parsed, mapped onto series by the metric preset and
aggregated per minute; :meth:`CollectStage.close` writes the minutes that ended to the store
and hands the decide stage an :class:`Observations` of the last ``observation_window``.
Not thread-safe by itself: the loop calls it under its lock.

Minutes close as the ingest clock moves, too: once input newer than a minute's end by
``control.close_grace_seconds`` has been ingested, the minute is written, whether or not a
tick runs (an embedder feeding weeks of history keeps only the grace open, and its memory
and checkpoints stay bounded).

Durability: with ``journal`` on (the default), pushed events are appended to the store's
journal before :meth:`CollectStage.add_events` returns, and what the scrapes added to the
open minutes is appended there at most every ``control.checkpoint_seconds`` of scraping
(only the cells that changed; the journal is compacted once it is several times longer than
what is open); closing minutes settles them in the same transaction. A run killed with
SIGKILL thus loses no acknowledged event and at most that many seconds of scraped increase;
the next run replays the journal at start.

With ``write_behind`` (the service), closed minutes are stored by a thread of their own
(:mod:`controller.writer`): the tick remembers them for its observations and goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from collectors.errors import ExpositionError, StoreError
from collectors.events import EventBatch, parse_events
from collectors.exposition import ExpositionParser, Sample
from collectors.intervals import IngestStats, MinuteAggregator, MinuteCell, MinuteRow, merge_cells
from collectors.mapping import HISTOGRAM_SIGNALS, PRESETS, Mapper, SeriesKey, preset_from_config
from collectors.store import CounterPoint, HistPoint, Store
from controller.errors import ErrorThrottle
from controller.metrics import Metrics
from controller.observations import NEEDED_SIGNALS, Observations, SignalGap
from controller.settings import Settings
from controller.writer import MinuteWriter

log = logging.getLogger("diurnal.collect")

__all__ = ["NEEDED_SIGNALS", "SEGMENT_WINDOW_SECONDS", "CollectStage", "Observations", "SignalGap",
           "build_mapper", "is_route"]

_FOREVER = 2**62

#: Demand per minute is requests less retries (a retried request counts once).
_DEMAND = (("requests", 1.0), ("retries", -1.0))

#: Segment escalation rates are measured over this window of pushed events.
SEGMENT_WINDOW_SECONDS = 3600


def build_mapper(settings: Settings) -> Mapper:
    """The preset and label policy the settings ask for."""
    r = settings.router
    if r.preset == "generic":
        m = r.mapping
        assert m is not None  # the settings validator guarantees it
        preset = preset_from_config(
            "generic", {sig: (c.metric, c.match) for sig, c in m.counters.items()},
            {str(k): v for k, v in m.histograms.items()},
            tuple(m.provider_labels), tuple(m.model_labels), tuple(m.route_labels))
    else:
        preset = PRESETS[r.preset]
    return Mapper(preset, r.model_providers, keep_labels=tuple(r.keep_labels),
                  allow={k: tuple(v) for k, v in r.allow.items()}, max_series=r.max_series)


def is_route(label: str, route: str, settings: Settings) -> bool:
    """Whether data labelled ``label`` belongs to ``route``: unlabelled data counts for the
    route when only one is configured."""
    return label == route or (label == "" and len(settings.policy.routes) == 1)


def _answered(obs: Observations, provider: str) -> float:
    """How many of ``provider``'s requests over the window it answered itself: neither
    failed (429, 5xx) nor served from the router's cache."""
    return obs.total("requests", provider) - sum(obs.total(s, provider) for s in ("errors_429", "errors_5xx", "cache_hits"))


def _cells(rows: list[MinuteRow]) -> dict[int, dict[SeriesKey, MinuteCell]]:
    out: dict[int, dict[SeriesKey, MinuteCell]] = {}
    for r in rows:
        out.setdefault(r.ts, {})[r.key] = r.cell
    return out


class CollectStage:
    def __init__(self, settings: Settings, store: Store, metrics: Metrics, *, journal: bool = True,
                 monotonic: Callable[[], float] = time.monotonic, write_behind: bool = False) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        #: Keep the open minutes in the store's journal. Off only for a second process on the
        #: same data dir (``diurnal backfill`` beside ``diurnal run``), which must not replay
        #: or replace the running one's journal.
        self.journal = journal
        self._monotonic = monotonic
        self._checkpointed = monotonic()
        self._checkpoint_errors = ErrorThrottle("checkpoint of the open minutes")
        self._write_errors = ErrorThrottle("writing the closed minutes to the store",
                                           meanwhile="kept in memory and written once the store takes them")
        if journal and (recovered := store.recover_open()):
            log.info("recovered %d series-minutes that the last run had open (it did not stop cleanly)",
                     recovered)
        self.mapper = build_mapper(settings)
        self.mapper.remember(store.series())
        self.parser = ExpositionParser()
        self.aggregator = MinuteAggregator(track_changes=journal)
        #: The newest input time ingested (scrapes, fleet windows): minutes that ended
        #: ``close_grace_seconds`` before it are closed without waiting for a tick.
        self._ingest_clock: float | None = None
        #: With ``router.source: prometheus``, the end of the newest fleet window read: a tick
        #: closes no minute past it (the reader lags the clock by its lag and a window; a minute
        #: closed before its last windows arrived would be observed short).
        self._fleet_end: float | None = None
        #: When the newest router data was taken.
        self.last_data_at: datetime | None = None
        #: (minute, route, segment) -> [routed requests, escalated], from pushed events.
        self._segments: dict[tuple[int, str, str], list[int]] = {}
        # Minutes closed recently, kept in memory so a tick reads no SQL for observations.
        self._counters: list[CounterPoint] = []
        self._histograms: list[HistPoint] = []
        # Requests less retries per closed minute over the missed window (None: not loaded from
        # the store yet).
        self._recent: dict[int, float] | None = None
        #: (signal, provider) -> when the router's input last carried it; when input (a scrape
        #: with samples, mapped or not, or pushed events) first and last came.
        self._present: dict[tuple[str, str], float] = {}
        self._input_since: float | None = None
        self._input_last: float | None = None
        self.history_changed()
        #: With ``write_behind``, the thread that stores closed minutes (None: written in the call).
        self.writer = MinuteWriter(store, journal=journal, written=self._write_errors.succeeded,
                                   failed=self._write_failed) if write_behind else None

    def _write_failed(self, exc: StoreError) -> None:
        self.metrics.store_write_errors.inc()
        self._write_errors.failed(str(exc))

    def drain(self) -> bool:
        """Wait until the minutes handed to the writer are stored (no writer: they are).
        False if the store refuses them (they stay queued and journaled)."""
        return self.writer is None or self.writer.drain()

    def keep_decided(self, ts: int, values: dict[str, float]) -> bool:
        """With a writer, hand it the decision kept for minute ``ts`` (stored with the next
        batch) and return True; without one, False: the caller stores it."""
        if self.writer is None:
            return False
        self.writer.keep_decided(ts, values)
        return True

    def history_changed(self) -> None:
        """History from an earlier run or a backfill counts as data, so a restart is not
        "stale" forever."""
        span = self.store.span()
        if span is not None and self.last_data_at is None:
            self.last_data_at = datetime.fromtimestamp(span[1] + 60, UTC)

    def _seen(self, when: datetime) -> None:
        if self.last_data_at is None or when > self.last_data_at:
            self.last_data_at = when

    def ingest_exposition(self, text: str, when: datetime, content_type: str | None) -> IngestStats:
        try:
            samples = self.parser.parse(text, content_type=content_type)
        except ExpositionError:
            self.metrics.ingest_errors.labels("malformed_exposition").inc()
            raise
        return self.ingest_samples(samples, when)

    def ingest_samples(self, samples: Iterable[Sample], when: datetime) -> IngestStats:
        samples = list(samples)
        matched = self.mapper.map(samples)
        stats = self.aggregator.ingest(matched, when.timestamp())
        stats.samples = len(samples)
        if matched:
            self._seen(when)
        if samples:  # a router answering with none of the preset's metrics is input too
            self._carried(self.mapper.last_present if matched else (), when.timestamp())
        m = self.metrics
        m.ingested_samples.inc(len(samples))
        if stats.counter_resets:
            m.counter_resets.inc()
        for kind in ("non_finite", "out_of_order", "absurd"):
            if n := getattr(stats, kind):
                m.ingest_errors.labels(kind).inc(n)
        self._ingested_up_to(when.timestamp())
        self._checkpoint_if_due()
        return stats

    def _ingested_up_to(self, at: float) -> None:
        """The ingest clock moved to ``at``: close the minutes that ended a grace before it.
        They are closed in batches (once the oldest is a further grace, or a minute, old), one
        transaction per batch: open minutes stay under twice the grace plus a minute."""
        if self._ingest_clock is not None and at <= self._ingest_clock:
            return
        self._ingest_clock = at
        grace = self.settings.control.close_grace_seconds
        limit = int((at - grace) // 60) * 60
        oldest = self.aggregator.oldest()
        if oldest is not None and oldest < limit - max(grace, 60.0) + 60:
            self._settle(self.aggregator.close_before(limit), limit, int(at))

    def _checkpoint_if_due(self) -> None:
        """Checkpoint the open minutes when ``checkpoint_seconds`` have passed. A failure (a
        full disk) is logged by the caller's throttle; the minutes stay in memory."""
        if not self.journal:
            return
        now = self._monotonic()
        if now - self._checkpointed >= self.settings.control.checkpoint_seconds:
            self._checkpointed = now
            changed = self.aggregator.take_changes()
            agg = self.aggregator
            try:  # a compaction rewrites the journal from what is open: not while a writer holds closed minutes
                if self.store.journal_compaction_due(len(agg)) and (self.writer is None or self.writer.idle()):
                    self.store.checkpoint(changed, open_cells=agg.snapshot())
                elif changed:
                    self.store.checkpoint(changed)
            except StoreError as exc:  # e.g. a full disk: the minutes stay in memory meanwhile
                agg.restore_changes(changed)  # appended by the next checkpoint that succeeds
                self.metrics.store_write_errors.inc()
                self._checkpoint_errors.failed(str(exc))
            else:
                self._checkpoint_errors.succeeded()

    def parse_events(self, body: bytes, when: datetime) -> EventBatch:
        """Parse pushed events (no lock needed: nothing is changed)."""
        now = when.timestamp()
        return parse_events(body, now=now, oldest=now - self.store.minute_retention,
                            max_cost=self.settings.api.max_event_cost)

    def add_fleet(self, cells: dict[int, dict[SeriesKey, MinuteCell]], window_end: int, cursor_key: str) -> None:
        """A fleet window's cells (:mod:`collectors.fleet`): journaled with the cursor past
        ``window_end`` in one transaction (a restart reads on from there, neither twice nor
        with a gap), then added to the open minutes."""
        if self.journal:  # the cells come from the mapper: its label policy applied already
            self.store.journal(cells, meta={cursor_key: str(window_end)})
        self.aggregator.add_cells(cells)
        at = float(window_end)
        self._fleet_end = at if self._fleet_end is None else max(self._fleet_end, at)
        self._carried(self.mapper.last_present, at)
        if cells:
            self._seen(datetime.fromtimestamp(at, UTC))
        self._ingested_up_to(at)

    def add_cells(self, cells: dict[int, dict[SeriesKey, MinuteCell]], when: datetime) -> int:
        """Minute cells already aggregated (a stored history walked again), taken at
        ``when``: admitted by the label policy and added to the open minutes, unjournaled
        (their source keeps them). Returns the series-minutes added."""
        admitted: dict[int, dict[SeriesKey, MinuteCell]] = {}
        merge_cells(admitted, cells, self.mapper.admit)
        self.aggregator.add_cells(admitted)
        if any(admitted.values()):
            self._carried({(k.signal, k.provider) for minute in admitted.values() for k in minute}, when.timestamp())
            self._seen(when)
        self._ingested_up_to(when.timestamp())
        return sum(len(c) for c in admitted.values())

    def add_events(self, batch: EventBatch, when: datetime) -> None:
        """Journal the batch's cells (committed when this returns: the API may acknowledge
        them) and add them to the open minutes. A store error leaves both unchanged."""
        cells: dict[int, dict[SeriesKey, MinuteCell]] = {}
        merge_cells(cells, batch.cells, self.mapper.admit)
        if self.journal and cells:
            self.store.journal(cells)
        self.aggregator.add_cells(cells)
        if cells:
            self._carried({(k.signal, k.provider) for minute in cells.values() for k in minute}, when.timestamp())
        for (minute, route, segment), (n, escalated) in batch.segments.items():
            tally = self._segments.setdefault((minute, route, segment), [0, 0])
            tally[0] += n
            tally[1] += escalated
        if batch.newest is not None:
            self._seen(datetime.fromtimestamp(min(batch.newest, when.timestamp()), UTC))
        self.metrics.events.labels("accepted").inc(batch.accepted)
        if batch.errors:
            self.metrics.events.labels("rejected").inc(len(batch.errors))

    def flush(self) -> int:
        """Write every open minute to the store (shutdown), after what the writer holds."""
        left: list[MinuteRow] = []
        if self.writer is not None:
            left = self.writer.close()
            self.writer = None
        written = self.store.write([*left, *self.aggregator.close_all()], settled_before=_FOREVER if self.journal else None)
        self.aggregator.settled(None)
        return written

    def _settle(self, rows: list[MinuteRow], limit: int, now: int) -> tuple[list[MinuteRow], int]:
        """Write closed ``rows`` (every minute before ``limit``) and settle their journal rows
        in one transaction; remember them for the observations. A store that cannot take them
        keeps them open (written by a later close). Returns the rows stored and their count.

        With a writer, the rows are remembered and handed to it (their changes since the last
        checkpoint are forgotten: the rows carry them whole, and the writer drops the journal
        rows they replace); the count returned is the rows handed over."""
        if self.writer is not None and not self.writer.alive:  # it stopped on a bug (logged): write here from now on
            rows = [*self.writer.close(timeout=0.0), *rows]
            self.writer = None
        if self.writer is not None:
            if rows:
                self.writer.submit(rows, limit)
            else:
                self.writer.retry()
            written = len(rows)
        else:
            try:
                written = self.store.write(rows, settled_before=limit if self.journal else None)
            except StoreError as exc:  # a full or read-only volume: the tick goes on without them
                self.aggregator.add_cells(_cells(rows))  # kept open (and journaled): written by a later close
                self._write_failed(exc)
                return [], 0
            except Exception:
                self.aggregator.add_cells(_cells(rows))
                raise
            self._write_errors.succeeded()
        self.aggregator.settled(limit)
        self._remember(rows, now - int(self.settings.control.observation_window_minutes * 60))
        if self._recent is not None:
            self._add_recent(rows, now)
        return rows, written

    def close(self, when: datetime) -> tuple[Observations, int]:
        """Close the minutes that ended before ``when``, store them, and return the
        observations of the window with the number of rows written."""
        cut = when.timestamp()
        if self.settings.router.source == "prometheus":  # the fleet's minutes close as its windows arrive
            cut = min(cut, self._fleet_end if self._fleet_end is not None else 0.0)
        limit = int(cut // 60) * 60
        now = int(when.timestamp())
        rows, written = self._settle(self.aggregator.close_before(cut), limit, now)
        recent = self._recent_demand(now)
        since = now - SEGMENT_WINDOW_SECONDS
        self._segments = {k: v for k, v in self._segments.items() if k[0] >= since}
        segments: dict[tuple[str, str], tuple[int, int]] = {}
        for (_, route, segment), (n, esc) in self._segments.items():
            if segment:
                had = segments.get((route, segment), (0, 0))
                segments[(route, segment)] = (had[0] + n, had[1] + esc)
        return Observations(when, list(self._counters), list(self._histograms), segments, recent), written

    def _recent_demand(self, now: int) -> dict[int, float]:
        """Demand per minute over the missed window: from the store at the first tick (a
        restart keeps its window), then from the minutes closed (:meth:`_add_recent`)."""
        since = now - int(self.settings.policy.missed_window_minutes * 60)
        if self._recent is None:
            self._recent = {}
            for signal, sign in _DEMAND:
                for p in self.store.counters(signal, since, now):
                    self._recent[p.ts] = self._recent.get(p.ts, 0.0) + sign * p.value
        self._recent = {ts: v for ts, v in self._recent.items() if ts >= since}
        return {ts: max(0.0, v) for ts, v in self._recent.items()}

    def _add_recent(self, rows: list[MinuteRow], now: int) -> None:
        assert self._recent is not None
        since = now - int(self.settings.policy.missed_window_minutes * 60)
        recent = {ts: v for ts, v in self._recent.items() if ts >= since}
        signs = dict(_DEMAND)
        for r in rows:
            if (sign := signs.get(r.key.signal)) is not None and r.ts >= since:
                recent[r.ts] = recent.get(r.ts, 0.0) + sign * r.cell.value
        self._recent = recent

    def _remember(self, rows: list[MinuteRow], keep_from: int) -> None:
        for r in rows:
            if r.key.signal in HISTOGRAM_SIGNALS:
                self._histograms.append(HistPoint(r.ts, r.key, r.cell.count, r.cell.sum, r.cell.buckets))
            else:
                self._counters.append(CounterPoint(r.ts, r.key, r.cell.value))
        self._counters = [p for p in self._counters if p.ts >= keep_from]
        self._histograms = [p for p in self._histograms if p.ts >= keep_from]

    def _carried(self, pairs: Iterable[tuple[str, str]], at: float) -> None:
        if self._input_since is None:
            self._input_since = at
        self._input_last = at if self._input_last is None else max(self._input_last, at)
        for pair in pairs:
            self._present[pair] = at

    def signal_present(self, signal: str, provider: str, when: datetime) -> bool:
        """Whether the router's input carried ``signal`` for ``provider`` within the
        observation window before ``when``."""
        seen = self._present.get((signal, provider))
        return seen is not None and seen >= when.timestamp() - self.settings.control.observation_window_minutes * 60

    def missing_signals(self, providers: Iterable[str], when: datetime, obs: Observations | None = None,
                        idle: frozenset[str] = frozenset()) -> list[SignalGap]:
        """The needed signals the router's input lacks, per configured provider.

        Judged only once input has flowed for a whole observation window (a router's series
        appear with its first requests) and while some input is fresh (no input at all is
        stale data, not a missing signal). An ``idle`` provider (given no share by the
        decision in force) is expected to carry nothing, unless it has requests; a provider
        none of whose requests it answered (each failed with 429/5xx or came from the
        router's cache, per ``obs``) has no latency to report (a router times only the calls
        a provider answered): the error budget deals with that."""
        window = self.settings.control.observation_window_minutes * 60
        now = when.timestamp()
        if self._input_since is None or now - self._input_since < window:
            return []
        if self._input_last is None or self._input_last < now - window:
            return []
        preset = self.mapper.preset
        out: list[SignalGap] = []
        for provider in providers:
            has_requests = self.signal_present("requests", provider, when)
            if provider in idle and not has_requests:
                continue
            if not has_requests:
                out.append(SignalGap(provider, "requests", preset.metrics_for("requests")))
            if not self.signal_present("latency", provider, when) and not (
                    has_requests and obs is not None and _answered(obs, provider) < 1):
                out.append(SignalGap(provider, "latency", preset.metrics_for("latency")))
        return out

    def providers(self) -> list[str]:
        """The configured providers, else every provider seen in the store."""
        configured = list(self.settings.policy.providers)
        if configured:
            return configured
        return sorted({k.provider for k in self.store.series("requests")})

    def data_age_seconds(self, now: datetime) -> float | None:
        if self.last_data_at is None:
            return None
        return max(0.0, (now - self.last_data_at).total_seconds())
