"""A provider's measured knee: the load (requests per minute) above which its p95 latency
leaves the SLO, read from its own hourly history.

Hours are sorted by load and cut into ``bins`` of equal count; the knee is the highest load
of the last bin whose median p95 is within the SLO, provided every busier bin is over it (a
knee, not a one-off slow hour). No knee when the provider never went over the SLO, or when
its slow hours are not its busy ones (slowness that load does not explain is the latency
policy's business, not a capacity).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MIN_HOURS = 48


def measured_knee(rate_rps: pd.Series, p95: pd.Series, slo_seconds: float, *, bins: int = 10) -> float | None:
    """The knee in requests per minute, or None. ``rate_rps`` and ``p95`` share an hourly index."""
    joined = pd.concat([rate_rps.rename("rps"), p95.rename("p95")], axis=1).dropna()
    joined = joined[joined["rps"] > 0]
    if len(joined) < MIN_HOURS:
        return None
    joined = joined.sort_values("rps")
    parts = np.array_split(np.arange(len(joined)), bins)
    medians = [float(joined["p95"].iloc[p].median()) for p in parts]
    over = [m > slo_seconds for m in medians]
    if not any(over) or all(over):
        return None
    first = over.index(True)
    if not all(over[first:]):
        return None  # slow hours among quiet ones too: not a load knee
    return float(joined["rps"].iloc[parts[first - 1]].max()) * 60.0
