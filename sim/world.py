"""A simulated LLM router with daily and weekly seasonality, rendering LiteLLM's metrics.

The world runs minute by minute:

- demand (requests per minute) follows an hour-of-day curve and a weekday factor in the
  world's timezone, with a Monday 08:00-11:00 surge, day-to-day variation and Poisson noise;
- the router splits requests over providers by the weights it was given;
- a provider past its rate limit answers 429 for the excess;
- each provider's latency is lognormal, its median grows with utilisation, and a
  provider-side busy window (shared cloud capacity) multiplies it: by default ``openai``
  degrades on Monday 08:00-11:00, exactly when demand surges;
- the cache-hit ratio dips when load is high; tokens and spend follow requests.

Demand is drawn from a per-day random stream keyed by the seed, so two worlds with the same
seed and different weights see the same traffic. Ground truth per minute (blended p95,
errors, SLO violation) is kept for scoring.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri

# LiteLLM's default latency buckets (litellm/types/integrations/prometheus.py).
LATENCY_BUCKETS = (
    0.005, 0.00625, 0.0125, 0.025, 0.05, 0.1, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0,
    5.5, 6.0, 6.5, 7.0, 7.5, 8.0, 8.5, 9.0, 9.5, 10.0, 15.0, 20.0, 25.0, 30.0, 60.0, 120.0,
    180.0, 240.0, 300.0,
)
_LOG_BOUNDS = np.log(np.asarray(LATENCY_BUCKETS))

# Relative demand by local hour of day (index = hour), interpolated within the hour.
_DAILY = np.array([
    0.14, 0.10, 0.08, 0.08, 0.10, 0.16, 0.30, 0.55, 0.85, 1.00, 1.00, 0.98,
    0.92, 0.95, 0.97, 0.94, 0.86, 0.70, 0.52, 0.42, 0.36, 0.30, 0.24, 0.18,
])
_WEEKDAY = np.array([1.0, 1.0, 0.98, 0.97, 0.9, 0.45, 0.40])  # Mon..Sun


@dataclass(frozen=True)
class BusyWindow:
    """Provider-side slowdown: latency median x ``factor`` on ``weekday`` (0 = Monday)
    between local hours ``start`` and ``end``."""

    weekday: int
    start: float
    end: float
    factor: float


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    model: str
    median_seconds: float
    sigma: float
    rpm_limit: float
    usd_per_1k_input: float
    usd_per_1k_output: float
    busy: tuple[BusyWindow, ...] = ()


DEFAULT_PROVIDERS = (
    ProviderSpec("openai", "gpt-4o", 1.5, 0.45, 1500, 0.0025, 0.010,
                 busy=(BusyWindow(0, 8.0, 11.0, 2.6),)),
    ProviderSpec("anthropic", "claude-sonnet-4", 1.4, 0.40, 1200, 0.0030, 0.015),
    ProviderSpec("azure", "azure-gpt-4o", 1.6, 0.45, 1000, 0.0025, 0.010),
)

@dataclass(frozen=True)
class WorldSpec:
    tz: str = "America/New_York"
    peak_rpm: float = 900.0
    surge_factor: float = 1.5
    surge_start: float = 8.0
    surge_end: float = 11.0
    day_noise: float = 0.05
    slo_seconds: float = 5.0
    error_budget: float = 0.02
    cache_hit_base: float = 0.38
    route: str = "chat"
    providers: tuple[ProviderSpec, ...] = field(default_factory=lambda: DEFAULT_PROVIDERS)

    def model_providers(self) -> dict[str, str]:
        return {p.model: p.name for p in self.providers}


STATIC_WEIGHTS = {"openai": 0.5, "anthropic": 0.3, "azure": 0.2}


@dataclass
class _Cumulative:
    requests: float = 0.0
    success: float = 0.0
    failed_429: float = 0.0
    cache_hits: float = 0.0
    cache_misses: float = 0.0
    spend: float = 0.0
    input_tokens: float = 0.0
    output_tokens: float = 0.0
    latency_sum: float = 0.0
    buckets: np.ndarray = field(default_factory=lambda: np.zeros(len(LATENCY_BUCKETS)))


class SimulatedRouter:
    """The simulated router. Advance it with :meth:`advance`, read it with :meth:`exposition`."""

    def __init__(self, spec: WorldSpec | None = None, *, seed: int = 0, start: datetime,
                 weights: Mapping[str, float] | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self.spec = spec or WorldSpec()
        self.seed = seed
        self.clock = clock
        self._minute = int(start.timestamp()) // 60 * 60  # next minute to simulate
        self._names = [p.name for p in self.spec.providers]
        self._weights = np.full(len(self._names), 1.0 / len(self._names))
        if weights is not None:
            self.set_weights(weights)
        self._cum = {p.name: _Cumulative() for p in self.spec.providers}
        self._days: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._truth: list[pd.DataFrame] = []

    # ---- control ------------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        return datetime.fromtimestamp(self._minute, UTC)

    @property
    def weights(self) -> dict[str, float]:
        return dict(zip(self._names, self._weights.tolist(), strict=True))

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Route by ``weights`` from now on. Unknown names are ignored; missing ones get 0."""
        w = np.array([max(0.0, float(weights.get(n, 0.0))) for n in self._names])
        if w.sum() <= 0:
            raise ValueError(f"weights must give some provider a positive share, got {dict(weights)}")
        self._weights = w / w.sum()

    def restart(self) -> None:
        """Simulate a router restart: every counter starts again from zero."""
        self._cum = {p.name: _Cumulative() for p in self.spec.providers}

    # ---- demand -------------------------------------------------------------------------

    def demand_rpm(self, ts: np.ndarray) -> np.ndarray:
        """Expected requests per minute at Unix seconds ``ts`` (before day noise)."""
        local = pd.to_datetime(ts, unit="s", utc=True).tz_convert(self.spec.tz)
        hour = np.asarray(local.hour + local.minute / 60.0, dtype=float)
        dow = np.asarray(local.day_of_week, dtype=int)
        nxt = np.roll(_DAILY, -1)
        h0 = np.floor(hour).astype(int)
        daily = _DAILY[h0] + (nxt[h0] - _DAILY[h0]) * (hour - h0)
        s = self.spec
        surge = np.where((dow == 0) & (hour >= s.surge_start) & (hour < s.surge_end), s.surge_factor, 1.0)
        return np.asarray(s.peak_rpm * daily * _WEEKDAY[dow] * surge, dtype=float)

    def _day(self, day: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One UTC day: requests per minute, a uniform stream for the cache draws, and the
        busy-window latency multipliers per (minute, provider)."""
        got = self._days.get(day)
        if got is None:
            rng = np.random.default_rng([self.seed, day])
            ts = day * 86400 + np.arange(1440) * 60
            lam = self.demand_rpm(ts) * float(np.exp(rng.normal(0.0, self.spec.day_noise)))
            got = (rng.poisson(lam).astype(np.int64), rng.random(1440), self._busy(ts))
            self._days[day] = got
            if len(self._days) > 4:
                self._days.pop(min(self._days))
        return got

    def _busy(self, ts: np.ndarray) -> np.ndarray:
        """Latency multiplier per (minute, provider) from busy windows."""
        local = pd.to_datetime(ts, unit="s", utc=True).tz_convert(self.spec.tz)
        hour = np.asarray(local.hour + local.minute / 60.0, dtype=float)
        dow = np.asarray(local.day_of_week, dtype=int)
        out = np.ones((len(ts), len(self._names)))
        for j, p in enumerate(self.spec.providers):
            for b in p.busy:
                inside = (dow == b.weekday) & (hour >= b.start) & (hour < b.end)
                out[inside, j] *= b.factor
        return out

    # ---- simulation ---------------------------------------------------------------------

    def advance(self, to: datetime) -> None:
        """Simulate every whole minute before ``to`` with the current weights."""
        end = int(to.timestamp()) // 60 * 60
        while self._minute < end:
            day = self._minute // 86400
            chunk_end = min(end, (day + 1) * 86400)
            self._simulate(self._minute, chunk_end)
            self._minute = chunk_end

    def _simulate(self, start: int, end: int) -> None:
        spec = self.spec
        day = start // 86400
        demand, uniform, busy = self._day(day)
        lo, hi = (start - day * 86400) // 60, (end - day * 86400) // 60
        n = demand[lo:hi]
        u = uniform[lo:hi]
        ts = np.arange(start, end, 60)
        rng = np.random.default_rng([self.seed, 1, start])
        split = rng.multinomial(n, self._weights)  # (m, k)
        limits = np.array([p.rpm_limit for p in spec.providers])
        served = np.minimum(split, limits.astype(np.int64))
        failed = split - served
        util = split / limits
        medians = np.array([p.median_seconds for p in spec.providers])
        sigmas = np.array([p.sigma for p in spec.providers])
        med = medians * busy[lo:hi] * (1.0 + 0.5 * np.minimum(util, 1.5) ** 4)
        mu = np.log(med)
        # Bucket counts: multinomial over the lognormal's bucket probabilities.
        cdf = ndtr((_LOG_BOUNDS[None, None, :] - mu[:, :, None]) / sigmas[None, :, None])  # (m, k, b)
        probs = np.diff(np.concatenate([np.zeros(cdf.shape[:2] + (1,)), cdf, np.ones(cdf.shape[:2] + (1,))], axis=2), axis=2)
        probs = np.clip(probs, 0.0, None)
        probs /= probs.sum(axis=2, keepdims=True)
        counts = rng.multinomial(served, probs)  # (m, k, b+1); the last is above the top bound
        mean_latency = np.exp(mu + sigmas**2 / 2)
        # Cache: hit ratio dips as load rises.
        load = n / spec.peak_rpm
        hit_ratio = np.clip(spec.cache_hit_base * (1.0 - 0.35 * np.clip(load, 0, 1.6)), 0.02, 0.95)
        hits = np.floor(n * hit_ratio + u).astype(np.int64)
        in_tok = split * 1100.0
        out_tok = served * 240.0
        for j, p in enumerate(spec.providers):
            c = self._cum[p.name]
            c.requests += float(split[:, j].sum())
            c.success += float(served[:, j].sum())
            c.failed_429 += float(failed[:, j].sum())
            c.latency_sum += float((served[:, j] * mean_latency[:, j]).sum())
            c.buckets += np.cumsum(counts[:, j, :-1].sum(axis=0))
            share = split[:, j] / np.maximum(n, 1)
            c.cache_hits += float((hits * share).sum())
            c.cache_misses += float(((n - hits) * share).sum())
            c.input_tokens += float(in_tok[:, j].sum())
            c.output_tokens += float(out_tok[:, j].sum())
            c.spend += float((in_tok[:, j] * p.usd_per_1k_input + out_tok[:, j] * p.usd_per_1k_output).sum() / 1000)
        p95 = _mixture_quantile(0.95, served, mu, sigmas)
        err = failed.sum(axis=1) / np.maximum(n, 1)
        self._truth.append(pd.DataFrame({
            "ts": ts, "requests": n, "failed": failed.sum(axis=1), "p95": p95,
            "violation": (p95 > spec.slo_seconds) | (err > spec.error_budget),
            **{f"weight_{name}": np.full(len(ts), self._weights[j]) for j, name in enumerate(self._names)},
        }))

    def truth(self) -> pd.DataFrame:
        """Ground truth per simulated minute: requests, failed, blended p95, violation, weights."""
        if not self._truth:
            return pd.DataFrame(columns=["ts", "requests", "failed", "p95", "violation"])
        frame = pd.concat(self._truth, ignore_index=True)
        self._truth = [frame]
        return frame.set_index(pd.to_datetime(frame["ts"], unit="s", utc=True))

    # ---- exposition ---------------------------------------------------------------------

    def scrape(self) -> str:
        """Advance to the injected clock's time and render the exposition."""
        if self.clock is None:
            raise RuntimeError("scrape() needs a clock; pass clock= or call advance() and exposition()")
        self.advance(self.clock())
        return self.exposition()

    def exposition(self) -> str:
        """The router's /metrics in the Prometheus text format, with LiteLLM's metric names."""
        route = self.spec.route
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")

        def dep(p: ProviderSpec) -> str:
            return (f'api_base="https://api.{p.name}.example",api_provider="{p.name}",'
                    f'litellm_model_name="{p.model}",model_id="{p.name}-1",requested_model="{route}"')

        for metric, attr, text in (
            ("litellm_deployment_total_requests", "requests", "Total LLM API calls to a deployment, success + failure"),
            ("litellm_deployment_success_responses", "success", "Successful LLM API calls to a deployment"),
        ):
            family(metric, "counter", text)
            for p in self.spec.providers:
                lines.append(f"{metric}_total{{{dep(p)}}} {getattr(self._cum[p.name], attr):.1f}")
        family("litellm_deployment_failure_responses", "counter", "Failed LLM API calls to a deployment")
        for p in self.spec.providers:
            lines.append(
                f'litellm_deployment_failure_responses_total{{{dep(p)},exception_class="RateLimitError",'
                f'exception_status="429"}} {self._cum[p.name].failed_429:.1f}'
            )
        family("litellm_llm_api_latency_metric", "histogram", "Total latency (seconds) for a model's LLM API call")
        for p in self.spec.providers:
            c = self._cum[p.name]
            lbl = f'model="{p.model}",requested_model="{route}"'
            for le, v in zip(LATENCY_BUCKETS, c.buckets, strict=True):
                lines.append(f'litellm_llm_api_latency_metric_bucket{{{lbl},le="{le}"}} {v:.1f}')
            lines.append(f'litellm_llm_api_latency_metric_bucket{{{lbl},le="+Inf"}} {c.success:.1f}')
            lines.append(f"litellm_llm_api_latency_metric_sum{{{lbl}}} {c.latency_sum:.4f}")
            lines.append(f"litellm_llm_api_latency_metric_count{{{lbl}}} {c.success:.1f}")
        for metric, attr, text in (
            ("litellm_cache_hits_metric", "cache_hits", "Total number of LiteLLM cache hits"),
            ("litellm_cache_misses_metric", "cache_misses", "Total number of LiteLLM cache misses"),
            ("litellm_spend_metric", "spend", "Total spend on LLM requests"),
            ("litellm_input_tokens_metric", "input_tokens", "Total number of input tokens from LLM requests"),
            ("litellm_output_tokens_metric", "output_tokens", "Total number of output tokens from LLM requests"),
        ):
            family(metric, "counter", text)
            for p in self.spec.providers:
                lines.append(f'{metric}_total{{model="{p.model}",requested_model="{route}"}} {getattr(self._cum[p.name], attr):.4f}')
        return "\n".join(lines) + "\n"


def _mixture_quantile(q: float, counts: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Per row, the q-quantile of a mixture of lognormals weighted by ``counts``. NaN if empty."""
    total = counts.sum(axis=1)
    w = counts / np.maximum(total, 1)[:, None]
    lo = np.exp((mu + sigma * ndtri(q)).min(axis=1))  # the mixture quantile lies between
    hi = np.exp((mu + sigma * ndtri(q)).max(axis=1))  # the components' quantiles
    for _ in range(40):
        mid = np.sqrt(lo * hi)
        f = (w * ndtr((np.log(mid)[:, None] - mu) / sigma)).sum(axis=1)
        below = f < q
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    out = np.asarray(np.sqrt(lo * hi), dtype=float)
    out[total == 0] = np.nan
    return out
