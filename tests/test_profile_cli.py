"""`diurnal import-csv` and `diurnal profile`, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from controller.entrypoints.cli import main
from tests.conftest import need_real_data

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def write_csv(path: Path) -> None:
    """Four weeks, naive New York local time, peak Monday 09:00, across the 2026-11-01 change."""
    idx = pd.date_range("2026-10-19", "2026-11-16", freq="30min", inclusive="left")
    values = 100 + 50 * ((idx.day_of_week == 0) & (idx.hour == 9)) + 10 * (idx.hour >= 8) * (idx.hour < 18)
    pd.DataFrame({"when": idx.strftime("%Y-%m-%d %H:%M:%S"), "load": values}).to_csv(path, index=False)


def test_import_then_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIURNAL_DATA_DIR", str(tmp_path / "store"))
    monkeypatch.setenv("DIURNAL_TIMEZONE", "America/New_York")
    csv = tmp_path / "load.csv"
    write_csv(csv)
    assert main(["import-csv", str(csv), "--time-column", "when", "--value-column", "load", "--signal", "load"]) == 0
    assert "imported 1344 points" in capsys.readouterr().out
    png = tmp_path / "p.png"
    assert main(["profile", "--signal", "load", "--weeks", "4", "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "Mon 09–10 load +" in out and "4 weeks" in out
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["profile", "--signal", "load", "--weeks", "4", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["tz"] == "America/New_York" and len(doc["cells"]) == 168
    best = max(doc["cells"], key=lambda c: c["median"] or 0)
    assert (best["weekday"], best["hour"], best["weeks"]) == ("Mon", 9, 4)


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        pytest.param(["--time-column", "nope", "--value-column", "load", "--signal", "x"], 2, "columns are", id="bad-column"),
        pytest.param(["--time-column", "when", "--value-column", "load", "--signal", "requests"], 2, "router signal",
                     id="reserved-name"),
    ],
)
def test_import_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                 args: list[str], code: int, needle: str) -> None:
    monkeypatch.setenv("DIURNAL_DATA_DIR", str(tmp_path / "store"))
    csv = tmp_path / "load.csv"
    write_csv(csv)
    assert main(["import-csv", str(csv), *args]) == code
    assert needle in capsys.readouterr().err


def test_profile_of_an_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from collectors.store import Store

    Store(tmp_path / "empty").close()
    monkeypatch.setenv("DIURNAL_DATA_DIR", str(tmp_path / "empty"))
    assert main(["profile"]) == 1
    assert "empty" in capsys.readouterr().err


def test_taylor_weekday_peak_is_at_eleven_london(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    need_real_data(REAL / "taylor_30_min.csv")
    monkeypatch.setenv("DIURNAL_DATA_DIR", str(tmp_path / "store"))
    assert main(["import-csv", str(REAL / "taylor_30_min.csv"), "--time-column", "date", "--value-column", "value",
                 "--signal", "demand", "--timezone", "Europe/London", "--ignore-offset"]) == 0
    capsys.readouterr()
    assert main(["profile", "--signal", "demand", "--timezone", "Europe/London", "--weeks", "12", "--json"]) == 0
    cells = json.loads(capsys.readouterr().out)["cells"]
    monday = [c for c in cells if c["weekday"] == "Mon"]
    assert max(monday, key=lambda c: c["median"])["hour"] == 11
    sunday_max = max(c["median"] for c in cells if c["weekday"] == "Sun")
    assert max(c["median"] for c in monday) > 1.2 * sunday_max
    assert np.isfinite([c["median"] for c in cells]).all()


def test_import_then_forecast(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIURNAL_TIMEZONE", "America/New_York")
    store = ["--data-dir", str(tmp_path / "store")]  # the flag the demo prints, on every command
    csv = tmp_path / "load.csv"
    write_csv(csv)
    assert main(["import-csv", str(csv), "--time-column", "when", "--value-column", "load", "--signal", "load", *store]) == 0
    capsys.readouterr()
    assert main(["forecast", "--signal", "load", "--provider", "imported", *store]) == 0
    out = capsys.readouterr().out
    assert "ForecastTrusted" in out and "28.0 days of history" in out and "load in its own unit" in out
    assert main(["profile", "--signal", "load", "--weeks", "4", *store]) == 0
    assert "Mon 09–10 load +" in capsys.readouterr().out
    assert main(["forecast", "--signal", "load", "--provider", "imported", "--json", *store]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["stage"] == "weekly" and doc["gate"] == "ForecastTrusted" and len(doc["points"]) == 24
    peak = max(doc["points"], key=lambda p: p["mean"])
    local = pd.Timestamp(peak["at"]).tz_convert("America/New_York")
    assert (local.day_name(), local.hour) == ("Monday", 9)  # after the 2026-11-01 change, still 09:00
    assert main(["forecast", "--signal", "nope", *store]) == 2
    assert "no signal 'nope'" in capsys.readouterr().err
