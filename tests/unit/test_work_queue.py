"""The reconcile queue: one worker per key at a time, one queued entry per key, nothing missed, retries
after their delay (operator/finetune_operator/work_queue.py)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from finetune_operator import work_queue
from finetune_operator.work_queue import WorkQueue
from helpers import running, until


def test_a_burst_for_one_key_is_one_reconcile_and_keys_never_run_twice_at_once() -> None:
    calls: Counter[str] = Counter()
    active: set[str] = set()
    overlaps = []
    most = 0

    async def handle(key: str) -> float | None:
        nonlocal most
        if key in active:
            overlaps.append(key)
        active.add(key)
        most = max(most, len(active))
        calls[key] += 1
        await asyncio.sleep(0.02)
        active.discard(key)
        return None

    async def body() -> None:
        for _ in range(50):
            for key in ("a", "b", "c", "d", "e"):
                queue.add(key)
        await queue.idle()

    queue: WorkQueue[str] = WorkQueue(handle, concurrency=3)
    asyncio.run(running(queue, body))
    assert calls == Counter({"a": 1, "b": 1, "c": 1, "d": 1, "e": 1})
    assert not overlaps
    assert most == 3, "at most `concurrency` keys at once, and all of them used"


def test_a_key_added_while_it_is_handled_is_handled_again_after() -> None:
    seen: list[int] = []
    version = 0

    async def handle(key: str) -> float | None:
        seen.append(version)
        await asyncio.sleep(0.05)
        return None

    async def body() -> None:
        nonlocal version
        queue.add("x")
        await until(lambda: queue.busy == 1)
        version = 1  # the object changed during the reconcile
        queue.add("x")
        queue.add("x")
        await until(lambda: len(seen) == 2)
        await queue.idle()

    queue: WorkQueue[str] = WorkQueue(handle, concurrency=4)
    asyncio.run(running(queue, body))
    assert seen == [0, 1], "the change made during the first reconcile is reconciled once more"


def test_a_retry_comes_back_after_its_delay_and_a_new_add_brings_it_back_sooner() -> None:
    times: list[float] = []

    async def handle(key: str) -> float | None:
        times.append(time.monotonic())
        return 0.3 if len(times) == 1 else None

    async def body() -> None:
        queue.add("k")
        await until(lambda: len(times) == 2)
        await asyncio.sleep(0.4)

    queue: WorkQueue[str] = WorkQueue(handle, concurrency=1)
    asyncio.run(running(queue, body))
    assert len(times) == 2
    assert times[1] - times[0] >= 0.29

    times.clear()

    async def sooner() -> None:
        queue2.add("k")
        await until(lambda: len(times) == 1)
        queue2.add("k")  # the object changed: no need to wait for the backoff
        await until(lambda: len(times) == 2)

    queue2: WorkQueue[str] = WorkQueue(handle, concurrency=1)
    asyncio.run(running(queue2, sooner))
    assert times[1] - times[0] < 0.25


def test_a_crashing_handler_is_retried_and_forget_drops_a_pending_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(work_queue, "UNEXPECTED_ERROR_DELAY", 0.05)
    calls: Counter[str] = Counter()

    async def handle(key: str) -> float | None:
        calls[key] += 1
        if key == "bug" and calls[key] == 1:
            raise RuntimeError("a bug")
        return 0.2 if key == "gone" else None

    async def body() -> None:
        queue.add("bug")
        queue.add("gone")
        await until(lambda: calls["bug"] == 2 and calls["gone"] == 1)
        queue.forget("gone")  # deleted: its retry must not run
        await asyncio.sleep(0.35)

    queue: WorkQueue[str] = WorkQueue(handle, concurrency=2)
    asyncio.run(running(queue, body))
    assert calls == Counter({"bug": 2, "gone": 1})


def test_a_watched_add_is_done_after_a_handling_that_started_later_or_when_forgotten() -> None:
    started: list[str] = []
    gates = [asyncio.Event() for _ in range(3)]  # one per handling

    async def handle(key: str) -> float | None:
        started.append(key)
        await gates[len(started) - 1].wait()
        return None

    async def body() -> None:
        queue.add("k")
        await until(lambda: queue.busy == 1)
        watched = queue.add_watched("k")  # while "k" is handled: only the next handling counts
        gates[0].set()
        await until(lambda: len(started) == 2)
        assert queue.finished == 1 and not watched.done()
        gates[1].set()
        await asyncio.wait_for(watched, 5)
        queue.add("gone")
        await until(lambda: queue.busy == 1)
        forgotten = queue.add_watched("gone")
        queue.forget("gone")  # deleted meanwhile: nobody waits for a handling that will not come
        assert forgotten.done()
        gates[2].set()

    queue: WorkQueue[str] = WorkQueue(handle, concurrency=1)
    asyncio.run(running(queue, body))
    assert started == ["k", "k", "gone"]


def test_background_keys_wait_for_the_watchs_keys_and_an_event_moves_one_ahead() -> None:
    """A resync sweep queues every unfinished object in the background lane: a new FineTuneJob's
    reconcile never waits behind 2,000 of them, and an event for a key waiting there promotes it."""
    order: list[str] = []
    gate = asyncio.Event()

    async def handle(key: str) -> float | None:
        if key == "first":
            await gate.wait()
        order.append(key)
        return None

    async def body() -> None:
        queue.add("first")  # holds the only worker while the lanes fill
        await until(lambda: queue.busy == 1)
        for key in ("b1", "b2", "b3"):
            queue.add(key, background=True)
        queue.add("new")
        queue.add("b3")  # an event for a key waiting in the background
        queue.add("b1", background=True)  # already queued: no second entry
        gate.set()
        await until(lambda: len(order) == 5)
        await queue.idle()

    queue: WorkQueue[str] = WorkQueue(handle, 1)
    asyncio.run(running(queue, body))
    assert order == ["first", "new", "b3", "b1", "b2"]


def test_a_sweep_neither_cancels_a_retrys_backoff_nor_runs_a_running_key_twice() -> None:
    """Review findings: the resync's background add cancelled a failed key's retry timer (it ran at
    once, or waited behind a whole burst), and one of a key being handled queued a second full
    reconcile ahead of the background lane."""
    calls: Counter[str] = Counter()
    gate = asyncio.Event()

    async def handle(key: str) -> float | None:
        calls[key] += 1
        if key == "running":
            await gate.wait()
        return None

    async def body() -> None:
        queue.add("retrying", after=30)
        swept = queue.add_watched("retrying", background=True)
        assert "retrying" in queue._timers and "retrying" not in queue._queued
        queue.add("running")
        await until(lambda: queue.busy == 1)
        during = queue.add_watched("running", background=True)
        assert not during.done()
        gate.set()
        await asyncio.wait_for(during, 5)  # released by the handling that was in progress
        await queue.idle()
        assert calls["running"] == 1 and calls["retrying"] == 0
        assert not swept.done(), "released by the retry's own handling, after its backoff"
        queue.forget("retrying")
        assert swept.done()

    queue: WorkQueue[str] = WorkQueue(handle, 2)
    asyncio.run(running(queue, body))
