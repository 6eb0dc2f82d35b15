from __future__ import annotations

import math
import subprocess
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from controller import Controller, Settings
from controller.entrypoints.api import create_app
from sim import STATIC_WEIGHTS, SimulatedRouter, WorldSpec
from tests.conftest import need_binary


@pytest.fixture
def warmed(settings: Settings, spec: WorldSpec, monday: datetime) -> Controller:
    start = monday - timedelta(days=4)
    ctl = Controller.from_settings(settings)
    router = SimulatedRouter(spec, seed=5, start=start, weights=STATIC_WEIGHTS)
    now = start
    while now < monday:
        now += timedelta(minutes=15)
        router.advance(now)
        ctl.ingest_exposition(router.exposition(), at=now)
        router.set_weights(ctl.step(at=now).weights)
    return ctl


def test_not_ready_before_the_first_decision(settings: Settings) -> None:
    client = TestClient(create_app(Controller.from_settings(settings)))
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 503
    assert client.get("/v1/decision").status_code == 503


def test_decision_etag_and_304(warmed: Controller) -> None:
    client = TestClient(create_app(warmed))
    assert client.get("/readyz").status_code == 200
    first = client.get("/v1/decision")
    assert first.status_code == 200
    body = first.json()
    assert math.isclose(sum(body["weights"].values()), 1.0, abs_tol=1e-5)
    assert body["mode"] == "act" and body["reasons"]
    etag = first.headers["etag"]
    again = client.get("/v1/decision", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.headers["etag"] == etag
    stale = client.get("/v1/decision", headers={"If-None-Match": '"something-else"'})
    assert stale.status_code == 200
    # Weak comparison (RFC 9110): a weak validator of the same tag, a list, and "*" all match.
    for header in (f"W/{etag}", f'"other", {etag}', f'W/"other", W/{etag}', "*"):
        assert client.get("/v1/decision", headers={"If-None-Match": header}).status_code == 304, header
    assert client.get("/v1/decision", headers={"If-None-Match": 'W/"other"'}).status_code == 200
    explained = client.get("/v1/decision?explain=1").json()
    assert {o["signal"] for o in explained["observations"]} >= {"latency_p95", "request_rate"}
    # The plan: per hour ahead, the demand, each provider's load against its capacity, the cost
    # (the demo's providers are priced) against the baseline weights'; not in the polled body.
    plan = explained["plan"]
    assert plan and "plan" not in body and plan[0]["at"] <= explained["at"]
    first = plan[0]
    assert set(first["providers"]) == set(body["weights"]) and first["demand_rpm"] > 0
    assert sum(p["load_rpm"] for p in first["providers"].values()) == pytest.approx(first["demand_rpm"], rel=1e-3)
    assert first["cost_per_hour"] > 0 and first["baseline_cost_per_hour"] > 0


def test_forecast_and_profile_endpoints(warmed: Controller) -> None:
    client = TestClient(create_app(warmed))
    fc = client.get("/v1/forecast").json()
    keys = {(f["signal"], f["provider"]) for f in fc["forecasts"]}
    assert ("latency_p95", "openai") in keys and ("request_rate", "*") in keys
    assert all(len(f["points"]) == 24 for f in fc["forecasts"])
    prof = client.get("/v1/profile", params={"signal": "request_rate"}).json()
    assert prof["tz"] == "America/New_York" and len(prof["cells"]) == 168
    assert prof["cells"][0]["weekday"] == "Mon" and prof["cells"][0]["hour"] == 0
    assert client.get("/v1/profile", params={"signal": "nope"}).status_code == 422
    assert client.get("/openapi.json").json()["info"]["title"] == "diurnal"


@pytest.mark.integration
def test_metrics_pass_promtool_check(warmed: Controller) -> None:
    promtool = need_binary("promtool")
    text = TestClient(create_app(warmed)).get("/metrics").text
    for name in ("diurnal_provider_weight", "diurnal_observed", "diurnal_forecast", "diurnal_data_age_seconds",
                 "diurnal_control_tick_duration_seconds_bucket", "diurnal_decision_reasons_total"):
        assert name in text
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), proc.stdout + proc.stderr


def test_etag_changes_with_knobs_and_codes_not_with_live_numbers() -> None:
    from datetime import UTC

    from controller.publish import decision_etag
    from policies import Decision, Reason

    at = datetime(2026, 11, 16, 8, tzinfo=UTC)
    base = Decision(at=at, weights={"a": 0.5, "b": 0.5},
                    reasons=(Reason("weights/a", "ObservedLatencyBreach", "observed p95 7.10s exceeds the SLO"),))
    later = Decision(at=at + timedelta(minutes=1), weights={"a": 0.5, "b": 0.5},
                     reasons=(Reason("weights/a", "ObservedLatencyBreach", "observed p95 7.45s exceeds the SLO"),))
    assert decision_etag(base) == decision_etag(later)
    moved = Decision(at=at, weights={"a": 0.4, "b": 0.6}, reasons=base.reasons)
    recoded = Decision(at=at, weights={"a": 0.5, "b": 0.5}, reasons=(Reason("weights/a", "BaselineWeight", ""),))
    assert len({decision_etag(base), decision_etag(moved), decision_etag(recoded)}) == 3


def test_a_query_parameter_given_twice_is_refused_not_guessed(settings: Settings) -> None:
    """Found by schemathesis: ``?components=false&components=0`` was read as its last value."""
    client = TestClient(create_app(Controller.from_settings(settings)))
    r = client.get("/v1/forecast", params=[("components", "1"), ("components", "2")])
    assert r.status_code == 422 and "more than once" in r.json()["detail"]
    assert client.get("/v1/forecast", params={"components": "1"}).status_code == 200
    assert client.get("/healthz", params=[("x", "1"), ("x", "2")]).status_code == 200  # not declared: ignored
