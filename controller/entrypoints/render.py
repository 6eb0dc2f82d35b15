"""Terminal rendering: the hour-of-week heatmap."""

from __future__ import annotations

import math

import numpy as np
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


def top_deviations(prof: pd.DataFrame, label: str, *, threshold: float = 0.15, limit: int = 5) -> list[str]:
    """Runs of consecutive hours whose median differs from the weekly median by at least
    ``threshold``, biggest first, e.g. "Mon 09–11 latency_p95 +45% vs weekly median, 6 weeks"."""
    dev = prof["deviation"].to_numpy(dtype=float)
    weeks = prof["weeks"].to_numpy(dtype=float)
    runs: list[tuple[float, str]] = []
    s = 0
    while s < len(dev):
        d = dev[s]
        if math.isnan(d) or abs(d) < threshold:
            s += 1
            continue
        e = s
        while e + 1 < len(dev) and (e + 1) // 24 == s // 24 and not math.isnan(dev[e + 1]) \
                and abs(dev[e + 1]) >= threshold and (dev[e + 1] > 0) == (d > 0):
            e += 1
        run = dev[s:e + 1]
        peak = float(run[abs(run).argmax()])
        seen = int(weeks[s:e + 1].min())
        text = (f"{WEEKDAYS[s // 24]} {s % 24:02d}–{e % 24 + 1:02d} {label} {peak:+.0%} vs weekly median, "
                f"{seen} week{'s' if seen != 1 else ''}")
        runs.append((abs(peak), text))
        s = e + 1
    return [t for _, t in sorted(runs, key=lambda r: -r[0])[:limit]]


def heatmap_png(prof: pd.DataFrame, path: str, *, title: str, unit: str) -> None:
    """Write the 7x24 heatmap of a profile's medians as a PNG (matplotlib, imported here only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    grid = prof["median"].to_numpy(dtype=float).reshape(7, 24)
    fig, ax = plt.subplots(figsize=(11, 3.8), dpi=120)
    image = ax.imshow(grid, aspect="auto", cmap="magma", interpolation="nearest")
    ax.set_yticks(range(7), WEEKDAYS)
    ax.set_xticks(range(0, 24, 2), [f"{h:02d}" for h in range(0, 24, 2)])
    ax.set_xlabel("hour of day (local time)")
    ax.set_title(title, fontsize=10)
    for day in range(7):  # each day's peak hour, labelled
        row = grid[day]
        if np.isnan(row).all():
            continue
        h = int(np.nanargmax(row))
        ax.add_patch(Rectangle((h - 0.5, day - 0.5), 1, 1, fill=False, edgecolor="cyan", lw=1.5))
        ax.annotate(f"{h:02d}:00", (h, day), xytext=(9, -3), textcoords="offset points", color="cyan", fontsize=7)
    fig.colorbar(image, ax=ax, label=unit, pad=0.01)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
