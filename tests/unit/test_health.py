"""The liveness checks see a stuck worker pool and a loop that stopped ticking (real threads, real clock)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

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
