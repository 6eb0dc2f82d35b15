"""Quantiles from Prometheus histogram buckets, interpolated as ``histogram_quantile`` does."""

from __future__ import annotations

import math
from collections.abc import Mapping


def bucket_quantile(q: float, buckets: Mapping[float, float]) -> float:
    """The ``q``-quantile of observations described by cumulative bucket counts.

    ``buckets`` maps each upper bound ``le`` (``+Inf`` included) to the cumulative count of
    observations at or below it. Like PromQL: linear interpolation inside the bucket, the
    lower bound of the first bucket is 0 (if its ``le`` is positive), a rank in the ``+Inf``
    bucket returns the highest finite bound, and no observations give NaN.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], got {q}")
    bounds = sorted(buckets)
    if not bounds:
        return math.nan
    # Cumulative counts must not decrease; spreading and merging can leave float dust.
    cum: list[float] = []
    running = 0.0
    for le in bounds:
        running = max(running, buckets[le])
        cum.append(running)
    total = cum[-1]
    if total <= 0:
        return math.nan
    rank = q * total
    for i, le in enumerate(bounds):
        if cum[i] >= rank:
            if math.isinf(le):
                finite = [b for b in bounds if not math.isinf(b)]
                return finite[-1] if finite else math.nan
            lower = bounds[i - 1] if i > 0 else (0.0 if le > 0 else le)
            below = cum[i - 1] if i > 0 else 0.0
            in_bucket = cum[i] - below
            if in_bucket <= 0:
                return le
            return lower + (le - lower) * (rank - below) / in_bucket
    return bounds[-1]
