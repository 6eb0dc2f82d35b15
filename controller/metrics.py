"""diurnal's own event counters and histograms, on a registry owned by each controller. The
stages increment them; the state gauges are built on each scrape by :mod:`controller.telemetry`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["PUBLISH_RESULTS", "SCRAPE_RESULTS", "Metrics"]

SCRAPE_RESULTS = ("ok", "unreachable", "http_error", "malformed", "error")
PUBLISH_RESULTS = ("ok", "retry", "failed", "rejected", "superseded", "error")


class Metrics:
    """Event counters and histograms. State gauges come from :class:`StateCollector`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.ingested_samples = Counter(
            "diurnal_ingested_samples", "Samples read from router expositions.", registry=registry
        )
        self.ingest_errors = Counter(
            "diurnal_ingest_errors",
            "Input rejected or skipped, by kind (malformed_exposition, non_finite, out_of_order, absurd: a "
            "counter that grew by more than 1e15 in one scrape).",
            ["kind"],
            registry=registry,
        )
        self.counter_resets = Counter(
            "diurnal_router_resets", "Scrapes in which the router's counters went down: one per router restart, however "
            "many series it has.", registry=registry
        )
        self.scrapes = Counter(
            "diurnal_scrapes", "Scrapes of the router, or fleet queries (router.source prometheus), by result (ok, "
            "unreachable, http_error, malformed, error).",
            ["result"], registry=registry,
        )
        self.leader = Gauge(
            "diurnal_leader", "1 while this replica acts (publishes, writes the decision file, scales); 0 while "
            "another holds the Lease (ha.enabled).", registry=registry)
        self.leader.set(1.0)
        self.fleet_lag = Gauge(
            "diurnal_fleet_lag_seconds", "router.source prometheus: how far behind now the newest window read ends "
            "(prometheus.lag_seconds, the API's scrape interval and rule delay, plus up to a window).",
            registry=registry)
        self.fleet_query_seconds = Histogram(
            "diurnal_fleet_query_duration_seconds", "router.source prometheus: one window's query (every series of the "
            "fleet in one round trip).", buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry)
        self.events = Counter(
            "diurnal_events", "Pushed per-request events, by result (accepted, rejected).", ["result"],
            registry=registry,
        )
        self.store_write_errors = Counter(
            "diurnal_store_write_errors", "Writes to the embedded store that failed (a full or read-only volume): "
            "closed minutes stay in memory and are written once the store takes them; pushed events are refused "
            "(503) meanwhile.", registry=registry)
        self.ticks = Counter("diurnal_control_ticks", "Control ticks run.", registry=registry)
        self.decisions = Counter(
            "diurnal_decisions", "Decisions made, by mode (observe: recommended only; act: published).",
            ["mode"], registry=registry,
        )
        self.tick_errors = Counter(
            "diurnal_control_tick_errors", "Control ticks that failed (the loop goes on).", registry=registry
        )
        self.tick_seconds = Histogram(
            "diurnal_control_tick_duration_seconds", "Wall time of one control tick.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=registry,
        )
        self.refit_seconds = Histogram(
            "diurnal_refit_duration_seconds", "Wall time of one refit of all forecasts.",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60), registry=registry,
        )
        self.publishes = Counter(
            "diurnal_publishes", "Decision pushes by publisher (file, webhook) and result (ok, retry, failed, "
            "rejected, superseded, error).", ["publisher", "result"], registry=registry,
        )
        self.prewarm_actions = Counter(
            "diurnal_prewarm_actions", "Prewarm steps carried out, by action and result (ok, error).",
            ["action", "result"], registry=registry,
        )
        self.refit_failures = Counter(
            "diurnal_refit_failures", "Series refits that failed, by reason (error, timeout); the last good "
            "forecast is kept.", ["reason"], registry=registry,
        )
        self.decision_reasons = Counter(
            "diurnal_decision_reasons", "Reasons given in decisions, by knob kind and reason code.",
            ["knob", "reason"], registry=registry,
        )

    def initialise(self, *, mode: str, publishers: list[str], prewarm_actions: list[str]) -> None:
        """Create the labelled children that are known up front, at zero, so that rates and
        alerts see a series before the first event (client_python's advice)."""
        for result in SCRAPE_RESULTS:
            self.scrapes.labels(result)
        for publisher in publishers:
            for result in PUBLISH_RESULTS:
                self.publishes.labels(publisher, result)
        for action in prewarm_actions:
            for result in ("ok", "error"):
                self.prewarm_actions.labels(action, result)
        self.decisions.labels(mode)
