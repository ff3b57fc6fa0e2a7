"""The liveness checks see a stuck worker pool, a loop that stopped ticking and a long-running task that
ended (real threads, real clock, real tasks)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
import pytest

from finetune_operator.health import Heartbeats, problems


def test_a_free_pool_and_fresh_beats_are_healthy():
    beats = Heartbeats()
    beats.beat("resync", max_silence=60)
    with ThreadPoolExecutor(1) as pool:
        assert asyncio.run(problems(pool, beats, pool_timeout=2)) == []


def test_a_pool_whose_every_worker_hangs_is_unhealthy():
    release = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        for _ in range(2):
            pool.submit(release.wait, 30)
        try:
            found = asyncio.run(problems(pool, Heartbeats(), pool_timeout=0.3))
        finally:
            release.set()
    assert found and "worker" in found[0]


def test_a_loop_that_stopped_ticking_is_unhealthy():
    beats = Heartbeats()
    beats.beat("resync", max_silence=0.0)
    assert beats.silent(now=float("inf")) == ["resync"]
    with ThreadPoolExecutor(1) as pool:
        found = asyncio.run(problems(pool, beats, pool_timeout=2))
    assert found == ["resync loop has not ticked in time"]


async def _ended(work: Callable[[], Coroutine[Any, Any, None]], cancel: bool = False) -> Heartbeats:
    beats = Heartbeats()
    task = asyncio.create_task(work(), name="reconcile queue")
    beats.watch(task)
    if cancel:
        await asyncio.sleep(0)  # let it start
        task.cancel()
    with contextlib.suppress(BaseException):
        await task
    await asyncio.sleep(0)  # done callbacks run on the next turn of the loop
    return beats


async def _problems(beats: Heartbeats) -> list[str]:
    with ThreadPoolExecutor(1) as pool:
        return await problems(pool, beats, pool_timeout=2)


def test_a_long_running_task_that_fails_makes_the_probe_fail_naming_it(caplog: pytest.LogCaptureFixture):
    async def crash() -> None:
        raise RuntimeError("a bug in the queue")

    async def check() -> list[str]:
        return await _problems(await _ended(crash))

    with caplog.at_level(logging.ERROR, logger="finetune_operator.health"):
        found = asyncio.run(check())
    assert found == ["reconcile queue task failed: RuntimeError: a bug in the queue"]
    logged = [r for r in caplog.records if r.exc_info]
    assert logged and "reconcile queue" in logged[0].getMessage(), "logged with its traceback"


def test_a_long_running_task_that_returns_makes_the_probe_fail():
    async def returns() -> None:
        return None

    async def check() -> list[str]:
        return await _problems(await _ended(returns))

    assert asyncio.run(check()) == ["reconcile queue task ended"]


def test_a_task_cancelled_at_shutdown_is_not_a_problem():
    async def forever() -> None:
        await asyncio.Event().wait()

    async def check() -> list[str]:
        return await _problems(await _ended(forever, cancel=True))

    assert asyncio.run(check()) == []


def test_the_operator_starts_its_long_running_tasks_watched():
    """handlers.start_watched (the reconcile queue, progress and resync loops) reports through the probe."""
    from finetune_operator.context import Context
    from finetune_operator.handlers import start_watched
    from finetune_operator.metrics import PhaseBook
    from finetune_operator.settings import OperatorSettings

    ctx = Context(kube=Any, settings=OperatorSettings(), phases=PhaseBook(), post_event=lambda *_: None)

    async def crash() -> None:
        raise RuntimeError("boom")

    async def check() -> list[str]:
        task = start_watched(kopf.Memo(ctx=ctx), crash(), "progress loop")
        with contextlib.suppress(RuntimeError):
            await task
        await asyncio.sleep(0)
        return await _problems(ctx.heartbeats)

    assert asyncio.run(check()) == ["progress loop task failed: RuntimeError: boom"]
