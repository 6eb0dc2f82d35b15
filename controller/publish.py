"""Stage 4 of a tick, publish: the decision's wire format, its ETag, and handing a new
decision to the audit log and the actuators (publishers in ``act`` mode, the prewarm
executor every tick).

The wire format (:func:`decision_body`) is what ``GET /v1/decision`` serves, what the file and
webhook publishers send and what the audit log keeps.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from collectors.redact import redact
from controller.actuators import (
    AuditLog,
    KubernetesScaler,
    PrewarmExecutor,
    ReplicaScaler,
    build_publishers,
)
from controller.decide import Decided
from controller.metrics import Metrics
from controller.settings import Settings
from policies import Decision

__all__ = ["PublishStage", "day_plan_body", "decision_body", "decision_etag", "plan_body"]


def decision_body(decision: Decision, *, with_time: bool = True) -> dict[str, object]:
    """The JSON form of a decision, as served at ``GET /v1/decision``."""
    body: dict[str, object] = {
        "mode": decision.mode,
        "weights": {k: round(v, 6) for k, v in sorted(decision.weights.items())},
        "recommended_weights": {k: round(v, 6) for k, v in sorted(decision.recommended_weights.items())},
        "thresholds": dict(sorted(decision.thresholds.items())),
        "recommended_thresholds": dict(sorted(decision.recommended_thresholds.items())),
        "prewarm": [
            {"action": p.action, "kind": p.kind, "target": redact(p.target), "amount": p.amount, "at": p.at.isoformat(),
             "peak_at": p.peak_at.isoformat() if p.peak_at else None,
             "release_at": p.release_at.isoformat() if p.release_at else None}
            for p in decision.prewarm
        ],
        "reasons": [{"knob": r.knob, "code": str(r.code), "message": r.message} for r in decision.reasons],
    }
    if with_time:
        body["at"] = decision.at.isoformat()
    return body


def _num(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def plan_body(decision: Decision) -> list[dict[str, object]]:
    """The planner's plan as JSON (``/v1/decision?explain=1`` and the audit log; not in the
    body pollers read, whose ETag must not move with every forecast step)."""
    return [
        {"at": p.at.isoformat(), "demand_rpm": _num(p.demand_rpm),
         "providers": {n: {"load_rpm": _num(p.load_rpm.get(n, 0.0)), "capacity_rpm": _num(p.capacity_rpm.get(n)),
                           "headroom": _num(p.headroom.get(n))}
                       for n in sorted(p.load_rpm)},
         "pool_units": p.pool_units, "cost_per_hour": _num(p.cost_per_hour),
         "baseline_cost_per_hour": _num(p.baseline_cost_per_hour)}
        for p in decision.plan
    ]


def day_plan_body(decision: Decision) -> list[dict[str, object]]:
    """Each budgeted route's day plan as JSON (``/v1/decision?explain=1``, the audit log):
    what today may spend and which budget binds, what is spent, what the plan predicts for
    the day, the shortfall, the reason, and each hour left with its planned escalation."""
    return [
        {"route": p.route, "budget": p.binding, "allowance_usd": _num(p.allowance), "spent_usd": _num(p.spent),
         "planned_usd": _num(p.planned), "predicted_usd": _num(p.spent + p.planned),
         "shortfall_usd": _num(p.shortfall), "escalation_now": _num(p.fraction), "code": str(p.code),
         "message": p.message,
         "hours": [{"at": h.at.isoformat(), "requests": _num(h.requests), "escalation": _num(h.fraction),
                    "score_threshold": _num(h.score_threshold), "spend_usd": _num(h.spend)} for h in p.hours]}
        for p in sorted(decision.day_plans, key=lambda p: p.route)
    ]


def decision_etag(decision: Decision, body: dict[str, object] | None = None) -> str:
    """The decision's ETag. A decision is new when a knob or a reason code changes; messages
    are left out, since they carry live numbers (the p95 seen now) and a poller must get 304
    while nothing it acts on has changed."""
    identity = {k: v for k, v in (body or decision_body(decision)).items() if k not in ("at", "reasons")}
    identity["codes"] = [(r.knob, str(r.code)) for r in decision.reasons]
    return '"' + hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20] + '"'


class PublishStage:
    def __init__(self, settings: Settings, metrics: Metrics,
                 scaler: Callable[[], ReplicaScaler] | None = None) -> None:
        self.metrics = metrics
        self.audit = AuditLog(Path(settings.data_dir) / "audit.jsonl")
        self.publishers = build_publishers(settings, lambda name, result: metrics.publishes.labels(name, result).inc())
        k8s = settings.publish.kubernetes
        self.prewarm = PrewarmExecutor(scaler or (lambda: KubernetesScaler.from_settings(k8s)),
                                       lambda name, result: metrics.prewarm_actions.labels(name, result).inc(),
                                       owned=frozenset(a.name for a in settings.policy.prewarm if a.scale_in))
        self.decision: Decision | None = None
        self.etag: str | None = None
        self._pushed: str | None = None  # the ETag last pushed by this replica

    def run(self, decided: Decided, acting: bool = True) -> bool:
        """Make the decision current; push it if it changed. Returns whether it changed.
        ``acting`` False (another replica holds the Lease): nothing is pushed or scaled; the
        decision is still served and audited here."""
        decision, view = decided.decision, decided.view
        self.decision = decision
        body = decision_body(decision)
        etag = decision_etag(decision, body)
        changed = etag != self.etag
        if changed:  # a new decision: into the audit log with what it was based on
            self.audit.append({
                **body,
                "etag": etag,
                "plan": plan_body(decision),
                "day_plans": day_plan_body(decision),
                "inputs": {
                    "data_age_seconds": view.data_age_seconds,
                    "observed_total_rpm": view.observed_total_rpm,
                    "predicted_total_rpm": view.predicted_total_rpm,
                    "providers": {
                        n: {"observed_p95_seconds": pv.observed_p95_seconds, "observed_rpm": pv.observed_rpm,
                            "predicted_p95_seconds": pv.predicted_p95_seconds,
                            "predicted_p95_at": pv.predicted_p95_at.isoformat() if pv.predicted_p95_at else None,
                            "forecast_trusted": pv.forecast_trusted}
                        for n, pv in sorted(view.providers.items())
                    },
                    "overrides": [o.id for o in decided.overrides],
                },
            })
        if decision.mode == "act" and acting:  # observe mode pushes nothing; nor does a follower
            if etag != self._pushed:  # new, or in force when this replica took the lease
                for pub in self.publishers:
                    pub.publish(body, etag)
                self._pushed = etag
            else:  # unchanged: sent again only where it was given up on
                for pub in self.publishers:
                    if pub.retry_due(etag):
                        pub.publish(body, etag)
        else:  # observe mode, or a follower: what is in force is pushed once it acts again
            self._pushed = None
        self.etag = etag
        if decision.mode == "act" and acting:  # each tick: it acts only on a changed amount, and retries a failed one
            self.prewarm.submit(decision.prewarm, decision.at)
        for r in decision.reasons:
            self.metrics.decision_reasons.labels(r.knob.split("/", 1)[0], r.code).inc()
        return changed

    def close(self) -> None:
        for pub in self.publishers:
            pub.close()
        self.prewarm.close()
