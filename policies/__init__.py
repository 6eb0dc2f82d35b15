"""Pure decision functions. Imports neither collectors nor controller, and does no I/O."""

from policies.decide import decide
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
    "View",
    "decide",
    "decide_weights",
]
