"""Small helpers shared by the test tiers. Import as ``from helpers import wait_for``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

# hack/ scripts, loaded by path through hack/hack_loader.py (the one loader; re-exported for the tests).
sys.path.append(str(Path(__file__).resolve().parent.parent / "hack"))
from hack_loader import load_hack

__all__ = ["kubectl_runner", "load_hack", "running", "until", "wait_for"]

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``predicate`` until it returns something truthy and return that value.

    Tests wait on observable conditions with a deadline instead of sleeping a guessed time, so they
    are as fast as the cluster allows and fail with a message that says what never happened. An
    exception from the predicate counts as "not yet" (objects appear asynchronously), but the last
    one is reported if the deadline passes.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    error: BaseException | None = None
    while True:
        try:
            last = predicate()
            error = None
            if last:
                return last
        except Exception as exc:
            error = exc
        if time.monotonic() >= deadline:
            detail = f"last error: {error!r}" if error is not None else f"last value: {last!r}"
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what} ({detail})")
        time.sleep(interval)


def kubectl_runner(kubeconfig: str | Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``run(*args, input=None, check=True, timeout=60)``: the cached kubectl against one cluster."""
    binary = str(load_hack("tools").ensure_tools() / "kubectl")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}

    def run(
        *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [binary, *args], input=input, env=env, capture_output=True, text=True, timeout=timeout
        )
        if check and res.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({res.returncode}):\n{res.stderr}")
        return res

    return run


class _Runs(Protocol):
    async def run(self) -> None: ...


async def running(worker: _Runs, body: Callable[[], Awaitable[Any]]) -> None:
    """Run ``body`` while ``worker.run()`` (the reconcile queue, a loop) runs as a task; then cancel it
    and check it ended by that cancellation, not by an error of its own."""
    import pytest

    task = asyncio.create_task(worker.run())
    try:
        await body()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """In an event loop: return once ``predicate()`` holds, fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)
