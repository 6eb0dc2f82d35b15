"""Durability: a writer killed with SIGKILL mid-write loses no minute whose ``write()`` had
returned (committed); the open minutes' journal loses no acknowledged event and at most
``control.checkpoint_seconds`` of scraped increase; the store holds finite numbers only."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NoReturn

import httpx
import pytest
from prometheus_client import CollectorRegistry

from collectors.errors import StoreError
from collectors.intervals import MinuteCell, MinuteRow
from collectors.mapping import SeriesKey
from collectors.store import Store
from controller.collect import CollectStage
from controller.metrics import Metrics
from controller.settings import Settings
from tests.conftest import free_port, wait_http

WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from collectors.intervals import MinuteCell, MinuteRow
    from collectors.mapping import SeriesKey
    from collectors.store import Store

    store = Store(Path(sys.argv[1]), tz="America/New_York")
    key = SeriesKey("requests", "openai", "gpt-4o", "chat")
    hist = SeriesKey("latency", "openai", "gpt-4o", "chat")
    batch = 0
    while True:
        ts = 1_700_000_000 + batch * 60
        store.write([MinuteRow(ts, key, MinuteCell(value=1.0)),
                     MinuteRow(ts, hist, MinuteCell(count=1.0, sum=2.0, buckets={2.0: 1.0, float("inf"): 1.0}))])
        # Acknowledge only after write() returned, i.e. after the commit.
        sys.stdout.write(f"{batch}\\n")
        sys.stdout.flush()
        batch += 1
""")


@pytest.mark.parametrize("run", range(20))
def test_sigkill_mid_write_loses_no_committed_minute(tmp_path: Path, run: int) -> None:
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.stdout is not None
    acked = -1
    target = 50 + 17 * run  # kill at a different point each run
    while acked < target:  # event-driven: each line is one commit; EOF if the writer died
        line = proc.stdout.readline()
        if not line:
            break
        acked = int(line)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    # Acks the writer emitted before it died may still sit unread in the pipe.
    for line in proc.stdout.read().splitlines():
        if line.strip().isdigit():
            acked = max(acked, int(line))
    proc.stdout.close()
    assert acked >= target, "the writer did not get far enough"
    store = Store(tmp_path, tz="America/New_York")
    minutes = store.counters("requests", 0, 2**40)
    hist = store.histograms("latency", 0, 2**40)
    # Every acknowledged batch is there, whole; at most the one in flight is extra.
    assert acked + 1 <= len(minutes) <= acked + 2
    assert len(hist) == len(minutes)
    assert sum(h.value for h in store.hour_counters("requests", 0, 2**40)) == len(minutes)
    assert sum(h.count for h in store.hour_histograms("latency", 0, 2**40)) == len(minutes)
    store.close()


# ---- the journal of open minutes: what the collector holds in memory ------------------------

EXPOSITION = ('# TYPE litellm_deployment_total_requests counter\n'
              'litellm_deployment_total_requests_total{{api_provider="openai",litellm_model_name="gpt-4o"}} {n}\n')
T0 = datetime(2026, 11, 9, 14, 0, 5, tzinfo=UTC)


def event_lines(n: int, at: datetime, provider: str = "openai") -> bytes:
    return "\n".join(json.dumps({"ts": at.timestamp(), "provider": provider, "model": "gpt-4o",
                                 "latency": 1.5, "status": 200, "cost": 0.01}) for _ in range(n)).encode()


class Ticks:
    """A monotonic clock the test moves by hand (the checkpoint cadence)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def collector(settings: Settings, ticks: Ticks) -> tuple[Store, CollectStage]:
    store = Store(settings.data_dir, tz=settings.timezone)
    return store, CollectStage(settings, store, Metrics(CollectorRegistry()), monotonic=ticks)


def disk_full(*_: object, **__: object) -> NoReturn:
    """In place of a store write: what SQLite says when the volume is full."""
    raise StoreError("database or disk is full")


def requests_in(store: Store) -> float:
    return sum(p.value for p in store.counters("requests", 0, 2**40))


def test_acknowledged_events_are_journaled_and_replayed_once(settings: Settings) -> None:
    ticks = Ticks()
    store, stage = collector(settings, ticks)
    batch = stage.parse_events(event_lines(40, T0), T0)
    stage.add_events(batch, T0)  # returns only once the journal has committed
    # Killed here: nothing closed the minute. The next run replays the journal, once.
    again, _ = collector(settings, ticks)
    assert requests_in(again) == 40
    assert sum(h.count for h in again.hour_histograms("latency", 0, 2**40)) == 40
    again.close()
    third, _ = collector(settings, ticks)
    assert requests_in(third) == 40
    third.close()
    store.close()


def test_checkpoints_follow_the_cadence_and_closing_settles_the_journal(settings: Settings) -> None:
    ticks = Ticks()
    s = settings.model_copy(update={"router": settings.router.model_copy(update={"model_providers": {"gpt-4o": "openai"}})})
    store, stage = collector(s, ticks)
    stage.ingest_exposition(EXPOSITION.format(n=100), T0, None)  # the baseline
    stage.ingest_exposition(EXPOSITION.format(n=130), T0 + timedelta(seconds=20), None)  # +30, not yet due
    assert Store(settings.data_dir, tz=settings.timezone).recover_open() == 0
    ticks.t = settings.control.checkpoint_seconds
    stage.ingest_exposition(EXPOSITION.format(n=150), T0 + timedelta(seconds=40), None)  # +20, checkpointed
    stage.ingest_exposition(EXPOSITION.format(n=151), T0 + timedelta(seconds=50), None)  # +1, lost if killed now
    killed = Store(settings.data_dir, tz=settings.timezone)
    assert killed.recover_open() == 1 and requests_in(killed) == pytest.approx(50)
    killed.close()
    # A run that closes its minutes settles them: the journal holds nothing to replay twice.
    store2, stage2 = collector(s, ticks)
    assert requests_in(store2) == pytest.approx(50)
    stage2.add_events(stage2.parse_events(event_lines(7, T0), T0), T0)
    stage2.close(T0 + timedelta(minutes=1))
    assert requests_in(store2) == pytest.approx(57)
    assert store2.recover_open() == 0
    store2.close()
    store.close()


def test_a_store_that_cannot_write_accepts_no_event(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = Ticks()
    store, stage = collector(settings, ticks)

    monkeypatch.setattr(store, "journal", disk_full)
    with pytest.raises(StoreError):
        stage.add_events(stage.parse_events(event_lines(5, T0), T0), T0)
    assert stage.aggregator.close_all() == []  # not counted in memory either: the client retries
    store.close()


def test_closing_minutes_on_a_full_disk_keeps_them_open(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = Ticks()
    store, stage = collector(settings, ticks)
    stage.add_events(stage.parse_events(event_lines(5, T0), T0), T0)
    real = store.write

    monkeypatch.setattr(store, "write", disk_full)
    obs, written = stage.close(T0 + timedelta(minutes=2))  # the tick goes on: no error, nothing written
    assert written == 0 and obs.counters == []
    assert stage.metrics.store_write_errors.collect()[0].samples[0].value == 1
    monkeypatch.setattr(store, "write", real)
    stage.close(T0 + timedelta(minutes=3))  # the disk has room again
    assert requests_in(store) == 5
    store.close()


def test_the_store_never_holds_a_non_finite_number(tmp_path: Path) -> None:
    store = Store(tmp_path, tz="UTC")
    key, hist = SeriesKey("spend", "a", "m", ""), SeriesKey("latency", "a", "m", "")
    written = store.write([MinuteRow(60, key, MinuteCell(value=math.inf)),
                           MinuteRow(60, key, MinuteCell(value=math.nan)),
                           MinuteRow(60, hist, MinuteCell(count=1, sum=math.inf, buckets={math.inf: 1.0})),
                           MinuteRow(120, key, MinuteCell(value=2.0))])
    assert written == 1 and store.dropped_non_finite == 3
    assert store.non_finite() == 0
    store.close()


def test_the_v3_migration_removes_non_finite_rows_of_older_stores(tmp_path: Path) -> None:
    import sqlite3

    Store(tmp_path, tz="UTC").close()
    conn = sqlite3.connect(tmp_path / "diurnal.db")
    with conn:
        conn.execute("INSERT INTO series(id, signal, provider, model, route) VALUES (1, 'spend', 'a', '', '')")
        conn.execute("INSERT INTO minute_counter VALUES (1, 60, 9e999)")
        conn.execute("INSERT INTO hour_counter VALUES (1, 0, 9e999, 1)")
        conn.execute("INSERT INTO minute_counter VALUES (1, 120, 3.0)")
        conn.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
        conn.execute("DROP TABLE open_cell")
    conn.close()
    store = Store(tmp_path, tz="UTC")
    assert store.non_finite() == 0
    assert [p.value for p in store.counters("spend", 0, 2**40)] == [3.0]
    store.close()


# ---- the real process: SIGKILL right after the 200 -----------------------------------------

@pytest.mark.integration
def test_events_acknowledged_by_diurnal_run_survive_sigkill(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "diurnal.yaml"
    config.write_text(f"data_dir: {tmp_path / 'data'}\napi:\n  port: {port}\n  token: kill-test-token\n"
                      "control:\n  tick_interval_seconds: 3600\n"
                      "policy:\n  providers:\n    openai: {baseline_weight: 0.5}\n    anthropic: {baseline_weight: 0.5}\n")
    log = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "controller.entrypoints.cli", "run", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    acked = 0
    try:
        wait_http(f"{base}/healthz", timeout=60)
        now = datetime.now(UTC)
        with httpx.Client(timeout=30) as client:
            for i in range(3):
                r = client.post(f"{base}/v1/events", content=event_lines(500, now, provider=("openai", "anthropic")[i % 2]),
                                headers={"Authorization": "Bearer kill-test-token"})
                assert r.status_code == 200 and r.json()["accepted"] == 500, r.text
                acked += 500
        os.kill(proc.pid, signal.SIGKILL)  # right after the last 200: no flush, no clean exit
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    store = Store(tmp_path / "data", tz="UTC")
    assert requests_in(store) == 0  # the minute never closed ...
    assert store.recover_open() > 0  # ... but the journal has it, as the next run will find
    assert requests_in(store) == acked == 1500
    assert sum(p.value for p in store.counters("spend", 0, 2**40)) == pytest.approx(15.0)
    store.close()


# ---- write-behind: the service's closed minutes stored by a thread of their own --------------

def behind(settings: Settings, ticks: Ticks) -> tuple[Store, CollectStage]:
    store = Store(settings.data_dir, tz=settings.timezone)
    return store, CollectStage(settings, store, Metrics(CollectorRegistry()), monotonic=ticks, write_behind=True)


def test_write_behind_keeps_a_late_event_journaled_while_its_minute_is_being_stored(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    ticks = Ticks()
    store, stage = behind(settings, ticks)
    gate, entered = threading.Event(), threading.Event()
    real = store.write

    def slow(*args: object, **kwargs: object) -> int:
        entered.set()
        assert gate.wait(10)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "write", slow)
    stage.add_events(stage.parse_events(event_lines(5, T0), T0), T0)
    obs, handed = stage.close(T0 + timedelta(minutes=2))
    assert handed == 3 and sum(p.value for p in obs.counters if p.key.signal == "requests") == 5  # seen at once
    assert entered.wait(10) and requests_in(store) == 0  # being stored meanwhile
    stage.add_events(stage.parse_events(event_lines(3, T0), T0 + timedelta(minutes=2)), T0 + timedelta(minutes=2))
    gate.set()
    assert stage.drain()
    assert requests_in(store) == 5
    # Killed now: the late event (acknowledged, its minute reopened) is still in the journal;
    # the stored minute's own rows are not, so nothing is counted twice.
    again = Store(settings.data_dir, tz=settings.timezone)
    assert again.recover_open() == 3 and requests_in(again) == 8  # requests, latency, spend
    again.close()
    store.close()


def test_write_behind_on_a_full_disk_keeps_the_minutes_queued_and_stores_them_later(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = Ticks()
    store, stage = behind(settings, ticks)
    stage.add_events(stage.parse_events(event_lines(5, T0), T0), T0)
    real = store.write

    monkeypatch.setattr(store, "write", disk_full)
    def refused() -> float:
        return stage.metrics.store_write_errors.collect()[0].samples[0].value

    obs, _ = stage.close(T0 + timedelta(minutes=2))  # the tick goes on
    assert sum(p.value for p in obs.counters if p.key.signal == "requests") == 5
    deadline = time.monotonic() + 10
    while refused() < 1 and time.monotonic() < deadline:  # the writer's first attempt, in its thread
        time.sleep(0.01)
    assert refused() == 1
    assert not stage.drain()  # refused again when drained: still queued
    assert refused() == 2
    assert requests_in(store) == 0 and store.journal_rows > 0  # the journal keeps them meanwhile
    monkeypatch.setattr(store, "write", real)
    stage.close(T0 + timedelta(minutes=3))  # closes nothing new: retries the queued batch
    assert stage.drain() and requests_in(store) == 5 and store.journal_rows == 0
    stage.add_events(stage.parse_events(event_lines(2, T0), T0 + timedelta(minutes=3)), T0 + timedelta(minutes=3))
    assert stage.flush() == 3 and requests_in(store) == 7  # shutdown: the writer drained, then the rest
    store.close()


def test_a_writer_that_stopped_on_a_bug_hands_its_minutes_back_to_the_tick(
        settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    ticks = Ticks()
    store, stage = behind(settings, ticks)
    stage.add_events(stage.parse_events(event_lines(5, T0), T0), T0)
    real = store.write

    def bug(*_: object, **__: object) -> int:
        raise RuntimeError("a bug in the write path")

    monkeypatch.setattr(store, "write", bug)
    with caplog.at_level("ERROR"):
        stage.close(T0 + timedelta(minutes=2))
        assert stage.writer is not None and not stage.drain()
    assert stage.writer is not None and not stage.writer.alive
    assert "the minute writer stopped on an unexpected error" in caplog.text
    monkeypatch.setattr(store, "write", real)
    stage.add_events(stage.parse_events(event_lines(2, T0), T0 + timedelta(minutes=3)), T0 + timedelta(minutes=3))
    stage.close(T0 + timedelta(minutes=4))  # written in the tick from now on, the stopped writer's minutes first
    assert stage.writer is None and requests_in(store) == 7 and store.journal_rows == 0
    store.close()
