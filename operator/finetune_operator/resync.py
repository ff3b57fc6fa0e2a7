"""Level-triggered safety net: every FineTuneJob that is not finished is reconciled again on an interval.

kopf does not retry event handlers, so a Job event whose handling failed (the API server restarting
at that moment) is gone, and a watch can miss an event altogether. This loop walks the FineTuneJobs
in the FineTuneJob index (handlers.py) (memory: no LIST per tick) and runs the same ``reconcile`` the handlers
run for each one that is not finished or whose run is not the one its spec asks for: a missing run
is started, a finished Job is folded into status, a vanished Job is reported. It uses its own small
thread pool, so it never takes workers from the handlers, and beats a heartbeat the liveness probe
checks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from finetune_api.conditions import Phase
from finetune_api.spec import FineTuneJobSpec
from finetune_operator import constants as c
from finetune_operator.context import Context
from finetune_operator.metrics import HANDLER_DURATION
from finetune_operator.naming import spec_hash
from finetune_operator.preflight_wait import RecheckLater
from finetune_operator.reconcile import reconcile
from finetune_operator.run_identity import current_run, new_run_reason, run_digest, used_tokens
from finetune_operator.status import parse_time

log = logging.getLogger("finetune_operator.resync")

Index = Mapping[Any, Iterable[dict[str, Any]]]
HEARTBEAT = "resync"
NEW_OBJECT_GRACE_SECONDS = 600.0


def needs_resync(body: dict[str, Any]) -> bool:
    """Not finished, or finished while the object now asks for another run (see run_identity)."""
    status = body.get("status") or {}
    meta = body.get("metadata") or {}
    if not status.get("run") and _age_seconds(body) < NEW_OBJECT_GRACE_SECONDS:
        # Not handled yet: the reconcile queue (which retries) owns it. Resyncing it too
        # starts the same run twice whenever a burst keeps objects queued longer than one interval
        # (at N=500 every object was reconciled twice: 2 ConfigMap and 2 Job POSTs per run).
        return False
    if status.get("phase") not in Phase.TERMINAL or not status.get("run"):
        return True
    if status.get("observedGeneration") != meta.get("generation"):
        return True
    spec = dict(body.get("spec") or {})

    def digest() -> str:
        try:
            return run_digest(FineTuneJobSpec.model_validate(spec))
        except ValidationError:
            return ""  # an invalid spec: reconcile reports it

    reason = new_run_reason(
        current_run(status),
        used_tokens(status),
        meta.get("generation"),
        status.get("observedGeneration"),
        str((meta.get("annotations") or {}).get(c.ANNOTATION_RERUN) or ""),
        digest,
        lambda: spec_hash(spec),
    )
    return reason is not None


def _age_seconds(body: dict[str, Any]) -> float:
    stamp = (body.get("metadata") or {}).get("creationTimestamp")
    if not stamp:
        return float("inf")
    return max((datetime.now(UTC) - parse_time(str(stamp))).total_seconds(), 0.0)


class ResyncLoop:
    """Start with ``asyncio.create_task(loop.run())`` from an operator start-up handler."""

    def __init__(self, ctx: Context, index: Index) -> None:
        self.ctx = ctx
        self.index = index
        self.interval = ctx.settings.resync_interval_seconds
        self.concurrency = max(ctx.settings.resync_concurrency, 1)
        # Silence longer than a tick plus one API call per worker's share means the loop is stuck.
        self.max_silence = self.interval + 4 * ctx.settings.api_read_timeout_seconds + 60
        self.pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="resync")

    async def run(self) -> None:
        try:
            while True:
                started = time.monotonic()
                self.ctx.heartbeats.beat(HEARTBEAT, self.max_silence)
                try:
                    await self.sweep()
                except Exception:
                    log.exception("resync sweep failed; the next one starts on schedule")
                await asyncio.sleep(max(self.interval - (time.monotonic() - started), 0.1))
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)

    async def sweep(self) -> dict[str, int]:
        """One pass over the index; returns counts (for tests and logs)."""
        started = time.monotonic()
        bodies = [b for key in list(self.index) for b in list(self.index.get(key, ())) if needs_resync(b)]
        counts = {"checked": len(bodies), "failed": 0}
        gate = asyncio.Semaphore(self.concurrency)
        loop = asyncio.get_running_loop()

        async def one(body: dict[str, Any]) -> None:
            async with gate:
                try:
                    await loop.run_in_executor(self.pool, reconcile, self.ctx, body)
                except RecheckLater:
                    pass  # still waiting for a Secret/PVC/ConfigMap: status says so
                except Exception as exc:  # one object's trouble never stops the sweep
                    counts["failed"] += 1
                    log.warning("resync failed: %s: %s", type(exc).__name__, str(exc)[:300])
                self.ctx.heartbeats.beat(HEARTBEAT, self.max_silence)

        await asyncio.gather(*(one(b) for b in bodies))
        HANDLER_DURATION.labels(handler="resync_sweep").observe(time.monotonic() - started)
        return counts
