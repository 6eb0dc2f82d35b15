"""A signal the weights policy needs that the router does not export is loud, for every
preset: ``MissingSignal`` on the decision with the metric names tried, the
``diurnal_signal_present`` gauge, one warning, and ``/readyz`` says so. Weights stay at the
baseline. And LiteLLM's latency falls back to the proxy's whole-request latency."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from collectors.exposition import parse_exposition
from collectors.mapping import LITELLM, Mapper
from controller import Controller, ReasonCode, load_settings
from controller.entrypoints.api import create_app
from tests.test_presets import scaled, totals

FIXTURES = Path(__file__).parent / "fixtures"
LITELLM_TEXT = (FIXTURES / "litellm-1.108.7.prom").read_text()
T0 = datetime(2026, 11, 9, 14, tzinfo=UTC)


def without(text: str, metric: str) -> str:
    """The exposition with every sample and comment of ``metric`` removed."""
    return "\n".join(line for line in text.splitlines() if metric not in line) + "\n"


def test_litellm_latency_falls_back_to_the_whole_request_latency() -> None:
    mapper = Mapper(LITELLM)
    both = totals(mapper, LITELLM_TEXT)
    assert both[("latency", "openai")] == 1 and both[("latency", "anthropic")] == 5  # one metric, not both
    assert mapper.last_fallbacks == {}

    mapper = Mapper(LITELLM)
    only_total = totals(mapper, without(LITELLM_TEXT, "litellm_llm_api_latency_metric"))
    assert only_total[("latency", "openai")] == 1 and only_total[("latency", "anthropic")] == 5
    assert mapper.last_fallbacks == {"latency": "litellm_request_total_latency_metric"}
    # The per-output-token latency is seconds per token: never read as a latency.
    neither = without(without(LITELLM_TEXT, "litellm_llm_api_latency_metric"), "litellm_request_total_latency_metric")
    assert "litellm_deployment_latency_per_output_token" in neither
    assert ("latency", "openai") not in totals(Mapper(LITELLM), neither)


def test_the_fallback_is_chosen_per_scrape() -> None:
    mapper = Mapper(LITELLM)
    only_total = without(LITELLM_TEXT, "litellm_llm_api_latency_metric")
    assert {m.raw_id[1] for m in mapper.map(parse_exposition(only_total)) if m.key.signal == "latency"} \
        == {"litellm_request_total_latency_metric_bucket", "litellm_request_total_latency_metric_sum",
            "litellm_request_total_latency_metric_count"}
    assert {m.raw_id[1].rsplit("_", 1)[0] for m in mapper.map(parse_exposition(LITELLM_TEXT))
            if m.key.signal == "latency"} == {"litellm_llm_api_latency_metric"}


GENERIC_TEXT = """# TYPE myrouter_requests_total counter
myrouter_requests_total{upstream="openai"} 40
myrouter_requests_total{upstream="anthropic"} 60
# TYPE myrouter_latency_seconds histogram
myrouter_latency_seconds_bucket{upstream="openai",le="1"} 30
myrouter_latency_seconds_bucket{upstream="openai",le="+Inf"} 40
myrouter_latency_seconds_count{upstream="openai"} 40
myrouter_latency_seconds_sum{upstream="openai"} 20
myrouter_latency_seconds_bucket{upstream="anthropic",le="1"} 50
myrouter_latency_seconds_bucket{upstream="anthropic",le="+Inf"} 60
myrouter_latency_seconds_count{upstream="anthropic"} 60
myrouter_latency_seconds_sum{upstream="anthropic"} 30
"""
GENERIC_ROUTER = {"preset": "generic", "mapping": {
    "counters": {"requests": {"metric": "myrouter_requests_total"}},
    "histograms": {"latency": "myrouter_latency_seconds"}, "provider_labels": ["upstream"]}}

OTEL_TEXT = (FIXTURES / "otel_genai.prom").read_text()

#: preset -> (router settings, exposition with latency, exposition without, providers, names tried)
CASES: dict[str, tuple[dict[str, Any], str, str, tuple[str, ...], tuple[str, ...]]] = {
    "litellm": ({"preset": "litellm"}, LITELLM_TEXT,
                without(without(LITELLM_TEXT, "litellm_llm_api_latency_metric"), "litellm_request_total_latency_metric"),
                ("openai", "anthropic"), ("litellm_llm_api_latency_metric", "litellm_request_total_latency_metric")),
    "otel-genai": ({"preset": "otel-genai"}, OTEL_TEXT,
                   # a gateway exporting token usage only: its requests come from the duration
                   # histogram's count, so both are missing
                   without(without(OTEL_TEXT, "gen_ai_server_request_duration"), "gen_ai_server_time_to_first_token"),
                   ("openai",), ("gen_ai_server_request_duration_seconds",)),
    "generic": (GENERIC_ROUTER, GENERIC_TEXT, without(GENERIC_TEXT, "myrouter_latency_seconds"),
                ("openai", "anthropic"), ("myrouter_latency_seconds",)),
}


def controller(tmp_path: Path, router: dict[str, Any], providers: tuple[str, ...]) -> Controller:
    baseline = {p: 1 / len(providers) for p in providers}
    settings = load_settings(
        data_dir=str(tmp_path / "data"), timezone="America/New_York", router=router,
        guardrails={"mode": "act", "stale_after_seconds": 600},
        policy={"latency_slo_seconds": 2.0, "providers": {p: {"baseline_weight": w} for p, w in baseline.items()}})
    return Controller.from_settings(settings, clock=lambda: T0)


def run(ctl: Controller, text: str, minutes: int = 8, first: int = 0) -> None:
    for i in range(first, first + minutes):
        at = T0 + timedelta(minutes=i, seconds=30)
        ctl.ingest_exposition(scaled(text, 1 + i), at=at)
        ctl.step(at=at)


@pytest.mark.parametrize("preset", list(CASES))
def test_a_preset_without_its_latency_metric_says_missing_signal(
        preset: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    router, _, lacking, providers, tried = CASES[preset]
    ctl = controller(tmp_path, router, providers)
    with caplog.at_level(logging.WARNING, logger="diurnal"):
        run(ctl, lacking)
    decision = ctl.decision
    assert decision is not None
    missing = {r.knob: r.message for r in decision.reasons if r.code == ReasonCode.MissingSignal}
    assert set(missing) == {f"weights/{p}" for p in providers}
    for message in missing.values():
        assert "no latency" in message and all(name in message for name in tried)
    assert decision.weights == ctl.policy_config().baseline()
    assert ctl.fallback_reasons() == [ReasonCode.MissingSignal]
    for p in providers:
        assert ctl.registry.get_sample_value("diurnal_signal_present", {"signal": "latency", "provider": p}) == 0
        assert ctl.registry.get_sample_value("diurnal_signal_present", {"signal": "requests", "provider": p}) \
            == (preset != "otel-genai")
    warnings = [r for r in caplog.records if "weights policy needs" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # one, not one per tick
    assert all(name in warnings[0].getMessage() for name in tried)
    ready = TestClient(create_app(ctl)).get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "degraded"
    got = {(m["provider"], m["signal"]): m["tried"] for m in ready.json()["missing_signals"]}
    assert {p: got[(p, "latency")] for p in providers} == {p: list(tried) for p in providers}


@pytest.mark.parametrize("preset", list(CASES))
def test_a_preset_with_its_latency_metric_is_not_missing_anything(preset: str, tmp_path: Path) -> None:
    router, complete, _, providers, _ = CASES[preset]
    ctl = controller(tmp_path, router, providers)
    run(ctl, complete)
    assert ctl.decision is not None
    assert not [r for r in ctl.decision.reasons if r.code == ReasonCode.MissingSignal]
    assert ctl.missing == []
    assert TestClient(create_app(ctl)).get("/readyz").json()["status"] == "ready"


def test_a_provider_named_unlike_the_routers_label_is_missing_its_requests(tmp_path: Path) -> None:
    """``policy.providers`` says azure, the router says openai: loud, not silently idle."""
    ctl = controller(tmp_path, GENERIC_ROUTER, ("azure", "anthropic"))
    run(ctl, GENERIC_TEXT)
    assert ctl.decision is not None
    reasons = {r.knob: r.message for r in ctl.decision.reasons if r.code == ReasonCode.MissingSignal}
    assert list(reasons) == ["weights/azure"]
    assert "no requests for provider 'azure'" in reasons["weights/azure"]
    assert "myrouter_requests_total" in reasons["weights/azure"]


def test_missing_signal_needs_a_whole_window_of_input(tmp_path: Path) -> None:
    """A router's series appear with its first requests: nothing is missing before the
    input has flowed for an observation window."""
    router, _, lacking, providers, _ = CASES["generic"]
    ctl = controller(tmp_path, router, providers)
    run(ctl, lacking, minutes=3)
    assert ctl.missing == []
    run(ctl, lacking, minutes=5, first=3)
    assert {m.signal for m in ctl.missing} == {"latency"}
    run(ctl, GENERIC_TEXT, minutes=1, first=8)  # the signal appears: nothing is missing any more
    assert ctl.missing == []


def test_a_provider_given_no_share_is_not_missing_its_requests(tmp_path: Path) -> None:
    """Pushed events (or a router that drops idle series) carry nothing for a provider the
    decision gives no share: that is no missing signal."""
    ctl = controller(tmp_path, GENERIC_ROUTER, ("openai", "anthropic", "mistral"))
    ctl.overrides.add("weights/mistral", 0.0, T0 + timedelta(hours=1), "drained", T0)
    run(ctl, GENERIC_TEXT)
    assert ctl.decision is not None and ctl.decision.weights["mistral"] == 0.0
    assert ctl.missing == []


def test_a_provider_failing_every_call_has_no_latency_to_miss(tmp_path: Path) -> None:
    """deepseek answers 429 to every call in the real proxy's exposition: the router timed
    none of them, which is the error budget's business, not a missing signal."""
    text = (FIXTURES / "litellm-1.108.7-errors-fallbacks-cache-stream.prom").read_text()
    ctl = controller(tmp_path, {"preset": "litellm"}, ("openai", "deepseek", "mistral"))
    run(ctl, text)
    assert ctl.missing == []
    assert ctl.decision is not None
    reasons = {r.knob: r.code for r in ctl.decision.reasons}
    assert reasons["weights/deepseek"] != ReasonCode.MissingSignal


def test_a_router_exporting_none_of_the_presets_metrics_is_named(tmp_path: Path) -> None:
    """A LiteLLM without its prometheus callback answers /metrics with process metrics only:
    the data is stale (nothing mapped), and the warning and /readyz name what was looked for."""
    ctl = controller(tmp_path, {"preset": "litellm"}, ("openai", "anthropic"))
    run(ctl, "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 12.5\n")
    assert ctl.decision is not None and ctl.fallback_reasons() == [ReasonCode.StaleInputs]
    assert {(m.provider, m.signal) for m in ctl.missing} == {
        (p, s) for p in ("openai", "anthropic") for s in ("requests", "latency")}
    assert "litellm_deployment_total_requests" in ctl.missing[0].describe()


def test_a_generic_mapping_without_a_latency_histogram_says_so(tmp_path: Path) -> None:
    router = {"preset": "generic", "mapping": {"counters": {"requests": {"metric": "myrouter_requests_total"}},
                                               "provider_labels": ["upstream"]}}
    ctl = controller(tmp_path, router, ("openai", "anthropic"))
    run(ctl, GENERIC_TEXT)
    assert ctl.decision is not None
    messages = [r.message for r in ctl.decision.reasons if r.code == ReasonCode.MissingSignal]
    assert len(messages) == 2 and all("router.mapping for `latency`" in m for m in messages)
