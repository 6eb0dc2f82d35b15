"""Property tests of what diurnal parses from outside: exposition text, event lines, and what
reaches the store. No input crashes them, and nothing non-finite is ever stored.

``make test`` runs a short pass; ``make reliability`` runs them long
(``DIURNAL_FUZZ_EXAMPLES``)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectors.errors import ExpositionError
from collectors.events import parse_events
from collectors.exposition import ExpositionParser
from collectors.intervals import MinuteCell, MinuteRow
from collectors.mapping import SeriesKey
from collectors.store import Store

EXAMPLES = int(os.environ.get("DIURNAL_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC).timestamp()

numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**400), 10**400),
                    st.sampled_from(["NaN", "+Inf", "-Inf", "1e308", "1e999", "-0", "0x10", ""]))
names = st.sampled_from(["litellm_deployment_total_requests_total", "litellm_request_total_latency_metric_bucket",
                         "litellm_spend_metric_total", "x", "a:b_c", "9bad", ""])
labels = st.dictionaries(st.sampled_from(["api_provider", "litellm_model_name", "le", "model", "quantile", 'x"y']),
                         st.text(max_size=8), max_size=4)


@st.composite
def exposition_lines(draw: st.DrawFn) -> str:
    out = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.integers(0, 3))
        if kind == 0:
            out.append(draw(st.text(max_size=60)))  # anything at all
        elif kind == 1:
            out.append(f"# TYPE {draw(names)} {draw(st.sampled_from(['counter', 'histogram', 'gauge', 'bogus']))}")
        else:
            lab = ",".join(f'{k}="{v}"' for k, v in draw(labels).items())
            out.append(f"{draw(names)}{{{lab}}} {draw(numbers)}")
    return "\n".join(out) + draw(st.sampled_from(["", "\n", "\n# EOF\n"]))


@FUZZ
@given(exposition_lines(), st.sampled_from([None, "text/plain; version=0.0.4",
                                            "application/openmetrics-text; version=1.0.0"]))
def test_the_exposition_parser_raises_only_its_own_error(text: str, content_type: str | None) -> None:
    try:
        samples = ExpositionParser().parse(text, content_type=content_type)
    except ExpositionError:
        return
    for s in samples:
        assert isinstance(s.value, float)


event_values = st.one_of(numbers, st.text(max_size=5), st.booleans(), st.none(), st.lists(st.integers(), max_size=2))


@st.composite
def event_bodies(draw: st.DrawFn) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 8))):
        if draw(st.booleans()):
            lines.append(draw(st.binary(max_size=80)))
            continue
        ev: dict[str, object] = {"ts": draw(st.one_of(st.just(NOW - 30), numbers)), "provider": draw(st.text(max_size=4)),
                                 "status": draw(st.one_of(st.sampled_from([200, 429, 503]), event_values))}
        for f in ("latency", "ttft", "input_tokens", "output_tokens", "cost", "retries", "score"):
            if draw(st.booleans()):
                ev[f] = draw(event_values)
        try:
            lines.append(json.dumps(ev, allow_nan=True).encode())
        except (ValueError, OverflowError):
            lines.append(repr(ev).encode())
    return b"\n".join(lines)


@FUZZ
@given(event_bodies())
def test_event_lines_never_raise_and_accepted_cells_are_finite(body: bytes) -> None:
    batch = parse_events(body, now=NOW, oldest=NOW - 7 * 86400)
    assert batch.accepted + len(batch.errors) <= body.count(b"\n") + 1
    for per_key in batch.cells.values():
        for cell in per_key.values():
            assert all(math.isfinite(v) for v in (cell.value, cell.count, cell.sum, *cell.buckets.values()))


cells = st.builds(MinuteCell, value=st.floats(allow_nan=True, allow_infinity=True),
                  count=st.floats(allow_nan=True, allow_infinity=True), sum=st.floats(allow_nan=True, allow_infinity=True),
                  buckets=st.dictionaries(st.sampled_from([0.5, 1.0, math.inf]),
                                          st.floats(allow_nan=True, allow_infinity=True), max_size=3))


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["requests", "spend", "latency"]), st.integers(0, 5), cells), max_size=12))
def test_the_store_never_holds_a_non_finite_number(rows: list[tuple[str, int, MinuteCell]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        store = Store(Path(d), tz="America/New_York")
        try:
            store.write([MinuteRow(1_700_000_000 + 60 * m, SeriesKey(sig, "p", "m", ""), cell) for sig, m, cell in rows])
            store.journal({1_700_000_600: {SeriesKey(sig, "p", "m", ""): cell for sig, _, cell in rows}})
            store.recover_open()
            assert store.non_finite() == 0
        finally:
            store.close()
