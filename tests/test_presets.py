"""Presets and the label policy, each on a realistic exposition."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collectors.exposition import parse_exposition
from collectors.intervals import MinuteAggregator
from collectors.mapping import LITELLM, OTEL_GENAI, Mapper, SeriesKey
from controller import ConfigError, Controller, load_settings
from controller.collect import build_mapper
from sim import STATIC_WEIGHTS, SimulatedRouter, WorldSpec

FIXTURES = Path(__file__).parent / "fixtures"
T0 = datetime(2026, 11, 9, 14, tzinfo=UTC)


def scaled(text: str, factor: float) -> str:
    """The same exposition with every sample value multiplied (a later scrape)."""
    return re.sub(r"(?m)^([^#].*\}) (\S+)$", lambda m: f"{m.group(1)} {float(m.group(2)) * factor}", text)


def totals(mapper: Mapper, text: str) -> dict[tuple[str, str], float]:
    agg = MinuteAggregator()
    agg.ingest(mapper.map(parse_exposition(text)), 0)
    agg.ingest(mapper.map(parse_exposition(scaled(text, 2))), 60)
    out: dict[tuple[str, str], float] = {}
    for r in agg.close_all():
        k = (r.key.signal, r.key.provider)
        out[k] = out.get(k, 0) + (r.cell.value or r.cell.count or r.cell.buckets.get(math.inf, 0.0))
    return out


def test_otel_genai_preset_reads_envoy_ai_gateway_metrics() -> None:
    got = totals(Mapper(OTEL_GENAI), (FIXTURES / "otel_genai.prom").read_text())
    assert got[("requests", "openai")] == 96          # 90 ok + 6 rate-limited
    assert got[("errors_429", "openai")] == 6
    assert got[("input_tokens", "openai")] == 72000 and got[("output_tokens", "openai")] == 18000
    assert got[("latency", "openai")] == 96 and got[("ttft", "openai")] == 84
    assert ("errors_5xx", "openai") not in got
    keys = {m.key for m in Mapper(OTEL_GENAI).map(parse_exposition((FIXTURES / "otel_genai.prom").read_text()))}
    assert SeriesKey("latency", "openai", "gpt-4o-2024-08-06", "chat") in keys  # response model wins


def test_litellm_preset_reads_a_real_proxy_exposition() -> None:
    """``fixtures/litellm-1.108.7.prom``: the /metrics of a real LiteLLM 1.108.7 proxy
    (``litellm[proxy]``, ``callbacks: ["prometheus"]``, one model group of two mock
    deployments) after 6 requests, one served by openai/gpt-4o and 5 by anthropic."""
    text = (FIXTURES / "litellm-1.108.7.prom").read_text()
    got = totals(Mapper(LITELLM, {"gpt-4o": "openai", "claude-sonnet-4": "anthropic"}), text)
    assert got[("requests", "openai")] == 1 and got[("requests", "anthropic")] == 5
    assert got[("latency", "openai")] == 1 and got[("latency", "anthropic")] == 5
    assert got[("input_tokens", "anthropic")] == 50 and ("output_tokens", "anthropic") in got
    assert ("spend", "openai") in got


def test_litellm_preset_reads_errors_fallbacks_cache_and_ttft_from_a_real_proxy() -> None:
    """``fixtures/litellm-1.108.7-errors-fallbacks-cache-stream.prom``: a real LiteLLM 1.108.7
    proxy whose deployments call simulated providers on loopback (:mod:`sim.upstream`):
    group ``chat`` = openai + deepseek (answering 429 to every call), falling back to group
    ``backup`` = mistral; an in-memory cache; 12 distinct prompts, 4 repeated ones, 4
    streamed requests to ``backup``."""
    got = totals(Mapper(LITELLM), (FIXTURES / "litellm-1.108.7-errors-fallbacks-cache-stream.prom").read_text())
    assert got[("requests", "openai")] == 8 and got[("requests", "deepseek")] == 8 and got[("requests", "mistral")] == 10
    assert got[("errors_429", "deepseek")] == 6 and ("errors_5xx", "deepseek") not in got
    # LiteLLM labels a fallback with the group that failed, not a deployment or provider
    assert got[("retries", "unknown")] == 6
    assert got[("cache_hits", "deepseek")] == 2 and got[("cache_hits", "openai")] == 1
    assert got[("cache_misses", "mistral")] == 4
    assert got[("latency", "openai")] == 7 and got[("latency", "mistral")] == 10
    assert ("latency", "deepseek") not in got  # no call of it was answered: nothing timed
    assert got[("ttft", "mistral")] == 4  # the streamed requests
    assert got[("input_tokens", "mistral")] == 120 and got[("output_tokens", "openai")] == 40
    assert got[("spend", "openai")] > 0 and got[("spend", "mistral")] > 0


def test_otel_genai_without_unit_suffix() -> None:
    text = (FIXTURES / "otel_genai.prom").read_text().replace("gen_ai_server_request_duration_seconds",
                                                                 "gen_ai_server_request_duration")
    assert totals(Mapper(OTEL_GENAI), text)[("requests", "openai")] == 96


def test_generic_preset_from_settings() -> None:
    settings = load_settings(router={
        "preset": "generic",
        "mapping": {"counters": {"requests": {"metric": "myrouter_requests_total"},
                                 "errors_429": {"metric": "myrouter_requests_total", "match": {"code": "429"}}},
                    "histograms": {"latency": "myrouter_latency_seconds"},
                    "provider_labels": ["upstream"], "model_labels": ["llm"], "route_labels": ["path"]}})
    text = ("# TYPE myrouter_requests_total counter\n"
            'myrouter_requests_total{upstream="groq",llm="llama",path="/chat",code="200"} 40\n'
            'myrouter_requests_total{upstream="groq",llm="llama",path="/chat",code="429"} 2\n'
            "# TYPE myrouter_latency_seconds histogram\n"
            'myrouter_latency_seconds_bucket{upstream="groq",llm="llama",path="/chat",le="1"} 30\n'
            'myrouter_latency_seconds_bucket{upstream="groq",llm="llama",path="/chat",le="+Inf"} 40\n'
            'myrouter_latency_seconds_count{upstream="groq",llm="llama",path="/chat"} 40\n')
    got = totals(build_mapper(settings), text)
    assert got[("requests", "groq")] == 42 and got[("errors_429", "groq")] == 2 and got[("latency", "groq")] == 40


def test_generic_preset_without_a_mapping_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="router"):
        load_settings(router={"preset": "generic"})


def test_allow_list_and_series_cap_drop_and_count() -> None:
    text = "".join(f'litellm_deployment_total_requests_total{{api_provider="p{i}",requested_model="r"}} 1\n'
                   for i in range(10))
    allow = Mapper(LITELLM, allow={"provider": ("p1", "p2")})
    assert {m.key.provider for m in allow.map(parse_exposition(text))} == {"p1", "p2"}
    assert allow.dropped["not_allowed"] == 8
    capped = Mapper(LITELLM, max_series=3)
    assert len({m.key for m in capped.map(parse_exposition(text))}) == 3
    assert capped.dropped["series_cap"] == 7
    capped.map(parse_exposition(text))  # the admitted series keep flowing; the rest stay out
    assert capped.series_count == 3 and capped.dropped["series_cap"] == 14


def test_dropping_a_dimension_merges_series() -> None:
    text = "".join(f'litellm_deployment_total_requests_total{{api_provider="openai",litellm_model_name="m{i}",'
                   f'requested_model="r{i}"}} {i}\n' for i in range(5))
    merged = Mapper(LITELLM, keep_labels=())
    assert {m.key for m in merged.map(parse_exposition(text))} == {SeriesKey("requests", "openai")}


def test_label_explosion_is_capped_in_the_controller(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, router={"max_series": 50})
    ctl = Controller.from_settings(settings)
    for step in range(3):
        text = "".join(f'litellm_deployment_total_requests_total{{api_provider="p",litellm_model_name="m{i}",'
                       f'requested_model="chat"}} {step * 10}\n' for i in range(5000))
        ctl.ingest_exposition(text, at=T0 + timedelta(minutes=step))
    ctl.step(at=T0 + timedelta(minutes=3))
    assert ctl.stored_series_count() == 50
    dropped = ctl.registry.get_sample_value("diurnal_dropped_samples_total", {"reason": "series_cap"})
    assert dropped is not None and dropped >= 3 * 4950
    ctl.close()
    again = Controller.from_settings(settings)  # the cap counts what is already stored
    assert again.mapper.series_count == 50
    again.close()


def test_histogram_bucket_layout_change_keeps_totals() -> None:
    m, agg = Mapper(LITELLM, {"gpt-4o": "openai"}), MinuteAggregator()
    first = ('litellm_llm_api_latency_metric_bucket{model="gpt-4o",le="1.0"} 5\n'
             'litellm_llm_api_latency_metric_bucket{model="gpt-4o",le="+Inf"} 10\n')
    second = ('litellm_llm_api_latency_metric_bucket{model="gpt-4o",le="0.5"} 2\n'
              'litellm_llm_api_latency_metric_bucket{model="gpt-4o",le="1.0"} 9\n'
              'litellm_llm_api_latency_metric_bucket{model="gpt-4o",le="+Inf"} 18\n')
    agg.ingest(m.map(parse_exposition(first)), 0)
    agg.ingest(m.map(parse_exposition(second)), 60)
    [row] = agg.close_all()
    assert row.cell.buckets[math.inf] == 8 and row.cell.buckets[1.0] == 4
    assert 0.5 not in row.cell.buckets  # a new bound only counts from its second sighting


def test_simulated_router_through_litellm_preset_conserves_requests(tmp_path: Path) -> None:
    spec = WorldSpec()
    router = SimulatedRouter(spec, seed=2, start=T0, weights=STATIC_WEIGHTS)
    m, agg = Mapper(LITELLM, spec.model_providers()), MinuteAggregator()
    for minute in range(0, 61, 5):
        router.advance(T0 + timedelta(minutes=minute))
        agg.ingest(m.map(parse_exposition(router.exposition())), (T0 + timedelta(minutes=minute)).timestamp())
    stored = sum(r.cell.value for r in agg.close_all() if r.key.signal == "requests")
    assert stored == pytest.approx(router.truth()["requests"].sum(), rel=1e-12)


def test_litellm_fallbacks_and_ttft() -> None:
    text = ('litellm_deployment_successful_fallbacks_total{requested_model="chat",fallback_model="claude",'
            'api_provider="openai"} 3\n'
            'litellm_deployment_failed_fallbacks_total{requested_model="chat",fallback_model="claude",'
            'api_provider="openai"} 1\n'
            'litellm_llm_api_time_to_first_token_metric_bucket{model="gpt-4o",le="0.5"} 8\n'
            'litellm_llm_api_time_to_first_token_metric_bucket{model="gpt-4o",le="+Inf"} 10\n')
    got = totals(Mapper(LITELLM, {"gpt-4o": "openai"}), text)
    assert got[("retries", "openai")] == 4 and got[("ttft", "openai")] == 10
