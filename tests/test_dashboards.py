"""Dashboards and rules: generated files match the generator, they validate against
Grafana 11.6's JSON schemas and the SDK's models, and every rule passes promtool."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards.generate import DASHBOARDS, HERE, RULES, main, render
from dashboards.rules import alerting_rules
from tests.conftest import need, need_binary

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT.parent / "shared" / "schemas" / "grafana-11.6"
DOCS = ROOT / "docs" / "runbooks.md"


def dashboards() -> dict[str, dict[str, Any]]:
    return {name: json.loads((HERE / f"{name}.json").read_text()) for name in DASHBOARDS}


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"] if p["type"] != "row"]


def test_committed_files_are_what_the_generator_writes(capsys: pytest.CaptureFixture[str]) -> None:
    for rel, content in render().items():
        assert (HERE / rel).read_text() == content, f"dashboards/{rel} is stale: run python -m dashboards.generate"
    assert main(["--check"]) == 0


def test_a_hand_edit_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    for rel, content in render().items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(content)
    board = tmp_path / "controller.json"
    board.write_text(board.read_text().replace("Provider weights", "Provider weight"))
    monkeypatch.setattr("dashboards.generate.HERE", tmp_path)
    assert main(["--check"]) == 1
    out = capsys.readouterr()
    assert "-      \"title\": \"Provider weight\"" in out.out and "controller.json" in out.err


def test_uids_and_panel_ids_are_stable_and_unique() -> None:
    boards = dashboards()
    uids = [b["uid"] for b in boards.values()]
    assert uids == ["diurnal-seasonality", "diurnal-hour-of-week", "diurnal-controller", "diurnal-forecast"]
    for board in boards.values():
        ids = [p["id"] for p in board["panels"]]
        assert ids == list(range(1, len(ids) + 1))
        assert all(p.get("description") for p in panels(board)), "every panel says what it shows"


# ---- Grafana 11.6 JSON schemas ------------------------------------------------------------

def _schemas() -> Path:
    need(SCHEMAS.is_dir(), f"Grafana schemas not found at {SCHEMAS} (../shared beside the checkout)")
    return SCHEMAS


#: Fields that Grafana's model types as "anything" (CUE ``_``; the SDK's ``typing.Optional[object]``)
#: and the JSON-schema export renders as ``object``. Grafana itself writes strings and numbers
#: there: a byName matcher's options is the field name, an override's value may be 20 or "lower".
ANY_VALUE = {"MatcherConfig": "options", "DynamicConfigValue": "value"}


def _validator(file: str, definition: str) -> Any:
    from jsonschema import Draft7Validator

    root = json.loads((_schemas() / file).read_text())
    for name, prop in ANY_VALUE.items():
        if name in root.get("definitions", {}):
            root["definitions"][name]["properties"][prop] = {}
    return Draft7Validator({**root, "$ref": f"#/definitions/{definition}"})


def _errors(validator: Any, doc: Any, where: str) -> list[str]:
    return [f"{where}/{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


@pytest.mark.parametrize("name", list(DASHBOARDS))
def test_dashboard_validates_against_grafana_11_6_schemas(name: str) -> None:
    board = dashboards()[name]
    errors = _errors(_validator("dashboard.jsonschema.json", "Dashboard"), {**board, "panels": []}, name)
    panel_schema = _validator("dashboard.jsonschema.json", "Panel")
    row_schema = _validator("dashboard.jsonschema.json", "RowPanel")
    query_schema = _validator("prometheus.jsonschema.json", "dataquery")
    for panel in board["panels"]:
        where = f"{name}/{panel['title']}"
        if panel["type"] == "row":
            errors += _errors(row_schema, panel, where)
            continue
        errors += _errors(panel_schema, panel, where)
        errors += _errors(_validator(f"{panel['type']}.jsonschema.json", "Options"), panel.get("options", {}),
                          where + "/options")
        custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom")
        if custom is not None:
            errors += _errors(_validator(f"{panel['type']}.jsonschema.json", "FieldConfig"), custom,
                              where + "/fieldConfig")
        for target in panel["targets"]:
            errors += _errors(query_schema, target, where + "/target")
    assert not errors, "\n".join(errors)


def test_the_schema_check_rejects_a_broken_panel() -> None:
    board = dashboards()["controller"]
    bad = dict(panels(board)[0], gridPos={"h": "tall", "w": 4, "x": 0, "y": 0})
    assert _errors(_validator("dashboard.jsonschema.json", "Panel"), bad, "bad")
    bad_target = {**panels(board)[0]["targets"][0], "format": "matrix"}
    assert _errors(_validator("prometheus.jsonschema.json", "dataquery"), bad_target, "bad")


@pytest.mark.parametrize("name", list(DASHBOARDS))
def test_dashboard_round_trips_through_the_sdk_models(name: str) -> None:
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import Dashboard

    board = dashboards()[name]
    model = Dashboard.from_json(board)
    again = json.loads(json.dumps(model, cls=JSONEncoder))
    # from_json drops what it does not know: nothing may be lost on the way through.
    assert again == board


def test_variables_and_queries_use_the_datasource_variable() -> None:
    for name, board in dashboards().items():
        names = [v["name"] for v in board["templating"]["list"]]
        assert names[0] == "datasource", name
        for panel in panels(board):
            for target in panel["targets"]:
                assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    seasonality = dashboards()["seasonality"]
    assert [v["name"] for v in seasonality["templating"]["list"]] == ["datasource", "signal", "provider"]
    titles = [p["title"] for p in panels(seasonality)]
    assert titles[-4:] == ["Trend", "Daily", "Weekly", "Residual"]


# ---- rules --------------------------------------------------------------------------------

def test_every_alert_has_severity_summary_description_and_a_documented_runbook() -> None:
    docs = DOCS.read_text()
    for rule in alerting_rules():
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
        ann = rule["annotations"]
        assert ann["summary"] and len(ann["description"]) > 40
        anchor = ann["runbook_url"].rsplit("#", 1)[1]
        assert f"## {rule['alert']}" in docs and anchor == rule["alert"].lower(), rule["alert"]


def test_rules_pass_promtool_check() -> None:
    promtool = need_binary("promtool")
    out = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in yaml.safe_load(RULES.read_text())['groups'])} rules" in out.stdout


def test_promtool_unit_tests_cover_every_alert_firing_and_not() -> None:
    promtool = need_binary("promtool")
    tests = HERE / "rules" / "diurnal.rules.test.yml"
    spec = yaml.safe_load(tests.read_text())
    assert spec["rule_files"] == ["diurnal.rules.yml"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in spec["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    every = {r["alert"] for r in alerting_rules()}
    assert fired == every and quiet == every, (every - fired, every - quiet)
    out = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True, text=True, check=False,
                         cwd=tests.parent)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout
