"""Policy and guardrail configs for the pure tests, built the way the controller builds them:
from the settings (``policy.*``, ``guardrails.*``), the one place that declares defaults."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.decide import guardrail_config, policy_config
from controller.settings import GuardrailSettings, PolicySettings
from policies import GuardrailConfig, PolicyConfig, PrewarmConfig, RouteConfig


def policy(providers: Mapping[str, float | Mapping[str, Any]], **settings: Any) -> PolicyConfig:
    """``providers``: name -> baseline weight, or name -> its ``policy.providers.<name>``
    settings; ``settings``: any other ``policy.*`` setting (``prewarm`` and ``routes`` as
    settings too)."""
    given = {n: ({"baseline_weight": p} if isinstance(p, int | float) else dict(p)) for n, p in providers.items()}
    return policy_config(PolicySettings(providers=given, **settings), list(given), {})


def provider(baseline: float, min_weight: float = 0.0, max_weight: float = 1.0, capacity_rpm: float | None = None,
             capacity_tpm: float | None = None) -> dict[str, Any]:
    """One provider's settings, positionally as the policies' tables read."""
    return {"baseline_weight": baseline, "min_weight": min_weight, "max_weight": max_weight,
            "capacity_rpm": capacity_rpm, "capacity_tpm": capacity_tpm}


def route(name: str, **settings: Any) -> RouteConfig:
    """One route's config from its ``policy.routes.<name>`` settings."""
    return policy({"p": 1.0}, routes={name: settings}).routes[0]


def prewarm(**settings: Any) -> PrewarmConfig:
    """One prewarm action's config from its ``policy.prewarm[]`` settings."""
    return policy({"p": 1.0}, prewarm=[settings]).prewarm[0]


def guardrails(**settings: Any) -> GuardrailConfig:
    """The guardrails' config from ``guardrails.*`` settings."""
    return guardrail_config(GuardrailSettings(**settings))
