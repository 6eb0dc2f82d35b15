"""Backfill through a Prometheus-compatible query_range API."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import numpy as np
import pandas as pd
import pytest

from collectors.backfill import BackfillError, PrometheusAPI, backfill
from collectors.exposition import parse_exposition
from collectors.hour_of_week import profile
from collectors.mapping import LITELLM, Mapper
from collectors.signals import hourly
from collectors.store import Store
from controller import Controller
from controller.entrypoints.demo import demo_settings
from sim import STATIC_WEIGHTS, SimulatedRouter, WorldSpec
from tests.conftest import PrometheusServer, free_port, need_binary, wait_http

TZ = "America/New_York"


def matrix(name: str, labels: dict[str, str], points: list[tuple[int, float]]) -> dict[str, object]:
    return {"metric": {"__name__": name, **labels}, "values": [[t, str(v)] for t, v in points]}


def openai_requests(points: list[tuple[int, float]]) -> PrometheusAPI:
    """A query_range API holding one LiteLLM request counter (openai) with these points."""
    labels = {"api_provider": "openai", "requested_model": "chat", "instance": "r1:4000", "job": "litellm"}

    def handler(req: httpx.Request) -> httpx.Response:
        form = parse_qs(req.content.decode())
        lo, hi = int(form["start"][0]), int(form["end"][0])
        pts = [(t, v) for t, v in points if lo <= t <= hi]
        body = [matrix("litellm_deployment_total_requests_total", labels, pts)] if pts else []
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "matrix", "result": body}})

    return PrometheusAPI(httpx.Client(transport=httpx.MockTransport(handler)), "http://p.invalid")


def test_query_range_retries_then_succeeds_with_auth() -> None:
    calls: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        if len(calls) < 3:
            return httpx.Response(503, text="overloaded")
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "matrix", "result": []}})

    slept: list[float] = []
    api = PrometheusAPI(httpx.Client(transport=httpx.MockTransport(handler)), "http://prom.invalid",
                        basic_auth=("u", "p"), sleep=slept.append)
    assert api.query_range("up", 0, 600, 60) == []
    assert len(calls) == 3 and len(slept) == 2 and slept[1] > slept[0] * 0.5
    assert calls[0].headers["authorization"] == "Basic dTpw"
    form = parse_qs(calls[0].content.decode())
    assert form["step"] == ["60"] and form["query"] == ["up"]


@pytest.mark.parametrize(
    ("response", "needle"),
    [
        pytest.param(httpx.Response(401), "credentials", id="unauthorized"),
        pytest.param(httpx.Response(400, text="parse error"), "rejected the query", id="bad-query"),
        pytest.param(httpx.Response(503), "gave up after 3 attempts", id="down-after-retries"),
    ],
)
def test_query_range_errors_are_clear(response: httpx.Response, needle: str) -> None:
    api = PrometheusAPI(httpx.Client(transport=httpx.MockTransport(lambda req: response)), "http://p.invalid",
                        retries=2, sleep=lambda s: None)
    with pytest.raises(BackfillError, match=needle):
        api.query_range("up", 0, 600, 60)


def test_backfill_replays_counters_and_skips_what_is_stored(tmp_path: Path) -> None:
    t0 = int(datetime(2026, 11, 9, 14, tzinfo=UTC).timestamp())
    points = [(t0 + 60 * i, 10.0 * i) for i in range(181)]  # 10 requests a minute for 3 hours
    store = Store(tmp_path, tz="UTC")
    api = openai_requests(points)
    stats = backfill(store, Mapper(LITELLM), api, start=t0, end=t0 + 3 * 3600, step=60, chunk_seconds=3600)
    assert stats.chunks == 4
    hours = [(h.ts - t0, h.value) for h in store.hour_counters("requests", 0, 2**40)]
    assert hours == [(0, 600.0), (3600, 600.0), (7200, 600.0)]
    again = backfill(store, Mapper(LITELLM), api, start=t0, end=t0 + 3 * 3600, step=60, chunk_seconds=5400)
    assert again.rows_written == 0  # overlapping history is not stored twice
    store.close()


def _openmetrics(router: SimulatedRouter, start: datetime, end: datetime, step: timedelta) -> tuple[str, list[tuple[datetime, str]]]:
    """Timestamped OpenMetrics of the router every ``step``, and the expositions themselves."""
    series: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[float, float]]] = defaultdict(list)
    families: dict[str, str] = {}
    scrapes = []
    t = start
    while t <= end:
        router.advance(t)
        text = router.exposition()
        scrapes.append((t, text))
        for line in text.splitlines():
            if line.startswith("# TYPE"):
                _, _, name, kind = line.split()
                families[name] = kind
        for s in parse_exposition(text):
            series[(s.name, s.labels)].append((t.timestamp(), s.value))
        t += step
    out = []
    for fam, kind in families.items():
        out.append(f"# TYPE {fam} {kind}")
        for (name, labels), pts in series.items():
            if name == fam or name.startswith(fam + "_"):
                lbl = ",".join(f'{k}="{v}"' for k, v in labels)
                out.extend(f"{name}{{{lbl}}} {v} {ts:.0f}" for ts, v in pts)
    return "\n".join(out) + "\n# EOF\n", scrapes


@contextlib.contextmanager
def _served(tmp_path: Path, openmetrics: str) -> Iterator[str]:
    """A real Prometheus on loopback serving ``openmetrics`` (made into TSDB blocks by
    promtool), for the ``with`` block; yields its URL."""
    promtool, prometheus = need_binary("promtool"), need_binary("prometheus")
    om = tmp_path / "data.om"
    om.write_text(openmetrics)
    blocks = Path(tempfile.mkdtemp(prefix="diurnal-blocks-"))
    try:
        made = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(om), str(blocks)],
                              capture_output=True, text=True, timeout=600)
        assert made.returncode == 0, made.stderr
        port = free_port()
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text("global: {scrape_interval: 15s}\nscrape_configs: []\n")
        proc = subprocess.Popen([prometheus, f"--config.file={cfg}", f"--storage.tsdb.path={blocks}",
                                 "--storage.tsdb.retention.time=10y", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_http(f"http://127.0.0.1:{port}/-/ready", timeout=60)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        shutil.rmtree(blocks, ignore_errors=True)


@pytest.mark.integration
def test_backfill_from_promtool_blocks_matches_direct_ingest(tmp_path: Path) -> None:
    spec = WorldSpec()
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1)
    end -= timedelta(minutes=end.minute % 20)
    start = end - timedelta(days=9)  # over a week: some hour-of-week slots are a median of two weeks
    text, scrapes = _openmetrics(SimulatedRouter(spec, seed=9, start=start, weights=STATIC_WEIGHTS),
                                 start, end, timedelta(minutes=20))
    with _served(tmp_path, text) as url:
        backfilled = Store(tmp_path / "backfilled", tz=TZ)
        mapper = Mapper(LITELLM, spec.model_providers())
        with httpx.Client(timeout=60) as client:
            stats = backfill(backfilled, mapper, PrometheusAPI(client, url),
                             start=int(start.timestamp()), end=int(end.timestamp()), step=1200)
    assert stats.samples > 0 and stats.rows_written > 0

    direct = Controller.from_settings(demo_settings(tmp_path / "direct", spec))
    for t, exposition in scrapes:
        direct.ingest_exposition(exposition, at=t)
    direct.flush()
    lo, hi = int(start.timestamp()), int(end.timestamp())
    for signal, provider in [("request_rate", None), ("latency_p95", "openai"), ("cache_hit_ratio", None),
                             ("spend_rate", "anthropic")]:
        a = profile(hourly(backfilled, signal, TZ, lo, hi, provider), TZ)
        b = profile(hourly(direct.store, signal, TZ, lo, hi, provider), TZ)
        assert np.allclose(a["median"].to_numpy(float), b["median"].to_numpy(float), rtol=1e-9, equal_nan=True), signal
        assert (a["weeks"] == b["weeks"]).all() and (a["weeks"] == 2).any()
    direct.close()
    backfilled.close()


def test_hourly_series_of_a_backfilled_store_is_regular(tmp_path: Path) -> None:
    """Two backfills with two hours between them that Prometheus no longer holds: the hourly
    series spans every hour, NaN in the hole (not zero, not missing rows), the rate around it."""
    t0 = int(datetime(2026, 11, 9, 14, tzinfo=UTC).timestamp())
    points = [(t0 + 60 * i, 10.0 * i) for i in range(6 * 60 + 1)]
    store = Store(tmp_path, tz=TZ)
    api = openai_requests(points)
    for start, end in ((t0, t0 + 2 * 3600), (t0 + 4 * 3600, t0 + 6 * 3600)):
        backfill(store, Mapper(LITELLM), api, start=start, end=end, step=60, chunk_seconds=3600)
    s = hourly(store, "request_rate", TZ, t0, t0 + 6 * 3600)
    assert isinstance(s, pd.Series) and len(s) == 6
    assert (s.index[1:] - s.index[:-1] == pd.Timedelta(hours=1)).all()  # regular, hole included
    assert s.iloc[2:4].isna().all()
    assert s.iloc[[0, 1, 5]].to_numpy() == pytest.approx(10 / 60)  # 10 requests a minute
    store.close()


@pytest.mark.integration
def test_prometheus_scrapes_the_router_and_backfill_matches_direct_scrape(tmp_path: Path,
                                                                         prometheus: PrometheusServer) -> None:
    """A real Prometheus scrapes the simulated router over HTTP; diurnal backfills it through
    query_range; the profile equals the one from ingesting the same scrapes directly."""
    import json
    import time
    import urllib.parse
    import urllib.request

    from sim.server import RouterServer

    spec = WorldSpec()
    sim_now = [datetime(2026, 11, 9, 8, tzinfo=pd.Timestamp.now(TZ).tz)]  # Monday 08:00 New York
    router = SimulatedRouter(spec, seed=6, start=sim_now[0], weights=STATIC_WEIGHTS, clock=lambda: sim_now[0])
    server = RouterServer(router).start()
    target = server.url.removeprefix("http://").removesuffix("/metrics")
    direct = Controller.from_settings(demo_settings(tmp_path / "direct", spec))

    def recorded_at(expected: float) -> float:
        """When Prometheus stored openai's request counter with this value."""
        q = urllib.parse.urlencode({"query": f'litellm_deployment_total_requests_total{{api_provider="openai",'
                                             f'instance="{target}"}}[2m]'})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            body = json.load(urllib.request.urlopen(f"{prometheus.url}/api/v1/query?{q}", timeout=10))
            for series in body["data"]["result"]:
                for ts, v in series["values"]:
                    if float(v) == expected:
                        return float(ts)
            time.sleep(0.5)
        raise AssertionError(f"Prometheus never stored {expected}")

    first = last = 0.0
    try:
        with prometheus.scraping(target):
            for _ in range(6):
                sim_now[0] += timedelta(minutes=5)
                router.advance(sim_now[0])
                exposition = router.exposition()
                openai = next(s.value for s in parse_exposition(exposition)
                              if s.name == "litellm_deployment_total_requests_total"
                              and s.label("api_provider") == "openai")
                at = recorded_at(openai)
                first = first or at
                last = at
                direct.ingest_exposition(exposition, at=datetime.fromtimestamp(at, UTC))
            time.sleep(3)  # one more scrape of the last state
    finally:
        server.stop()
    direct.flush()
    backfilled = Store(tmp_path / "backfilled", tz=TZ)
    with httpx.Client(timeout=60) as client:
        # the shared Prometheus also scrapes other tests' routers: this one's series only
        backfill(backfilled, Mapper(LITELLM, spec.model_providers()), PrometheusAPI(client, prometheus.url),
                 start=int(first) - 60, end=int(last) + 60, step=1, selector=f'instance="{target}"')
    lo, hi = int(first) - 7200, int(last) + 7200
    for counter in ("requests", "spend", "cache_hits", "errors_429"):
        d = sum(p.value for p in direct.store.hour_counters(counter, lo, hi))
        b = sum(p.value for p in backfilled.hour_counters(counter, lo, hi))
        assert b == pytest.approx(d, rel=1e-9), counter
    # Rates also depend on how many minutes the samples covered (Prometheus sampled every 2 s),
    # so the profile comparison is on quantiles and ratios, which depend on the data alone.
    for signal, provider in [("latency_p95", "openai"), ("latency_p95", "azure"), ("latency_p50", None),
                             ("cache_hit_ratio", None), ("error_429_ratio", None)]:
        a = profile(hourly(backfilled, signal, TZ, lo, hi, provider), TZ)["median"].to_numpy(float)
        b = profile(hourly(direct.store, signal, TZ, lo, hi, provider), TZ)["median"].to_numpy(float)
        assert np.isfinite(a).sum() >= 1
        assert np.allclose(a, b, rtol=1e-9, equal_nan=True), signal
    direct.close()
    backfilled.close()


@pytest.mark.integration
def test_replay_from_prometheus_reads_the_history_a_real_prometheus_holds(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """``diurnal replay --prometheus URL`` backfills the period and the history before it
    into a scratch store and replays that: on a real Prometheus holding two days of the
    simulated router, its report equals the replay of a store the same scrapes were ingested
    into directly (the router's actual requests and cost), and it leaves no scratch dir."""
    import yaml

    from controller.entrypoints.cli import main

    spec = WorldSpec()
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1)
    end -= timedelta(minutes=end.minute % 60)
    start = end - timedelta(days=2)
    text, scrapes = _openmetrics(SimulatedRouter(spec, seed=4, start=start, weights=STATIC_WEIGHTS),
                                 start, end, timedelta(minutes=1))
    direct = Controller.from_settings(demo_settings(tmp_path / "direct", spec))
    for t, exposition in scrapes:
        direct.ingest_exposition(exposition, at=t)
    direct.flush()
    direct.close()
    doc = demo_settings(tmp_path / "direct", spec).model_dump(mode="json", exclude_defaults=True)
    doc.pop("data_dir", None)
    doc.setdefault("prometheus", {})["step_seconds"] = 60
    config = tmp_path / "diurnal.yaml"
    config.write_text(yaml.safe_dump(doc))
    since, until = (end - timedelta(hours=6)).isoformat(), (end - timedelta(minutes=5)).isoformat()
    period = ["--config", str(config), "--since", since, "--until", until]
    scratch = Path(tempfile.gettempdir())
    before = set(scratch.glob("diurnal-replay-*"))
    with _served(tmp_path, text) as url:
        code = main(["replay", *period, "--prometheus", url, "--json", str(tmp_path / "prom.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert set(scratch.glob("diurnal-replay-*")) == before
    assert main(["replay", *period, "--data-dir", str(tmp_path / "direct"), "--json", str(tmp_path / "direct.json")]) == 0
    got = json.loads((tmp_path / "prom.json").read_text())
    want = json.loads((tmp_path / "direct.json").read_text())
    assert {**got["period"], "seconds": 0} == {**want["period"], "seconds": 0}
    assert got["period"]["minutes"] == 355 and got["period"]["minutes_without_data"] == 0
    assert want["observed"]["spend_usd"] > 0
    assert got["observed"]["spend_usd"] == pytest.approx(want["observed"]["spend_usd"], rel=0.02)
    for policy in ("actual", "static", "diurnal"):
        a, b = got["policies"][policy], want["policies"][policy]
        assert a["cost_usd"] == pytest.approx(b["cost_usd"], rel=0.02), policy
        assert a["share"] == pytest.approx(b["share"], abs=0.02), policy
