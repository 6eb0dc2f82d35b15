"""The Kubernetes scale client against the API's shapes (the Scale objects the fake API server
returns are checked against Kubernetes' own autoscaling/v1 schema), and the prewarm executor's
rules: raise only, go back only to what it found, leave a Deployment others changed alone."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import kubernetes_validate
import pytest

from controller.actuators.prewarm import KubernetesError, KubernetesScaler, PrewarmExecutor
from policies import PrewarmAction

NOW = datetime(2026, 11, 16, 13, 30, tzinfo=UTC)
KUBERNETES_VERSIONS = ("1.29.0", "1.33.0")


def scale_object(replicas: int) -> dict[str, object]:
    """An autoscaling/v1 Scale as the API server returns it for deployments/scale."""
    obj: dict[str, object] = {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": "vllm", "namespace": "llm", "uid": "4b0e", "resourceVersion": "81234",
                         "creationTimestamp": "2026-10-01T12:00:00Z"},
            "spec": {"replicas": replicas}, "status": {"replicas": replicas, "selector": "app=vllm"}}
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)
    return obj


def test_the_fake_api_answers_what_kubernetes_would() -> None:
    """The check in :func:`scale_object` can fail: a Scale with a misspelt field is refused."""
    bad = {**scale_object(3), "spec": {"replica": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSIONS[-1], strict=True)


class FakeCluster:
    def __init__(self, replicas: int) -> None:
        self.replicas = replicas
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path != "/apis/apps/v1/namespaces/llm/deployments/vllm/scale":
            return httpx.Response(404, json={"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404})
        if request.headers.get("Authorization") != "Bearer tok-1":
            return httpx.Response(401, json={"kind": "Status", "status": "Failure", "reason": "Unauthorized"})
        if request.method == "PATCH":
            assert request.headers["Content-Type"] == "application/merge-patch+json"
            self.replicas = json.loads(request.content)["spec"]["replicas"]
        return httpx.Response(200, json=scale_object(self.replicas))


def scaler(tmp_path: Path, cluster: FakeCluster) -> KubernetesScaler:
    token = tmp_path / "token"
    token.write_text("tok-1\n")
    return KubernetesScaler("https://10.96.0.1:443", token, None, transport=httpx.MockTransport(cluster))


def step(amount: int, at: datetime = NOW) -> tuple[PrewarmAction, ...]:
    return (PrewarmAction("gpu-pool", "llm/vllm", amount, at, None, "replicas", at + timedelta(hours=1)),)


def test_patch_goes_to_the_scale_subresource_with_a_merge_patch(tmp_path: Path) -> None:
    cluster = FakeCluster(3)
    k = scaler(tmp_path, cluster)
    assert k.get_replicas("llm", "vllm") == 3
    assert k.set_replicas("llm", "vllm", 8) == 8
    patch = cluster.requests[-1]
    assert patch.method == "PATCH" and str(patch.url) == "https://10.96.0.1/apis/apps/v1/namespaces/llm/deployments/vllm/scale"
    assert json.loads(patch.content) == {"spec": {"replicas": 8}}
    with pytest.raises(KubernetesError, match="404"):
        k.get_replicas("llm", "other")
    (tmp_path / "token").write_text("rotated")  # the token is re-read: a rotated one is used at once
    with pytest.raises(KubernetesError, match="401"):
        k.get_replicas("llm", "vllm")


def test_executor_raises_then_returns_to_what_it_found(tmp_path: Path) -> None:
    cluster = FakeCluster(3)
    results: list[tuple[str, str]] = []
    ex = PrewarmExecutor(lambda: scaler(tmp_path, cluster), lambda a, r: results.append((a, r)))
    ex.apply(step(8), NOW)
    assert cluster.replicas == 8
    ex.apply(step(8), NOW + timedelta(minutes=1))  # unchanged: no API call
    calls = len(cluster.requests)
    ex.apply(step(8), NOW + timedelta(minutes=2))
    assert len(cluster.requests) == calls
    ex.apply(step(2), NOW + timedelta(hours=2))  # released: back to the 3 it found, not to 2
    assert cluster.replicas == 3
    assert results == [("gpu-pool", "ok"), ("gpu-pool", "ok")]


def test_executor_never_scales_in_what_it_did_not_raise(tmp_path: Path) -> None:
    cluster = FakeCluster(10)  # an HPA already runs it higher
    ex = PrewarmExecutor(lambda: scaler(tmp_path, cluster))
    ex.apply(step(6), NOW)
    assert cluster.replicas == 10 and [r.method for r in cluster.requests] == ["GET"]
    cluster.replicas = 4
    ex.apply(step(8), NOW + timedelta(minutes=5))
    assert cluster.replicas == 8
    cluster.replicas = 12  # someone scaled it further meanwhile
    ex.apply(step(2), NOW + timedelta(hours=2))
    assert cluster.replicas == 12  # theirs now: left alone


def test_an_unreachable_api_is_retried_on_the_next_tick(tmp_path: Path) -> None:
    cluster = FakeCluster(3)
    up = {"ok": False}

    def flaky(request: httpx.Request) -> httpx.Response:
        if not up["ok"]:
            raise httpx.ConnectError("refused", request=request)
        return cluster(request)

    token = tmp_path / "token"
    token.write_text("tok-1")
    results: list[tuple[str, str]] = []
    ex = PrewarmExecutor(lambda: KubernetesScaler("https://k8s", token, None, transport=httpx.MockTransport(flaky)),
                         lambda a, r: results.append((a, r)))
    ex.apply(step(8), NOW)
    assert results == [("gpu-pool", "error")] and cluster.replicas == 3
    up["ok"] = True
    ex.apply(step(8), NOW + timedelta(minutes=1))
    assert cluster.replicas == 8 and results[-1] == ("gpu-pool", "ok")


def test_submit_applies_in_the_background_and_a_slow_api_does_not_block(tmp_path: Path) -> None:
    import threading

    cluster = FakeCluster(3)
    entered, release = threading.Event(), threading.Event()

    def slow(request: httpx.Request) -> httpx.Response:
        entered.set()
        assert release.wait(30), "never released"
        return cluster(request)

    token = tmp_path / "token"
    token.write_text("tok-1")
    ex = PrewarmExecutor(lambda: KubernetesScaler("https://k8s", token, None, transport=httpx.MockTransport(slow)))
    try:
        ex.submit(step(6), NOW)
        ex.submit(step(8), NOW + timedelta(minutes=1))  # replaces 6 if 6 has not started yet
        # Both submits returned while the API call they caused is held open: had submit waited
        # for the API, this thread would never get here to release it.
        assert entered.wait(30) and not cluster.requests
        release.set()
        assert ex.wait_idle(10)
        assert cluster.replicas == 8
    finally:
        ex.close()


class _Replicas:
    def __init__(self, n: int) -> None:
        self.n = n
        self.calls: list[int] = []

    def get_replicas(self, namespace: str, name: str) -> int:
        return self.n

    def set_replicas(self, namespace: str, name: str, replicas: int) -> int:
        self.n = replicas
        self.calls.append(replicas)
        return replicas

    def close(self) -> None:
        pass


def test_an_owned_deployment_is_scaled_in_after_the_stabilization_window() -> None:
    from datetime import UTC, datetime, timedelta

    from policies import PrewarmAction

    cluster = _Replicas(4)
    ex = PrewarmExecutor(lambda: cluster, owned=frozenset({"pool"}))
    t0 = datetime(2026, 11, 16, 12, tzinfo=UTC)

    def at(minute: int, amount: int) -> None:
        now = t0 + timedelta(minutes=minute)
        ex.apply((PrewarmAction("pool", "llm/vllm", amount, now, kind="replicas"),), now)

    at(0, 10)
    assert cluster.n == 10
    at(1, 6)
    at(3, 6)
    assert cluster.n == 10  # a dip shorter than 5 minutes never cancels warming replicas
    at(6, 6)
    assert cluster.n == 6  # diurnal owns it: it scales in below the count it found (4 -> 10 -> 6)
    at(7, 3)
    at(13, 3)
    assert cluster.n == 3 and cluster.calls == [10, 6, 3]
    ex.close()
