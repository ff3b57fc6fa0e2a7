"""Before a GPU is spent: the memory plan and the licence check, against a real API server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import BASE_SPEC, GROUP, PLURAL, VERSION, Ftj, OperatorProcess, deep_merge
from helpers import wait_for

pytestmark = pytest.mark.e2e

SEVENTY_B_FULL = {
    "model": {"name": "meta-llama/Llama-3.1-70B"},
    "method": "full",
    "resources": {"gpuMemory": "80Gi"},
}


def events(kube_api: Any, namespace: str, name: str) -> list[Any]:
    from kubernetes import client

    found = client.CoreV1Api(kube_api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    )
    return list(found.items)


def test_does_not_fit_with_memory_check_fail_gets_no_job(make_finetunejob):
    ftj = make_finetunejob(**SEVENTY_B_FULL, admission={"memoryCheck": "fail"})
    st = ftj.wait_phase("Failed")
    assert st["reason"] == "PlanDoesNotFit"
    assert "does not fit 80.0 GiB" in st["message"] and "spec.admission.memoryCheck" in st["message"]
    assert st["plan"]["verdict"] == "DoesNotFit" and st["plan"]["gpuMemoryGiB"] == 80.0
    assert st["plan"]["suggestion"]
    assert ftj.jobs() == []


def test_does_not_fit_by_default_warns_and_runs(make_finetunejob, kube_api):
    ftj = make_finetunejob(**SEVENTY_B_FULL)
    st = ftj.wait_phase("Running")
    assert st["plan"]["verdict"] == "DoesNotFit"
    assert len(ftj.jobs()) == 1
    warned = wait_for(
        lambda: [e for e in events(kube_api, ftj.namespace, ftj.name) if e.reason == "AdmissionWarning"],
        30,
        "an AdmissionWarning event",
    )
    assert warned[0].type == "Warning" and "does not fit" in warned[0].message


def test_a_job_that_fits_records_its_plan(make_finetunejob, kubectl):
    ftj = make_finetunejob(
        model={"name": "org/base-7B"},
        method="qlora",
        resources={"gpuMemory": "24Gi"},
        hyperparameters={"batchSize": 2, "maxSequenceLength": 1024, "gradientCheckpointing": True},
    )
    st = ftj.wait_phase("Running")
    assert st["plan"]["verdict"] == "Fits" and st["plan"]["parameters"] == 7_000_000_000
    wide = kubectl("get", "ftj", ftj.name, "-n", ftj.namespace, "-o", "wide").stdout
    assert "Fits" in wide.splitlines()[1]


def test_a_config_too_large_for_the_pods_annotation_gets_no_job(make_finetunejob):
    """The trainer's config travels in a pod annotation (256 KiB in all): a spec the schema allows but
    the annotation cannot hold is refused with a reason naming the field, never truncated."""
    ftj = make_finetunejob(evaluation={"reviewPrompts": ["p" * 4000] * 60})
    st = ftj.wait_phase("Failed")
    assert st["reason"] == "ConfigTooLarge", st
    assert "spec.evaluation.reviewPrompts" in st["message"] and "200 KiB" in st["message"], st["message"]
    assert ftj.jobs() == []


@pytest.fixture
def licensed_operator(
    cluster: Any, crd_installed: None, kube_api: Any, tmp_path: Path
) -> Iterator[tuple[OperatorProcess, str]]:
    """An operator that allows only apache-2.0 and mit, watching a private namespace."""
    from kubernetes import client

    ns = f"iso-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    op = OperatorProcess(
        cluster.kubeconfig,
        [ns],
        tmp_path / "operator.log",
        env={"FTJ_ALLOWED_LICENCES": "apache-2.0,mit", "FTJ_UNKNOWN_LICENCE": "fail"},
    ).start()
    try:
        yield op, ns
    finally:
        op.kill()
        core.delete_namespace(ns)


def test_licence_not_allowed_gets_no_job(licensed_operator, kube_api):
    from kubernetes import client

    _, ns = licensed_operator
    custom = client.CustomObjectsApi(kube_api)
    for name, model in (
        ("llama", {"name": "org/base-7B", "licence": "llama3.1"}),
        ("unknown", {"name": "org/base-7B"}),
        ("apache", {"name": "org/base-7B", "licence": "apache-2.0"}),
    ):
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "FineTuneJob",
            "metadata": {"name": name},
            "spec": deep_merge(BASE_SPEC, {"model": model}),
        }
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
    refused = Ftj(kube_api, ns, "llama").wait_phase("Failed", timeout=180)
    assert (
        refused["reason"] == "LicenceNotAllowed" and "'llama3.1' (spec.model.licence)" in refused["message"]
    )
    unknown = Ftj(kube_api, ns, "unknown").wait_phase("Failed")
    assert unknown["reason"] == "LicenceNotAllowed" and "unknown" in unknown["message"]
    assert Ftj(kube_api, ns, "llama").jobs() == [] and Ftj(kube_api, ns, "unknown").jobs() == []
    Ftj(kube_api, ns, "apache").wait_phase("Running")
