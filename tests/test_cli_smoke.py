"""Every ``diurnal`` subcommand as a newcomer first meets it: ``--help`` exits 0 with its usage,
and each runs once on the smallest real input with its exit code and one line of its output.
(The demo itself runs in the served-demo fixture, the bench in ``--quick`` in
``test_closedloop``, ``run`` against the simulated router in ``test_service``.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from controller.entrypoints.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
SUBCOMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]


def diurnal(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The console script when installed (as a user runs it), else the module."""
    script = shutil.which("diurnal", path=str(Path(sys.executable).parent))
    cmd = [script] if script else [sys.executable, "-m", "controller.entrypoints.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIURNAL_")}
    env["DIURNAL_DATA_DIR"] = str(cwd / "data")
    return subprocess.run([*cmd, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_the_subcommands_are_the_documented_ones() -> None:
    readme = (ROOT / "README.md").read_text()
    assert set(SUBCOMMANDS) == {"run", "demo", "backfill", "import-csv", "profile", "forecast", "explain", "bench",
                                "litellm-hook", "check-config", "replay"}
    for sub in SUBCOMMANDS:
        assert f"diurnal {sub}" in readme, f"the README never shows `diurnal {sub}`"


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_help_exits_0_with_the_usage(sub: str, tmp_path: Path) -> None:
    got = diurnal(sub, "--help", cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert got.stdout.startswith(f"usage: diurnal {sub}") and "--help" in got.stdout
    assert not got.stderr


def test_top_level_help_and_version(tmp_path: Path) -> None:
    got = diurnal("--help", cwd=tmp_path)
    assert got.returncode == 0 and all(sub in got.stdout for sub in SUBCOMMANDS)
    version = diurnal("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("diurnal ")
    bare = diurnal(cwd=tmp_path)
    assert bare.returncode == 2 and "the following arguments are required: command" in bare.stderr


@pytest.mark.parametrize(("args", "code", "stream", "line"), [
    pytest.param(["check-config", str(ROOT / "docs" / "diurnal.example.yaml")], 0, "stdout", "diurnal.example.yaml: OK",
                 id="check-config"),
    pytest.param(["litellm-hook"], 0, "stdout", "class DiurnalWeights", id="litellm-hook"),
    pytest.param(["explain"], 1, "stderr", "no decisions in", id="explain-no-audit-log"),
    pytest.param(["profile"], 1, "stderr", "no store in", id="profile-no-store"),
    pytest.param(["forecast"], 1, "stderr", "no store in", id="forecast-no-store"),
    pytest.param(["backfill"], 2, "stderr", "prometheus.url is not set", id="backfill-no-prometheus"),
    pytest.param(["replay", "--since", "2026-11-02"], 1, "stderr", "no store in", id="replay-no-store"),
    pytest.param(["import-csv", "missing.csv", "--time-column", "t", "--value-column", "v", "--signal", "s"], 2,
                 "stderr", "no such file: missing.csv", id="import-csv-missing"),
])
def test_each_subcommand_runs_on_the_smallest_input(args: list[str], code: int, stream: str, line: str,
                                                    tmp_path: Path) -> None:
    got = diurnal(*args, cwd=tmp_path)
    assert got.returncode == code, got.stdout + got.stderr
    assert line in getattr(got, stream)
    assert "Traceback" not in got.stderr
