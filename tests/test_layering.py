"""The layering: imports flow one way (controller -> policies, collectors), policies are pure
and read no clock, the loop imports no entry point, there are no import cycles, every
package says what it exports, and reason codes are typed everywhere."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("controller", "collectors", "policies")
FORBIDDEN_IN_POLICIES = {"collectors", "controller", "httpx", "prometheus_client", "sqlite3", "requests",
                         "urllib", "socket", "sim", "bench", "time"}
#: Calls that read the wall clock. Durations (time.perf_counter, time.monotonic) are not clocks.
WALL_CLOCK = {("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"), ("date", "today"),
              ("time", "time"), ("time", "time_ns")}


def _modules(package: str, root: Path | None = None) -> list[Path]:
    return sorted(((root or ROOT) / package).rglob("*.py"))


def _name(path: Path, root: Path | None = None) -> str:
    rel = path.relative_to(root or ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """Absolute module names imported by ``path``; with ``top_level_only``, not those imported
    inside a function (lazily)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    lazy: set[int] = set()
    if top_level_only:
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                lazy.update(id(n) for n in ast.walk(fn) if n is not fn)
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in lazy:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def imported_modules(package: str) -> dict[str, set[str]]:
    """Top-level package names each file of ``package`` imports (anywhere in the file)."""
    return {str(p.relative_to(ROOT)): {n.split(".")[0] for n in _imports(p)} for p in _modules(package)}


def test_policies_import_no_io_and_no_other_package() -> None:
    bad = {f: sorted(n & FORBIDDEN_IN_POLICIES) for f, n in imported_modules("policies").items()
           if n & FORBIDDEN_IN_POLICIES}
    assert not bad, f"policies/ must stay pure; offending imports: {bad}"


def wall_clock_calls(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and (node.func.value.id, node.func.attr) in WALL_CLOCK):
            out.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.func.value.id}.{node.func.attr}()")
    return out


def test_policies_call_no_wall_clock() -> None:
    assert [c for p in _modules("policies") for c in wall_clock_calls(p)] == []


def test_only_the_default_clock_reads_the_wall_clock() -> None:
    """One clock: the API, the telemetry, the service and the stages read the injected clock;
    only the loop's default clock calls datetime.now."""
    found = [c for pkg in PACKAGES for p in _modules(pkg) for c in wall_clock_calls(p)]
    assert [c.split(":")[0] for c in found] == ["controller/loop.py"], found


def test_collectors_do_not_import_controller() -> None:
    bad = {f: sorted(n & {"controller", "sim", "bench"}) for f, n in imported_modules("collectors").items()
           if n & {"controller", "sim", "bench"}}
    assert not bad, f"collectors/ must not import controller/, sim/ or bench/: {bad}"


def test_the_loop_imports_no_entry_point() -> None:
    loop = [p for p in _modules("controller") if "entrypoints" not in p.parts]
    bad = {str(p.relative_to(ROOT)): sorted(n for n in _imports(p) if n.startswith("controller.entrypoints"))
           for p in loop}
    assert not {k: v for k, v in bad.items() if v}


def test_controller_imports_sim_and_bench_only_from_the_demo_and_bench_commands() -> None:
    """``diurnal demo`` (its module is imported lazily by the CLI) may use the simulated
    router; ``diurnal bench`` imports the benchmark inside its command. Nothing else in
    controller/ loads them."""
    offenders = []
    for p in _modules("controller"):
        rel = str(p.relative_to(ROOT))
        top = {n for n in _imports(p, top_level_only=True) if n.split(".")[0] in ("sim", "bench")}
        anywhere = {n for n in _imports(p) if n.split(".")[0] in ("sim", "bench")}
        if rel == "controller/entrypoints/demo.py":
            continue
        if top or (anywhere and rel != "controller/entrypoints/cli.py"):
            offenders.append((rel, sorted(anywhere)))
        demo_top = {n for n in _imports(p, top_level_only=True) if n.startswith("controller.entrypoints.demo")}
        if demo_top:
            offenders.append((rel, sorted(demo_top)))
    assert offenders == []


def _graph(root: Path) -> dict[str, set[str]]:
    """Module -> the project modules it imports at module level (TYPE_CHECKING blocks
    included; imports inside functions are lazy and left out)."""
    files = {_name(p, root): p for pkg in PACKAGES for p in _modules(pkg, root)}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        edges = set()
        for n in _imports(path, top_level_only=True):
            # ``from a.b import c``: c is a module when a/b/c.py exists, else a name in a.b.
            target = n if n in files else n.rsplit(".", 1)[0] if "." in n else n
            if target in files and target != mod:
                edges.add(target)
        graph[mod] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_there_are_no_import_cycles() -> None:
    assert _cycles(_graph(ROOT)) == []


def test_the_cycle_check_finds_a_cycle(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                               "    from policies.b import B\n")
    (tmp_path / "policies" / "b.py").write_text("from policies.a import A\n")
    (tmp_path / "controller").mkdir()
    (tmp_path / "collectors").mkdir()
    assert _cycles(_graph(tmp_path)) == [["policies.a", "policies.b"]]


def test_layering_check_catches_a_violation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks above must be able to fail: plant bad imports and a clock and see them found."""
    (tmp_path / "policies").mkdir()
    bad = tmp_path / "policies" / "bad.py"
    bad.write_text("import sqlite3\nfrom collectors.store import Store\nfrom datetime import datetime\n"
                   "def f():\n    return datetime.now()\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    found = imported_modules("policies")
    assert found["policies/bad.py"] & FORBIDDEN_IN_POLICIES == {"sqlite3", "collectors"}
    assert wall_clock_calls(bad) == ["policies/bad.py:5: datetime.now()"]


#: Every package's public surface, exactly.
EXPORTS = {
    "controller": ["CollectorError", "ConfigError", "Controller", "Decision", "DiurnalError", "ExpositionError",
                   "NotReadyError", "PrewarmAction", "Reason", "ReasonCode", "ScrapeError", "Settings", "StoreError",
                   "decision_body", "load_settings"],
    "controller.forecast": ["DEFAULT_COVERAGE", "MIN_HISTORY", "WEEKLY_HISTORY", "Fit", "ForecastError", "Selection",
                            "fit", "forecast", "gate", "wall_clock_seconds"],
    "controller.actuators": ["AuditLog", "FilePublisher", "KubernetesError", "KubernetesScaler", "LatestWins",
                             "LeaderElector", "LeaseClient", "LeaseConflict", "LeaseError", "LeaseRecord",
                             "OverrideStore", "PrewarmExecutor", "Publisher", "ReplicaScaler", "WebhookPublisher",
                             "atomic_write", "build_publishers", "litellm_config"],
    "controller.entrypoints": [],
    "controller.replay": ["Replayed", "estimated", "replay", "stderr_progress"],
    "collectors": [],
    "policies": ["FALLBACK_CODES", "Ahead", "DayPlan", "Decision", "GuardrailConfig", "LoadCheck", "LoadPoint", "Outlook", "Override",
                 "PlannedInterval", "PolicyConfig", "Pool", "SloCapacity", "PrewarmAction", "PrewarmConfig", "PriceConfig", "ProviderConfig", "ProviderView", "Reason", "ReasonCode",
                 "RouteConfig", "RouteHour", "RouteView", "SegmentParity", "View", "decide", "decide_thresholds", "decide_weights", "guard",
                 "score_threshold"],
}


def test_every_package_exports_exactly_its_public_surface() -> None:
    import importlib

    packages = sorted(_name(p) for pkg in PACKAGES for p in _modules(pkg) if p.name == "__init__.py")
    assert packages == sorted(EXPORTS)
    for name, exported in EXPORTS.items():
        module = importlib.import_module(name)
        assert sorted(module.__all__) == sorted(exported), name
        for attr in exported:
            assert getattr(module, attr) is not None


def test_every_name_in_a_modules_all_exists() -> None:
    import importlib

    for pkg in PACKAGES:
        for p in _modules(pkg):
            module = importlib.import_module(_name(p))
            for attr in getattr(module, "__all__", []):
                assert hasattr(module, attr), f"{_name(p)}.__all__ names {attr}, which it lacks"


def test_every_error_is_a_diurnal_error() -> None:
    """One root: ``except DiurnalError`` catches the collectors' errors too."""
    from collectors.backfill import BackfillError
    from collectors.csv_import import CsvImportError
    from controller import (
        ConfigError,
        DiurnalError,
        ExpositionError,
        NotReadyError,
        ScrapeError,
        StoreError,
    )
    from controller.actuators import KubernetesError, LeaseError
    from controller.forecast import ForecastError
    from controller.forecast.refit import RefitTimeout

    for err in (BackfillError, CsvImportError, ConfigError, ExpositionError, NotReadyError, ScrapeError, StoreError,
                KubernetesError, LeaseError, ForecastError, RefitTimeout):
        assert issubclass(err, DiurnalError), err
    with pytest.raises(DiurnalError):
        from collectors.exposition import parse_exposition

        parse_exposition('bad{label="x} 1\n')
    assert issubclass(ForecastError, ValueError) and issubclass(RefitTimeout, TimeoutError)


def _strings(path: Path) -> list[tuple[int, str]]:
    """String constants of ``path``, docstrings left out."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docs.add(id(first.value))
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def test_no_reason_code_is_a_bare_string() -> None:
    """Reason codes are ``ReasonCode`` members everywhere outside their definition: no string
    literal equals a code, and no PromQL names one in a ``reason`` matcher."""
    from policies import ReasonCode

    codes = {c.value for c in ReasonCode}
    bare = []
    for pkg in (*PACKAGES, "dashboards", "bench", "sim"):
        for p in _modules(pkg):
            if p == ROOT / "policies" / "types.py":
                continue
            for line, text in _strings(p):
                inline = re.findall(r'reason[!=~]*\\?"(\w+)', text)
                if text in codes or codes & set(inline):
                    bare.append(f"{p.relative_to(ROOT)}:{line}: {text!r}")
    assert bare == []


def test_the_readme_lists_exactly_the_reason_codes() -> None:
    from policies import ReasonCode

    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Reason codes", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `(\w+)` \|", section, re.M)
    assert len(listed) == len(set(listed)), "a code is listed twice"
    assert sorted(listed) == sorted(c.value for c in ReasonCode)


def test_library_code_uses_the_opentelemetry_api_only() -> None:
    """The SDK is wired at the entry point (controller/entrypoints/tracing.py), never in library code."""
    bad = []
    for package in PACKAGES:
        for path in _modules(package):
            if path.name == "tracing.py":
                continue
            bad += [f"{path.relative_to(ROOT)}: {n}" for n in _imports(path)
                    if n.startswith(("opentelemetry.sdk", "opentelemetry.exporter"))]
    assert not bad, bad
