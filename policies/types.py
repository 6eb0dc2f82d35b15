"""The values that go into and come out of a policy. All frozen; no I/O anywhere here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from policies.thresholds import RouteConfig, RouteView


@dataclass(frozen=True)
class Reason:
    """Why a knob has its value, in the style of the HPA's conditions."""

    knob: str  # e.g. "weights/openai"
    code: str  # e.g. "PredictedLatencyBreach"
    message: str


@dataclass(frozen=True)
class ProviderView:
    """What is known about one provider at decision time."""

    name: str
    observed_p95_seconds: float | None = None
    observed_rpm: float | None = None
    #: Highest forecast p95 over the look-ahead window, and when it is expected.
    predicted_p95_seconds: float | None = None
    predicted_p95_at: datetime | None = None
    #: False when the forecast is missing or did not earn trust; the policy then reacts only.
    forecast_trusted: bool = False
    #: Share of requests failing with 429 or 5xx over the observation window.
    observed_error_ratio: float | None = None
    #: Input + output tokens per request, observed (turns a TPM limit into requests).
    tokens_per_request: float | None = None


@dataclass(frozen=True)
class View:
    now: datetime
    providers: Mapping[str, ProviderView]
    #: Highest forecast total request rate over the look-ahead window, requests per minute.
    predicted_total_rpm: float | None = None
    observed_total_rpm: float | None = None
    #: Age of the newest router data, seconds; None when there is none at all.
    data_age_seconds: float | None = None
    #: The operator's IANA timezone, for messages.
    tz: str = "UTC"
    #: Trusted load forecasts (requests per minute) per provider and "*" for all; a series
    #: whose forecast is gated off is absent, and prewarm then reacts only.
    load_forecast: Mapping[str, tuple[LoadPoint, ...]] = field(default_factory=dict)
    #: Per route: load, score distribution, segment escalation rates.
    routes: Mapping[str, RouteView] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderConfig:
    baseline_weight: float
    min_weight: float = 0.0
    max_weight: float = 1.0
    capacity_rpm: float | None = None
    capacity_tpm: float | None = None


@dataclass(frozen=True)
class PolicyConfig:
    providers: Mapping[str, ProviderConfig]
    latency_slo_seconds: float = 4.0
    #: Fraction of a provider's capacity the policy plans to use at most.
    capacity_headroom: float = 0.9
    #: Share of failing requests (429 and 5xx) a provider may have before share moves off it.
    error_budget: float = 0.05
    prewarm: tuple[PrewarmConfig, ...] = ()
    routes: tuple[RouteConfig, ...] = ()

    def baseline_thresholds(self) -> dict[str, float]:
        return {f"thresholds/{r.name}/escalation_fraction": r.baseline_fraction for r in self.routes}

    def baseline(self) -> dict[str, float]:
        return {name: p.baseline_weight for name, p in self.providers.items()}


@dataclass(frozen=True)
class PrewarmAction:
    """One step of a prewarm plan: set ``action``'s ``target`` to ``amount`` units at ``at``.

    For each configured action a decision holds one step ``at`` now (what should be in place
    now) and one per predicted peak ahead (``at`` = the peak's start minus the warm-up lead).
    """

    action: str
    target: str
    amount: float
    at: datetime
    peak_at: datetime | None = None
    kind: str = "replicas"  # replicas, webhook or pool
    release_at: datetime | None = None  # held at least until then (peak end + stabilization)


@dataclass(frozen=True)
class LoadPoint:
    """One step of a load forecast, in requests per minute."""

    at: datetime
    mean_rpm: float
    upper_rpm: float
    lower_rpm: float | None = None


@dataclass(frozen=True)
class PrewarmConfig:
    name: str
    kind: str  # replicas, webhook or pool
    target: str
    rpm_per_unit: float
    min_units: int = 0
    max_units: int = 1_000_000
    lead: timedelta = timedelta(minutes=10)
    release_after: timedelta = timedelta(minutes=30)
    provider: str = "*"  # whose load: a provider, or "*" for all


@dataclass(frozen=True)
class Decision:
    """What diurnal decided at ``at``: every knob with its reasons."""

    at: datetime
    weights: Mapping[str, float]
    thresholds: Mapping[str, float] = field(default_factory=dict)
    prewarm: tuple[PrewarmAction, ...] = ()
    reasons: tuple[Reason, ...] = ()
    mode: str = "observe"
    #: What diurnal would set; equals ``weights`` unless the mode or a guard held them back.
    recommended_weights: Mapping[str, float] = field(default_factory=dict)
    recommended_thresholds: Mapping[str, float] = field(default_factory=dict)

    def reasons_for(self, knob: str) -> tuple[Reason, ...]:
        return tuple(r for r in self.reasons if r.knob == knob)
