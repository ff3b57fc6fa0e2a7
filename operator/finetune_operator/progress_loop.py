"""One operator-wide loop that mirrors trainer progress into status and flags stalls.

Why not a kopf timer per FineTuneJob: kopf makes a finalizer mandatory for any resource with a
timer or daemon, so every Running object could only be deleted while the operator was up (a
stopped operator, ``helm uninstall`` or a namespace deletion left objects Terminating forever), and a
timer costs a task per object. This loop walks the Running FineTuneJobs from the in-memory
FineTuneJob index (handlers.py) (no LIST per tick), scrapes with its own small concurrency and thread pool
(so scrapes never take workers from reconciles), stops starting new scrapes when the sweep's
deadline passes, and writes status only when something changed: what someone acts on at once, moved
steps and losses at most every ``progress_write_interval`` (``progress.due``; the newest scrape waits
in ``ctx.progress_book``). It also removes finalizers left by older operator versions.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

from kubernetes.client.exceptions import ApiException

from finetune_api.conditions import Phase
from finetune_api.status import FineTuneJobStatus
from finetune_operator import constants as c
from finetune_operator.context import Context, write
from finetune_operator.metrics import HANDLER_DURATION
from finetune_operator.progress import apply_progress, due
from finetune_operator.progress_book import run_key
from finetune_operator.scrape import Endpoint, ScrapeError, endpoint_of, fetch, parse_metrics, rank0_pod
from finetune_operator.status import ScrapedProgress
from finetune_operator.transitions import UNCHANGED, Change

log = logging.getLogger("finetune_operator.progress")

# Finalizers older versions put on FineTuneJobs (their own, and kopf's default marker).
LEGACY_FINALIZERS: tuple[str, ...] = (f"{c.GROUP}/finalizer", "kopf.zalando.org/KopfFinalizerMarker")
DEFAULT_STALL_TIMEOUT = 900

T = TypeVar("T")
Index = Mapping[Any, Iterable[dict[str, Any]]]


def snapshot(index: Index) -> list[dict[str, Any]]:
    """Every FineTuneJob body in the index, taken in one go (the event loop mutates the index)."""
    return [body for key in list(index) for body in list(index.get(key, ()))]


def is_running(body: dict[str, Any]) -> bool:
    status = body.get("status") or {}
    return status.get("phase") == Phase.RUNNING and bool((status.get("run") or {}).get("jobName"))


def legacy_finalizers(body: dict[str, Any]) -> list[str]:
    return [f for f in (body.get("metadata") or {}).get("finalizers") or [] if f in LEGACY_FINALIZERS]


class ProgressLoop:
    """Start with ``asyncio.create_task(loop.run())`` from an operator start-up handler."""

    def __init__(self, ctx: Context, index: Index) -> None:
        self.ctx = ctx
        self.index = index
        settings = ctx.settings
        self.interval = settings.progress_interval_seconds
        self.write_interval = settings.progress_write_interval_seconds
        self.scrape_timeout = settings.scrape_timeout_seconds
        self.concurrency = max(settings.scrape_concurrency, 1)
        # A sweep never takes longer than its interval (or one scrape timeout, if that is longer).
        self.sweep_deadline = max(self.interval, self.scrape_timeout)
        self.pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="progress")
        self.endpoints: dict[tuple[str, str], Endpoint] = {}

    async def run(self) -> None:
        try:
            while True:
                started = time.monotonic()
                # A sweep is bounded by its deadline; silence well past it means the loop is stuck.
                self.ctx.heartbeats.beat("progress", self.interval + self.sweep_deadline + 60)
                try:
                    await self.sweep()
                except Exception:
                    log.exception("progress sweep failed; the next one starts on schedule")
                await asyncio.sleep(max(self.interval - (time.monotonic() - started), 0.1))
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)

    async def sweep(self) -> dict[str, int]:
        """One pass over the index; returns counts (for tests and logs)."""
        started = time.monotonic()
        bodies = snapshot(self.index)
        running = [b for b in bodies if is_running(b)]
        live = {_job_key(b) for b in running}
        self.endpoints = {k: v for k, v in self.endpoints.items() if k in live}
        self.ctx.progress_book.keep_only({run_key(b, _job_key(b)[1]) for b in running})
        legacy = [b for b in bodies if legacy_finalizers(b)]
        deadline = started + self.sweep_deadline
        counts = {"running": len(running), "refreshed": 0, "skipped": 0, "failed": 0, "unfinalized": 0}
        gate = asyncio.Semaphore(self.concurrency)

        async def one(coro_fn: Callable[[], Any], ok: str) -> None:
            async with gate:
                if time.monotonic() >= deadline:
                    counts["skipped"] += 1
                    return
                try:
                    async with asyncio.timeout(max(deadline - time.monotonic(), 0.0)):
                        await coro_fn()
                    counts[ok] += 1
                except TimeoutError:
                    counts["skipped"] += 1
                except Exception as exc:  # one object's trouble never stops the sweep
                    counts["failed"] += 1
                    detail = f"API {exc.status}: {exc.body}" if isinstance(exc, ApiException) else str(exc)
                    log.warning("progress refresh failed: %s: %s", type(exc).__name__, detail[:500])

        tasks = [one(functools.partial(self.refresh, b, started), "refreshed") for b in running]
        tasks += [one(functools.partial(self.unfinalize, b), "unfinalized") for b in legacy]
        await asyncio.gather(*tasks)
        HANDLER_DURATION.labels(handler="progress_sweep").observe(time.monotonic() - started)
        if counts["skipped"] or counts["failed"]:
            log.info("progress sweep incomplete", extra={"counts": counts})
        return counts

    async def _in_pool(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn)

    async def refresh(self, body: dict[str, Any], sweep_started: float) -> None:
        """Scrape one Running FineTuneJob's rank-0 trainer and fold the values into status.

        Write times are the sweep's start: sweeps start ``interval`` apart, so with a write interval
        of 4 sweeps a run is written every 4th sweep, wherever in its sweep it was scraped."""
        started = time.monotonic()
        key = _job_key(body)
        endpoint = self.endpoints.get(key)
        settings = self.ctx.settings
        if endpoint is None and not (settings.scrape_pod_ips or settings.dev_metrics_endpoints):
            return  # outside a cluster without dev mode no endpoint can be reached: no pod LIST either
        if endpoint is None:
            pods = await self._in_pool(lambda: self.ctx.kube.job_pods(key[0], key[1]))
            pod = rank0_pod(pods)
            endpoint = (
                endpoint_of(pod, settings.scrape_pod_ips, settings.dev_metrics_endpoints) if pod else None
            )
            if endpoint is None:
                return
            self.endpoints[key] = endpoint
        values: dict[str, float] = {}
        try:
            text = await fetch(endpoint, self.scrape_timeout)
            values = await self._in_pool(lambda: parse_metrics(text))
        except ScrapeError as exc:
            log.debug("scrape failed: %s", exc)
            self.endpoints.pop(key, None)  # the pod may have been replaced: look it up again
        interval = self.write_interval
        await self._in_pool(lambda: write_progress(self.ctx, body, values, sweep_started, interval))
        HANDLER_DURATION.labels(handler="progress").observe(time.monotonic() - started)

    async def unfinalize(self, body: dict[str, Any]) -> None:
        """The index shows the patched list on its next event, so each object is patched about once."""
        await self._in_pool(lambda: remove_finalizers(self.ctx, body, LEGACY_FINALIZERS))


def write_progress(
    ctx: Context, body: dict[str, Any], values: dict[str, float], now: float, write_interval: float
) -> None:
    """Fold one scrape into the run's newest progress and write it to status when ``progress.due``
    says so (``now``: monotonic seconds); nothing is written when nothing changed."""
    status = FineTuneJobStatus.from_stored(body.get("status"))
    if status.run is None:
        return
    job_name = status.run.job_name
    stall_timeout = int((body.get("spec") or {}).get("stallTimeoutSeconds") or DEFAULT_STALL_TIMEOUT)
    generation = body["metadata"].get("generation")
    book, key = ctx.progress_book, run_key(body, job_name)
    folded: list[ScrapedProgress] = []

    def mutate(fresh: dict[str, Any], st: FineTuneJobStatus) -> Change:
        folded.clear()
        if st.run is None or st.run.job_name != job_name or st.phase != Phase.RUNNING:
            return UNCHANGED
        latest = book.latest(key)
        if not values and st.progress is None and latest is None:
            return UNCHANGED  # nothing scraped yet and nothing to flag
        stored = st.model_copy(deep=True)
        if latest is not None:  # the newest scrape, not the last write, is what this one follows
            st.progress, st.metrics = latest.progress, latest.metrics
        apply_progress(st, values, datetime.now(UTC), stall_timeout, generation)
        folded.append(ScrapedProgress(st.progress, st.metrics))
        return Change(due(book.written_at(key), now, stored, st, write_interval))

    written = write(ctx, body, mutate)
    if folded:
        book.record(key, folded[0], now if written is not None else None)


def remove_finalizers(ctx: Context, body: dict[str, Any], names: Iterable[str]) -> None:
    """Drop ``names`` from the object's finalizers with a JSON patch guarded by a test of the list."""
    meta = body["metadata"]
    current = list(meta.get("finalizers") or [])
    keep = [f for f in current if f not in set(names)]
    if keep == current:
        return
    patch = [
        {"op": "test", "path": "/metadata/finalizers", "value": current},
        {"op": "replace", "path": "/metadata/finalizers", "value": keep},
    ]
    try:
        ctx.kube.custom.patch_namespaced_custom_object(
            c.GROUP,
            c.VERSION,
            meta["namespace"],
            c.PLURAL,
            meta["name"],
            patch,
            _content_type="application/json-patch+json",
        )
        log.info("removed legacy finalizers", extra={"ftj": f"{meta['namespace']}/{meta['name']}"})
    except ApiException as exc:
        if exc.status not in (404, 422):  # gone, or the list changed: the next sweep sees it afresh
            raise


def _job_key(body: dict[str, Any]) -> tuple[str, str]:
    run = (body.get("status") or {}).get("run") or {}
    return str(body["metadata"]["namespace"]), str(run.get("jobName"))
