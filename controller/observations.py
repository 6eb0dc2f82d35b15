"""What a tick observed: the minutes of the observation window that closed, summed once per
provider for every derived signal the decide stage reads (:class:`Observations`), and the
signals the weights policy needs that the router's input lacks (:class:`SignalGap`).
Built by :class:`controller.collect.CollectStage`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from collectors.signals import WindowTotals
from collectors.store import CounterPoint, HistPoint

__all__ = ["NEEDED_SIGNALS", "Observations", "SignalGap"]

_NO_DATA = WindowTotals()


@dataclass
class Observations:
    """The minutes of the observation window that closed by ``at``, and the pushed events'
    escalation tallies per (route label, segment) over the last hour. Each provider's rows
    are picked once, on first use."""

    at: datetime
    counters: list[CounterPoint]
    histograms: list[HistPoint]
    segments: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    #: Demand per closed minute (all providers together: requests net of retries, as the
    #: ``demand_rate`` forecast counts it) over ``policy.missed_window_minutes``; a minute
    #: without any data is absent.
    recent_demand: dict[int, float] = field(default_factory=dict)
    _by: dict[str | None, WindowTotals] = field(default_factory=dict, repr=False)

    def value(self, signal: str, provider: str | None) -> float:
        """``signal`` over the window for ``provider`` (None: all together); NaN without data."""
        by = self._by
        if not by:  # summed once, in one pass (a fleet has thousands of series and dozens of providers)
            grouped: dict[str, tuple[list[CounterPoint], list[HistPoint]]] = {}
            for c in self.counters:
                grouped.setdefault(c.key.provider, ([], []))[0].append(c)
            for h in self.histograms:
                grouped.setdefault(h.key.provider, ([], []))[1].append(h)
            per: dict[str | None, WindowTotals] = {who: WindowTotals.of(*rows) for who, rows in grouped.items()}
            # All providers from the points themselves, not from the per-provider sums: the same
            # additions in the same order as ever (a closed loop amplifies a last-bit difference).
            by = {**per, None: WindowTotals.of(self.counters, self.histograms)}
            self._by = by  # whole, in one assignment: the API's thread may read the same observations
        got = by.get(provider)
        return (got or _NO_DATA).value(signal)

    def total(self, signal: str, provider: str) -> float:
        """The raw counter ``signal`` of ``provider`` summed over the window (0 without data)."""
        return sum(p.value for p in self.counters if p.key.signal == signal and p.key.provider == provider)

    def value_or_none(self, signal: str, provider: str | None) -> float | None:
        v = self.value(signal, provider)
        return None if math.isnan(v) else v


#: The signals the weights policy cannot decide without, per provider.
NEEDED_SIGNALS = ("requests", "latency")


@dataclass(frozen=True)
class SignalGap:
    """A signal the weights policy needs that the router's input lacks for a provider."""

    provider: str
    signal: str
    #: The metric names the preset looked for, in order of preference.
    tried: tuple[str, ...]

    def describe(self) -> str:
        where = (f"tried {', '.join(self.tried)}" if self.tried
                 else f"the preset maps no metric to it (router.mapping for `{self.signal}`)")
        return f"no {self.signal} for provider {self.provider!r} in the router's input ({where})"
