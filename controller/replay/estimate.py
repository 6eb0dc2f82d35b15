"""What each policy's split would have produced over a walked period: an estimate, stated.

The router ran one policy (``actual``); the others never ran, so their outcome is estimated
from what the history shows of each provider, per local hour of the week:

- its **SLO capacity** (:func:`controller.forecast.slo_capacity.learn_capacity`, the
  planner's own estimate, with its evidence), and a band around it from the same hours: a
  measured capacity lies between the busiest hour that kept the SLO and the quietest that
  broke it; a lower bound (it never breached) is open above; an upper bound (it breached)
  lies between the estimate and the quietest load that breached;
- its **latency curve**: the hours' p95 against their load, made non-decreasing in load
  and interpolated (beyond the busiest load seen, continued towards the SLO at the
  capacity: extrapolated);
- its **rate limit**: the configured ``capacity_rpm``, else the median load it answered in
  the hours where more than 1% of its requests got a 429 (none: no 429s are estimated);
- its **tokens per request**, and the prices (price windows included).

Each minute the demand is what reached the providers (requests less retries). A policy's
split gives each provider its load; the minute is an **SLO-risk minute** if some provider is
loaded beyond its SLO capacity for that hour (a pool beyond its units too) or beyond its
rate limit by more than the error budget. A minute where a split sends a provider more than
it was ever seen to carry in that hour of the week (by the hours, or the walked minutes) is
**extrapolated**: counted apart, never as measured.

The policies: ``actual`` (what the router did), ``static`` (the configured baseline
weights), ``reactive`` (LiteLLM's latency-based routing: the providers within ``buffer`` of
the lowest latency share the traffic, an RPM limit is respected and a provider with more
429s than ``allowed_fails`` in a minute cools down for a minute), and ``diurnal`` (the
decisions replayed). Static and reactive keep the pool at its size as it ran.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from collectors.hour_of_week import slots as slots_of
from collectors.signals import hourly
from collectors.store import Store
from controller.forecast.slo_capacity import (
    SLOTS,
    CapacityProfile,
    Evidence,
    learn_capacity,
    neighbours,
)
from controller.replay.walk import Walk
from policies import PolicyConfig, PrewarmConfig

__all__ = ["Estimate", "Outcome", "ProviderModel", "Reactive", "estimate", "learn_models"]

POLICIES = ("actual", "static", "reactive", "diurnal")
#: The share of 429s above which an hour counts as rate-limited, to learn the limit from.
LIMITED_SHARE = 0.01


@dataclass(frozen=True)
class ProviderModel:
    """What the history shows of one provider, per local hour-of-week slot."""

    name: str
    capacity: CapacityProfile
    cap: np.ndarray  # 168 SLO capacities (rpm), NaN unknown
    low: np.ndarray  # 168 lows of the band
    high: np.ndarray  # 168 highs (inf: open above)
    seen: np.ndarray  # 168 busiest loads seen (rpm)
    curves: tuple[tuple[np.ndarray, np.ndarray], ...]  # per slot: loads (sorted), p95 (non-decreasing)
    rate_limit_rpm: float | None
    rate_limit_source: str
    tokens: tuple[np.ndarray, np.ndarray]  # 168 input and output tokens per request

    def p95(self, slot: int, load: float, slo: float) -> float:
        """The estimated p95 (seconds) at ``load`` in ``slot``; NaN where nothing is known."""
        loads, p95 = self.curves[slot]
        if len(loads) == 0:
            return math.nan
        if load <= loads[-1]:
            return float(np.interp(load, loads, p95))
        top, at_top = float(loads[-1]), float(p95[-1])
        cap = self.cap[slot]
        if math.isfinite(cap) and cap > top and slo > at_top > 0:  # towards the SLO at the capacity, in log
            return at_top * math.exp(min(20.0, math.log(slo / at_top) * (load - top) / (cap - top)))
        return at_top * load / top if top > 0 else at_top


@dataclass
class Outcome:
    """One policy over the period."""

    policy: str
    cost_usd: float
    token_cost_usd: float
    pool_cost_usd: float
    slo_risk_minutes: int
    slo_risk_band: tuple[int, int]
    extrapolated_minutes: int
    extrapolated_risk_minutes: int
    errors_429: float
    share: dict[str, float]
    load: dict[str, np.ndarray] = field(repr=False)
    cumulative_cost: np.ndarray = field(repr=False)
    units: np.ndarray | None = field(default=None, repr=False)


@dataclass
class Estimate:
    models: dict[str, ProviderModel]
    outcomes: dict[str, Outcome]
    demand: np.ndarray
    slots: np.ndarray
    #: What the router's data says of the period as it ran (not estimated).
    observed_slo_minutes: int
    observed_spend_usd: float | None
    caveats: list[str]


@dataclass(frozen=True)
class Reactive:
    """LiteLLM's latency-based routing, as the ``reactive`` policy is estimated."""

    buffer: float = 0.5
    allowed_fails: float = 3.0
    cooldown_minutes: int = 1
    #: How long a latency is remembered (LiteLLM's default: an hour); a provider that got no
    #: traffic since has no latency again, and is tried as if it were the fastest.
    ttl_minutes: int = 60


def _pooled(hour_slots: np.ndarray, slot: int, radius: int) -> np.ndarray:
    if radius < 0:
        return np.ones(len(hour_slots), dtype=bool)
    return np.isin(hour_slots, neighbours(slot, radius))


def learn_models(store: Store, config: PolicyConfig, providers: list[str], *, tz: str, start: int,
                 end: int) -> dict[str, ProviderModel]:
    """Each provider's model from the store's hours in ``[start, end)``."""
    out: dict[str, ProviderModel] = {}
    fleet = (hourly(store, "input_token_rate", tz, start, end), hourly(store, "output_token_rate", tz, start, end),
             hourly(store, "request_rate", tz, start, end))
    for name in providers:
        rate = hourly(store, "request_rate", tz, start, end, name)
        load = rate * 60.0
        p95 = hourly(store, "latency_p95", tz, start, end, name)
        e429 = hourly(store, "error_429_ratio", tz, start, end, name)
        errors = e429.add(hourly(store, "error_5xx_ratio", tz, start, end, name), fill_value=0.0)
        profile = learn_capacity(load, p95, errors, tz=tz, slo_seconds=config.latency_slo_seconds,
                                 error_budget=config.error_budget)
        index = load.index
        assert isinstance(index, pd.DatetimeIndex)
        hour_slots = slots_of(index, tz) if len(index) else np.array([], dtype=int)
        x = load.to_numpy(dtype=float)
        badness = np.fmax(p95.reindex(index).to_numpy(dtype=float) / config.latency_slo_seconds,
                          errors.reindex(index).to_numpy(dtype=float) / config.error_budget)
        lat = p95.reindex(index).to_numpy(dtype=float)
        cap, low, high, seen = (np.full(SLOTS, np.nan) for _ in range(4))
        curves = []
        for s in range(SLOTS):
            est = profile.at(s)
            pool = _pooled(hour_slots, s, est.radius) & np.isfinite(x)
            if not pool.any():
                pool = np.isfinite(x)
            xs, bs = x[pool], badness[pool]
            seen[s] = float(xs.max()) if len(xs) else np.nan
            keep = pool & np.isfinite(lat)
            order = np.argsort(x[keep], kind="stable")
            curves.append((x[keep][order], np.maximum.accumulate(lat[keep][order]) if keep.any() else np.array([])))
            if est.rpm is None:
                continue
            c = est.rpm
            if est.evidence is Evidence.lower_bound and profile.overall.rpm is not None and \
                    profile.overall.evidence in (Evidence.lower_bound, Evidence.measured):
                c = max(c, profile.overall.rpm)  # as the planner reads it: never over the SLO here
            cap[s] = c
            good = xs[np.isfinite(bs) & (bs <= 1.0)]
            bad = xs[np.isfinite(bs) & (bs > 1.0)]
            if est.evidence is Evidence.lower_bound or not len(bad):
                low[s], high[s] = c, math.inf
            elif est.evidence is Evidence.upper_bound or not len(good):
                above = bad[bad >= c]
                low[s], high[s] = c, float(above.min()) if len(above) else c
            else:
                below, above = good[good <= c], bad[bad >= c]
                low[s] = float(below.max()) if len(below) else c
                high[s] = float(above.min()) if len(above) else c
        limit, source = _rate_limit(config, name, x, e429.reindex(index).to_numpy(dtype=float))
        out[name] = ProviderModel(name, profile, cap, low, high, seen, tuple(curves), limit, source,
                                  _tokens(store, tz, start, end, name, fleet))
    return out


def _rate_limit(config: PolicyConfig, name: str, load: np.ndarray, share: np.ndarray) -> tuple[float | None, str]:
    p = config.providers.get(name)
    if p is not None and p.capacity_rpm is not None:
        return p.capacity_rpm, "configured capacity_rpm"
    if any(a.provider == name for a in config.prewarm):
        return None, "a pool: its units bound it"
    limited = np.isfinite(load) & np.isfinite(share) & (share > LIMITED_SHARE)
    if not limited.any():
        return None, "no 429s in the history"
    answered = load[limited] * (1.0 - share[limited])
    # An hour's mean is at most the limit (some of its minutes were under it): the busiest is nearest.
    return float(answered.max()), f"the busiest load answered in {int(limited.sum())} rate-limited hours"


def _tokens(store: Store, tz: str, start: int, end: int, name: str,
            fleet: tuple[pd.Series, pd.Series, pd.Series]) -> tuple[np.ndarray, np.ndarray]:
    """Input and output tokens per request by slot: the provider's own, else its overall,
    else every provider's."""
    req = hourly(store, "request_rate", tz, start, end, name)
    out = []
    for signal, every in (("input_token_rate", fleet[0]), ("output_token_rate", fleet[1])):
        tok = hourly(store, signal, tz, start, end, name)
        per = (tok / req.where(req > 0)).replace([np.inf, -np.inf], np.nan)
        fallback = float((every.sum() / fleet[2].sum()) if fleet[2].sum() > 0 else 0.0)
        overall = float(tok.sum() / req.sum()) if req.sum() > 0 and tok.notna().any() else fallback
        by = np.full(SLOTS, overall if math.isfinite(overall) else 0.0)
        if per.notna().any():
            index = per.dropna().index
            assert isinstance(index, pd.DatetimeIndex)
            grouped = pd.Series(per.dropna().to_numpy(), index=slots_of(index, tz)).groupby(level=0).median()
            by[grouped.index.to_numpy(dtype=int)] = grouped.to_numpy()
        out.append(by)
    return out[0], out[1]


def _price_per_request(config: PolicyConfig, model: ProviderModel, slots: np.ndarray, minute_of_week: np.ndarray
                       ) -> tuple[np.ndarray, bool]:
    """Per minute, what one request to the provider costs (price windows applied), and
    whether it has a price."""
    p = config.providers.get(model.name)
    price = p.price if p is not None else None
    if price is None:
        return np.zeros(len(slots)), False
    base = ((price.per_request or 0.0) + (price.input_per_million_tokens or 0.0) * model.tokens[0][slots] / 1e6
            + (price.output_per_million_tokens or 0.0) * model.tokens[1][slots] / 1e6)
    factor = np.ones(len(slots))
    for a, b, f in price.windows:
        factor[(minute_of_week >= a) & (minute_of_week < b)] = f
    return base * factor, True


def _pool(config: PolicyConfig) -> PrewarmConfig | None:
    return next((a for a in config.prewarm if a.provider != "*" and a.rpm_per_unit > 0), None)


def estimate(walked: Walk, models: dict[str, ProviderModel], config: PolicyConfig, *, tz: str,
             pool_units: int | None = None, reactive: Reactive | None = None) -> Estimate:
    """Every policy's outcome over the walked minutes."""
    n = walked.walked
    providers = walked.providers
    index = pd.DatetimeIndex(pd.to_datetime(walked.minutes[:n], unit="s", utc=True))
    local = index.tz_convert(tz)
    slots = np.asarray(local.day_of_week * 24 + local.hour, dtype=int)
    mow = np.asarray(local.day_of_week * 1440 + local.hour * 60 + local.minute, dtype=int)
    obs = {sig: {p: walked.observed[sig][p][:n] for p in providers} for sig in walked.observed}
    actual = {p: obs["requests"][p] for p in providers}
    retries = sum((obs["retries"][p] for p in providers), np.zeros(n))
    demand = np.maximum(0.0, sum((actual[p] for p in providers), np.zeros(n)) - retries)
    caveats: list[str] = []
    pool = _pool(config)
    static_units = pool_units if pool_units is not None else (pool.min_units if pool else None)
    if pool is not None and pool_units is None:
        caveats.append(f"the pool's size as it ran is not in the router's metrics: taken as {pool.name}'s min_units "
                       f"({pool.min_units}) for actual, static and reactive (--pool-units sets it)")
    # Minute loads seen per slot widen what the hours saw (a minute is busier than its hour's mean).
    seen = {p: models[p].seen.copy() for p in providers}
    for p in providers:
        np.maximum.at(seen[p], slots, np.nan_to_num(actual[p]))
    splits: dict[str, dict[str, np.ndarray]] = {"actual": actual}
    baseline = {p: config.providers[p].baseline_weight if p in config.providers else 0.0 for p in providers}
    total = sum(baseline.values()) or 1.0
    splits["static"] = {p: demand * baseline[p] / total for p in providers}
    splits["reactive"] = _reactive(demand, slots, models, config, providers, reactive or Reactive(),
                                   pool, static_units)
    w = {p: np.nan_to_num(walked.weights[p][:n], nan=baseline[p] / total) for p in providers}
    wsum = sum(w.values())
    wsum = np.where(wsum > 0, wsum, 1.0)
    splits["diurnal"] = {p: demand * w[p] / wsum for p in providers}
    diurnal_units = None
    if pool is not None and pool.name in walked.units:
        got = walked.units[pool.name][:n]
        asked = np.where(np.isfinite(got), got, static_units or 0)
        # Ready only after the warm-up: the fewest asked over the last lead (as the planner counts them).
        lead = max(1, int(pool.lead.total_seconds() // 60))
        diurnal_units = pd.Series(asked).rolling(lead + 1, min_periods=1).min().to_numpy()
    prices = {p: _price_per_request(config, models[p], slots, mow) for p in providers}
    for p, (_, priced) in prices.items():
        if not priced and (p != (pool.provider if pool else None)):
            caveats.append(f"provider {p!r} has no price: its requests count as free")
    outcomes = {}
    for name in POLICIES:
        units = diurnal_units if name == "diurnal" else (
            np.full(n, float(static_units)) if static_units is not None else None)
        outcomes[name] = _score(name, splits[name], slots, models, seen, prices, config, pool, units,
                                obs["errors_429"] if name == "actual" else None)
    observed_bad = np.zeros(n, dtype=bool)
    for p in providers:
        req = actual[p]
        err = (obs["errors_429"][p] + obs["errors_5xx"][p]) / np.where(req > 0, req, 1.0)
        observed_bad |= (walked.p95[p][:n] > config.latency_slo_seconds) | ((req > 0) & (err > config.error_budget))
    spend = sum((obs["spend"][p] for p in providers), np.zeros(n))
    if walked.from_hours[:n].any():
        caveats.append(f"{int(walked.from_hours[:n].sum())} minutes were walked from hourly rollups (no minutes kept "
                       "for them): minute-level peaks within those hours are not seen")
    if walked.empty[:n].any():
        caveats.append(f"{int(walked.empty[:n].sum())} minutes have no data at all (a gap in the history): no policy "
                       "is scored on them")
    return Estimate(models, outcomes, demand, slots, int(observed_bad.sum()),
                    float(spend.sum()) if spend.any() else None, caveats)


def _score(name: str, load: dict[str, np.ndarray], slots: np.ndarray, models: dict[str, ProviderModel],
           seen: dict[str, np.ndarray], prices: dict[str, tuple[np.ndarray, bool]], config: PolicyConfig,
           pool: PrewarmConfig | None, units: np.ndarray | None,
           observed_429: dict[str, np.ndarray] | None) -> Outcome:
    n = len(slots)
    risk, risk_lo, risk_hi, extra = (np.zeros(n, dtype=bool) for _ in range(4))
    per_minute_cost = np.zeros(n)
    errors_429 = 0.0
    for p, lp in load.items():
        m = models[p]
        cap, low, high = m.cap[slots], m.low[slots], m.high[slots]
        if pool is not None and units is not None and p == pool.provider:  # its units, not its history, bound it
            cap = low = high = units * pool.rpm_per_unit
        # A lower bound (it never breached) says nothing above it: a load beyond what was seen
        # is extrapolated, not a risk measured.
        known = np.isfinite(high)
        over = known & (lp > cap)
        if m.rate_limit_rpm is not None:
            excess = np.maximum(0.0, lp - m.rate_limit_rpm)
            limited = excess > config.error_budget * np.maximum(lp, 1e-9)
        else:
            excess = np.zeros(n)
            limited = np.zeros(n, dtype=bool)
        errors_429 += float(observed_429[p].sum()) if observed_429 is not None else float(excess.sum())
        risk |= over | limited
        risk_lo |= (known & (lp > high)) | limited
        risk_hi |= (known & (lp > low)) | limited
        extra |= (lp > 0) & ((lp > seen[p][slots]) | ~np.isfinite(seen[p][slots]))
        per_minute_cost += lp * prices[p][0]
    token_cost = float(per_minute_cost.sum())
    pool_minute = np.zeros(n)
    if pool is not None and units is not None and pool.unit_price_per_hour is not None:
        pool_minute = units * pool.unit_price_per_hour / 60.0
    total = sum(float(v.sum()) for v in load.values()) or 1.0
    measured = ~extra
    return Outcome(
        policy=name, cost_usd=token_cost + float(pool_minute.sum()), token_cost_usd=token_cost,
        pool_cost_usd=float(pool_minute.sum()),
        slo_risk_minutes=int((risk & measured).sum()),
        slo_risk_band=(int((risk_lo & measured).sum()), int((risk_hi & measured).sum())),
        extrapolated_minutes=int(extra.sum()), extrapolated_risk_minutes=int((risk & extra).sum()),
        errors_429=errors_429, share={p: float(v.sum()) / total for p, v in load.items()}, load=load,
        cumulative_cost=np.cumsum(per_minute_cost + pool_minute), units=units)


def _reactive(demand: np.ndarray, slots: np.ndarray, models: dict[str, ProviderModel], config: PolicyConfig,
              providers: list[str], how: Reactive, pool: PrewarmConfig | None,
              units: int | None) -> dict[str, np.ndarray]:
    """The loads LiteLLM's latency-based routing would have sent, minute by minute: each
    minute it routes on the latencies its own split of the minute before produced."""
    n = len(demand)
    out = {p: np.zeros(n) for p in providers}
    slo = config.latency_slo_seconds
    latency = dict.fromkeys(providers, 0.0)  # no latency yet: tried as if the fastest
    cooled = dict.fromkeys(providers, -1)
    sent = dict.fromkeys(providers, -1)
    limits = {p: config.providers[p].capacity_rpm if p in config.providers else None for p in providers}
    if pool is not None and units is not None:
        limits[pool.provider] = units * pool.rpm_per_unit
    for i in range(n):
        for p in providers:
            if i - sent[p] > how.ttl_minutes:
                latency[p] = 0.0
        live = [p for p in providers if cooled[p] < i] or list(providers)
        best = min(latency[p] for p in live)
        chosen = [p for p in live if latency[p] <= best * (1.0 + how.buffer) + 1e-12]
        left = float(demand[i])
        share: dict[str, float] = dict.fromkeys(providers, 0.0)
        open_ = list(chosen)
        while left > 1e-9 and open_:  # equal shares, each capped at its RPM limit; the excess spills over
            each = left / len(open_)
            spill = 0.0
            for p in list(open_):
                cap = limits[p]
                room = cap - share[p] if cap is not None else math.inf
                take = min(each, max(0.0, room))
                share[p] += take
                spill += each - take
                if take < each:
                    open_.remove(p)
            left = spill
            if not open_ and left > 1e-9:  # every deployment at its limit: the rest goes over (429s)
                rest = [p for p in live if p not in chosen] or chosen
                for p in rest:
                    share[p] += left / len(rest)
                left = 0.0
        for p in providers:
            out[p][i] = share[p]
            m = models[p]
            if share[p] > 0:
                sent[p] = i
                est = m.p95(int(slots[i]), share[p], slo)
                latency[p] = est if math.isfinite(est) else 0.0
            limit = m.rate_limit_rpm
            if limit is not None and share[p] - limit > how.allowed_fails:
                cooled[p] = i + how.cooldown_minutes
    return out
