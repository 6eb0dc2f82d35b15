"""Pushed per-request events: POST /v1/events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from collectors.events import parse_events
from controller import Controller, load_settings
from controller.entrypoints.api import create_app

NOW = datetime(2026, 11, 9, 14, 30, tzinfo=UTC)


def event(**over: object) -> str:
    base: dict[str, object] = {"ts": (NOW - timedelta(minutes=2)).isoformat(), "provider": "openai",
                               "model": "gpt-4o", "route": "chat", "latency": 1.8, "ttft": 0.4,
                               "cache_hit": False, "retries": 1, "status": 200, "input_tokens": 800,
                               "output_tokens": 200, "cost": 0.004}
    base.update(over)
    return json.dumps(base)


def test_valid_events_are_aggregated_per_minute() -> None:
    body = "\n".join([event(), event(status=429, cache_hit=True), event(status=503, latency=7.0)]).encode()
    batch = parse_events(body, now=NOW.timestamp(), oldest=0)
    assert batch.accepted == 3 and not batch.errors
    [(minute, cells)] = batch.cells.items()
    by_signal = {k.signal: c for k, c in cells.items()}
    assert by_signal["requests"].value == 3
    assert by_signal["errors_429"].value == 1 and by_signal["errors_5xx"].value == 1
    assert by_signal["retries"].value == 3
    assert (by_signal["cache_hits"].value, by_signal["cache_misses"].value) == (1, 2)
    assert by_signal["latency"].count == 3 and by_signal["latency"].buckets[2.0] == 2
    assert by_signal["ttft"].count == 3
    assert by_signal["spend"].value == pytest.approx(0.012)


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        pytest.param(event()[:-7], "line", id="half-a-line"),
        pytest.param(event(latency=-1), "latency", id="negative-latency"),
        pytest.param(event(status=42), "status", id="bad-status"),
        pytest.param(event(ts="2026-11-09T14:00:00"), "timezone offset", id="naive-timestamp"),
        pytest.param(event(ts=(NOW + timedelta(hours=1)).isoformat()), "future", id="clock-skew"),
        pytest.param(json.dumps({"provider": "openai"}), "ts", id="missing-fields"),
        pytest.param(event(latency="NaN"), "latency", id="nan-latency"),
    ],
)
def test_bad_lines_are_rejected_with_their_line_number(line: str, needle: str) -> None:
    body = "\n".join([event(), line, event()]).encode()
    batch = parse_events(body, now=NOW.timestamp(), oldest=0)
    assert batch.accepted == 2
    [err] = batch.errors
    assert err["line"] == 2 and needle in str(err["error"])
    [(_, cells)] = batch.cells.items()
    assert next(c for k, c in cells.items() if k.signal == "requests").value == 2


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = load_settings(data_dir=tmp_path, api={"token": "t0ken"})
    ctl = Controller.from_settings(settings, clock=lambda: NOW)
    yield TestClient(create_app(ctl))
    ctl.close()


def test_post_events_needs_the_token(client: TestClient) -> None:
    body = event().encode()
    assert client.post("/v1/events", content=body).status_code == 401
    assert client.post("/v1/events", content=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = client.post("/v1/events", content=body, headers={"Authorization": "Bearer t0ken"})
    assert ok.status_code == 200 and ok.json() == {"accepted": 1, "rejected": 0, "errors": []}


def test_post_events_reports_each_rejected_line(client: TestClient) -> None:
    body = "\n".join([event(), "{not json", event()]).encode()
    r = client.post("/v1/events", content=body, headers={"Authorization": "Bearer t0ken"})
    assert r.status_code == 200
    assert r.json()["accepted"] == 2 and r.json()["errors"][0]["line"] == 2
    only_bad = client.post("/v1/events", content=b"{oops", headers={"Authorization": "Bearer t0ken"})
    assert only_bad.status_code == 422 and only_bad.json()["accepted"] == 0


def test_events_feed_the_controller(client: TestClient) -> None:
    client.post("/v1/events", content="\n".join(event() for _ in range(50)).encode(),
                headers={"Authorization": "Bearer t0ken"})
    ctl: Controller = client.app.state.controller  # type: ignore[attr-defined]
    ctl.step(at=NOW)
    obs = ctl.observations()
    assert obs[("request_rate", "openai")] > 0
    assert ctl.registry.get_sample_value("diurnal_events_total", {"result": "accepted"}) == 50


def test_writes_are_refused_without_a_configured_token(tmp_path: Path) -> None:
    app = create_app(Controller.from_settings(load_settings(data_dir=tmp_path)))
    r = TestClient(app).post("/v1/events", content=event().encode(), headers={"Authorization": "Bearer x"})
    assert r.status_code == 403 and "api.token" in r.json()["detail"]


def test_a_body_over_the_size_limit_is_refused_with_413_and_nothing_is_counted(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from controller.entrypoints import api

    body = "\n".join(event() for _ in range(20)).encode()
    monkeypatch.setattr(api, "MAX_BODY_BYTES", len(body) - 1)
    r = client.post("/v1/events", content=body, headers={"Authorization": "Bearer t0ken"})
    assert r.status_code == 413 and "smaller batches" in r.json()["detail"]
    ctl: Controller = client.app.state.controller  # type: ignore[attr-defined]
    assert ctl.registry.get_sample_value("diurnal_events_total", {"result": "accepted"}) in (None, 0.0)
    monkeypatch.setattr(api, "MAX_BODY_BYTES", len(body))  # at the limit: accepted
    ok = client.post("/v1/events", content=body, headers={"Authorization": "Bearer t0ken"})
    assert ok.status_code == 200 and ok.json()["accepted"] == 20
