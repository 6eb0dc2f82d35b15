"""The simulated router world used by the demo, the tests and the benchmarks."""

from sim.world import (
    DEFAULT_PROVIDERS,
    LATENCY_BUCKETS,
    STATIC_WEIGHTS,
    BusyWindow,
    ProviderSpec,
    SimulatedRouter,
    WorldSpec,
)

__all__ = [
    "DEFAULT_PROVIDERS",
    "LATENCY_BUCKETS",
    "STATIC_WEIGHTS",
    "BusyWindow",
    "ProviderSpec",
    "SimulatedRouter",
    "WorldSpec",
]
