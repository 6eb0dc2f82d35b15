"""Leader election through a Lease (controller/actuators/lease.py) against an API server with
client-go's Lease semantics (sim/kubeapi.py): resourceVersion conflicts, renewTime and
leaseDurationSeconds. Two replicas campaign; the leader is killed mid-term, then the next one
is partitioned from the API. Counted every 20 ms: the seconds with no actor, and the seconds
with two, which must be none."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from controller.actuators.lease import LeaderElector, LeaseClient, LeaseConflict, LeaseRecord
from sim.kubeapi import LeaseAPI

LEASE, DEADLINE, RETRY = 2.0, 1.5, 0.25


def elector(api: LeaseAPI, tmp_path: Path, name: str) -> LeaderElector:
    token = tmp_path / f"token-{name}"
    token.write_text(f"token-{name}")
    client = LeaseClient(api.url, "llm", "diurnal", token, timeout=0.5)
    return LeaderElector(client, name, lease_duration=LEASE, renew_deadline=DEADLINE, retry_period=RETRY)


class Watch:
    """Samples who acts every 20 ms."""

    def __init__(self) -> None:
        self.electors: dict[str, LeaderElector] = {}
        self.samples: list[tuple[float, tuple[str, ...]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            actors = tuple(sorted(n for n, e in list(self.electors.items()) if e.is_leader()))
            self.samples.append((time.monotonic(), actors))
            time.sleep(0.02)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def seconds(self, actors: int, since: float = 0.0) -> float:
        return sum(b[0] - a[0] for a, b in zip(self.samples, self.samples[1:], strict=False)
                   if a[0] >= since and len(a[1]) == actors)

    def leader_since(self, since: float) -> str | None:
        for t, actors in self.samples:
            if t >= since and len(actors) == 1:
                return actors[0]
        return None


def wait_for(check: object, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout}s")


def test_one_actor_through_a_kill_and_a_partition_and_never_two(tmp_path: Path) -> None:
    with LeaseAPI() as api, Watch() as watch:
        a, b = elector(api, tmp_path, "a").start(), elector(api, tmp_path, "b").start()
        watch.electors.update(a=a, b=b)
        wait_for(lambda: a.is_leader() or b.is_leader(), 5)
        first, other = (a, b) if a.is_leader() else (b, a)

        # The leader is killed mid-term (no release: SIGKILL); the other takes over once the
        # record has not moved for a lease duration, as it sees it.
        killed = time.monotonic()
        first._stop.set()  # its loop ends without a word: no renewal, no release
        took_over = wait_for(other.is_leader, LEASE + 3)
        assert LEASE - RETRY <= took_over <= LEASE + 2 * RETRY + 0.5

        # A new replica joins; then the leader is cut off from the API (requests hang).
        c = elector(api, tmp_path, "c").start()
        watch.electors["c"] = c
        time.sleep(1)
        assert not c.is_leader()
        partitioned = time.monotonic()
        api.partitioned.add(f"token-{other.identity}")
        stopped = wait_for(lambda: not other.is_leader(), DEADLINE + 1)
        assert stopped <= DEADLINE + 0.1  # it stops acting by its renew deadline, whatever the API does
        wait_for(c.is_leader, LEASE + 3)
        time.sleep(1)
        api.partitioned.clear()
        time.sleep(1.5)  # back on the network: the old leader sees c's lease and stays a follower
        assert c.is_leader() and not other.is_leader()
        c.stop()
        other.stop()
        first.client.close()

    none_after_kill = watch.seconds(0, since=killed) - watch.seconds(0, since=partitioned)
    none_after_partition = watch.seconds(0, since=partitioned)
    two = watch.seconds(2)
    # The killed leader stays in the count: a replica that is only frozen (SIGSTOP, a long
    # pause) believes it leads until its renew deadline, and the other must not act before.
    print(f"\ntakeover {took_over:.2f}s after the kill (no actor for {none_after_kill:.2f}s after the dead "
          f"leader's renew deadline); {stopped:.2f}s for the partitioned leader to stop, no actor for "
          f"{none_after_partition:.2f}s after the partition; two actors: {two:.2f}s")
    assert two == 0.0
    assert none_after_kill <= LEASE + 2 * RETRY + 0.5
    assert none_after_partition <= LEASE + 3


def test_a_stale_write_loses_with_a_conflict(tmp_path: Path) -> None:
    with LeaseAPI() as api:
        token = tmp_path / "t"
        token.write_text("t")
        client = LeaseClient(api.url, "llm", "diurnal", token)
        created = client.create(LeaseRecord("a", 15, None, None, 0))
        client.update(LeaseRecord("a", 15, None, "2026-11-30T00:00:00.000000Z", 0, created.resource_version))
        with pytest.raises(LeaseConflict):  # the version it read is no longer current
            client.update(LeaseRecord("b", 15, None, None, 1, created.resource_version))
        with pytest.raises(LeaseConflict):
            client.create(LeaseRecord("b", 15, None, None, 0))
        client.close()


def test_a_released_lease_is_taken_at_once(tmp_path: Path) -> None:
    with LeaseAPI() as api:
        a, b = elector(api, tmp_path, "a").start(), elector(api, tmp_path, "b")
        wait_for(a.is_leader, 5)
        b.start()
        time.sleep(0.5)
        a.stop(release=True)  # a clean shutdown hands it over
        assert wait_for(b.is_leader, LEASE) < 1.0
        lease = api.lease("llm", "diurnal")
        assert lease is not None and lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
        b.stop()


def test_timings_must_nest() -> None:
    with pytest.raises(ValueError, match="retry_period < renew_deadline < lease_duration"):
        LeaderElector(None, "x", lease_duration=10, renew_deadline=10, retry_period=2)  # type: ignore[arg-type]


def test_only_the_replica_that_acts_publishes_and_a_new_leader_pushes_the_decision_in_force(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from controller import Controller, ReasonCode, load_settings

    decision_file = tmp_path / "decision.json"
    settings = load_settings(data_dir=str(tmp_path / "data"), guardrails={"mode": "act"},
                             publish={"file": {"path": str(decision_file)}},
                             policy={"providers": {"openai": {"baseline_weight": 0.5},
                                                   "anthropic": {"baseline_weight": 0.5}}})
    now = datetime(2026, 11, 9, 14, tzinfo=UTC)
    ctl = Controller.from_settings(settings, clock=lambda: now)
    leading = False
    ctl.acting = lambda: leading
    decision = ctl.step(at=now)
    assert not decision_file.exists()  # a follower writes nothing
    assert any(r.code == ReasonCode.NotLeader and r.knob == "actuators" for r in decision.reasons)
    assert ctl.registry.get_sample_value("diurnal_leader") == 0
    leading = True
    decision = ctl.step(at=now)  # the same decision, now acted on: pushed at once
    assert decision_file.exists() and not any(r.code == ReasonCode.NotLeader for r in decision.reasons)
    assert ctl.registry.get_sample_value("diurnal_leader") == 1
    ctl.close()


def test_ha_settings_nest_and_fail_naming_the_field() -> None:
    from controller import ConfigError, load_settings

    with pytest.raises(ConfigError, match="retry_period_seconds < renew_deadline_seconds < lease_duration_seconds"):
        load_settings(ha={"enabled": True, "lease_duration_seconds": 10, "renew_deadline_seconds": 12})


@pytest.mark.timeout(180)
def test_two_diurnal_run_processes_elect_one_actor_and_the_other_takes_over_after_sigkill(tmp_path: Path) -> None:
    """The service wiring: two real `diurnal run` with ha.enabled against the Lease API."""
    from bench.sidecar import Sidecar

    def config(name: str) -> str:
        token = tmp_path / f"token-{name}"
        token.write_text(f"token-{name}")
        return ("guardrails:\n  mode: act\n"
                f"publish:\n  file:\n    path: {tmp_path / name / 'decision.json'}\n"
                f"  kubernetes:\n    api_url: {api.url}\n    token_path: {token}\n    timeout_seconds: 0.5\n"
                f"ha:\n  enabled: true\n  namespace: llm\n  identity: {name}\n  lease_duration_seconds: 3\n"
                "  renew_deadline_seconds: 2\n  retry_period_seconds: 0.5\n"
                "control:\n  tick_interval_seconds: 0.5\n"
                "policy:\n  providers:\n    openai: {baseline_weight: 0.5}\n    anthropic: {baseline_weight: 0.5}\n")

    with LeaseAPI() as api:
        sidecars = {}
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            sidecars[name] = Sidecar(tmp_path / name, config(name)).start()
        try:
            def leaders() -> list[str]:
                return [n for n, sc in sidecars.items() if sc.alive() and sc.metric("diurnal_leader") == 1]

            wait_for(lambda: len(leaders()) == 1, 30)
            [first] = leaders()
            other = "b" if first == "a" else "a"
            time.sleep(1.5)
            assert leaders() == [first]
            assert (tmp_path / first / "decision.json").exists()
            assert not (tmp_path / other / "decision.json").exists()  # the follower writes nothing
            follower = sidecars[other].get("/v1/decision").json()
            assert any(r["code"] == "NotLeader" for r in follower["reasons"])
            sidecars[first].kill()
            took = wait_for(lambda: leaders() == [other], 15)
            assert (tmp_path / other / "decision.json").exists()  # the decision in force, pushed at once
            print(f"\nSIGKILL of the acting diurnal: {other} acts {took:.1f}s later")
        finally:
            for sc in sidecars.values():
                if sc.alive():
                    sc.stop()
