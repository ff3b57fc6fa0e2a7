"""What a burst of new FineTuneJobs costs the API server, counted by the operator's own client
(``finetune_operator_api_requests_total``): one Job POST and status writes per object, and no GET of a
FineTuneJob.

The Job a reconcile creates usually reaches the operator's Job watch before the reconcile's status
write naming it has returned; its event used to GET the FineTuneJob then (325 GETs for 500 objects in
bench/operator_scale.py, at 267 ms each while the API server was saturated by the burst). It now waits
for that reconcile and is folded in against the body the reconcile wrote.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from harness import BASE_SPEC, GROUP, PLURAL, VERSION, handler_runs, requests_sent
from helpers import wait_for

pytestmark = pytest.mark.e2e

COUNT = 40


def handled_job_events(metrics: str) -> int:
    return handler_runs(metrics, "job_event")


def reconciles(metrics: str) -> int:
    return handler_runs(metrics, "reconcile")


def test_a_burst_of_new_finetunejobs_gets_no_finetunejob_and_is_reconciled_once_each(
    isolated_operator, kube_api
):
    from kubernetes import client

    op = isolated_operator()
    ns = isolated_operator.namespace
    custom = client.CustomObjectsApi(kube_api)
    spec = BASE_SPEC

    def create(i: int) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "FineTuneJob", "metadata": {"name": f"b-{i:03d}"}}
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, {**body, "spec": spec})

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, range(COUNT)))

    def started() -> list[dict[str, Any]] | None:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
        done = [o for o in items if (o.get("status") or {}).get("run")]
        return items if len(done) == COUNT else None

    items = wait_for(started, 180, f"all {COUNT} FineTuneJobs with a run")
    assert all(o["status"]["run"]["jobName"] == f"{o['metadata']['name']}-r1" for o in items)
    assert all(o["status"]["phase"] in ("Pending", "Running") for o in items)
    # Every Job's ADDED event handled (parked ones too, after their reconcile).
    wait_for(lambda: handled_job_events(op.metrics()) >= COUNT, 60, f"{COUNT} Job events handled")

    metrics = op.metrics()
    assert requests_sent(metrics, "POST", "jobs") == COUNT, metrics
    assert requests_sent(metrics, "GET", "finetunejobs") == 0, (
        "a Job event read its FineTuneJob from the API server instead of waiting for the reconcile "
        "that created the Job"
    )
    assert reconciles(metrics) == COUNT, (
        "each new FineTuneJob is reconciled once (its own status write queues nothing)"
    )
    # Pending, and Running for those whose pod is ready (a 409 retried would add one).
    assert requests_sent(metrics, "PUT", "finetunejobs/status") <= 2 * COUNT + 2


def test_a_restart_over_finished_runs_reads_no_pods_and_writes_nothing(isolated_operator, kube_api):
    """Each finished run's Job is listed again at start-up; its event used to read the run's pods
    (termination messages) although the FineTuneJob already records the result."""
    from kubernetes import client

    from harness import Ftj

    op = isolated_operator()
    ns = isolated_operator.namespace
    custom = client.CustomObjectsApi(kube_api)
    names = [f"done-{i}" for i in range(3)]
    for name in names:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "FineTuneJob", "metadata": {"name": name}}
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, {**body, "spec": BASE_SPEC})
    for name in names:
        ftj = Ftj(kube_api, ns, name)
        ftj.wait_phase("Running")
        ftj.finish_pods(f"{name}-r1", 0)
        ftj.wait_phase("Succeeded")
    op.kill()

    again = isolated_operator()
    wait_for(
        lambda: handled_job_events(again.metrics()) >= len(names), 60, "every finished Job's event handled"
    )
    metrics = again.metrics()
    assert requests_sent(metrics, "LIST", "pods") == 0, "the results are recorded already"
    for verb in ("POST", "PUT", "PATCH", "DELETE"):
        assert not re.search(
            rf'verb="{verb}"',
            "\n".join(
                line
                for line in metrics.splitlines()
                if line.startswith("finetune_operator_api_requests_total")
            ),
        ), f"a restart over finished runs sent a {verb}"


def test_a_suspended_or_queued_start_writes_status_once_and_still_resumes(isolated_operator, kube_api):
    """A FineTuneJob created with ``spec.suspend: true`` (or a Kueue ``queueName``) gets its Job
    created suspended, so the start's status write already names the phase that Job is seen in: its
    ADDED event changes nothing and writes nothing (it used to rewrite the Succeeded/Failed
    conditions' reasons: a second status PUT per object, 36-45 instead of 63-69 Jobs/s in a burst of
    500). The one Event a user sees, SuspendedByUser or QueuedByKueue, is still posted once."""
    from kubernetes import client

    from harness import Ftj

    op = isolated_operator()
    ns = isolated_operator.namespace
    custom = client.CustomObjectsApi(kube_api)
    batch = client.BatchV1Api(kube_api)
    held = {
        **{f"s-{i}": ({"suspend": True}, "Suspended", "SuspendedByUser") for i in range(3)},
        **{f"q-{i}": ({"scheduling": {"queueName": "team-a"}}, "Queued", "QueuedByKueue") for i in range(3)},
    }
    for name, (extra, _, _) in held.items():
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "FineTuneJob", "metadata": {"name": name}}
        custom.create_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, {**body, "spec": {**BASE_SPEC, **extra}}
        )

    ftjs = {name: Ftj(kube_api, ns, name) for name in held}
    for name, (_, phase, _) in held.items():
        ftjs[name].wait_phase(phase)
    wait_for(lambda: handled_job_events(op.metrics()) >= len(held), 60, "every Job's ADDED event handled")
    for name, (_, phase, reason) in held.items():
        st = ftjs[name].status()
        assert (st["phase"], st["reason"]) == (phase, reason), st
        assert {c["type"]: (c["status"], c["reason"]) for c in st["conditions"]} == {
            "Created": ("True", "JobCreated"),
            phase: ("True", reason),
            "Succeeded": ("False", f"Now{phase}"),
            "Failed": ("False", f"Now{phase}"),
        }, st["conditions"]
        [job] = ftjs[name].jobs()
        assert job["spec"]["suspend"] is True
    for name, (_, _, reason) in held.items():
        reasons = wait_for(lambda f=ftjs[name]: f.event_reasons(), 30, f"the Event about {name}")
        assert reasons == [reason], (name, reasons)

    metrics = op.metrics()
    assert requests_sent(metrics, "POST", "jobs") == len(held), metrics
    assert requests_sent(metrics, "PUT", "finetunejobs/status") == len(held), (
        "a Job created suspended is recorded by the start's own status write; its first event must "
        "write nothing"
    )
    assert requests_sent(metrics, "POST", "events") == len(held), metrics

    # Resume: spec.suspend false unsuspends the Job; Kueue's admission unsuspends a queued one.
    ftjs["s-0"].patch({"spec": {"suspend": False}})
    batch.patch_namespaced_job("q-0-r1", ns, {"spec": {"suspend": False}})
    for name in ("s-0", "q-0"):
        st = ftjs[name].wait_phase("Running")
        assert st["run"]["number"] == 1, "resuming starts no new run"
        held_by = "Suspended" if name == "s-0" else "Queued"
        assert {c["type"]: c["status"] for c in st["conditions"]}[held_by] == "False", st["conditions"]
    assert not batch.read_namespaced_job("s-0-r1", ns).spec.suspend


def test_the_operators_status_writes_are_its_own_and_leave_what_the_user_wrote(kube_api, operator, namespace):
    """Against the real API server: the operator's status writes show in managedFields under its own
    name, and they leave the user's spec, labels and annotations, and the user's ownership of them,
    as the user wrote them (the status PUT carries neither the spec nor managedFields)."""
    from kubernetes import client

    custom = client.CustomObjectsApi(kube_api)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FineTuneJob",
        "metadata": {"name": "owned", "labels": {"team": "search"}, "annotations": {"note": "kept"}},
        "spec": BASE_SPEC,
    }
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body, field_manager="ml-engineer"
    )

    def written() -> dict[str, Any] | None:
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "owned")
        return obj if (obj.get("status") or {}).get("run") else None

    after = wait_for(written, 120, "the operator's first status write")

    def by_writer(obj: dict[str, Any]) -> dict[tuple[str, str | None], Any]:
        return {(m["manager"], m.get("subresource")): m["fieldsV1"] for m in obj["metadata"]["managedFields"]}

    writers = by_writer(after)
    assert set(writers) == {("ml-engineer", None), ("finetune-operator", "status")}, writers
    assert set(writers[("finetune-operator", "status")]) == {"f:status"}
    assert writers[("ml-engineer", None)] == by_writer(created)[("ml-engineer", None)]
    assert after["spec"] == created["spec"]
    assert after["metadata"]["labels"] == {"team": "search"}
    assert after["metadata"]["annotations"] == {"note": "kept"}
