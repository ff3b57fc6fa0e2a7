"""kopf handlers: thin wrappers that time themselves and call ``reconcile``."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import kopf
import urllib3
from kubernetes.client.exceptions import ApiException

from finetune_api.lenient import copy_json
from finetune_operator import constants as c
from finetune_operator.context import Context
from finetune_operator.ftj_index import FtjIndex, Key
from finetune_operator.health import problems
from finetune_operator.job_sightings import JobSightings
from finetune_operator.metrics import HANDLER_DURATION
from finetune_operator.parked_job_events import ParkedJobEvents
from finetune_operator.preflight_wait import RecheckLater
from finetune_operator.progress_loop import ProgressLoop
from finetune_operator.reconcile import on_job_event, reconcile
from finetune_operator.resync import ResyncLoop
from finetune_operator.settings import OperatorSettings
from finetune_operator.work_queue import WorkQueue

POOL_PROBE_TIMEOUT = 10.0

log = logging.getLogger("finetune_operator")


def retry_delay(retry: int) -> float:
    """Exponential backoff for transient failures: 1, 2, 4 ... seconds, at most a minute."""
    return float(min(2 ** max(retry, 0), 60))


def _attempt(
    ctx: Context, name: str, fn: Callable[[], None], retry: int = 0, body: dict[str, Any] | None = None
) -> float | None:
    """Run a handler body: None when it is done, or the delay before it must run again.

    Transient API errors (a 409, throttling, a restarting or unreachable API server) and waits for a
    missing Secret/PVC/ConfigMap come back with exponential backoff, never lost. A request the API
    server refuses for good is logged, announced with a Warning Event and not retried until the
    object changes.
    """
    start = time.perf_counter()
    try:
        fn()
        return None
    except ApiException as exc:
        if exc.status in (0, 409, 429) or exc.status >= 500:
            log.warning("%s: API %s %s (transient)", name, exc.status, exc.reason)
            return retry_delay(retry)
        message = f"API {exc.status}: {exc.reason}: {str(exc.body)[:500]}"
        log.error("%s failed: %s", name, message)
        if body is not None:
            ctx.post_event(body, "Warning", "ReconcileFailed", f"{message} (retried when the object changes)")
        return None
    except RecheckLater:
        return retry_delay(retry)
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        # Timeouts, refused connections, a failed-over API server: try again later.
        log.warning("%s: API unreachable (%s) (transient)", name, exc)
        return retry_delay(retry)
    finally:
        HANDLER_DURATION.labels(handler=name).observe(time.perf_counter() - start)


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    """Attach every handler to ``registry`` (no import-time side effects)."""
    # Not a kopf index: with one, kopf holds every object's handlers until all objects are indexed,
    # through one toggle per object whose every change wakes every waiting worker. At 2,000
    # FineTuneJobs a restarted operator spent minutes in that (0 handled after 3 minutes, the event
    # loop 69 % in ToggleSet notify_all); handlers that find no body here read it from the API.
    index = FtjIndex()
    handled: dict[Key, int] = {}  # the trigger of each key's last finished reconcile
    retrying: dict[Key, int] = {}  # the trigger of a failed one, due again after its backoff
    retries: dict[Key, int] = {}
    in_flight: dict[Key, int] = {}  # the trigger each running reconcile works on
    parked = ParkedJobEvents()
    sightings = JobSightings()  # Job events folded without error: what the resync may leave out
    # Every reconcile goes through it, the resync's too: one worker per FineTuneJob at a time.
    queue: WorkQueue[Key] = WorkQueue(lambda key: _reconcile_key(key), settings.max_workers)
    register_safety_net(registry, index, queue, sightings)

    async def _reconcile_key(key: Key) -> float | None:
        """Reconcile the latest body of ``key``; the retry delay, or None when done."""
        bodies = index.get(key)
        if not bodies:
            return None  # deleted meanwhile
        body = copy_json(bodies[0])
        # Until its bookkeeping is done, events of this same state (our own status writes) queue nothing.
        trigger = in_flight[key] = trigger_of(body)
        try:
            return await _reconcile_body(key, body, trigger)
        finally:
            in_flight.pop(key, None)

    async def _reconcile_body(key: Key, body: dict[str, Any], trigger: int) -> float | None:
        ctx: Context = memo_ref["ctx"]
        executor = memo_ref["executor"]
        loop = asyncio.get_running_loop()
        retry = retries.get(key, 0)

        def work() -> None:
            # A deleted one's children go by ownership; the progress loop drops legacy finalizers.
            if not body["metadata"].get("deletionTimestamp"):
                reconcile(ctx, body)

        parked.open(key)
        try:
            delay = await loop.run_in_executor(
                executor, lambda: _attempt(ctx, "reconcile", work, retry, body)
            )
        except Exception:  # a bug, not the API: back off like a transient failure, never spin
            log.exception("reconcile failed", extra={"ftj": f"{key[0]}/{key[1]}"})
            delay = retry_delay(retry)
        finally:
            # The Job events that arrived meanwhile, in order; the key closes once none is left.
            try:
                while waiting := parked.drain(key):
                    await loop.run_in_executor(executor, functools.partial(_job_events, ctx, key, waiting))
            finally:
                parked.close(key)  # never left open (its Jobs' events would wait for good)
        held = next(iter(index.get(key, ())), None)
        if held is None or held["metadata"].get("uid") != body["metadata"].get("uid"):
            return (
                None  # deleted (or replaced by a new object of this name) meanwhile: its own events queue it
            )
        if delay is None:
            retries.pop(key, None)
            retrying.pop(key, None)
            handled[key] = trigger
            log.info("reconciled", extra={"ftj": f"{key[0]}/{key[1]}"})
        else:
            retries[key] = retry + 1
            retrying[key] = trigger
        return delay

    memo_ref: dict[str, Any] = {}

    @kopf.on.event(c.GROUP, c.VERSION, c.PLURAL, registry=registry)
    async def ftj_event(
        event: kopf.RawEvent, memo: kopf.Memo, namespace: str | None, name: str, body: kopf.Body, **_: Any
    ) -> None:
        """Keeps the index and queues a reconcile when the spec, labels or annotations changed since the
        last one (in the event loop: no thread per event). The operator's own status
        writes queue nothing. A deleted FineTuneJob leaves the index and finetune_operator_jobs. Watch
        events, not kopf's create/update/resume handlers: those PATCH a last-handled annotation onto
        every object they handle (the most expensive request of a burst) and an on.delete handler
        would add a finalizer, and deleting a FineTuneJob must never wait for us."""
        key = (namespace, name)
        if event.get("type") == "DELETED":
            if not index.drop(key, body.get("metadata", {}).get("uid")):
                return  # a late event of an older object of this name: the new one stays
            handled.pop(key, None)
            retrying.pop(key, None)
            retries.pop(key, None)
            queue.forget(key)
            ctx: Context = memo["ctx"]
            ctx.phases.set(f"{namespace}/{name}", None)
            return
        # An event older than what our own write put there still counts: the held body has its changes.
        slim = index.offer(body) or index[key][0]
        trigger = trigger_of(slim)
        if "queue" in memo_ref and should_queue(
            trigger, in_flight.get(key), handled.get(key), retrying.get(key)
        ):
            queue.add(key)

    @kopf.on.startup(registry=registry)
    async def start_reconcile_queue(memo: kopf.Memo, settings: kopf.OperatorSettings, **_: Any) -> None:
        """Workers for the queue (at most max_workers reconciles at once, on kopf's thread pool). kopf
        starts watching after its start-up handlers: each object's first listed event queues it (resume)."""
        memo_ref.update(ctx=memo["ctx"], executor=settings.execution.executor, queue=queue)
        # What our own writes return is the newest body of an object the watch still shows.
        memo["ctx"].remember = lambda obj: index.offer(obj, insert=False)
        memo["reconcile_queue"] = start_watched(memo, queue.run(), "reconcile queue")

    @kopf.on.cleanup(registry=registry)
    async def stop_reconcile_queue(memo: kopf.Memo, **_: Any) -> None:
        task: asyncio.Task[None] | None = memo.get("reconcile_queue")
        if task is not None:
            task.cancel()

    def _job_events(ctx: Context, key: Key, events: list[tuple[dict[str, Any], bool]]) -> None:
        """The Job events parked during ``key``'s reconcile, against the body it left in the index;
        one that fails unexpectedly is logged and the others still run (the resync repairs it)."""
        for job, deleted in events:
            cached = next(iter(index.get(key, ())), None)
            fold = functools.partial(on_job_event, ctx, job, cached, deleted=deleted)
            try:
                _attempt(ctx, "job_event", functools.partial(sightings.handle, job, deleted, fold))
            except Exception:
                log.exception("job event failed", extra={"ftj": f"{key[0]}/{key[1]}"})

    @kopf.on.event("batch", "v1", "jobs", labels={c.LABEL_MANAGED_BY: c.OPERATOR_NAME}, registry=registry)
    def job_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
        """Fold a Job's change into its FineTuneJob's status. While the FineTuneJob is being
        reconciled, its Jobs' events wait for that reconcile and are handled after it, in order: the
        Job it creates reaches this watch before the status write naming it returns, and would
        otherwise need a GET of the FineTuneJob (the operator's copy does not name it yet)."""
        ctx: Context = memo["ctx"]
        job: dict[str, Any] = dict(event["object"])
        meta: dict[str, Any] = job.get("metadata") or {}
        refs: list[dict[str, Any]] = meta.get("ownerReferences") or []
        owner = next((r for r in refs if r.get("kind") == c.KIND), {})
        key = (meta.get("namespace"), str(owner.get("name")))
        deleted = event.get("type") == "DELETED"
        if parked.park(key, job, deleted):
            return
        cached = next(iter(index.get(key, [])), None)
        fold = functools.partial(on_job_event, ctx, job, cached, deleted=deleted)
        _attempt(ctx, "job_event", functools.partial(sightings.handle, job, deleted, fold))

    @kopf.on.startup(registry=registry)
    async def start_progress_loop(memo: kopf.Memo, **_: Any) -> None:
        """One loop for every Running FineTuneJob instead of a timer per object: no finalizer."""
        loop = ProgressLoop(memo["ctx"], index)
        memo["progress_loop"] = start_watched(memo, loop.run(), "progress loop")

    @kopf.on.cleanup(registry=registry)
    async def stop_progress_loop(memo: kopf.Memo, **_: Any) -> None:
        task: asyncio.Task[None] | None = memo.get("progress_loop")
        if task is not None:
            task.cancel()


def start_watched(memo: kopf.Memo, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    """A long-running task of the operator: its end by anything but a cancellation fails the probe."""
    task = asyncio.create_task(work, name=name)
    ctx: Context = memo["ctx"]
    ctx.heartbeats.watch(task)
    return task


def register_safety_net(
    registry: kopf.OperatorRegistry, index: FtjIndex, queue: WorkQueue[Key], sightings: JobSightings
) -> None:
    """The periodic resync of unfinished FineTuneJobs (through the reconcile queue; those whose Job
    the Job watch showed within the interval are left out), and a liveness probe that can fail."""

    @kopf.on.startup(registry=registry)
    async def start_resync_loop(memo: kopf.Memo, **_: Any) -> None:
        loop = ResyncLoop(memo["ctx"], index, queue, sightings)
        memo["resync_loop"] = start_watched(memo, loop.run(), "resync loop")

    @kopf.on.cleanup(registry=registry)
    async def stop_resync_loop(memo: kopf.Memo, **_: Any) -> None:
        task: asyncio.Task[None] | None = memo.get("resync_loop")
        if task is not None:
            task.cancel()

    @kopf.on.probe(id="stuck", registry=registry)
    async def stuck(memo: kopf.Memo, settings: kopf.OperatorSettings, **_: Any) -> str:
        ctx: Context = memo["ctx"]
        found = await problems(settings.execution.executor, ctx.heartbeats, POOL_PROBE_TIMEOUT)
        if found:
            raise kopf.PermanentError("; ".join(found))
        return "ok"


def should_queue(trigger: int, running: int | None, handled: int | None, retrying: int | None) -> bool:
    """Does an event whose object is in state ``trigger`` need a reconcile? Not for the state a
    running reconcile works on (its own status writes); otherwise not for the state last handled, nor
    for one whose failed attempt waits for its backoff. While a reconcile runs, only its state counts:
    a change made and undone during it still differs from what it works on."""
    if running is not None:
        return trigger != running
    return trigger not in (handled, retrying)


def trigger_of(slim: dict[str, Any]) -> int:
    """What a reconcile answers to, as kopf's update handlers saw it: the object's identity, its spec
    (by generation), labels, annotations and deletion; not status (our own writes)."""
    meta = slim.get("metadata") or {}
    return hash(
        (
            meta.get("uid"),
            meta.get("generation"),
            bool(meta.get("deletionTimestamp")),
            frozenset((meta.get("labels") or {}).items()),
            frozenset((meta.get("annotations") or {}).items()),
        )
    )
