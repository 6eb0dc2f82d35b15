"""Provider weights: keep traffic away from providers predicted (or seen) to breach the SLO,
without pushing any provider past its capacity.

Reason codes (one per provider):
- ``BaselineWeight``: nothing predicted or observed; the configured baseline.
- ``PredictedLatencyBreach``: the trusted forecast puts p95 over the SLO within the window.
- ``ObservedLatencyBreach``: no trusted forecast, but p95 is over the SLO now (reactive).
- ``ErrorBudgetBreach``: its 429/5xx share is over the error budget now.
- ``ShareReceived``: took share from a degraded provider.
- ``CapacityLimited``: held below its target by its capacity (RPM or TPM limit, or knee).
- ``CapacityExhausted``: expected load exceeds every provider's capacity together.
- ``AllProvidersDegraded``: every provider breaches; moving share would not help.
"""

from __future__ import annotations

from collections.abc import Mapping
from zoneinfo import ZoneInfo

from policies.types import PolicyConfig, ProviderView, Reason, ReasonCode, View

__all__ = ["decide_weights"]

_EPS = 1e-12


def _fmt_when(pv: ProviderView, tz: str) -> str:
    if pv.predicted_p95_at is None:
        return ""
    return f" at {pv.predicted_p95_at.astimezone(ZoneInfo(tz)):%a %H:%M %Z}"


def _degradation(pv: ProviderView | None, slo: float, tz: str, error_budget: float = 1.0) -> tuple[ReasonCode, str] | None:
    if pv is None:
        return None
    if pv.forecast_trusted and pv.predicted_p95_seconds is not None and pv.predicted_p95_seconds > slo:
        return (
            ReasonCode.PredictedLatencyBreach,
            f"p95 forecast {pv.predicted_p95_seconds:.2f}s{_fmt_when(pv, tz)} exceeds the {slo:.2f}s SLO; "
            "share moved away ahead of it",
        )
    if pv.observed_p95_seconds is not None and pv.observed_p95_seconds > slo:
        source = "no trusted forecast" if not pv.forecast_trusted else "forecast missed it"
        return (
            ReasonCode.ObservedLatencyBreach,
            f"observed p95 {pv.observed_p95_seconds:.2f}s exceeds the {slo:.2f}s SLO ({source}; reacting)",
        )
    if pv.observed_error_ratio is not None and pv.observed_error_ratio > error_budget:
        return (
            ReasonCode.ErrorBudgetBreach,
            f"{pv.observed_error_ratio:.1%} of its requests fail (429/5xx), over the {error_budget:.1%} error budget",
        )
    return None


def _capacity_share(cfg: PolicyConfig, name: str, total_rpm: float | None, pv: ProviderView | None = None) -> float:
    cap = cfg.providers[name].limit_rpm(pv)
    if cap is None or not total_rpm or total_rpm <= 0:
        return 1.0
    return min(1.0, cap * cfg.capacity_headroom / total_rpm)


def decide_weights(view: View, config: PolicyConfig) -> tuple[dict[str, float], list[Reason]]:
    """Target weights (summing to 1) and one reason per provider. Pure."""
    names = list(config.providers)
    if not names:
        return {}, []
    slo = config.latency_slo_seconds
    load = max(v for v in (view.predicted_total_rpm, view.observed_total_rpm, 0.0) if v is not None)
    degraded = {n: d for n in names
                if (d := _degradation(view.providers.get(n), slo, view.tz, config.error_budget)) is not None}
    codes: dict[str, tuple[ReasonCode, str]] = {}

    if len(degraded) == len(names):
        return config.baseline(), [
            Reason(f"weights/{n}", ReasonCode.AllProvidersDegraded,
                   "every provider is over the SLO; keeping the baseline since moving share would not help")
            for n in names
        ]

    weight: dict[str, float] = {}
    upper: dict[str, float] = {}
    for n in names:
        p = config.providers[n]
        cap = min(p.max_weight, max(p.min_weight, _capacity_share(config, n, load, view.providers.get(n))))
        if n in degraded:
            weight[n] = p.min_weight
            upper[n] = p.min_weight
            codes[n] = degraded[n]
        else:
            weight[n] = min(p.baseline_weight, cap)
            upper[n] = cap
            if weight[n] < p.baseline_weight - _EPS:
                limit = config.providers[n].limit_rpm(view.providers.get(n)) or 0.0
                codes[n] = (ReasonCode.CapacityLimited, f"held at {weight[n]:.2f} by capacity {limit:.0f} rpm "
                            f"at {load:.0f} rpm expected")
            else:
                codes[n] = (ReasonCode.BaselineWeight, f"baseline {p.baseline_weight:.2f}; no breach predicted or observed")

    free = 1.0 - sum(weight.values())
    free = _fill(weight, upper, {n: config.providers[n].baseline_weight for n in names if n not in degraded}, free, codes)
    if free > _EPS and degraded:
        # Healthy providers are full: the rest goes back to the degraded ones, by baseline.
        back = {n: config.providers[n].baseline_weight for n in degraded}
        total = sum(back.values())
        for n, b in back.items():
            weight[n] += free * b / total
            codes[n] = (ReasonCode.CapacityLimited, degraded[n][1] + f"; kept {weight[n]:.2f} because the others are at capacity")
    elif free > _EPS:
        # Expected load exceeds the capacity of every provider together: no split avoids
        # overload, so the excess is spread by baseline (it will show as 429s, not be hidden).
        capacity = sum(c for n in names if (c := config.providers[n].limit_rpm(view.providers.get(n))) is not None)
        for n in names:
            weight[n] += free * config.providers[n].baseline_weight
            codes[n] = (ReasonCode.CapacityExhausted, f"expected {load:.0f} rpm exceeds the {capacity:.0f} rpm all "
                        "providers can take; excess spread by baseline")
    total = sum(weight.values())
    weights = {n: weight[n] / total for n in names}
    return weights, [Reason(f"weights/{n}", *codes[n]) for n in names]


def _fill(weight: dict[str, float], upper: Mapping[str, float], prio: Mapping[str, float], free: float,
          codes: dict[str, tuple[ReasonCode, str]]) -> float:
    """Water-fill ``free`` share into providers below their upper bound, by ``prio``."""
    while free > _EPS:
        room = {n: upper[n] - weight[n] for n in prio if upper[n] - weight[n] > _EPS}
        if not room:
            break
        total = sum(prio[n] for n in room)
        given = 0.0
        for n in room:
            add = min(room[n], free * prio[n] / total)
            weight[n] += add
            given += add
            if codes[n][0] == ReasonCode.BaselineWeight:
                codes[n] = (ReasonCode.ShareReceived, "raised to absorb share moved off degraded providers")
        free -= given
        if given <= _EPS:
            break
    return free
