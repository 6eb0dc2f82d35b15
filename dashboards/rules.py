"""Prometheus recording and alerting rules for diurnal, kept beside the dashboards.

Alerts compare a signal with diurnal's seasonal baseline (``diurnal_expected``: the forecast
for now, fitted on earlier history, with its band), not with a fixed threshold: a Monday
morning that is slow every Monday is inside its band and pages nobody.
"""

from __future__ import annotations

from typing import Any

from policies import ReasonCode

#: Where each alert's runbook lives (an anchor per alert is appended). Regenerate with
#: ``python -m dashboards.generate --runbook-base URL`` to point at your own copy.
RUNBOOK_BASE = "https://github.com/diurnal/diurnal/blob/main/docs/runbooks.md"

# (observed - expected mean) / half the band's width: beyond +-1 is outside the band.
BAND_DEVIATION = (
    "(diurnal_observed - ignoring(bound) diurnal_expected{bound=\"mean\"})"
    " / ignoring(bound) clamp_min((diurnal_expected{bound=\"upper\"} - ignoring(bound)"
    " diurnal_expected{bound=\"lower\"}) / 2, 1e-9)"
)


def recording_rules() -> list[dict[str, Any]]:
    return [
        {"record": "diurnal:expected_band_deviation", "expr": BAND_DEVIATION},
        {"record": "diurnal:decision_reasons:rate5m",
         "expr": "sum by (job, knob, reason) (rate(diurnal_decision_reasons_total[5m]))"},
        {"record": "diurnal:control_tick_duration_seconds:p99_5m",
         "expr": "histogram_quantile(0.99, sum by (job, le) (rate(diurnal_control_tick_duration_seconds_bucket[5m])))"},
        {"record": "diurnal:refit_duration_seconds:p99_1h",
         "expr": "histogram_quantile(0.99, sum by (job, le) (rate(diurnal_refit_duration_seconds_bucket[1h])))"},
        {"record": "diurnal:scrape_failures:ratio_rate5m",
         "expr": "sum by (job) (rate(diurnal_scrapes_total{result!=\"ok\"}[5m]))"
                 " / clamp_min(sum by (job) (rate(diurnal_scrapes_total[5m])), 1e-9)"},
        {"record": "diurnal:forecast_abs_error:1h",
         "expr": "abs(diurnal_forecast_for_now{horizon=\"1h\", bound=\"mean\"}"
                 " - ignoring(horizon, bound) diurnal_observed)"},
    ]


def _alert(base: str, name: str, expr: str, for_: str, severity: str, summary: str, description: str
           ) -> dict[str, Any]:
    return {
        "alert": name, "expr": expr, "for": for_, "labels": {"severity": severity},
        "annotations": {"summary": summary, "description": description,
                        "runbook_url": f"{base}#{name.lower()}"},
    }


def alerting_rules(runbook_base: str = RUNBOOK_BASE) -> list[dict[str, Any]]:
    return [
        _alert(
            runbook_base, "DiurnalLatencyAboveExpectedBand",
            "diurnal:expected_band_deviation{signal=\"latency_p95\"} > 1", "15m", "warning",
            "p95 latency of {{ $labels.provider }} is above its seasonal band",
            "The p95 latency of {{ $labels.provider }} has been above the upper bound of what is expected for "
            "this hour of the week for 15 minutes ({{ $value | humanize }} half-band widths above the expected "
            "value). A peak that comes every week is inside the band and does not fire this alert.",
        ),
        _alert(
            runbook_base, "DiurnalTrafficOutsideExpectedBand",
            "abs(diurnal:expected_band_deviation{signal=\"request_rate\"}) > 1", "30m", "info",
            "Traffic ({{ $labels.provider }}) is outside its seasonal band",
            "The request rate ({{ $labels.provider }}) has been outside the band expected for this hour of the "
            "week for 30 minutes ({{ $value | humanize }} half-band widths from the expected value): an unusual "
            "day (a holiday, a launch, an outage upstream). diurnal's forecast is not describing it.",
        ),
        _alert(
            runbook_base, "DiurnalInputsStale", "max by (job, instance) (diurnal_inputs_stale) == 1", "5m", "critical",
            "diurnal has no fresh router data",
            "diurnal on {{ $labels.instance }} has had no router data newer than guardrails.stale_after_seconds "
            "for 5 minutes. Every knob is held at its baseline until data comes back.",
        ),
        _alert(
            runbook_base, "DiurnalForecastBelowSkillGate",
            "max by (job, instance, signal, provider) (diurnal_forecast_trusted) == 0",
            "6h", "warning",
            "The {{ $labels.signal }} forecast of {{ $labels.provider }} is not trusted",
            "The {{ $labels.signal }} forecast of {{ $labels.provider }} has not passed the skill gates for 6 "
            "hours (too little history, no seasonality, or worse than seasonal naive). diurnal only reacts "
            "for it; it does not act ahead.",
        ),
        _alert(
            runbook_base, "DiurnalPublishFailing",
            "sum by (job, instance, publisher) (increase(diurnal_publishes_total{result=~\"failed|error|rejected\"}"
            "[15m])) > 0", "5m", "warning",
            "diurnal cannot publish decisions to {{ $labels.publisher }}",
            "Pushes of decisions to the {{ $labels.publisher }} publisher failed in the last 15 minutes. The "
            "router keeps its last configuration; GET /v1/decision still serves the current one.",
        ),
        _alert(
            runbook_base, "DiurnalStuckInFallback",
            f"max by (job, instance, reason) (diurnal_fallback{{reason!=\"{ReasonCode.KillSwitch}\"}}) == 1",
            "30m", "warning",
            "diurnal has held every knob at its baseline for 30 minutes ({{ $labels.reason }})",
            "diurnal on {{ $labels.instance }} has been in fallback ({{ $labels.reason }}) for 30 minutes: it "
            "publishes the baseline configuration and does not steer.",
        ),
        _alert(
            runbook_base, "DiurnalSignalMissing",
            "min by (job, instance, signal, provider) (diurnal_signal_present) == 0", "10m", "warning",
            "diurnal gets no {{ $labels.signal }} for {{ $labels.provider }} from the router",
            "The router's metrics (or pushed events) on {{ $labels.instance }} carry no {{ $labels.signal }} for "
            "provider {{ $labels.provider }}: its preset finds none of the metric names it tries. diurnal holds "
            "every weight at its baseline (MissingSignal) until the signal appears.",
        ),
        _alert(
            runbook_base, "DiurnalBudgetCannotHoldProtected",
            f"max by (job, instance, route) (diurnal_budget_plan{{code=\"{ReasonCode.BudgetCannotHoldProtected}\"}}) == 1",
            "15m", "warning",
            "The budget of route {{ $labels.route }} cannot hold its protected tier",
            "Route {{ $labels.route }} is protected (or of the high tier), so diurnal does not lower its escalation "
            "below its baseline to save money; at that baseline today is predicted to end over its budget. "
            "diurnal keeps the route's quality and says so: raise the budget, or unprotect the route.",
        ),
        _alert(
            runbook_base, "DiurnalBudgetOverrun",
            "max by (job, instance, route) (diurnal_budget_shortfall_usd / clamp_min(diurnal_budget_allowance_usd, "
            "1e-9)) > 0.02 unless on (job, instance, route) "
            f"(diurnal_budget_plan{{code=\"{ReasonCode.BudgetCannotHoldProtected}\"}} == 1)",
            "30m", "warning",
            "Route {{ $labels.route }} is predicted to end the day over its budget",
            "Even at its quality floor, route {{ $labels.route }} is predicted to end today {{ $value | "
            "humanizePercentage }} over its allowance. diurnal holds the floor and does not block requests unless "
            "budget_hard_stop is set.",
        ),
        _alert(
            runbook_base, "DiurnalSegmentParityGap",
            "max by (job, instance, route) (diurnal_segment_parity_gap_ratio - on (job, instance, route) "
            "diurnal_segment_parity_limit_ratio) > 0", "1h", "warning",
            "Segments of route {{ $labels.route }} are escalated unequally",
            "For an hour, the escalation rates of route {{ $labels.route }}'s segments have differed by more than "
            "its max_segment_disparity ({{ $value | humanizePercentage }} over the limit). "
            "diurnal_segment_parity_held says whether diurnal is holding them together.",
        ),
    ]


def rule_file(runbook_base: str = RUNBOOK_BASE) -> dict[str, Any]:
    return {"groups": [
        {"name": "diurnal.rules", "rules": recording_rules()},
        {"name": "diurnal.alerts", "rules": alerting_rules(runbook_base)},
    ]}
