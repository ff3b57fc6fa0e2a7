"""Specs the API server accepts always get their Job: every derived name is valid by construction.

Before, each of these ended with the API server refusing the Job (422) and the FineTuneJob without
any status, or (two long claims) with the dataset silently mounted from the model's claim.
"""

from __future__ import annotations

from typing import Any

import pytest

from harness import BASE_SPEC, GROUP, PLURAL, VERSION, Ftj
from helpers import wait_for

pytestmark = pytest.mark.e2e


def _pvc(api: Any, namespace: str, name: str) -> None:
    from kubernetes import client

    body = {
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    client.CoreV1Api(api).create_namespaced_persistent_volume_claim(namespace, body)


def _configmap(api: Any, namespace: str, name: str) -> None:
    from kubernetes import client

    body = {"metadata": {"name": name}, "data": {"train.jsonl": '{"prompt": "a", "completion": "b"}\n'}}
    client.CoreV1Api(api).create_namespaced_config_map(namespace, body)


def _create(api: Any, namespace: str, name: str, **top_level: Any) -> Ftj:
    """A FineTuneJob whose top-level spec fields replace BASE_SPEC's (no deep merge of sources)."""
    from kubernetes import client

    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": {**BASE_SPEC, **top_level},
    }
    client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    return Ftj(api, namespace, name)


def _job_of(ftj: Ftj) -> dict[str, Any]:
    """The run's Job, once it exists; fails fast with the status when the run failed instead."""

    def job() -> dict[str, Any] | None:
        st = ftj.status()
        assert st.get("phase") != "Failed", f"{ftj.name} failed: {st.get('reason')}: {st.get('message')}"
        name = (st.get("run") or {}).get("jobName")
        return next((j for j in ftj.jobs() if j["metadata"]["name"] == name), None) if name else None

    return wait_for(job, 60, f"the Job of {ftj.name}")


def test_dotted_claim_and_configmap_names_get_a_job(operator, kube_api, namespace):
    _pvc(kube_api, namespace, "models.v1")
    _pvc(kube_api, namespace, "results.v1")
    _configmap(kube_api, namespace, "data.small")
    ftj = _create(
        kube_api,
        namespace,
        "dotted-sources",
        model={"name": "m", "source": {"pvc": {"claimName": "models.v1"}}},
        dataset={"source": {"configMap": {"name": "data.small", "key": "train.jsonl"}}},
        output={"source": {"pvc": {"claimName": "results.v1"}}},
    )
    pod = _job_of(ftj)["spec"]["template"]["spec"]
    claims = sorted(
        v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v
    )
    assert claims == ["models.v1", "results.v1"]
    assert any(v.get("configMap", {}).get("name") == "data.small" for v in pod["volumes"])


def test_two_long_claims_with_a_common_prefix_are_both_mounted(operator, kube_api, namespace):
    model, data = "c" * 60 + "-model", "c" * 60 + "-data"
    _pvc(kube_api, namespace, model)
    _pvc(kube_api, namespace, data)
    ftj = _create(
        kube_api,
        namespace,
        "long-claims",
        model={"name": "m", "source": {"pvc": {"claimName": model}}},
        dataset={"source": {"pvc": {"claimName": data, "path": "train.jsonl"}}},
    )
    pod = _job_of(ftj)["spec"]["template"]["spec"]
    by_volume = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    mounts = {m["mountPath"]: by_volume.get(m["name"]) for m in pod["containers"][0]["volumeMounts"]}
    assert mounts[f"/mnt/pvc/{data}"] == data and mounts[f"/mnt/pvc/{model}"] == model


def test_long_name_whose_63rd_character_is_a_dash_gets_a_job(make_finetunejob):
    name = "a" * 62 + "-" + "b" * 9
    ftj = make_finetunejob(name=name)
    job = _job_of(ftj)
    assert len(job["metadata"]["name"]) <= 59
    ftj.wait_phase("Running")


def test_dotted_name_with_several_nodes_gets_a_job_and_a_service(make_finetunejob, kube_api, namespace):
    from kubernetes import client

    ftj = make_finetunejob(name="team.llama.v2", method="full", distributed={"nodes": 2, "gpusPerNode": 1})
    job = _job_of(ftj)
    pod = job["spec"]["template"]["spec"]
    svc = client.CoreV1Api(kube_api).read_namespaced_service(pod["subdomain"], namespace)
    assert svc.spec.cluster_ip == "None"
    wait_for(lambda: len(ftj.pods(job["metadata"]["name"])) == 2, 60, "both indexed pods created")
