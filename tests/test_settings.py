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
        pytest.param("router:\n  metrics_url: not a url\n", "router.metrics_url", id="router-url-not-a-url"),
        pytest.param("prometheus:\n  url: ftp://prom:9090\n", "prometheus.url", id="prometheus-url-not-http"),
        pytest.param("publish:\n  webhook:\n    url: 'http://'\n", "publish.webhook.url", id="webhook-url-no-host"),
        pytest.param("publish:\n  kubernetes:\n    api_url: 'https://k8s:port'\n", "publish.kubernetes.api_url",
                     id="kubernetes-url-bad-port"),
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
    assert s.router.metrics_url == "http://127.0.0.1:4000/metrics/"
    assert set(s.policy.providers) == {"openai", "anthropic", "azure"}
    assert s.guardrails.mode == "observe"


def _priced(price: str, tz: str = "America/New_York") -> str:
    return (f"timezone: {tz}\npolicy:\n  providers:\n    openai:\n      baseline_weight: 1.0\n"
            f"      price: {price}\n")


@pytest.mark.parametrize(
    ("yaml_text", "field", "needle"),
    [
        pytest.param(_priced("{input_per_million_tokens: -2.5}"), "policy.providers.openai.price.input_per_million_tokens",
                     "greater than or equal to 0", id="negative-price"),
        pytest.param(_priced("{output_per_million_tokens: .nan}"), "policy.providers.openai.price.output_per_million_tokens",
                     "finite", id="nan-price"),
        pytest.param(_priced("{per_request: .inf}"), "policy.providers.openai.price.per_request", "finite",
                     id="infinite-price"),
        pytest.param(_priced("{windows: []}"), "policy.providers.openai.price", "needs input_per_million_tokens",
                     id="price-without-a-price"),
        pytest.param(_priced("{per_request: 0.01, windows: [{start: '22:00', end: '06:00', factor: 0.5}, "
                             "{days: [sun], start: '05:00', end: '08:00', factor: 0.8}]}"),
                     "policy.providers.openai.price", "windows[0] and windows[1] overlap from sun 05:00",
                     id="overlapping-windows-across-midnight"),
        pytest.param(_priced("{per_request: 0.01, windows: [{days: [sun], start: '23:00', end: '02:00', factor: 0.5}, "
                             "{days: [mon], start: '01:00', end: '03:00', factor: 0.8}]}"),
                     "policy.providers.openai.price", "overlap from mon 01:00", id="overlap-across-the-week-end"),
        pytest.param(_priced("{per_request: 0.01, windows: [{start: '02:30', end: '05:00', factor: 0.5}]}"),
                     "policy.providers.openai.price.windows.0", "start 02:30 does not exist in America/New_York",
                     id="window-in-the-dst-gap"),
        pytest.param(_priced("{per_request: 0.01, windows: [{days: [sat, sun], start: '00:00', end: '00:00', "
                             "factor: 0.5}, {days: [sun], start: '23:00', end: '01:00', factor: 0.9}]}"),
                     "policy.providers.openai.price", "overlap from sun 23:00", id="whole-day-windows-overlap"),
        pytest.param(_priced("{per_request: 0.01, windows: [{days: [mon, mon], start: '01:00', end: '03:00', "
                             "factor: 0.5}]}"),
                     "policy.providers.openai.price.windows.0", "listed twice", id="a-day-twice"),
        pytest.param(_priced("{per_request: 0.01, windows: [{start: '01:00', end: '02:00', factor: 0}]}"),
                     "policy.providers.openai.price.windows.0.factor", "greater than 0", id="zero-factor"),
        pytest.param("policy:\n  prewarm:\n    - {name: vllm, kind: replicas, target: llm/vllm, rpm_per_unit: 50, "
                     "unit_price_per_hour: -1}\n", "policy.prewarm.0.unit_price_per_hour", "greater than or equal to 0",
                     id="negative-replica-price"),
    ],
)
def test_bad_prices_name_the_field(tmp_path: Path, yaml_text: str, field: str, needle: str) -> None:
    path = tmp_path / "diurnal.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert field in str(err.value) and needle in str(err.value), str(err.value)


def test_prices_and_windows_that_fit_load() -> None:
    s = load_settings(timezone="Europe/London", policy={"providers": {"a": {"baseline_weight": 1.0, "price": {
        "input_per_million_tokens": 2.5, "output_per_million_tokens": 10,
        "windows": [{"days": ["sat", "sun"], "start": "08:00", "end": "07:59", "factor": 0.5},
                    {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "22:00", "end": "06:00", "factor": 0.7}]}}}})
    price = s.policy.providers["a"].price
    assert price is not None and [w.factor for w in price.windows] == [0.5, 0.7]
    # In London the clocks jump from 01:00 to 02:00 on the last Sunday of March: a window
    # starting at 01:30 is refused, one starting at 02:00 is not.
    with pytest.raises(ConfigError, match="start 01:30 does not exist in Europe/London"):
        load_settings(timezone="Europe/London", policy={"providers": {"a": {"baseline_weight": 1.0, "price": {
            "per_request": 0.01, "windows": [{"start": "01:30", "end": "04:00", "factor": 0.5}]}}}})
    load_settings(timezone="Europe/London", policy={"providers": {"a": {"baseline_weight": 1.0, "price": {
        "per_request": 0.01, "windows": [{"start": "02:00", "end": "04:00", "factor": 0.5}]}}}})


def test_a_bad_url_is_refused_without_repeating_it(tmp_path: Path) -> None:
    """The value may hold a password: the error names the field, never the value."""
    f = tmp_path / "bad.yaml"
    f.write_text("router:\n  metrics_url: 'gopher://admin:hunter2@router:4000/metrics'\n")
    with pytest.raises(ConfigError) as info:
        load_settings(f)
    assert "router.metrics_url" in str(info.value) and "hunter2" not in str(info.value)
    ok = load_settings(data_dir=tmp_path, router={"metrics_url": "https://user:pw@router.internal:4000/metrics"})
    assert ok.router.metrics_url == "https://user:pw@router.internal:4000/metrics"


@pytest.mark.parametrize(("yaml_text", "field", "secret"), [
    pytest.param("api:\n  token: 867530912345\n", "api.token", "867530912345", id="numeric-token"),
    pytest.param("prometheus:\n  basic_auth_password: 271828182845\n", "prometheus.basic_auth_password",
                 "271828182845", id="numeric-password"),
    pytest.param("publish:\n  webhook:\n    bearer_token: [s3cr3t-in-a-list]\n", "publish.webhook.bearer_token",
                 "s3cr3t-in-a-list", id="token-of-the-wrong-type"),
])
def test_a_secret_is_never_echoed_by_a_validation_error(tmp_path: Path, yaml_text: str, field: str,
                                                        secret: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_settings(f)
    assert field in str(info.value) and secret not in str(info.value) and "not shown" in str(info.value)


def test_redact_masks_url_credentials_and_secret_query_values_idempotently() -> None:
    from collectors.redact import redact

    text = "cannot reach https://bob:hunter22@prom.example/api?token=t0k3n&step=60&X-Amz-Signature=abc: refused"
    once = redact(text)
    assert once == "cannot reach https://***@prom.example/api?token=***&step=60&X-Amz-Signature=***: refused"
    assert redact(once) == once
    assert redact("plain http://host:9090/metrics stays") == "plain http://host:9090/metrics stays"


def test_the_log_filter_masks_configured_secrets_in_messages_and_tracebacks(tmp_path: Path) -> None:
    import logging

    from collectors.redact import RedactingFilter
    from controller.settings import secret_values

    s = load_settings(None, data_dir=tmp_path, api={"token": "tok-123456"},
                      router={"metrics_url": "http://u:urlpass-99@r/metrics"},
                      tracing={"otlp_headers": {"x-api-key": "hdr-abcdef"}})
    assert {"tok-123456", "urlpass-99", "hdr-abcdef"} <= set(secret_values(s))
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    handler.addFilter(RedactingFilter(secret_values(s)))
    logger = logging.getLogger("test.redact")
    logger.addHandler(handler)
    try:
        logger.warning("token %s sent to %s", "tok-123456", "http://u:urlpass-99@r/metrics")
        try:
            raise RuntimeError("header hdr-abcdef refused")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    joined = "\n".join(records)
    assert "RuntimeError" in joined and "***" in joined
    for secret in ("tok-123456", "urlpass-99", "hdr-abcdef"):
        assert secret not in joined
