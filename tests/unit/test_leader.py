"""The Lease election's decisions, on an in-memory Lease with resourceVersion semantics and a fake clock.

The real API server and real processes are in tests/e2e/test_leader_election.py.
"""

from __future__ import annotations

import asyncio

import pytest

from finetune_operator.leader import LeaderElector, LeaseSettings, Record
from finetune_operator.settings import OperatorSettings


class MemoryLease:
    """A Lease whose writes fail on a stale resourceVersion, like the API server's; ``down`` makes
    every call raise (network loss)."""

    def __init__(self) -> None:
        self.record: Record | None = None
        self.version = 0
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise OSError("network unreachable")

    def read(self) -> tuple[Record, str] | None:
        self._check()
        return None if self.record is None else (self.record, str(self.version))

    def create(self, record: Record) -> bool:
        self._check()
        if self.record is not None:
            return False
        self.record, self.version = record, 1
        return True

    def write(self, record: Record, version: str) -> bool:
        self._check()
        if version != str(self.version):
            return False
        self.record, self.version = record, self.version + 1
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def elector(lock: MemoryLease, clock: Clock, who: str) -> LeaderElector:
    cfg = LeaseSettings("lease", "ns", who, lease_duration=15, renew_deadline=10, retry_period=2)
    return LeaderElector(lock, cfg, clock=clock, wall=lambda: f"t{clock.now}")


def test_one_holder_while_it_renews_then_the_standby_after_a_full_lease_duration():
    lock, clock = MemoryLease(), Clock()
    a, b = elector(lock, clock, "a"), elector(lock, clock, "b")
    assert a.try_acquire_or_renew() is True
    assert b.try_acquire_or_renew() is False
    for _ in range(20):  # a renews every 2 s; b never gets it
        clock.now += 2
        assert a.try_acquire_or_renew() is True
        assert b.try_acquire_or_renew() is False
    # a dies: b must wait out the lease duration from when *it* last saw the record change.
    clock.now += 14
    assert b.try_acquire_or_renew() is False
    clock.now += 2
    assert b.try_acquire_or_renew() is True
    assert lock.record is not None and lock.record.holder == "b" and lock.record.transitions == 1
    # The old leader, were it still alive, cannot renew over b's record.
    assert a.try_acquire_or_renew() is False


def test_a_stale_write_loses_the_race():
    lock, clock = MemoryLease(), Clock()
    a, b = elector(lock, clock, "a"), elector(lock, clock, "b")
    lock.record, lock.version = Record("gone", 15, "t0", "t0", 3), 7
    assert a.try_acquire_or_renew() is False and b.try_acquire_or_renew() is False
    clock.now += 16
    real_write = lock.write

    def racing_write(record: Record, version: str) -> bool:
        lock.version += 1  # someone else wrote first
        return real_write(record, version)

    lock.write = racing_write  # type: ignore[method-assign]
    assert a.try_acquire_or_renew() is False
    lock.write = real_write  # type: ignore[method-assign]
    assert b.try_acquire_or_renew() is True


def test_release_lets_a_standby_take_over_at_once():
    lock, clock = MemoryLease(), Clock()
    a, b = elector(lock, clock, "a"), elector(lock, clock, "b")
    assert a.try_acquire_or_renew() and not b.try_acquire_or_renew()
    a.release()
    assert lock.record is not None and lock.record.holder is None
    assert b.try_acquire_or_renew() is True


def test_the_leader_gives_up_before_a_standby_may_take_over():
    """Network loss: no renewal for renew_deadline means stop acting; a standby needs lease_duration."""

    async def scenario() -> float:
        lock = MemoryLease()
        cfg = LeaseSettings("lease", "ns", "a", lease_duration=1.5, renew_deadline=0.6, retry_period=0.1)
        a = LeaderElector(lock, cfg)
        await a.acquire()
        lock.down = True
        lost_at = a.last_renew
        await asyncio.wait_for(a.hold(), 5)
        return asyncio.get_running_loop().time() - lost_at

    assert 0.6 <= asyncio.run(scenario()) < 1.5


@pytest.mark.parametrize(("duration", "deadline", "period"), [(10, 10, 2), (15, 10, 10), (15, 10, 0)])
def test_timings_must_nest(duration: float, deadline: float, period: float):
    with pytest.raises(ValueError, match="retryPeriod < renewDeadline < leaseDuration"):
        LeaseSettings("l", "n", "me", lease_duration=duration, renew_deadline=deadline, retry_period=period)


def test_settings_from_the_charts_environment():
    s = OperatorSettings.from_env(
        {
            "FTJ_LEADER_ELECTION_LEASE": "ftj",
            "FTJ_LEADER_ELECTION_NAMESPACE": "ops",
            "FTJ_LEASE_DURATION": "20",
            "FTJ_RENEW_DEADLINE": "12",
            "FTJ_RETRY_PERIOD": "3",
        }
    )
    assert (s.leader_election_lease, s.leader_election_namespace) == ("ftj", "ops")
    assert (s.lease_duration_seconds, s.renew_deadline_seconds, s.retry_period_seconds) == (20, 12, 3)
    assert OperatorSettings.from_env({}).leader_election_lease is None
