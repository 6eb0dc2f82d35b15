"""Pure decision functions. Imports neither collectors nor controller, and does no I/O."""

from policies.decide import decide
from policies.thresholds import RouteConfig, RouteView, decide_thresholds, score_threshold
from policies.types import (
    Decision,
    LoadPoint,
    PolicyConfig,
    PrewarmAction,
    PrewarmConfig,
    ProviderConfig,
    ProviderView,
    Reason,
    View,
)
from policies.weights import decide_weights

__all__ = [
    "Decision",
    "LoadPoint",
    "PolicyConfig",
    "PrewarmAction",
    "PrewarmConfig",
    "ProviderConfig",
    "ProviderView",
    "Reason",
    "RouteConfig",
    "RouteView",
    "View",
    "decide",
    "decide_thresholds",
    "decide_weights",
    "score_threshold",
]
