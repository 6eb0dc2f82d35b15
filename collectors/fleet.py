"""Fleet input: the router's series summed over all its replicas, read from a
Prometheus-compatible API (Prometheus, Thanos, Mimir, VictoriaMetrics) rather than scraped
from one replica.

One PromQL expression per window reads everything the preset maps, in one round trip: for
each metric, ``sum by (<the preset's provider, model and route labels, the labels its rules
match on>) (increase(<metric>{<selector>}[<window>]))``, histogram buckets by ``le`` too,
each labelled with its metric (``label_replace`` into ``diurnal_metric``) and joined with ``or``.
The label, not ``__name__``, tells the parts apart: PromQL's ``or`` matches label sets without
the metric name, so two metrics summed to the same labels (a histogram's ``_sum`` and
``_count``, or every counter of a router whose series carry only ``model``) would keep only
the first of them.
``increase`` gives Prometheus' own semantics: a replica's counter reset is an increase from
zero, a replica that appears or goes away is counted while it has samples, stale series drop
out. The increases become minute cells directly (:func:`fleet_cells`), so the store, the
profiles and the policies see the same data as from a scrape. Backfill and live input
evaluate the same expression (``query_range`` at the window's step, ``query`` at each
window's end), so history has no seam.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from collectors.exposition import Sample
from collectors.intervals import MinuteCell
from collectors.mapping import Mapper, SeriesKey

__all__ = ["FleetQuery", "OpenCells", "fleet_cells", "series_identity", "vector_samples"]

OpenCells = dict[int, dict[SeriesKey, MinuteCell]]


def _alternatives(bases: Iterable[str], suffixes: tuple[str, ...]) -> str:
    return "|".join(sorted({b + s for b in bases for s in suffixes}))


@dataclass(frozen=True)
class FleetQuery:
    """The one expression a window's read evaluates, built from the mapper's preset."""

    expr: str
    window_seconds: int
    #: The labels kept by the sums (what the mapper reads), and how many metrics are read.
    by: tuple[str, ...]
    metrics: int

    @classmethod
    def build(cls, mapper: Mapper, selector: str = "", window_seconds: int = 60) -> FleetQuery:
        preset = mapper.preset
        by = tuple(dict.fromkeys([*preset.provider_labels, *preset.model_labels, *preset.route_labels,
                                  *(k for rule in preset.counters for k in rule.match)]))
        sel = f", {selector}" if selector else ""
        window = f"{window_seconds}s"
        # metric name it is renamed to -> (the names it is read from, keep le)
        reads: dict[str, tuple[str, bool]] = {}
        for rule in preset.counters:
            reads.setdefault(rule.metric, (_alternatives((rule.metric, *rule.aliases), ("", "_total")), False))
        for h in preset.histograms:
            for part in ("bucket", "sum", "count"):
                reads.setdefault(f"{h.metric}_{part}", (_alternatives((h.metric, *h.aliases), (f"_{part}",)),
                                                        part == "bucket"))
        parts = []
        for name, (names, with_le) in reads.items():
            labels = ", ".join((*by, "le") if with_le else by)
            parts.append(f'label_replace(sum by ({labels}) (increase({{__name__=~"{names}"{sel}}}[{window}])), '
                         f'"{METRIC_LABEL}", "{name}", "", "")')
        return cls(" or ".join(parts), window_seconds, by, len(reads))


#: The label each part of the fleet expression carries its metric's name in.
METRIC_LABEL = "diurnal_metric"


def series_identity(metric: dict[str, object]) -> tuple[str, tuple[tuple[str, str], ...]]:
    """A Prometheus API result series' name (the fleet expression's ``diurnal_metric``, else
    ``__name__``) and sorted labels, as a :class:`Sample` has them."""
    labels = dict(metric)
    name = str(labels.pop(METRIC_LABEL, None) or labels.pop("__name__", ""))
    labels.pop("__name__", None)
    return name, tuple(sorted((str(k), str(v)) for k, v in labels.items()))


def vector_samples(result: Iterable[dict[str, object]]) -> list[Sample]:
    """An instant query's result vector as samples (the value at the evaluation time)."""
    out = []
    for series in result:
        name, labels = series_identity(series["metric"])  # type: ignore[arg-type]
        out.append(Sample(name, labels, float(series["value"][1])))  # type: ignore[index]
    return out


def fleet_cells(mapper: Mapper, samples: list[Sample], window_end: int, window_seconds: int) -> OpenCells:
    """The window's increases as cells of the minute it lies in. Non-finite or negative
    increases (none from ``increase``; a broken API) are left out; histogram buckets are
    made non-decreasing in ``le`` (each bucket's increase is extrapolated on its own)."""
    minute = (window_end - window_seconds) // 60 * 60
    cells: dict[SeriesKey, MinuteCell] = {}
    for m in mapper.map(samples):
        v = m.value
        if not math.isfinite(v) or v < 0:
            continue
        cell = cells.get(m.key)
        if cell is None:
            cell = cells[m.key] = MinuteCell()
        if m.part == "counter":
            cell.value += v
        elif m.part == "bucket" and m.le is not None:
            cell.buckets[m.le] = cell.buckets.get(m.le, 0.0) + v
        elif m.part == "sum":
            cell.sum += v
        elif m.part == "count":
            cell.count += v
    for cell in cells.values():
        running = 0.0
        for le in sorted(cell.buckets):
            running = max(running, cell.buckets[le])
            cell.buckets[le] = running
    return {minute: cells} if cells else {}
