"""The simulated router world used by the demo, the tests and the benchmarks."""

from sim.world import (
    AZURE_CONV_TOKENS,
    DEFAULT_PROVIDERS,
    LATENCY_BUCKETS,
    STATIC_WEIGHTS,
    BusyWindow,
    Flash,
    Incident,
    PoolSpec,
    ProviderSpec,
    SimulatedRouter,
    TokenSizes,
    WorldSpec,
)

__all__ = [
    "DEFAULT_PROVIDERS",
    "LATENCY_BUCKETS",
    "STATIC_WEIGHTS",
    "AZURE_CONV_TOKENS",
    "BusyWindow",
    "Flash",
    "Incident",
    "PoolSpec",
    "ProviderSpec",
    "SimulatedRouter",
    "TokenSizes",
    "WorldSpec",
]
