"""Bad input to the ``diurnal`` command gets one line saying what and where, and exit code 2,
never a traceback; commands that only read never create or change a store (issue 30)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from controller.entrypoints.cli import main

ROOT = Path(__file__).resolve().parents[1]


def diurnal(args: list[str], tmp: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command, as a user runs it (a fresh process: environment and exit code as they are)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("DIURNAL_")}
    full.update({"DIURNAL_DATA_DIR": str(tmp / "store"), **(env or {})})
    return subprocess.run([sys.executable, "-m", "controller.entrypoints.cli", *args], cwd=tmp, env=full,
                          capture_output=True, text=True, timeout=120, check=False)


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(("args", "needle"), [
    pytest.param(["profile", "--timezone", "Mars/Olympus"], "unknown IANA timezone 'Mars/Olympus'", id="profile-tz"),
    pytest.param(["import-csv", "x.csv", "--time-column", "t", "--value-column", "v", "--signal", "s",
                  "--timezone", "Nowhere/City"], "argument --timezone: unknown IANA timezone", id="import-tz"),
    pytest.param(["forecast", "--hours", "0"], "argument --hours: 0 must be more than 0", id="forecast-hours"),
    pytest.param(["explain", "--at", "yesterday"], "argument --at: 'yesterday' is not an ISO 8601 time", id="explain-at"),
    pytest.param(["backfill", "--weeks", "0"], "argument --weeks: 0 must be more than 0", id="backfill-weeks"),
    pytest.param(["demo", "--weeks", "0"], "argument --weeks: 0 is too small: at least 2", id="demo-weeks"),
    pytest.param(["profile", "--png", "/no/such/dir/p.png"], "the directory /no/such/dir does not exist", id="png-dir"),
    pytest.param(["litellm-hook", "-o", "/no/such/dir/hook.py"], "the directory /no/such/dir does not exist",
                 id="hook-dir"),
    pytest.param(["forecast", "--hours", "many"], "'many' is not a whole number", id="not-a-number"),
])
def test_bad_arguments_get_one_line_and_exit_2(args: list[str], needle: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    line = one_line(capsys.readouterr().err)
    assert needle in line and f"diurnal {args[0]}" in line


def test_a_bad_json_environment_variable_is_named_in_one_line(tmp_path: Path) -> None:
    got = diurnal(["check-config", str(ROOT / "docs" / "diurnal.example.yaml")], tmp_path,
                  {"DIURNAL_ROUTER__MODEL_PROVIDERS": "{bad json"})
    assert got.returncode == 2, got.stderr
    line = one_line(got.stderr)
    assert "environment variable for router" in line and "valid JSON" in line


@pytest.mark.parametrize(("content", "needle"), [
    pytest.param(b"", "is empty", id="empty"),
    pytest.param(bytes(range(256)) * 4, "is not a text CSV file", id="binary"),
])
def test_an_empty_or_binary_csv_gets_one_line_and_exit_2(content: bytes, needle: str, tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_bytes(content)
    got = diurnal(["import-csv", "in.csv", "--time-column", "t", "--value-column", "v", "--signal", "s"], tmp_path)
    assert got.returncode == 2 and needle in one_line(got.stderr)


def test_import_csv_names_the_rows_it_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("DIURNAL_DATA_DIR", str(tmp_path / "store"))
    csv = tmp_path / "in.csv"
    csv.write_text("t,v\n2026-01-01T00:00:00Z,1\nnot a time,2\n2026-01-01T01:00:00Z,n/a\n2026-01-01T02:00:00Z,3\n")
    assert main(["import-csv", str(csv), "--time-column", "t", "--value-column", "v", "--signal", "s"]) == 0
    assert "imported 2 points (4 rows)" in capsys.readouterr().out
    assert "skipped 2 row(s)" in caplog.text and "line 3, 4" in caplog.text


@pytest.mark.parametrize(("yaml_text", "needle"), [
    pytest.param("policy:\n  providers:\n    a: {baseline_weight: yes}\n",
                 "policy.providers.a.baseline_weight: Value error, a number is needed, not the boolean True",
                 id="yes-is-not-1"),
    pytest.param("timezone: UTC\nlog_level: INFO\ntimezone: Europe/Berlin\n",
                 "found the key 'timezone' twice (first on line 1) (line 3, column 1)", id="duplicate-key"),
])
def test_settings_that_yaml_would_read_silently_are_refused(yaml_text: str, needle: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "diurnal.yaml"
    path.write_text(yaml_text)
    assert main(["check-config", str(path)]) == 2
    assert needle in capsys.readouterr().err


def test_check_config_on_a_directory_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path)]) == 2
    assert "is a directory" in one_line(capsys.readouterr().err)


def stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Path:
    """A store with four weeks of an imported hourly series, in New York hours."""
    store = tmp_path / "store"
    monkeypatch.setenv("DIURNAL_DATA_DIR", str(store))
    monkeypatch.setenv("DIURNAL_TIMEZONE", "America/New_York")
    idx = pd.date_range("2026-10-19", periods=28 * 24, freq="h", tz="UTC")
    csv = tmp_path / "load.csv"
    pd.DataFrame({"t": idx.strftime("%Y-%m-%dT%H:%M:%SZ"), "v": 100 + (idx.hour == 14) * 50}).to_csv(csv, index=False)
    assert main(["import-csv", str(csv), "--time-column", "t", "--value-column", "v", "--signal", "load"]) == 0
    capsys.readouterr()
    return store


def snapshot(store: Path) -> tuple[bytes, list[tuple[str, str]]]:
    db = store / "diurnal.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        meta = sorted(conn.execute("SELECT key, value FROM meta").fetchall())
    return db.read_bytes(), meta


def test_reading_never_creates_or_changes_a_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    store = stored(tmp_path, monkeypatch, capsys)
    before = snapshot(store)
    # Another timezone a whole number of hours away: the same hours, labelled in that zone.
    assert main(["profile", "--signal", "load", "--timezone", "Europe/Berlin", "--json"]) == 0
    assert '"tz": "Europe/Berlin"' in capsys.readouterr().out
    assert main(["forecast", "--signal", "load", "--provider", "imported", "--hours", "3"]) == 0
    capsys.readouterr()
    # A zone whose hours start at other instants would need the rollups rebuilt: refused.
    assert main(["profile", "--signal", "load", "--timezone", "Asia/Kolkata"]) == 2
    assert "reading never rebuilds them" in one_line(capsys.readouterr().err)
    assert snapshot(store) == before
    # A signal it does not have: the ones it has are listed.
    assert main(["profile", "--signal", "latncy"]) == 2
    err = one_line(capsys.readouterr().err)
    assert "no signal 'latncy'" in err and "latency_p95" in err and "load" in err
    # A data dir with no store: nothing is created there.
    fresh = tmp_path / "nothing-here"
    assert main(["forecast", "--data-dir", str(fresh)]) == 1
    assert "no store in" in capsys.readouterr().err and not fresh.exists()


def test_json_logs_are_one_object_per_line_with_secrets_masked(tmp_path: Path) -> None:
    script = (
        "import logging\n"
        "from controller.entrypoints.cli import _logging\n"
        "from controller.settings import load_settings\n"
        "s = load_settings(log_format='json', router={'bearer_token': 'sekrit-router-token'})\n"
        "_logging('INFO', s)\n"
        "logging.getLogger('diurnal').warning('router answered 401 with token %s', 'sekrit-router-token')\n"
        "try:\n    1 / 0\nexcept ZeroDivisionError:\n    logging.getLogger('diurnal').exception('a failure')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIURNAL_")}
    got = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60, check=True)
    import json

    records = [json.loads(line) for line in got.stderr.splitlines()]
    assert [r["level"] for r in records] == ["WARNING", "ERROR"]
    assert records[0]["logger"] == "diurnal" and "sekrit" not in got.stderr and "401" in records[0]["message"]
    assert "ZeroDivisionError" in records[1]["exc_info"] and records[0]["ts"].endswith("+00:00")


def test_the_settings_reference_names_every_setting() -> None:
    from controller.settings import Settings
    from dashboards.settings_reference import settings_reference

    doc = settings_reference()
    for group, model in Settings.model_fields.items():
        annotation = model.annotation
        fields = getattr(annotation, "model_fields", None)
        for name in fields or {group: None}:
            assert (f"`{group}.{name}`" if fields else f"`{group}`") in doc, (group, name)
    assert "`DIURNAL_POLICY__CAPACITY_HEADROOM`" in doc and "`policy.providers.<name>.baseline_weight`" in doc
    assert (ROOT / "docs" / "settings.md").read_text() == doc  # committed as generated
