"""Terminal rendering: the hour-of-week heatmap."""

from __future__ import annotations

import math

import pandas as pd

from collectors.hour_of_week import WEEKDAYS

_SHADES = " ░▒▓█"


def heatmap(prof: pd.DataFrame, *, title: str, unit: str, fmt: str = "{:.2f}") -> str:
    """A 7x24 heatmap of a profile's medians: one row per weekday, two characters per hour."""
    med = prof["median"].to_numpy(dtype=float)
    finite = [v for v in med if not math.isnan(v)]
    lines = [title]
    if not finite:
        return title + "\n  (no data yet)"
    lo, hi = min(finite), max(finite)
    lines.append("      " + "".join(f"{h:<2d}" if h % 3 == 0 else "  " for h in range(24)) + "  max")
    for d, day in enumerate(WEEKDAYS):
        row = med[d * 24:(d + 1) * 24]
        cells = []
        for v in row:
            if math.isnan(v):
                cells.append("··")
                continue
            level = 0 if hi == lo else int(round((v - lo) / (hi - lo) * (len(_SHADES) - 1)))
            cells.append(_SHADES[level] * 2)
        finite_row = [v for v in row if not math.isnan(v)]
        peak = fmt.format(max(finite_row)) if finite_row else "-"
        lines.append(f"  {day} " + "".join(cells) + f"  {peak}")
    shades = "  ".join(
        f"{_SHADES[i] * 2 if i else '  '}={fmt.format(lo + (hi - lo) * i / (len(_SHADES) - 1))}"
        for i in range(len(_SHADES))
    )
    lines.append(f"  scale ({unit}): {shades}")
    return "\n".join(lines)
