"""Generate diurnal's Grafana dashboards and Prometheus rules.

    python -m dashboards.generate            # rewrite dashboards/*.json, dashboards/rules/ and the
                                             # Helm chart's copies and values.schema.json
    python -m dashboards.generate --check    # exit 1 if the committed files differ

The dashboards are built with grafana-foundation-sdk (pinned to the Grafana 11.6 line). UIDs
are fixed, so links and provisioning survive a regeneration. Every query reads a metric that
diurnal exports (see README, "Metrics") or a recording rule from :mod:`dashboards.rules`.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync

from dashboards.chart_schema import values_schema
from dashboards.panels import (
    DS,
    band,
    datasource_variable,
    hour_of_week_matrix,
    label_variable,
    q,
    series,
    single,
)
from dashboards.rules import RUNBOOK_BASE, rule_file
from dashboards.settings_reference import settings_reference

HERE = Path(__file__).resolve().parent
#: The hook a LiteLLM proxy loads; the chart ships a copy (a file that stands alone).
LITELLM_HOOK = HERE.parent / "controller" / "actuators" / "litellm_hook.py"
RULES = HERE / "rules" / "diurnal.rules.yml"
TAGS = ["diurnal"]
SEL = 'signal="$signal", provider="$provider"'


def _base(uid: str, title: str, description: str) -> db.Dashboard:
    return (db.Dashboard(title).uid(uid).description(description).tags(TAGS).refresh("1m")
            .time("now-7d", "now").timezone("browser").tooltip(DashboardCursorSync.CROSSHAIR)
            .with_variable(datasource_variable()))


def seasonality() -> db.Dashboard:
    d = (_base("diurnal-seasonality", "diurnal / Seasonality",
               "One signal against its seasonal baseline, and its decomposition into trend, daily, weekly and "
               "residual parts. A Monday peak that comes every week sits in the daily and weekly rows, not in "
               "the residual.")
         .with_variable(label_variable("signal", "Signal", "label_values(diurnal_expected, signal)"))
         .with_variable(label_variable("provider", "Provider",
                                       'label_values(diurnal_expected{signal="$signal"}, provider)')))
    d = d.with_row(db.Row("$signal of $provider against the expected band"))
    d = d.with_panel(band(
        "Observed against the expected band",
        "Observed over the observation window, and the seasonal baseline for the same hour with its band "
        "(the forecast fitted on earlier history).", "short",
        f"diurnal_observed{{{SEL}}}", f'diurnal_expected{{{SEL}, bound="mean"}}',
        f'diurnal_expected{{{SEL}, bound="lower"}}', f'diurnal_expected{{{SEL}, bound="upper"}}', w=18))
    d = d.with_panel(series(
        "Distance from the expected value",
        "(observed - expected) / half the band's width. Beyond +-1 is outside the band; the latency alert "
        "fires after 15 minutes above +1.", "short",
        q(f"diurnal:expected_band_deviation{{{SEL}}}", "deviation"), w=6, h=9))
    d = d.with_row(db.Row("Decomposition (at each refit)"))
    for component, what in (("trend", "The level, without the daily and weekly cycles."),
                            ("daily", "The hour-of-day cycle."),
                            ("weekly", "The day-of-week cycle, on top of the daily one."),
                            ("residual", "What the trend and the cycles do not explain: incidents, holidays.")):
        d = d.with_panel(series(
            component.capitalize(), what, "short",
            q(f'diurnal_forecast_component{{{SEL}, component="{component}"}}', component), w=6, h=7))
    return d


def hour_of_week() -> db.Dashboard:
    d = (_base("diurnal-hour-of-week", "diurnal / Hour of week",
               "The typical week, weekday x local hour (in diurnal's configured timezone), from the store's "
               "hour rollups; and this week against it.")
         .with_variable(label_variable("provider", "Provider (latency)",
                                       'label_values(diurnal_hour_of_week{signal="latency_p95"}, provider)')))
    how = "Median over the forecast history of each local hour of the week. Rows: weekdays; columns: hours."
    d = d.with_row(db.Row("The typical week"))
    d = d.with_panel(hour_of_week_matrix(
        "p95 latency of $provider", how, "s",
        'diurnal_hour_of_week{signal="latency_p95", provider="$provider"}'))
    d = d.with_panel(hour_of_week_matrix(
        "SLO capacity of $provider", "The load (requests per minute) at which $provider's p95 reaches the SLO "
        "(or its 429/5xx share the error budget), learned per local hour of the week from its own history; "
        "what the planner plans on. Rows: weekdays; columns: hours.", "reqpm",
        'diurnal_provider_slo_capacity_hour_of_week{provider="$provider"}'))
    d = d.with_panel(hour_of_week_matrix(
        "Cache-hit ratio", how, "percentunit", 'diurnal_hour_of_week{signal="cache_hit_ratio", provider="*"}'))
    d = d.with_panel(hour_of_week_matrix(
        "Retries per request", how, "percentunit", 'diurnal_hour_of_week{signal="retry_ratio", provider="*"}'))
    d = d.with_panel(hour_of_week_matrix(
        "Spend per request", how + " Spend per hour / requests per hour.", "currencyUSD",
        'diurnal_hour_of_week{signal="spend_rate", provider="*"} / ignoring(signal) '
        '(diurnal_hour_of_week{signal="request_rate", provider="*"} * 3600)'))
    d = d.with_row(db.Row("This week against the typical week"))
    for signal, title, unit, provider in (("latency_p95", "p95 latency of $provider", "s", "$provider"),
                                          ("cache_hit_ratio", "Cache-hit ratio", "percentunit", "*"),
                                          ("retry_ratio", "Retries per request", "percentunit", "*"),
                                          ("request_rate", "Requests per second", "reqps", "*")):
        sel = f'signal="{signal}", provider="{provider}"'
        d = d.with_panel(series(
            title, "Observed now, and the typical week's value for the same local hour.", unit,
            q(f"diurnal_observed{{{sel}}}", "this week", "A"), q(f"diurnal_typical{{{sel}}}", "typical week", "B"),
            w=6, h=7))
    return d


def controller() -> db.Dashboard:
    d = _base("diurnal-controller", "diurnal / Controller",
              "What diurnal decided and why: weights, thresholds, prewarm, reasons, mode, input freshness and "
              "forecast skill. Prewarm steps are annotations.")
    d = d.annotation(db.AnnotationQuery().name("Prewarm steps").datasource(DS).enable(True).icon_color("orange")
                     .expr("sum by (action, result) (increase(diurnal_prewarm_actions_total[2m])) > 0"))
    d = d.with_row(db.Row("State"))
    d = d.with_panel(single("Mode", "observe: recommends only; act: publishes.", "none",
                            q("diurnal_mode == 1", "{{mode}}", instant=True), w=4))
    d = d.with_panel(single("Router data age", "Age of the newest router data. Knobs return to their "
                            "baseline past guardrails.stale_after_seconds.", "s",
                            q("diurnal_data_age_seconds", "{{instance}}", instant=True), w=4))
    d = d.with_panel(single("Inputs stale", "1 while router data is missing or stale.", "none",
                            q("max(diurnal_inputs_stale)", "stale", instant=True), w=4))
    d = d.with_panel(single("In fallback", "Reasons that hold every knob at its baseline (1 = active).", "none",
                            q("diurnal_fallback", "{{reason}}", instant=True), w=6))
    d = d.with_panel(single("Trusted forecasts", "Forecast series that passed the skill gates, of all.", "none",
                            q("sum(diurnal_forecast_trusted)", "trusted", instant=True), w=3))
    d = d.with_panel(single("Forecast series", "Forecast series fitted.", "none",
                            q("count(diurnal_forecast_trusted)", "series", instant=True), w=3))
    d = d.with_row(db.Row("Knobs"))
    d = d.with_panel(series("Provider weights", "Published share per provider; dashed: recommended (observe "
                            "mode) and baseline.", "percentunit",
                            q('diurnal_provider_weight{kind="published"}', "{{provider}}", "A"),
                            q('diurnal_provider_weight{kind="recommended"}', "{{provider}} recommended", "B"),
                            q('diurnal_provider_weight{kind="baseline"}', "{{provider}} baseline", "C")))
    d = d.with_panel(series("Routing thresholds", "Escalation fractions and score thresholds.", "short",
                            q("diurnal_threshold", "{{knob}} {{kind}}")))
    d = d.with_panel(series("Prewarm in force", "Units in force per prewarm action.", "short",
                            q("diurnal_prewarm_units", "{{action}} {{kind}}")))
    d = d.with_panel(series("Prewarm planned", "Highest amount the plan asks for over the look-ahead window, per "
                            "action and target (the next step's time and amount are "
                            "diurnal_prewarm_next_step_timestamp_seconds and _units).", "short",
                            q("diurnal_prewarm_planned_units", "{{action}} -> {{target}}")))
    d = d.with_row(db.Row("Plan"))
    d = d.with_panel(series("Planned load against SLO capacity", "Requests per minute the plan sends each "
                            "provider now, against the SLO capacity it plans on (dashed) and the demand it plans "
                            "for.", "reqpm",
                            q("diurnal_planned_load_rpm", "{{provider}} planned", "A"),
                            q('diurnal_provider_capacity_rpm{source="plan"}', "{{provider}} capacity", "B"),
                            q("diurnal_planned_demand_rpm", "demand", "C")))
    d = d.with_panel(series("Expected cost per hour", "What the plan is expected to cost per hour now, against "
                            "the baseline weights at the same demand (USD).", "currencyUSD",
                            q("diurnal_planned_cost_per_hour", "{{weights}}")))
    d = d.with_row(db.Row("What acting would have changed"))
    d = d.with_panel(single("Acting would have saved", "The shadow report (GET /v1/report, hourly): over the last "
                            "7 days, the router's estimated cost less diurnal's had it acted on its own "
                            "recommendations (USD). Estimated from each provider's learned SLO capacity, not "
                            "measured.", "currencyUSD",
                            q("diurnal_replay_would_save_usd", "{{instance}}", instant=True), w=6))
    d = d.with_panel(series("Estimated cost per policy", "The shadow report's cost over the last 7 days per "
                            "policy: actual (what the router did), static (the baseline weights), reactive "
                            "(latency-based routing) and diurnal (its recommendations), in USD.", "currencyUSD",
                            q("diurnal_replay_cost_usd", "{{policy}}"), w=9))
    d = d.with_panel(series("Estimated SLO-risk time per policy", "The shadow report's time (whole minutes) over "
                            "the last 7 days with a provider loaded beyond its learned SLO capacity, per policy.",
                            "s", q("diurnal_replay_slo_risk_seconds", "{{policy}}"), w=9))
    d = d.with_row(db.Row("Why"))
    d = d.with_panel(series("Decisions by reason", "Reasons given on knobs, per second (recording rule).", "short",
                            q("diurnal:decision_reasons:rate5m", "{{knob}} {{reason}}"), w=24))
    d = d.with_panel(series("Forecast skill", "1 - MAE / MAE of seasonal naive; above 0 beats naive.", "short",
                            q("diurnal_forecast_skill", "{{signal}} {{provider}}")))
    d = d.with_panel(series("Control loop", "p99 of the control tick and of the refit (recording rules).", "s",
                            q("diurnal:control_tick_duration_seconds:p99_5m", "tick p99", "A"),
                            q("diurnal:refit_duration_seconds:p99_1h", "refit p99", "B")))
    d = d.with_panel(series("Scrapes", "Scrapes of the router per second, by result.", "ops",
                            q("sum by (result) (rate(diurnal_scrapes_total[5m]))", "{{result}}"), w=6))
    d = d.with_panel(series("Publishes", "Decision pushes per second, by publisher and result (none without a "
                            "publisher: routers then poll GET /v1/decision).", "ops",
                            q("sum by (publisher, result) (rate(diurnal_publishes_total[5m]))",
                              "{{publisher}} {{result}}"), w=6))
    d = d.with_panel(series("Decisions by mode", "Decisions per second, by mode.", "ops",
                            q("sum by (mode) (rate(diurnal_decisions_total[5m]))", "{{mode}}")))
    return d


def forecast() -> db.Dashboard:
    d = (_base("diurnal-forecast", "diurnal / Forecast",
               "Forecasts against what happened, with bands, and the backtest error of each candidate model.")
         .with_variable(label_variable("signal", "Signal", "label_values(diurnal_forecast, signal)"))
         .with_variable(label_variable("provider", "Provider",
                                       'label_values(diurnal_forecast{signal="$signal"}, provider)'))
         .with_variable(db.CustomVariable("horizon").label("Horizon").values("15m,1h,6h")))
    sel = f'{SEL}, horizon="$horizon"'
    d = d.with_row(db.Row("Forecast against actual"))
    d = d.with_panel(band(
        "What was forecast $horizon ago, against what happened",
        "The forecast in force $horizon before each instant, with its band, and the observed value.", "short",
        f"diurnal_observed{{{SEL}}}", f'diurnal_forecast_for_now{{{sel}, bound="mean"}}',
        f'diurnal_forecast_for_now{{{sel}, bound="lower"}}', f'diurnal_forecast_for_now{{{sel}, bound="upper"}}'))
    d = d.with_panel(band(
        "Forecast $horizon ahead", "The forecast now for $horizon ahead, with its band, beside the observed value.",
        "short", f"diurnal_observed{{{SEL}}}", f'diurnal_forecast{{{sel}, bound="mean"}}',
        f'diurnal_forecast{{{sel}, bound="lower"}}', f'diurnal_forecast{{{sel}, bound="upper"}}', w=12))
    d = d.with_panel(series(
        "Error of the 1-hour forecast", "|forecast made 1 h before - observed| (recording rule).", "short",
        q(f"diurnal:forecast_abs_error:1h{{{SEL}}}", "abs error"), w=12, h=9))
    d = d.with_row(db.Row("Backtest"))
    d = d.with_panel(series(
        "Backtest MAE per candidate model", "Mean absolute error of each candidate in the last backtest; the "
        "chosen model is in the panel beside.", "short",
        q(f"diurnal_forecast_backtest_mae{{{SEL}}}", "{{model}}")))
    d = d.with_panel(series(
        "Skill and seasonality gain", "Skill: 1 - MAE / MAE of seasonal naive. Gain: 1 - MAE / MAE of a flat "
        "forecast. The gates need both above their floors.", "short",
        q(f"diurnal_forecast_skill{{{SEL}}}", "skill", "A"),
        q(f"diurnal_forecast_seasonality_gain{{{SEL}}}", "seasonality gain", "B"), w=6))
    d = d.with_panel(single("Chosen model", "The model the backtest chose, and the history stage.", "none",
                            q(f"diurnal_forecast_model_info{{{SEL}}}", "{{model}} ({{stage}})", instant=True)))
    return d


DASHBOARDS = {"seasonality": seasonality, "hour-of-week": hour_of_week, "controller": controller,
              "forecast": forecast}


def render(runbook_base: str = RUNBOOK_BASE) -> dict[str, str]:
    """Every generated file, path relative to ``dashboards/`` -> content."""
    out: dict[str, str] = {}
    for name, build in DASHBOARDS.items():
        model: Any = build().build()
        for i, panel in enumerate(model.panels or [], start=1):  # stable ids, in layout order
            panel.id_val = i
        out[f"{name}.json"] = json.dumps(model, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
    out["rules/diurnal.rules.yml"] = (
        "# Generated by `python -m dashboards.generate`; edit dashboards/rules.py instead.\n"
        + yaml.safe_dump(rule_file(runbook_base), sort_keys=False, width=120))
    # The Helm chart ships the same files (Helm reads only files inside the chart).
    for rel in [r for r in out if r.endswith(".json")]:
        out[f"../helm/diurnal/files/dashboards/{rel}"] = out[rel]
    out["../helm/diurnal/files/rules/diurnal.rules.yml"] = out["rules/diurnal.rules.yml"]
    out["../helm/diurnal/values.schema.json"] = json.dumps(values_schema(), indent=2) + "\n"
    # The LiteLLM proxy hook, for the chart's ConfigMap (litellmHook.enabled).
    out["../helm/diurnal/files/litellm/diurnal_litellm.py"] = LITELLM_HOOK.read_text()
    out["../docs/settings.md"] = settings_reference()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.generate", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if the files on disk differ")
    parser.add_argument("--runbook-base", default=RUNBOOK_BASE, help="URL of the runbooks page")
    args = parser.parse_args(argv)
    stale = []
    for rel, content in render(args.runbook_base).items():
        path = HERE / rel
        current = path.read_text() if path.exists() else ""
        if current == content:
            continue
        if args.check:
            stale.append(rel)
            sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), content.splitlines(True),
                                                       f"a/dashboards/{rel}", f"b/dashboards/{rel}", n=1))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            print(f"wrote {path.resolve().relative_to(HERE.parent)}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run `python -m dashboards.generate`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
