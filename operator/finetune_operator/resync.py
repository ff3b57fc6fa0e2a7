"""Level-triggered safety net: every FineTuneJob that is not finished is reconciled again on an interval.

kopf does not retry event handlers, so a Job event whose handling failed (the API server restarting
at that moment) is gone, and a watch can miss an event altogether. This loop walks the FineTuneJobs
in the FineTuneJob index (handlers.py) (memory: no LIST per tick) and hands each one that is not
finished, or whose run is not the one its spec asks for, to the reconcile queue (work_queue.py): a
missing run is started, a finished Job is folded into status, a vanished Job is reported. Through the
queue, never beside it: one worker per FineTuneJob at a time, and a failed attempt is retried with
the queue's backoff.

Except where its Job is known to be what status says (``shown_recently``): a FineTuneJob whose Job
the Job watch showed within the last interval, folded into status without error (job_sightings.py),
or whose Job this sweep's LIST of the namespace's Jobs showed as status holds it (job_relist.py,
where that is cheaper than a GET each), is left out when its reconcile would only read that Job and
fold it again. Each such reconcile was a Job GET (17,117 in a 6-minute run over 2,000 objects).

A sweep waits until the queue has handled each of its keys once (at most one interval, or a few
seconds after its LISTs where those took longer; the rest stay queued), so the next sweep never piles
onto a backlog. The heartbeat the liveness probe checks beats when a sweep has nothing left to wait
for, and while it waits whenever the queue finished a reconcile: its silence means the loop stopped,
or the queue stopped reconciling while FineTuneJobs waited for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import ValidationError

from finetune_api.conditions import Phase
from finetune_api.spec import FineTuneJobSpec
from finetune_operator import constants as c
from finetune_operator.context import Context
from finetune_operator.job_relist import listed_sightings, worth_listing
from finetune_operator.job_sightings import JobKey, JobSightings, Sighting
from finetune_operator.metrics import HANDLER_DURATION, RESYNC_QUEUED, RESYNC_SKIPPED
from finetune_operator.naming import spec_hash
from finetune_operator.run_identity import current_run, new_run_reason, run_digest, used_tokens
from finetune_operator.status import parse_time

log = logging.getLogger("finetune_operator.resync")

Index = Mapping[Any, Iterable[dict[str, Any]]]
Digest = Callable[[dict[str, Any]], str]  # a FineTuneJob body -> its spec's run digest ("" if invalid)
HEARTBEAT = "resync"
NEW_OBJECT_GRACE_SECONDS = 600.0
PROGRESS_CHECK_SECONDS = 5.0


class Queue(Protocol):
    """What the sweep needs of the reconcile queue (work_queue.WorkQueue)."""

    @property
    def finished(self) -> int: ...

    def add_watched(self, key: Any, background: bool = False) -> asyncio.Future[None]: ...


def spec_digest(body: dict[str, Any]) -> str:
    """The run digest of ``body``'s spec; "" for an invalid spec (reconcile reports it)."""
    try:
        return run_digest(FineTuneJobSpec.model_validate(dict(body.get("spec") or {})))
    except ValidationError:
        return ""


def needs_resync(body: dict[str, Any], digest: Digest = spec_digest) -> bool:
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
    return _asks_new_run(body, digest)


def shown_recently(
    body: dict[str, Any], sighting: Sighting | None, now: float, interval: float, digest: Digest = spec_digest
) -> bool:
    """May a sweep at ``now`` leave out ``body``, which ``needs_resync``? Only when the Job watch showed
    its run's Job (``sighting``, looked up by ``status.run.jobName``) within the last ``interval`` and
    that was folded into status without error, and a reconcile would do nothing but read that Job and
    fold it again: the run is unfinished, status has seen this generation, the spec asks for no other
    run, the Job is suspended as the spec says, and the phase is not one whose pods are read (Pending
    with spec.secrets: the kubelet's missing-Secret error and the wait's deadline show in no Job
    event). A watch that stops delivering, or a handling that fails, leaves no fresh sighting: every
    such FineTuneJob is reconciled again within two intervals at most (one, as before, when the watch
    has shown nothing of it for an interval)."""
    if sighting is None or now - sighting.at >= interval:
        return False
    status = body.get("status") or {}
    meta = body.get("metadata") or {}
    if sighting.owner is not None and sighting.owner != meta.get("uid"):
        return False  # the Job of a deleted object of this name (its DELETED event lost)
    spec = body.get("spec") or {}
    phase = status.get("phase")
    if phase in Phase.TERMINAL or not (status.get("run") or {}).get("jobName"):
        return False
    if status.get("observedGeneration") != meta.get("generation"):
        return False
    secrets = spec.get("secrets") or {}
    if phase == Phase.PENDING and (secrets.get("hubToken") or secrets.get("storage")):
        return False
    suspend = bool(spec.get("suspend"))
    queued = bool((spec.get("scheduling") or {}).get("queueName"))
    if suspend != sighting.suspended and (suspend or not queued):
        return False  # reconcile (un)suspends the Job (sync_run)
    return not _asks_new_run(body, digest)


def _asks_new_run(body: dict[str, Any], digest: Digest) -> bool:
    status = body.get("status") or {}
    meta = body.get("metadata") or {}
    spec = dict(body.get("spec") or {})
    reason = new_run_reason(
        current_run(status),
        used_tokens(status),
        meta.get("generation"),
        status.get("observedGeneration"),
        str((meta.get("annotations") or {}).get(c.ANNOTATION_RERUN) or ""),
        lambda: digest(body),
        lambda: spec_hash(spec),
    )
    return reason is not None


def _job_name(body: dict[str, Any]) -> str:
    return str(((body.get("status") or {}).get("run") or {}).get("jobName") or "")


def _age_seconds(body: dict[str, Any]) -> float:
    stamp = (body.get("metadata") or {}).get("creationTimestamp")
    if not stamp:
        return float("inf")
    return max((datetime.now(UTC) - parse_time(str(stamp))).total_seconds(), 0.0)


class ResyncLoop:
    """Start with ``asyncio.create_task(loop.run())`` from an operator start-up handler, in the event
    loop that runs ``queue``."""

    def __init__(
        self, ctx: Context, index: Index, queue: Queue, sightings: JobSightings | None = None
    ) -> None:
        self.ctx = ctx
        self.index = index
        self.queue = queue
        self.sightings = sightings if sightings is not None else JobSightings()
        self.interval = ctx.settings.resync_interval_seconds
        # Run digests by (uid, generation), kept while a sweep uses them: parsing a spec runs its CEL
        # rules (2-5 ms), in the event loop, for every edited-but-not-rerun object every sweep.
        self._digests: dict[tuple[str, int], str] = {}
        self._used: dict[tuple[str, int], str] = {}
        # Longer than a few API calls of one reconcile with nothing finished: the queue is stuck.
        self.max_silence = self.interval + 4 * ctx.settings.api_read_timeout_seconds + 60

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.sweep()
            except Exception:
                log.exception("resync sweep failed; the next one starts on schedule")
            await asyncio.sleep(max(self.interval - (time.monotonic() - started), 0.1))

    async def sweep(self) -> dict[str, int]:
        """Queue every FineTuneJob that needs it and wait (at most an interval) until each was handled;
        returns counts (for tests and logs)."""
        started = time.monotonic()
        self.sightings.prune(started - self.interval)
        self._digests, self._used = self._used, {}
        due: dict[Any, list[dict[str, Any]]] = {}
        for key in list(self.index):
            bodies = [body for body in list(self.index.get(key, ())) if needs_resync(body, self._digest)]
            if bodies:
                due[key] = bodies
        seen = self._seen_by_watch
        unseen = {k: bodies for k, bodies in due.items() if not all(seen(b, started) for b in bodies)}
        listed = await self._list(unseen)
        keys = [
            k for k, bodies in unseen.items() if not all(self._seen_in(listed, b, started) for b in bodies)
        ]
        skipped = len(due) - len(keys)
        waiting = {self.queue.add_watched(key, background=True) for key in keys}
        RESYNC_QUEUED.inc(len(keys))
        RESYNC_SKIPPED.inc(skipped)
        # However long the LISTs took, time to see the queue work: else LISTs slower than an interval
        # (a loaded API server, many namespaces) left no beat at all and the probe restarted us.
        floor = time.monotonic() + min(PROGRESS_CHECK_SECONDS, self.interval)
        pending = await self._wait(waiting, max(started + self.interval, floor))
        HANDLER_DURATION.labels(handler="resync_sweep").observe(time.monotonic() - started)
        counts = {"queued": len(keys), "pending": len(pending)}
        if pending:
            log.info(
                "resync: not all handled within the interval; they stay queued", extra={"counts": counts}
            )
        else:
            self.ctx.heartbeats.beat(HEARTBEAT, self.max_silence)
        return counts

    def _digest(self, body: dict[str, Any]) -> str:
        """``spec_digest`` once per object generation (its spec never changes)."""
        meta = body["metadata"]
        key = (str(meta.get("uid")), int(meta.get("generation") or 0))
        digest = self._used.get(key)
        if digest is None:
            digest = self._digests[key] if key in self._digests else spec_digest(body)
            self._used[key] = digest
        return digest

    def _seen_by_watch(self, body: dict[str, Any], now: float) -> bool:
        name = _job_name(body)
        sighting = self.sightings.get(str(body["metadata"].get("namespace")), name) if name else None
        return shown_recently(body, sighting, now, self.interval, self._digest)

    def _seen_in(self, listed: Mapping[JobKey, Sighting], body: dict[str, Any], now: float) -> bool:
        sighting = listed.get((str(body["metadata"].get("namespace")), _job_name(body)))
        return shown_recently(body, sighting, now, self.interval, self._digest)

    async def _list(self, unseen: Mapping[Any, list[dict[str, Any]]]) -> dict[JobKey, Sighting]:
        """Sightings from a paged LIST of the Jobs of each namespace where that is cheaper than a GET
        per FineTuneJob (job_relist.py); none where it is not."""
        per_namespace = Counter(str(key[0]) for key in list(self.index))
        checked: dict[str, list[dict[str, Any]]] = {}
        for bodies in unseen.values():
            for body in bodies:
                if (body.get("status") or {}).get("phase") not in Phase.TERMINAL and _job_name(body):
                    checked.setdefault(str(body["metadata"].get("namespace")), []).append(body)
        checked = {ns: b for ns, b in checked.items() if worth_listing(len(b), per_namespace[ns])}
        if not checked:
            return {}
        return await asyncio.to_thread(listed_sightings, self.ctx, checked)

    async def _wait(self, waiting: set[asyncio.Future[None]], deadline: float) -> set[asyncio.Future[None]]:
        """Wait for the queue to handle the sweep's keys until ``deadline``, beating while it makes
        progress; what is still pending then."""
        finished = self.queue.finished
        while waiting and time.monotonic() < deadline:
            timeout = min(PROGRESS_CHECK_SECONDS, deadline - time.monotonic())
            _, waiting = await asyncio.wait(waiting, timeout=max(timeout, 0.0))
            if self.queue.finished != finished:
                finished = self.queue.finished
                self.ctx.heartbeats.beat(HEARTBEAT, self.max_silence)
        return waiting
