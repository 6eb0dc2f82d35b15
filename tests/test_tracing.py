"""OpenTelemetry: the span tree of one control cycle (SDK in-memory exporter), and the
OTLP/HTTP exporter wired from settings, delivering to a loopback receiver."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import controller.loop
from controller.entrypoints.tracing import setup_tracing
from controller.errors import ConfigError
from controller.loop import Controller
from controller.settings import Settings, TracingSettings, load_settings
from sim import STATIC_WEIGHTS, SimulatedRouter, WorldSpec
from tests.conftest import warm_up


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """The controller's tracer bound to an SDK provider with an in-memory exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(controller.loop, "_tracer", provider.get_tracer("diurnal"))
    yield exporter
    provider.shutdown()


def test_one_cycle_is_a_span_tree_with_its_attributes(spans: InMemorySpanExporter, settings: Settings,
                                                       spec: WorldSpec, monday: datetime) -> None:
    ctl = Controller.from_settings(settings)
    router = SimulatedRouter(spec, seed=3, start=monday - timedelta(days=8), weights=STATIC_WEIGHTS)
    warm_up(ctl, router, monday - timedelta(days=8), monday)
    spans.clear()
    router.advance(monday + timedelta(minutes=5))
    ctl.ingest_exposition(router.exposition(), at=monday + timedelta(minutes=5))
    ctl.step(at=monday + timedelta(minutes=5))
    finished = spans.get_finished_spans()
    by_name = {s.name: s for s in finished}
    assert sorted(by_name) == ["collect", "decide", "diurnal.cycle", "fit", "publish"]
    root = by_name["diurnal.cycle"]
    assert root.parent is None
    for child in ("collect", "fit", "decide", "publish"):
        span = by_name[child]
        assert span.parent is not None and span.parent.span_id == root.context.span_id, child
        assert span.context.trace_id == root.context.trace_id
    starts = [by_name[c].start_time for c in ("collect", "fit", "decide", "publish")]
    assert starts == sorted(starts)  # in this order
    attrs = {name: dict(span.attributes or {}) for name, span in by_name.items()}
    assert attrs["diurnal.cycle"]["diurnal.mode"] == "act"
    assert attrs["collect"]["diurnal.rows_written"] > 0 and attrs["collect"]["diurnal.series.stored"] > 0
    assert attrs["fit"]["diurnal.forecast.series"] > 0
    models = attrs["fit"]["diurnal.forecast.models"]
    assert any(m.startswith("request_rate/*=") for m in models), models
    assert attrs["decide"]["diurnal.decision.reasons"], "decision reasons are on the span"
    assert isinstance(attrs["publish"]["diurnal.decision.changed"], bool)
    ctl.close()


def test_a_refit_in_the_cycle_is_marked(spans: InMemorySpanExporter, settings: Settings, spec: WorldSpec,
                                        monday: datetime) -> None:
    ctl = Controller.from_settings(settings)
    router = SimulatedRouter(spec, seed=3, start=monday - timedelta(days=8), weights=STATIC_WEIGHTS)
    warm_up(ctl, router, monday - timedelta(days=8), monday)
    spans.clear()
    at = monday + timedelta(hours=1, minutes=1)  # a new local hour: the cycle refits
    router.advance(at)
    ctl.ingest_exposition(router.exposition(), at=at)
    ctl.step(at=at)
    fit = next(s for s in spans.get_finished_spans() if s.name == "fit")
    assert (fit.attributes or {})["diurnal.refit.ran"] is True
    assert (fit.attributes or {})["diurnal.refit.failures"] == 0
    ctl.close()


def test_tracing_is_off_by_default_and_a_bad_endpoint_names_the_field(tmp_path: Path) -> None:
    assert TracingSettings().otlp_endpoint is None
    assert setup_tracing(TracingSettings(), "1.0") is not None  # a no-op shutdown
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)  # nothing installed
    with pytest.raises(ConfigError, match="tracing.otlp_endpoint"):
        load_settings(data_dir=tmp_path, tracing={"otlp_endpoint": "collector:4318"})


class _Receiver(BaseHTTPRequestHandler):
    got: list[tuple[str, str, bytes, str]] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.got.append((self.path, self.headers["Content-Type"], body, self.headers.get("Authorization", "")))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_otlp_http_export_reaches_a_collector(settings: Settings, spec: WorldSpec, monday: datetime,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Receiver.got = []
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    installed: list[TracerProvider] = []
    monkeypatch.setattr(trace, "set_tracer_provider", installed.append)
    shutdown = setup_tracing(TracingSettings(otlp_endpoint=url, otlp_headers={"Authorization": "Bearer s3cret"},
                                             service_name="diurnal-test"), "9.9")
    [provider] = installed
    monkeypatch.setattr(controller.loop, "_tracer", provider.get_tracer("diurnal"))
    ctl = Controller.from_settings(settings)
    router = SimulatedRouter(spec, seed=3, start=monday - timedelta(hours=2), weights=STATIC_WEIGHTS)
    router.advance(monday)
    ctl.ingest_exposition(router.exposition(), at=monday)
    ctl.step(at=monday)
    ctl.close()
    shutdown()  # flushes the batch
    server.shutdown()
    server.server_close()
    assert _Receiver.got, "no export reached the collector"
    path, content_type, body, auth = _Receiver.got[0]
    assert path == "/v1/traces" and content_type == "application/x-protobuf" and auth == "Bearer s3cret"
    request = ExportTraceServiceRequest.FromString(body)
    [resource] = request.resource_spans
    service = {a.key: a.value.string_value for a in resource.resource.attributes}
    assert service["service.name"] == "diurnal-test" and service["service.version"] == "9.9"
    names = {s.name for scope in resource.scope_spans for s in scope.spans}
    assert names == {"diurnal.cycle", "collect", "fit", "decide", "publish"}
