"""kopf handlers: thin wrappers that time themselves and call ``reconcile``."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable
from typing import Any

import kopf
import urllib3
from kubernetes.client.exceptions import ApiException

from finetune_operator import constants as c
from finetune_operator.context import Context
from finetune_operator.health import problems
from finetune_operator.metrics import HANDLER_DURATION
from finetune_operator.preflight_wait import RecheckLater
from finetune_operator.progress_loop import ProgressLoop
from finetune_operator.reconcile import on_job_event, reconcile
from finetune_operator.resync import ResyncLoop
from finetune_operator.settings import OperatorSettings

POOL_PROBE_TIMEOUT = 10.0


def retry_delay(retry: int) -> float:
    """Exponential backoff for transient failures: 1, 2, 4 ... seconds, at most a minute."""
    return float(min(2 ** max(retry, 0), 60))


def _timed(name: str, fn: Callable[[], None], retry: int = 0) -> None:
    """Run a handler body; transient API errors become kopf retries with backoff, never silent loss."""
    start = time.perf_counter()
    try:
        fn()
    except ApiException as exc:
        if exc.status in (0, 409, 429) or exc.status >= 500:
            raise kopf.TemporaryError(f"API {exc.status}: {exc.reason}", delay=retry_delay(retry)) from exc
        raise kopf.PermanentError(f"API {exc.status}: {exc.reason}: {exc.body}") from exc
    except RecheckLater as exc:
        raise kopf.TemporaryError(str(exc), delay=retry_delay(retry)) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        # Timeouts, refused connections, a failed-over API server: try again later.
        raise kopf.TemporaryError(f"API unreachable: {exc}", delay=retry_delay(retry)) from exc
    finally:
        HANDLER_DURATION.labels(handler=name).observe(time.perf_counter() - start)


# The latest slim body of every FineTuneJob, by (namespace, name), kept from the watch by ``ftj_event``.
FtjIndex = dict[tuple[str | None, str], list[dict[str, Any]]]


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    """Attach every handler to ``registry`` (no import-time side effects)."""
    # Not a kopf index: with one, kopf holds every object's handlers until all objects are indexed,
    # through one toggle per object whose every change wakes every waiting worker. At 2,000
    # FineTuneJobs a restarted operator spent minutes in that (0 handled after 3 minutes, the event
    # loop 69 % in ToggleSet notify_all); handlers that find no body here read it from the API.
    index: FtjIndex = {}
    register_safety_net(registry, settings, index)

    @kopf.on.create(c.GROUP, c.VERSION, c.PLURAL, registry=registry)
    @kopf.on.resume(c.GROUP, c.VERSION, c.PLURAL, registry=registry)
    @kopf.on.update(c.GROUP, c.VERSION, c.PLURAL, registry=registry)
    def ftj_changed(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
        ctx: Context = memo["ctx"]
        _timed("reconcile", lambda: reconcile(ctx, _plain(body)), retry)

    @kopf.on.event(c.GROUP, c.VERSION, c.PLURAL, registry=registry)
    async def ftj_event(
        event: kopf.RawEvent, memo: kopf.Memo, namespace: str | None, name: str, body: kopf.Body, **_: Any
    ) -> None:
        """Keeps the index (in the event loop: no thread per event). A deleted FineTuneJob leaves it and
        finetune_operator_jobs. A watch event, not an on.delete handler: that would add a finalizer, and
        deleting a FineTuneJob must never wait for us."""
        if event.get("type") == "DELETED":
            index.pop((namespace, name), None)
            ctx: Context = memo["ctx"]
            ctx.phases.set(f"{namespace}/{name}", None)
        else:
            index[(namespace, name)] = [_slim(body)]

    @kopf.on.event("batch", "v1", "jobs", labels={c.LABEL_MANAGED_BY: c.OPERATOR_NAME}, registry=registry)
    def job_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
        ctx: Context = memo["ctx"]
        job: dict[str, Any] = dict(event["object"])
        meta: dict[str, Any] = job.get("metadata") or {}
        refs: list[dict[str, Any]] = meta.get("ownerReferences") or []
        owner = next((r for r in refs if r.get("kind") == c.KIND), {})
        cached = next(iter(index.get((meta.get("namespace"), str(owner.get("name"))), [])), None)
        deleted = event.get("type") == "DELETED"
        _timed("job_event", lambda: on_job_event(ctx, job, cached, deleted=deleted))

    @kopf.on.startup(registry=registry)
    async def start_progress_loop(memo: kopf.Memo, **_: Any) -> None:
        """One loop for every Running FineTuneJob instead of a timer per object: no finalizer."""
        loop = ProgressLoop(memo["ctx"], index)
        memo["progress_loop"] = asyncio.create_task(loop.run(), name="progress loop")

    @kopf.on.cleanup(registry=registry)
    async def stop_progress_loop(memo: kopf.Memo, **_: Any) -> None:
        task: asyncio.Task[None] | None = memo.get("progress_loop")
        if task is not None:
            task.cancel()


def register_safety_net(registry: kopf.OperatorRegistry, settings: OperatorSettings, index: FtjIndex) -> None:
    """The periodic resync of unfinished FineTuneJobs, and a liveness probe that can fail."""

    @kopf.on.startup(registry=registry)
    async def start_resync_loop(memo: kopf.Memo, **_: Any) -> None:
        loop = ResyncLoop(memo["ctx"], index)
        memo["resync_loop"] = asyncio.create_task(loop.run(), name="resync loop")

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


def _slim(body: kopf.Body) -> dict[str, Any]:
    """What status decisions need, without managedFields and bookkeeping annotations (memory)."""
    meta = dict(body.get("metadata") or {})
    meta.pop("managedFields", None)
    meta["annotations"] = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if not k.startswith(f"kopf.{c.GROUP}/") and k != "kubectl.kubernetes.io/last-applied-configuration"
    }
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": copy.deepcopy(meta),
        "spec": copy.deepcopy(dict(body.get("spec") or {})),
        "status": copy.deepcopy(dict(body.get("status") or {})),
    }


def _plain(body: kopf.Body) -> dict[str, Any]:
    """A detached deep copy: kopf's Body is a live view."""
    return copy.deepcopy(dict(body))
