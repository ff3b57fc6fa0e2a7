"""Liveness that means something: unhealthy when the worker pool or one of the operator's loops is stuck
or gone.

kopf's liveness endpoint answers as long as the event loop runs; a pool whose every thread hangs in
an API call, a periodic loop that stopped ticking, or the reconcile queue's task ended by a bug would
keep it green while nothing is reconciled. The probe handler asks ``problems()`` and fails the probe
(HTTP 500) when it returns anything, so Kubernetes restarts the pod: a clean start (every object
listed and queued again) rather than restarting one task inside a process whose state we no longer
trust.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Executor
from typing import Any

log = logging.getLogger("finetune_operator.health")


class Heartbeats:
    """Each periodic loop beats once per tick and says how long a silence means it is stuck; each
    long-running task is watched so that its end (anything but a cancellation) is a problem."""

    def __init__(self) -> None:
        self._beats: dict[str, tuple[float, float]] = {}
        self._ended: list[str] = []
        self._lock = threading.Lock()

    def watch(self, task: asyncio.Task[Any]) -> None:
        """Report ``task`` (by its name) once it ends by returning or raising; a cancellation (the
        operator's shutdown) is not a problem."""
        task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            problem = f"{task.get_name()} task ended"
            log.error("%s: nothing is done by it until the pod restarts", problem)
        else:
            problem = f"{task.get_name()} task failed: {type(exc).__name__}: {str(exc)[:200]}"
            log.error(
                "%s task failed; nothing is done by it until the pod restarts", task.get_name(), exc_info=exc
            )
        with self._lock:
            self._ended.append(problem)

    def ended(self) -> list[str]:
        with self._lock:
            return list(self._ended)

    def beat(self, name: str, max_silence: float) -> None:
        with self._lock:
            self._beats[name] = (time.monotonic(), max_silence)

    def silent(self, now: float | None = None) -> list[str]:
        now = time.monotonic() if now is None else now
        with self._lock:
            return sorted(n for n, (at, limit) in self._beats.items() if now - at > limit)


async def pool_responds(executor: Executor | None, timeout: float) -> bool:
    """Does a no-op get a worker thread within ``timeout`` seconds?"""
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.run_in_executor(executor, lambda: None), timeout)
    except TimeoutError:
        return False
    return True


async def problems(executor: Executor | None, heartbeats: Heartbeats, pool_timeout: float) -> list[str]:
    found = heartbeats.ended() + [f"{name} loop has not ticked in time" for name in heartbeats.silent()]
    if not await pool_responds(executor, pool_timeout):
        found.append(f"no free worker thread within {pool_timeout:g}s: every handler is stuck")
    return found
