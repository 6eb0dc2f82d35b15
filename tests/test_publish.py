"""Publishers: atomic file writes (JSON, YAML, LiteLLM shape) and a webhook that behaves
when its target is down."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import yaml

from controller import Controller
from controller.actuators.publishers import FilePublisher, WebhookPublisher, litellm_config
from controller.entrypoints.demo import demo_settings
from sim import STATIC_WEIGHTS, SimulatedRouter, WorldSpec
from tests.conftest import NY

BODY = {"mode": "act", "weights": {"openai": 0.2, "anthropic": 0.5, "azure": 0.3}, "reasons": []}


def test_file_write_is_atomic_for_a_concurrent_reader(tmp_path: Path) -> None:
    target = tmp_path / "decision.json"
    pub = FilePublisher(target)
    pub.publish({**BODY, "pad": "x" * 200_000}, '"e0"')
    seen: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            text = target.read_text()
            json.loads(text)  # a partial file would not parse
            seen.append(text[-40:])

    t = threading.Thread(target=reader)
    t.start()
    for i in range(200):
        pub.publish({**BODY, "n": i, "pad": "y" * (100_000 + 997 * i)}, f'"e{i}"')
    stop.set()
    t.join()
    assert len(seen) > 10
    assert json.loads(target.read_text())["n"] == 199
    assert not [p for p in tmp_path.iterdir() if p.name != "decision.json"]  # no temp files left


def test_yaml_and_litellm_shapes(tmp_path: Path) -> None:
    models = {"gpt-4o": "openai", "gpt-4o-mini": "openai", "claude-sonnet": "anthropic", "azure-gpt-4o": "azure"}
    FilePublisher(tmp_path / "d.yaml", "yaml").publish(BODY, '"e"')
    assert yaml.safe_load((tmp_path / "d.yaml").read_text())["weights"] == BODY["weights"]
    FilePublisher(tmp_path / "l.yaml", "yaml", "litellm", models, "chat").publish(BODY, '"e"')
    cfg = yaml.safe_load((tmp_path / "l.yaml").read_text())
    assert cfg["router_settings"] == {"routing_strategy": "simple-shuffle"}
    weights = {m["litellm_params"]["model"]: m["litellm_params"]["weight"] for m in cfg["model_list"]}
    assert weights == {"gpt-4o": 0.1, "gpt-4o-mini": 0.1, "claude-sonnet": 0.5, "azure-gpt-4o": 0.3}
    assert {m["model_name"] for m in cfg["model_list"]} == {"chat"}
    assert litellm_config({"x": 1.0}, {}, "g")["model_list"] == []  # a provider without deployments


def test_webhook_down_gets_bounded_retries_and_its_thread_survives() -> None:
    calls: list[httpx.Request] = []
    naps: list[float] = []

    def down(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ConnectError("connection refused", request=request)

    results: list[str] = []
    hook = WebhookPublisher("http://127.0.0.1:9/hook", max_attempts=4, backoff=0.5, max_backoff=4.0,
                            transport=httpx.MockTransport(down), report=lambda _, r: results.append(r),
                            sleep=naps.append)
    try:
        hook.publish(BODY, '"etag-1"')
        assert hook.wait_idle(10)
        assert len(calls) == 4  # bounded
        assert results == ["retry", "retry", "retry", "failed"]
        assert all(0 <= n <= min(4.0, 0.5 * 2 ** i) for i, n in enumerate(naps))  # full jitter under the cap
        assert {c.headers["Idempotency-Key"] for c in calls} == {"etag-1"}  # retries are idempotent
        hook.publish(BODY, '"etag-2"')  # the next decision is still tried: the thread outlived the failure
        assert hook.wait_idle(10)
        assert len(calls) == 8 and calls[-1].headers["Idempotency-Key"] == "etag-2"
        # Given up on: sent again while it is the decision in force, once redeliver_after has passed.
        assert hook.redeliver_after == 4.0
        assert not hook.retry_due('"etag-1"') and not hook.retry_due('"etag-2"')
        failed_etag, failed_at = hook._failed or ("", 0.0)
        hook._failed = (failed_etag, failed_at - 5.0)
        assert hook.retry_due('"etag-2"') and not hook.retry_due('"etag-1"')
    finally:
        hook.close()


def test_the_control_loop_goes_on_while_the_webhook_is_down(tmp_path: Path) -> None:
    """act mode with a webhook on a loopback port nobody listens on: every tick still returns a
    decision, the decisions follow the router, and the failed pushes are counted."""
    spec = WorldSpec()
    settings = demo_settings(tmp_path, spec, publish={"webhook": {"url": "http://127.0.0.1:9/hook", "max_attempts": 2,
                                                                 "backoff_seconds": 0.01, "timeout_seconds": 1}})
    start = datetime(2026, 11, 9, 6, tzinfo=NY)
    router = SimulatedRouter(spec, seed=2, start=start, weights=STATIC_WEIGHTS)
    ctl = Controller.from_settings(settings, clock=lambda: start)
    try:
        at = start
        for _ in range(12):
            at += timedelta(minutes=5)
            router.advance(at)
            ctl.ingest_exposition(router.exposition(), at=at)
            decision = ctl.step(at=at)
            assert decision.at == at and decision.mode == "act"
            router.set_weights(decision.weights)
        [hook] = [p for p in ctl.publish.publishers if p.name == "webhook"]
        assert isinstance(hook, WebhookPublisher) and hook.wait_idle(30)
        failed = ctl.registry.get_sample_value("diurnal_publishes_total", {"publisher": "webhook", "result": "failed"})
        assert failed is not None and failed >= 1  # it tried, gave up on each decision, and the loop went on
        assert ctl.registry.get_sample_value("diurnal_control_ticks_total") == 12
        assert ctl.registry.get_sample_value("diurnal_publishes_total", {"publisher": "webhook", "result": "ok"}) == 0
    finally:
        ctl.close()


def test_webhook_success_4xx_and_a_newer_decision_replacing_a_waiting_one() -> None:
    got: list[dict[str, object]] = []
    status = iter([503, 200, 400])

    def handler(request: httpx.Request) -> httpx.Response:
        got.append(json.loads(request.content))
        return httpx.Response(next(status))

    gate = threading.Event()
    results: list[str] = []
    hook = WebhookPublisher("http://127.0.0.1:9/hook", transport=httpx.MockTransport(handler),
                            report=lambda _, r: results.append(r), sleep=lambda _: gate.wait(5))
    try:
        hook.publish({**BODY, "n": 1}, '"a"')   # 503, then waits in its backoff
        deadline = time.monotonic() + 10
        while not results and time.monotonic() < deadline:
            time.sleep(0.01)
        hook.publish({**BODY, "n": 2}, '"b"')   # replaces it while it waits
        gate.set()
        assert hook.wait_idle(10)
        hook.publish({**BODY, "n": 3}, '"c"')   # 400: not retried
        assert hook.wait_idle(10)
    finally:
        hook.close()
    assert [g["n"] for g in got] == [1, 2, 3]
    assert results == ["retry", "superseded", "ok", "rejected"]


def test_controller_pushes_new_decisions_in_act_mode_only(tmp_path: Path) -> None:
    spec = WorldSpec()
    out = tmp_path / "pub" / "decision.json"
    for mode, expect in (("observe", False), ("act", True)):
        settings = demo_settings(tmp_path / mode, spec, guardrails={"mode": mode, "stale_after_seconds": 900},
                                 publish={"file": {"path": out}})
        ctl = Controller.from_settings(settings)
        start = datetime(2026, 11, 9, 6, tzinfo=NY)
        router = SimulatedRouter(spec, seed=2, start=start, weights=STATIC_WEIGHTS)
        for m in (5, 10, 15):
            router.advance(start + timedelta(minutes=m))
            ctl.ingest_exposition(router.exposition(), at=start + timedelta(minutes=m))
            ctl.step(at=start + timedelta(minutes=m))
        assert out.exists() == expect
        if expect:
            assert json.loads(out.read_text())["weights"] == {k: round(v, 6) for k, v in sorted(ctl.decision.weights.items())}  # type: ignore[union-attr]
            assert ctl.registry.get_sample_value("diurnal_publishes_total", {"publisher": "file", "result": "ok"}) >= 1
        ctl.close()
