"""The LiteLLM proxy hook (controller/actuators/litellm_hook.py) against a stand-in router
and diurnal answering through httpx's mock transport: what it sets, what it restores and
when. The real proxy runs it in tests/test_litellm_proxy.py."""

from __future__ import annotations

import ast
import json
import logging
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from controller.actuators import litellm_hook
from controller.actuators.litellm_hook import DiurnalWeights
from controller.entrypoints.cli import main as cli_main


def deployment(group: str, model: str, ident: str, weight: float | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"model": model, "mock_response": "hi"}
    if weight is not None:
        params["weight"] = weight
    return {"model_name": group, "litellm_params": params, "model_info": {"id": ident}}


class Diurnal:
    """A stand-in for diurnal's GET /v1/decision: answers what it is told, with ETags."""

    def __init__(self) -> None:
        self.body: dict[str, Any] | None = {"mode": "act", "weights": {"openai": 0.7, "anthropic": 0.3}}
        self.status = 200
        self.down = False
        self.seen: list[dict[str, str]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(dict(request.headers))
        if self.down:
            raise httpx.ConnectError("refused", request=request)
        if self.status != 200:
            return httpx.Response(self.status, json={"detail": "no decision has been made yet"})
        etag = '"' + str(abs(hash(json.dumps(self.body, sort_keys=True)))) + '"'
        if request.headers.get("if-none-match") == etag:
            return httpx.Response(304, headers={"ETag": etag})
        return httpx.Response(200, json=self.body, headers={"ETag": etag})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world() -> tuple[SimpleNamespace, Diurnal, Clock, DiurnalWeights]:
    router = SimpleNamespace(model_list=[
        deployment("chat", "openai/gpt-4o", "a", weight=2),
        deployment("chat", "openai/gpt-4o-mini", "b"),
        deployment("chat", "anthropic/claude-sonnet-4", "c", weight=5),
        deployment("embed", "mistral/mistral-embed", "d"),
    ])
    diurnal, clock = Diurnal(), Clock()
    hook = DiurnalWeights("http://127.0.0.1:9", token="s3cret", stale_after_seconds=60, router=lambda: router,
                          clock=clock, transport=httpx.MockTransport(diurnal.handler), start=False)
    yield router, diurnal, clock, hook
    hook.close()


def weights(router: SimpleNamespace) -> dict[str, Any]:
    return {d["model_info"]["id"]: d["litellm_params"].get("weight") for d in router.model_list}


CONFIGURED = {"a": 2, "b": None, "c": 5, "d": None}


def test_it_applies_provider_weights_split_by_configured_weight(world: Any) -> None:
    router, diurnal, _, hook = world
    hook.poll()
    # openai's 0.7 split 2:1 between its two deployments (b has no weight: 1); the group
    # with a provider the decision does not weigh keeps its configuration.
    assert weights(router) == {"a": pytest.approx(0.466667), "b": pytest.approx(0.233333), "c": 0.3, "d": None}
    assert hook.following and hook.applied[("chat", "c", "anthropic")] == 0.3
    assert diurnal.seen[0]["authorization"] == "Bearer s3cret"


def test_a_304_keeps_following_and_costs_no_body(world: Any) -> None:
    router, diurnal, clock, hook = world
    hook.poll()
    clock.now += 50
    hook.poll()
    assert diurnal.seen[1]["if-none-match"] and hook.polls == {"ok": 1, "not_modified": 1, "error": 0}
    clock.now += 50  # 100 s since the first answer, 50 since the 304: still fresh
    hook.poll()
    assert weights(router)["c"] == 0.3


def test_a_new_decision_is_applied(world: Any) -> None:
    router, diurnal, _, hook = world
    hook.poll()
    diurnal.body = {"mode": "act", "weights": {"openai": 0.2, "anthropic": 0.8}}
    hook.poll()
    assert weights(router)["c"] == 0.8 and weights(router)["a"] == pytest.approx(0.133333)


def test_diurnal_down_keeps_the_last_weights_until_stale_then_restores_the_configured(world: Any) -> None:
    router, diurnal, clock, hook = world
    hook.poll()
    diurnal.down = True
    clock.now += 30
    hook.poll()
    assert weights(router)["c"] == 0.3  # within stale_after: the last decision holds
    clock.now += 31
    hook.poll()
    assert weights(router) == CONFIGURED and not hook.following
    diurnal.down = False  # back: followed again at the next poll
    hook.poll()
    assert weights(router)["c"] == 0.3 and hook.following


@pytest.mark.parametrize("body", [
    {"mode": "act", "weights": {}},
    {"mode": "act", "weights": {"openai": -1, "anthropic": 1}},
    {"mode": "act", "weights": {"openai": "0.5", "anthropic": 0.5}},
    {"mode": "act", "weights": {"openai": 0, "anthropic": 0}},
    {"mode": "act"},
    ["not", "a", "decision"],
])
def test_a_malformed_decision_is_not_applied(world: Any, body: Any) -> None:
    router, diurnal, _, hook = world
    diurnal.body = body
    hook.poll()
    assert weights(router) == CONFIGURED and hook.polls["error"] == 1


def test_observe_mode_and_no_decision_yet_leave_the_configuration(world: Any) -> None:
    router, diurnal, _, hook = world
    hook.poll()
    diurnal.body = {"mode": "observe", "weights": {"openai": 0.5, "anthropic": 0.5}}
    hook.poll()
    assert weights(router) == CONFIGURED
    diurnal.status = 503
    hook.poll()
    assert weights(router) == CONFIGURED


def test_a_config_reload_changes_what_configured_means(world: Any) -> None:
    router, diurnal, clock, hook = world
    hook.poll()
    router.model_list[2]["litellm_params"]["weight"] = 9  # the proxy reloaded its config
    hook.poll()  # followed again: c gets diurnal's weight, and 9 is its configured weight now
    assert weights(router)["c"] == 0.3
    diurnal.down, clock.now = True, clock.now + 120
    hook.poll()
    assert weights(router)["c"] == 9


def test_model_groups_limit_what_is_steered(world: Any) -> None:
    router, diurnal, _, hook = world
    hook.model_groups = frozenset({"embed"})
    diurnal.body = {"mode": "act", "weights": {"openai": 0.5, "mistral": 0.5}}
    hook.poll()
    assert weights(router) == {**CONFIGURED, "d": 0.5}


def test_no_router_yet_is_no_error(world: Any) -> None:
    _, _, clock, _ = world
    hook = DiurnalWeights("http://127.0.0.1:9", router=lambda: None, clock=clock,
                          transport=httpx.MockTransport(Diurnal().handler), start=False)
    hook.poll()
    assert not hook.following
    hook.close()


def test_what_the_hook_cannot_steer_is_said_once(world: Any, caplog: pytest.LogCaptureFixture) -> None:
    router, _, _, hook = world
    router.routing_strategy = "latency-based-routing"
    with caplog.at_level(logging.WARNING, logger="diurnal.litellm"):
        hook.poll()
        hook.poll()
        router.model_list = [object()]  # a LiteLLM whose model list this hook cannot read
        hook.poll()
        hook.poll()
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 3, said
    assert "ignores deployment weights" in said[0] and "'embed' keeps its configured" in said[1]
    assert "nothing is steered" in said[2]
    assert not hook.following


def test_the_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="DIURNAL_URL"):
        DiurnalWeights("file:///etc/passwd", start=False)


def test_the_hook_stands_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Copied beside the proxy's config it imports nothing of diurnal's, and `diurnal
    litellm-hook` prints exactly it."""
    source = Path(litellm_hook.__file__).read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported - set(sys.stdlib_module_names) == {"httpx", "litellm", "prometheus_client"}
    assert cli_main(["litellm-hook"]) == 0
    assert capsys.readouterr().out == source
    assert cli_main(["litellm-hook", "-o", str(tmp_path / "diurnal_litellm.py")]) == 0
    assert (tmp_path / "diurnal_litellm.py").read_text() == source
