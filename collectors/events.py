"""Per-request events pushed by routers that export no metrics (``POST /v1/events``).

The body is JSON lines, one event per line::

    {"ts": "2026-11-09T14:03:12Z", "provider": "openai", "model": "gpt-4o", "route": "chat",
     "latency": 1.84, "ttft": 0.41, "cache_hit": false, "retries": 0, "status": 200,
     "input_tokens": 812, "output_tokens": 230, "cost": 0.0043, "segment": "free",
     "escalated": true, "score": 0.71}

``escalated`` (the request went to the strong model) and ``segment`` give per-segment
escalation rates; ``score`` (the router's routing score, 0..1) builds the score distribution
that routing thresholds are calibrated on.

``ts`` is RFC 3339 with an offset or Unix seconds; ``latency`` and ``ttft`` are seconds.
Each line is validated whole before anything from it is counted, so a truncated or invalid
line is rejected (and reported with its line number) while the rest of the batch is kept.

Every number has a range, so that one absurd event cannot poison a signal (a cost of 1e308
would make an hour's spend infinite): ``latency`` and ``ttft`` 0 to 1 day, ``input_tokens``
and ``output_tokens`` 0 to 10 million, ``retries`` 0 to 100, ``score`` 0 to 1, and ``cost``
0 to the configured cap (``api.max_event_cost``, default 100).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from collectors.intervals import MinuteCell
from collectors.mapping import SeriesKey

#: Histogram bounds for latency and TTFT built from events (LiteLLM's defaults).
EVENT_BUCKETS = (
    0.005, 0.00625, 0.0125, 0.025, 0.05, 0.1, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0,
    5.5, 6.0, 6.5, 7.0, 7.5, 8.0, 8.5, 9.0, 9.5, 10.0, 15.0, 20.0, 25.0, 30.0, 60.0, 120.0,
    180.0, 240.0, 300.0, math.inf,
)
#: Histogram bounds for routing scores (0..1).
SCORE_BUCKETS = (*(round(0.05 * i, 2) for i in range(1, 21)), math.inf)
MAX_LINE_BYTES = 16_384
#: Longest latency or time to first token an event may report. Measured in seconds (1 day).
MAX_SECONDS = 86_400.0
#: Most tokens one request may report, each way.
MAX_TOKENS = 10_000_000
#: Default cap on one event's ``cost`` (``api.max_event_cost``).
MAX_COST = 100.0
#: Events further in the future than this are refused (clock skew), seconds.
MAX_FUTURE_SKEW = 300.0


class Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    ts: datetime = Field(description="When the request finished: RFC 3339 with an offset, or Unix seconds.")
    provider: str = Field(min_length=1, max_length=128)
    model: str = Field(default="", max_length=256)
    route: str = Field(default="", max_length=256)
    latency: float = Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False,
                           description="Total latency, at most 1 day. Measured in seconds.")
    ttft: float | None = Field(default=None, ge=0, le=MAX_SECONDS, allow_inf_nan=False,
                               description="Time to first token, at most 1 day. Measured in seconds.")
    cache_hit: bool | None = None
    retries: int = Field(default=0, ge=0, le=100)
    status: int = Field(ge=100, le=599, description="HTTP status returned to the caller.")
    input_tokens: int = Field(default=0, ge=0, le=MAX_TOKENS)
    output_tokens: int = Field(default=0, ge=0, le=MAX_TOKENS)
    cost: float = Field(default=0.0, ge=0, allow_inf_nan=False,
                        description="What the request cost, up to api.max_event_cost.")
    segment: str | None = Field(default=None, max_length=128)
    escalated: bool | None = Field(default=None, description="Sent to the strong model (a routed request).")
    score: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False, description="Router's routing score.")

    @field_validator("ts")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("ts needs a timezone offset (e.g. 2026-11-09T14:03:12Z) or Unix seconds")
        return v


@dataclass
class EventBatch:
    """The outcome of one POST: what was accepted and why each rejected line was."""

    accepted: int = 0
    errors: list[dict[str, object]] = field(default_factory=list)
    #: minute -> series -> cell, ready to merge into the aggregator's open minutes
    cells: dict[int, dict[SeriesKey, MinuteCell]] = field(default_factory=dict)
    newest: float | None = None
    #: (minute, route, segment) -> [requests with ``escalated`` known, escalated]
    segments: dict[tuple[int, str, str], list[int]] = field(default_factory=dict)


def _cell(cells: dict[int, dict[SeriesKey, MinuteCell]], minute: int, key: SeriesKey) -> MinuteCell:
    per_minute = cells.setdefault(minute, {})
    c = per_minute.get(key)
    if c is None:
        c = per_minute[key] = MinuteCell()
    return c


def _observe(cell: MinuteCell, value: float, bounds: tuple[float, ...] = EVENT_BUCKETS) -> None:
    """Count ``value`` in its own bucket; :func:`_cumulate` makes the buckets cumulative."""
    le = bounds[bisect.bisect_left(bounds, value)]
    cell.buckets[le] = cell.buckets.get(le, 0.0) + 1.0
    cell.count += 1.0
    cell.sum += value


def _cumulate(cell: MinuteCell, bounds: tuple[float, ...] = EVENT_BUCKETS) -> None:
    running = 0.0
    for le in bounds:
        running += cell.buckets.get(le, 0.0)
        cell.buckets[le] = running


def parse_events(body: bytes, *, now: float, oldest: float, max_cost: float = MAX_COST) -> EventBatch:
    """Validate JSON lines and aggregate the valid ones into minute cells. Never raises for
    bad input: each bad line becomes an error entry ``{"line": n, "error": "..."}``."""
    batch = EventBatch()
    cells = batch.cells
    for n, raw in enumerate(body.split(b"\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        if len(line) > MAX_LINE_BYTES:
            batch.errors.append({"line": n, "error": f"line longer than {MAX_LINE_BYTES} bytes"})
            continue
        try:
            ev = Event.model_validate_json(line)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "line"
            batch.errors.append({"line": n, "error": f"{where}: {first['msg']}"})
            continue
        except (ValueError, OverflowError) as exc:  # e.g. a number too long to convert
            batch.errors.append({"line": n, "error": f"line: {type(exc).__name__}: {str(exc)[:200]}"})
            continue
        if ev.cost > max_cost:
            batch.errors.append({"line": n, "error": f"cost: {ev.cost:g} is over the cap of {max_cost:g} "
                                                     "(api.max_event_cost)"})
            continue
        ts = ev.ts.timestamp()
        if ts > now + MAX_FUTURE_SKEW:
            batch.errors.append({"line": n, "error": f"ts is {ts - now:.0f}s in the future (clock skew?)"})
            continue
        if ts < oldest:
            batch.errors.append({"line": n, "error": "ts is older than the store keeps minutes"})
            continue
        minute = int(ts // 60) * 60
        p, m, r = ev.provider, ev.model, ev.route
        _cell(cells, minute, SeriesKey("requests", p, m, r)).value += 1
        if ev.status == 429:
            _cell(cells, minute, SeriesKey("errors_429", p, m, r)).value += 1
        elif ev.status >= 500:
            _cell(cells, minute, SeriesKey("errors_5xx", p, m, r)).value += 1
        if ev.retries:
            _cell(cells, minute, SeriesKey("retries", p, m, r)).value += ev.retries
        if ev.cache_hit is not None:
            _cell(cells, minute, SeriesKey("cache_hits" if ev.cache_hit else "cache_misses", p, m, r)).value += 1
        if ev.input_tokens:
            _cell(cells, minute, SeriesKey("input_tokens", p, m, r)).value += ev.input_tokens
        if ev.output_tokens:
            _cell(cells, minute, SeriesKey("output_tokens", p, m, r)).value += ev.output_tokens
        if ev.cost:
            _cell(cells, minute, SeriesKey("spend", p, m, r)).value += ev.cost
        _observe(_cell(cells, minute, SeriesKey("latency", p, m, r)), ev.latency)
        if ev.ttft is not None:
            _observe(_cell(cells, minute, SeriesKey("ttft", p, m, r)), ev.ttft)
        if ev.score is not None:
            _observe(_cell(cells, minute, SeriesKey("score", p, m, r)), ev.score, SCORE_BUCKETS)
        if ev.escalated is not None:
            tally = batch.segments.setdefault((minute, r, ev.segment or ""), [0, 0])
            tally[0] += 1
            tally[1] += int(ev.escalated)
        batch.accepted += 1
        batch.newest = ts if batch.newest is None else max(batch.newest, ts)
    for per_key in cells.values():
        for key, c in per_key.items():
            if key.signal in ("latency", "ttft"):
                _cumulate(c)
            elif key.signal == "score":
                _cumulate(c, SCORE_BUCKETS)
    return batch
