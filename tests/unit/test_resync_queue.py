"""The periodic resync reconciles through the reconcile queue, never beside it: one worker per
FineTuneJob at a time, every unfinished one reconciled each sweep, and a heartbeat that goes silent
when the queue stops reconciling (operator/finetune_operator/resync.py, work_queue.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from finetune_operator.context import Context
from finetune_operator.metrics import REGISTRY, PhaseBook
from finetune_operator.resync import HEARTBEAT, ResyncLoop
from finetune_operator.settings import OperatorSettings
from finetune_operator.work_queue import WorkQueue
from helpers import running, until

Key = tuple[str, str]
RUNNING = {"phase": "Running", "run": {"number": 1, "jobName": "x-r1"}}
SUCCEEDED = {"phase": "Succeeded", "run": {"number": 1, "jobName": "x-r1"}}


def _index(statuses: dict[str, dict[str, Any]]) -> dict[Key, list[dict[str, Any]]]:
    return {
        ("ns", name): [{"metadata": {"namespace": "ns", "name": name}, "spec": {}, "status": status}]
        for name, status in statuses.items()
    }


def _ctx(**settings: Any) -> Context:
    return Context(
        kube=cast(Any, None),
        settings=OperatorSettings(**settings),
        phases=PhaseBook(),
        post_event=lambda *_: None,
    )


class Reconciles:
    """A reconcile on a thread, as the real one runs: records each call and any overlap per key."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls: Counter[Key] = Counter()
        self.overlaps: list[Key] = []
        self._active: set[Key] = set()
        self._lock = threading.Lock()

    def __call__(self, key: Key) -> None:
        with self._lock:
            if key in self._active:
                self.overlaps.append(key)
            self._active.add(key)
            self.calls[key] += 1
        time.sleep(self.seconds)
        with self._lock:
            self._active.discard(key)


def _queue(reconciles: Reconciles, pool: ThreadPoolExecutor) -> WorkQueue[Key]:
    async def handle(key: Key) -> float | None:
        await asyncio.get_running_loop().run_in_executor(pool, reconciles, key)
        return None

    return WorkQueue(handle, concurrency=8)


def _sweeps_timed() -> float:
    name = "finetune_operator_handler_duration_seconds_count"
    return REGISTRY.get_sample_value(name, {"handler": "resync_sweep"}) or 0.0


def test_a_sweep_never_reconciles_a_job_a_queue_worker_is_reconciling() -> None:
    index = _index({f"j{i}": RUNNING for i in range(4)} | {"done": SUCCEEDED})
    reconciles = Reconciles(seconds=0.05)
    keys = [k for k in index if k[1] != "done"]

    async def body() -> None:
        sweeper = ResyncLoop(_ctx(), index, queue)
        for _ in range(3):
            for key in keys:  # watch events: the queue's workers take them
                queue.add(key)
            await asyncio.wait_for(until(lambda: queue.busy == len(keys)), 5)
            counts = await sweeper.sweep()  # while every one of them is being reconciled
            assert counts == {"queued": len(keys), "pending": 0}
            await queue.idle()

    with ThreadPoolExecutor(8) as pool:
        queue = _queue(reconciles, pool)
        asyncio.run(running(queue, body))
    assert reconciles.overlaps == []
    # Each round: the event's reconcile only; the sweep is served by the handling in progress (a second
    # full reconcile of each running key per interval was a review finding). A change made meanwhile
    # comes with its own event, which queues the key again.
    assert reconciles.calls == Counter({key: 3 for key in keys})


def test_every_unfinished_job_is_reconciled_each_sweep_and_the_sweep_is_timed() -> None:
    index = _index({"running": RUNNING, "done": SUCCEEDED, "pending": {"phase": "Pending"}})
    reconciles = Reconciles(seconds=0.0)
    ctx = _ctx()
    timed = _sweeps_timed()

    async def body() -> None:
        sweeper = ResyncLoop(ctx, index, queue)
        for _ in range(2):
            assert await sweeper.sweep() == {"queued": 2, "pending": 0}

    with ThreadPoolExecutor(2) as pool:
        queue = _queue(reconciles, pool)
        asyncio.run(running(queue, body))
    assert _sweeps_timed() == timed + 2
    assert reconciles.calls == Counter({("ns", "running"): 2, ("ns", "pending"): 2})
    assert ctx.heartbeats.silent() == []


def test_the_heartbeat_goes_silent_when_the_queue_stops_reconciling() -> None:
    """A queue that takes keys but never finishes one: the sweep gives up waiting after its interval
    (the keys stay queued) and beats no more, so the liveness probe fails."""
    index = _index({"running": RUNNING})
    ctx = _ctx(resync_interval_seconds=0.2)
    release = asyncio.Event()

    async def stuck(key: Key) -> float | None:
        await release.wait()
        return None

    async def body() -> None:
        sweeper = ResyncLoop(ctx, index, queue)
        ctx.heartbeats.beat(HEARTBEAT, sweeper.max_silence)
        # Just past the silence allowed after that beat; any later beat would still be in time then.
        judged = time.monotonic() + sweeper.max_silence + 0.1
        assert await sweeper.sweep() == {"queued": 1, "pending": 1}
        assert ctx.heartbeats.silent(now=judged) == [HEARTBEAT], "a stuck queue must silence the resync"
        release.set()
        await queue.idle()
        assert await sweeper.sweep() == {"queued": 1, "pending": 0}
        assert ctx.heartbeats.silent(now=judged) == [], "a sweep whose keys were handled beats"

    queue: WorkQueue[Key] = WorkQueue(stuck, concurrency=1)
    asyncio.run(running(queue, body))
