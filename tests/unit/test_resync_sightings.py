"""Which unfinished FineTuneJobs a resync sweep may leave out: those whose Job the Job watch showed,
and the operator folded without error, within the last interval (resync.shown_recently,
job_sightings.JobSightings), or a LIST of the namespace's Jobs this sweep showed as status already
holds it (job_relist.py); every other one is reconciled as before."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest

from finetune_api.conditions import Phase, Reason
from finetune_api.spec import FineTuneJobSpec
from finetune_api.status import FineTuneJobStatus, RunStatus
from finetune_operator import constants as c
from finetune_operator.context import Context
from finetune_operator.job_relist import (
    MAX_LISTED_PER_KEY,
    MIN_KEYS,
    already_folded,
    listed_sightings,
    worth_listing,
)
from finetune_operator.job_sightings import JobSightings, Sighting
from finetune_operator.metrics import PhaseBook
from finetune_operator.resync import ResyncLoop, shown_recently
from finetune_operator.run_identity import run_digest
from finetune_operator.settings import OperatorSettings
from finetune_operator.status import apply_phase
from finetune_operator.work_queue import WorkQueue
from helpers import running

INTERVAL = 60.0
NOW = 1000.0
FRESH = Sighting(at=NOW - 5, suspended=False)


def _running(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": "x", "generation": 1, "annotations": {}},
        "spec": spec,
        "status": {
            "phase": "Running",
            "observedGeneration": 1,
            "run": {"number": 1, "jobName": "x-r1", "generation": 1, "specHash": "h"},
        },
    }


def _with(body: dict[str, Any], **status: Any) -> dict[str, Any]:
    out = copy.deepcopy(body)
    out["status"].update(status)
    return out


def _ctx(kube: Any = None, interval: float | None = INTERVAL) -> Context:
    settings = OperatorSettings() if interval is None else OperatorSettings(resync_interval_seconds=interval)
    return Context(kube=cast(Any, kube), settings=settings, phases=PhaseBook(), post_event=lambda *_: None)


def _recording() -> tuple[list[tuple[str, str]], Callable[[tuple[str, str]], Awaitable[float | None]]]:
    """A queue handler that records each key it reconciles, and its record."""
    reconciled: list[tuple[str, str]] = []

    async def handle(key: tuple[str, str]) -> float | None:
        reconciled.append(key)
        return None

    return reconciled, handle


def test_a_running_job_shown_within_the_interval_is_left_out():
    assert shown_recently(_running(), FRESH, NOW, INTERVAL) is True


@pytest.mark.parametrize(
    "sighting",
    [None, Sighting(at=NOW - INTERVAL, suspended=False), Sighting(at=NOW - 3 * INTERVAL, suspended=False)],
    ids=["never shown", "shown exactly an interval ago", "shown long ago"],
)
def test_a_job_the_watch_has_not_shown_for_an_interval_is_resynced(sighting: Sighting | None):
    """A watch that stops delivering: every sighting ages past the interval."""
    assert shown_recently(_running(), sighting, NOW, INTERVAL) is False


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (_with(_running(), phase="Succeeded"), "finished: needs_resync decides (another run asked for)"),
        (_with(_running(), run={}), "no run"),
        (_with(_running(), observedGeneration=0), "status has not seen this generation"),
        (_with(_running(secrets={"hubToken": {"name": "s", "key": "t"}}), phase="Pending"), "pods are read"),
        (_with(_running(secrets={"storage": {"name": "s"}}), phase="Pending"), "pods are read"),
        (_running(suspend=True), "the Job must be suspended"),
    ],
)
def test_a_reconcile_that_would_do_more_than_fold_the_job_is_never_left_out(body: dict[str, Any], why: str):
    assert shown_recently(body, FRESH, NOW, INTERVAL) is False, why


def test_a_pending_job_without_secrets_is_left_out_like_a_running_one():
    assert shown_recently(_with(_running(), phase="Pending"), FRESH, NOW, INTERVAL) is True


def test_a_suspended_job_that_should_run_is_resynced_unless_kueue_holds_it():
    held = Sighting(at=NOW - 5, suspended=True)
    assert shown_recently(_running(), held, NOW, INTERVAL) is False
    assert shown_recently(_running(scheduling={"queueName": "q"}), held, NOW, INTERVAL) is True
    assert shown_recently(_running(suspend=True), held, NOW, INTERVAL) is True


def test_a_new_rerun_token_is_resynced():
    body = _running()
    body["metadata"]["annotations"][c.ANNOTATION_RERUN] = "again"
    assert shown_recently(body, FRESH, NOW, INTERVAL) is False


def _job(name: str = "x-r1", suspend: bool = False) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name}, "spec": {"suspend": suspend}}


def test_only_a_handling_that_folded_the_current_run_is_a_sighting():
    sightings = JobSightings(clock=lambda: NOW)
    sightings.handle(_job(suspend=True), False, lambda: True)
    assert sightings.get("ns", "x-r1") == Sighting(at=NOW, suspended=True)
    sightings.handle(_job("old-r0"), False, lambda: False)  # not the current run of its FineTuneJob
    assert sightings.get("ns", "old-r0") is None


def test_a_failed_handling_forgets_the_earlier_sighting():
    """A status write refused for the newest event: an older sighting must not keep it out of the resync."""
    sightings = JobSightings(clock=lambda: NOW)
    sightings.handle(_job(), False, lambda: True)

    def refused() -> bool:
        raise RuntimeError("status write refused")

    with pytest.raises(RuntimeError):
        sightings.handle(_job(), False, refused)
    assert sightings.get("ns", "x-r1") is None


def test_a_deleted_job_leaves_no_entry_and_old_entries_are_pruned():
    clock = [NOW]
    sightings = JobSightings(clock=lambda: clock[0])
    sightings.handle(_job(), False, lambda: True)
    sightings.handle(_job(), True, lambda: True)
    assert sightings.get("ns", "x-r1") is None
    sightings.handle(_job("a-r1"), False, lambda: True)
    clock[0] = NOW + 10
    sightings.handle(_job("b-r1"), False, lambda: True)
    sightings.prune(before=NOW + 5)
    assert (sightings.get("ns", "a-r1"), len(sightings)) == (None, 1)


def test_a_sweep_queues_only_the_jobs_the_watch_has_not_shown_lately():
    """Through the real sweep and queue: ``fresh``'s Job was folded a moment ago and is left out;
    ``stale``'s was folded two intervals ago and ``failed``'s last handling failed: both reconciled."""
    index = {
        ("ns", n): [_with(_running(), run={"number": 1, "jobName": f"{n}-r1"})]
        for n in ("fresh", "stale", "failed")
    }
    ctx = _ctx()
    reconciled, handle = _recording()

    def refused() -> bool:
        raise RuntimeError("status write refused")

    async def body() -> None:
        clock = [time.monotonic() - 2 * INTERVAL]
        sightings = JobSightings(clock=lambda: clock[0])
        sightings.handle(_job("stale-r1"), False, lambda: True)
        clock[0] = time.monotonic()
        sightings.handle(_job("fresh-r1"), False, lambda: True)
        sightings.handle(_job("failed-r1"), False, lambda: True)
        with pytest.raises(RuntimeError):
            sightings.handle(_job("failed-r1"), False, refused)
        assert await ResyncLoop(ctx, index, queue, sightings).sweep() == {"queued": 2, "pending": 0}
        assert len(sightings) == 1, "the sweep drops sightings older than its interval"

    queue: WorkQueue[tuple[str, str]] = WorkQueue(handle, concurrency=2)
    asyncio.run(running(queue, body))
    assert sorted(reconciled) == [("ns", "failed"), ("ns", "stale")]


# -- the paged LIST (job_relist.py) -------------------------------------------------------------------


def _owned(name: str = "x-r1", uid: str = "u1", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "ns",
            "name": name,
            "ownerReferences": [{"kind": "FineTuneJob", "name": name.rsplit("-", 1)[0], "uid": uid}],
        },
        "spec": {"suspend": False},
        "status": status,
    }


def _running_body(name: str = "x") -> dict[str, Any]:
    """A FineTuneJob whose status holds its Job's Running state, as the operator writes it."""
    st = FineTuneJobStatus(
        run=RunStatus(number=1, job_name=f"{name}-r1", spec_hash="h", generation=1, start_time="x"),
        observed_generation=1,
    )
    apply_phase(st, Phase.RUNNING, Reason.PODS_RUNNING, "Trainer pods are running.", 1, "x")
    body = _running()
    body["metadata"].update(name=name, uid="u1")
    body["status"] = st.wire()
    return body


def test_a_listed_job_is_a_sighting_only_when_status_already_holds_what_it_shows():
    body = _running_body()
    assert already_folded(body, _owned(active=1, ready=1), 5) is True
    assert already_folded(body, _owned(active=1, ready=0), 5) is True, "a pod not ready yet: unchanged"
    assert already_folded(body, _owned(active=1, ready=1, failed=1), 5) is False, "an attempt failed"
    done = _owned(succeeded=1, conditions=[{"type": "Complete", "status": "True"}])
    assert already_folded(body, done, 5) is False, "finished: the pods are read by a reconcile"
    assert already_folded(body, _owned("x-r0", active=1, ready=1), 5) is False, "not the current run"
    assert already_folded(body, _owned(uid="u0", active=1, ready=1), 5) is False, "another object's Job"
    unreadable = _with(body, run={"jobName": "x-r1"})  # no number: dropped when parsed
    assert already_folded(unreadable, _owned(active=1, ready=1), 5) is False, "a run status cannot read"


def test_a_namespace_is_listed_only_where_that_is_cheaper_than_a_get_each():
    assert worth_listing(checked=MIN_KEYS, in_namespace=MIN_KEYS) is True
    assert worth_listing(checked=MIN_KEYS - 1, in_namespace=MIN_KEYS - 1) is False
    assert worth_listing(checked=10, in_namespace=10 * MAX_LISTED_PER_KEY) is True
    assert worth_listing(checked=10, in_namespace=10 * MAX_LISTED_PER_KEY + 1) is False, "mostly finished"


class PagedKube:
    """A namespace's Jobs in pages of two, as the API server pages a LIST (or fails it)."""

    def __init__(self, jobs: list[dict[str, Any]], fail: bool = False) -> None:
        self.jobs, self.fail, self.requests = jobs, fail, 0

    def job_page(self, namespace: str, selector: str, limit: int, token: str | None) -> dict[str, Any]:
        self.requests += 1
        if self.fail:
            raise ConnectionError("the API server is gone")
        start = int(token or 0)
        rest = self.jobs[start + 2 :]
        return {
            "items": self.jobs[start : start + 2],
            "metadata": {"continue": str(start + 2) if rest else ""},
        }


def test_listed_sightings_follow_every_page_and_a_failed_list_gives_none():
    bodies = [_running_body(n) for n in ("a", "b", "c")]
    jobs = [_owned(f"{n}-r1", active=1, ready=1) for n in ("a", "b")]
    jobs.append(_owned("c-r1", active=1, ready=1, failed=2))  # status does not hold this yet
    kube = PagedKube(jobs)
    ctx = _ctx(kube, interval=None)
    found = listed_sightings(ctx, {"ns": bodies})
    assert sorted(found) == [("ns", "a-r1"), ("ns", "b-r1")]
    assert kube.requests == 2
    ctx.kube = cast(Any, PagedKube(jobs, fail=True))
    assert listed_sightings(ctx, {"ns": bodies}) == {}


# -- review: what a sweep may spend in the event loop, and whose Job a sighting is ---------------------

SPEC: dict[str, Any] = {"model": {"name": "m"}, "dataset": {"source": {"uri": "s3://b/d.jsonl"}}}


def _resumed(name: str) -> dict[str, Any]:
    """Running, its spec edited since the run started without asking for another run (suspended and
    resumed): whether it asks for one needs the spec's run digest."""
    digest = run_digest(FineTuneJobSpec.model_validate(SPEC))
    body = _with(
        _running(**copy.deepcopy(SPEC)),
        observedGeneration=3,
        run={"number": 1, "jobName": f"{name}-r1", "generation": 1, "specHash": digest},
    )
    body["metadata"].update(name=name, uid=f"uid-{name}", generation=3)
    return body


def test_a_sweep_parses_a_resumed_objects_spec_once_not_every_sweep(monkeypatch: pytest.MonkeyPatch):
    """The sweep runs in the event loop. Parsing a spec (its CEL rules: 2-5 ms here) for every resumed
    FineTuneJob every sweep blocks kopf's watches and probes for seconds at 2,000 objects; a
    generation's spec never changes, so its digest is computed once."""
    names = [f"r{i}" for i in range(6)]
    index = {("ns", n): [_resumed(n)] for n in names}
    ctx = _ctx()
    parsed: list[object] = []
    validate = FineTuneJobSpec.model_validate

    def counting(obj: Any, *args: Any, **kwargs: Any) -> FineTuneJobSpec:
        parsed.append(obj)
        return validate(obj, *args, **kwargs)

    monkeypatch.setattr(FineTuneJobSpec, "model_validate", counting)

    async def handle(key: tuple[str, str]) -> float | None:
        raise AssertionError(f"{key} was reconciled: its Job was shown a moment ago")

    async def body() -> None:
        sightings = JobSightings()
        for n in names:
            sightings.handle(_job(f"{n}-r1"), False, lambda: True)
        loop = ResyncLoop(ctx, index, queue, sightings)
        assert await loop.sweep() == {"queued": 0, "pending": 0}
        first = len(parsed)
        assert await loop.sweep() == {"queued": 0, "pending": 0}
        assert first <= len(names) and len(parsed) == first, (
            f"{first} then {len(parsed) - first} spec parses for {len(names)} resumed objects"
        )

    queue: WorkQueue[tuple[str, str]] = WorkQueue(handle, concurrency=2)
    asyncio.run(running(queue, body))


def test_a_sighting_of_a_replaced_objects_job_does_not_leave_out_its_successor():
    """A FineTuneJob deleted and created again under its name names the same Job (``x-r1``) once the
    old one is gone; a sighting of the old object's Job (its DELETED event lost to a watch relist)
    says nothing about the new object's."""
    sightings = JobSightings(clock=lambda: NOW - 5)
    old_job = _job()
    old_job["metadata"]["ownerReferences"] = [{"kind": c.KIND, "name": "x", "uid": "old"}]
    sightings.handle(old_job, False, lambda: True)
    successor = _running()
    successor["metadata"]["uid"] = "new"
    assert shown_recently(successor, sightings.get("ns", "x-r1"), NOW, INTERVAL) is False
    successor["metadata"]["uid"] = "old"
    assert shown_recently(successor, sightings.get("ns", "x-r1"), NOW, INTERVAL) is True


class SlowKube(PagedKube):
    """An API server that takes ``delay`` seconds per page (loaded, or many namespaces to list)."""

    def __init__(self, jobs: list[dict[str, Any]], delay: float) -> None:
        super().__init__(jobs)
        self.delay = delay

    def job_page(self, namespace: str, selector: str, limit: int, token: str | None) -> dict[str, Any]:
        time.sleep(self.delay)
        return super().job_page(namespace, selector, limit, token)


def test_a_sweep_whose_list_outlasts_the_interval_still_waits_for_what_it_queued():
    """The sweep's LISTs come before its wait, which ended an interval after the sweep began: LISTs
    slower than that left no time to see the queue handle anything, so the sweep never beat its
    heartbeat and the liveness probe restarted a working operator (every sweep alike)."""
    interval = 0.2
    names = [f"q{i}" for i in range(5)]
    index = {("ns", n): [_running_body(n)] for n in names}
    for n in names:
        index[("ns", n)][0]["metadata"]["uid"] = "u1"
    jobs = [_owned(f"{n}-r1", active=1, ready=1) for n in names[:-1]]
    jobs.append(_owned(f"{names[-1]}-r1", active=1, ready=1, failed=1))  # news: reconciled
    ctx = _ctx(SlowKube(jobs, delay=interval), interval)
    reconciled, handle = _recording()

    async def body() -> None:
        counts = await ResyncLoop(ctx, index, queue).sweep()
        assert counts == {"queued": 1, "pending": 0}, counts
        assert ctx.heartbeats.silent(now=time.monotonic() + 3600) == ["resync"], "the sweep never beat"

    queue: WorkQueue[tuple[str, str]] = WorkQueue(handle, concurrency=2)
    asyncio.run(running(queue, body))
    assert reconciled == [("ns", names[-1])]
