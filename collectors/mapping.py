"""Map a router's metric names onto diurnal's signals.

A preset lists counter rules (a metric, optional label filters, the signal it feeds) and
histogram rules. Each matched sample is assigned to a :class:`SeriesKey`: the signal and the
provider, model and route it belongs to.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from collectors.exposition import Sample

#: Counter signals: cumulative in the exposition, per-interval deltas in the store.
COUNTER_SIGNALS = (
    "requests",
    "retries",
    "errors_429",
    "errors_5xx",
    "cache_hits",
    "cache_misses",
    "spend",
    "input_tokens",
    "output_tokens",
)
#: Histogram signals: bucket deltas in the store, quantiles derived from them.
HISTOGRAM_SIGNALS = ("latency", "ttft")


@dataclass(frozen=True, slots=True, order=True)
class SeriesKey:
    signal: str
    provider: str
    model: str = ""
    route: str = ""


@dataclass(frozen=True)
class CounterRule:
    signal: str
    metric: str
    #: label -> full-match regular expression the label value must satisfy
    match: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HistogramRule:
    signal: str
    metric: str


@dataclass(frozen=True)
class Preset:
    name: str
    counters: tuple[CounterRule, ...]
    histograms: tuple[HistogramRule, ...]
    provider_labels: tuple[str, ...]
    model_labels: tuple[str, ...]
    route_labels: tuple[str, ...]


LITELLM = Preset(
    name="litellm",
    counters=(
        CounterRule("requests", "litellm_deployment_total_requests"),
        CounterRule("errors_429", "litellm_deployment_failure_responses", {"exception_status": "429"}),
        CounterRule("errors_5xx", "litellm_deployment_failure_responses", {"exception_status": r"5\d\d"}),
        CounterRule("cache_hits", "litellm_cache_hits_metric"),
        CounterRule("cache_misses", "litellm_cache_misses_metric"),
        CounterRule("spend", "litellm_spend_metric"),
        CounterRule("input_tokens", "litellm_input_tokens_metric"),
        CounterRule("output_tokens", "litellm_output_tokens_metric"),
    ),
    histograms=(HistogramRule("latency", "litellm_llm_api_latency_metric"),),
    provider_labels=("api_provider",),
    model_labels=("litellm_model_name", "model"),
    route_labels=("requested_model",),
)

PRESETS: dict[str, Preset] = {LITELLM.name: LITELLM}


@dataclass(frozen=True, slots=True)
class Matched:
    """A sample that feeds a signal. ``le`` is set for histogram buckets."""

    key: SeriesKey
    part: str  # "counter", "bucket", "sum" or "count"
    raw_id: tuple[str, tuple[tuple[str, str], ...]]  # identity for reset tracking
    value: float
    le: float | None = None


class Mapper:
    """Applies a preset to parsed samples."""

    def __init__(self, preset: Preset, model_providers: Mapping[str, str] | None = None) -> None:
        self.preset = preset
        self._model_providers = dict(model_providers or {})
        self._counters: dict[str, list[tuple[CounterRule, list[tuple[str, re.Pattern[str]]]]]] = {}
        for rule in preset.counters:
            compiled = [(k, re.compile(v)) for k, v in rule.match.items()]
            for name in (rule.metric, rule.metric + "_total"):
                self._counters.setdefault(name, []).append((rule, compiled))
        self._hist: dict[str, tuple[HistogramRule, str]] = {}
        for h in preset.histograms:
            for suffix in ("bucket", "sum", "count"):
                self._hist[f"{h.metric}_{suffix}"] = (h, suffix)

    def _first(self, sample: Sample, keys: tuple[str, ...]) -> str:
        for k in keys:
            v = sample.label(k)
            if v:
                return v
        return ""

    def _key(self, signal: str, sample: Sample) -> SeriesKey:
        model = self._first(sample, self.preset.model_labels)
        provider = self._first(sample, self.preset.provider_labels)
        if not provider:
            provider = self._model_providers.get(model, "")
        if not provider and "/" in model:
            provider = model.split("/", 1)[0]
        return SeriesKey(signal, provider or "unknown", model, self._first(sample, self.preset.route_labels))

    def map(self, samples: list[Sample]) -> list[Matched]:
        out: list[Matched] = []
        for s in samples:
            rules = self._counters.get(s.name)
            if rules:
                for rule, compiled in rules:
                    if all(p.fullmatch(s.label(k) or "") for k, p in compiled):
                        out.append(Matched(self._key(rule.signal, s), "counter", (s.name, s.labels), s.value))
                continue
            hist = self._hist.get(s.name)
            if hist is None:
                continue
            hist_rule, part = hist
            labels = s.labels
            le: float | None = None
            if part == "bucket":
                raw_le = s.label("le")
                if raw_le is None:
                    continue
                le = float(raw_le)
                labels = tuple(kv for kv in labels if kv[0] != "le")
            stripped = Sample(s.name, labels, s.value)
            out.append(Matched(self._key(hist_rule.signal, stripped), part, (s.name, s.labels), s.value, le))
        return out
