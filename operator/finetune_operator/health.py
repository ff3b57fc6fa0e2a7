"""Liveness that means something: unhealthy when the worker pool or one of the operator's loops is stuck.

kopf's liveness endpoint answers as long as the event loop runs; a pool whose every thread hangs in
an API call, or a periodic loop that stopped ticking, would keep it green. The probe handler asks
``problems()`` and fails the probe (HTTP 500) when it returns anything, so Kubernetes restarts the pod.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Executor


class Heartbeats:
    """Each periodic loop beats once per tick and says how long a silence means it is stuck."""

    def __init__(self) -> None:
        self._beats: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

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
    found = [f"{name} loop has not ticked in time" for name in heartbeats.silent()]
    if not await pool_responds(executor, pool_timeout):
        found.append(f"no free worker thread within {pool_timeout:g}s: every handler is stuck")
    return found
