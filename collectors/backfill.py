"""Backfill history from a Prometheus-compatible API (Prometheus, Thanos, Mimir,
VictoriaMetrics) with ``/api/v1/query_range``.

The raw series the mapping reads (counters, histogram buckets) are fetched in step-aligned
chunks and replayed, timestamp by timestamp, through the same delta tracker and minute
aggregator a scrape goes through, so backfilled history is computed exactly like scraped
history. It is written fill-only: an hour that already has data is never counted twice.
"""

from __future__ import annotations

import base64
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx

from collectors.errors import CollectorError
from collectors.exposition import Sample
from collectors.fleet import FleetQuery, fleet_cells, series_identity
from collectors.hour_of_week import local_hour_start_at
from collectors.intervals import IngestStats, MinuteAggregator
from collectors.mapping import Mapper
from collectors.redact import redact
from collectors.store import Store

log = logging.getLogger("diurnal.backfill")

#: Prometheus refuses a query_range with more than 11,000 points per series.
MAX_POINTS = 10_000


class BackfillError(CollectorError):
    """The Prometheus API could not be read (after retries) or refused the query. ``kind``:
    ``unreachable`` (no answer), ``http_error`` (an error status, refused credentials or
    query) or ``malformed`` (an answer that is not the API's)."""

    def __init__(self, message: str, kind: str = "http_error") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class BackfillStats:
    chunks: int = 0
    samples: int = 0
    rows_written: int = 0
    retries: int = 0
    ingest: IngestStats | None = None


class PrometheusAPI:
    """A small client for ``query_range`` with retries, backoff with jitter, and auth."""

    def __init__(self, client: httpx.Client, base_url: str, *, bearer_token: str | None = None,
                 basic_auth: tuple[str, str] | None = None, retries: int = 4, backoff_seconds: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff_seconds
        self.sleep = sleep
        self.retried = 0
        self._headers: dict[str, str] = {}
        if bearer_token:
            self._headers["Authorization"] = f"Bearer {bearer_token}"
        if basic_auth:
            pair = f"{basic_auth[0]}:{basic_auth[1]}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")

    def query_range(self, query: str, start: int, end: int, step: int) -> list[dict[str, object]]:
        return self._post("query_range", {"query": query, "start": str(start), "end": str(end), "step": str(step)})

    def query(self, query: str, at: float) -> list[dict[str, object]]:
        """An instant query evaluated at ``at`` (Unix seconds): the result vector."""
        return self._post("query", {"query": query, "time": f"{at:.3f}"})

    def _post(self, endpoint: str, params: dict[str, str]) -> list[dict[str, object]]:
        query = params["query"]
        url = f"{self.base_url}/api/v1/{endpoint}"
        shown = redact(url)  # errors and logs never carry the URL's credentials
        for attempt in range(self.retries + 1):
            problem: str
            try:
                resp = self.client.post(url, data=params, headers=self._headers)
            except httpx.TransportError as exc:
                problem = redact(f"cannot reach {shown}: {exc}")
            else:
                if resp.status_code == 200:
                    try:
                        body = resp.json()
                    except ValueError as exc:
                        raise BackfillError(f"{shown} answered something that is not JSON", "malformed") from exc
                    if not isinstance(body, dict) or body.get("status") != "success":
                        error = body if not isinstance(body, dict) else f"{body.get('errorType')}: {body.get('error')}"
                        raise BackfillError(f"{shown} answered {error}"[:500])
                    try:
                        result: list[dict[str, object]] = body["data"]["result"]
                    except (KeyError, TypeError) as exc:
                        raise BackfillError(f"{shown} answered without data.result", "malformed") from exc
                    return result
                if resp.status_code in (401, 403):
                    raise BackfillError(f"{shown} refused the credentials (HTTP {resp.status_code}); "
                                        "check prometheus.bearer_token / basic auth")
                if resp.status_code == 400 or resp.status_code == 422:
                    shown_query = query if len(query) <= 300 else query[:300] + "…"
                    raise BackfillError(f"{shown} rejected the query {shown_query!r}: {resp.text[:300]}")
                problem = f"{shown} answered HTTP {resp.status_code}"
            if attempt == self.retries:
                raise BackfillError(f"{problem} (gave up after {self.retries + 1} attempts)",
                                    "unreachable" if problem.startswith("cannot reach") else "http_error")
            delay = self.backoff * 2**attempt * (0.5 + random.random())  # noqa: S311 - jitter, not crypto
            log.warning("%s; retrying in %.1fs", problem, delay)
            self.retried += 1
            self.sleep(delay)
        raise AssertionError("unreachable")


def _metric_names(mapper: Mapper) -> list[str]:
    names: set[str] = set()
    for rule in mapper.preset.counters:
        for base in (rule.metric, *rule.aliases):
            names.update((base, base + "_total"))
    for h in mapper.preset.histograms:
        for base in (h.metric, *h.aliases):
            names.update(f"{base}_{s}" for s in ("bucket", "sum", "count"))
    return sorted(names)


def _chunks(start: int, end: int, step: int, chunk_seconds: int) -> Iterator[tuple[int, int]]:
    size = max(step, min(chunk_seconds, step * MAX_POINTS) // step * step)
    t = start
    while t <= end:
        yield t, min(end, t + size - step)
        t += size


def _replay(store: Store, api: PrometheusAPI, query: str, *, start: int, end: int, step: int, chunk_seconds: int,
            feed: Callable[[MinuteAggregator, list[Sample], float], None], what: str,
            progress: Callable[[str], None] | None) -> BackfillStats:
    """Evaluate ``query`` over ``[start, end]`` at ``step`` in chunks, hand each timestamp's
    samples to ``feed`` in time order, and store whole local hours fill-only (an hour that has
    any data is skipped, so nothing is counted twice)."""
    agg = MinuteAggregator()
    stats = BackfillStats(ingest=IngestStats())
    for lo, hi in _chunks(start, end, step, chunk_seconds):
        by_ts: dict[float, list[Sample]] = defaultdict(list)
        for series in api.query_range(query, lo, hi, step):
            name, labels = series_identity(series["metric"])  # type: ignore[arg-type]
            for ts, value in series["values"]:  # type: ignore[attr-defined]
                by_ts[float(ts)].append(Sample(name, labels, float(value)))
        for ts in sorted(by_ts):
            feed(agg, by_ts[ts], ts)
            stats.samples += len(by_ts[ts])
        upto = local_hour_start_at(int(hi), store.tz)
        stats.rows_written += store.write(agg.close_before(upto), fill_only=True)
        stats.chunks += 1
        if progress is not None:
            progress(f"  backfilled {what}up to {time.strftime('%Y-%m-%d %H:%M', time.gmtime(hi))} UTC "
                     f"({stats.samples} samples)")
    stats.rows_written += store.write(agg.close_all(), fill_only=True)
    stats.retries = api.retried
    return stats


def backfill(store: Store, mapper: Mapper, api: PrometheusAPI, *, start: int, end: int, step: int = 60,
             chunk_seconds: int = 6 * 3600, progress: Callable[[str], None] | None = None,
             selector: str = "") -> BackfillStats:
    """Read ``[start, end]`` at ``step`` seconds and store it like scraped data (fill-only):
    the raw series, replayed through the delta tracker a scrape goes through. ``selector``
    (PromQL label matchers, ``prometheus.selector``) picks the router's series."""
    if step <= 0 or end <= start:
        raise ValueError("backfill needs step > 0 and end > start")
    start = start // step * step  # step-aligned, so repeated backfills read the same instants
    names = _metric_names(mapper)
    query = '{__name__=~"' + "|".join(names) + '"' + (f", {selector}" if selector else "") + "}"
    ingest = IngestStats()

    def feed(agg: MinuteAggregator, samples: list[Sample], ts: float) -> None:
        ingest.add(agg.ingest(mapper.map(samples), ts))

    stats = _replay(store, api, query, start=start, end=end, step=step, chunk_seconds=chunk_seconds, feed=feed,
                    what="", progress=progress)
    stats.ingest = ingest
    return stats


def backfill_fleet(store: Store, mapper: Mapper, api: PrometheusAPI, query: FleetQuery, *, start: int, end: int,
                   chunk_seconds: int = 6 * 3600, progress: Callable[[str], None] | None = None) -> BackfillStats:
    """Read ``[start, end]`` with the fleet query, one window per step (the live input's
    query, at the live input's windows), and store it fill-only in whole local hours."""
    step = query.window_seconds
    if end <= start:
        raise ValueError("backfill needs end > start")
    start = start // step * step + step  # window ends, aligned as the live input's

    def feed(agg: MinuteAggregator, samples: list[Sample], ts: float) -> None:
        agg.add_cells(fleet_cells(mapper, samples, int(ts), step))

    return _replay(store, api, query.expr, start=start, end=end, step=step, chunk_seconds=chunk_seconds, feed=feed,
                   what="the fleet ", progress=progress)
