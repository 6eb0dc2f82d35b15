"""Manual overrides over HTTP, kept across a restart, and the audit log."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from controller import Controller
from controller.entrypoints.api import create_app
from controller.entrypoints.demo import demo_settings
from sim import STATIC_WEIGHTS, SimulatedRouter, WorldSpec
from tests.conftest import NY

AUTH = {"Authorization": "Bearer s3cret"}


def feed(ctl: Controller, router: SimulatedRouter, start: datetime, minutes: int) -> None:
    for m in range(5, minutes + 1, 5):
        now = start + timedelta(minutes=m)
        router.advance(now)
        ctl.ingest_exposition(router.exposition(), at=now)
        ctl.step(at=now)


def test_override_lifecycle_and_audit(tmp_path: Path) -> None:
    spec = WorldSpec()
    settings = demo_settings(tmp_path / "data", spec, api={"token": "s3cret"})
    start = datetime.now(NY).replace(microsecond=0) - timedelta(hours=1)
    ctl = Controller.from_settings(settings)
    router = SimulatedRouter(spec, seed=1, start=start, weights=STATIC_WEIGHTS)
    client = TestClient(create_app(ctl))
    body = {"knob": "weights/openai", "value": 0.2, "ttl_seconds": 7200, "reason": "vendor incident INC-42"}
    assert client.post("/v1/overrides", json=body).status_code == 401
    assert client.post("/v1/overrides", json={**body, "knob": "weights/nope"}, headers=AUTH).status_code == 422
    assert client.post("/v1/overrides", json={**body, "value": 1.5}, headers=AUTH).status_code == 422
    assert client.post("/v1/overrides", json={**body, "ttl_seconds": 30 * 86400}, headers=AUTH).status_code == 422
    # A newline (or any control character) would forge a log line: refused, with the field named.
    forged = client.post("/v1/overrides", json={**body, "reason": "ok\n2026-11-30 INFO override x removed"},
                         headers=AUTH)
    assert forged.status_code == 422 and "reason" in forged.text
    assert client.post("/v1/overrides", json={**body, "knob": "weights/open\rai"}, headers=AUTH).status_code == 422
    made = client.post("/v1/overrides", json=body, headers=AUTH)
    assert made.status_code == 201, made.text
    oid = made.json()["id"]
    assert [o["id"] for o in client.get("/v1/overrides").json()["overrides"]] == [oid]

    feed(ctl, router, start, 30)
    d = client.get("/v1/decision").json()
    assert d["weights"]["openai"] == pytest.approx(0.2)
    assert any(r["code"] == "ManualOverride" and "INC-42" in r["message"] for r in d["reasons"])
    # A second pin on the same knob replaces the first (the listing shows what applies).
    second = client.post("/v1/overrides", json={**body, "value": 0.3, "reason": "INC-43"}, headers=AUTH)
    assert second.status_code == 201 and second.json()["replaced"] == [oid]
    assert [o["id"] for o in client.get("/v1/overrides").json()["overrides"]] == [second.json()["id"]]
    feed(ctl, router, start + timedelta(minutes=30), 10)
    assert client.get("/v1/decision").json()["weights"]["openai"] == pytest.approx(0.3)
    oid = second.json()["id"]
    ctl.close()

    again = Controller.from_settings(settings)  # a restart keeps the pin
    assert [o.id for o in again.overrides.active(datetime.now(NY))] == [oid]
    client = TestClient(create_app(again))
    assert client.delete(f"/v1/overrides/{oid}", headers=AUTH).status_code == 204
    assert client.delete(f"/v1/overrides/{oid}", headers=AUTH).status_code == 404
    feed(again, router, start + timedelta(minutes=40), 10)
    assert "ManualOverride" not in {r.code for r in again.decision.reasons}  # type: ignore[union-attr]
    again.close()

    lines = (tmp_path / "data" / "audit.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) >= 2
    assert len({r["etag"] for r in records}) == len(records)  # one line per new decision
    first = records[0]
    assert {"at", "mode", "weights", "reasons", "inputs"} <= set(first)
    assert {"data_age_seconds", "providers", "overrides"} <= set(first["inputs"])
    assert any(oid in r["inputs"]["overrides"] for r in records)
