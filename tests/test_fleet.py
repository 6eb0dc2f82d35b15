"""router.source prometheus: the fleet query, its windows as minute cells, the reader's
cursor and catch-up, and backfill with the same query (a stand-in API; the real Prometheus
is in tests/test_fleet_prometheus.py)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from collectors.backfill import BackfillError
from collectors.exposition import Sample
from collectors.fleet import FleetQuery, fleet_cells, vector_samples
from collectors.mapping import LITELLM, OTEL_GENAI, Mapper, SeriesKey
from controller import ConfigError, Controller, load_settings
from controller.entrypoints import service
from controller.entrypoints.service import FleetReader, fleet_start, run_backfill

T0 = datetime(2026, 11, 9, 14, 0, tzinfo=UTC)  # Monday, on the hour


def test_one_expression_reads_every_metric_the_preset_maps() -> None:
    q = FleetQuery.build(Mapper(LITELLM), 'job="litellm"', 60)
    assert q.expr.count("label_replace(") == q.metrics == 18  # 9 counter metrics, 3 histograms x 3 parts
    assert "sum by (api_provider, litellm_model_name, model, requested_model, exception_status) (increase(" \
        '{__name__=~"litellm_deployment_total_requests|litellm_deployment_total_requests_total", job="litellm"}' \
        "[60s]))" in q.expr
    assert 'sum by (api_provider, litellm_model_name, model, requested_model, exception_status, le) (increase(' \
        '{__name__=~"litellm_llm_api_latency_metric_bucket", job="litellm"}[60s]))' in q.expr
    # Each part carries its metric in a label of its own: PromQL's `or` matches label sets without
    # __name__, so a histogram's _sum and _count (summed to the same labels) would keep only one.
    assert '"diurnal_metric", "litellm_request_total_latency_metric_count", "", ""' in q.expr
    assert q.expr.count(" or ") == q.metrics - 1
    otel = FleetQuery.build(Mapper(OTEL_GENAI), "", 30)
    assert "[30s]" in otel.expr and "gen_ai_server_request_duration|gen_ai_server_request_duration_seconds" not in otel.expr
    assert 'gen_ai_server_request_duration_bucket|gen_ai_server_request_duration_seconds_bucket"}' in otel.expr


def vector(name: str, labels: dict[str, str], value: float) -> dict[str, Any]:
    return {"metric": {"__name__": name, **labels}, "value": [1.0, str(value)]}


def test_a_windows_increases_become_the_cells_of_its_minute() -> None:
    mapper = Mapper(LITELLM)
    result = [
        vector("litellm_deployment_total_requests", {"api_provider": "openai", "requested_model": "chat"}, 120.5),
        vector("litellm_deployment_failure_responses", {"api_provider": "openai", "exception_status": "429"}, 3),
        vector("litellm_llm_api_latency_metric_bucket", {"api_provider": "openai", "le": "0.5"}, 80),
        vector("litellm_llm_api_latency_metric_bucket", {"api_provider": "openai", "le": "1.0"}, 79.5),  # extrapolated apart
        vector("litellm_llm_api_latency_metric_bucket", {"api_provider": "openai", "le": "+Inf"}, 100),
        vector("litellm_llm_api_latency_metric_count", {"api_provider": "openai"}, 100),
        vector("litellm_llm_api_latency_metric_sum", {"api_provider": "openai"}, 42),
        vector("litellm_spend_metric", {"api_provider": "openai"}, float("nan")),
    ]
    end = int(T0.timestamp()) + 20  # a 10 s window ending 14:00:20 lies in the minute 14:00
    cells = fleet_cells(mapper, vector_samples(result), end, 10)
    assert list(cells) == [int(T0.timestamp())]
    by = {k.signal: c for k, c in cells[int(T0.timestamp())].items()}
    assert by["requests"].value == 120.5 and by["errors_429"].value == 3
    assert by["latency"].count == 100 and by["latency"].sum == 42
    assert by["latency"].buckets == {0.5: 80, 1.0: 80, math.inf: 100}  # made non-decreasing
    assert "spend" not in by  # NaN left out
    assert cells[int(T0.timestamp())].keys() >= {SeriesKey("requests", "openai", "", "chat")}
    assert fleet_cells(mapper, [], end, 10) == {}


class FakeAPI:
    """Answers each window with ``rate`` requests per second of openai, and counts queries."""

    base_url = "http://prometheus:9090"
    retried = 0

    def __init__(self, rate: float = 2.0) -> None:
        self.rate = rate
        self.asked: list[float] = []
        self.down = False
        self.ranges: list[tuple[int, int, int]] = []

    def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        if self.down:
            raise BackfillError("cannot reach http://prometheus:9090", "unreachable")
        self.asked.append(at)
        return [vector("litellm_deployment_total_requests", {"api_provider": "openai"}, self.rate * 60)]

    def query_range(self, expr: str, start: int, end: int, step: int) -> list[dict[str, Any]]:
        self.ranges.append((start, end, step))
        values = [[t, str(self.rate * step)] for t in range(start, end + 1, step)]
        return [{"metric": {"__name__": "litellm_deployment_total_requests", "api_provider": "openai"},
                 "values": values}]


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def fleet_settings(tmp_path: Path, **prometheus: Any) -> Any:
    return load_settings(data_dir=str(tmp_path / "data"), timezone="America/New_York",
                         router={"source": "prometheus"},
                         prometheus={"url": "http://prometheus:9090", "lag_seconds": 30, **prometheus})


def stored_requests(ctl: Controller) -> float:
    ctl.flush()
    return sum(p.value for p in ctl.store.counters("requests", 0, 2**40))


def test_the_reader_reads_each_window_once_in_order_and_resumes_from_its_cursor(tmp_path: Path) -> None:
    settings = fleet_settings(tmp_path)
    clock = Clock(T0)
    ctl = Controller.from_settings(settings, clock=clock)
    api = FakeAPI()
    start = fleet_start(ctl, settings)
    assert start == int(T0.timestamp()) - 3600 + 60  # no cursor: the first window of the local hour (13:00)
    reader = FleetReader(ctl, api, FleetQuery.build(ctl.mapper), settings, start=start, max_windows=20)  # type: ignore[arg-type]
    assert reader.read_once() == 20  # catching up the hour, 20 windows a run
    clock.at = T0.replace(minute=5)
    while reader.read_once():
        pass
    # windows end 13:01 ... 14:04 (14:05 is not 30 s old yet)
    assert [int(a) for a in api.asked] == list(range(start, int(T0.timestamp()) + 4 * 60 + 1, 60))
    assert ctl.registry.get_sample_value("diurnal_fleet_lag_seconds") == pytest.approx(60)
    assert ctl.fleet_cursor() == int(T0.timestamp()) + 240
    assert stored_requests(ctl) == pytest.approx(len(api.asked) * 120)
    ctl.close()

    # A restart an hour later reads on from the cursor: no window twice, none missed.
    clock.at = T0.replace(hour=15)
    ctl = Controller.from_settings(settings, clock=clock)
    assert fleet_start(ctl, settings) == int(T0.timestamp()) + 300
    ctl.close()


def test_a_prometheus_that_is_down_leaves_the_window_for_the_next_run(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    settings = fleet_settings(tmp_path)
    ctl = Controller.from_settings(settings, clock=Clock(T0))
    api = FakeAPI()
    reader = FleetReader(ctl, api, FleetQuery.build(ctl.mapper), settings,  # type: ignore[arg-type]
                         start=int(T0.timestamp()) - 120)
    api.down = True
    assert reader.read_once() == 0 and reader.read_once() == 0
    assert ctl.registry.get_sample_value("diurnal_scrapes_total", {"result": "unreachable"}) == 2
    assert len([r for r in caplog.records if "fleet query" in r.getMessage()]) == 1  # throttled
    api.down = False
    assert reader.read_once() == 2  # the two windows due, in order
    assert ctl.registry.get_sample_value("diurnal_scrapes_total", {"result": "ok"}) == 2
    ctl.close()


def test_backfill_uses_the_live_query_and_ends_where_the_live_input_begins(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    settings = fleet_settings(tmp_path, window_seconds=30, backfill_weeks=0.01)
    ctl = Controller.from_settings(settings, clock=Clock(T0))
    api = FakeAPI(rate=1.0)
    start = fleet_start(ctl, settings)
    monkeypatch.setattr(service, "prometheus_api", lambda *_a, **_k: api)
    run_backfill(ctl, settings, end=datetime.fromtimestamp(start - 30, UTC))
    [(lo, hi, step)] = api.ranges[:1]
    assert step == 30 and lo % 30 == 0
    assert max(h for _, h, _ in api.ranges) == start - 30  # the live input reads on from `start`
    total = stored_requests(ctl)
    windows = sum(len(range(a, b + 1, s)) for a, b, s in api.ranges)
    assert total == pytest.approx(windows * 30)
    ctl.close()


def test_settings_for_the_fleet_fail_at_start_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="router.source prometheus needs prometheus.url"):
        load_settings(router={"source": "prometheus"})
    with pytest.raises(ConfigError, match="prometheus.window_seconds"):
        load_settings(prometheus={"window_seconds": 45})
    with pytest.raises(ConfigError, match="prometheus.selector"):
        load_settings(prometheus={"selector": 'job="x"} or vector(1) or {a="b"'})


def test_sample_values_pass_through_exactly() -> None:
    [s] = vector_samples([vector("x", {"b": "2", "a": "1"}, 3.25)])
    assert s == Sample("x", (("a", "1"), ("b", "2")), 3.25)


def test_prometheus_down_reverts_to_the_baseline_through_staleness(tmp_path: Path) -> None:
    from datetime import timedelta

    from controller import ReasonCode

    settings = load_settings(data_dir=str(tmp_path / "data"), router={"source": "prometheus"},
                             prometheus={"url": "http://prometheus:9090", "lag_seconds": 30},
                             guardrails={"mode": "act", "stale_after_seconds": 180},
                             policy={"providers": {"openai": {"baseline_weight": 1.0}}})
    clock = Clock(T0)
    ctl = Controller.from_settings(settings, clock=clock)
    api = FakeAPI()
    reader = FleetReader(ctl, api, FleetQuery.build(ctl.mapper), settings,  # type: ignore[arg-type]
                         start=int(T0.timestamp()) - 240)
    reader.read_once()
    assert not [r for r in ctl.step().reasons if r.code == ReasonCode.StaleInputs]
    api.down = True
    for minutes in range(1, 6):  # the loop goes on; the data ages
        clock.at = T0 + timedelta(minutes=minutes)
        reader.read_once()
        decision = ctl.step()
    assert [r for r in decision.reasons if r.code == ReasonCode.StaleInputs]
    assert ctl.registry.get_sample_value("diurnal_fleet_lag_seconds") > 180
    ctl.close()
