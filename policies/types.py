"""The values that go into and come out of a policy. All frozen; no I/O anywhere here.

Every config here is built from :class:`controller.settings.Settings` (the one place that
declares defaults), so none declares a default of its own that a setting also has.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum, unique
from zoneinfo import ZoneInfo

__all__ = [
    "FALLBACK_CODES",
    "DayPlan",
    "SegmentParity",
    "Decision",
    "Ahead",
    "GuardrailConfig",
    "LoadPoint",
    "Outlook",
    "PlannedHour",
    "PlannedInterval",
    "Pool",
    "Override",
    "PolicyConfig",
    "PriceConfig",
    "PrewarmAction",
    "PrewarmConfig",
    "ProviderConfig",
    "ProviderView",
    "Reason",
    "ReasonCode",
    "RouteConfig",
    "RouteHour",
    "SloCapacity",
    "RouteView",
    "View",
]


@unique
class ReasonCode(StrEnum):
    """Why a knob has its value: the code on every :class:`Reason`, in the style of the HPA's
    condition reasons. A ``StrEnum``, so it compares equal to its name and serialises as it.

    The README's reason-code tables list exactly these members (a test checks it)."""

    # Provider weights (knob ``weights/<provider>``), from the weights policy.
    BaselineWeight = "BaselineWeight"
    PredictedLatencyBreach = "PredictedLatencyBreach"
    ObservedLatencyBreach = "ObservedLatencyBreach"
    ErrorBudgetBreach = "ErrorBudgetBreach"
    ShareReceived = "ShareReceived"
    CapacityLimited = "CapacityLimited"
    CapacityExhausted = "CapacityExhausted"
    AllProvidersDegraded = "AllProvidersDegraded"
    # Guardrails (knob ``weights``, or ``weights/<provider>`` for an override).
    KillSwitch = "KillSwitch"
    StaleInputs = "StaleInputs"
    MissingSignal = "MissingSignal"
    DesiredWithinDeadBand = "DesiredWithinDeadBand"
    Stabilizing = "Stabilizing"
    StepLimited = "StepLimited"
    ManualOverride = "ManualOverride"
    ObserveMode = "ObserveMode"
    # High availability (knob ``actuators``): another replica holds the Lease and acts.
    NotLeader = "NotLeader"
    # Routing thresholds (knobs ``thresholds/<route>``, ``…/score``, ``…/segments``).
    BaselineFraction = "BaselineFraction"
    NoLoadData = "NoLoadData"
    BudgetLimited = "BudgetLimited"
    QualityFloor = "QualityFloor"
    BudgetInversionAvoided = "BudgetInversionAvoided"
    StrongModelLatency = "StrongModelLatency"
    CalibratedThreshold = "CalibratedThreshold"
    DayPlanned = "DayPlanned"
    BudgetSpent = "BudgetSpent"
    BudgetExhausted = "BudgetExhausted"
    BudgetCannotHoldProtected = "BudgetCannotHoldProtected"
    SharedBudgetStepDown = "SharedBudgetStepDown"
    SharedBudgetHolds = "SharedBudgetHolds"
    SegmentDisparity = "SegmentDisparity"
    SegmentsWithinLimit = "SegmentsWithinLimit"
    # Prewarm (knob ``prewarm/<action>``).
    PredictedPeak = "PredictedPeak"
    PeakPlanned = "PeakPlanned"
    HeldUntilRelease = "HeldUntilRelease"
    NoPeakAhead = "NoPeakAhead"
    ReactiveNeed = "ReactiveNeed"
    ForecastGated = "ForecastGated"
    ForecastMissed = "ForecastMissed"
    # Provider weights from the planner (``policies.planner``, the default weights policy).
    CheapestWithinSlo = "CheapestWithinSlo"
    CapacityForecastLimited = "CapacityForecastLimited"
    PriceUnknown = "PriceUnknown"
    PriceWindow = "PriceWindow"
    ExploringCapacity = "ExploringCapacity"
    # Prewarm of a self-hosted pool planned with the weights.
    PoolPlanned = "PoolPlanned"
    # Forecast gates (knob ``forecast/<signal>/<provider>``), from the forecaster.
    ForecastTrusted = "ForecastTrusted"
    InsufficientHistory = "InsufficientHistory"
    NotSeasonal = "NotSeasonal"
    BelowSkillGate = "BelowSkillGate"


#: Codes under which a decision holds every knob at its baseline (``diurnal_fallback``).
FALLBACK_CODES: tuple[ReasonCode, ...] = (
    ReasonCode.AllProvidersDegraded, ReasonCode.KillSwitch, ReasonCode.StaleInputs, ReasonCode.MissingSignal)


@dataclass(frozen=True)
class Reason:
    """Why a knob has its value, in the style of the HPA's conditions."""

    knob: str  # e.g. "weights/openai"
    code: ReasonCode
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
class RouteHour:
    """One hour left of the local day, for a route's day plan: its start, the requests still
    to come in it, its score distribution (empty where the router exports none) and the
    price windows' factors on the strong and the weak model's cost per request."""

    at: datetime
    requests: float
    score_cdf: Sequence[tuple[float, float]] = ()
    strong_price_factor: float = 1.0
    weak_price_factor: float = 1.0


@dataclass(frozen=True)
class RouteView:
    predicted_rpm: float | None = None  # trusted forecast peak over the look-ahead
    observed_rpm: float | None = None
    #: This hour-of-week's score distribution: (score, fraction of requests at or below it),
    #: increasing in both.
    score_cdf: Sequence[tuple[float, float]] = ()
    #: Observed escalation rate per segment label.
    segment_rates: Mapping[str, float] = field(default_factory=dict)
    #: What the route spent since local midnight and since the first of the month (None:
    #: not known), and the hours left of the local day (for a day plan).
    spent_today: float | None = None
    spent_month: float | None = None
    hours_left: Sequence[RouteHour] = ()
    #: Requests a whole day brings (the next 24 hours' forecast), and the whole days left in
    #: the month after today: a monthly budget's share for today.
    requests_per_day: float = 0.0
    days_left_after_today: int = 0
    #: Whether the spend was counted from the router's own spend counter (else estimated from
    #: the route's requests at the configured costs).
    spend_measured: bool = True


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
    #: What the planner plans over (the demand, capacity and prices ahead); None: nothing to
    #: plan on (the weights then keep the heuristic policy).
    outlook: Outlook | None = None
    #: Whether the load forecast is happening, over a window of comparable minutes; None:
    #: not enough of them (prewarm plans then stand).
    load_check: LoadCheck | None = None


@dataclass(frozen=True, kw_only=True)
class SloCapacity:
    """What is known of one provider's SLO capacity at one time (learned by the controller:
    ``controller.forecast.slo_capacity``), and its hard limits."""

    #: The load (requests per minute) at which its p95 reaches the SLO; None: unknown.
    rpm: float | None
    #: How it is known: ``measured``, ``lower_bound`` (never breached up to it),
    #: ``upper_bound`` (breached from it), ``overall`` or ``unknown``.
    evidence: str
    #: Where it comes from, in words (for reasons): e.g. "learned for Mon 09:00 from 12 h".
    note: str
    #: Hard cap: the RPM limit, the TPM limit at the tokens per request seen, or the knee.
    limit_rpm: float | None
    #: Seen over the SLO or the error budget recently: the load it can take now at most, and why.
    breach_rpm: float | None = None
    breach: tuple[ReasonCode, str] | None = None
    #: The share of the capacity to plan on at most, where learned from realised breaches to
    #: be below ``capacity_headroom`` (:mod:`controller.headroom`), and why; None: the configured one.
    headroom: float | None = None
    headroom_note: str = ""


@dataclass(frozen=True, kw_only=True)
class Ahead:
    """One step of the hours ahead: when it starts, the demand to serve (requests per minute
    that reach the providers: the forecast's upper band, or what is observed) and, per
    provider, its capacity and what a request costs then (price windows applied)."""

    at: datetime
    demand_rpm: float
    capacity: Mapping[str, SloCapacity]
    price_per_request: Mapping[str, float | None]
    #: The price window's factor per provider at ``at`` (1 outside every window).
    price_factor: Mapping[str, float]


@dataclass(frozen=True, kw_only=True)
class Pool:
    """A self-hosted pool behind one provider: its capacity is ready units × ``rpm_per_unit``,
    a unit takes ``lead`` to warm up, and costs ``unit_price_per_hour`` warm or busy."""

    action: str  # the prewarm action that sizes it
    provider: str
    rpm_per_unit: float
    unit_price_per_hour: float | None
    min_units: int
    max_units: int
    lead: timedelta
    release_after: timedelta
    #: Units warm now; more cannot be ready before ``now + lead``.
    ready_units: int
    #: Units the load observed now needs (never planned below it).
    needed_now: int


@dataclass(frozen=True, kw_only=True)
class Outlook:
    """What the planner plans over: the steps ahead (the first holds now), whether the demand
    is a trusted forecast (else the observed load, planned with a wider margin), and the
    self-hosted pool, if a prewarm action sizes one."""

    steps: tuple[Ahead, ...]
    trusted: bool
    pool: Pool | None


@dataclass(frozen=True, kw_only=True)
class PlannedInterval:
    """One step of the plan, as explained: the demand, each provider's planned load against
    its capacity, and what the plan is expected to cost per hour against the baseline weights
    (None where a provider with load has no price)."""

    at: datetime
    demand_rpm: float
    load_rpm: Mapping[str, float]
    capacity_rpm: Mapping[str, float | None]
    pool_units: int | None
    cost_per_hour: float | None
    baseline_cost_per_hour: float | None
    #: The share of each provider's capacity the step was planned to use at most (the plan's
    #: margin, or lower where learned from realised breaches).
    headroom: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ProviderConfig:
    baseline_weight: float
    min_weight: float
    max_weight: float
    capacity_rpm: float | None
    capacity_tpm: float | None
    #: What a request costs here; None: no price (planned by latency only).
    price: PriceConfig | None

    def limit_rpm(self, seen: ProviderView | None) -> float | None:
        """Its hard cap in requests per minute: the RPM limit (or measured knee), or the TPM
        limit at the tokens per request ``seen`` now, whichever is lower; None: none."""
        caps = [self.capacity_rpm] if self.capacity_rpm is not None else []
        if self.capacity_tpm is not None and seen is not None and seen.tokens_per_request:
            caps.append(self.capacity_tpm / seen.tokens_per_request)
        return min(caps) if caps else None


@dataclass(frozen=True, kw_only=True)
class PriceConfig:
    """A provider's prices (USD) and the local-time windows that scale them."""

    input_per_million_tokens: float | None
    output_per_million_tokens: float | None
    per_request: float | None
    #: (start, end, factor): [start, end) in minutes from Monday 00:00 local, not overlapping.
    windows: tuple[tuple[int, int, float], ...]

    def factor_at(self, at: datetime, tz: str) -> float:
        """The windows' factor at ``at`` (1 outside every window), in local wall-clock time."""
        local = at.astimezone(ZoneInfo(tz))
        minute = local.weekday() * 1440 + local.hour * 60 + local.minute
        return next((f for start, end, f in self.windows if start <= minute < end), 1.0)

    def per_request_at(self, input_tokens: float, output_tokens: float, at: datetime, tz: str) -> float:
        """What one request of that size costs at ``at``."""
        cost = (self.per_request or 0.0) + (self.input_per_million_tokens or 0.0) * input_tokens / 1e6 \
            + (self.output_per_million_tokens or 0.0) * output_tokens / 1e6
        return cost * self.factor_at(at, tz)


@dataclass(frozen=True, kw_only=True)
class RouteConfig:
    name: str
    tier: str  # "high" is never lowered to save money
    baseline_fraction: float
    quality_floor: float
    max_fraction: float
    strong_cost: float  # per request
    weak_cost: float
    hourly_budget: float | None
    strong_provider: str | None
    max_disparity: float
    #: USD per local day and per calendar month in the operator's timezone; None: none.
    daily_budget: float | None
    monthly_budget: float | None
    #: Never lowered below the baseline to save money (the ``high`` tier is, too).
    protected: bool
    #: Once today's budget is spent, stop escalating (else held at the quality floor).
    hard_stop: bool
    #: Give per-segment fractions when segments differ by more than ``max_disparity``.
    hold_parity: bool = True


@dataclass(frozen=True, kw_only=True)
class PrewarmConfig:
    name: str
    kind: str  # replicas, webhook or pool
    target: str
    rpm_per_unit: float
    #: USD per unit-hour, warm or busy; None: no price.
    unit_price_per_hour: float | None
    min_units: int
    max_units: int
    lead: timedelta
    release_after: timedelta
    provider: str  # whose load: a provider, or "*" for all


@dataclass(frozen=True, kw_only=True)
class PolicyConfig:
    providers: Mapping[str, ProviderConfig]
    latency_slo_seconds: float
    #: Fraction of a provider's capacity the policy plans to use at most.
    capacity_headroom: float
    #: Share of failing requests (429 and 5xx) a provider may have before share moves off it.
    error_budget: float
    prewarm: tuple[PrewarmConfig, ...]
    routes: tuple[RouteConfig, ...]
    #: ``planner`` (least cost within learned capacity) or ``heuristic`` (move share off
    #: providers predicted to breach).
    weights_policy: str
    #: The share of capacity planned at most where the demand forecast is not trusted.
    untrusted_headroom: float
    #: Where a provider never breached, how far above the busiest load it served the plan may
    #: send it (a fraction): capacity is learned by trying, within this bound.
    explore_above_seen: float
    #: A budget over all routes together, per local day and per month (None: none).
    shared_daily_budget: float | None = None
    shared_monthly_budget: float | None = None

    def baseline_thresholds(self) -> dict[str, float]:
        return {f"thresholds/{r.name}/escalation_fraction": r.baseline_fraction for r in self.routes}

    def baseline(self) -> dict[str, float]:
        return {name: p.baseline_weight for name, p in self.providers.items()}


@dataclass(frozen=True, kw_only=True)
class GuardrailConfig:
    """The guardrails' settings (``guardrails.*``), frozen for the pure guard."""

    mode: str  # "observe" or "act"
    kill_switch: bool
    dead_band: float
    max_weight_step: float
    #: The step limit while share moves off a provider breaching now (at least ``max_weight_step``).
    breach_step: float
    stabilization_seconds: float
    stale_after_seconds: float
    #: A route's thresholds are kept while its fraction moves less than this, its code unchanged.
    threshold_dead_band: float = 0.0


@dataclass(frozen=True)
class Override:
    """A manual pin of one knob until ``expires_at``."""

    id: str
    knob: str  # "weights/<provider>"
    value: float
    expires_at: datetime
    reason: str = ""
    created_at: datetime | None = None


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


@dataclass(frozen=True, kw_only=True)
class LoadCheck:
    """The total demand (requests net of retries, which the routing does not change) observed
    over a recent window against the lower band of the demand forecast that was in force for
    the same minutes: like with like, whatever the hour's shape and whatever the retries."""

    start: datetime
    end: datetime
    #: Minutes of the window with both data and a forecast band.
    minutes: int
    observed_rpm: float
    lower_rpm: float


@dataclass(frozen=True)
class PlannedHour:
    """One hour left of the day: its start, the requests still to come in it, the escalation
    planned and what that is predicted to spend."""

    at: datetime
    requests: float
    fraction: float
    spend: float
    score_threshold: float | None = None


@dataclass(frozen=True)
class DayPlan:
    route: str
    #: What today may spend in all (the daily budget, or the monthly's share for today).
    allowance: float
    spent: float
    #: Predicted spend over the rest of the day at the planned escalation.
    planned: float
    hours: tuple[PlannedHour, ...]
    code: ReasonCode
    message: str
    #: How much over the budget the day is predicted to end (a protected route kept at its
    #: baseline, or the quality floor held).
    shortfall: float = 0.0
    #: Which budget binds: "daily" or "monthly".
    binding: str = "daily"

    @property
    def fraction(self) -> float | None:
        """The escalation planned for now (the first hour left)."""
        return self.hours[0].fraction if self.hours else None


@dataclass(frozen=True)
class SegmentParity:
    """One route's escalation rate per segment (pushed events, the last hour) and how far
    apart they are: the gap (highest less lowest rate) and Jain's fairness index
    ``(sum x)^2 / (n * sum x^2)`` (1 when every segment is escalated alike, 1/n at worst)."""

    route: str
    rates: Mapping[str, float]
    gap: float
    jain: float
    limit: float
    #: Whether per-segment fractions were given to close the gap.
    held: bool

    @classmethod
    def of(cls, route: str, rates: Mapping[str, float], limit: float, hold: bool) -> SegmentParity:
        """``hold``: whether the route holds its segments together (held when the gap is over)."""
        values = list(rates.values())
        squares = sum(v * v for v in values)
        jain = sum(values) ** 2 / (len(values) * squares) if squares > 0 else 1.0
        gap = max(values) - min(values)
        return cls(route, dict(rates), gap, jain, limit, hold and gap > limit + 1e-12)  # as decide_thresholds


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
    #: The planner's plan over the hours ahead (empty under the heuristic weights policy).
    plan: tuple[PlannedInterval, ...] = ()
    #: Per route with a daily or monthly budget, its plan for the rest of the local day.
    day_plans: tuple[DayPlan, ...] = ()
    #: Per route with at least two segments seen: their escalation rates and parity.
    segment_parity: tuple[SegmentParity, ...] = ()

    def reasons_for(self, knob: str) -> tuple[Reason, ...]:
        return tuple(r for r in self.reasons if r.knob == knob)
