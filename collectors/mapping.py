"""Map a router's metric names onto diurnal's signals.

A preset lists counter rules (a metric, optional label filters, the signal it feeds) and
histogram rules. Each matched sample is assigned to a :class:`SeriesKey`: the signal and the
provider, model and route it belongs to.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
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
#: ``score`` is a router's routing-score distribution (RouteLLM-style), for threshold calibration.
HISTOGRAM_SIGNALS = ("latency", "ttft", "score")


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
    #: other names of the same metric (exporters differ in unit suffixes)
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class HistogramRule:
    signal: str
    metric: str
    aliases: tuple[str, ...] = ()
    #: Order of preference among the rules of one signal: a rule with a higher rank is read
    #: only from a scrape that has none of the lower-ranked rules' metrics (a fallback).
    rank: int = 0


@dataclass(frozen=True)
class Preset:
    name: str
    counters: tuple[CounterRule, ...]
    histograms: tuple[HistogramRule, ...]
    provider_labels: tuple[str, ...]
    model_labels: tuple[str, ...]
    route_labels: tuple[str, ...]

    def metrics_for(self, signal: str) -> tuple[str, ...]:
        """The metric names that feed ``signal``, in order of preference (for messages)."""
        counters = [r.metric for r in self.counters if r.signal == signal]
        hists = [r.metric for r in sorted(self.histograms, key=lambda r: r.rank) if r.signal == signal]
        return tuple(dict.fromkeys(counters + hists))


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
        # LiteLLM retries a failed call on another deployment as a fallback.
        CounterRule("retries", "litellm_deployment_successful_fallbacks"),
        CounterRule("retries", "litellm_deployment_failed_fallbacks"),
    ),
    histograms=(
        # The provider's own time first; the proxy's whole request time (its overhead and
        # queueing included) when the proxy writes only that. LiteLLM's only per-deployment
        # latency metric is per output token (seconds/token): not comparable with a seconds
        # SLO, so it is no fallback.
        HistogramRule("latency", "litellm_llm_api_latency_metric"),
        HistogramRule("latency", "litellm_request_total_latency_metric", rank=1),
        HistogramRule("ttft", "litellm_llm_api_time_to_first_token_metric"),
    ),
    provider_labels=("api_provider",),
    model_labels=("litellm_model_name", "model"),
    route_labels=("requested_model",),
)

_DURATION = "gen_ai_server_request_duration_seconds"
_DURATION_ALIASES = ("gen_ai_server_request_duration",)

#: OpenTelemetry GenAI semantic conventions as Envoy AI Gateway exports them to Prometheus.
OTEL_GENAI = Preset(
    name="otel-genai",
    counters=(
        CounterRule("requests", f"{_DURATION}_count", aliases=tuple(f"{a}_count" for a in _DURATION_ALIASES)),
        CounterRule("errors_429", f"{_DURATION}_count", {"error_type": r"429|.*[Rr]ate_?[Ll]imit.*"},
                    aliases=tuple(f"{a}_count" for a in _DURATION_ALIASES)),
        CounterRule("errors_5xx", f"{_DURATION}_count", {"error_type": r"5\d\d"},
                    aliases=tuple(f"{a}_count" for a in _DURATION_ALIASES)),
        CounterRule("input_tokens", "gen_ai_client_token_usage_sum", {"gen_ai_token_type": "input"}),
        CounterRule("output_tokens", "gen_ai_client_token_usage_sum", {"gen_ai_token_type": "output"}),
    ),
    histograms=(
        HistogramRule("latency", _DURATION, aliases=_DURATION_ALIASES),
        HistogramRule("ttft", "gen_ai_server_time_to_first_token_seconds", aliases=("gen_ai_server_time_to_first_token",)),
    ),
    provider_labels=("gen_ai_provider_name", "gen_ai_system"),
    model_labels=("gen_ai_response_model", "gen_ai_request_model"),
    route_labels=("gen_ai_operation_name",),
)

PRESETS: dict[str, Preset] = {LITELLM.name: LITELLM, OTEL_GENAI.name: OTEL_GENAI}


@dataclass(frozen=True, slots=True)
class Matched:
    """A sample that feeds a signal. ``le`` is set for histogram buckets."""

    key: SeriesKey
    part: str  # "counter", "bucket", "sum" or "count"
    raw_id: tuple[str, str, tuple[tuple[str, str], ...]]  # (signal, sample name, labels): reset tracking
    value: float
    le: float | None = None


_MAX_PLANS = 200_000
#: (series key or None when dropped, part, raw id, le, drop reason, rank)
_Step = tuple[SeriesKey | None, str, tuple[str, str, tuple[tuple[str, str], ...]], float | None, str | None, int]


class Mapper:
    """Applies a preset to parsed samples, then the label policy: which dimensions are kept
    (``keep_labels``), which values are allowed (``allow``) and how many series may exist
    (``max_series``). What the policy drops is counted in :attr:`dropped` by reason."""

    def __init__(self, preset: Preset, model_providers: Mapping[str, str] | None = None, *,
                 keep_labels: tuple[str, ...] = ("model", "route"),
                 allow: Mapping[str, tuple[str, ...]] | None = None, max_series: int | None = None) -> None:
        self.preset = preset
        self._model_providers = dict(model_providers or {})
        self._keep_model = "model" in keep_labels
        self._keep_route = "route" in keep_labels
        self._allow = {k: frozenset(v) for k, v in (allow or {}).items() if v}
        self.max_series = max_series
        self._series: set[SeriesKey] = set()
        self.dropped: dict[str, int] = {"not_allowed": 0, "series_cap": 0}
        #: (signal, provider) pairs the last :meth:`map` call fed, and the metric each signal
        #: came from when its preferred one was absent (``{signal: metric}``).
        self.last_present: frozenset[tuple[str, str]] = frozenset()
        self.last_fallbacks: dict[str, str] = {}
        self._ranked = any(h.rank for h in preset.histograms)
        # Scrapes and a backfill thread map concurrently: the cap check-and-add and the drop
        # counts must not race.
        self._lock = threading.Lock()
        self._plans: dict[tuple[str, tuple[tuple[str, str], ...]], list[_Step]] = {}
        self._counters: dict[str, list[tuple[CounterRule, list[tuple[str, re.Pattern[str]]]]]] = {}
        for rule in preset.counters:
            compiled = [(k, re.compile(v)) for k, v in rule.match.items()]
            for base in (rule.metric, *rule.aliases):
                for name in {base, base + "_total"}:
                    self._counters.setdefault(name, []).append((rule, compiled))
        self._hist: dict[str, tuple[HistogramRule, str]] = {}
        for h in preset.histograms:
            for base in (h.metric, *h.aliases):
                for suffix in ("bucket", "sum", "count"):
                    self._hist[f"{base}_{suffix}"] = (h, suffix)

    def remember(self, keys: Iterable[SeriesKey]) -> None:
        """Count series that already exist (in the store) against ``max_series``."""
        with self._lock:
            self._series.update(keys)

    @property
    def series_count(self) -> int:
        return len(self._series)

    def admit(self, key: SeriesKey) -> SeriesKey | None:
        """The key after the label policy, or None (counted) when it is dropped."""
        with self._lock:
            kept, reason = self._admit(key)
            if reason is not None:
                self.dropped[reason] += 1
        return kept

    def _admit(self, key: SeriesKey) -> tuple[SeriesKey | None, str | None]:
        if not self._keep_model or not self._keep_route:
            key = SeriesKey(key.signal, key.provider, key.model if self._keep_model else "",
                            key.route if self._keep_route else "")
        if key in self._series:
            return key, None
        for dim, allowed in self._allow.items():
            if getattr(key, dim) not in allowed:
                return None, "not_allowed"
        if self.max_series is not None and len(self._series) >= self.max_series:
            return None, "series_cap"
        self._series.add(key)
        return key, None

    def _first(self, sample: Sample, keys: tuple[str, ...]) -> str:
        for k in keys:
            v = sample.label(k)
            if v:
                return v
        return ""

    def _key(self, signal: str, sample: Sample) -> tuple[SeriesKey | None, str | None]:
        model = self._first(sample, self.preset.model_labels)
        provider = self._first(sample, self.preset.provider_labels)
        if not provider:
            provider = self._model_providers.get(model, "")
        if not provider and "/" in model:
            provider = model.split("/", 1)[0]
        key = SeriesKey(signal, provider or "unknown", model, self._first(sample, self.preset.route_labels))
        return self._admit(key)

    def _plan(self, s: Sample) -> list[_Step]:
        """What one raw series feeds: (key or None, part, raw id, le, drop reason) per rule."""
        plan: list[_Step] = []
        for rule, compiled in self._counters.get(s.name, ()):
            if all(p.fullmatch(s.label(k) or "") for k, p in compiled):
                key, reason = self._key(rule.signal, s)
                plan.append((key, "counter", (rule.signal, s.name, s.labels), None, reason, 0))
        hist = self._hist.get(s.name)
        if hist is not None:
            hist_rule, part = hist
            labels = s.labels
            le: float | None = None
            raw_le = s.label("le") if part == "bucket" else None
            if part != "bucket" or raw_le is not None:
                if raw_le is not None:
                    le = float(raw_le)
                    labels = tuple(kv for kv in labels if kv[0] != "le")
                key, reason = self._key(hist_rule.signal, Sample(s.name, labels, s.value))
                plan.append((key, part, (hist_rule.signal, s.name, s.labels), le, reason, hist_rule.rank))
        return plan

    def map(self, samples: list[Sample]) -> list[Matched]:
        # A router repeats the same series every scrape and the label policy's verdict on a
        # series never changes (the allow-list is fixed, the cap only admits more), so each
        # series' plan is worked out once.
        out: list[Matched] = []
        ranks: list[int] = []
        present: dict[tuple[str, str], int] = {}  # (signal, provider) -> its best rank
        plans = self._plans
        with self._lock:
            for s in samples:
                ident = (s.name, s.labels)
                plan = plans.get(ident)
                if plan is None:
                    plan = self._plan(s)
                    if len(plans) < _MAX_PLANS:
                        plans[ident] = plan
                for key, part, raw_id, le, reason, rank in plan:
                    if key is None:
                        self.dropped[reason or "not_allowed"] += 1
                    else:
                        out.append(Matched(key, part, raw_id, s.value, le))
                        if part != "bucket":  # a histogram's _count says as much as its buckets
                            pair = (key.signal, key.provider)
                            if rank < present.get(pair, rank + 1):
                                present[pair] = rank
                        if self._ranked:
                            ranks.append(rank)
            best: dict[str, int] = {}
            if self._ranked:
                for (signal, _), r in present.items():
                    if r < best.get(signal, r + 1):
                        best[signal] = r
                out = self._preferred(out, ranks, best)
            # what the scrape carries: per signal, only what its metric in use carries
            self.last_present = frozenset(pair for pair, r in present.items() if r == best.get(pair[0], 0))
        return out

    def _preferred(self, out: list[Matched], ranks: list[int], best: dict[str, int]) -> list[Matched]:
        """Only each signal's most preferred metric present in this scrape (``best``: its rank)."""
        self.last_fallbacks = {
            sig: next(h.metric for h in self.preset.histograms if h.signal == sig and h.rank == r)
            for sig, r in best.items() if r > 0}
        if not any(r > best.get(m.key.signal, r) for m, r in zip(out, ranks, strict=True)):
            return out
        return [m for m, r in zip(out, ranks, strict=True) if r <= best.get(m.key.signal, r)]


def preset_from_config(name: str, counters: Mapping[str, tuple[str, Mapping[str, str]]],
                       histograms: Mapping[str, str], provider_labels: tuple[str, ...],
                       model_labels: tuple[str, ...], route_labels: tuple[str, ...]) -> Preset:
    """A preset whose every metric and label is named in the settings (``generic``)."""
    return Preset(
        name=name,
        counters=tuple(CounterRule(sig, metric, dict(match)) for sig, (metric, match) in counters.items()),
        histograms=tuple(HistogramRule(sig, metric) for sig, metric in histograms.items()),
        provider_labels=provider_labels, model_labels=model_labels, route_labels=route_labels,
    )
