"""Metrics that count what happened, once: against the real API server.

- A status write that meets a 409 (another writer got there first) re-runs the status change on a
  fresh read; the run is still counted once and its Event posted once.
- A deleted FineTuneJob leaves ``finetune_operator_jobs`` (no finalizer is added for that).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from finetune_operator.context import Context
from finetune_operator.kube import Kube, load_api_client
from finetune_operator.metrics import REGISTRY, PhaseBook
from finetune_operator.reconcile import reconcile
from finetune_operator.settings import OperatorSettings
from harness import BASE_SPEC, GROUP, PLURAL, VERSION, Ftj
from helpers import wait_for

pytestmark = pytest.mark.e2e


def runs(result: str) -> float:
    return REGISTRY.get_sample_value("finetune_operator_runs_total", {"result": result}) or 0.0


def test_a_status_write_conflict_counts_the_run_once(cluster: Any, kube_api: Any, isolated_operator: Any):
    """The body handed to reconcile is one resourceVersion behind (kopf delivered it before someone
    annotated the object), so the first status write gets a real 409 from the API server. No operator
    process serves the namespace: this test drives ``reconcile`` itself."""
    from kubernetes import client

    ns = isolated_operator.namespace
    custom = client.CustomObjectsApi(kube_api)
    name = f"ftj-{uuid.uuid4().hex[:6]}"
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "FineTuneJob", "metadata": {"name": name}}
    stale = custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, {**body, "spec": BASE_SPEC})
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, name, {"metadata": {"annotations": {"example.com/touched": "yes"}}}
    )
    events: list[tuple[str, str]] = []
    ctx = Context(
        kube=Kube(load_api_client(str(cluster.kubeconfig))),
        settings=OperatorSettings(trainer_image="registry.local/finetune-trainer:test"),
        phases=PhaseBook(),
        post_event=lambda obj, kind, reason, message: events.append((kind, reason)),
    )
    started = runs("started")

    reconcile(ctx, stale)

    ftj = Ftj(kube_api, ns, name)
    st = ftj.status()
    assert st["run"]["number"] == 1 and st["phase"] == "Pending"
    assert [j["metadata"]["name"] for j in ftj.jobs()] == [f"{name}-r1"]
    assert runs("started") - started == 1, "a run re-counted on the 409 retry"
    assert events == []  # a run's start is routine: status says it, no Event (event_policy.py)


def test_a_deleted_finetunejob_leaves_the_phase_gauge(isolated_operator: Any, kube_api: Any):
    from kubernetes import client

    op = isolated_operator()
    ns = isolated_operator.namespace
    custom = client.CustomObjectsApi(kube_api)
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "FineTuneJob", "metadata": {"name": "gone"}}
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, {**body, "spec": BASE_SPEC})
    Ftj(kube_api, ns, "gone").wait_phase("Running", 60)

    def jobs_gauge() -> dict[str, float]:
        found = re.findall(r'^finetune_operator_jobs\{phase="(\w+)"\} (\S+)$', op.metrics(), re.M)
        return {phase: float(v) for phase, v in found if float(v)}

    wait_for(lambda: jobs_gauge() == {"Running": 1.0}, 30, "the gauge to count the Running job")
    meta = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "gone")["metadata"]
    assert not meta.get("finalizers"), "deletion must never wait for the operator"
    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "gone")
    wait_for(lambda: jobs_gauge() == {}, 30, "the deleted FineTuneJob to leave finetune_operator_jobs")
