"""A run is never lost or duplicated: create before delete, refused children reported, idempotent start.

Against the real API server, quota admission, Job controller and garbage collector.
"""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest

from finetune_api.spec import FineTuneJobSpec
from finetune_operator.run_identity import run_digest
from harness import BASE_SPEC, Ftj, create_ftj, deep_merge
from helpers import wait_for

pytestmark = pytest.mark.e2e


def alive_jobs(ftj: Ftj) -> list[dict[str, Any]]:
    return [j for j in ftj.jobs() if not j["metadata"].get("deletionTimestamp")]


def test_full_quota_on_spec_edit_fails_with_job_rejected_and_keeps_the_old_job(
    make_finetunejob, kube_api, kubectl, namespace
):
    from kubernetes import client

    core = client.CoreV1Api(kube_api)
    ftj = make_finetunejob()
    ftj.wait_phase("Running")
    quota = {"metadata": {"name": "one-job"}, "spec": {"hard": {"count/jobs.batch": "1"}}}
    core.create_namespaced_resource_quota(namespace, quota)
    wait_for(
        lambda: (
            (core.read_namespaced_resource_quota("one-job", namespace).status.used or {}).get(
                "count/jobs.batch"
            )
            == "1"
        ),
        60,
        "the quota controller to count the running Job",
    )

    ftj.patch({"spec": {"hyperparameters": {"epochs": 2}}})
    st = wait_for(lambda: (s := ftj.status()).get("reason") == "JobRejected" and s, 60, "JobRejected")
    assert st["phase"] == "Failed"
    assert "exceeded quota" in st["message"] and "count/jobs.batch" in st["message"], st["message"]
    assert f"{ftj.name}-r1 keeps running" in st["message"]
    assert [j["metadata"]["name"] for j in alive_jobs(ftj)] == [f"{ftj.name}-r1"], "the old Job must stay"
    wait_for(lambda: "JobRejected" in ftj.event_reasons(), 30, "a JobRejected Event")

    # Once the cause is fixed, a rerun replaces the old Job, and only then is the old one deleted.
    core.delete_namespaced_resource_quota("one-job", namespace)
    ftj.patch({"metadata": {"annotations": {"finetuning.io/rerun": "quota-raised"}}})
    st = ftj.wait_phase("Running")
    new = st["run"]["jobName"]
    assert new != f"{ftj.name}-r1"
    wait_for(lambda: [j["metadata"]["name"] for j in alive_jobs(ftj)] == [new], 60, "only the new Job left")


def _create(kube_api: Any, namespace: str, name: str, spec: dict[str, Any]) -> Ftj:
    return create_ftj(kube_api, namespace, name, spec)


def _leave_run_one_behind(kube_api: Any, ftj: Ftj) -> None:
    """What a crash right after Job creation leaves: run 1's children exist, status says nothing."""
    from finetune_api.spec import FineTuneJobSpec
    from finetune_operator.builders import Owner, build_children
    from finetune_operator.kube import Kube
    from finetune_operator.settings import OperatorSettings

    body = ftj.get()
    spec = FineTuneJobSpec.model_validate(body["spec"])
    settings = OperatorSettings(trainer_image="registry.local/finetune-trainer:test")
    kube = Kube(kube_api)
    for child in build_children(Owner.from_body(body), spec, 1, run_digest(spec), settings):
        kube.create(child)


@pytest.mark.parametrize("crash", ["sigkill", "crafted"])
def test_crash_after_job_creation_then_spec_edit_leaves_one_job_from_the_new_spec(
    crash, isolated_operator, kube_api
):
    """``sigkill``: the operator is killed the moment the Job appears (status may or may not be
    written). ``crafted``: the children of run 1 are made exactly as the operator makes them and no
    status is written, the worst case of that race, every time."""
    ns = isolated_operator.namespace
    ftj = _create(kube_api, ns, "crashy", deep_merge(BASE_SPEC, {"hyperparameters": {"epochs": 1}}))
    if crash == "sigkill":
        op = isolated_operator()
        wait_for(lambda: ftj.jobs(), 60, "run 1's Job", interval=0.01)
        op.kill(signal.SIGKILL)
    else:
        _leave_run_one_behind(kube_api, ftj)
    assert [j["metadata"]["name"] for j in ftj.jobs()] == ["crashy-r1"]

    ftj.patch({"spec": {"hyperparameters": {"epochs": 7}}})  # edited while the operator is down
    new_hash = run_digest(FineTuneJobSpec.model_validate(ftj.get()["spec"]))
    isolated_operator()
    st = wait_for(
        lambda: (s := ftj.status()).get("run", {}).get("specHash") == new_hash and s,
        60,
        "a run of the new spec",
    )
    job_name = st["run"]["jobName"]
    assert job_name != "crashy-r1"
    wait_for(
        lambda: [j["metadata"]["name"] for j in alive_jobs(ftj)] == [job_name], 60, "exactly one Job alive"
    )
    [job] = alive_jobs(ftj)
    assert job["metadata"]["annotations"]["finetuning.io/spec-hash"] == new_hash
    config = json.loads(job["spec"]["template"]["metadata"]["annotations"]["finetuning.io/config"])
    assert config["spec"]["hyperparameters"]["epochs"] == 7, "the Job must train on the new spec's config"
