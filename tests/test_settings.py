from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from controller.entrypoints.cli import main
from controller.errors import ConfigError
from controller.settings import load_settings


def test_defaults_are_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert s.api.host == "127.0.0.1"
    assert s.guardrails.mode == "observe"
    assert s.api.token is None


def test_env_prefix_and_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIURNAL_API__PORT", "9123")
    monkeypatch.setenv("DIURNAL_TIMEZONE", "Asia/Tokyo")
    s = load_settings()
    assert s.api.port == 9123
    assert s.timezone == "Asia/Tokyo"


def test_yaml_file_and_env_overrides_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "diurnal.yaml"
    f.write_text("timezone: Europe/London\napi:\n  port: 9001\n")
    monkeypatch.setenv("DIURNAL_API__PORT", "9002")
    s = load_settings(f)
    assert s.timezone == "Europe/London"
    assert s.api.port == 9002


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        pytest.param("timezone: Mars/Olympus\n", "timezone", id="unknown-timezone"),
        pytest.param("api:\n  port: 70000\n", "api.port", id="port-out-of-range"),
        pytest.param("guardrails:\n  mode: yolo\n", "guardrails.mode", id="bad-enum"),
        pytest.param("guardrails:\n  max_wieght_step: 0.1\n", "guardrails.max_wieght_step", id="typo-field"),
        pytest.param("policy:\n  providers:\n    a: {baseline_weight: 0.6}\n    b: {baseline_weight: 0.6}\n",
                     "policy", id="weights-not-summing-to-one"),
        pytest.param("policy:\n  providers:\n    a: {baseline_weight: 1.0, max_weight: 0.5}\n",
                     "policy.providers.a", id="baseline-above-max"),
        pytest.param("router:\n  scrape_interval_seconds: -1\n", "router.scrape_interval_seconds", id="negative-interval"),
        pytest.param("forecast:\n  exclude:\n    - {start: '2026-12-26T00:00Z', end: '2026-12-25T00:00Z'}\n",
                     "forecast.exclude.0", id="exclude-window-backwards"),
        pytest.param("forecast:\n  exclude:\n    - {start: '2026-12-25T00:00', end: '2026-12-26T00:00Z'}\n",
                     "forecast.exclude.0.start", id="exclude-window-naive"),
        pytest.param("forecast:\n  coverage: 1.5\n", "forecast.coverage", id="coverage-over-one"),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, yaml_text: str, field: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_settings(f)
    assert f"  {field}" in str(info.value)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        pytest.param("timezone: [unclosed\n", "not valid YAML", id="broken-yaml"),
        pytest.param("- a list\n", "mapping", id="not-a-mapping"),
    ],
)
def test_unreadable_config_is_a_clear_error(tmp_path: Path, content: str, needle: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(content)
    with pytest.raises(ConfigError, match=needle):
        load_settings(f)


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings("/nonexistent/diurnal.yaml")


def test_check_config_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("timezone: America/Chicago\npolicy:\n  providers:\n    a: {baseline_weight: 1}\n")
    assert main(["check-config", str(good)]) == 0
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("api:\n  prot: 1\n")
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "api.prot" in err and "unknown field" in err


def test_run_fails_at_start_on_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("control:\n  tick_interval_seconds: 0\n")
    proc = subprocess.run([sys.executable, "-m", "controller.entrypoints.cli", "run", "--config", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "control.tick_interval_seconds" in proc.stderr


def test_secrets_are_not_shown(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("api:\n  token: s3cret-token\n")
    s = load_settings(f)
    assert "s3cret" not in repr(s)
    assert s.api.token is not None and s.api.token.get_secret_value() == "s3cret-token"


def test_documented_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parent.parent / "docs" / "diurnal.example.yaml"
    s = load_settings(example)
    assert s.router.metrics_url == "http://127.0.0.1:4000/metrics"
    assert set(s.policy.providers) == {"openai", "anthropic", "azure"}
    assert s.guardrails.mode == "observe"
