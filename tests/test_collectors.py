from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.errors import ExpositionError
from collectors.exposition import parse_exposition
from collectors.intervals import MinuteAggregator, _overlaps
from collectors.mapping import LITELLM, Mapper, SeriesKey
from collectors.quantile import bucket_quantile

TEXT = """\
# TYPE litellm_deployment_total_requests counter
litellm_deployment_total_requests_total{api_provider="openai",litellm_model_name="gpt-4o",requested_model="chat"} 10
litellm_deployment_total_requests_total{api_provider="azure",litellm_model_name="azure-gpt-4o",requested_model="chat"} 4
# TYPE litellm_deployment_failure_responses counter
litellm_deployment_failure_responses_total{api_provider="openai",exception_status="429",requested_model="chat"} 2
litellm_deployment_failure_responses_total{api_provider="openai",exception_status="503",requested_model="chat"} 1
litellm_deployment_failure_responses_total{api_provider="openai",exception_status="400",requested_model="chat"} 7
# TYPE litellm_llm_api_latency_metric histogram
litellm_llm_api_latency_metric_bucket{model="gpt-4o",requested_model="chat",le="1.0"} 3
litellm_llm_api_latency_metric_bucket{model="gpt-4o",requested_model="chat",le="2.0"} 8
litellm_llm_api_latency_metric_bucket{model="gpt-4o",requested_model="chat",le="+Inf"} 10
litellm_llm_api_latency_metric_sum{model="gpt-4o",requested_model="chat"} 14.5
litellm_llm_api_latency_metric_count{model="gpt-4o",requested_model="chat"} 10
# TYPE unrelated_metric gauge
unrelated_metric 5
"""


def mapper() -> Mapper:
    return Mapper(LITELLM, {"gpt-4o": "openai"})


def test_litellm_preset_maps_signals_and_providers() -> None:
    matched = mapper().map(parse_exposition(TEXT))
    by_signal: dict[str, list[SeriesKey]] = {}
    for m in matched:
        by_signal.setdefault(m.key.signal, []).append(m.key)
    assert {k.provider for k in by_signal["requests"]} == {"openai", "azure"}
    assert len(by_signal["errors_429"]) == 1 and len(by_signal["errors_5xx"]) == 1  # 400 is neither
    assert {k.provider for k in by_signal["latency"]} == {"openai"}
    assert all(k.route == "chat" for ks in by_signal.values() for k in ks)


@pytest.mark.parametrize(
    ("text", "content_type"),
    [
        pytest.param('metric{label="unterminated} 1\n', None, id="unterminated-label"),
        pytest.param("m{a=1} 2\n", None, id="unquoted-label-value"),
        pytest.param("metric not-a-number\n", None, id="bad-value"),
        pytest.param("{} 1\n", None, id="no-metric-name"),
        pytest.param('m{a="1"} 1\n# EOF\nm 2\n', "application/openmetrics-text", id="openmetrics-after-eof"),
        pytest.param("m 1\n", "application/openmetrics-text", id="openmetrics-without-eof"),
    ],
)
def test_malformed_exposition_is_rejected_whole(text: str, content_type: str | None) -> None:
    with pytest.raises(ExpositionError, match=r"malformed .+: \S"):
        parse_exposition(text, content_type=content_type)


def test_openmetrics_is_parsed() -> None:
    text = "# TYPE litellm_spend_metric counter\nlitellm_spend_metric_total{model=\"gpt-4o\"} 1.5\n# EOF\n"
    samples = parse_exposition(text, content_type="application/openmetrics-text; version=1.0.0")
    assert [(s.name, s.value) for s in samples] == [("litellm_spend_metric_total", 1.5)]


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        pytest.param(0.5, {1.0: 3, 2.0: 8, math.inf: 10}, 1.0 + (5 - 3) / 5, id="interpolate-in-bucket"),
        pytest.param(0.1, {1.0: 3, 2.0: 8, math.inf: 10}, 1.0 * 1 / 3, id="first-bucket-from-zero"),
        pytest.param(0.95, {1.0: 3, 2.0: 8, math.inf: 10}, 2.0, id="inf-bucket-gives-top-bound"),
        pytest.param(0.5, {1.0: 0, math.inf: 0}, math.nan, id="empty"),
        pytest.param(0.5, {}, math.nan, id="no-buckets"),
    ],
)
def test_bucket_quantile_matches_promql(q: float, buckets: dict[float, float], expected: float) -> None:
    got = bucket_quantile(q, buckets)
    assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)


def _counter(value: float, provider: str = "openai") -> str:
    return (f'litellm_deployment_total_requests_total{{api_provider="{provider}",'
            f'requested_model="chat"}} {value}\n')


def _total(agg: MinuteAggregator) -> float:
    return sum(r.cell.value for r in agg.close_all())


def test_counter_reset_counts_new_value_as_increase() -> None:
    m, agg = mapper(), MinuteAggregator()
    seen = []
    for t, v in [(0, 100), (60, 150), (120, 20), (180, 50)]:  # router restarted before t=120
        seen.append(agg.ingest(m.map(parse_exposition(_counter(v))), t))
    assert sum(s.counter_resets for s in seen) == 1
    assert _total(agg) == pytest.approx(50 + 20 + 30)


@pytest.mark.parametrize(
    ("value", "kind"),
    [pytest.param("NaN", "non_finite", id="nan"), pytest.param("+Inf", "non_finite", id="inf")],
)
def test_non_finite_values_are_skipped_and_counted(value: str, kind: str) -> None:
    m, agg = mapper(), MinuteAggregator()
    agg.ingest(m.map(parse_exposition(_counter(10))), 0)
    stats = agg.ingest(m.map(parse_exposition(_counter(value))), 60)  # type: ignore[arg-type]
    assert getattr(stats, kind) == 1
    agg.ingest(m.map(parse_exposition(_counter(25))), 120)
    assert _total(agg) == pytest.approx(15)


def test_out_of_order_and_duplicate_scrapes_are_ignored() -> None:
    m, agg = mapper(), MinuteAggregator()
    agg.ingest(m.map(parse_exposition(_counter(10))), 100)
    assert agg.ingest(m.map(parse_exposition(_counter(5))), 50).out_of_order == 1
    assert agg.ingest(m.map(parse_exposition(_counter(10))), 100).out_of_order == 1
    agg.ingest(m.map(parse_exposition(_counter(30))), 160)
    assert _total(agg) == pytest.approx(20)


def test_delta_is_spread_over_the_minutes_it_covers() -> None:
    assert _overlaps(30, 150) == [(0, 0.25), (60, 0.5), (120, 0.25)]
    m, agg = mapper(), MinuteAggregator()
    agg.ingest(m.map(parse_exposition(_counter(0))), 30)
    agg.ingest(m.map(parse_exposition(_counter(120))), 150)
    rows = {r.ts: r.cell.value for r in agg.close_all()}
    assert rows == pytest.approx({0: 30, 60: 60, 120: 30})


scrape_values = st.lists(
    st.tuples(st.integers(min_value=-120, max_value=900),  # seconds since the previous scrape; <= 0: a
              # duplicate or out-of-order scrape, which must be ignored
              st.one_of(st.floats(min_value=0, max_value=1e6), st.just(math.nan), st.just(math.inf))),
    min_size=1, max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(scrape_values)
def test_totals_are_conserved_across_resets_gaps_and_junk(steps: list[tuple[int, float]]) -> None:
    m, agg = mapper(), MinuteAggregator()
    t, newest, expected, prev = 1000, None, 0.0, None
    for jump, value in steps:
        t += jump
        agg.ingest(m.map(parse_exposition(_counter(value))), t)  # never raises
        if not math.isfinite(value):
            continue
        if newest is not None and t <= newest:
            continue  # out of order or duplicate: ignored
        if prev is not None:
            expected += value if value < prev else value - prev
        prev, newest = value, t
    assert _total(agg) == pytest.approx(expected, rel=1e-9, abs=1e-6)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.integers(min_value=0, max_value=50), min_size=3, max_size=3), min_size=2, max_size=20),
       st.booleans())
def test_histogram_bucket_deltas_stay_cumulative(increments: list[list[int]], flap_bucket: bool) -> None:
    """Per-bucket increments in three bands (<=1, <=2, >2); the le=2 bucket may come and go."""
    m, agg = mapper(), MinuteAggregator()
    for i in range(len(increments)):
        upto = increments[: i + 1]
        cum1 = sum(step[0] for step in upto)
        cum2 = cum1 + sum(step[1] for step in upto)
        cum3 = cum2 + sum(step[2] for step in upto)
        lines = [f'litellm_llm_api_latency_metric_bucket{{model="gpt-4o",le="1.0"}} {cum1}']
        if not (flap_bucket and i % 2):
            lines.append(f'litellm_llm_api_latency_metric_bucket{{model="gpt-4o",le="2.0"}} {cum2}')
        lines.append(f'litellm_llm_api_latency_metric_bucket{{model="gpt-4o",le="+Inf"}} {cum3}')
        agg.ingest(m.map(parse_exposition("\n".join(lines) + "\n")), 60.0 * (i + 1))
    rows = agg.close_all()
    inf_total = sum(r.cell.buckets.get(math.inf, 0.0) for r in rows)
    assert inf_total == pytest.approx(sum(sum(step) for step in increments[1:]))
    le1_total = sum(r.cell.buckets.get(1.0, 0.0) for r in rows)
    assert le1_total == pytest.approx(sum(step[0] for step in increments[1:]))
    for r in rows:
        assert r.cell.buckets.get(1.0, 0.0) <= r.cell.buckets.get(math.inf, 0.0) + 1e-9


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["openai", "a}b", 'q"x', "p q", "x\\y"]),
                          st.one_of(st.floats(allow_nan=False), st.just(math.nan))), min_size=1, max_size=8))
def test_cached_parser_agrees_with_prometheus_client(rows: list[tuple[str, float]]) -> None:
    from collectors.exposition import ExpositionParser

    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"')

    lines = ["# TYPE litellm_spend_metric counter"]
    lines += [f'litellm_spend_metric_total{{model="{esc(m)}",i="{i}"}} {v!r}' for i, (m, v) in enumerate(rows)]
    text = "\n".join(lines).replace("nan", "NaN").replace("inf", "Inf") + "\n"
    parser = ExpositionParser()
    for _ in range(2):  # cold, then from the cache
        got = parser.parse(text)
        want = parse_exposition(text)
        assert [(s.name, s.labels) for s in got] == [(s.name, s.labels) for s in want]
        assert all((math.isnan(a.value) and math.isnan(b.value)) or a.value == b.value for a, b in zip(got, want, strict=True))


def test_cached_parser_still_rejects_a_bad_value_for_a_known_series() -> None:
    from collectors.exposition import ExpositionParser

    parser = ExpositionParser()
    parser.parse('m{a="1"} 1\n')
    with pytest.raises(ExpositionError):
        parser.parse('m{a="1"} one\n')


def test_window_totals_read_every_signal_as_the_points_themselves_give_it() -> None:
    """The tick sums each provider's window once; every derived signal read from those totals
    (and from all providers' points summed together) equals the signal computed from the points."""
    from collectors.signals import DERIVED, WindowTotals, rows_value
    from collectors.store import CounterPoint, HistPoint

    counters, hists = [], []
    for i, provider in enumerate(("a", "b", "c")):
        for minute in range(5 + i):
            ts = 60 * (minute + i)
            for signal, v in (("requests", 10.0 + i), ("retries", 1.0), ("errors_429", float(i)),
                              ("cache_hits", 3.0), ("cache_misses", 2.0 + i), ("spend", 0.5)):
                counters.append(CounterPoint(ts, SeriesKey(signal, provider, "m", "r"), v))
            hists.append(HistPoint(ts, SeriesKey("latency", provider, "m", "r"), 10.0, 12.0,
                                   {0.5: 2.0 + i, 1.0: 6.0, 2.0: 9.0, math.inf: 10.0}))
    per = {p: WindowTotals.of([c for c in counters if c.key.provider == p], [h for h in hists if h.key.provider == p])
           for p in "abc"}
    together = WindowTotals.of(counters, hists)
    for name in DERIVED:
        expect = rows_value(name, counters, hists)
        got = together.value(name)
        assert (math.isnan(expect) and math.isnan(got)) or got == pytest.approx(expect), name
        one = rows_value(name, [c for c in counters if c.key.provider == "b"], [h for h in hists if h.key.provider == "b"])
        assert (math.isnan(one) and math.isnan(per["b"].value(name))) or per["b"].value(name) == pytest.approx(one)
