"""``diurnal replay``: the walk (every minute, no look-ahead, the source untouched), the
estimate (actual is what was observed, extrapolation counted apart), the outputs and the
bad-input errors. A store filled from the simulated router over four days, scraped every
five minutes as a sidecar observing would."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from bench.closedloop import world
from collectors.store import Store
from controller.decide import policy_config
from controller.entrypoints.cli import main
from controller.errors import ConfigError
from controller.replay import replay
from controller.replay.estimate import estimate
from controller.settings import Settings
from policies import PolicyConfig
from sim.scenarios import POOL
from tests.conftest import sidecar_history

DAYS = 4


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Settings]:
    """A data dir with DAYS days of the simulated router (static weights), and its settings."""
    data_dir = tmp_path_factory.mktemp("replay-source")
    got = sidecar_history(data_dir, DAYS)
    got.ctl.close()
    return data_dir, got.scenario, got.settings


def _replay(settings: Settings, data_dir: Path, hours: float, end_back: float = 0.0, **kw: Any) -> Any:
    """The last ``hours`` before the scored start (less ``end_back`` hours)."""
    store = Store(data_dir, tz=settings.timezone, read_only=True)
    try:
        until = world("capacity-busy-1", 1).scored_start - timedelta(hours=end_back)
        return replay(settings, store, until - timedelta(hours=hours), until, **kw)
    finally:
        store.close()


def _digest(path: Path) -> str:
    return hashlib.sha256((path / "diurnal.db").read_bytes()).hexdigest()


def test_the_walk_steps_every_minute_in_act_mode_and_leaves_the_source_alone(history: Any) -> None:
    data_dir, _, settings = history
    before = _digest(data_dir)
    done = _replay(settings, data_dir, hours=2)
    w = done.walk
    assert w.walked == 120 and not w.interrupted
    assert (np.diff(w.minutes) == 60).all()
    for p in w.providers:
        assert np.isfinite(w.weights[p]).all()
        assert w.observed["requests"][p].sum() > 0
    total = sum(w.weights[p] for p in w.providers)
    assert np.allclose(total, 1.0, atol=1e-6)
    assert np.isfinite(w.units["pool"]).all()  # the pool's prewarm amount in force each minute
    assert _digest(data_dir) == before  # reading never changes the store


def test_no_look_ahead_a_longer_period_decides_its_first_minutes_the_same(history: Any) -> None:
    """Each minute's decision uses only what came before it: walking further on changes
    nothing already walked."""
    data_dir, _, settings = history
    short = _replay(settings, data_dir, hours=1, end_back=1)
    long = _replay(settings, data_dir, hours=2, end_back=0)
    for p in short.walk.providers:
        np.testing.assert_allclose(short.walk.weights[p], long.walk.weights[p][:60])
    np.testing.assert_allclose(short.walk.units["pool"], long.walk.units["pool"][:60])


def test_actual_is_what_was_observed_and_the_others_serve_the_same_demand(history: Any) -> None:
    data_dir, _, settings = history
    done = _replay(settings, data_dir, hours=2)
    w, est = done.walk, done.estimate
    actual = est.outcomes["actual"]
    seen = {p: w.observed["requests"][p].sum() for p in w.providers}
    for p in w.providers:
        assert actual.share[p] == pytest.approx(seen[p] / sum(seen.values()))
        assert actual.load[p].sum() == pytest.approx(seen[p])
    assert actual.errors_429 == pytest.approx(sum(w.observed["errors_429"][p].sum() for p in w.providers))
    for name in ("static", "reactive", "diurnal"):
        served = sum(est.outcomes[name].load[p] for p in w.providers)
        np.testing.assert_allclose(served, est.demand, rtol=1e-9, atol=1e-6)
        assert est.outcomes[name].cost_usd > 0
    band = actual.slo_risk_band
    assert band[0] <= actual.slo_risk_minutes <= band[1]


def test_a_split_beyond_anything_seen_is_extrapolated_not_measured(history: Any) -> None:
    data_dir, _, settings = history
    done = _replay(settings, data_dir, hours=2)
    w = done.walk
    for p in w.providers:  # ten times the demand, all of it on the pool, which never carried that much
        w.observed["requests"][p] *= 10
        w.weights[p][:] = 1.0 if p == POOL else 0.0
    config: PolicyConfig = policy_config(settings.policy, w.providers, {})
    got = estimate(w, done.estimate.models, config, tz=settings.timezone).outcomes["diurnal"]
    assert got.extrapolated_minutes == w.walked
    assert got.slo_risk_minutes == 0  # nothing measured is left: every minute is counted apart
    assert got.extrapolated_risk_minutes > 0  # and its units cannot carry it


def test_minutes_only_kept_as_hours_are_walked_from_the_rollups(history: Any, tmp_path: Path) -> None:
    data_dir, _, settings = history
    copy = tmp_path / "source"
    shutil.copytree(data_dir, copy)
    last_hour = int(world("capacity-busy-1", 1).scored_start.timestamp())
    with sqlite3.connect(copy / "diurnal.db") as db:  # the last hour's minutes expired
        for t in ("minute_counter", "minute_hist"):
            db.execute(f"DELETE FROM {t} WHERE ts >= ?", (last_hour - 3600,))
    done = _replay(settings.model_copy(update={"data_dir": copy}), copy, hours=2)
    assert done.walk.from_hours.sum() == 60
    assert any("hourly rollups" in c for c in done.estimate.caveats)
    assert done.estimate.outcomes["actual"].load[POOL][-60:].std() < 1e-9  # spread evenly over the hour


def _config_file(settings: Settings, path: Path, **change: Any) -> Path:
    doc = settings.model_dump(mode="json", exclude_defaults=True)
    doc.pop("data_dir", None)
    for key, value in change.items():
        doc["policy"]["providers"][key]["price"] = value
    path.write_text(yaml.safe_dump(doc))
    return path


def test_the_command_prints_a_row_per_policy_and_writes_json_and_html(history: Any, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    data_dir, scenario, settings = history
    config = _config_file(settings, tmp_path / "diurnal.yaml")
    since = (scenario.scored_start - timedelta(hours=3)).isoformat()
    until = (scenario.scored_start - timedelta(hours=1)).isoformat()
    code = main(["replay", "--config", str(config), "--data-dir", str(data_dir), "--since", since, "--until", until,
                 "--pool-units", str(scenario.static_replicas), "--json", str(tmp_path / "r.json"),
                 "--html", str(tmp_path / "r.html")])
    out = capsys.readouterr().out
    assert code == 0, out
    for name in ("actual", "static", "reactive", "diurnal"):
        assert any(line.startswith(name + " ") for line in out.splitlines()), out
    assert "120 minutes walked" in out
    doc = json.loads((tmp_path / "r.json").read_text())
    assert set(doc["policies"]) == {"actual", "static", "reactive", "diurnal"}
    assert doc["period"]["minutes"] == 120
    assert len(doc["providers"]["openai"]["slots"]) == 168
    assert {s["evidence"] for s in doc["providers"]["openai"]["slots"]} <= {
        "measured", "lower_bound", "upper_bound", "overall", "unknown"}
    page = (tmp_path / "r.html").read_text()
    assert page.count("<svg") >= 5  # demand, one per provider, spend, prewarm
    assert "<script" not in page and "src=" not in page  # readable without network access


def test_a_provider_without_a_price_is_a_caveat(history: Any, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    data_dir, scenario, settings = history
    config = _config_file(settings, tmp_path / "diurnal.yaml", anthropic=None)
    since = (scenario.scored_start - timedelta(hours=2)).isoformat()
    assert main(["replay", "--config", str(config), "--data-dir", str(data_dir), "--since", since]) == 0
    assert "provider 'anthropic' has no price" in capsys.readouterr().out


@pytest.mark.parametrize(("since", "until", "says"), [
    ("2020-01-01T00:00", "2020-01-02T00:00", "nothing to replay"),
    ("LATE", "LATER", "minutes long; give at least an hour"),
    ("LATE", "EARLY", "is not after --since"),
])
def test_bad_periods_get_one_line_and_exit_2(history: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             since: str, until: str, says: str) -> None:
    data_dir, scenario, settings = history
    config = _config_file(settings, tmp_path / "diurnal.yaml")
    at = {"LATE": scenario.scored_start - timedelta(minutes=30), "LATER": scenario.scored_start - timedelta(minutes=5),
          "EARLY": scenario.scored_start - timedelta(hours=5)}
    args = [at[v].isoformat() if v in at else v for v in (since, until)]
    code = main(["replay", "--config", str(config), "--data-dir", str(data_dir), "--since", args[0], "--until", args[1]])
    err = capsys.readouterr().err
    assert code == 2
    assert says in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_an_empty_store_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Store(tmp_path / "empty").close()
    code = main(["replay", "--data-dir", str(tmp_path / "empty"), "--since", "2026-11-02T00:00"])
    err = capsys.readouterr().err
    assert code == 2 and "is empty" in err and len(err.strip().splitlines()) == 1


def test_ctrl_c_leaves_a_partial_report(history: Any) -> None:
    data_dir, _, settings = history
    calls = []

    def interrupt(text: str) -> None:
        calls.append(text)
        if len(calls) == 1:
            raise KeyboardInterrupt

    done = _replay(settings, data_dir, hours=2, progress=interrupt)
    assert done.walk.interrupted and 1 <= done.walk.walked < 120
    assert done.estimate.outcomes["diurnal"].load[POOL].shape == (done.walk.walked,)


def test_a_store_in_another_zone_is_refused(history: Any) -> None:
    data_dir, _, settings = history
    other = settings.model_copy(update={"timezone": "Asia/Kolkata" if settings.timezone != "Asia/Kolkata" else "UTC"})
    store = Store(data_dir, tz=settings.timezone, read_only=True)
    try:
        with pytest.raises(ConfigError, match="rolled up in"):
            span = store.span()
            assert span is not None
            from datetime import UTC, datetime

            replay(other, store, datetime.fromtimestamp(span[0], UTC) + timedelta(days=3))
    finally:
        store.close()


def test_a_replay_killed_with_sigkill_leaves_no_scratch_dir_after_the_next(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A replay's scratch store goes in ``diurnal-replay-<pid>-*``: a process killed with
    SIGKILL cannot remove it, so the next replay removes every one whose process is gone, and
    never one whose process still runs (another replay) or another prefix's."""
    import os
    import signal
    import subprocess
    import sys
    import tempfile

    from controller.replay.scratch import scratch_dir
    from controller.replay.walk import SCRATCH_PREFIX

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    code = ("import sys, time\nfrom controller.replay.scratch import scratch_dir\n"
            f"with scratch_dir({SCRATCH_PREFIX!r}) as d:\n    (d / 'diurnal.db').write_bytes(b'x' * 4096)\n"
            "    print(d, flush=True)\n    time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert child.stdout is not None
    with child.stdout:
        left = Path(child.stdout.readline().strip())
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert left.is_dir() and left.parent == tmp_path and left.name.startswith(f"{SCRATCH_PREFIX}{child.pid}-")
    other = tmp_path / "diurnal-replay-source-1-abc"  # the fetched history's prefix: swept by its own replays
    other.mkdir()
    with scratch_dir(SCRATCH_PREFIX) as running:
        assert not left.exists()
        assert other.exists() and running.is_dir()
        with scratch_dir(SCRATCH_PREFIX) as second:  # a replay that runs keeps its directory
            assert running.is_dir() and second.is_dir()
    assert not running.exists()
