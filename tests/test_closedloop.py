"""The closed-loop benchmark: the world's mechanisms, the baselines, determinism, and
``diurnal bench --quick`` end to end."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from bench.baselines import HPA, LatencyRouting, Oracle, true_capacity_rpm
from bench.closedloop import POLICIES, QUICK, SUITE, Diurnal, Options, WorldScaler, run, warmup_key
from sim import Flash, SimulatedRouter
from sim.families import FAMILIES, draw, suite
from sim.scenarios import BENCH_WEIGHTS, NAMES, POOL, base_world, scenarios
from sim.world import BusyWindow

NY = ZoneInfo("America/New_York")
MONDAY = datetime(2026, 11, 16, tzinfo=NY)
ROOT = Path(__file__).resolve().parents[1]


def world(**changes: object) -> SimulatedRouter:
    return SimulatedRouter(replace(base_world(), **changes), seed=3, start=MONDAY, weights=BENCH_WEIGHTS)


def test_429s_are_retried_on_another_provider_and_add_load_there() -> None:
    w = world()
    w.set_weights({"openai": 1.0})  # every first attempt goes to openai (800 rpm)
    w.scale(POOL, 40)
    w.advance(MONDAY + timedelta(hours=10))  # let the 40 replicas get ready
    w.advance(MONDAY + timedelta(hours=10, minutes=30))  # 10:00-10:30: the surge, ~1300 rpm to the models
    t = w.truth().iloc[-30:]
    assert (t["rejected_openai"] > 0).all()  # over its limit
    assert (t["retried"] > 0).all()
    # The retries land on the others (weights 0 for first attempts, so all they get is retries).
    assert (t["attempts_anthropic"] + t[f"attempts_{POOL}"] == t["retried"]).all()
    assert (t["failed"] == 0).all()  # the others had room: nobody saw an error
    assert (t["requests"] - t["cache_hits"] == t["attempts_openai"] - t["rejected_openai"] + t["retried"]).all()


def test_without_retries_the_excess_fails() -> None:
    w = world(retry=False)
    w.set_weights({"openai": 1.0})
    w.advance(MONDAY + timedelta(hours=10, minutes=10))
    t = w.truth().iloc[-10:]
    assert (t["failed"] == t["rejected_openai"]).all() and (t["failed"] > 0).all()


def test_new_replicas_serve_only_after_their_warm_up_and_a_scale_in_cancels_pending_first() -> None:
    w = world()
    w.advance(MONDAY + timedelta(hours=1))
    assert w.pools()[POOL] == (6, 6)
    w.scale(POOL, 10)
    w.advance(MONDAY + timedelta(hours=1, minutes=7))
    assert w.pools()[POOL] == (6, 10)  # 8 minutes to load the model
    w.advance(MONDAY + timedelta(hours=1, minutes=9))
    assert w.pools()[POOL] == (10, 10)
    w.scale(POOL, 14)
    w.scale(POOL, 11)  # cancels 3 of the 4 pending, stops no ready one
    assert w.pools()[POOL] == (10, 11)
    w.scale(POOL, 8)  # the last pending, then 2 ready ones
    assert w.pools()[POOL] == (8, 8)
    t = w.truth()
    minutes = t.loc[MONDAY + timedelta(hours=1): MONDAY + timedelta(hours=1, minutes=8, seconds=59)]
    assert list(minutes[f"ready_{POOL}"]) == [6] * 8 + [10]
    # Pending replicas are paid for while they load.
    assert minutes["replica_cost"].iloc[1] == pytest.approx(10 * 4.0 / 60)


def test_cache_hits_never_reach_a_provider_and_the_hit_ratio_dips_at_peak() -> None:
    w = world()
    w.scale(POOL, 40)
    w.advance(MONDAY + timedelta(hours=12))
    t = w.truth()
    attempts = sum(t[f"attempts_{n}"] for n in BENCH_WEIGHTS) - t["retried"]
    assert (attempts == t["requests"] - t["cache_hits"]).all()
    night, surge = t.iloc[3 * 60:4 * 60], t.iloc[9 * 60:10 * 60]
    assert (night["cache_hits"].sum() / night["requests"].sum()) > (surge["cache_hits"].sum() / surge["requests"].sum()) + 0.1


def test_holidays_flash_crowds_and_incidents_shape_the_world() -> None:
    plain = SimulatedRouter(base_world(), seed=1, start=MONDAY)
    ts = np.array([MONDAY.timestamp() + 9 * 3600])
    assert plain.demand_rpm(ts)[0] == pytest.approx(1000 * 1.6)  # 09:00 Monday: the surge
    holiday = SimulatedRouter(replace(base_world(), holidays=(MONDAY.date(),)), seed=1, start=MONDAY)
    assert holiday.demand_rpm(ts)[0] < 0.5 * plain.demand_rpm(ts)[0]
    flash = SimulatedRouter(replace(base_world(), flash=(Flash(MONDAY + timedelta(hours=9), 30, 2.0),)), seed=1,
                            start=MONDAY)
    assert flash.demand_rpm(ts)[0] == pytest.approx(2 * plain.demand_rpm(ts)[0])
    flat = SimulatedRouter(replace(base_world(), seasonal=False), seed=1, start=MONDAY)
    assert len(set(flat.demand_rpm(ts + np.arange(0, 7 * 86400, 3600)).round(6))) == 1
    degrades = scenarios()["provider-degrades-at-peak"].spec
    busy = SimulatedRouter(degrades, seed=1, start=MONDAY).busy_factors(MONDAY + timedelta(hours=9),
                                                                         MONDAY + timedelta(hours=9, minutes=1))
    assert busy[0].tolist() == [2.6, 1.0, 1.0]
    off = SimulatedRouter(replace(degrades, holidays=(MONDAY.date(),)), seed=1, start=MONDAY)
    assert off.busy_factors(MONDAY + timedelta(hours=9), MONDAY + timedelta(hours=9, minutes=1))[0].tolist() == [1.0] * 3


def test_a_capacity_busy_window_shrinks_what_a_provider_takes_so_sending_it_less_cures_it() -> None:
    """A shared cloud's busy hour: openai accepts 40% of its 800 rpm limit on Monday 09-11.
    At the router's weights it answers 429s and slows down; sent little, it is fine."""
    spec = replace(base_world(), retry=False, providers=tuple(
        replace(p, busy=(BusyWindow(0, 9.0, 11.0, 0.4, "capacity"),)) if p.name == "openai" else p
        for p in base_world().providers))
    busy = SimulatedRouter(spec, seed=1, start=MONDAY)
    assert busy.capacity_factors(MONDAY + timedelta(hours=9), MONDAY + timedelta(hours=9, minutes=1))[0].tolist() \
        == [0.4, 1.0, 1.0]
    assert busy.busy_factors(MONDAY + timedelta(hours=9), MONDAY + timedelta(hours=9, minutes=1))[0].tolist() == [1.0] * 3
    heavy = SimulatedRouter(spec, seed=1, start=MONDAY + timedelta(hours=9), weights={"openai": 0.6, "anthropic": 0.4})
    light = SimulatedRouter(spec, seed=1, start=MONDAY + timedelta(hours=9), weights={"openai": 0.1, "anthropic": 0.9})
    for w in (heavy, light):
        w.advance(MONDAY + timedelta(hours=10))
    h, lo = heavy.truth(), light.truth()
    assert h["rejected_openai"].sum() > 0 and h["violation"].mean() > 0.5
    assert lo["rejected_openai"].sum() == 0 and lo["latency_openai"].mean() < 0.8 * h["latency_openai"].mean()
    # Outside the window openai takes the heavy share as before.
    after = SimulatedRouter(spec, seed=1, start=MONDAY + timedelta(hours=12), weights={"openai": 0.6, "anthropic": 0.4})
    after.advance(MONDAY + timedelta(hours=13))
    assert after.truth()["rejected_openai"].sum() == 0


def test_world_families_draw_32_different_worlds_across_the_ranges() -> None:
    worlds = suite(4)
    assert len(worlds) == len(SUITE) == 32 and len({w.name for w in worlds}) == 32
    assert {w.name.rsplit("-", 1)[0] for w in worlds} == set(FAMILIES)
    assert draw("cheap-pool", 2) == draw("cheap-pool", 2)  # a seed draws the same world
    pools = [p.pool for w in worlds for p in w.spec.providers if p.pool is not None]
    assert all(2 <= p.warmup_minutes <= 20 for p in pools) and len({p.warmup_minutes for p in pools}) > 5
    assert len({w.spec.tz for w in worlds}) >= 4 and len({w.spec.surge_start for w in worlds}) >= 3
    kinds = {b.kind for w in worlds for p in w.spec.providers for b in p.busy}
    assert kinds == {"latency", "capacity"}
    for w in worlds:
        family = w.name.rsplit("-", 1)[0]
        apis = {p.name: p for p in w.spec.providers if p.pool is None}
        if family == "capacity-busy":
            assert any(b.kind == "capacity" for p in apis.values() for b in p.busy)
        if family == "dear-fast":  # the fastest API is the dearest
            assert apis["openai"].median_seconds < apis["anthropic"].median_seconds
            assert apis["openai"].usd_per_1k_input > apis["anthropic"].usd_per_1k_input
        if family == "flat":
            assert not w.seasonal and not w.spec.seasonal and w.spec.incidents
        if family in ("smooth", "smooth-pool"):  # every provider on a curve, none on a cliff
            assert all(p.curve_k is not None and 0.15 <= p.curve_k <= 0.6 for p in w.spec.providers)
            assert w.spec.retry
        else:
            assert all(p.curve_k is None for p in w.spec.providers)
    per_request = [p.usd_per_replica_hour / (60 * p.rpm_per_replica) for p in pools]
    assert min(per_request) < 0.001 < max(per_request)  # a pool cheaper than the APIs, and one dearer
    with pytest.raises(ValueError, match="unknown family"):
        draw("nope", 1)


def test_a_smooth_curve_crosses_the_slo_before_the_rate_limit_and_the_truth_says_where() -> None:
    from sim.world import latency_multiplier, slo_utilisation

    spec = base_world()
    api = replace(spec.providers[0], curve_k=0.3, saturation=1.0)
    # p95 = base x (1 + k rho^4 / (1 - rho)): smooth, rising, and no cliff before the limit.
    m = latency_multiplier(api, np.array([0.0, 0.5, 0.8, 0.9, 0.97]))
    assert m[0] == 1.0 and np.all(np.diff(m) > 0) and m[1] < 1.1 and m[-1] > 5
    # The SLO capacity is where the curve crosses the SLO: under the limit, and exact.
    cap = true_capacity_rpm(spec, api, 1000.0, 1.0)
    idle = api.median_seconds * math.exp(1.645 * api.sigma)
    assert 300 < cap < 1000
    assert idle * latency_multiplier(api, np.array([cap / 1000.0]))[0] == pytest.approx(spec.slo_seconds, rel=1e-6)
    assert slo_utilisation(api, 0.0) == 0.0 and slo_utilisation(api, 1e9) == 0.98
    # The world's ground truth carries it each minute, and the score holds each provider's
    # load against it.
    world = replace(spec, providers=tuple(replace(p, curve_k=0.3) for p in spec.providers))
    router = SimulatedRouter(world, seed=1, start=MONDAY + timedelta(hours=9), weights=BENCH_WEIGHTS)
    router.advance(MONDAY + timedelta(hours=10))
    truth = router.truth()
    assert (truth["slo_capacity_openai"] > 0).all() and (truth["slo_capacity_openai"] < api.rpm_limit).all()


def test_the_oracles_capacity_follows_the_worlds_latency_model() -> None:
    spec = base_world()
    api = spec.providers[0]  # median 1.5 s, sigma 0.45: p95 3.1 s idle, under the 5 s SLO up to its limit
    assert true_capacity_rpm(spec, api, 1000.0, 1.0) == 1000.0
    assert true_capacity_rpm(spec, api, 400.0, 1.0) == 400.0  # a shrunk limit
    slower = true_capacity_rpm(spec, api, 1000.0, 1.3)  # p95 4.1 s idle: the SLO at 82% of the limit
    assert slower == pytest.approx(1000 * ((5 / (1.5 * 1.3 * np.exp(1.645 * 0.45)) - 1) / 0.5) ** 0.25)
    assert 700 < slower < 900
    assert true_capacity_rpm(spec, api, 1000.0, 2.6) == 0.0  # slow at any load


def test_the_world_is_deterministic_and_the_same_for_every_policy() -> None:
    a, b = world(), world()
    for w in (a, b):
        w.advance(MONDAY + timedelta(hours=2))
    assert a.truth().equals(b.truth())
    assert a.exposition() == b.exposition()
    c = world()
    c.set_weights({"anthropic": 1.0})
    c.advance(MONDAY + timedelta(hours=2))
    assert (c.truth()["requests"] == a.truth()["requests"]).all()  # arrivals do not depend on the knobs


def test_hpa_scales_up_at_once_and_down_only_after_its_stabilization_window() -> None:
    w = world()
    hpa = HPA(target_rpm_per_replica=42)
    w.advance(MONDAY + timedelta(hours=9))
    up = hpa.desired(w)
    assert up == int(np.ceil(w.recent(2)[f"attempts_{POOL}"][0] / 42))
    w.scale(POOL, up)
    w.set_weights({"openai": 0.5, "anthropic": 0.5, POOL: 0.0})  # the pool's load vanishes
    seen = []
    for m in range(1, 9):
        w.advance(MONDAY + timedelta(hours=9, minutes=m))
        want = hpa.desired(w)
        w.scale(POOL, want)
        seen.append(want)
    assert seen[:3] == [up] * 3  # held by the 5-minute window
    assert seen[-1] == hpa.min_replicas


def test_latency_routing_prefers_fast_providers_within_their_limits_and_cools_down_429s() -> None:
    w = world()
    w.advance(MONDAY + timedelta(hours=9, minutes=5))
    r = LatencyRouting(buffer=0.0)
    weights = r.weights(MONDAY + timedelta(hours=9, minutes=5), w)
    last = {c: v[-1] for c, v in w.recent(1).items()}
    fastest = min(BENCH_WEIGHTS, key=lambda n: last[f"latency_{n}"])
    load = last["requests"] - last["cache_hits"]
    if fastest == POOL:  # no limit known for the pool: it takes everything
        assert weights[POOL] == pytest.approx(1.0)
    else:
        assert weights[fastest] * load <= 0.9 * {"openai": 800, "anthropic": 600}[fastest] + 1e-6
    # A deployment answering mostly 429s is skipped for the next minute.
    w2 = world()
    w2.set_weights({"anthropic": 1.0})
    w2.advance(MONDAY + timedelta(hours=9, minutes=5))
    cooled = LatencyRouting(buffer=10.0).weights(MONDAY + timedelta(hours=9, minutes=5), w2)
    assert cooled["anthropic"] == 0.0


def test_the_oracle_moves_off_a_provider_before_its_busy_window() -> None:
    spec = scenarios()["provider-degrades-at-peak"]
    w = SimulatedRouter(spec.spec, seed=1, start=MONDAY, weights=BENCH_WEIGHTS)
    o = Oracle()
    o.start(w, spec)
    w.advance(MONDAY + timedelta(hours=7, minutes=55))
    assert o.tick(MONDAY + timedelta(hours=7, minutes=55), w).weights["openai"] < 0.1  # 08:00 is 5 min away
    w2 = SimulatedRouter(spec.spec, seed=1, start=MONDAY, weights=BENCH_WEIGHTS)
    w2.advance(MONDAY + timedelta(hours=7, minutes=30))
    assert o.tick(MONDAY + timedelta(hours=7, minutes=30), w2).weights["openai"] > 0.3


def test_the_world_scaler_reads_and_sets_the_pools_replicas() -> None:
    w = world()
    scaler = WorldScaler(w)
    assert scaler.get_replicas("llm", POOL) == 6
    scaler.set_replicas("llm", POOL, 9)
    assert w.pools()[POOL] == (6, 9)


def test_diurnal_scales_the_pool_through_its_prewarm_executor(tmp_path: Path) -> None:
    """diurnal embedded as the bench runs it (act mode, its own prewarm executor, the world's
    scale client): the pool's replicas become the amount its decision asks for, tick by tick."""
    scenario = scenarios()["monday-peak"]
    w = SimulatedRouter(scenario.spec, seed=3, start=scenario.scored_start, weights=BENCH_WEIGHTS)
    w.scale(POOL, 40)  # far more than the observed load needs: diurnal owns the pool and scales it in
    policy = Diurnal(tmp_path)
    policy.start(w, scenario)
    try:
        asked = []
        for minute in range(1, 12):
            now = scenario.scored_start + timedelta(minutes=minute)
            w.advance(now)
            knobs = policy.tick(now, w)
            assert policy.ctl is not None and policy.ctl.decision is not None
            [step] = [p for p in policy.ctl.decision.prewarm if p.action == "pool" and p.at <= now]
            asked.append(step.amount)
            assert w.pools()[POOL][1] == max(asked[-6:])  # owned: scaled in no lower than the last 5 minutes' asks
            assert sum(knobs.weights.values()) == pytest.approx(1.0)
    finally:
        policy.close()
    assert min(asked) < 40 and w.pools()[POOL][1] < 40
    assert policy.ctl.registry.get_sample_value("diurnal_prewarm_actions_total", {"action": "pool", "result": "ok"}) > 0


def test_scenarios_cover_the_issue_and_share_warm_ups_only_when_their_history_is_the_same() -> None:
    made = scenarios()
    assert tuple(made) == NAMES
    assert len(NAMES) == 8
    assert {n for n, s in made.items() if not s.seasonal} == {"holiday-monday", "flash-crowd", "no-seasonality"}
    keys = {n: warmup_key(s) for n, s in made.items()}
    assert keys["provider-degrades-at-peak"] == keys["holiday-monday"] == keys["flash-crowd"]
    assert len(set(keys.values())) == 6
    tokyo = made["shifted-timezone"]
    assert tokyo.scored_start.utcoffset() == timedelta(hours=9)
    dst = made["dst-week"]
    assert dst.start.utcoffset() == timedelta(hours=-4) and dst.scored_start.utcoffset() == timedelta(hours=-5)


def _bench(out: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """`diurnal bench` in its own process, its JSON written to ``out``."""
    proc = subprocess.run([sys.executable, "-m", "controller.entrypoints.cli", "bench", *args, "--json",
                           str(out / "r.json"), "--plots", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads((out / "r.json").read_text())


@pytest.fixture(scope="session")
def bench_quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict[str, Any]]:
    """One `diurnal bench --quick`, read by the tests that need its output (listed with it in
    tests/conftest.py, so that one worker runs them)."""
    out = tmp_path_factory.mktemp("bench-quick")
    proc, body = _bench(out, "--quick")
    return out, proc.stdout, body


def _scores(body: dict[str, Any], scenario: str, policies: tuple[str, ...]) -> dict[str, dict[str, object]]:
    [s] = [s for s in body["scenarios"] if s["scenario"] == scenario]
    return {p: {k: v for k, v in s["scores"][p].items() if k != "seconds"} for p in policies}


def test_a_run_is_deterministic_given_its_seed(bench_quick: tuple[Path, str, dict[str, Any]],
                                               tmp_path: Path) -> None:
    """Another process running the same scenario, seed and options gives the same figures as
    `diurnal bench --quick` did, diurnal included; another seed draws another world."""
    first = QUICK[0]
    _, body = _bench(tmp_path, "--scenarios", first, "--policies", "static,diurnal", "--days", "1", "--jobs", "1")
    assert _scores(body, first, ("static", "diurnal")) == _scores(bench_quick[2], first, ("static", "diurnal"))
    # The scored day's arrivals depend on the seed and the minute only (not on the warm-up's
    # length), so a short run with seed 6 must see other traffic than seed 1 did.
    [other] = run([first], ["static"], Options(6, warmup_weeks=1, scored_days=1))
    quick = _scores(bench_quick[2], first, ("static",))["static"]
    assert other.scores["static"].requests != quick["requests"]


def test_diurnal_bench_quick_end_to_end(bench_quick: tuple[Path, str, dict[str, Any]]) -> None:
    """What CI runs: `diurnal bench --quick`, with the JSON, the table and the plots."""
    out, stdout, body = bench_quick
    assert "SLO min" in stdout and "SLO minutes, median world: diurnal" in stdout and "worst SLO world" in stdout
    assert [s["scenario"] for s in body["scenarios"]] == list(QUICK)
    for s in body["scenarios"]:
        assert set(s["scores"]) == set(POLICIES)
        assert (out / f"{s['scenario']}.png").stat().st_size > 10_000
        assert s["verdict"]["best_reactive"] in ("reactive-routing", "hpa", "reactive")
    assert body["meta"]["seconds"] > 0  # the wall time is reported; the bench, not this test, judges it
    summ = body["summary"]
    assert set(summ["policies"]) == {*POLICIES, "best-reactive"} and summ["policies"]["diurnal"]["worlds"] == 2
    assert set(summ["targets"]) >= {"median_slo_ratio", "never_worse_met", "median_cost_ratio", "median_cost_gap_closed"}
    peak = body["scenarios"][0]["scores"]
    # On the busy Monday the static router breaches; diurnal, acting ahead, does no worse than
    # the best reactive setup, and the least-cost oracle is the cheapest without breaching.
    assert peak["static"]["slo_minutes"] > 10
    assert peak["diurnal"]["slo_minutes"] <= min(peak[n]["slo_minutes"] for n in ("reactive-routing", "hpa", "reactive"))
    assert peak["oracle"]["slo_minutes"] <= peak["static"]["slo_minutes"]
    assert peak["oracle"]["cost_usd"] <= min(s["cost_usd"] for n, s in peak.items() if n != "oracle")


def test_the_json_is_strict_where_a_ratio_has_no_value() -> None:
    from bench.closedloop import ScenarioResult, Score, _finite, summary, to_json

    def s(policy: str, slo: int) -> Score:
        return Score(policy, slo, slo, float("nan"), 1.0, 0, 10, 5.0, 5.0, 0.0, 0.0, 0.8, 1.0)

    r = ScenarioResult("x", "", False, 1, scores={"reactive": s("reactive", 0), "diurnal": s("diurnal", 3)})
    assert r.verdict()["slo_ratio"] == float("inf") and not r.verdict()["met"]
    assert summary([r])["targets"]["worlds_worse_than_best_reactive"] == ["x"]
    text = json.dumps(_finite(to_json([r], {})), allow_nan=False)
    body = json.loads(text)["scenarios"][0]
    assert body["verdict"]["slo_ratio"] is None and body["scores"]["diurnal"]["p95_of_p95"] is None


@pytest.mark.parametrize("args", [["--scenarios", "nope"], ["--policies", "static,psychic"], ["--days", "9"],
                                  ["--shape", "nosuch"], ["--shape", "nyc_taxi", "--data", "/nonexistent"]])
def test_bad_bench_options_are_named(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from bench.closedloop import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "diurnal bench: error:" in err and args[1].split(",")[-1] in err
