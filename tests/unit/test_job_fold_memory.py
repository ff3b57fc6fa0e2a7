"""A Job event whose Job state the operator folded already changes nothing (``ctx.seen_jobs``), and
the periodic resync leaves out a FineTuneJob whose Job such an event showed (job_sightings.py). That
memory must not outlive a fold done elsewhere: after the resync's reconcile folded another state of
the Job, an event showing the earlier state again is folded, not taken as folded already."""

from __future__ import annotations

import copy
from typing import Any, cast

from finetune_operator.context import Context
from finetune_operator.metrics import PhaseBook
from finetune_operator.reconcile import job_fingerprint, on_job_event, reconcile
from finetune_operator.settings import OperatorSettings

OWNER = {"kind": "FineTuneJob", "name": "x", "uid": "u1"}


def _job(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": "x-r1", "ownerReferences": [OWNER]},
        "spec": {"suspend": False},
        "status": status,
    }


class FakeKube:
    """The API server's FineTuneJob and Job, for the two calls this path makes."""

    def __init__(self, ftj: dict[str, Any], job: dict[str, Any]) -> None:
        self.ftj, self.job = ftj, job

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.job)

    def get_ftj(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.ftj)

    def update_status(self, namespace: str, name: str, mutate: Any, initial: Any = None) -> dict[str, Any]:
        obj = copy.deepcopy(self.ftj)
        new = mutate(obj)
        if new is not None:
            self.ftj["status"] = new
        return copy.deepcopy(self.ftj)


def test_a_job_event_after_the_resync_folded_another_state_is_folded_again():
    ready = _job(active=1, ready=1)
    retrying = _job(active=1, ready=0, failed=1)
    body = {
        "apiVersion": "finetuning.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"namespace": "ns", "name": "x", "uid": "u1", "generation": 1},
        "spec": {"model": {"name": "org/base"}, "dataset": {"source": {"uri": "file:///data/train.jsonl"}}},
        "status": {
            "phase": "Running",
            "reason": "PodsRunning",
            "observedGeneration": 1,
            "run": {"number": 1, "jobName": "x-r1", "specHash": "h", "generation": 1, "startTime": "x"},
        },
    }
    kube = FakeKube(body, retrying)
    ctx = Context(
        kube=cast(Any, kube), settings=OperatorSettings(), phases=PhaseBook(), post_event=lambda *_: None
    )
    ctx.seen_jobs[("ns", "x-r1")] = job_fingerprint(ready)  # the Running state, folded from an event
    # That Job's next event (a pod failed) was lost; the resync's reconcile reads and folds it.
    reconcile(ctx, copy.deepcopy(body))
    assert kube.ftj["status"]["phase"] == "Pending"
    # The pod is ready again: its event shows the state folded long ago, and must be folded now.
    on_job_event(ctx, ready, copy.deepcopy(kube.ftj))
    assert kube.ftj["status"]["phase"] == "Running", "a stale memory of the fold skipped this event"
