"""OpenTelemetry SDK wiring, done once at the entry point (``diurnal run``).

Library code (:mod:`controller.loop`) uses only the OpenTelemetry API: without an SDK its spans
are no-ops. :func:`setup_tracing` installs a tracer provider that exports over OTLP/HTTP when
``tracing.otlp_endpoint`` is set, and does nothing otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from controller.settings import TracingSettings

log = logging.getLogger("diurnal.tracing")


def tracer_provider(settings: TracingSettings, exporter: SpanExporter, version: str) -> TracerProvider:
    """A provider that batches spans into ``exporter``, sampled by ``settings.sample_ratio``."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name, "service.version": version}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def setup_tracing(settings: TracingSettings, version: str) -> Callable[[], None]:
    """Install the OTLP/HTTP exporter if configured. Returns the shutdown (flushes once)."""
    if settings.otlp_endpoint is None:
        return lambda: None
    # Imported here: the exporter pulls in protobuf, which a sidecar without traces never needs.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(
        endpoint=settings.otlp_endpoint,
        headers={k: v.get_secret_value() for k, v in settings.otlp_headers.items()},
        timeout=settings.timeout_seconds,
    )
    provider = tracer_provider(settings, exporter, version)
    trace.set_tracer_provider(provider)
    log.info("exporting traces to %s (sampling %.0f%% of cycles)", settings.otlp_endpoint,
             settings.sample_ratio * 100)
    return provider.shutdown
