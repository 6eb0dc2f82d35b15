"""Imports flow one way: controller -> policies, collectors. policies is pure."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_IN_POLICIES = {"collectors", "controller", "httpx", "prometheus_client", "sqlite3", "requests",
                         "urllib", "socket", "sim"}


def imported_modules(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_policies_import_no_io_and_no_other_package() -> None:
    bad = {f: sorted(n & FORBIDDEN_IN_POLICIES) for f, n in imported_modules("policies").items()
           if n & FORBIDDEN_IN_POLICIES}
    assert not bad, f"policies/ must stay pure; offending imports: {bad}"


def test_collectors_do_not_import_controller() -> None:
    bad = {f: sorted(n & {"controller", "sim"}) for f, n in imported_modules("collectors").items()
           if n & {"controller", "sim"}}
    assert not bad, f"collectors/ must not import controller/ or sim/: {bad}"


def test_layering_check_catches_a_violation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above must be able to fail: plant a bad import and see it found."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "bad.py").write_text("import sqlite3\nfrom collectors.store import Store\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    found = imported_modules("policies")
    assert found["policies/bad.py"] & FORBIDDEN_IN_POLICIES == {"sqlite3", "collectors"}


def test_public_embedding_api_exports() -> None:
    import controller

    for name in ("Controller", "Settings", "Decision", "load_settings", "ConfigError", "ExpositionError"):
        assert name in controller.__all__
        assert getattr(controller, name) is not None


def test_library_code_uses_the_opentelemetry_api_only() -> None:
    """The SDK is wired at the entry point (controller/tracing.py), never in library code."""
    bad = []
    for package in ("controller", "collectors", "policies"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "tracing.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                bad += [f"{path.relative_to(ROOT)}: {n}" for n in names
                        if n.startswith(("opentelemetry.sdk", "opentelemetry.exporter"))]
    assert not bad, bad
