"""Pure decision functions. Imports neither collectors nor controller, does no I/O and reads
no clock: observations, forecasts, the previous decision, a frozen config and ``now`` go in,
a frozen :class:`Decision` with a reason code on every knob comes out, and the guardrails
turn it into what is published."""

from policies.decide import decide
from policies.guardrails import guard
from policies.thresholds import decide_thresholds, score_threshold
from policies.types import (
    FALLBACK_CODES,
    Ahead,
    DayPlan,
    Decision,
    GuardrailConfig,
    LoadCheck,
    LoadPoint,
    Outlook,
    Override,
    PlannedInterval,
    PolicyConfig,
    Pool,
    PrewarmAction,
    PrewarmConfig,
    PriceConfig,
    ProviderConfig,
    ProviderView,
    Reason,
    ReasonCode,
    RouteConfig,
    RouteHour,
    RouteView,
    SegmentParity,
    SloCapacity,
    View,
)
from policies.weights import decide_weights

__all__ = [
    "FALLBACK_CODES",
    "Ahead",
    "DayPlan",
    "SegmentParity",
    "Decision",
    "GuardrailConfig",
    "LoadCheck",
    "LoadPoint",
    "Outlook",
    "Override",
    "PlannedInterval",
    "PolicyConfig",
    "Pool",
    "PrewarmAction",
    "PrewarmConfig",
    "PriceConfig",
    "ProviderConfig",
    "ProviderView",
    "Reason",
    "ReasonCode",
    "RouteConfig",
    "RouteHour",
    "RouteView",
    "SloCapacity",
    "View",
    "decide",
    "decide_thresholds",
    "decide_weights",
    "guard",
    "score_threshold",
]
