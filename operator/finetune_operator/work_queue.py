"""A queue of object keys to reconcile, with the guarantees of controller-runtime's work queue.

- A key is handled by at most one worker at a time, and queued at most once: a burst of events for
  one object becomes one reconcile of its latest state.
- A key added while it is being handled is handled again right after (nothing that changed during a
  reconcile is missed).
- A handler asks for a retry by returning a delay in seconds; the key comes back after it unless an
  earlier add brings it back sooner.
- ``add_watched`` also says when the key has been handled since (the periodic resync waits on it).

Pure asyncio, no kopf and no Kubernetes client: ``handlers.py`` feeds it from the FineTuneJob watch
and the periodic resync (resync.py), and hands it the reconcile (why the operator does not use kopf's
create/update/resume handlers for that is explained there).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger("finetune_operator.work_queue")

K = TypeVar("K", bound=Hashable)

UNEXPECTED_ERROR_DELAY = 60.0


class WorkQueue(Generic[K]):
    """Start ``run()`` as a task; ``add`` keys from the event loop's thread."""

    def __init__(self, handle: Callable[[K], Awaitable[float | None]], concurrency: int) -> None:
        self._handle = handle
        self._concurrency = max(concurrency, 1)
        # Two lanes: what the watch brought first, then the resync's background sweep.
        self._ready: deque[K] = deque()
        self._later: deque[K] = deque()
        self._in_later: set[K] = set()  # queued keys whose only place is the background lane
        self._available = asyncio.Semaphore(0)  # one per lane entry (a promoted key leaves a stale one)
        self._queued: set[K] = set()
        self._active: set[K] = set()
        self._again: set[K] = set()
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._waiters: dict[K, list[asyncio.Future[None]]] = {}
        self._handling: dict[K, list[asyncio.Future[None]]] = {}  # released when the handling ends
        self._finished = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def busy(self) -> int:
        return len(self._active)

    @property
    def finished(self) -> int:
        """How many handlings have ended so far (whatever their outcome): progress."""
        return self._finished

    def add(self, key: K, after: float = 0.0, background: bool = False) -> None:
        """Handle ``key`` now (or in ``after`` seconds), once, by one worker. A ``background`` key waits
        until no other key is queued (a resync sweep of 2,000 objects never delays a new one); an
        ordinary add of a key waiting in the background moves it ahead."""
        if after > 0:
            timer = self._timers.get(key)
            due = asyncio.get_running_loop().time() + after
            if timer is not None and timer.when() <= due:
                return  # already coming back sooner
            if timer is not None:
                timer.cancel()
            self._timers[key] = asyncio.get_running_loop().call_later(after, self._fire, key)
            return
        if background and (key in self._timers or key in self._active):
            return  # a retry after its backoff, or the handling in progress, serves the sweep too
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self._active:
            self._again.add(key)
        elif key in self._queued:
            if not background and key in self._in_later:
                self._in_later.discard(key)
                self._push(self._ready, key)
        else:
            self._queued.add(key)
            self._idle.clear()
            if background:
                self._in_later.add(key)
                self._push(self._later, key)
            else:
                self._push(self._ready, key)

    def _push(self, lane: deque[K], key: K) -> None:
        lane.append(key)
        self._available.release()

    async def _next(self) -> K:
        """The next queued key, the watch's lane first; skips the stale entry a promoted key left."""
        while True:
            await self._available.acquire()
            if self._ready:
                key = self._ready.popleft()
                if key in self._queued and key not in self._in_later:
                    return key
            else:
                key = self._later.popleft()
                if key in self._in_later:
                    self._in_later.discard(key)
                    return key

    def add_watched(self, key: K, background: bool = False) -> asyncio.Future[None]:
        """``add`` now; the future is done once a handling of ``key`` that started after this call has
        ended (whatever its outcome), or once the key is forgotten."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if background and key in self._active:
            self._handling[key].append(waiter)  # the handling in progress serves a background add
            return waiter
        self._waiters.setdefault(key, []).append(waiter)
        self.add(key, background=background)
        return waiter

    def forget(self, key: K) -> None:
        """Drop a pending retry (the object is gone); a queued or running key still runs once."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._again.discard(key)
        _release(self._waiters.pop(key, []))

    async def run(self) -> None:
        """Run the workers until cancelled."""
        workers = [
            asyncio.create_task(self._work(), name=f"reconcile worker {i}") for i in range(self._concurrency)
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
            for timer in self._timers.values():
                timer.cancel()

    async def idle(self) -> None:
        """Return once nothing is queued or in progress (retries waiting on a timer do not count)."""
        await self._idle.wait()

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def _work(self) -> None:
        while True:
            key = await self._next()
            self._queued.discard(key)
            self._active.add(key)
            waiters = self._handling[key] = self._waiters.pop(key, [])
            delay: float | None = None
            try:
                delay = await self._handle(key)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in a handler must not stop the worker; try again later
                log.exception("reconcile failed unexpectedly; retrying in %.0f s", UNEXPECTED_ERROR_DELAY)
                delay = UNEXPECTED_ERROR_DELAY
            finally:
                self._active.discard(key)
                self._finished += 1
                self._handling.pop(key, None)
                _release(waiters)
            if key in self._again:
                self._again.discard(key)
                self.add(key)
            elif delay is not None:
                self.add(key, after=delay)
            if not self._queued and not self._active:
                self._idle.set()


def _release(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)
