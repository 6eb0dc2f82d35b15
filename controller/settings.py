"""The one settings root.

Values come from (highest priority first): keyword arguments, environment variables
(``DIURNAL_`` prefix, ``__`` between nested names, e.g. ``DIURNAL_API__PORT=9000``), and an
optional YAML file. The environment is read here and nowhere else.

Why one long module: it is the whole settings schema (one pydantic root, as
pydantic-settings wants it); users and the Helm values schema read it as one document, and
splitting the groups across files would only scatter it. It holds declarations, no logic
beyond validators.
"""

from __future__ import annotations

import contextvars
import math
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from controller.errors import ConfigError
from controller.prices import Price, dst_gap_problem

_yaml_path: contextvars.ContextVar[Path | None] = contextvars.ContextVar("_yaml_path", default=None)


def http_url(value: str | None) -> str | None:
    """An http(s) URL with a host, or None. The error never repeats the value: it may carry a
    password (``http://user:pass@host``)."""
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        ok = False
    if not ok:
        raise ValueError("must be an http:// or https:// URL with a host")
    return value


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """``yes``/``true`` where a number is wanted is an error, not 1 (YAML reads ``yes`` as true)."""
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            if annotation in (int, float, int | None, float | None):
                raise ValueError(f"a number is needed, not the boolean {value!r} (YAML reads yes/no/on/off as booleans)")
        return value


CounterSignal = Literal["requests", "retries", "errors_429", "errors_5xx", "cache_hits", "cache_misses", "spend",
                        "input_tokens", "output_tokens"]
HistogramSignal = Literal["latency", "ttft", "score"]


class CounterMapping(_Group):
    metric: str = Field(min_length=1, description="Counter name as exposed (with or without _total).")
    match: dict[str, str] = Field(
        default_factory=dict, description="Label -> regular expression the value must fully match."
    )


class GenericMapping(_Group):
    """Metric names for the ``generic`` preset."""

    counters: dict[CounterSignal, CounterMapping] = Field(
        default_factory=dict, description="Signal -> counter metric. `requests` is required."
    )
    histograms: dict[HistogramSignal, str] = Field(
        default_factory=dict, description="Signal -> histogram base name (without _bucket). Latency in seconds."
    )
    provider_labels: list[str] = Field(default_factory=lambda: ["provider"], description="Labels naming the provider, first found wins.")
    model_labels: list[str] = Field(default_factory=lambda: ["model"], description="Labels naming the model.")
    route_labels: list[str] = Field(default_factory=lambda: ["route"], description="Labels naming the route.")


class RouterSettings(_Group):
    metrics_url: str | None = Field(
        default=None,
        description="URL of the router's Prometheus /metrics endpoint that `diurnal run` scrapes. "
        "Unset means nothing is scraped (events or backfill only).",
    )
    _metrics_url = field_validator("metrics_url")(http_url)
    preset: Literal["litellm", "otel-genai", "generic"] = Field(
        default="litellm",
        description="Metric-name mapping: `litellm` (LiteLLM proxy), `otel-genai` (OpenTelemetry GenAI "
        "conventions, e.g. Envoy AI Gateway), or `generic` (names from `router.mapping`).",
    )
    mapping: GenericMapping | None = Field(default=None, description="Metric names for the `generic` preset.")
    keep_labels: list[Literal["model", "route"]] = Field(
        default=["model", "route"],
        description="Dimensions kept besides the provider; drop one to merge its series.",
    )
    allow: dict[Literal["provider", "model", "route"], list[str]] = Field(
        default_factory=dict, description="Allowed values per dimension; others are dropped and counted."
    )
    max_series: int = Field(
        default=2000, ge=1, description="Cap on stored series; new series past it are dropped and counted."
    )
    model_providers: dict[str, str] = Field(
        default_factory=dict,
        description="Maps a router model label (e.g. `gpt-4o`) to a provider name, for metrics "
        "that carry a model but no provider label.",
    )
    scrape_interval_seconds: float = Field(
        default=15.0, gt=0, description="How often the router is scraped. Measured in seconds."
    )
    scrape_timeout_seconds: float = Field(
        default=5.0, gt=0,
        description="Deadline of one whole scrape (connect, headers and body), however slowly the router "
                    "answers. Measured in seconds."
    )
    bearer_token: SecretStr | None = Field(
        default=None, description="Bearer token sent to the router's /metrics, if it needs one."
    )
    source: Literal["scrape", "prometheus"] = Field(
        default="scrape",
        description="Where live router data comes from: `scrape` reads `metrics_url` (one router); "
        "`prometheus` queries `prometheus.url` each window for the router's series summed over all its "
        "replicas (a fleet), with Prometheus' own reset and staleness handling.",
    )

    @model_validator(mode="after")
    def _generic_needs_mapping(self) -> RouterSettings:
        if self.preset == "generic" and (self.mapping is None or "requests" not in self.mapping.counters):
            raise ValueError("preset `generic` needs router.mapping with at least counters.requests")
        return self


_MATCHER = r'\s*[A-Za-z_][A-Za-z0-9_]*\s*(=|!=|=~|!~)\s*"(?:[^"\\]|\\.)*"\s*'
#: A comma-separated list of PromQL label matchers (what goes between a selector's braces).
_MATCHERS = rf"{_MATCHER}(,{_MATCHER})*,?\s*"


class PrometheusSettings(_Group):
    url: str | None = Field(
        default=None,
        description="Base URL of a Prometheus-compatible API (Prometheus, Thanos, Mimir, "
        "VictoriaMetrics) to backfill history from. Unset means no backfill.",
    )
    _url = field_validator("url")(http_url)
    bearer_token: SecretStr | None = Field(default=None, description="Bearer token for that API.")
    basic_auth_username: str | None = Field(default=None, description="Basic-auth user for that API.")
    basic_auth_password: SecretStr | None = Field(default=None, description="Basic-auth password for that API.")
    backfill_weeks: float = Field(
        default=8.0, ge=0, le=52, description="History read at start (0: none). Measured in weeks."
    )
    step_seconds: int = Field(
        default=60, ge=1, le=3600, description="Resolution of the backfill queries. Measured in seconds."
    )
    timeout_seconds: float = Field(
        default=30.0, gt=0, description="Deadline of one whole query (each attempt). Measured in seconds.")
    selector: str = Field(
        default="", max_length=1000,
        description="PromQL label matchers that pick the router's series out of everything the API holds, "
        'e.g. `job="litellm", namespace="llm"` (the fleet input and every backfill). Empty: every series of '
        "the preset's metric names.")
    window_seconds: int = Field(
        default=60,
        description="Each fleet query reads the increase over this window (router.source prometheus; "
        "backfill then reads history with the same query at this step). A divisor of 60. Measured in seconds.")
    lag_seconds: float = Field(
        default=30.0, ge=0, le=3600,
        description="How far behind now a window must end before it is read: the API's scrape interval plus "
        "its rule and ingest delay (router.source prometheus). Measured in seconds.")

    @field_validator("selector")
    @classmethod
    def _matchers(cls, value: str) -> str:
        value = value.strip()
        if value and not re.fullmatch(_MATCHERS, value):
            raise ValueError('expected label matchers such as job="litellm", namespace=~"llm-.*" (no braces)')
        return value

    @field_validator("window_seconds")
    @classmethod
    def _divides_a_minute(cls, value: int) -> int:
        if value <= 0 or 60 % value:
            raise ValueError("must divide 60 (10, 15, 20, 30 or 60): windows are summed into minutes")
        return value

    @model_validator(mode="after")
    def _auth_pair(self) -> PrometheusSettings:
        if (self.basic_auth_username is None) != (self.basic_auth_password is None):
            raise ValueError("set both basic_auth_username and basic_auth_password, or neither")
        return self


class ApiSettings(_Group):
    host: str = Field(
        default="127.0.0.1",
        description="Address the HTTP API binds to. Loopback by default; set 0.0.0.0 only "
        "behind a network policy.",
    )
    port: int = Field(default=8787, ge=0, le=65535, description="TCP port of the HTTP API.")
    token: SecretStr | None = Field(
        default=None,
        description="Bearer token required by every write endpoint. Writes are refused while "
        "it is unset.",
    )
    max_event_cost: float = Field(
        default=100.0, gt=0, allow_inf_nan=False,
        description="Largest `cost` one pushed event may carry; a line above it is rejected (with its "
                    "line number), so one bad event cannot poison spend and the budget thresholds.",
    )


class ProviderPolicy(_Group):
    baseline_weight: float = Field(
        gt=0, le=1, description="Share of traffic this provider gets when nothing is predicted. A fraction."
    )
    min_weight: float = Field(default=0.0, ge=0, le=1, description="Lowest share diurnal may set. A fraction.")
    max_weight: float = Field(default=1.0, ge=0, le=1, description="Highest share diurnal may set. A fraction.")
    capacity_rpm: float | None = Field(
        default=None,
        gt=0,
        description="Requests per minute this provider can take (its rate limit or measured knee). "
        "Unset means unbounded.",
    )
    measure_knee: bool = Field(
        default=False,
        description="Without capacity_rpm: use the load at which this provider's p95 has left the SLO in its "
                    "own history (its knee), re-measured at each refit.",
    )
    capacity_tpm: float | None = Field(
        default=None, gt=0,
        description="Tokens per minute this provider can take (its TPM limit); turned into requests with the "
                    "tokens per request observed. Unset means unbounded.",
    )
    price: Price | None = Field(
        default=None,
        description="What a request costs here (USD per 1M input and output tokens, per request) and local-time "
                    "windows that scale it. Unset: the provider is planned by latency only.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> ProviderPolicy:
        if not self.min_weight <= self.baseline_weight <= self.max_weight:
            raise ValueError(
                f"need min_weight <= baseline_weight <= max_weight, got "
                f"{self.min_weight} <= {self.baseline_weight} <= {self.max_weight}"
            )
        return self


class PrewarmSettings(_Group):
    """One thing to warm up ahead of predicted peaks."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$", description="Name, used in reasons and metrics.")
    kind: Literal["replicas", "webhook", "pool"] = Field(
        description="`replicas`: scale a Kubernetes Deployment (target `namespace/name`); `webhook`: POST the "
                    "amount to the target URL (cache warm, provisioned throughput); `pool`: a connection-pool "
                    "size the router reads from the decision (target: the pool's name).")
    target: str = Field(min_length=1, description="What to act on; see `kind`.")
    rpm_per_unit: float = Field(gt=0, description="Requests per minute one unit (replica, pool slot) takes.")
    unit_price_per_hour: float | None = Field(
        default=None, ge=0, allow_inf_nan=False,
        description="USD one unit (a replica) costs per hour, warm or busy. Unset: planned by latency only.")
    min_units: int = Field(default=0, ge=0, description="Never fewer units than this.")
    max_units: int = Field(default=100, ge=1, description="Never more units than this.")
    lead_minutes: float = Field(
        default=10.0, ge=0, description="Warm-up time: act this long before the peak starts. Measured in minutes.")
    release_after_minutes: float = Field(
        default=30.0, ge=0, description="Hold the prewarm this long after the peak ends. Measured in minutes.")
    provider: str = Field(default="*", description="Whose load it serves: a provider, or `*` for all.")
    scale_in: bool = Field(
        default=False,
        description="`replicas` only. False: diurnal only raises replicas and, on release, returns to the count "
                    "it found (an HPA or a person owns the Deployment). True: diurnal owns the replica count and "
                    "also scales in to the amount it computes (the observed need, never below `min_units`).")

    @model_validator(mode="after")
    def _bounds(self) -> PrewarmSettings:
        if self.min_units > self.max_units:
            raise ValueError(f"min_units ({self.min_units}) is above max_units ({self.max_units})")
        if self.kind == "replicas" and self.target.count("/") != 1:
            raise ValueError(f"a replicas target is `namespace/deployment`, got {self.target!r}")
        if self.kind == "webhook" and not self.target.startswith(("http://", "https://")):
            raise ValueError("a webhook target is an http(s) URL")
        if self.scale_in and self.kind != "replicas":
            raise ValueError(f"scale_in applies to `replicas` actions only, not {self.kind!r}")
        return self


class SharedBudget(_Group):
    """A budget over every route together (``policy.shared_budget``)."""

    daily: float | None = Field(
        default=None, gt=0, description="Spend over all routes per local day (the configured timezone). Unset: none.")
    monthly: float | None = Field(
        default=None, gt=0,
        description="Spend over all routes per calendar month in the configured timezone: each day gets what is "
                    "left of it in proportion to the requests it is expected to bring. Unset: none.")

    @model_validator(mode="after")
    def _one_at_least(self) -> SharedBudget:
        if self.daily is None and self.monthly is None:
            raise ValueError("give daily, monthly or both (or leave shared_budget out)")
        return self


class RoutePolicy(_Group):
    """A route with a strong/weak model split (a RouteLLM-style escalation)."""

    tier: Literal["high", "standard", "low"] = Field(
        default="standard", description="`high` routes are never downgraded to save money.")
    baseline_fraction: float = Field(default=0.3, ge=0, le=1, description="Escalation share when nothing binds.")
    quality_floor: float = Field(default=0.0, ge=0, le=1, description="Never escalate less than this share.")
    max_fraction: float = Field(default=1.0, ge=0, le=1, description="Never escalate more than this share.")
    strong_cost_per_request: float = Field(default=0.0, ge=0, description="Average cost of a strong-model request.")
    weak_cost_per_request: float = Field(default=0.0, ge=0, description="Average cost of a weak-model request.")
    hourly_budget: float | None = Field(default=None, gt=0, description="Spend budget per hour. Unset: none.")
    daily_budget: float | None = Field(
        default=None, gt=0,
        description="Spend budget per local day (the configured timezone), in the currency of the costs: spread over "
                    "the day's hours by the demand forecast, re-planned from the actual spend. Unset: none.")
    monthly_budget: float | None = Field(
        default=None, gt=0,
        description="Spend budget per calendar month in the configured timezone: each day gets what is left of it in "
                    "proportion to the requests it is expected to bring. Unset: none.")
    protected: bool = Field(
        default=False,
        description="Never lowered below baseline_fraction to save money (as the `high` tier); when a budget cannot "
                    "hold it, diurnal says so (BudgetCannotHoldProtected, with the shortfall) and keeps it.")
    budget_hard_stop: bool = Field(
        default=False,
        description="Once today's budget is spent, stop escalating (fraction 0). Unset: escalation is held at "
                    "quality_floor, never stopped.")
    strong_provider: str | None = Field(default=None, description="Provider of the strong model, for its latency.")
    traffic_share: float = Field(default=1.0, gt=0, le=1, description="The route's share of all requests.")
    max_segment_disparity: float = Field(
        default=0.2, ge=0, le=1, description="Largest allowed gap in escalation rate between segments (the parity "
                                             "gap the DiurnalSegmentParityGap alert fires on).")
    hold_segment_parity: bool = Field(
        default=True,
        description="Give per-segment escalation fractions that bring every segment within max_segment_disparity "
                    "of the others when the gap is wider. false: the gap is only measured and reported.")

    @model_validator(mode="after")
    def _order(self) -> RoutePolicy:
        if not self.quality_floor <= self.baseline_fraction <= self.max_fraction:
            raise ValueError("need quality_floor <= baseline_fraction <= max_fraction")
        return self


class PolicySettings(_Group):
    providers: dict[str, ProviderPolicy] = Field(
        default_factory=dict,
        description="Per-provider baseline weights and bounds. Baseline weights must sum to 1.",
    )
    latency_slo_seconds: float = Field(
        default=4.0, gt=0, description="p95 latency objective per provider. Measured in seconds."
    )
    error_budget: float = Field(
        default=0.05, gt=0, le=1,
        description="Share of requests failing with 429 or 5xx a provider may have before share moves off it.",
    )
    capacity_headroom: float = Field(
        default=0.9, gt=0, le=1,
        description="Fraction of a provider's capacity (capacity_rpm, capacity_tpm or its measured knee) the "
                    "weights plan to use at most; the rest absorbs what the forecast misses. A fraction.",
    )
    min_headroom: float = Field(
        default=0.5, gt=0, le=1,
        description="The planner's headroom is learned per provider from the breaches it realises (p95 over the "
                    "SLO, or errors over the budget, at a load it planned as safe): it is cut by how far over and "
                    "for how long, and won back slowly while the provider is comfortably inside. This is the lowest "
                    "it may go; set it to capacity_headroom for a fixed headroom. A fraction.",
    )
    headroom_recovery_per_hour: float = Field(
        default=0.05, ge=0, le=1,
        description="How fast a learned headroom is won back while the provider is loaded near its plan and "
                    "comfortably inside the SLO: this much of its capacity per hour. A fraction per hour.",
    )
    weights_policy: Literal["planner", "heuristic"] = Field(
        default="planner",
        description="`planner`: the least-cost split of the forecast demand within each provider's learned SLO "
                    "capacity, with prices and the self-hosted pool planned together. `heuristic`: move share "
                    "off providers whose p95 is predicted or seen over the SLO, by baseline weights.",
    )
    untrusted_headroom: float = Field(
        default=0.7, gt=0, le=1,
        description="The planner's margin where the demand forecast is not trusted and it plans on the load "
                    "observed now: the fraction of a provider's capacity it plans to use at most (the lower of "
                    "this and capacity_headroom). A fraction.",
    )
    explore_above_seen: float = Field(
        default=0.2, ge=0, le=1,
        description="Where a provider never breached the SLO, how far above the busiest load it served the "
                    "planner may send it (its capacity is then learned by trying, a bounded step at a time). "
                    "A fraction.",
    )
    plan_hours: float = Field(
        default=6.0, gt=0, le=48,
        description="How far ahead the planner plans (at least the longest prewarm lead plus an hour). "
                    "Measured in hours.",
    )
    lead_minutes: float = Field(
        default=30.0,
        ge=0,
        description="How far ahead of a predicted breach weights start to move. Measured in minutes.",
    )
    window_minutes: float = Field(
        default=60.0,
        gt=0,
        description="Length of the look-ahead window after the lead. Measured in minutes.",
    )
    missed_window_minutes: float = Field(
        default=60.0, ge=15, le=240,
        description="A predicted peak is abandoned (ForecastMissed) only when the load observed over this many "
                    "recent minutes (two thirds of them with data) is under the lower band the forecast gave for "
                    "the same minutes. Measured in minutes.",
    )
    prewarm: list[PrewarmSettings] = Field(default_factory=list, description="What to warm up ahead of peaks.")
    routes: dict[str, RoutePolicy] = Field(default_factory=dict, description="Routes with a strong/weak split.")
    shared_budget: SharedBudget | None = Field(
        default=None,
        description="A budget over all routes together, beside their own: when the routes' day plans are predicted "
                    "to spend more than it leaves for today, escalation steps down by tier, the `low` routes first, "
                    "then the `standard` ones, each in proportion to its escalation above its quality floor; `high` "
                    "and protected routes are never cut (SharedBudgetStepDown, BudgetCannotHoldProtected). Unset: "
                    "none.")

    @model_validator(mode="after")
    def _baselines_sum_to_one(self) -> PolicySettings:
        names = [p.name for p in self.prewarm]
        if len(set(names)) != len(names):
            raise ValueError("prewarm action names must be unique")
        if self.providers:
            total = sum(p.baseline_weight for p in self.providers.values())
            if not math.isclose(total, 1.0, abs_tol=1e-6):
                raise ValueError(f"baseline weights must sum to 1, got {total:.6f}")
            if sum(p.min_weight for p in self.providers.values()) > 1 + 1e-9:
                raise ValueError("min_weight values sum to more than 1")
        return self


class GuardrailSettings(_Group):
    mode: Literal["observe", "act"] = Field(
        default="observe",
        description="`observe` computes and exposes decisions but pushes nothing; `act` pushes them.",
    )
    kill_switch: bool = Field(
        default=False, description="When true, every knob is held at its baseline."
    )
    dead_band: float = Field(
        default=0.02,
        ge=0,
        description="Weight changes smaller than this are not made. A fraction of traffic.",
    )
    threshold_dead_band: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="A route's escalation fraction is re-published only when it moves by at least this much (or its "
                    "reason changes): a day plan re-planned every tick does not push a new decision every tick. A "
                    "fraction of requests.",
    )
    max_weight_step: float = Field(
        default=0.10,
        gt=0,
        le=1,
        description="Largest change of one provider's weight per control tick. A fraction of traffic.",
    )
    breach_step: float = Field(
        default=0.5, gt=0, le=1,
        description="Largest change of one provider's weight per control tick while share moves off a provider "
                    "seen over the SLO or the error budget now (its users are failing now: the HPA scales up "
                    "faster than down for the same reason). At least max_weight_step. A fraction of traffic.",
    )
    stabilization_seconds: float = Field(
        default=600.0,
        ge=0,
        description="Moves back toward the baseline wait until every recommendation of this window agrees "
                    "(moves away from it are immediate). Measured in seconds.",
    )
    stale_after_seconds: float = Field(
        default=180.0,
        gt=0,
        description="Router data older than this reverts every knob to baseline. Measured in seconds.",
    )


class ExcludeWindow(_Group):
    """A known anomaly (an incident, a holiday): its data is ignored when fitting."""

    start: AwareDatetime = Field(description="Start of the window, with its UTC offset.")
    end: AwareDatetime = Field(description="End of the window (exclusive), with its UTC offset.")
    reason: str = Field(default="", description="Why, for the logs and the forecast API.")

    @model_validator(mode="after")
    def _ordered(self) -> ExcludeWindow:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class ForecastSettings(_Group):
    min_history_days: float = Field(
        default=3.0, gt=0, description="No forecast below this much history. Measured in days."
    )
    weekly_history_days: float = Field(
        default=21.0, gt=0,
        description="Hour-of-week models from this much history; hour-of-day models before. Measured in days.",
    )
    refit_interval_minutes: float = Field(
        default=60.0, gt=0, description="How often forecasts are refitted. Measured in minutes."
    )
    reselect_hours: float = Field(
        default=24.0, gt=0,
        description="How often the backtest re-chooses each series' model; refits in between reuse the "
                    "choice. Measured in hours.",
    )
    backtest_days: int = Field(
        default=7, ge=1, le=28, description="Rolling origins (one a day) in the backtest that chooses a model."
    )
    horizon_hours: int = Field(
        default=24, ge=1, le=168, description="How far each forecast reaches. Measured in hours."
    )
    history_weeks: int = Field(
        default=8, ge=1, le=8, description="History used for a fit. Measured in weeks."
    )
    coverage: float = Field(
        default=0.8, gt=0, lt=1, description="Central coverage of the forecast band (lower, upper). A fraction."
    )
    under_penalty: float = Field(
        default=2.0, ge=1,
        description="How much more an under-prediction costs than an over-prediction when choosing a model "
                    "for a load signal (request rate, tokens, spend). A ratio.",
    )
    skill_gate: float = Field(
        default=0.0, le=1,
        description="A forecast is acted on ahead only with at least this skill (1 - MAE / MAE of seasonal "
                    "naive, on the backtest). A ratio.",
    )
    seasonality_gate: float = Field(
        default=0.1, le=1,
        description="... and only when its seasonal model beats a flat forecast by this much (1 - MAE / MAE "
                    "of the flat level); a series of noise fails it. A ratio.",
    )
    workers: int = Field(
        default=2, ge=0, le=32,
        description="Processes that refit. 0 fits in the calling thread (embedding, tests): no timeout then.",
    )
    refit_timeout_seconds: float = Field(
        default=60.0, gt=0,
        description="Longest one series' fit may take in a worker; past it the series keeps its last good "
                    "forecast. Measured in seconds.",
    )
    exclude: list[ExcludeWindow] = Field(
        default_factory=list, description="Known anomalies to leave out of every fit."
    )


class ControlSettings(_Group):
    tick_interval_seconds: float = Field(
        default=60.0, gt=0, description="How often the controller decides. Measured in seconds."
    )
    misfire_grace_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A scheduled job later than this is skipped, not run late. Measured in seconds.",
    )
    observation_window_minutes: float = Field(
        default=5.0,
        gt=0,
        description="Recent data used as the current observation. Measured in minutes.",
    )
    checkpoint_seconds: float = Field(
        default=5.0, gt=0, le=60,
        description="How often the open minute is checkpointed to the store while scraping: the most "
                    "scraped data a SIGKILL can lose. Pushed events are stored before they are "
                    "acknowledged, whatever this is. Measured in seconds.",
    )
    close_grace_seconds: float = Field(
        default=120.0, ge=0, le=3600,
        description="A minute is closed (written to the store, and its memory freed) once input newer "
                    "than its end by this much has been ingested, whether or not a control tick ran: "
                    "feeding weeks of history keeps at most about twice this much open (minutes close in "
                    "batches). Input for a minute already "
                    "closed is added to it (never lost). Measured in seconds.",
    )
    shutdown_seconds: float = Field(
        default=20.0, gt=0,
        description="On SIGTERM the process exits within this, whatever the router, Prometheus or a "
                    "webhook does; keep it under the pod's terminationGracePeriodSeconds (30 by "
                    "default) minus a margin. Measured in seconds.",
    )


class FilePublisherSettings(_Group):
    path: Path | None = Field(
        default=None, description="Write each new decision here (atomically), for a router that hot-reloads a "
                                  "mounted file. Unset: off.")
    format: Literal["json", "yaml"] = Field(default="json", description="File format.")
    shape: Literal["decision", "litellm"] = Field(
        default="decision",
        description="`decision`: the body of GET /v1/decision. `litellm`: a LiteLLM proxy config fragment "
                    "(model_list with deployment weights, router_settings).")
    litellm_model_group: str = Field(
        default="diurnal", min_length=1,
        description="With shape litellm: the model_name the router.model_providers deployments serve.")


class WebhookPublisherSettings(_Group):
    url: str | None = Field(default=None, description="POST each new decision here (JSON). Unset: off.")
    _url = field_validator("url")(http_url)
    bearer_token: SecretStr | None = Field(default=None, description="Sent as Authorization: Bearer.")
    timeout_seconds: float = Field(
        default=5.0, gt=0, description="Deadline of one whole attempt. Measured in seconds.")
    max_attempts: int = Field(default=4, ge=1, le=10, description="Attempts per decision, first included.")
    backoff_seconds: float = Field(
        default=1.0, gt=0, description="Base of the exponential backoff (full jitter). Measured in seconds.")
    max_backoff_seconds: float = Field(default=30.0, gt=0, description="Longest wait between attempts. Seconds.")


class KubernetesSettings(_Group):
    api_url: str | None = Field(
        default=None, description="Kubernetes API for replicas prewarm. Unset: in-cluster "
                                  "(KUBERNETES_SERVICE_HOST) with the pod's service account.")
    _api_url = field_validator("api_url")(http_url)
    token_path: Path = Field(default=Path("/var/run/secrets/kubernetes.io/serviceaccount/token"),
                             description="Service-account token file (re-read on each call).")
    ca_path: Path = Field(default=Path("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"),
                          description="CA bundle of the API server.")
    timeout_seconds: float = Field(
        default=5.0, gt=0, description="Deadline of one whole API call. Measured in seconds.")


class PublishSettings(_Group):
    """Where decisions are pushed, in `act` mode only (`observe` pushes nothing). Routers can
    always poll GET /v1/decision."""

    file: FilePublisherSettings = Field(default_factory=FilePublisherSettings)
    webhook: WebhookPublisherSettings = Field(default_factory=WebhookPublisherSettings)
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)


class HaSettings(_Group):
    """Two or more replicas: every one reads, forecasts and serves the API; only the holder of
    a Kubernetes Lease acts (publishers, the decision file, prewarm). The Kubernetes API is
    reached as `publish.kubernetes` says."""

    enabled: bool = Field(default=False, description="Elect one acting replica through a Lease.")
    lease_name: str = Field(default="diurnal", min_length=1, max_length=253, description="Name of the Lease.")
    namespace: str | None = Field(
        default=None, description="Namespace of the Lease. Unset: the pod's (POD_NAMESPACE, else the "
                                  "service account's namespace file).")
    identity: str | None = Field(
        default=None, description="This replica's name in the Lease. Unset: POD_NAME, else the host name.")
    lease_duration_seconds: float = Field(
        default=15.0, gt=0, description="How long a lease outlives its last renewal for the other replicas. "
                                        "Measured in seconds.")
    renew_deadline_seconds: float = Field(
        default=10.0, gt=0, description="A leader that could not renew for this long stops acting (less than "
                                        "the lease duration: it stops before another can take over). Measured "
                                        "in seconds.")
    retry_period_seconds: float = Field(
        default=2.0, gt=0, description="How often the lease is renewed, or tried for. Measured in seconds.")

    @model_validator(mode="after")
    def _nested(self) -> HaSettings:
        if not self.retry_period_seconds < self.renew_deadline_seconds < self.lease_duration_seconds:
            raise ValueError("need retry_period_seconds < renew_deadline_seconds < lease_duration_seconds")
        return self


class TracingSettings(_Group):
    """OpenTelemetry traces of the control loop: one span per cycle (collect, fit, decide,
    publish). Off unless an endpoint is set."""

    otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP traces endpoint, e.g. http://otel-collector:4318/v1/traces. Unset: no traces "
                    "are exported.",
    )
    otlp_headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="Headers sent with each export (e.g. an authorization token).")
    service_name: str = Field(default="diurnal", min_length=1, description="The service.name resource attribute.")
    sample_ratio: float = Field(
        default=1.0, ge=0, le=1, description="Fraction of control cycles traced (parent-based). A fraction.")
    timeout_seconds: float = Field(default=10.0, gt=0, description="Per export request. Measured in seconds.")

    _otlp_endpoint = field_validator("otlp_endpoint")(http_url)


class Settings(BaseSettings):
    """diurnal's settings. See README for an annotated example file."""

    model_config = SettingsConfigDict(
        env_prefix="DIURNAL_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    timezone: str = Field(
        default="America/New_York",
        description="IANA timezone in which seasonality (hour of day, weekday) is counted.",
    )
    data_dir: Path = Field(
        default=Path("./data"), description="Directory of the embedded store (SQLite)."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level."
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`text`: one readable line per record. `json`: one JSON object per line (ts, level, logger, "
                    "message, and exc_info where there is one), for log pipelines.",
    )
    router: RouterSettings = Field(default_factory=RouterSettings)
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    guardrails: GuardrailSettings = Field(default_factory=GuardrailSettings)
    forecast: ForecastSettings = Field(default_factory=ForecastSettings)
    control: ControlSettings = Field(default_factory=ControlSettings)
    publish: PublishSettings = Field(default_factory=PublishSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    ha: HaSettings = Field(default_factory=HaSettings)

    @model_validator(mode="after")
    def _fleet_needs_prometheus(self) -> Settings:
        if self.router.source == "prometheus" and self.prometheus.url is None:
            raise ValueError("router.source prometheus needs prometheus.url (the API to read the fleet from)")
        return self

    @model_validator(mode="after")
    def _price_windows_exist_locally(self) -> Settings:
        """A price window is in local time: its start and end must exist on every day, DST
        spring-forward days included (the settings' timezone is known only here)."""
        for name, p in self.policy.providers.items():
            for i, w in enumerate(p.price.windows if p.price is not None else ()):
                if (problem := dst_gap_problem(w, self.timezone)) is not None:
                    raise ValueError(f"policy.providers.{name}.price.windows.{i}: {problem}")
        return self

    @field_validator("timezone")
    @classmethod
    def _valid_tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown IANA timezone {value!r}; use a name like 'America/New_York'"
            ) from exc
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: what, and where (PyYAML's own text spans several)."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem is None:
        return " ".join(str(exc).split())
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{problem}{where}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (plain YAML keeps the last,
    silently: a setting would be lost)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"found the key {key!r} twice (first on line "
                    f"{seen[key].start_mark.line + 1})", key_node.start_mark)
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


class _YamlSource(PydanticBaseSettingsSource):
    """The YAML file given to :func:`load_settings`, lowest priority."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ is overridden; pydantic-settings does not call this

    def __call__(self) -> dict[str, Any]:
        path = _yaml_path.get()
        if path is None:
            return {}
        try:
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(exc)}") from exc
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        return data


#: A field whose name holds one of these may hold a secret (a token, a password, credentials
#: in a URL, an auth header): its value is never shown in an error.
SECRET_NAMES = ("token", "password", "secret", "url", "endpoint", "headers")


def _secret(loc: tuple[int | str, ...]) -> bool:
    return any(part in str(name).lower() for name in loc for part in SECRET_NAMES)


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; every setting is in docs/settings.md)"
        shown = "" if err["type"] == "extra_forbidden" else f" (got {err.get('input')!r})"
        if isinstance(err.get("input"), dict):
            shown = ""
        elif _secret(err["loc"]):
            shown = " (the value is not shown: it may hold a secret)"
        lines.append(f"  {field}: {msg}{shown}")
    return "invalid settings:\n" + "\n".join(lines)


def secret_values(settings: BaseModel) -> list[str]:
    """Every secret the settings hold, for the log's redacting filter: each ``SecretStr``
    (tokens, passwords, OTLP headers) and the password inside any URL."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v)
        elif isinstance(value, str) and "://" in value:
            userinfo = urlsplit(value).password
            if userinfo:
                found.append(userinfo)

    walk(settings)
    return found


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from the environment, an optional YAML file and overrides.

    Raises :class:`ConfigError` naming every bad field.
    """
    if path is not None and Path(path).is_dir():
        raise ConfigError(f"config file {path} is a directory; give the YAML settings file in it")
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"config file {path} does not exist")
    token = _yaml_path.set(Path(path) if path is not None else None)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc
    except SettingsError as exc:  # an environment variable that is not valid JSON for its field
        cause = f": {exc.__cause__}" if exc.__cause__ is not None else ""
        field = str(exc).split('"')[1] if str(exc).count('"') >= 2 else "?"
        raise ConfigError(f"invalid settings: the environment variable for {field} (DIURNAL_{field.upper()} or "
                          f"DIURNAL_{field.upper()}__...) must hold valid JSON for that field{cause}") from exc
    finally:
        _yaml_path.reset(token)
